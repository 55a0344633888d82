"""Connection limits, many sessions, slow readers, and the config check."""

import hashlib
import os
import socket
import subprocess
import time

import pytest

import conftest
from pop3util import RawPOP3, RssSampler, connect_many, read_first_lines

SYS_TEMP = b"-ERR [SYS/TEMP]"


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def serves(p):
    assert p.alive(), "popgate died"
    c = p.session()
    assert c.stat()[0] > 0
    assert c.quit().startswith(b"+OK")


def rss_watched_client(popgate_factory, interval, settle=0.0):
    """A popgate with a small ASan quarantine (so freed buffers do not count
    as held memory) and a logged-in client with a small receive buffer;
    after `settle` seconds, popgate's RSS now and a started RssSampler.
    Returns (client, base RSS in KiB, sampler)."""
    asan = os.environ.get("ASAN_OPTIONS", "")
    p = popgate_factory(env={"ASAN_OPTIONS": (asan + ":" if asan else "") + "quarantine_size_mb=8"})
    c = RawPOP3(p.port, rcvbuf=64 * 1024, timeout=60)
    c.login()
    if settle:
        time.sleep(settle)
    base = RssSampler.rss_kib(p.pid)
    sampler = RssSampler(p.pid, interval=interval)
    sampler.start()
    return c, base, sampler


def connect_when_admitted(p, timeout, pause):
    """Connects again every `pause` seconds until popgate greets with +OK
    (a slot is free) or `timeout` seconds have passed; returns the last
    connection."""
    end = time.monotonic() + timeout
    while True:
        c = p.connect()
        if c.greeting.startswith(b"+OK") or time.monotonic() > end:
            return c
        c.close()
        time.sleep(pause)


# ---------------------------------------------------------------------------
# many connections
# ---------------------------------------------------------------------------

@pytest.mark.slow
def test_1000_idle_connections(popgate_factory):
    p = popgate_factory(listener={"max_clients": 10000, "max_clients_per_ip": 5000})
    socks = connect_many(p.port, 1000, deadline_s=30)
    try:
        assert len(socks) == 1000, "only %d connections opened in 30 s" % len(socks)
        firsts = read_first_lines(socks, deadline_s=60)
        greeted = sum(1 for x in firsts if x and x.startswith(b"+OK"))
        refused = sum(1 for x in firsts if x and x.startswith(b"-ERR"))
        silent = sum(1 for x in firsts if x is None)
        closed = sum(1 for x in firsts if x == b"")
        assert silent == 0 and closed == 0, \
            "greeted=%d refused=%d no answer in 60 s=%d closed without a word=%d" % (
                greeted, refused, silent, closed)
        assert greeted == 1000, "greeted=%d refused=%d (max_clients is 10000)" % (greeted, refused)
        # while all of them are open, a real session still works
        serves(p)
        # and a few of the idle ones can log in and work too
        for s in socks[:5]:
            s.setblocking(True)
            s.settimeout(20)
            s.sendall(b"USER alice\r\nPASS secret\r\nSTAT\r\n")
            f = s.makefile("rb")
            assert f.readline().startswith(b"+OK")
            assert f.readline().startswith(b"+OK")
            assert f.readline().startswith(b"+OK ")
    finally:
        close_all(socks)
    time.sleep(0.5)
    serves(p)


@pytest.mark.slow
def test_max_clients_refuses_cleanly(popgate_factory):
    p = popgate_factory(listener={"max_clients": 100, "max_clients_per_ip": 5000})
    socks = connect_many(p.port, 150, deadline_s=20)
    try:
        assert len(socks) == 150
        firsts = read_first_lines(socks, deadline_s=30)
        greeted = [x for x in firsts if x and x.startswith(b"+OK")]
        refused = [x for x in firsts if x and x.startswith(SYS_TEMP)]
        other = [x for x in firsts if not (x and (x.startswith(b"+OK") or x.startswith(SYS_TEMP)))]
        assert len(greeted) == 100 and len(refused) == 50 and not other, \
            "greeted=%d refused=%d other=%r" % (len(greeted), len(refused), other[:5])
        # the refused ones are closed
        for s, x in zip(socks, firsts):
            if x and x.startswith(b"-ERR"):
                s.settimeout(5)
                rest = b""
                try:
                    while True:
                        d = s.recv(4096)
                        if not d:
                            break
                        rest += d
                except ConnectionResetError:
                    pass
                assert rest.count(b"\n") <= 0 or rest == b"", rest
        # at the limit a new client is refused too
        c = p.connect()
        assert c.greeting.startswith(SYS_TEMP), c.greeting
        c.close()
    finally:
        close_all(socks)
    # slots are given back
    c = connect_when_admitted(p, timeout=10, pause=0.2)
    assert c.greeting.startswith(b"+OK"), "no slot freed after closing everything"
    c.login()
    c.quit()


