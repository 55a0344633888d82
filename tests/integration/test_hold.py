"""The held-message path: what a client sees while a message is held, what
the log says about peer text met on the way, what stays in memory, and
what a reload costs the loops that serve clients and /ready.

Each test names the defect it guards against (numbers of the hold-path
review). The keep-alive interval (PX_KEEPALIVE_MS, 20 s) is fixed, so the
keep-alive cases run in parallel threads inside one test each.
"""

import base64
import hashlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

import pytest

import corpus as corpus_mod
import malware
from conftest import Lines, popgate_bin, stream_retr
from fakeupstream import CLOSE, Trickle, stuff_block
from pop3util import (RawPOP3, RssSampler, free_port, tls_client_context, unstuff,
                      wait_listening)

WAIT_LINE = b"X-Popgate-Wait: checking\r\n"
CLIENT_TIMEOUT = 21          # a client's read timeout just over the 20 s interval
SYS_TEMP = b"-ERR [SYS/TEMP]"


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def trickle_message(size, tag):
    """A deterministic CRLF message of about `size` bytes, with dot-led and
    lone "." lines (so the relay has to stuff them)."""
    head = (b"From: trickle@example.test\r\nTo: hold@example.test\r\n"
            b"Subject: " + tag + b"\r\nMessage-ID: <" + tag + b"@hold.test>\r\n\r\n")
    lines = []
    total = len(head)
    i = 0
    while total < size:
        if i % 50 == 49:
            ln = b".\r\n"
        elif i % 7 == 0:
            ln = b"..dot led line %08d of %s\r\n" % (i, tag)
        else:
            ln = b"line %08d of the trickled message %s, padding padding\r\n" % (i, tag)
        lines.append(ln)
        total += len(ln)
        i += 1
    return head + b"".join(lines)


def script(tmp_path, name, text):
    path = os.path.join(str(tmp_path), name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + text)
    os.chmod(path, 0o755)
    return path


def read_to_close(conn, per_read=CLIENT_TIMEOUT, total=90.0):
    """Everything until the peer closes. Returns (data, why): why is
    "closed", or "timeout" when one read waited longer than per_read (the
    client would have given up), or "deadline" after `total` seconds."""
    data = bytearray(conn.buf)
    conn.buf.clear()
    conn.settimeout(per_read)
    end = time.monotonic() + total
    while time.monotonic() < end:
        try:
            chunk = conn.sock.recv(262144)
        except socket.timeout:
            return bytes(data), "timeout"
        except OSError:         # RST, TLS alert, broken record
            return bytes(data), "closed"
        if not chunk:
            return bytes(data), "closed"
        data += chunk
    return bytes(data), "deadline"


def read_block(conn, per_read=CLIENT_TIMEOUT, total=120.0):
    """Status line and raw multi-line block (terminator included) under a
    per-read timeout; raises socket.timeout like a client giving up."""
    conn.settimeout(per_read)
    end = time.monotonic() + total
    st = conn.readline()
    if not st.startswith(b"+OK"):
        return st, None
    while time.monotonic() < end:
        i = conn.buf.find(b"\r\n.\r\n")
        if i >= 0 or conn.buf[:3] == b".\r\n":
            n = i + 5 if i >= 0 else 3
            block = bytes(conn.buf[:n])
            del conn.buf[:n]
            return st, block
        conn._fill(1 << 20)
    raise AssertionError("no end of block within %ss" % total)


def split_waits(block):
    """(number of leading wait lines, the block without them)."""
    n = 0
    while block.startswith(WAIT_LINE):
        block = block[len(WAIT_LINE):]
        n += 1
    return n, block


# -- a strict key=value reader for popgate's log lines ----------------------

KEY = re.compile(r"[a-z_][a-z0-9_]*")


