"""Adversarial clients against the session code: regression tests.

Each test names the defect it covers (numbers of the issue):

  1  client output produced by popgate itself (local replies) was not
     bounded: a client that never reads and sends lines popgate answers
     locally made popgate's memory grow without bound; refused STLS did
     not count toward max_errors.
  2  the client's EOF was not seen while its reads were paused (AUTH
     exchange waiting for the upstream, after QUIT, full command queue):
     the session and its max_clients_per_ip slot lived on until the
     upstream answered.
  6  every session's command-input buffer was a 264 KiB allocation as
     soon as one byte arrived without CRLF.
  8  STLS pipelined behind USER/PASS (or APOP) in one write started TLS
     after login (RFC 2595 4: STLS only in the AUTHORIZATION state, before
     any authentication).

About defect 1 and max_errors: once a refused STLS counts as a protocol
error, every line popgate answers by itself is an error, and max_errors
(at most 1000) ends a flood of them after at most 1000 short replies
(well under the 256 KiB high watermark). A flood of commands relayed to
the upstream was already bounded (the command queue stops client reads;
test_limits.py::test_pipelined_flood_without_reading). So the RSS tests
below flood STLS with max_errors = 1000 and assert only what a correct
proxy guarantees whichever way it stops the flood (backpressure or
max_errors): popgate's RSS stays bounded while a client that never reads
keeps writing. They fail today because the refusals are neither counted
nor held back. Stopping client reads is not enough on its own: one read
of up to 256 KiB of "STLS\r\n" makes ~1.9 MB of replies, so parsing has
to stop at the watermark too (a trial build that only stopped reads
still grew by 9 MiB in 0.4 s).

Two tests pass today on purpose, as guards for the rewrite:
test_eof_during_failed_login_dovecot_delay[user-pass] (a PASS does not
pause client reads today, so the EOF is seen) and
test_stls_after_login_in_later_write_refused (already -ERR today).
"""

import base64
import errno
import hashlib
import os
import re
import resource
import socket
import time

import pytest

from conftest import Dovecot, Lines
import corpus as corpus_mod
from fakeupstream import CLOSE, STALL, Sleep
from pop3util import RawPOP3, RssSampler, close_lines_for, connect_many, read_first_lines

TOO_MANY = b"-ERR Too many invalid commands, closing\r\n"
# How soon a session must end after its client closed. The upstream's
# answer is delayed far longer (STALL: never, else >= 2 s), so the bound
# tells "seen at once" from "seen when the upstream answered" while
# leaving room for a loaded 2-core machine (the target is ~100 ms).
CLOSE_BOUND = 1.0
RSS_FLOOD_SECONDS = 20.0
RSS_LIMIT_KIB = 8 * 1024
# Sessions that the defects leave open would hold each teardown for the
# default 5 s drain.
QUICK_STOP = {"shutdown_timeout": "1s"}


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def asan_env():
    """A 1 MiB ASan quarantine, so that freed buffers do not count as held
    memory. test_limits.py uses 8 MiB against a 40 MiB bound; here the bound
    is 8 MiB, and a flood that allocates and frees small replies at a high
    rate fills an 8 MiB quarantine entirely (seen: +8.7 MiB RSS in 1 s for a
    build that does apply backpressure, +2 to 3.5 MiB over 20 s with 0 or
    1 MiB)."""
    asan = os.environ.get("ASAN_OPTIONS", "")
    return {"ASAN_OPTIONS": (asan + ":" if asan else "") + "quarantine_size_mb=1"}


def wait_close_line(p, client_port, deadline):
    """Poll p's log until the ev=close line of the session from
    127.0.0.1:client_port appears or monotonic time passes deadline;
    returns the line or None."""
    while True:
        lines = close_lines_for(p.log_text(), client_port)
        if lines:
            return lines[0]
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)


def greeted_before(p, deadline):
    """Connect from 127.0.0.1 until popgate greets with +OK or monotonic
    time passes deadline (at least one attempt); returns the last first
    line received."""
    while True:
        c = p.connect(timeout=10)
        g = c.greeting
        c.close()
        if g.startswith(b"+OK") or time.monotonic() > deadline:
            return g
        time.sleep(0.02)


def wait_for(pred, timeout):
    """Poll pred() every 10 ms for at most timeout seconds."""
    end = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.01)


def fake_saw(f, line, timeout=5.0):
    """Wait until the fake upstream received line (on any connection)."""
    return wait_for(lambda: line in f.all_commands(), timeout)