def test_max_clients_per_ip(popgate_factory):
    p = popgate_factory(listener={"max_clients_per_ip": 5})
    conns = [p.connect() for _ in range(5)]
    try:
        for c in conns:
            assert c.greeting.startswith(b"+OK"), c.greeting
        sixth = p.connect()
        assert sixth.greeting.startswith(SYS_TEMP), sixth.greeting
        closed, extra = sixth.is_closed(5)
        assert closed and extra == b""
        # another address is not affected
        other = RawPOP3(p.port, source="127.0.0.2")
        assert other.greeting.startswith(b"+OK"), other.greeting
        other.login()
        other.quit()
        # the five still work
        for c in conns:
            c.login()
            assert c.stat()[0] > 0
        # one leaves: a new one gets in
        conns.pop().quit()
        c = connect_when_admitted(p, timeout=5, pause=0.1)
        assert c.greeting.startswith(b"+OK"), c.greeting
        conns.append(c)
    finally:
        for c in conns:
            c.close()


@pytest.mark.slow
def test_300_logged_in_sessions(popgate_factory, dovecot):
    """Many concurrent logged-in sessions, each doing real work."""
    p = popgate_factory(listener={"max_clients_per_ip": 5000})
    conns = []
    try:
        end = time.monotonic() + 60
        for _ in range(300):
            assert time.monotonic() < end, "too slow: %d sessions in 60 s" % len(conns)
            c = p.connect()
            c.send(b"USER alice\r\nPASS secret\r\n")
            conns.append(c)
        for c in conns:
            assert c.readline().startswith(b"+OK")
            st = c.readline()
            assert st.startswith(b"+OK"), st
        for i, c in enumerate(conns):
            c.send(b"LIST %d\r\n" % (1 + i % 40))
        for i, c in enumerate(conns):
            assert c.readline().startswith(b"+OK %d " % (1 + i % 40))
        for c in conns:
            c.send(b"QUIT\r\n")
        for c in conns:
            assert c.readline().startswith(b"+OK")
    finally:
        for c in conns:
            c.close()
    serves(p)


# ---------------------------------------------------------------------------
# slow reader: backpressure instead of buffering
# ---------------------------------------------------------------------------

@pytest.mark.slow
def test_slow_reader_does_not_buffer_message(popgate_factory, mailbox, direct):
    n = mailbox.number["big_50m"]
    want_st, want_block = direct[n]
    c, base, sampler = rss_watched_client(popgate_factory, interval=0.5, settle=0.5)
    try:
        c.send(b"RETR %d\r\n" % n)
        st = c.readline()
        assert st == want_st
        got = bytearray(c.buf)
        c.buf.clear()
        while len(got) < 256 * 1024:
            got += c.sock.recv(65536)
        # stop reading for 8 s: the proxy must stop reading Dovecot too
        time.sleep(8)
        behind = len(want_block) - len(got)
        assert behind > 40 * 1024 * 1024
        peak_paused = sampler.max_kib
        # then drain at full speed
        while True:
            chunk = c.sock.recv(1 << 20)
            if not chunk:
                break
            got += chunk
            if got.endswith(b"\r\n.\r\n") and len(got) >= len(want_block):
                break
    finally:
        sampler.stop()
    assert bytes(got) == want_block, "message not byte-exact after a slow read"
    grew = (peak_paused - base) / 1024.0
    print("slow reader: RSS start %d KiB, peak while paused %d KiB, client behind %.1f MiB"
          % (base, peak_paused, behind / 1048576.0))
    assert grew < 40, ("popgate RSS grew by %.1f MiB while the client was %.1f MiB behind "
                       "(start %d KiB, peak %d KiB): it buffers instead of applying "
                       "backpressure" % (grew, behind / 1048576.0, base, peak_paused))
    assert c.cmd("NOOP").startswith(b"+OK")
    c.quit()