def strict_fields(line):
    """'TS LEVEL k=v k=v ...' -> [(key, raw value)], or raise ValueError.
    Fields are separated by one space; a value is either unquoted (no
    space, no '"', no '=') or "..." in which '"' only appears escaped and
    a backslash always starts an escape (\\", \\\\ or \\xHH)."""
    parts = line.split(" ", 2)
    if len(parts) < 3:
        raise ValueError("no fields: %r" % line)
    rest = parts[2]
    out = []
    i = 0
    while i < len(rest):
        m = KEY.match(rest, i)
        if not m or m.end() >= len(rest) or rest[m.end()] != "=":
            raise ValueError("not a key= at %d: %r" % (i, rest[i:i + 40]))
        key = m.group(0)
        i = m.end() + 1
        if i < len(rest) and rest[i] == '"':
            j = i + 1
            while True:
                if j >= len(rest):
                    raise ValueError("unterminated quoted value for %s" % key)
                ch = rest[j]
                if ch == "\\":
                    if rest[j + 1:j + 2] in ('"', "\\"):
                        j += 2
                    elif re.match(r"x[0-9a-fA-F]{2}", rest[j + 1:j + 4]):
                        j += 4
                    else:
                        raise ValueError("bad escape in %s: %r" % (key, rest[j:j + 4]))
                    continue
                if ch == '"':
                    break
                j += 1
            value = rest[i:j + 1]
            i = j + 1
        else:
            j = rest.find(" ", i)
            j = len(rest) if j < 0 else j
            value = rest[i:j]
            if '"' in value or "=" in value:
                raise ValueError("unquoted value of %s holds '\"' or '=': %r" % (key, value))
            i = j
        out.append((key, value))
        if i < len(rest):
            if rest[i] != " " or i + 1 >= len(rest):
                raise ValueError("fields not separated by one space at %d: %r"
                                 % (i, rest[i - 20:i + 20]))
            i += 1
    return out


def decode_value(raw):
    """A raw log value -> its text (quotes removed, escapes undone)."""
    if len(raw) >= 2 and raw[0] == '"' and raw[-1] == '"':
        raw = raw[1:-1]
    return re.sub(r'\\(x[0-9a-fA-F]{2}|"|\\)',
                  lambda m: chr(int(m.group(1)[1:], 16)) if m.group(1)[0] == "x"
                  else m.group(1), raw)


def log_events(p, ev):
    return [ln for ln in p.log_text().splitlines() if re.search(r"\bev=%s\b" % ev, ln)]


def wait_events(p, ev, count=1, timeout=15.0):
    end = time.monotonic() + timeout
    while True:
        lines = log_events(p, ev)
        if len(lines) >= count or time.monotonic() > end:
            return lines
        time.sleep(0.05)


def assert_fields(line, keys, peer_keys):
    """line parses strictly with exactly `keys` in that order; the raw
    values of peer_keys hold no bare '=' (escaped like '"' and '\\')."""
    try:
        fields = strict_fields(line)
    except ValueError as e:
        raise AssertionError("log line does not parse as key=value pairs (%s):\n%s"
                             % (e, line))
    got = [k for k, _ in fields]
    assert got == list(keys), "log line keys %r, popgate wrote %r:\n%s" % (got, list(keys), line)
    d = dict(fields)
    for k in peer_keys:
        assert "=" not in d[k], "peer text in %s= keeps a bare '=': %r" % (k, d[k])
    return {k: decode_value(v) for k, v in fields}


# -- a scripted clamd (INSTREAM) on a unix socket ---------------------------

class FakeClamd:
    """Reads one zINSTREAM request per connection (chunks up to the
    zero-length one), waits `delay` seconds, answers `answer` + NUL."""

    def __init__(self, answer, delay=0.0):
        self.dir = tempfile.mkdtemp(prefix="pg-fcd-")   # short: sun_path
        self.socket = os.path.join(self.dir, "clamd.sock")
        self.answer = answer
        self.delay = delay
        self.requests = 0
        self._stop = threading.Event()
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(self.socket)
        self.lsock.listen(16)
        self.lsock.settimeout(0.2)
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self._stop.is_set():
            try:
                s, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _read(self, s, n):
        out = bytearray()
        while len(out) < n and not self._stop.is_set():
            try:
                d = s.recv(n - len(out))
            except socket.timeout:
                continue
            if not d:
                raise EOFError
            out += d
        return bytes(out)

    def _serve(self, s):
        s.settimeout(0.2)
        try:
            cmd = self._read(s, 10)
            if cmd != b"zINSTREAM\0":
                return
            for _ in range(1 << 20):
                (n,) = struct.unpack(">I", self._read(s, 4))
                if n == 0:
                    break
                self._read(s, n)
            self.requests += 1
            if self._stop.wait(self.delay):
                return
            s.sendall(self.answer + b"\0")
        except (EOFError, OSError, struct.error):
            pass
        finally:
            s.close()

    def stop(self):
        self._stop.set()
        self.lsock.close()
        self.thread.join(5)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def fake_clamd():
    made = []

    def make(answer, delay=0.0):
        f = FakeClamd(answer, delay)
        made.append(f)
        return f
    yield make
    for f in made:
        f.stop()


