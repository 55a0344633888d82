"""A scripted fake POP3 upstream (threads + sockets, stdlib only).

    fake = FakeUpstream(greeting=b"+OK hi\\r\\n",
                        on={b"RETR 1": [b"+OK\\r\\n", b"half a bo", CLOSE]})
    fake.start(); ... fake.port ...; fake.stop()

Every connection is recorded in fake.conns (a FakeConn each): .lines is the
list of lines received, split on LF the way a lenient server (Dovecot) would
split them, each with its terminator, so a smuggled bare-LF command shows up
as its own line; .raw is every byte received.

Script values (for the greeting and for each command) are a list of
actions, or a callable(conn, line) returning one:
    bytes            sent as is (one send())
    Sleep(t)         pause t seconds
    Pieces(data, n, delay)  send data in n-byte pieces, delay seconds apart
    Trickle(data, seconds, pieces)  send data in `pieces` equal pieces spread
                     evenly over `seconds` (paced by the clock, so the
                     whole takes about `seconds` however long sends take)
    CLOSE            close the connection (FIN)
    RESET            close with RST (SO_LINGER 0)
    STALL            send nothing more; keep reading until the peer closes
    STARTTLS         start TLS as the server now (after the "+OK" of STLS):
                     bytes received before it are dropped (as a correct
                     server does), the handshake runs, and the dialogue goes
                     on inside TLS; a failed handshake closes the connection
Commands are looked up by the exact line (without CRLF), then by keyword
(first word, upper-case); anything else gets the built-in mini server,
which serves `messages` (a list of message bytes with CRLF line ends).

TLS: FakeUpstream(tls="implicit", certfile=..., keyfile=...) handshakes as
a TLS server before the greeting; with certfile/keyfile and no tls, only
the STARTTLS action uses them. Each FakeConn then records .tls_version,
.cipher, .sni (the server name the client sent, or None), .alpn,
.tls_error (the handshake's exception text, None when it worked),
.tls_line (how many lines had been received before TLS started) and
.peer_cert (the verified client certificate, when the context asks for
one); lines
and raw bytes received inside TLS are recorded like plaintext ones.
"""

import ssl

import socket
import struct
import threading
import time


class Sleep:
    def __init__(self, t):
        self.t = t


class Pieces:
    def __init__(self, data, size=1, delay=0.0):
        self.data, self.size, self.delay = data, size, delay


class Trickle:
    def __init__(self, data, seconds, pieces=100):
        self.data, self.seconds, self.pieces = data, float(seconds), max(1, int(pieces))


class _Token:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


CLOSE = _Token("CLOSE")
RESET = _Token("RESET")
STALL = _Token("STALL")
STARTTLS = _Token("STARTTLS")

DEFAULT_CAPA = [b"TOP", b"UIDL", b"USER", b"RESP-CODES", b"PIPELINING",
                b"SASL PLAIN LOGIN"]


def stuff_block(msg):
    """message bytes (CRLF) -> stuffed block with the final .CRLF"""
    if msg and not msg.endswith(b"\r\n"):
        msg += b"\r\n"
    out = bytearray()
    for ln in (msg.split(b"\r\n")[:-1] if msg else []):
        if ln.startswith(b"."):
            out += b"."
        out += ln + b"\r\n"
    out += b".\r\n"
    return bytes(out)


def sample_message(i, lines=20):
    body = b"".join(b"line %d of message %d\r\n" % (k, i) for k in range(lines))
    return (b"From: fake@example.test\r\nSubject: fake message %d\r\n"
            b"Message-ID: <%d@fake>\r\n\r\n" % (i, i)) + body


class FakeConn:
    def __init__(self, sock, addr):
        self.sock = sock
        self.addr = addr
        self.raw = bytearray()
        self.lines = []
        self.closed = threading.Event()   # connection finished (either side)
        self.peer_eof = False
        self.deleted = set()
        self.sasl = None                   # pending SASL exchange state
        self.authenticated = False
        self.linebuf = b""
        self.tls_version = None            # after a successful handshake
        self.cipher = None
        self.sni = None
        self.alpn = None
        self.tls_error = None              # text of a failed handshake
        self.tls_attempted = False
        self.tls_line = None               # len(lines) when TLS started
        self.peer_cert = None              # the client's certificate (dict), if any

    def commands(self):
        """Received lines without terminators, decoded latin-1."""
        return [ln.rstrip(b"\r\n").decode("latin-1") for ln in self.lines]


