"""Helpers for the popgate integration tests (stdlib only).

RawPOP3      a POP3 client on a raw socket that returns the exact bytes of
             every response, multi-line blocks included (dot-stuffing kept);
             optionally over TLS (implicit: tls_context=..., or .starttls()).
tls_client_context()  a verifying client SSLContext for a CA file.
unstuff()    decode a raw multi-line block into the message bytes.
RssSampler   samples VmRSS of a PID from /proc every interval.
free_port()  an unused TCP port on 127.0.0.1.
wait_listening(), parse_log(), ...
"""

import base64
import errno
import glob
import os
import re
import socket
import ssl
import threading
import time

HOST = "127.0.0.1"
DEFAULT_TIMEOUT = 20.0


class POP3Error(Exception):
    pass


class Closed(POP3Error):
    """The peer closed the connection; .data holds what was read before."""

    def __init__(self, msg, data=b""):
        super().__init__(msg)
        self.data = data


def free_port(host=HOST):
    """An unused TCP port (bind to 0, close)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def dead_port(host=HOST):
    """A port on which nothing listens (connect gives ECONNREFUSED)."""
    for _ in range(50):
        p = free_port(host)
        try:
            with socket.create_connection((host, p), timeout=1):
                pass
        except OSError:
            return p
    raise RuntimeError("no dead port found")


def _listening_ports():
    ports = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A":  # TCP_LISTEN
                        ports.add(int(parts[1].rsplit(":", 1)[1], 16))
        except FileNotFoundError:
            pass
    return ports


def is_listening(port):
    return port in _listening_ports()


def wait_listening(port, timeout=10.0, alive=None):
    """Wait until something LISTENs on port (checked in /proc/net/tcp, so
    no connection is made). alive() -> False aborts early."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_listening(port):
            return True
        if alive is not None and not alive():
            return False
        time.sleep(0.05)
    return False