def filtered(popgate_factory, tmp_path, filters, servers=None, popgate=None,
             listener=None, name="pg", **kw):
    """A popgate whose listener runs `filters` ({name: keys}, in order),
    with its own spool directory."""
    spool = os.path.join(str(tmp_path), name + "-spool")
    os.makedirs(spool, exist_ok=True)
    pg = {"spool_dir": spool}
    pg.update(popgate or {})
    li = {"filters": ", ".join(filters)}
    li.update(listener or {})
    p = popgate_factory(servers=servers, popgate=pg, listener=li,
                        extra_sections=[("filter:" + n, k) for n, k in filters.items()], **kw)
    p.spool = spool
    return p


def run_parallel(cases):
    """cases: {name: callable() -> result}. Runs them in threads; returns
    {name: result or the exception it raised}."""
    results = {}

    def run(name, fn):
        try:
            results[name] = fn()
        except BaseException as e:   # noqa: B902 - reported per case below
            results[name] = e
    ts = [threading.Thread(target=run, args=(n, f), daemon=True) for n, f in cases.items()]
    for t in ts:
        t.start()
    for t in ts:
        t.join(150)
    for n in cases:
        results.setdefault(n, AssertionError("case %s did not finish in 150 s" % n))
    return results


def report(results, check):
    """check(name, result) for each case; one assertion listing every case
    that failed."""
    failed = []
    for name, r in sorted(results.items()):
        try:
            if isinstance(r, BaseException):
                raise r
            check(name, r)
        except (AssertionError, OSError) as e:
            failed.append("%s: %s: %s" % (name, type(e).__name__, str(e)[:600]))
    assert not failed, "\n".join(failed)


# ---------------------------------------------------------------------------
# defect 4: keep-alive from the held +OK, also while the body still arrives
# ---------------------------------------------------------------------------

@pytest.mark.slow
def test_keepalive_while_held_message_still_arrives(fake_upstream, popgate_factory, tmp_path):
    # defect 4: the keep-alive started only once the scan waited or ran, so
    # a client heard nothing while a slow upstream was still sending.
    msg = trickle_message(1536 * 1024, b"trickle-26s")
    f = fake_upstream(on={b"RETR": [b"+OK %d octets\r\n" % len(msg),
                                    Trickle(stuff_block(msg), 26.0, 260)]})
    hdr = b"X-Hold-Test: trickled\r\n"
    p = filtered(popgate_factory, tmp_path, {"tag": {"type": "header",
                                                     "add": hdr.strip().decode()}},
                 servers=[("127.0.0.1", f.port)])
    c = p.session()
    c.send(b"RETR 1\r\n")
    t0 = time.monotonic()
    try:
        st, block = read_block(c, per_read=CLIENT_TIMEOUT, total=90)
    except socket.timeout:
        pytest.fail("a client with a %d s read timeout gave up after %.1f s: popgate sent "
                    "nothing while the held message was still arriving (got %r)"
                    % (CLIENT_TIMEOUT, time.monotonic() - t0, bytes(c.buf[:200])))
    assert st.startswith(b"+OK"), st
    assert block is not None
    waits, rest = split_waits(block)
    assert waits >= 1, "no wait line before the message: %r" % block[:200]
    assert WAIT_LINE not in rest, "a wait line inside the message"
    # what is left is the filter's header, then the message byte-exact
    assert unstuff(rest) == hdr + msg, "the trickled message was not delivered exactly " \
        "(%d bytes vs %d)" % (len(unstuff(rest)), len(hdr + msg))
    assert c.cmd("NOOP") == b"+OK\r\n"
    assert c.quit().startswith(b"+OK")


# ---------------------------------------------------------------------------
# defect 7: after a keep-alive, a refusal ends the session without -ERR
# ---------------------------------------------------------------------------

def check_cut_after_wait(data, why, name, before=b""):
    """The answer began (+OK, wait lines), then the connection closed: no
    -ERR anywhere after that +OK, no terminating "." line."""
    assert why == "closed", "%s: the client saw %s (read timeout %d s); got %r" % (
        name, why, CLIENT_TIMEOUT, data[-200:])
    assert data.startswith(before), "%s: %r" % (name, data[:200])
    data = data[len(before):]
    assert data.startswith(b"+OK"), "%s: expected the held +OK first, got %r" % (name, data[:200])
    body = data[data.index(b"\r\n") + 2:]
    assert body.startswith(WAIT_LINE), "%s: no wait line after the +OK: %r" % (name, body[:200])
    assert b"-ERR" not in body, "%s: -ERR inside a started answer: %r" % (name, body[-300:])
    assert not body.endswith(b".\r\n"), "%s: the cut answer ends with a terminator: %r" % (
        name, body[-100:])
    assert b"\r\n.\r\n" not in b"\r\n" + body, "%s: a terminator in the cut answer" % name