class FakeUpstream:
    def __init__(self, greeting=b"+OK fake POP3 server ready <1234.5678@fake.test>\r\n",
                 on=None, messages=None, capa=None, host="127.0.0.1",
                 tls=None, certfile=None, keyfile=None, handshake_timeout=10.0,
                 ssl_context=None):
        if tls not in (None, "implicit"):
            raise ValueError("tls must be None or 'implicit' (use STARTTLS for STLS)")
        self.tls = tls
        self.handshake_timeout = handshake_timeout
        self.ssl_context = ssl_context
        if self.ssl_context is None and certfile:
            self.ssl_context = self.make_server_context(certfile, keyfile)
        if tls and self.ssl_context is None:
            raise ValueError("tls='implicit' needs certfile/keyfile or ssl_context")
        if self.ssl_context is not None and self.ssl_context.sni_callback is None:
            self.ssl_context.sni_callback = self._sni_cb
        self.greeting = greeting
        self.on = dict(on or {})
        self.messages = list(messages) if messages is not None else [
            sample_message(i) for i in range(1, 4)]
        self.capa = list(capa) if capa is not None else list(DEFAULT_CAPA)
        self.host = host
        self.conns = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        self.lsock = None
        self.port = None

    @staticmethod
    def make_server_context(certfile, keyfile=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(certfile, keyfile)
        return ctx

    @staticmethod
    def _sni_cb(sslsock, name, ctx):
        sslsock._fake_sni = name     # read back after the handshake
        return None

    # -- lifecycle --------------------------------------------------------
    def start(self):
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self.lsock = socket.socket(fam, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((self.host, 0))
        self.lsock.listen(512)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self):
        self._stop.set()
        try:
            self.lsock.close()
        except OSError:
            pass
        with self._lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(5)

    # -- inspection --------------------------------------------------------
    def wait_conns(self, n, timeout=10.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if len(self.conns) >= n:
                    return True
            time.sleep(0.02)
        return False

    def wait_closed(self, conn, timeout=10.0):
        return conn.closed.wait(timeout)

    def all_commands(self):
        with self._lock:
            conns = list(self.conns)
        out = []
        for c in conns:
            out.extend(c.commands())
        return out

    # -- server ------------------------------------------------------------
    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                s, addr = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            c = FakeConn(s, addr)
            with self._lock:
                self.conns.append(c)
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            t.start()
            self._threads.append(t)

    def _run(self, c, actions):
        """Execute actions; return False when the connection is finished."""
        if callable(actions):
            actions = actions(c, None)
        if isinstance(actions, (bytes, bytearray)):
            actions = [actions]
        for a in actions:
            if isinstance(a, (bytes, bytearray)):
                c.sock.sendall(a)
            elif isinstance(a, Sleep):
                if self._stop.wait(a.t):
                    return False
            elif isinstance(a, Pieces):
                for i in range(0, len(a.data), a.size):
                    c.sock.sendall(a.data[i:i + a.size])
                    if a.delay and self._stop.wait(a.delay):
                        return False
            elif isinstance(a, Trickle):
                n = a.pieces
                size = -(-len(a.data) // n) if a.data else 0
                t0 = time.monotonic()
                for i in range(n):
                    piece = a.data[i * size:(i + 1) * size]
                    if piece:
                        c.sock.sendall(piece)
                    due = t0 + a.seconds * (i + 1) / n
                    if i + 1 < n and self._stop.wait(max(0.0, due - time.monotonic())):
                        return False
            elif a is CLOSE:
                try:
                    c.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return False
            elif a is RESET:
                c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                  struct.pack("ii", 1, 0))
                return False
            elif a is STALL:
                self._drain(c)
                return False
            elif a is STARTTLS:
                c.linebuf = b""        # nothing from before TLS is kept
                if not self._handshake(c):
                    return False
            else:
                raise TypeError("bad action %r" % (a,))
        return True

    def _recv(self, c):
        """Yield what arrives on c, recorded in c.raw, until EOF (noted in
        c.peer_eof), a socket error or stop()."""
        c.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                d = c.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not d:
                c.peer_eof = True
                return
            c.raw += d
            yield d

    def _drain(self, c):
        """STALL: answer nothing more, record what arrives until EOF."""
        self._split(c, b"")
        for d in self._recv(c):
            self._split(c, d)

    @staticmethod
    def _split(c, d):
        c.linebuf += d
        while b"\n" in c.linebuf:
            ln, c.linebuf = c.linebuf.split(b"\n", 1)
            c.lines.append(ln + b"\n")

    def _handshake(self, c):
        """Server-side TLS on c.sock; True when it worked."""
        c.tls_attempted = True
        if self.ssl_context is None:
            raise RuntimeError("STARTTLS action without certfile/ssl_context")
        ctx = self.ssl_context
        try:
            c.sock.settimeout(self.handshake_timeout)
            ts = ctx.wrap_socket(c.sock, server_side=True, do_handshake_on_connect=False)
            ts.do_handshake()
        except (OSError, ValueError) as e:
            c.tls_error = "%s: %s" % (type(e).__name__, e)
            return False
        c.sock = ts
        c.tls_line = len(c.lines)
        c.tls_version = ts.version()
        c.cipher = (ts.cipher() or (None,))[0]
        c.alpn = ts.selected_alpn_protocol()
        c.peer_cert = ts.getpeercert() or None
        c.sni = getattr(ts, "_fake_sni", None)
        c.sock.settimeout(0.2)
        return True

    def _serve(self, c):
        try:
            if self.tls == "implicit":
                if not self._handshake(c):
                    return
            c.sock.settimeout(0.2)
            if not self._run(c, self.greeting):
                return
            for d in self._recv(c):
                c.linebuf += d
                go = True
                while go and b"\n" in c.linebuf:
                    ln, c.linebuf = c.linebuf.split(b"\n", 1)
                    c.lines.append(ln + b"\n")
                    go = self._dispatch(c, ln.rstrip(b"\r"))
                if not go:
                    return
                if len(c.linebuf) > 1 << 20:
                    c.lines.append(c.linebuf)
                    c.linebuf = b""
        except OSError:
            pass
        finally:
            try:
                c.sock.close()
            except OSError:
                pass
            c.closed.set()

    def _dispatch(self, c, line):
        if c.sasl is not None:
            return self._run(c, self._sasl_step(c, line))
        if line in self.on:
            act = self.on[line]
        else:
            kw = line.split(b" ", 1)[0].upper()
            act = self.on.get(kw)
            if act is None:
                act = self._builtin(c, line)
        if callable(act):
            act = act(c, line)
        return self._run(c, act)

    # -- built-in mini POP3 server -------------------------------------------
    def _sasl_step(self, c, line):
        mech, step = c.sasl
        if line == b"*":
            c.sasl = None
            return [b"-ERR Authentication aborted\r\n"]
        if mech == b"LOGIN" and step == 0:
            c.sasl = (mech, 1)
            return [b"+ UGFzc3dvcmQ6\r\n"]
        c.sasl = None
        c.authenticated = True
        return [b"+OK Logged in.\r\n"]

    def _builtin(self, c, line):
        parts = line.split(b" ")
        kw = parts[0].upper()
        args = parts[1:]
        msgs = self.messages
        live = [i for i in range(1, len(msgs) + 1) if i not in c.deleted]

        def num(a):
            try:
                n = int(a)
            except ValueError:
                return None
            return n if 1 <= n <= len(msgs) and n not in c.deleted else None

        if kw == b"USER":
            return [b"+OK\r\n"]
        if kw in (b"PASS", b"APOP"):
            c.authenticated = True
            return [b"+OK Logged in.\r\n"]
        if kw == b"AUTH":
            if not args or args == [b""]:
                return [b"+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n"]
            mech = args[0].upper()
            if len(args) > 1:
                if mech == b"LOGIN":
                    c.sasl = (mech, 1)
                    return [b"+ UGFzc3dvcmQ6\r\n"]
                c.authenticated = True
                return [b"+OK Logged in.\r\n"]
            c.sasl = (mech, 0)
            return [b"+ \r\n" if mech != b"LOGIN" else b"+ VXNlcm5hbWU6\r\n"]
        if kw == b"CAPA":
            return [b"+OK\r\n" + b"".join(x + b"\r\n" for x in self.capa) + b".\r\n"]
        if kw == b"STAT":
            return [b"+OK %d %d\r\n" % (len(live), sum(len(msgs[i - 1]) for i in live))]
        if kw in (b"LIST", b"UIDL"):
            def item(i):
                return b"%d %d" % (i, len(msgs[i - 1])) if kw == b"LIST" \
                    else b"%d uid%08d" % (i, i)
            if args:
                n = num(args[0])
                if n is None:
                    return [b"-ERR No such message\r\n"]
                return [b"+OK " + item(n) + b"\r\n"]
            return [b"+OK\r\n" + b"".join(item(i) + b"\r\n" for i in live) + b".\r\n"]
        if kw == b"RETR" and args:
            n = num(args[0])
            if n is None:
                return [b"-ERR No such message\r\n"]
            m = msgs[n - 1]
            return [b"+OK %d octets\r\n" % len(m) + stuff_block(m)]
        if kw == b"TOP" and len(args) == 2:
            n = num(args[0])
            if n is None:
                return [b"-ERR No such message\r\n"]
            m = msgs[n - 1]
            head, sep, body = m.partition(b"\r\n\r\n")
            k = int(args[1])
            blines = body.split(b"\r\n")[:-1] if body else []
            out = head + sep + b"".join(x + b"\r\n" for x in blines[:k])
            return [b"+OK\r\n" + stuff_block(out)]
        if kw == b"DELE" and args:
            n = num(args[0])
            if n is None:
                return [b"-ERR No such message\r\n"]
            c.deleted.add(n)
            return [b"+OK Marked to be deleted.\r\n"]
        if kw == b"RSET":
            c.deleted.clear()
            return [b"+OK\r\n"]
        if kw == b"NOOP":
            return [b"+OK\r\n"]
        if kw == b"QUIT":
            return [b"+OK Logging out.\r\n", CLOSE]
        return [b"-ERR Unknown command.\r\n"]