def assert_session_ends_promptly(p, c, what):
    """The client c closes now: its session must be logged as closed and
    its max_clients_per_ip = 1 slot be free within CLOSE_BOUND."""
    port = c.local_port
    t0 = time.monotonic()
    c.close()
    line = wait_close_line(p, port, t0 + CLOSE_BOUND)
    elapsed = time.monotonic() - t0
    assert line is not None, (
        "%s: no ev=close line %.1f s after the client closed (the session "
        "waits for the upstream's answer)" % (what, elapsed))
    g = greeted_before(p, t0 + CLOSE_BOUND)
    assert g.startswith(b"+OK"), (
        "%s: a new connection from the same address %.2f s after the client "
        "closed got %r (max_clients_per_ip = 1: the old slot is still held)"
        % (what, time.monotonic() - t0, g))
    return line


def flood_never_reading(sock, payload, seconds, pid, limit_kib, base_kib):
    """Write payload every millisecond on a non-blocking socket for up to
    `seconds`, never reading. What does not fit is sent later, whole lines
    only (a full socket buffer is backpressure). Stops early when the peer is gone (the session ended)
    or when pid's RSS exceeds base + limit (no need to wait the full
    time to know). Returns (bytes sent, peer gone, seconds)."""
    sock.setblocking(False)
    sent = 0
    gone = False
    rest = b""      # the part of a payload a short write left over
    t0 = time.monotonic()
    next_check = t0
    while time.monotonic() - t0 < seconds:
        try:
            data = rest or payload
            n = sock.send(data)
            sent += n
            rest = data[n:]
        except BlockingIOError:
            pass
        except OSError as e:
            if e.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                gone = True
                break
            raise
        now = time.monotonic()
        if now >= next_check:
            next_check = now + 0.1
            rss = RssSampler.rss_kib(pid)
            if rss is not None and rss - base_kib > limit_kib:
                break
        time.sleep(0.001)
    return sent, gone, time.monotonic() - t0


def read_until_close_within(c, timeout):
    """Read a RawPOP3 until EOF/RST or timeout; returns (bytes, closed)."""
    data = bytearray(c.buf)
    c.buf.clear()
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return bytes(data), False
        c.sock.settimeout(left)
        try:
            chunk = c.sock.recv(65536)
        except socket.timeout:
            return bytes(data), False
        except ConnectionResetError:
            return bytes(data), True
        if not chunk:
            return bytes(data), True
        data += chunk