def check_cut_or_temp(data, why, name):
    """Refused before anything of the answer went out (-ERR [SYS/TEMP] as
    the whole answer; the session goes on), or begun and then cut as
    check_cut_after_wait says."""
    if data.startswith(SYS_TEMP):
        return
    check_cut_after_wait(data, why, name)


@pytest.mark.slow
def test_refusal_after_keepalive_closes_without_err(fake_upstream, popgate_factory, fake_clamd,
                                                     certs, tmp_path):
    # defect 7: once a keep-alive line went out, a reject or tempfail must
    # end the session without the final "." and without any -ERR (not
    # inside the started body, not after TLS close_notify). Six cases in
    # parallel, one popgate each. a) to d) end in a verdict after the
    # scan's keep-alive and already behave; e) and f) end while the body
    # is still arriving, after the keep-alive that must start at the held
    # +OK (defect 4).
    msg = b"From: a@example.org\r\nSubject: held\r\n\r\nbody line\r\n.dot line\r\n"
    slow_fail = script(tmp_path, "slow_fail.sh", "cat >/dev/null\nsleep 24\nexit 1\n")
    # slow only for the message carrying the marker; others pass unchanged
    picky = script(tmp_path, "picky.sh",
                   'f=$(mktemp)\ncat >"$f"\nif grep -q SLOW-MARKER "$f"; then\n'
                   '  rm -f "$f"; sleep 24; exit 1\nfi\ncat "$f"\nrm -f "$f"\n')
    cmd = {"type": "command", "command": slow_fail, "on_error": "tempfail",
           "scan_timeout": "60s"}
    pgs = {}

    def upstream(**kw):
        return fake_upstream(on={b"RETR": [b"+OK %d octets\r\n" % len(msg) + stuff_block(msg)]},
                             **kw)

    # a) command filter, tempfail after 24 s (plaintext)
    f = upstream()
    pgs["command_tempfail"] = filtered(popgate_factory, tmp_path, {"slow": cmd},
                                       servers=[("127.0.0.1", f.port)], name="a")
    # b) clamd that finds a virus after 24 s, on_virus = reject
    cd = fake_clamd(b"stream: Eicar-Test-Signature FOUND", delay=24)
    f = upstream()
    pgs["clamd_reject"] = filtered(
        popgate_factory, tmp_path, {"cd": {"type": "clamd", "socket": cd.socket,
                                           "on_virus": "reject", "scan_timeout": "60s"}},
        servers=[("127.0.0.1", f.port)], name="b")
    # c) the same tempfail on an implicit-TLS listener
    f = upstream()
    c_pair = certs.pair("pop")
    pgs["tls_tempfail"] = filtered(
        popgate_factory, tmp_path, {"slow": cmd}, servers=[("127.0.0.1", f.port)], name="c",
        listener={"tls": "implicit", "certs": Lines([("cert", c_pair[0]), ("key", c_pair[1])])})
    # d) a client that does not read: RETR 1 (300 KiB, clean) fills its
    #    socket, RETR 2 is slow and fails while the keep-alive is queued
    big = trickle_message(300 * 1024, b"big-clean")
    slow = msg.replace(b"body line", b"SLOW-MARKER")
    f = fake_upstream(messages=[big, slow])
    pgs["slow_reader"] = filtered(
        popgate_factory, tmp_path, {"picky": {"type": "command", "command": picky,
                                              "on_error": "tempfail", "scan_timeout": "60s"}},
        servers=[("127.0.0.1", f.port)], name="d")
    # e) the upstream sends +OK, trickles part of the body for 23 s and
    #    closes: the keep-alive went out meanwhile, so no -ERR may follow
    half = stuff_block(trickle_message(400 * 1024, b"cut"))[:300 * 1024]
    f = fake_upstream(on={b"RETR": [b"+OK 409600 octets\r\n", Trickle(half, 23.0, 230), CLOSE]})
    pgs["upstream_cut"] = filtered(popgate_factory, tmp_path, {"slow": cmd},
                                   servers=[("127.0.0.1", f.port)], name="e")
    # f) a message over max_message_size that takes 24 s to arrive
    over = stuff_block(trickle_message(200 * 1024, b"over"))
    f = fake_upstream(on={b"RETR": [b"+OK 204800 octets\r\n", Trickle(over, 24.0, 240)]})
    pgs["too_big"] = filtered(popgate_factory, tmp_path, {"slow": dict(cmd)},
                              servers=[("127.0.0.1", f.port)], name="f",
                              popgate={"memory_per_message": "16K",
                                       "max_message_size": "64K"})

    def plain(name):
        def run():
            c = pgs[name].session()
            c.send(b"RETR 1\r\n")
            return read_to_close(c)
        return run

    def tls_case():
        ctx = tls_client_context(certs.ca_pem)
        c = RawPOP3(pgs["tls_tempfail"].port, tls_context=ctx, server_hostname="pop.test")
        c.login()
        c.send(b"RETR 1\r\n")
        return read_to_close(c)

    def slow_reader():
        c = RawPOP3(pgs["slow_reader"].port, rcvbuf=16384)
        c.login()
        c.send(b"RETR 1\r\nRETR 2\r\n")
        time.sleep(30)          # not reading: the verdict lands meanwhile
        return read_to_close(c, per_read=25)

    cases = {n: plain(n) for n in ("command_tempfail", "clamd_reject", "upstream_cut",
                                   "too_big")}
    cases["tls_tempfail"] = tls_case
    cases["slow_reader"] = slow_reader
    results = run_parallel(cases)

    def check(name, r):
        data, why = r
        if name == "slow_reader":
            first = b"+OK %d octets\r\n" % len(big) + stuff_block(big)
            check_cut_after_wait(data, why, name, before=first)
        elif name == "too_big":
            check_cut_or_temp(data, why, name)
        else:
            check_cut_after_wait(data, why, name)
        if name == "clamd_reject":
            assert cd.requests == 1, "clamd saw %d requests" % cd.requests
    report(results, check)
    for name, p in pgs.items():
        assert p.alive(), name