def wait_greeting(port, host=HOST, timeout=10.0):
    """Wait until a POP3 server on port answers with a greeting."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                s.settimeout(5)
                data = s.recv(512)
                if data.startswith(b"+OK"):
                    return data
                last = data
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise RuntimeError("no POP3 greeting on port %d: %r" % (port, last))


class RawPOP3:
    """Exact-bytes POP3 client.

    Every read returns raw bytes including the line terminators. Multi-line
    blocks are returned as sent on the wire, including the final ".\\r\\n".
    """

    MAXLINE = 16 * 1024 * 1024

    def __init__(self, port, host=HOST, timeout=DEFAULT_TIMEOUT, source=None,
                 rcvbuf=None, read_greeting=True, tls_context=None, server_hostname=None):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source:
            self.sock.bind((source, 0))
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.local_port = self.sock.getsockname()[1]
        self.buf = bytearray()
        self.greeting = None
        if tls_context is not None:
            # implicit TLS: handshake first (errors propagate: ssl.SSLError)
            try:
                self.sock = tls_context.wrap_socket(self.sock, server_hostname=server_hostname)
            except BaseException:
                self.sock.close()
                raise
        if read_greeting:
            self.greeting = self.readline()

    # -- TLS -------------------------------------------------------------
    def starttls(self, context, server_hostname=None):
        """Send STLS; on "+OK" handshake (ssl.SSLError propagates).
        Returns the STLS status line. Raises POP3Error on -ERR, and if any
        byte followed the +OK line before the handshake (a server must not
        send any: response injection)."""
        st = self.cmd("STLS")
        if not st.startswith(b"+OK"):
            raise POP3Error("STLS: %r" % st)
        if self.buf:
            raise POP3Error("bytes after the STLS +OK: %r" % bytes(self.buf[:200]))
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)
        return st

    @property
    def tls_version(self):
        return self.sock.version() if isinstance(self.sock, ssl.SSLSocket) else None

    @property
    def cipher(self):
        return self.sock.cipher()[0] if isinstance(self.sock, ssl.SSLSocket) else None

    # -- low level -------------------------------------------------------
    def settimeout(self, t):
        self.sock.settimeout(t)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self, n=262144):
        try:
            chunk = self.sock.recv(n)
        except (ConnectionResetError, ssl.SSLError):
            chunk = b""   # RST, or a TLS alert / broken record: the peer is gone
        if not chunk:
            data = bytes(self.buf)
            raise Closed("connection closed by peer", data)
        self.buf += chunk
        return len(chunk)

    def readline(self, maxline=None):
        maxline = maxline or self.MAXLINE
        start = 0
        while True:
            i = self.buf.find(b"\n", start)
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return line
            start = len(self.buf)
            if len(self.buf) > maxline:
                raise POP3Error("line longer than %d" % maxline)
            self._fill()

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read_multi(self):
        """Read a multi-line block up to and including CRLF.CRLF; return the
        raw bytes (stuffed, terminator included)."""
        try:
            while len(self.buf) < 3:
                self._fill()
            if self.buf[:3] == b".\r\n":
                del self.buf[:3]
                return b".\r\n"
            search = 0
            while True:
                i = self.buf.find(b"\r\n.\r\n", search)
                if i >= 0:
                    block = bytes(self.buf[:i + 5])
                    del self.buf[:i + 5]
                    return block
                search = max(0, len(self.buf) - 4)
                self._fill()
        except Closed as e:
            raise Closed("closed inside multi-line block", e.data)

    def read_until_close(self, timeout=None):
        """Read everything until EOF; return the bytes (buffer included)."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        data = bytearray(self.buf)
        self.buf.clear()
        while True:
            try:
                chunk = self.sock.recv(262144)
            except (ConnectionResetError, ssl.SSLError):
                break
            if not chunk:
                break
            data += chunk
        return bytes(data)

    def is_closed(self, timeout=5.0):
        """True if the peer closes (EOF/RST) within timeout with no more data
        than what is buffered. Returns (closed, extra_bytes)."""
        self.sock.settimeout(timeout)
        extra = bytearray(self.buf)
        self.buf.clear()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False, bytes(extra)
            except (ConnectionResetError, ssl.SSLError):
                return True, bytes(extra)
            if not chunk:
                return True, bytes(extra)
            extra += chunk
        return False, bytes(extra)

    # -- POP3 level ------------------------------------------------------
    def cmd(self, line):
        """Send one command line (CRLF added) and return the status line."""
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.readline()

    def multi(self, line):
        """Send a command expecting a multi-line answer.
        Returns (status_line, raw_block or None if -ERR)."""
        st = self.cmd(line)
        if st.startswith(b"+OK"):
            return st, self.read_multi()
        return st, None

    def login(self, user="alice", password="secret"):
        st = self.cmd("USER " + user)
        if not st.startswith(b"+OK"):
            raise POP3Error("USER: %r" % st)
        st = self.cmd("PASS " + password)
        if not st.startswith(b"+OK"):
            raise POP3Error("PASS: %r" % st)
        return st

    def stat(self):
        st = self.cmd("STAT")
        m = re.match(rb"\+OK (\d+) (\d+)", st)
        if not m:
            raise POP3Error("STAT: %r" % st)
        return int(m.group(1)), int(m.group(2))

    def retr(self, n):
        st, block = self.multi("RETR %d" % n)
        if block is None:
            raise POP3Error("RETR %d: %r" % (n, st))
        return st, block

    def quit(self):
        try:
            st = self.cmd("QUIT")
        finally:
            self.close()
        return st

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def tls_client_context(cafile, check_hostname=True, minimum=None, maximum=None):
    """A verifying client context trusting only cafile."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = check_hostname
    if minimum is not None:
        ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    return ctx


def unstuff(block):
    """Raw multi-line block (with final .CRLF) -> message bytes with CRLF."""
    assert block.endswith(b"\r\n.\r\n") or block == b".\r\n", block[-20:]
    body = block[:-3]
    lines = body.split(b"\r\n")
    # body ends with CRLF, so the last split element is empty
    out = []
    for ln in lines[:-1]:
        if ln.startswith(b"."):
            ln = ln[1:]
        out.append(ln)
    return b"".join(x + b"\r\n" for x in out)


def stuff(msg):
    """Message bytes (CRLF lines) -> stuffed multi-line block."""
    if msg and not msg.endswith(b"\r\n"):
        msg += b"\r\n"
    lines = msg.split(b"\r\n")[:-1] if msg else []
    out = bytearray()
    for ln in lines:
        if ln.startswith(b"."):
            out += b"."
        out += ln + b"\r\n"
    out += b".\r\n"
    return bytes(out)


def to_crlf(data):
    """LF or CRLF text -> CRLF lines (bare CR kept)."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def plain_b64(user, password, authzid=""):
    return base64.b64encode(("%s\0%s\0%s" % (authzid, user, password)).encode()).decode()