def status_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def close_lines_for_any(log_text):
    return [ln for ln in log_text.splitlines() if " ev=close " in ln]


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n if hard == resource.RLIM_INFINITY else min(n, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------
# defect 1: local replies to a client that never reads
# ---------------------------------------------------------------------------

def rss_flood(popgate_factory, login):
    p = popgate_factory(env=asan_env(), popgate=QUICK_STOP,
                        listener={"max_errors": 1000, "login_timeout": "24h"})
    c = RawPOP3(p.port, rcvbuf=64 * 1024, timeout=20)
    if login:
        c.login()            # the real Dovecot's alice/secret
    time.sleep(0.3)
    base = RssSampler.rss_kib(p.pid)
    sampler = RssSampler(p.pid, interval=0.25)
    sampler.start()
    try:
        sent, gone, secs = flood_never_reading(c.sock, b"STLS\r\n" * 64, RSS_FLOOD_SECONDS,
                                               p.pid, RSS_LIMIT_KIB, base)
        time.sleep(0.3)
    finally:
        sampler.stop()
    peak = max(sampler.max_kib or 0, RssSampler.rss_kib(p.pid) or 0)
    c.close()
    grew = peak - base
    print("STLS flood (%s): %d bytes sent in %.1f s, session ended: %s, RSS %d -> peak %d KiB"
          % ("after login" if login else "before login", sent, secs, gone, base, peak))
    assert p.alive(), "popgate died"
    assert grew <= RSS_LIMIT_KIB, (
        "popgate's RSS grew by %.1f MiB while a client that never reads sent %d bytes "
        "of STLS in %.1f s (session ended: %s): local replies are buffered without "
        "bound" % (grew / 1024.0, sent, secs, gone))


@pytest.mark.slow
def test_stls_flood_before_login_rss_bounded(popgate_factory):
    """Defect 1: plaintext listener, never reading, 64 STLS per write each
    millisecond: every line is answered locally with "-ERR STLS is not
    offered on this listener". max_errors = 1000, login_timeout = 24h."""
    rss_flood(popgate_factory, login=False)


@pytest.mark.slow
def test_stls_flood_after_login_rss_bounded(popgate_factory):
    """Defect 1: the same flood after a real Dovecot login ("-ERR STLS is
    only allowed before login"), where no login deadline ever ends it."""
    rss_flood(popgate_factory, login=True)


@pytest.mark.parametrize("login", [False, True], ids=["before-login", "after-login"])
def test_stls_refusals_count_toward_max_errors(login, popgate_factory):
    """Defect 1: a refused STLS is a protocol error. With the default
    max_errors = 10, 64 STLS in one write end the session: at most 10
    -ERR lines, the last one "Too many invalid commands", then the close."""
    p = popgate_factory(popgate=QUICK_STOP)
    c = p.connect(timeout=10)
    if login:
        c.login()
    c.send(b"STLS\r\n" * 64)
    data, closed = read_until_close_within(c, 5.0)
    c.close()
    assert closed, ("64 refused STLS with max_errors = 10: still open after 5 s; received "
                    "%d lines, first %r" % (data.count(b"\n"), data[:80]))
    lines = data.split(b"\r\n")[:-1]
    assert data.endswith(TOO_MANY), data[-200:]
    assert 1 <= len(lines) <= 10 and all(x.startswith(b"-ERR") for x in lines), data[:800]


# ---------------------------------------------------------------------------
# defect 2: the client's EOF while its reads are paused
# ---------------------------------------------------------------------------

def one_per_ip(proxy_to_fake, **fake):
    return proxy_to_fake(pg=dict(popgate=QUICK_STOP, listener={"max_clients_per_ip": 1}),
                         **fake)


def test_eof_during_auth_exchange_upstream_stalls(proxy_to_fake):
    """Defect 2(a): "AUTH PLAIN" is forwarded and popgate waits for the
    upstream's "+ " challenge (client reads paused); the upstream never
    answers; the client closes: the session must end at once."""
    p, f = one_per_ip(proxy_to_fake, on={b"AUTH": [STALL]})
    c = p.connect(timeout=10)
    assert c.greeting.startswith(b"+OK"), c.greeting
    c.send(b"AUTH PLAIN\r\n")
    assert fake_saw(f, "AUTH PLAIN"), f.all_commands()
    assert_session_ends_promptly(p, c, "client gone during AUTH PLAIN")
    assert f.wait_closed(f.conns[0], 5), "upstream connection left open"


def assert_slot_free_promptly(p, t0, what):
    g = greeted_before(p, t0 + CLOSE_BOUND)
    assert g.startswith(b"+OK"), (
        "%s: a new connection from the same address %.2f s after the client "
        "closed got %r (max_clients_per_ip = 1: the old slot is still held)"
        % (what, time.monotonic() - t0, g))


def test_eof_after_quit_upstream_delays_answer(proxy_to_fake):
    """Defect 2(b): QUIT forwarded, the upstream answers only after 5 s;
    the client closes right after sending QUIT. Its slot is free at once;
    the QUIT still runs to its answer (a client that only half-closed
    reads it, and the upstream commits its DELEs), then the session ends."""
    p, f = one_per_ip(proxy_to_fake, on={b"QUIT": [Sleep(5), b"+OK bye\r\n", CLOSE]})
    c = p.session(timeout=10)
    port = c.local_port
    c.send(b"QUIT\r\n")
    assert fake_saw(f, "QUIT"), f.all_commands()
    t0 = time.monotonic()
    c.close()
    assert_slot_free_promptly(p, t0, "client gone after QUIT")
    line = wait_close_line(p, port, t0 + 10)
    assert line is not None and "reason=quit" in line, line
    assert time.monotonic() - t0 >= 4.0, "ended before the upstream answered"


def test_quit_then_close_frees_slot_upstream_stalls(proxy_to_fake):
    """Defect 2 (QUIT, cheap): QUIT and the close in one go, the upstream
    never answers the QUIT: the per-IP slot is free at once, and the
    session ends at the upstream's timeout, never later."""
    p, f = proxy_to_fake(pg=dict(popgate=QUICK_STOP, listener={"max_clients_per_ip": 1},
                                 upstream={"timeout": "2s"}),
                         on={b"QUIT": [STALL]})
    c = p.session(timeout=10)
    port = c.local_port
    c.send(b"QUIT\r\n")
    t0 = time.monotonic()
    c.close()
    assert_slot_free_promptly(p, t0, "QUIT then close, upstream silent")
    assert fake_saw(f, "QUIT"), f.all_commands()
    line = wait_close_line(p, port, t0 + 8)
    assert line is not None and "reason=upstream_timeout" in line, line


def test_eof_with_full_command_queue(proxy_to_fake):
    """Defect 2(c): 100 pipelined NOOPs, the upstream never answers the
    first: the queue fills (64), popgate stops reading; the client closes."""
    p, f = one_per_ip(proxy_to_fake, on={b"NOOP": [STALL]})
    c = p.session(timeout=10)
    c.send(b"NOOP\r\n" * 100)
    assert fake_saw(f, "NOOP"), f.all_commands()
    assert_session_ends_promptly(p, c, "client gone with a full command queue")


class SlowAuthDovecot(Dovecot):
    """A Dovecot with its default auth_failure_delay (2 s) and a user
    without "nodelay": failed logins are answered 2 s late."""

    def __init__(self, corpus):
        super().__init__(corpus, prefix="popgate-it-dovecot-delay-")

    def config_text(self):
        text = super().config_text()
        assert "auth_failure_delay = 0\n" in text
        return text.replace("auth_failure_delay = 0\n", "auth_failure_delay = 2 secs\n")

    def prepare(self):
        super().prepare()
        with open(self.passwd, "a") as f:
            f.write("carol:{PLAIN}carolpw::::::\n")
        st = os.stat(self.passwd)
        os.utime(self.passwd, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))