# ---------------------------------------------------------------------------
# defect 10: peer text in the log is escaped; every line keeps its keys
# ---------------------------------------------------------------------------

VERDICT_KEYS = ("sid", "ev", "filter", "verdict", "virus", "quarantine", "msg", "size",
                "reason")


def all_lines_parse(p):
    wait_events(p, "close")
    for line in p.log_text().splitlines():
        try:
            strict_fields(line)
        except ValueError as e:
            raise AssertionError("log line does not parse (%s):\n%s" % (e, line))


def test_log_escapes_upstream_stls_refusal(fake_upstream, popgate_factory, certs):
    # defect 10: quoted log values let '"' through: an upstream's STLS
    # refusal text could end err="..." early and add keys of its own.
    refusal = b'-ERR no "tls" here x=1'
    f = fake_upstream(on={b"STLS": [refusal + b"\r\n"]})
    p = popgate_factory(servers=[("127.0.0.1", f.port)],
                        upstream={"tls": "starttls", "ca_file": certs.ca_pem,
                                  "server_name": "up.test"})
    c = p.connect(read_greeting=False)
    data, _ = read_to_close(c, per_read=10, total=20)
    assert data.startswith(SYS_TEMP), data
    lines = wait_events(p, "upstream_tls_failed")
    assert len(lines) == 1, p.log_text()[-2000:]
    d = assert_fields(lines[0], ("sid", "ev", "upstream", "err"), ("err",))
    assert refusal.decode() in d["err"], "err= does not carry the refusal: %r" % d["err"]
    all_lines_parse(p)


CLAMD_ANSWERS = {
    # clamd names a virus with spaces and '=' in the name: virus= is unquoted
    "virus_name": (b"stream: Evil Name x=y FOUND", {"on_virus": "reject"}, b"-ERR [SYS/PERM]",
                   "reject", "virus", "Evil Name x=y"),
    # clamd answers an error whose text has quotes and '=': reason="..."
    "error_text": (b'stream: disk "full" k=v ERROR', {"on_error": "tempfail"}, SYS_TEMP,
                   "tempfail", "reason", 'disk "full" k=v'),
}


