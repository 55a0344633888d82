"""The session log: one ev=close line per session, no secrets, no injection
(security.md 2.18, 2.19)."""

import base64
import hashlib
import os
import re

import pytest

from pop3util import TS_RE, close_lines_for, parse_log_line, plain_b64, unescape_log_value

PLAIN_B64 = plain_b64("alice", "secret")            # AGFsaWNlAHNlY3JldA==
SECRETS = ["secret", PLAIN_B64, base64.b64encode(b"secret").decode(),
           "wrongpass-x9", base64.b64encode(b"\0alice\0wrongpass-x9").decode()]


def log_pairs(line):
    """[(key, value)] in order, values as written (quotes kept)."""
    rest = line.split(" ", 2)[2] if line.count(" ") >= 2 else ""
    return re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)', rest)


@pytest.fixture
def logged_popgate(popgate_factory):
    return popgate_factory(popgate={"log_level": "debug"})


def finish(p):
    """Stop popgate (flushes and ends every session) and return its log."""
    problems = p.stop()
    assert not problems, "\n".join(problems)
    return p.log_text()


def scrub(p, text):
    """Hide the test's own directory (its name may contain 'secret')."""
    return text.replace(os.path.dirname(p.dir), "<TMP>")


def one_close_line(log, port):
    lines = close_lines_for(log, port)
    assert len(lines) == 1, "expected one ev=close line for client port %d, got %d:\n%s" % (
        port, len(lines), "\n".join(lines) or log[-3000:])
    return lines[0]


def test_close_line_user_pass(logged_popgate, dovecot, mailbox):
    p = logged_popgate
    c = p.session()
    st, block = c.retr(1)
    assert c.stat()[0] == len(mailbox.names)
    assert c.quit().startswith(b"+OK")
    log = finish(p)
    line = one_close_line(log, c.local_port)
    assert TS_RE.match(line), line
    kv = parse_log_line(line)
    assert kv.get("ev") == "close"
    assert kv.get("user") == "alice", line
    assert kv.get("listener") == "plain", line
    assert kv.get("client") == "127.0.0.1:%d" % c.local_port, line
    assert kv.get("upstream") == "127.0.0.1:%d" % dovecot.port, line
    assert kv.get("reason") == "quit", line
    assert re.fullmatch(r"[0-9a-fA-F]+", kv.get("sid", "")), line
    assert int(kv["bytes_out"]) >= len(block), line
    assert int(kv["bytes_in"]) >= len(b"USER alice\r\nPASS secret\r\nRETR 1\r\nSTAT\r\nQUIT\r\n")
    assert int(kv["cmds"]) >= 1
    assert int(kv["msgs"]) == 1, line     # one RETR
    float(kv["duration"])
    for s in SECRETS:
        assert s not in scrub(p, log), "%r appears in the log" % s


def test_close_line_client_eof_reason(logged_popgate):
    p = logged_popgate
    c = p.session()
    c.close()
    log = finish(p)
    kv = parse_log_line(one_close_line(log, c.local_port))
    assert kv.get("user") == "alice"
    assert kv.get("reason") not in (None, "", "quit"), kv


def auth_plain_ir(c):
    assert c.cmd("AUTH PLAIN " + PLAIN_B64).startswith(b"+OK")


def auth_plain_continuation(c):
    assert c.cmd("AUTH PLAIN").startswith(b"+")
    assert c.cmd(PLAIN_B64).startswith(b"+OK")


def auth_login(c):
    assert c.cmd("AUTH LOGIN").startswith(b"+")
    assert c.cmd(base64.b64encode(b"alice").decode()).startswith(b"+")
    assert c.cmd(base64.b64encode(b"secret").decode()).startswith(b"+OK")


def apop(c):
    ts = re.search(rb"<[^>]+>", c.greeting).group(0)
    assert c.cmd("APOP alice " + hashlib.md5(ts + b"secret").hexdigest()).startswith(b"+OK")
    return hashlib.md5(ts + b"secret").hexdigest()


def user_pass(c):
    c.login()


def wrong_then_right(c):
    assert c.cmd("USER alice").startswith(b"+OK")
    assert c.cmd("PASS wrongpass-x9").startswith(b"-ERR")
    assert c.cmd("AUTH PLAIN " + base64.b64encode(b"\0alice\0wrongpass-x9").decode()) \
        .startswith(b"-ERR")
    c.login()


LOGINS = {"user-pass": user_pass, "auth-plain-ir": auth_plain_ir,
          "auth-plain-continuation": auth_plain_continuation, "auth-login": auth_login,
          "apop": apop, "wrong-then-right": wrong_then_right}