@pytest.fixture(scope="module")
def slow_auth_dovecot(corpus):
    small = [(n, d) for n, d in corpus if n in corpus_mod.SMALL]
    d = SlowAuthDovecot(small)
    try:
        d.prepare()
        d.start()
        # the precondition: a wrong password is answered about 2 s late
        c = d.connect()
        assert c.cmd("USER carol").startswith(b"+OK")
        t0 = time.monotonic()
        st = c.cmd("PASS wrong")
        delay = time.monotonic() - t0
        c.close()
        assert st.startswith(b"-ERR") and delay > 1.5, (st, delay)
        yield d
    finally:
        d.stop()
        d.cleanup()


@pytest.mark.parametrize("how", ["auth-plain", "user-pass"])
def test_eof_during_failed_login_dovecot_delay(how, slow_auth_dovecot, popgate_factory):
    """Defect 2(d): a wrong password against a real Dovecot that delays
    failures by 2 s, then the client closes at once: the slot is free well
    before Dovecot answers. (AUTH with an initial response pauses client
    reads until the answer; PASS does not pause them today.)"""
    d = slow_auth_dovecot
    p = popgate_factory(servers=[(d.host, d.port)], popgate=QUICK_STOP,
                        listener={"max_clients_per_ip": 1})
    c = p.connect(timeout=10)
    assert c.greeting.startswith(b"+OK"), c.greeting
    if how == "auth-plain":
        c.send(b"AUTH PLAIN " + base64.b64encode(b"\0carol\0wrong") + b"\r\n")
    else:
        assert c.cmd("USER carol").startswith(b"+OK")
        c.send(b"PASS wrong\r\n")
    # no transcript to poll on a real Dovecot: give popgate a moment to
    # forward the line (well under the 2 s delay)
    time.sleep(0.2)
    assert_session_ends_promptly(p, c, "client gone after a wrong password (%s)" % how)


# ---------------------------------------------------------------------------
# defect 6: memory per session holding a partial line
# ---------------------------------------------------------------------------