@pytest.mark.parametrize("case", list(CLAMD_ANSWERS))
def test_log_escapes_clamd_answers(case, fake_upstream, popgate_factory, fake_clamd, tmp_path):
    # defect 10: clamd's virus name kept its spaces in the unquoted virus=,
    # and its error text its quotes in reason="...".
    answer, keys, status, verdict, field, text = CLAMD_ANSWERS[case]
    cd = fake_clamd(answer)
    f = fake_upstream(messages=[b"From: a@example.org\r\nSubject: x\r\n\r\nbody\r\n"])
    p = filtered(popgate_factory, tmp_path,
                 {"cd": dict({"type": "clamd", "socket": cd.socket}, **keys)},
                 servers=[("127.0.0.1", f.port)])
    c = p.session()
    st = c.cmd("RETR 1")
    assert st.startswith(status), st
    assert c.quit().startswith(b"+OK")
    lines = wait_events(p, "verdict")
    assert len(lines) == 1, p.log_text()[-2000:]
    d = assert_fields(lines[0], VERDICT_KEYS, ("virus", "reason"))
    assert d["verdict"] == verdict and d["filter"] == "cd", d
    if field == "virus":
        assert d["virus"] == text, "virus= is %r" % d["virus"]
    else:
        assert text in d["reason"], "reason= is %r" % d["reason"]
    all_lines_parse(p)


# ---------------------------------------------------------------------------
# defect 11: no password left in popgate's memory after the sessions end
# ---------------------------------------------------------------------------

CANARY = "Zq7-Secret-Canary-4711-pXq9-LongTail-Canary-0815"


def memory_hits(pid, needles, max_map=256 << 20):
    """{needle: [(address, mapping name)]} over pid's writable mappings
    (read from /proc/PID/mem; mappings over max_map are skipped: ASan's
    shadow and reserved ranges)."""
    hits = {n: [] for n in needles}
    skipped = 0
    with open("/proc/%d/maps" % pid) as f:
        maps = f.read().splitlines()
    longest = max(len(n) for n in needles)
    with open("/proc/%d/mem" % pid, "rb", buffering=0) as mem:
        for ln in maps:
            parts = ln.split(None, 5)
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            perms = parts[1]
            name = parts[5] if len(parts) > 5 else ""
            if "w" not in perms or "r" not in perms or name in ("[vvar]", "[vsyscall]"):
                continue
            if hi - lo > max_map:
                skipped += 1
                continue
            tail = b""
            addr = lo
            while addr < hi:
                n = min(1 << 20, hi - addr)
                try:
                    mem.seek(addr)
                    chunk = mem.read(n)
                except OSError:
                    chunk = b""
                if not chunk:
                    tail = b""
                    addr += n
                    continue
                window = tail + chunk
                for nd in needles:
                    start = 0
                    while True:
                        i = window.find(nd, start)
                        if i < 0:
                            break
                        hits[nd].append((addr - len(tail) + i, name))
                        start = i + 1
                tail = window[-(longest - 1):]
                addr += n
    return hits, skipped


def release_sibling():
    """The release binary next to the ASan build under test
    (X-asan -> X, build/asan/popgate -> build/popgate), or None."""
    under = popgate_bin()
    if "asan" not in under:
        return None
    for cand in (under[:-5] if under.endswith("-asan") else None,
                 os.path.join(os.path.dirname(os.path.dirname(under)), "popgate")
                 if os.path.basename(os.path.dirname(under)) == "asan" else None):
        if cand and os.path.exists(cand):
            return cand
    return None


@pytest.mark.parametrize("build", ["under_test", "release"])
def test_passwords_leave_no_trace_in_memory(build, dovecot, popgate_factory):
    # defect 11: PASS and AUTH lines stayed in memory (command-queue
    # entries, recycled output blocks, the worker's read slab).
    # "release" runs the release binary beside the one under test: ASan's
    # quarantine keeps freed memory as it was, glibc's malloc may reuse it.
    user = "canary%d" % (os.getpid() % 100000)
    if user not in dovecot.users:
        dovecot.add_user(user, CANARY, corpus_mod.SMALL)
        dovecot.wait_login(user, CANARY)
    binary = None
    if build == "release":
        binary = release_sibling()
        if binary is None:
            pytest.skip("the build under test is no ASan build with a release binary beside it")
    p = popgate_factory(binary=binary) if binary else popgate_factory()
    plain = base64.b64encode(b"\0" + user.encode() + b"\0" + CANARY.encode())
    login_b64 = base64.b64encode(CANARY.encode())
    # USER/PASS, AUTH PLAIN with an initial response, AUTH PLAIN after a
    # "+ " challenge, AUTH LOGIN
    c = p.connect()
    c.login(user, CANARY)
    assert c.quit().startswith(b"+OK")
    c = p.connect()
    assert c.cmd(b"AUTH PLAIN " + plain).startswith(b"+OK")
    assert c.quit().startswith(b"+OK")
    c = p.connect()
    assert c.cmd("AUTH PLAIN").startswith(b"+")
    assert c.cmd(plain).startswith(b"+OK")
    assert c.quit().startswith(b"+OK")
    c = p.connect()
    assert c.cmd("AUTH LOGIN").startswith(b"+")
    assert c.cmd(base64.b64encode(user.encode())).startswith(b"+")
    assert c.cmd(login_b64).startswith(b"+OK")
    assert c.quit().startswith(b"+OK")
    assert len(wait_events(p, "close", 4)) >= 4
    # a session after them, so that nothing is still on its way out
    c = p.session("bob", "bobpass")
    assert c.quit().startswith(b"+OK")
    assert len(wait_events(p, "close", 5)) >= 5
    time.sleep(0.2)
    tail = CANARY[-24:].encode()       # survives a short later read over the slab
    needles = [CANARY.encode(), tail, plain, plain[8:32], login_b64]
    hits, skipped = memory_hits(p.pid, needles)
    found = {n.decode(): [("%#x" % a, m) for a, m in v[:4]] for n, v in hits.items() if v}
    print("%s (%s): password traces %r, %d large mappings skipped" % (
        build, binary or p.binary, found or "none", skipped))
    assert not found, "the password (or its base64) is still in popgate's memory after " \
        "the sessions ended: %r" % found