def test_no_secrets_in_log(logged_popgate):
    p = logged_popgate
    ports = {}
    extra_secrets = []
    for name, fn in LOGINS.items():
        c = p.connect()
        r = fn(c)
        if r:
            extra_secrets.append(r)
        assert c.stat()[0] > 0
        assert c.quit().startswith(b"+OK")
        ports[name] = c.local_port
    # The test's own directory name ("...test_no_secrets_in_log0...") shows
    # up in config warnings; it is not a password.
    log = finish(p).replace(p.dir, "<dir>")
    err = p.stderr_text().replace(p.dir, "<dir>")
    for s in SECRETS + extra_secrets:
        assert s not in log, "%r appears in the log" % s
        assert s not in err, "%r appears on stderr" % s
    for name, port in ports.items():
        kv = parse_log_line(one_close_line(log, port))
        if name != "auth-login":
            assert kv.get("user") == "alice", "%s: %r" % (name, kv)
        assert kv.get("reason") == "quit", (name, kv)


EVIL_USERS = {
    "format": b"%n%n%s%s%x%p",
    "kv-injection": b"alice reason=quit user=root",
    "quote": b'al"ice\\"',
    "high-bytes": b"\xff\xfe\x80al",
    "utf8": "\u00e9l\u00e8ve".encode(),
    "long": b"u" * 240,
}
EVIL_LINES = {
    "cr": b"USER a\rFAKE-LOG-LINE ev=close user=root\r\n",
    "lf": b"USER a\n2026-01-01T00:00:00.000Z info ev=close user=root\r\n",
    "esc": b"USER a\x1b[2J\x1b[31mred\r\n",
    "nul": b"USER a\x00b\r\n",
    "bell-del": b"USER a\x07\x7f\r\n",
}


def test_log_injection_escaped(logged_popgate):
    p = logged_popgate
    ports = {}
    for name, user in EVIL_USERS.items():
        c = p.connect()
        st = c.cmd(b"USER " + user)
        assert st.startswith((b"+OK", b"-ERR")), st
        c.cmd("QUIT")
        c.close()
        ports["user-" + name] = (c.local_port, user, st.startswith(b"+OK"))
    for name, line in EVIL_LINES.items():
        c = p.connect()
        c.send(line)
        st = c.readline()
        assert st.startswith(b"-ERR"), (name, st)
        c.cmd("QUIT")
        c.close()
        ports["line-" + name] = (c.local_port, None, False)
    assert p.alive()
    raw = p.log_bytes()
    log = finish(p)
    # no injected lines: every line is a record of its own
    for ln in log.splitlines():
        assert TS_RE.match(ln), "log line without a timestamp (injected?): %r" % ln
    assert "FAKE-LOG-LINE" not in log.replace("\\r", "\r").split("\n")[0] or True
    assert not re.search(r"(^|\n)FAKE-LOG-LINE", log)
    assert b"\x1b" not in raw and b"\x00" not in raw and b"\x07" not in raw and b"\x7f" not in raw, \
        "raw control bytes in the log"
    assert b"\r" not in raw, "CR in the log"
    for name, (port, user, accepted) in ports.items():
        line = one_close_line(log, port)
        keys = [k for k, _ in log_pairs(line)]
        assert len(keys) == len(set(keys)), "duplicate keys (injection) in %r" % line
        kv = parse_log_line(line)
        assert kv.get("user") != "root", line
        if name == "user-format" and accepted:
            assert unescape_log_value(kv.get("user", "")) == "%n%n%s%s%x%p", line


def test_log_is_valid_utf8(logged_popgate):
    """security.md 2.18: invalid UTF-8 from a peer is escaped in the log."""
    p = logged_popgate
    c = p.connect()
    c.cmd(b"USER \xff\xfe\xc3(x")
    c.cmd("QUIT")
    c.close()
    raw = p.log_bytes()
    finish(p)
    raw = p.log_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        pytest.fail("log is not valid UTF-8: %s" % e)


def test_no_secrets_with_fake_upstream_continuations(proxy_to_fake):
    """Every SASL continuation line is a secret, whatever the mechanism."""
    p, f = proxy_to_fake(pg=dict(popgate={"log_level": "debug"}),
                         capa=[b"USER", b"SASL PLAIN LOGIN CRAM-MD5"])
    c = p.connect()
    assert c.cmd("AUTH LOGIN").startswith(b"+")
    assert c.cmd("c2VjcmV0dXNlcg==").startswith(b"+")      # "secretuser"
    assert c.cmd("dG9wc2VjcmV0cGFzcw==").startswith(b"+OK")  # "topsecretpass"
    c.cmd("QUIT")
    c.close()
    problems = p.stop()
    assert not problems, problems
    log = scrub(p, p.log_text())
    for s in ("dG9wc2VjcmV0cGFzcw==", "topsecretpass"):
        assert s not in log, "%r in the log" % s
    # the continuation lines really went upstream (so they were relayed)
    cmds = f.conns[0].commands()
    assert "dG9wc2VjcmV0cGFzcw==" in cmds, cmds
