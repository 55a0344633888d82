"""A slow filter chain: the client's own read timeout must not fire, and no
byte of the message leaves before the verdict (README, "Long checks")."""

import os
import poplib
import time

import pytest


MSG = b"From: a@example.org\r\nSubject: slow\r\n\r\nbody line\r\n.dot line\r\n"


def slow_script(tmp_path, seconds, then):
    path = tmp_path / "slow.sh"
    path.write_text("#!/bin/sh\nsleep %d\n%s\n" % (seconds, then))
    os.chmod(path, 0o755)
    return str(path)


def popgate_with(popgate_factory, fake_upstream, tmp_path, script):
    stuffed = MSG.replace(b"\r\n.", b"\r\n..")
    f = fake_upstream(on={b"RETR": [b"+OK %d octets\r\n" % len(MSG) + stuffed + b".\r\n"]})
    spool = tmp_path / "spool"
    spool.mkdir()
    p = popgate_factory(servers=[("127.0.0.1", f.port)],
                        popgate={"spool_dir": str(spool)},
                        listener={"filters": "slow"},
                        extra_sections=[("filter:slow", {"type": "command",
                                                         "command": script,
                                                         "scan_timeout": "60s"})])
    return p, f


@pytest.mark.slow
def test_slow_chain_keeps_client_alive(popgate_factory, fake_upstream, tmp_path):
    p, _ = popgate_with(popgate_factory, fake_upstream, tmp_path,
                        slow_script(tmp_path, 23, "exec cat"))
    c = poplib.POP3("127.0.0.1", p.port, timeout=21)  # < the 23 s check
    c.user("alice")
    c.pass_("secret")
    t0 = time.monotonic()
    resp, lines, _ = c.retr(1)
    assert time.monotonic() - t0 > 20
    assert resp.startswith(b"+OK")
    # popgate's wait line first, then the message exactly (unstuffed by poplib)
    assert lines[0] == b"X-Popgate-Wait: checking"
    assert b"\r\n".join(lines[1:]) + b"\r\n" == MSG
    c.quit()


@pytest.mark.slow
def test_slow_chain_failing_after_wait_ends_without_terminator(
        popgate_factory, fake_upstream, tmp_path):
    p, f = popgate_with(popgate_factory, fake_upstream, tmp_path,
                        slow_script(tmp_path, 23, "exit 1"))
    c = p.session()
    c.send(b"RETR 1\r\n")
    c.settimeout(40)
    data = c.read_until_close(timeout=40)
    # the +OK and the wait line came, nothing of the message, no final "."
    assert data.startswith(b"+OK")
    assert b"X-Popgate-Wait: checking\r\n" in data
    assert b"body line" not in data
    assert not data.endswith(b"\r\n.\r\n")
    assert "QUIT" not in f.all_commands()
    assert "reason=tempfail_after_wait" in p.log_text()