# ---------------------------------------------------------------------------
# defect 3: memory_budget also bounds messages held in memory for want of a
# spool file
# ---------------------------------------------------------------------------

BIG30 = "hold_big30"


@pytest.mark.slow
def test_memory_budget_holds_without_spool(dovecot, popgate_factory, tmp_path):
    # defect 3: with the spool file impossible and on_error = pass, each
    # session could keep up to max_message_size in RAM, ignoring
    # memory_budget.
    path = dovecot.store_path(BIG30)
    if not os.path.exists(path):
        malware.write_big_message(path, 30 * 1024 * 1024, "hold big30")
    user, pw = dovecot.scratch_user([BIG30])
    d = dovecot.session(user, pw)
    dst, dsha, dsize = stream_retr(d, "RETR 1")
    d.quit()
    asan = os.environ.get("ASAN_OPTIONS", "")
    p = filtered(popgate_factory, tmp_path,
                 {"tag": {"type": "header", "add": "X-Hold-Test: yes", "on_error": "pass"}},
                 popgate={"memory_budget": "8M", "memory_per_message": "1M"},
                 env={"ASAN_OPTIONS": (asan + ":" if asan else "") + "quarantine_size_mb=8"})
    # the spool directory goes away after the start: no spool file can be
    # made (O_TMPFILE gives ENOENT), the configuration was valid
    shutil.rmtree(p.spool)
    clients = []
    for _ in range(4):
        c = p.connect(timeout=120, rcvbuf=65536)
        c.login(user, pw)
        clients.append(c)
    assert clients[0].cmd("NOOP") == b"+OK\r\n"
    base = RssSampler.rss_kib(p.pid)
    sampler = RssSampler(p.pid, interval=0.05)
    sampler.start()
    try:
        for c in clients:
            c.send(b"RETR 1\r\n")
        # every message captured and decided (a verdict line each), while
        # no client reads
        lines = wait_events(p, "verdict", 4, timeout=90)
        time.sleep(0.5)
    finally:
        sampler.stop()
    assert len(lines) == 4, "verdicts: %r" % lines
    peak = sampler.max_kib
    grew = (peak - base) / 1024.0
    outcomes = []
    for c in clients:
        st = c.readline()
        if st.startswith(SYS_TEMP):
            outcomes.append("tempfail")
            assert c.cmd("NOOP") == b"+OK\r\n"
            continue
        assert st.startswith(b"+OK"), st
        # the rest of the block, the way stream_retr reads it; the first
        # line is popgate's tag, what follows must be Dovecot's block
        h = hashlib.sha256()
        tail = b""
        head = None
        for _ in range(100000):
            if not c.buf:
                c._fill(1 << 20)
            data = bytes(c.buf)
            c.buf.clear()
            if head is None:
                i = data.find(b"\r\n")
                if i < 0:
                    c.buf += data
                    c._fill(1 << 20)
                    continue
                head, data = data[:i + 2], data[i + 2:]
            window = tail + data
            j = window.find(b"\r\n.\r\n")
            if j >= 0:
                used = j + 5 - len(tail)
                h.update(data[:used])
                c.buf += data[used:]
                break
            h.update(data)
            tail = window[-4:]
        assert head.startswith(b"X-Virus-Status: unscanned"), \
            "delivered without the unscanned tag: %r" % head
        assert h.hexdigest() == dsha, "the 30 MiB message was altered"
        outcomes.append("unscanned")
        assert c.cmd("NOOP") == b"+OK\r\n"
    for c in clients:
        c.quit()
    print("memory_budget 8M, no spool: idle RSS %d KiB, peak %d KiB (+%.1f MiB); %r" % (
        base, peak, grew, outcomes))
    assert grew < 64, "RSS grew %.1f MiB holding 4 x 30 MiB with memory_budget = 8M and " \
        "no spool file (outcomes %r)" % (grew, outcomes)