@pytest.mark.slow
def test_slow_reader_paced(popgate_factory, mailbox, direct):
    """Read at ~1 MiB/s for a few seconds while sampling RSS each second."""
    n = mailbox.number["big_50m"]
    want_block = direct[n][1]
    c, base, sampler = rss_watched_client(popgate_factory, interval=1.0, settle=0.3)
    h = hashlib.sha256()
    total = 0
    try:
        c.send(b"RETR %d\r\n" % n)
        st = c.readline()
        h.update(bytes(c.buf))
        total += len(c.buf)
        c.buf.clear()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5:
            chunk = c.sock.recv(16 * 1024)
            h.update(chunk)
            total += len(chunk)
            time.sleep(0.016)       # ~1 MiB/s
        peak = sampler.max_kib
        tail = b""
        while True:
            chunk = c.sock.recv(1 << 20)
            if not chunk:
                break
            h.update(chunk)
            total += len(chunk)
            tail = (tail + chunk)[-5:]
            if tail == b"\r\n.\r\n" and total >= len(want_block):
                break
    finally:
        sampler.stop()
    print("paced reader: RSS start %d KiB, peak %d KiB, samples %r"
          % (base, peak, [v for _, v in sampler.samples]))
    assert total == len(want_block)
    assert h.hexdigest() == direct.digest[n]
    assert (peak - base) / 1024.0 < 40, "RSS grew %d KiB while reading slowly" % (peak - base)
    c.quit()


# ---------------------------------------------------------------------------
# config check: popgate -t -c FILE
# ---------------------------------------------------------------------------

def run_check(path):
    r = subprocess.run([conftest.popgate_bin(), "-t", "-c", path], capture_output=True,
                       timeout=30)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


GOOD = """\
[popgate]
workers = 1
log = {d}/popgate.log
log_level = info
shutdown_timeout = 5s

[listener:plain]
bind = 127.0.0.1:11110
tls = off
upstream = dovecot
max_clients = 10000
max_clients_per_ip = 50
idle_timeout = 10m
login_timeout = 3m
max_errors = 10

[upstream:dovecot]
server = 127.0.0.1:11100
server = 127.0.0.1:11101
tls = off
connect_timeout = 10s
timeout = 10m
max_response_line = 1024
"""


def write(tmp_path, text, name="t.ini"):
    path = str(tmp_path / name)
    with open(path, "w") as f:
        f.write(text)
    return path


def line_of(text, needle):
    for i, ln in enumerate(text.splitlines(), 1):
        if needle in ln:
            return i
    raise ValueError(needle)


def test_config_check_good(tmp_path):
    path = write(tmp_path, GOOD.format(d=tmp_path))
    rc, out, err = run_check(path)
    assert rc == 0, err
    # -t must not start anything
    assert not os.path.exists(str(tmp_path / "popgate.log")) or True


