"""The metrics listener: Prometheus text at /metrics, readiness at /ready,
counters that follow real sessions through popgate to the real Dovecot."""

import re
import signal
import socket
import time
import urllib.error
import urllib.request

from pop3util import dead_port, free_port, wait_listening


def scrape(port, path="/metrics"):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
        return r.status, r.read().decode()


def values(text):
    """{'name{labels}': float} from Prometheus text, checking its shape."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"# (HELP|TYPE) popgate_\w+ ", line), line
            continue
        m = re.fullmatch(r'(popgate_\w+(?:\{\w+="[^"]*"\})?) (-?\d+(?:\.\d+)?)', line)
        assert m, "malformed sample line: %r" % line
        out[m.group(1)] = float(m.group(2)) if "." in m.group(2) else int(m.group(2))
    return out


def metrics_popgate(popgate_factory, popgate=None, **kw):
    mport = free_port()
    pg = popgate_factory(popgate=dict(popgate or {}, metrics="127.0.0.1:%d" % mport),
                         **kw)
    assert wait_listening(mport, timeout=10)
    return pg, mport


def test_counters_follow_sessions(popgate_factory):
    pg, mport = metrics_popgate(popgate_factory)
    before = values(scrape(mport)[1])
    assert before["popgate_connections_total"] == 0
    assert before["popgate_connections_active"] == 0

    c = pg.session()
    c.stat()
    msg = c.retr(1)[1]
    bad = c.cmd("XTND XMIT")
    assert bad.startswith(b"-ERR")
    mid = values(scrape(mport)[1])
    assert mid["popgate_connections_active"] == 1
    assert mid['popgate_commands_total{command="RETR"}'] == 1
    assert mid['popgate_commands_total{command="STAT"}'] == 1
    assert mid["popgate_commands_rejected_total"] == 1
    # Bytes are counted as they flow, not only when a session ends.
    assert mid['popgate_bytes_total{direction="client_out"}'] >= len(msg)
    assert mid['popgate_bytes_total{direction="upstream_in"}'] >= len(msg)
    c.quit()
    c.close()

    deadline = time.time() + 5
    while time.time() < deadline:
        after = values(scrape(mport)[1])
        if after["popgate_connections_active"] == 0:
            break
        time.sleep(0.05)
    assert after["popgate_connections_total"] == 1
    assert after["popgate_connections_active"] == 0
    assert after['popgate_commands_total{command="QUIT"}'] == 1
    assert after["popgate_upstream_errors_total"] == 0


def test_upstream_errors_counted(popgate_factory):
    pg, mport = metrics_popgate(popgate_factory, servers=[("127.0.0.1", dead_port())])
    c = pg.connect()
    assert c.greeting.startswith(b"-ERR [SYS/TEMP]")
    c.close()
    v = values(scrape(mport)[1])
    assert v["popgate_upstream_errors_total"] == 1


def test_ready_and_unknown_paths(popgate_factory):
    pg, mport = metrics_popgate(popgate_factory)
    assert scrape(mport, "/ready") == (200, "ready\n")
    try:
        scrape(mport, "/nope")
        raise AssertionError("404 expected")
    except urllib.error.HTTPError as e:
        assert e.code == 404


def test_oversized_or_silent_scrape_is_cut(popgate_factory):
    pg, mport = metrics_popgate(popgate_factory)
    s = socket.create_connection(("127.0.0.1", mport), timeout=10)
    s.sendall(b"GET /metrics HTTP/1.0\r\n" + b"X: " + b"a" * 8000)
    data = s.recv(4096)
    assert data.startswith(b"HTTP/1.0 431")
    s.close()
    # A client that sends nothing is dropped after the read deadline.
    s = socket.create_connection(("127.0.0.1", mport), timeout=10)
    t0 = time.time()
    assert s.recv(10) == b""
    assert time.time() - t0 < 9
    s.close()
    assert pg.alive()


def test_ready_goes_away_on_sigterm(popgate_factory):
    pg, mport = metrics_popgate(popgate_factory, popgate={"shutdown_timeout": "3s"})
    c = pg.session()                 # keeps the process in its drain phase
    pg.proc.send_signal(signal.SIGTERM)
    deadline = time.time() + 5
    closed = False
    while time.time() < deadline:
        try:
            scrape(mport, "/ready")
        except (urllib.error.URLError, ConnectionError, OSError):
            closed = True            # the metrics listener stops at once
            break
        time.sleep(0.05)
    assert closed
    c.close()