# ---------------------------------------------------------------------------
# defect 5: engine build and free off the loops
# ---------------------------------------------------------------------------

def big_hdb(path, lines):
    """`lines` random MD5 signatures (MD5:SIZE:NAME), deterministic."""
    import random
    r = random.Random(4711)
    with open(path, "w") as f:
        for k in range(0, lines, 100000):
            f.write("".join("%032x:%d:Popgate.Hold.%d\n" % (
                r.getrandbits(128), r.randrange(100, 100000), i)
                for i in range(k, min(lines, k + 100000))))


def http_get(port, path, timeout=10.0):
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" % path.encode())
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    return time.monotonic() - t0, data


@pytest.mark.slow
def test_reload_builds_engine_off_the_main_loop(popgate_factory, tmp_path):
    # defect 5: a reload compiled the new ClamAV engine on the main loop,
    # which also answers /metrics and /ready.
    db = os.path.join(str(tmp_path), "db")
    os.makedirs(db)
    big_hdb(os.path.join(db, "big.hdb"), 1000000)
    mport = free_port()
    p = filtered(popgate_factory, tmp_path, {"av": {"type": "clamav", "database": db}},
                 popgate={"metrics": "127.0.0.1:%d" % mport}, start=False)
    p.write_config()
    t0 = time.monotonic()
    r = subprocess.run([p.binary, "-t", "-c", p.conf], capture_output=True, timeout=120)
    compile_s = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    p.start(ready_timeout=60)
    assert wait_listening(mport, timeout=10)
    # a session on the first generation (its engine), to end after the reload
    old = p.session()
    assert old.cmd("NOOP") == b"+OK\r\n"

    lat = []
    stop = threading.Event()

    def poll():
        while not stop.is_set() and len(lat) < 2000:
            try:
                dt, data = http_get(mport, "/ready")
                lat.append((dt, data.split(b"\r\n", 1)[0]))
            except OSError as e:
                lat.append((10.0, repr(e).encode()))
            stop.wait(0.05)
    t = threading.Thread(target=poll, daemon=True)
    t.start()
    time.sleep(0.3)
    p.proc.send_signal(signal.SIGHUP)
    ok = wait_events(p, "reload", 1, timeout=60)
    time.sleep(0.3)
    stop.set()
    t.join(15)
    assert ok and "status=ok" in ok[0], p.log_text()[-2000:]
    assert all(b" 200 " in s for _, s in lat), {s for _, s in lat}
    worst = max(dt for dt, _ in lat)
    print("popgate -t with 1M signatures: %.2f s; /ready during the reload: %d answers, "
          "slowest %.3f s" % (compile_s, len(lat), worst))

    # the old generation goes with its last session: its engine is freed
    # then; another session's NOOPs must not stall meanwhile (with these
    # hash signatures the free is quick: this part guards, it does not
    # catch anything today)
    other = p.session()
    rtts = []
    stop.clear()

    def noops():
        while not stop.is_set() and len(rtts) < 5000:
            t1 = time.monotonic()
            assert other.cmd("NOOP") == b"+OK\r\n"
            rtts.append(time.monotonic() - t1)
            stop.wait(0.02)
    tn = threading.Thread(target=noops, daemon=True)
    tn.start()
    time.sleep(0.3)
    assert old.quit().startswith(b"+OK")
    time.sleep(2.0)
    stop.set()
    tn.join(15)
    other.quit()
    print("NOOP round trips while the old engine was freed: %d, slowest %.3f s" % (
        len(rtts), max(rtts) if rtts else -1))
    assert compile_s > 0.5, "the database compiles in %.2f s: too fast to measure" % compile_s
    assert worst < min(compile_s / 3, 1.0), \
        "/ready took %.3f s to answer during a reload whose engine build takes about " \
        "%.2f s (popgate -t): the build ran on the main loop" % (worst, compile_s)
    assert rtts and max(rtts) < max(0.5, compile_s / 3), \
        "a NOOP took %.3f s while the old engine was freed" % max(rtts)