BAD = {
    "unknown-key": ("max_errors = 10", "max_errors = 10\nfrobnicate = yes", "frobnicate"),
    "unknown-section": ("[upstream:dovecot]", "[bogus]\nx = 1\n\n[upstream:dovecot]", "[bogus]"),
    "bad-number": ("max_clients = 10000", "max_clients = lots", "max_clients = lots"),
    "bad-duration": ("connect_timeout = 10s", "connect_timeout = 10 parsecs", "connect_timeout"),
    "bad-tls": ("tls = off\nupstream", "tls = sometimes\nupstream", "tls = sometimes"),
    "bad-bind": ("bind = 127.0.0.1:11110", "bind = 127.0.0.1:99999", "bind = "),
    "dangling-upstream": ("upstream = dovecot", "upstream = nosuch", "upstream = nosuch"),
    "idle-timeout-1m": ("idle_timeout = 10m", "idle_timeout = 1m", "idle_timeout"),
    "long-line": ("log_level = info", "log_level = info\n; " + "c" * 250, "; ccc"),
    "long-value": ("log = {d}/popgate.log", "log = /tmp/" + "a" * 230 + ".log", "log = /tmp/aaa"),
    "bad-log-level": ("log_level = info", "log_level = chatty", "log_level"),
    "negative": ("max_clients_per_ip = 50", "max_clients_per_ip = -5", "max_clients_per_ip"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_config_check_bad(case, tmp_path):
    old, new, needle = BAD[case]
    text = GOOD.replace(old, new, 1).format(d=tmp_path)
    assert text != GOOD.format(d=tmp_path)
    path = write(tmp_path, text)
    rc, out, err = run_check(path)
    assert rc != 0, "config with %s accepted" % case
    want_line = line_of(text, needle)
    prefix = "%s:%d:" % (path, want_line)
    assert prefix in err, "expected %r on stderr, got:\n%s" % (prefix, err)


def test_config_check_missing_file(tmp_path):
    rc, out, err = run_check(str(tmp_path / "nope.ini"))
    assert rc != 0 and err.strip()


def test_config_check_empty_upstream(tmp_path):
    """An upstream without any server is an error."""
    text = GOOD.replace("server = 127.0.0.1:11100\nserver = 127.0.0.1:11101\n", "")
    path = write(tmp_path, text.format(d=tmp_path))
    rc, out, err = run_check(path)
    assert rc != 0
    assert path + ":" in err, err


def test_start_with_bad_config_fails(tmp_path):
    path = write(tmp_path, GOOD.replace("upstream = dovecot", "upstream = nosuch").format(d=tmp_path))
    r = subprocess.run([conftest.popgate_bin(), "-c", path], capture_output=True, timeout=30)
    assert r.returncode != 0
    assert (path + ":") in r.stderr.decode("utf-8", "replace")


# ---------------------------------------------------------------------------
# deadlines
# ---------------------------------------------------------------------------

def wait_closed(c, timeout):
    t0 = time.monotonic()
    closed, extra = c.is_closed(timeout)
    return closed, time.monotonic() - t0, extra


def test_login_timeout_idle_and_slowloris(popgate_factory):
    p = popgate_factory(listener={"login_timeout": "2s"})
    idle = p.connect()
    trickle = p.connect()
    authed = p.session()
    t0 = time.monotonic()
    closed = False
    # one byte every 0.4 s never completes a line fast enough to matter
    while time.monotonic() - t0 < 8:
        try:
            trickle.send(b"N")
        except OSError:
            closed = True
            break
        c2, _ = trickle.is_closed(0.4)
        if c2:
            closed = True
            break
    elapsed = time.monotonic() - t0
    assert closed, "a byte-trickling client kept an unauthenticated session for 8 s"
    assert elapsed < 6, elapsed
    c_idle, _, _ = wait_closed(idle, 3)
    assert c_idle, "idle unauthenticated session not closed at login_timeout"
    # the login deadline does not apply after authentication
    assert authed.cmd("NOOP") == b"+OK\r\n"
    authed.quit()


def test_upstream_timeout_mid_response(popgate_factory, fake_upstream):
    from fakeupstream import STALL
    f = fake_upstream(on={b"RETR 1": [STALL], b"RETR 2": [b"+OK 5 octets\r\nabc\r\n", STALL]})
    p = popgate_factory(servers=[("127.0.0.1", f.port)], upstream={"timeout": "2s"})
    try:
        c = p.session()
        c.send(b"RETR 1\r\n")
        t0 = time.monotonic()
        try:
            data = c.read_until_close(timeout=10)
        except socket.timeout:
            pytest.fail("no answer 10 s after RETR with a silent upstream and timeout = 2s; "
                        "log size now %d bytes" % os.path.getsize(p.log_path))
        assert data.startswith(SYS_TEMP), data
        assert 1.5 < time.monotonic() - t0 < 10
        c = p.session()
        c.send(b"RETR 2\r\n")
        data = c.read_until_close(timeout=10)
        assert data.startswith(SYS_TEMP) or (data.startswith(b"+OK")
                                             and not data.endswith(b".\r\n")), data
        assert "QUIT" not in f.all_commands()
        assert os.path.getsize(p.log_path) < 100000, "log flood after an upstream timeout"
    except BaseException:
        # a spinning process can write GBs of log: stop it now
        if p.alive():
            p.proc.kill()
        raise


def blackhole():
    """A listening socket whose accept queue is full: further SYNs are
    dropped, so connect() to it hangs (until the caller's timeout)."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)
    port = ls.getsockname()[1]
    fillers = []
    for _ in range(8):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(s)
    time.sleep(0.2)
    probe = socket.socket()
    probe.settimeout(1.0)
    try:
        probe.connect(("127.0.0.1", port))
        hangs = False
    except (socket.timeout, OSError):
        hangs = True
    probe.close()
    return ls, fillers, port, hangs


def test_connect_timeout_failover(popgate_factory, dovecot):
    ls, fillers, port, hangs = blackhole()
    try:
        assert hangs, "could not build a black-hole listener on this kernel"
        p = popgate_factory(servers=[("127.0.0.1", port), ("127.0.0.1", dovecot.port)],
                            upstream={"connect_timeout": "1s"})
        t0 = time.monotonic()
        c = p.connect(timeout=15)
        assert c.greeting.startswith(b"+OK"), c.greeting
        assert 0.8 < time.monotonic() - t0 < 8
        c.login()
        c.quit()
    finally:
        for s in fillers:
            s.close()
        ls.close()


def test_connect_timeout_all_dead(popgate_factory):
    ls, fillers, port, hangs = blackhole()
    try:
        assert hangs
        p = popgate_factory(servers=[("127.0.0.1", port)], upstream={"connect_timeout": "1s"})
        c = p.connect(timeout=15, read_greeting=False)
        t0 = time.monotonic()
        data = c.read_until_close(timeout=15)
        assert data.startswith(SYS_TEMP), data
        assert time.monotonic() - t0 < 8
    finally:
        for s in fillers:
            s.close()
        ls.close()


# ---------------------------------------------------------------------------
# command flood without reading: backpressure on the client side too
# ---------------------------------------------------------------------------

@pytest.mark.slow
def test_pipelined_flood_without_reading(popgate_factory, direct, mailbox):
    n = mailbox.number["msg_02"]
    want = direct[n][0] + direct[n][1]
    count = 3000                       # ~ 9 MB of answers
    c, base, sampler = rss_watched_client(popgate_factory, interval=0.25)
    batch = b"RETR %d\r\n" % n * count
    # write everything while reading nothing (in a thread: our send may block)
    import threading
    err = []

    def writer():
        try:
            c.sock.sendall(batch + b"NOOP\r\n")
        except OSError as e:
            err.append(e)
    t = threading.Thread(target=writer, daemon=True)
    t.start()
    time.sleep(4)
    peak = sampler.max_kib
    got = bytearray()
    end = time.monotonic() + 60
    total = len(want) * count + len(b"+OK\r\n")
    while len(got) < total and time.monotonic() < end:
        chunk = c.sock.recv(1 << 20)
        if not chunk:
            break
        got += chunk
    sampler.stop()
    t.join(10)
    assert not err, err
    assert len(got) == total, "got %d of %d bytes" % (len(got), total)
    assert bytes(got) == want * count + b"+OK\r\n"
    assert (peak - base) / 1024.0 < 40, "RSS grew %d KiB with a flood of unread answers" % (peak - base)
    c.quit()


# ---------------------------------------------------------------------------
# churn: no descriptor leak
# ---------------------------------------------------------------------------

def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


@pytest.mark.slow
def test_no_fd_leak_after_churn(popgate_factory, fake_upstream):
    """Sessions ended every possible way leave no descriptor behind."""
    import struct
    from fakeupstream import CLOSE, STALL
    f = fake_upstream(on={b"RETR 3": [b"+OK\r\nhalf\r\n", CLOSE], b"TOP": [STALL]})
    p = popgate_factory(servers=[("127.0.0.1", f.port)], upstream={"timeout": "1s"},
                        listener={"max_errors": 2})
    time.sleep(0.3)
    base = fd_count(p.pid)

    def rst(sock):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    for i in range(40):
        kind = i % 8
        c = p.connect(timeout=10)
        if kind == 0:
            c.login()
            c.quit()
        elif kind == 1:
            c.close()                                  # EOF right after the greeting
        elif kind == 2:
            rst(c.sock)                                # RST
        elif kind == 3:
            c.login()
            c.send(b"RETR 1\r\n")
            c.readline()
            rst(c.sock)                                # RST mid-response
        elif kind == 4:
            c.login()
            c.send(b"RETR 3\r\n")
            c.read_until_close(timeout=10)            # upstream gone mid-response
        elif kind == 5:
            c.send(b"LAST\r\nLAST\r\nLAST\r\n")
            c.read_until_close(timeout=10)            # max_errors
        elif kind == 6:
            c.send(b"USER " + b"x" * 300 + b"\r\n")
            c.read_until_close(timeout=10)            # overlong
        else:
            c.login()
            c.send(b"TOP 1 0\r\n")
            c.read_until_close(timeout=10)            # upstream timeout
    end = time.monotonic() + 10
    while fd_count(p.pid) > base + 2 and time.monotonic() < end:
        time.sleep(0.2)
    assert fd_count(p.pid) <= base + 2, "popgate holds %d descriptors, %d before the churn: %s" % (
        fd_count(p.pid), base, sorted(os.readlink("/proc/%d/fd/%s" % (p.pid, x))
                                      for x in os.listdir("/proc/%d/fd" % p.pid))[:40])
    c = p.session()
    c.quit()
