"""The daemon's life: -V/-h, SIGHUP reload, SIGUSR1 log reopening, SIGTERM
drain and a second SIGTERM, against the real Dovecot."""

import os
import signal
import subprocess
import time

import conftest
from pop3util import POP3Error, RawPOP3, dead_port


def wait_for(pred, timeout=10.0, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False


def reload_with(p, mutate):
    """Rewrites p's config with mutate(sections) applied, sends SIGHUP and
    waits for the log line that says how it went; returns that line."""
    mutate(p.sections)
    p.write_config()
    before = p.log_text().count("ev=reload")
    p.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: p.log_text().count("ev=reload") > before), \
        "no reload log line:\n" + p.log_text()
    return [l for l in p.log_text().splitlines() if "ev=reload" in l][-1]


def section(p, name):
    return dict(p.sections)[name]


def test_version_and_help():
    r = subprocess.run([conftest.popgate_bin(), "-V"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0
    out = r.stdout
    assert out.startswith("popgate ")
    assert "libuv " in out and "OpenSSL 3" in out and "libclamav " in out
    r = subprocess.run([conftest.popgate_bin(), "-h"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0 and "-t -c FILE" in r.stdout
    r = subprocess.run([conftest.popgate_bin()], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 2 and "usage" in r.stderr


def test_reload_applies_to_new_sessions_only(popgate_factory, dovecot):
    p = popgate_factory()
    old = p.session()                       # started on the old generation
    assert old.stat()[0] > 0

    line = reload_with(p, lambda s: section(p, "upstream:up").update(
        server=["127.0.0.1:%d" % dead_port()]))
    assert "ev=reload status=ok" in line

    # New sessions use the new upstream (nothing listens there)...
    c = p.connect()
    assert c.greeting.startswith(b"-ERR [SYS/TEMP]")
    c.close()
    # ...while the session from before keeps working on its own.
    assert old.stat()[0] > 0
    assert old.retr(1)[1].endswith(b"\r\n.\r\n")
    assert old.quit().startswith(b"+OK")

    line = reload_with(p, lambda s: section(p, "upstream:up").update(
        server=["%s:%d" % (dovecot.host, dovecot.port)]))
    assert "status=ok" in line
    c = p.session()
    assert c.stat()[0] > 0
    c.quit()


def test_bad_reload_keeps_the_old_config(popgate_factory):
    p = popgate_factory()
    line = reload_with(p, lambda s: section(p, "listener:plain").update(
        idle_timeout="1m"))
    assert "ev=reload_failed" in line and "action=kept_old" in line
    assert "popgate.ini:" in line and "idle_timeout" in line
    c = p.session()                         # still serving, with the old file
    assert c.stat()[0] > 0
    c.quit()

    # Moving a listener needs a restart: refused, and the old port serves.
    line = reload_with(p, lambda s: section(p, "listener:plain").update(
        idle_timeout="10m", bind="127.0.0.1:%d" % dead_port()))
    assert "ev=reload_failed" in line and "restart" in line
    c = p.session()
    assert c.stat()[0] > 0
    c.quit()


def test_reload_limits(popgate_factory):
    p = popgate_factory(listener={"max_clients_per_ip": 50})
    first = p.session()
    line = reload_with(p, lambda s: section(p, "listener:plain").update(
        max_clients_per_ip=1))
    assert "status=ok" in line
    c = p.connect()                         # the second from this address
    assert c.greeting.startswith(b"-ERR [SYS/TEMP]")
    c.close()
    first.quit()
    first.close()
    assert wait_for(lambda: "reason=quit" in p.log_text())
    c = p.session()                         # the slot is free again
    c.quit()


def test_sigusr1_reopens_the_log(popgate_factory):
    p = popgate_factory()
    c = p.session()
    c.quit()
    assert wait_for(lambda: "reason=quit" in p.log_text())
    rotated = p.log_path + ".1"
    os.rename(p.log_path, rotated)
    p.proc.send_signal(signal.SIGUSR1)
    assert wait_for(lambda: os.path.exists(p.log_path)), "log not reopened"
    c = p.session()
    c.quit()
    assert wait_for(lambda: "reason=quit" in p.log_text())
    with open(rotated) as f:
        assert f.read().count("ev=close") == 1


def test_sigterm_drains_then_second_signal_ends(popgate_factory):
    p = popgate_factory(popgate={"shutdown_timeout": "30s"})
    busy = p.session()
    p.proc.send_signal(signal.SIGTERM)
    assert wait_for(lambda: "mode=drain" in p.log_text())
    # No new clients...
    assert wait_for(lambda: not _connects(p.port))
    # ...but the session in progress goes on with its work.
    assert busy.stat()[0] > 0
    assert busy.retr(2)[1].endswith(b"\r\n.\r\n")
    assert p.alive()
    # A second signal ends it at once, cleanly.
    t0 = time.time()
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(10) == 0
    assert time.time() - t0 < 5
    assert "reason=shutdown" in p.log_text()
    assert busy.is_closed()


def test_sigterm_ends_when_sessions_end(popgate_factory):
    p = popgate_factory(popgate={"shutdown_timeout": "30s"})
    c = p.session()
    p.proc.send_signal(signal.SIGTERM)
    assert wait_for(lambda: "mode=drain" in p.log_text())
    assert c.quit().startswith(b"+OK")
    assert p.proc.wait(10) == 0             # no need to wait for the timeout
    assert "ev=stopped" in p.log_text()


def test_shutdown_timeout_closes_the_rest(popgate_factory):
    p = popgate_factory(popgate={"shutdown_timeout": "1s"})
    c = p.session()
    t0 = time.time()
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(10) == 0
    assert 0.8 < time.time() - t0 < 6
    assert c.is_closed()
    assert "ev=shutdown_timeout" in p.log_text()


def _connects(port):
    """True when a client gets a greeting. A connection the kernel queued
    before the listener closed is reset: that counts as refused."""
    try:
        c = RawPOP3(port, timeout=2)
    except (OSError, POP3Error):
        return False
    c.close()
    return True
