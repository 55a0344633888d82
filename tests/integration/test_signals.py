"""Process lifecycle: SIGTERM drains, SIGUSR1 reopens the log, SIGHUP
reloads the config without dropping sessions (spec: Command line;
DESIGN.md: Signals)."""

import os
import signal
import socket
import time

import pytest

from fakeupstream import STALL
from pop3util import RawPOP3, close_lines_for, is_listening


def wait_exit(p, timeout):
    t0 = time.monotonic()
    try:
        rc = p.proc.wait(timeout)
    except Exception:
        return None, time.monotonic() - t0
    return rc, time.monotonic() - t0


def kill_on_failure(p):
    """Context: SIGKILL popgate if the test fails (a hung process would
    otherwise hold the teardown for long)."""
    class _C:
        def __enter__(self):
            return self

        def __exit__(self, et, ev, tb):
            if et is not None and p.alive():
                p.proc.kill()
            return False
    return _C()


def test_sigterm_lets_sessions_finish(popgate_factory, direct, mailbox):
    p = popgate_factory(popgate={"shutdown_timeout": "10s"})
    with kill_on_failure(p):
        c = p.session()
        p.proc.send_signal(signal.SIGTERM)
        # stops accepting
        end = time.monotonic() + 5
        while is_listening(p.port) and time.monotonic() < end:
            time.sleep(0.05)
        try:
            n = RawPOP3(p.port, timeout=3)
            greeting = n.greeting
        except (OSError, Exception):
            greeting = None
        assert not (greeting or b"").startswith(b"+OK"), "new session accepted after SIGTERM"
        # the running session still works
        n1 = mailbox.number["dots"]
        st, block = c.retr(n1)
        assert block == direct[n1][1]
        assert c.cmd("NOOP") == b"+OK\r\n"
        assert c.quit().startswith(b"+OK")
        # and the process exits soon after its last session, with 0
        rc, took = wait_exit(p, 8)
        assert rc == 0, "rc=%r after the last session ended (waited %.1f s)" % (rc, took)


def test_sigterm_closes_idle_sessions_after_shutdown_timeout(popgate_factory, fake_upstream):
    f = fake_upstream()
    p = popgate_factory(servers=[("127.0.0.1", f.port)], popgate={"shutdown_timeout": "2s"})
    with kill_on_failure(p):
        c = p.session()
        assert c.cmd("DELE 1").startswith(b"+OK")
        t0 = time.monotonic()
        p.proc.send_signal(signal.SIGTERM)
        closed, extra = c.is_closed(10)
        assert closed, "idle session still open 10 s after SIGTERM (shutdown_timeout 2s)"
        rc, took = wait_exit(p, 10)
        assert rc == 0, rc
        assert time.monotonic() - t0 < 8
        # closed without QUIT: the DELE is not committed
        assert "QUIT" not in f.all_commands(), f.all_commands()


def test_sigterm_with_stalled_upstream(popgate_factory, fake_upstream):
    f = fake_upstream(on={b"RETR 1": [STALL]})
    p = popgate_factory(servers=[("127.0.0.1", f.port)],
                        popgate={"shutdown_timeout": "2s", "log_level": "error"})
    with kill_on_failure(p):
        c = p.session()
        c.send(b"RETR 1\r\n")
        time.sleep(0.3)
        p.proc.send_signal(signal.SIGTERM)
        rc, took = wait_exit(p, 10)
        assert rc == 0, "popgate did not exit 10 s after SIGTERM (shutdown_timeout 2s); rc=%r" % rc
        data = c.read_until_close(timeout=5)
        assert not data.startswith(b"+OK"), data
        assert "QUIT" not in f.all_commands()


def test_sigint_same_as_sigterm(popgate_factory):
    p = popgate_factory()
    with kill_on_failure(p):
        c = p.session()
        c.quit()
        p.proc.send_signal(signal.SIGINT)
        rc, took = wait_exit(p, 10)
        assert rc == 0, rc


def test_sigusr1_reopens_log(popgate_factory):
    p = popgate_factory()
    with kill_on_failure(p):
        c = p.session()
        c.quit()
        time.sleep(0.3)
        rotated = p.log_path + ".1"
        os.rename(p.log_path, rotated)
        p.proc.send_signal(signal.SIGUSR1)
        time.sleep(0.5)
        c2 = p.session()
        c2.quit()
        end = time.monotonic() + 5
        while time.monotonic() < end and not close_lines_for(p.log_text(), c2.local_port):
            time.sleep(0.1)
        assert os.path.exists(p.log_path), "no new log file after SIGUSR1"
        assert close_lines_for(p.log_text(), c2.local_port), "new session not in the new log"
        with open(rotated) as f:
            old = f.read()
        assert close_lines_for(old, c.local_port)
        assert not close_lines_for(old, c2.local_port), "still writing to the rotated file"
        assert p.alive()


def test_sighup_reload_keeps_sessions(popgate_factory):
    p = popgate_factory(listener={"max_clients_per_ip": 3})
    with kill_on_failure(p):
        c = p.session()
        # raise the per-IP limit and reload
        p.sections[1][1]["max_clients_per_ip"] = 10
        p.write_config()
        p.proc.send_signal(signal.SIGHUP)
        time.sleep(1)
        assert p.alive()
        assert c.cmd("NOOP") == b"+OK\r\n", "session broken by SIGHUP"
        more = [p.connect() for _ in range(5)]
        assert all(x.greeting.startswith(b"+OK") for x in more), \
            [x.greeting for x in more]          # 6 > 3: the new limit is in force
        for x in more:
            x.close()
        assert c.quit().startswith(b"+OK")


def test_sighup_bad_config_keeps_old(popgate_factory):
    p = popgate_factory()
    with kill_on_failure(p):
        c = p.session()
        good = p.sections[1][1]["upstream"]
        p.sections[1][1]["upstream"] = "nosuch"
        p.write_config()
        p.proc.send_signal(signal.SIGHUP)
        time.sleep(1)
        assert p.alive(), "a bad config on SIGHUP killed the process"
        assert c.cmd("NOOP") == b"+OK\r\n"
        c2 = p.session()
        c2.quit()
        c.quit()
        log = p.log_text()
        assert "nosuch" in log or "reload" in log, "refused reload not logged:\n" + log[-2000:]
        p.sections[1][1]["upstream"] = good
        p.write_config()