class RssSampler(threading.Thread):
    """Sample VmRSS (KiB) of pid every interval seconds until stop()."""

    def __init__(self, pid, interval=1.0):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples = []
        self._halt = threading.Event()

    @staticmethod
    def rss_kib(pid):
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            return None
        return None

    def sample(self):
        v = self.rss_kib(self.pid)
        if v is not None:
            self.samples.append((time.monotonic(), v))
        return v

    def run(self):
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join(5)

    @property
    def max_kib(self):
        return max(v for _, v in self.samples) if self.samples else None


LOG_KV = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_log_line(line):
    """'TS LEVEL k=v k=v' -> dict (plus '_ts' and '_level')."""
    parts = line.split(" ", 2)
    d = {}
    if len(parts) >= 2:
        d["_ts"], d["_level"] = parts[0], parts[1]
    rest = parts[2] if len(parts) > 2 else ""
    for m in LOG_KV.finditer(rest):
        d[m.group(1)] = m.group(2)
    return d


TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d) ")


def close_lines_for(log_text, client_port, host=HOST):
    """The ev=close lines of the session(s) from host:client_port."""
    pat = "client=%s:%d" % (host, client_port)
    pat6 = "client=[%s]:%d" % (host, client_port)
    out = []
    for line in log_text.splitlines():
        if "ev=close" in line and (re.search(re.escape(pat) + r"(\s|$)", line)
                                   or re.search(re.escape(pat6) + r"(\s|$)", line)):
            out.append(line)
    return out


def unescape_log_value(v):
    """Undo \\xHH escapes and surrounding quotes of a log value."""
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        v = v[1:-1]
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), v)


def connect_many(port, n, deadline_s, host=HOST, source=None):
    """Open up to n connections before the deadline; return the sockets
    (non-blocking connects, bounded in count and time)."""
    socks = []
    end = time.monotonic() + deadline_s
    for _ in range(n):
        if time.monotonic() > end:
            break
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if source:
            s.bind((source, 0))
        s.settimeout(max(0.1, end - time.monotonic()))
        try:
            s.connect((host, port))
        except OSError:
            s.close()
            continue
        socks.append(s)
    return socks


def read_first_lines(socks, deadline_s):
    """For each socket, read until its first line (or EOF/timeout).
    Returns list of bytes (b'' = closed without data, None = timeout)."""
    import selectors
    sel = selectors.DefaultSelector()
    bufs = {}
    res = {}
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        bufs[s] = bytearray()
    end = time.monotonic() + deadline_s
    pending = len(socks)
    while pending and time.monotonic() < end:
        for key, _ in sel.select(timeout=max(0.0, min(0.5, end - time.monotonic()))):
            s = key.fileobj
            try:
                chunk = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if chunk:
                bufs[s] += chunk
                if b"\n" not in bufs[s]:
                    continue
            res[s] = bytes(bufs[s])
            sel.unregister(s)
            pending -= 1
    sel.close()
    for s in socks:
        s.setblocking(True)
    return [res.get(s) for s in socks]


def maildir_new(md):
    """The messages mpop delivered into maildir md's new/, in delivery order
    (mpop's file names end in Q<counter>.<host>)."""
    files = sorted(glob.glob(os.path.join(md, "new", "*")),
                   key=lambda f: int(f.rsplit("Q", 1)[1].split(".")[0]))
    msgs = []
    for f in files:
        with open(f, "rb") as fh:
            msgs.append(fh.read())
    return msgs