@pytest.mark.slow
def test_partial_line_memory_per_session(popgate_factory):
    """Defect 6: 2000 sessions each holding one byte without CRLF: a
    correct proxy keeps a small buffer for the partial line, not a
    264 KiB one. Growth for all of them < 2000 * 64 KiB.

    Measured as VmData (the process's private writable memory, what the
    allocator obtained) as well as VmRSS: a 264 KiB malloc() is mmap()ed
    and only the pages written count in RSS (the baseline showed ~4 KiB per
    session in RSS for the release build, ~46 KiB with ASan, but ~265 KiB
    per session in VmData for both). So VmData is what tells the defect;
    RSS is checked against the same bound."""
    n = 2000
    have = raise_nofile(n + 1000)
    assert have >= n + 500, "RLIMIT_NOFILE %d too low for %d connections" % (have, n)
    p = popgate_factory(env=asan_env(), popgate=QUICK_STOP,
                        listener={"max_clients": 10000, "max_clients_per_ip": 5000})
    socks = connect_many(p.port, n, deadline_s=40)
    try:
        assert len(socks) == n, "only %d connections opened in 40 s" % len(socks)
        firsts = read_first_lines(socks, deadline_s=60)
        greeted = sum(1 for x in firsts if x and x.startswith(b"+OK"))
        assert greeted == n, "greeted %d of %d" % (greeted, n)
        time.sleep(0.5)
        rss0, data0 = status_kib(p.pid, "VmRSS"), status_kib(p.pid, "VmData")
        for s in socks:
            s.sendall(b"N")
        # until popgate has read them all: VmData and RSS stop moving
        # (three samples 0.3 s apart within 256 KiB; at most 15 s)
        last, stable, end = None, 0, time.monotonic() + 15
        while time.monotonic() < end and stable < 3:
            time.sleep(0.3)
            now = (status_kib(p.pid, "VmRSS"), status_kib(p.pid, "VmData"))
            if last is not None and all(abs(a - b) < 256 for a, b in zip(now, last)):
                stable += 1
            else:
                stable = 0
            last = now
        rss1, data1 = status_kib(p.pid, "VmRSS"), status_kib(p.pid, "VmData")
        assert p.alive()
        # every session is still there, holding its byte
        assert len(close_lines_for_any(p.log_text())) == 0, "sessions were closed"
    finally:
        close_all(socks)
    print("partial lines: VmRSS %d -> %d KiB (%.1f KiB per session), VmData %d -> %d KiB "
          "(%.1f KiB per session)" % (rss0, rss1, (rss1 - rss0) / float(n),
                                      data0, data1, (data1 - data0) / float(n)))
    for name, grew in (("VmData", data1 - data0), ("VmRSS", rss1 - rss0)):
        assert grew < n * 64, (
            "popgate's %s grew by %.1f MiB for %d sessions holding one byte each "
            "(%.0f KiB per session)" % (name, grew / 1024.0, n, grew / float(n)))


# ---------------------------------------------------------------------------
# defect 8: STLS behind a pipelined login
# ---------------------------------------------------------------------------

def stls_listener(certs):
    c1, k1 = certs.pair("pop")
    return {"tls": "starttls", "require_tls": "no",
            "certs": Lines([("cert", c1), ("key", k1)])}


APOP_TS = re.compile(rb"<[^<>@\s]+@[^<>\s]+>")


@pytest.mark.parametrize("how", ["user-pass", "apop"])
def test_stls_pipelined_after_login_refused(how, popgate_factory, certs):
    """Defect 8: "USER/PASS/STLS" (or "APOP/STLS") in one write on an STLS
    listener with require_tls = no: STLS must be refused with -ERR, never
    "+OK Begin TLS negotiation", and the session goes on in the clear."""
    p = popgate_factory(popgate=QUICK_STOP, listener=stls_listener(certs))
    c = p.connect(timeout=10)
    if how == "user-pass":
        c.send(b"USER alice\r\nPASS secret\r\nSTLS\r\n")
        assert c.readline().startswith(b"+OK")
    else:
        m = APOP_TS.search(c.greeting)
        assert m, "no APOP timestamp in the greeting: %r" % c.greeting
        digest = hashlib.md5(m.group(0) + b"secret").hexdigest().encode()
        c.send(b"APOP alice " + digest + b"\r\nSTLS\r\n")
    st = c.readline()
    assert st.startswith(b"+OK"), "login failed: %r" % st
    st = c.readline()
    assert st.startswith(b"-ERR"), "STLS pipelined behind a login answered %r" % st
    assert c.stat()[0] > 0
    assert c.quit().startswith(b"+OK")


def test_stls_after_login_in_later_write_refused(popgate_factory, certs):
    """Defect 8 (guard): USER/PASS in one write, STLS in a later write
    after the +OK to PASS: -ERR (today's answer; must stay so)."""
    p = popgate_factory(popgate=QUICK_STOP, listener=stls_listener(certs))
    c = p.connect(timeout=10)
    c.send(b"USER alice\r\nPASS secret\r\n")
    assert c.readline().startswith(b"+OK")
    assert c.readline().startswith(b"+OK")
    st = c.cmd("STLS")
    assert st.startswith(b"-ERR"), st
    assert c.stat()[0] > 0
    assert c.quit().startswith(b"+OK")
