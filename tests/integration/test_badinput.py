"""Bad input from clients and from upstreams (security.md 2.6-2.13)."""

import base64
import socket
import time

import pytest

from fakeupstream import CLOSE, STALL, Pieces, Sleep, sample_message, stuff_block
from pop3util import Closed, RawPOP3

SYS_TEMP = b"-ERR [SYS/TEMP]"


def closes(c, timeout=5.0):
    """True if the peer closes the connection within timeout."""
    closed, _ = c.is_closed(timeout)
    return closed


def in_sync(c, fake=None):
    """The session still answers exactly one +OK to NOOP (and nothing else
    is pending)."""
    st = c.cmd("NOOP")
    assert st.startswith(b"+OK"), "NOOP after bad input: %r" % st
    c.settimeout(0.15)
    try:
        extra = c.sock.recv(4096)
    except socket.timeout:
        extra = b""
    finally:
        c.settimeout(20)
    assert extra == b"" and not c.buf, "unexpected extra bytes: %r" % (bytes(c.buf) + extra)


def serves(popgate, user="alice", password="secret"):
    """A new session through popgate works end to end."""
    assert popgate.alive(), "popgate died"
    c = popgate.connect()
    assert c.greeting.startswith(b"+OK"), c.greeting
    c.login(user, password)
    assert c.stat()[0] >= 1
    assert c.quit().startswith(b"+OK")


# ---------------------------------------------------------------------------
# overlong commands
# ---------------------------------------------------------------------------

def test_command_255_octets_accepted(proxy_to_fake):
    p, f = proxy_to_fake()
    c = p.connect()
    line = b"USER " + b"a" * (255 - 7)
    assert len(line) + 2 == 255
    st = c.cmd(line)
    assert st.startswith(b"+OK"), st
    assert f.conns[0].commands()[-1] == line.decode()


def test_command_256_octets_err_and_close(proxy_to_fake):
    p, f = proxy_to_fake()
    c = p.connect()
    line = b"USER " + b"a" * (256 - 7)
    assert len(line) + 2 == 256
    st = c.cmd(line)
    assert st.startswith(b"-ERR"), st
    assert closes(c), "connection not closed after an overlong command"
    assert not any(x.startswith("USER") for x in f.all_commands()), f.all_commands()
    serves(p)


def test_command_64k_err_and_close(popgate, dovecot):
    c = popgate.connect()
    got = b""
    try:
        c.send(b"USER " + b"a" * 65536 + b"\r\n")
        got = c.read_until_close(timeout=10)
    except (BrokenPipeError, ConnectionResetError):
        # closed while we were still sending: acceptable for 64 KiB
        pass
    except socket.timeout:
        pytest.fail("connection still open 10 s after a 64 KiB command; got %r" % got[:200])
    assert got == b"" or (got.startswith(b"-ERR") and got.count(b"\r\n") == 1), got[:300]
    serves(popgate)


def test_overlong_without_newline_bounded(popgate):
    """1 MiB without any LF: the proxy must not buffer it, just close."""
    c = popgate.connect()
    try:
        for _ in range(16):
            c.send(b"x" * 65536)
        got = c.read_until_close(timeout=10)
    except (BrokenPipeError, ConnectionResetError):
        got = b""
    except socket.timeout:
        pytest.fail("connection still open after 1 MiB without a line end")
    assert not got.startswith(b"+OK"), got[:200]
    serves(popgate)


# ---------------------------------------------------------------------------
# line-ending smuggling, NUL, control bytes
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("payload", [
    b"USER alice\nRETR 1\r\n",
    b"USER alice\rRETR 1\r\n",
    b"USER alice\n\r\n",
    b"USER al\x00ice\r\n",
    b"USER al\x1bice\r\n",
    b"USER al\x7fice\r\n",
    b"\x00\r\n",
], ids=["bare-LF", "bare-CR", "LF-then-CRLF", "NUL", "ESC", "DEL", "lone-NUL"])
def test_bad_bytes_in_command_not_forwarded(payload, proxy_to_fake):
    p, f = proxy_to_fake()
    c = p.connect()
    c.send(payload + b"USER bob\r\n")
    first = c.readline()
    assert first.startswith(b"-ERR"), "bad command %r answered %r" % (payload, first)
    second = c.readline()
    assert second.startswith(b"+OK"), \
        "expected exactly one -ERR for %r, then +OK for USER bob; got %r" % (payload, second)
    in_sync(c)
    cmds = f.conns[0].commands()
    assert cmds == ["USER bob", "NOOP"], "forwarded upstream: %r" % cmds


def test_bare_lf_smuggling_after_login_dovecot(dovecot, popgate, mailbox):
    """Dovecot splits on bare LF; the proxy must not let RETR through."""
    c = popgate.session()
    c.send(b"NOOP\nRETR 1\r\n")
    st = c.readline()
    assert st.startswith(b"-ERR"), st
    in_sync(c)
    assert c.cmd("LIST 1").startswith(b"+OK 1 ")
    c.quit()


def test_commands_are_reserialized(proxy_to_fake):
    p, f = proxy_to_fake()
    c = p.connect()
    assert c.cmd("user alice").startswith(b"+OK")
    assert c.cmd("pAsS secret").startswith(b"+OK")
    assert c.cmd("stat").startswith(b"+OK")
    st, block = c.multi("list")
    assert block.endswith(b"\r\n.\r\n")
    cmds = f.conns[0].commands()
    assert cmds[0] == "USER alice" and cmds[2:4] == ["STAT", "LIST"], cmds
    assert cmds[1].startswith("PASS "), cmds
    assert all(ln.endswith(b"\r\n") for ln in f.conns[0].lines)


# ---------------------------------------------------------------------------
# unknown commands, bad arguments, STLS
# ---------------------------------------------------------------------------

UNKNOWN = ["XTND XMIT", "XCLIENT ADDR=1.2.3.4", "LAST", "RETRX 1", "LISTX", "XOIP 1.2.3.4",
           "HELO x", "GET / HTTP/1.1"]
BAD_ARGS = ["RETR", "RETR x", "TOP 1", "TOP x 1", "DELE", "DELE -1", "LIST a", "UIDL 1 2"]


@pytest.mark.parametrize("cmd", UNKNOWN + BAD_ARGS + ["STLS"])
def test_unknown_or_malformed_not_forwarded(cmd, proxy_to_fake):
    p, f = proxy_to_fake()
    c = p.connect()
    c.login()
    st = c.cmd(cmd)
    assert st.startswith(b"-ERR"), "%s answered %r" % (cmd, st)
    in_sync(c)
    cmds = f.conns[0].commands()
    assert cmds[2:] == ["NOOP"], "forwarded upstream for %r: %r" % (cmd, cmds)
    # an -ERR for an unknown command must not echo the client's input
    assert b"1.2.3.4" not in st and b"HTTP" not in st


def test_xtnd_xmit_with_message_not_forwarded(proxy_to_fake):
    """Eudora's XTND XMIT is followed by a message; none of it may reach the
    upstream as commands."""
    p, f = proxy_to_fake()
    c = p.connect()
    c.login()
    c.send(b"XTND XMIT\r\n")
    assert c.readline().startswith(b"-ERR")
    in_sync(c)
    assert f.conns[0].commands()[2:] == ["NOOP"]


def test_max_errors_closes(proxy_to_fake):
    p, f = proxy_to_fake(pg=dict(listener={"max_errors": 3}))
    c = p.connect()
    # 2 errors: still open and usable
    for _ in range(2):
        assert c.cmd("LAST").startswith(b"-ERR")
    in_sync(c)
    # the 3rd error reaches max_errors; at the latest the 4th closes
    closed = False
    for i in range(2):
        try:
            st = c.cmd("LAST")
        except Closed:
            closed = True
            break
        assert st.startswith(b"-ERR"), st
        closed, extra = c.is_closed(3)
        if closed:
            break
    assert closed, "connection still open after more than max_errors errors"
    assert "LAST" not in f.all_commands()
    serves_fake(p)


def serves_fake(p):
    c = p.connect()
    assert c.greeting.startswith(b"+OK")
    c.login()
    st, block = c.multi("UIDL")
    assert st.startswith(b"+OK") and block.count(b"\r\n") == 4, (st, block)
    c.quit()


def test_max_errors_default_pipelined(popgate):
    """11 unknown commands in one write with max_errors = 10: closed."""
    c = popgate.connect()
    c.send(b"LAST\r\n" * 11)
    data = c.read_until_close(timeout=10)
    lines = data.split(b"\r\n")[:-1]
    assert 1 <= len(lines) <= 11 and all(x.startswith(b"-ERR") for x in lines), data[:500]


# ---------------------------------------------------------------------------
# pipelining
# ---------------------------------------------------------------------------

def pipeline_batch(count):
    cmds = []
    k = 0
    while len(cmds) < count:
        m = 1 + k % 5
        cmds += ["NOOP", "STAT", "LIST %d" % m, "UIDL %d" % m, "RETR %d" % m,
                 "TOP %d 2" % m, "LIST", "UIDL", "LIST 99999", "RSET"]
        k += 1
    return cmds[:count]


def read_answers(c, cmds):
    out = []
    for cmd in cmds:
        st = c.readline()
        block = None
        multi = cmd in ("LIST", "UIDL") or cmd.startswith(("RETR", "TOP"))
        if multi and st.startswith(b"+OK"):
            block = c.read_multi()
        out.append((st, block))
    return out


def test_100_pipelined_commands_same_as_dovecot(dovecot, popgate):
    cmds = pipeline_batch(100)
    batch = b"".join(x.encode() + b"\r\n" for x in cmds)
    assert len(cmds) == 100
    d = dovecot.session()
    d.send(batch)
    want = read_answers(d, cmds)
    d.quit()
    p = popgate.session()
    p.send(batch)
    got = read_answers(p, cmds)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, "answer %d (%s) differs: %r vs %r" % (i, cmds[i], g[0], w[0])
    in_sync(p)
    p.quit()


def test_pipelined_login_and_commands_in_one_write(dovecot, popgate, mailbox):
    c = popgate.connect()
    c.send(b"CAPA\r\nUSER alice\r\nPASS secret\r\nSTAT\r\nRETR 1\r\nQUIT\r\n")
    st = c.readline()
    assert st.startswith(b"+OK")
    c.read_multi()
    assert c.readline().startswith(b"+OK")
    assert c.readline().startswith(b"+OK")
    assert c.readline().startswith(b"+OK %d " % len(mailbox.names))
    st = c.readline()
    assert st.startswith(b"+OK")
    c.read_multi()
    assert c.readline().startswith(b"+OK")
    closed, extra = c.is_closed(5)
    assert closed and extra == b""


# ---------------------------------------------------------------------------
# client goes away
# ---------------------------------------------------------------------------

@pytest.mark.slow
def test_client_gone_mid_retr_of_50mib(dovecot, popgate, make_scratch_user):
    user, pw = make_scratch_user(["msg_01", "msg_02", "big_50m"])
    base = len(dovecot.disconnects(user))
    c = popgate.session(user, pw)
    assert c.cmd("DELE 1").startswith(b"+OK")
    c.send(b"RETR 3\r\n")
    st = c.readline()
    assert st.startswith(b"+OK"), st
    got = 0
    while got < 1024 * 1024:
        got += c._fill()
    c.close()
    lines = dovecot.wait_user_disconnected(user, base + 1, timeout=20)
    assert len(lines) > base, "dovecot session did not end after the client left"
    assert "Logged out" not in lines[base], "QUIT reached Dovecot: %s" % lines[base]
    d = dovecot.session(user, pw)
    assert d.stat()[0] == 3, "messages lost after a client disconnect mid-RETR"
    d.quit()
    assert popgate.alive()


# ---------------------------------------------------------------------------
# upstream misbehaves
# ---------------------------------------------------------------------------

def test_upstream_gone_mid_retr(proxy_to_fake):
    big = sample_message(1, lines=20000)        # ~ 500 KB
    block = stuff_block(big)
    half = block[:len(block) // 2]
    p, f = proxy_to_fake(on={b"RETR 1": [b"+OK %d octets\r\n" % len(big), half, CLOSE]},
                         messages=[big, sample_message(2)])
    c = p.session()
    c.send(b"RETR 1\r\n")
    data = c.read_until_close(timeout=15)
    if not data.startswith(SYS_TEMP):
        assert data.startswith(b"+OK"), data[:200]
        assert not data.endswith(b"\r\n.\r\n"), "the proxy invented the final '.'"
        assert len(data) < len(block) + 100
    assert "QUIT" not in f.conns[0].commands()
    # a second client is served
    c2 = p.session()
    st, b2 = c2.retr(2)
    assert b2 == stuff_block(sample_message(2))
    c2.quit()


@pytest.mark.parametrize("where", ["status", "body-start"])
def test_upstream_eof_before_or_at_response(where, proxy_to_fake):
    acts = [CLOSE] if where == "status" else [b"+OK 10 octets\r\n", CLOSE]
    p, f = proxy_to_fake(on={b"RETR 1": acts})
    c = p.session()
    c.send(b"RETR 1\r\n")
    data = c.read_until_close(timeout=15)
    if where == "status":
        assert data.startswith(SYS_TEMP), data
    else:
        assert data.startswith(SYS_TEMP) or (data.startswith(b"+OK") and b"\r\n.\r\n" not in data), data


def test_upstream_down(popgate_factory):
    from pop3util import dead_port
    p = popgate_factory(servers=[("127.0.0.1", dead_port())])
    c = p.connect(read_greeting=False)
    data = c.read_until_close(timeout=15)
    assert data.startswith(SYS_TEMP), data
    assert data.count(b"\r\n") == 1, data
    assert p.alive()


def test_failover_first_dead_second_alive(popgate_factory, dovecot):
    from pop3util import dead_port
    p = popgate_factory(servers=[("127.0.0.1", dead_port()), ("127.0.0.1", dovecot.port)])
    for _ in range(2):
        c = p.session()
        assert c.stat()[0] > 0
        c.quit()


def test_failover_to_fake(popgate_factory, fake_upstream):
    from pop3util import dead_port
    f = fake_upstream()
    p = popgate_factory(servers=[("127.0.0.1", dead_port()), ("127.0.0.1", dead_port()),
                                 ("127.0.0.1", f.port)])
    c = p.session()
    assert c.stat()[0] == 3
    c.quit()
    assert f.conns[0].commands()[:2] == ["USER alice", "PASS secret"]


@pytest.mark.parametrize("greeting", [
    b"HELLO there\r\n",
    b"* OK IMAP4rev1 ready\r\n",
    b"220 smtp.example ESMTP\r\n",
    b"+OKAY\r\n",
    b"\r\n",
    b"-ERR [SYS/PERM] go away\r\n",
], ids=["garbage", "imap", "smtp", "okay", "empty", "err"])
def test_upstream_garbage_greeting(greeting, proxy_to_fake):
    p, f = proxy_to_fake(greeting=[greeting, STALL])
    c = p.connect(read_greeting=False)
    data = c.read_until_close(timeout=15)
    assert data.startswith(b"-ERR"), data
    if greeting.startswith(b"-ERR"):
        # an -ERR greeting may be relayed or replaced, but never as +OK
        return
    assert data.startswith(SYS_TEMP), data
    assert greeting.strip() == b"" or greeting.strip() not in data


@pytest.mark.parametrize("reply", [b"HELLO\r\n", b"OK 1 2\r\n", b"+OKx\r\n", b"\r\n"],
                         ids=["word", "ok", "okx", "empty"])
def test_upstream_garbage_status(reply, proxy_to_fake):
    p, f = proxy_to_fake(on={b"STAT": [reply]})
    c = p.session()
    c.send(b"STAT\r\n")
    data = c.read_until_close(timeout=15)
    assert data.startswith(SYS_TEMP), data
    assert "QUIT" not in f.conns[0].commands()


@pytest.mark.parametrize("cmd", [b"RETR 1", b"LIST", b"UIDL", b"CAPA", b"TOP 1 0"])
def test_unterminated_multiline_then_eof(cmd, proxy_to_fake):
    p, f = proxy_to_fake(on={cmd: [b"+OK\r\nline one\r\n.line two\r\n", Sleep(0.3), CLOSE]})
    c = p.session()
    c.send(cmd + b"\r\n")
    data = c.read_until_close(timeout=15)
    assert not data.endswith(b".\r\n"), "invented terminator: %r" % data
    assert data.startswith(SYS_TEMP) or data.startswith(b"+OK"), data


def test_upstream_overlong_status_line(proxy_to_fake):
    p, f = proxy_to_fake(on={b"STAT": [b"+OK " + b"9" * 3000 + b"\r\n"]})
    c = p.session()
    c.send(b"STAT\r\n")
    data = c.read_until_close(timeout=15)
    assert data.startswith(b"-ERR"), data[:200]
    assert b"9999" not in data


def test_upstream_overlong_greeting(proxy_to_fake):
    p, f = proxy_to_fake(greeting=[b"+OK " + b"g" * 3000 + b"\r\n", STALL])
    c = p.connect(read_greeting=False)
    data = c.read_until_close(timeout=15)
    assert data.startswith(SYS_TEMP), data[:200]


@pytest.mark.parametrize("length,ok", [(1024, True), (1025, False)])
def test_upstream_status_line_limit_boundary(length, ok, proxy_to_fake):
    """max_response_line = 1024 counts the CRLF."""
    line = b"+OK " + b"n" * (length - 6) + b"\r\n"
    assert len(line) == length
    p, f = proxy_to_fake(on={b"NOOP": [line]})
    c = p.session()
    c.send(b"NOOP\r\n")
    if ok:
        assert c.readline() == line
        in_sync(c)
    else:
        data = c.read_until_close(timeout=15)
        assert data.startswith(b"-ERR"), data[:100]


def test_upstream_10mb_line_without_lf(proxy_to_fake):
    """A 10 MB status 'line' with no LF: the proxy gives up without
    buffering it (bounded) and keeps serving."""
    junk = b"+OK " + b"z" * (10 * 1024 * 1024)
    p, f = proxy_to_fake(on={b"STAT": [Pieces(junk, 1 << 20, 0.0), STALL]})
    c = p.session()
    c.send(b"STAT\r\n")
    data = c.read_until_close(timeout=20)
    assert data.startswith(b"-ERR"), data[:100]
    serves_fake(p)


def test_upstream_long_body_line_passes(proxy_to_fake):
    msg = b"Subject: long\r\n\r\n" + b"L" * (1024 * 1024) + b"\r\nend\r\n"
    p, f = proxy_to_fake(messages=[msg])
    c = p.session()
    st, block = c.retr(1)
    assert block == stuff_block(msg)
    in_sync(c)
    c.quit()


def test_upstream_bare_lf_dot_in_body(proxy_to_fake):
    """A body with "\\n.\\nX" (bare LF before a dot): not a terminator."""
    raw_block = b"Subject: smuggle\r\n\r\nabc\n.\nX\r\nmore\r\n.\r\n"
    p, f = proxy_to_fake(on={b"RETR 1": [b"+OK 40 octets\r\n" + raw_block]})
    c = p.session()
    st, block = c.retr(1)
    assert st.startswith(b"+OK")
    assert block.find(b"\r\n.\r\n") == len(block) - 5
    # relayed as is, or with the dot after the bare LF stuffed
    assert block.replace(b"\n..\n", b"\n.\n") == raw_block, block
    in_sync(c)
    c.quit()


def test_upstream_dot_stuffing_roundtrip(proxy_to_fake):
    msg = (b"Subject: dots\r\n\r\n.\r\n..\r\n.x\r\n...\r\n. \r\nend\r\n")
    p, f = proxy_to_fake(messages=[msg])
    c = p.session()
    st, block = c.retr(1)
    assert block == stuff_block(msg)
    c.quit()


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_upstream_stuffed_response_split_everywhere(size, proxy_to_fake):
    """Terminators, stuffed dots and CRLFs split across reads."""
    msg = b"Subject: split\r\n\r\n.\r\n..\r\n.x\r\n\r\n.\r\nend\r\n"
    block = stuff_block(msg)
    capa = b"+OK\r\nTOP\r\nUSER\r\nPIPELINING\r\n.\r\n"
    p, f = proxy_to_fake(on={b"RETR 1": [Pieces(b"+OK %d octets\r\n" % len(msg) + block, size)],
                             b"CAPA": [Pieces(capa, size)],
                             b"LIST": [Pieces(b"+OK\r\n1 10\r\n2 20\r\n.\r\n", size)]})
    c = p.session()
    c.send(b"RETR 1\r\nCAPA\r\nLIST\r\nRETR 1\r\n")
    assert c.readline().startswith(b"+OK")
    assert c.read_multi() == block
    assert c.readline().startswith(b"+OK")
    caps = c.read_multi()
    assert b"TOP\r\n" in caps and b"PIPELINING\r\n" in caps
    assert c.readline().startswith(b"+OK")
    assert c.read_multi() == b"1 10\r\n2 20\r\n.\r\n"
    assert c.readline().startswith(b"+OK")
    assert c.read_multi() == block
    in_sync(c)
    c.quit()


def test_upstream_response_in_pieces(proxy_to_fake):
    msg = sample_message(1, lines=200)
    data = b"+OK %d octets\r\n" % len(msg) + stuff_block(msg)
    p, f = proxy_to_fake(on={b"RETR 1": [Pieces(data, 7, 0.0005)]})
    c = p.session()
    st, block = c.retr(1)
    assert block == stuff_block(msg)
    in_sync(c)
    c.quit()


@pytest.mark.parametrize("when", ["after-noop", "same-segment", "after-multiline", "idle",
                                  "with-greeting"])
def test_unsolicited_upstream_bytes_close_session(when, proxy_to_fake):
    kw = {}
    if when == "after-noop":
        kw["on"] = {b"NOOP": [b"+OK\r\n", Sleep(0.3), b"+OK surprise\r\n", STALL]}
    elif when == "same-segment":
        kw["on"] = {b"NOOP": [b"+OK\r\n+OK surprise\r\n", STALL]}
    elif when == "after-multiline":
        kw["on"] = {b"NOOP": [b"+OK\r\n"],
                    b"LIST": [b"+OK\r\n1 10\r\n.\r\n+OK surprise\r\n", STALL]}
    elif when == "idle":
        kw["on"] = {b"PASS": [b"+OK Logged in.\r\n", Sleep(0.5),
                              b"+OK\r\n1 100\r\n.\r\n", STALL]}
    else:
        kw["greeting"] = [b"+OK ready\r\n+OK\r\nSASL PLAIN\r\n.\r\n"]
    p, f = proxy_to_fake(**kw)
    if when == "with-greeting":
        c = p.connect(read_greeting=False)
        data = c.read_until_close(timeout=10)
        assert b"surprise" not in data and b"SASL" not in data, data
        # the greeting may or may not have been relayed; the session must end
        assert f.conns and "USER" not in " ".join(f.conns[0].commands())
        return
    c = p.session()
    if when in ("after-noop", "same-segment"):
        assert c.cmd("NOOP").startswith(b"+OK")
    elif when == "after-multiline":
        c.send(b"LIST\r\n")
    closed, extra = c.is_closed(5)
    assert closed, "session not closed after unsolicited upstream bytes"
    assert b"surprise" not in extra and b"1 100" not in extra, extra


# ---------------------------------------------------------------------------
# more client-side oddities
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("line", [b"", b" ", b" NOOP", b"NOOP\t", b"NOOP ", b"STAT  ",
                                  b"LIST ", b"RETR  1", b"RETR 1 ", b"TOP 1 0 ", b"NOOP x"],
                         ids=["empty", "space", "lead-space", "tab", "trail-space",
                              "two-trail", "list-trail", "double-space", "retr-trail",
                              "top-trail", "noop-arg"])
def test_spacing_variants_canonical_or_refused(line, proxy_to_fake):
    """Whatever the proxy does with odd spacing, what reaches the upstream
    is a canonical line (keyword, single spaces, no trailing blank)."""
    p, f = proxy_to_fake()
    c = p.session()
    c.send(line + b"\r\n")
    st = c.readline()
    assert st.startswith((b"+OK", b"-ERR")), st
    if st.startswith(b"+OK") and line.split() and line.split()[0] in (b"LIST", b"RETR", b"TOP") \
            and not (line.split()[0] == b"LIST" and len(line.split()) > 1):
        c.read_multi()
    in_sync(c)
    fwd = f.conns[0].lines[2:-1]          # after USER/PASS, before the NOOP
    for ln in fwd:
        body = ln[:-2]
        assert ln.endswith(b"\r\n") and b"\t" not in body and b"  " not in body \
            and not body.startswith(b" ") and not body.endswith(b" "), \
            "non-canonical line forwarded: %r" % ln
    c.quit()


def test_nothing_forwarded_after_quit(proxy_to_fake):
    p, f = proxy_to_fake(on={b"QUIT": [b"+OK bye\r\n", STALL]})
    c = p.session()
    c.send(b"QUIT\r\nRETR 1\r\nDELE 1\r\nNOOP\r\n")
    st = c.readline()
    assert st == b"+OK bye\r\n", st
    closed, extra = c.is_closed(5)
    assert closed, "client connection not closed after QUIT was answered"
    assert extra == b"", extra
    f.wait_closed(f.conns[0], 5)
    assert f.conns[0].commands()[2:] == ["QUIT"], f.conns[0].commands()


def test_upstream_closes_while_idle(proxy_to_fake):
    p, f = proxy_to_fake(on={b"PASS": [b"+OK Logged in.\r\n", Sleep(0.3), CLOSE]})
    c = p.session()
    closed, extra = c.is_closed(5)
    assert closed, "client left open after its upstream went away"
    assert not extra.startswith(b"+OK"), extra


def test_greeting_relayed_byte_exact(proxy_to_fake):
    g = b"+OK POP3 ready at 42 <8282.1@host.example> [SYS/TEST] \xc3\xa9 x\r\n"
    p, f = proxy_to_fake(greeting=g)
    c = p.connect()
    assert c.greeting == g


@pytest.mark.parametrize("how", ["user-pass", "auth-plain"])
def test_brute_force_on_one_connection_is_cut(how, proxy_to_fake):
    """security.md 2.13: 50 wrong passwords on one connection end in a
    close. Dovecot 2.3 itself never closes (checked: 12 failures in a row
    were all answered), so the proxy must count failed logins; here the
    fake upstream answers every login with -ERR at once."""
    bad = [b"-ERR [AUTH] Authentication failed.\r\n"]
    p, f = proxy_to_fake(on={b"PASS": bad, b"AUTH": bad})
    c = p.connect()
    answered = 0
    closed = False
    try:
        for i in range(50):
            if how == "user-pass":
                c.send(b"USER alice\r\nPASS wrong%d\r\n" % i)
                assert c.readline().startswith((b"+OK", b"-ERR"))
            else:
                c.send(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0wrong%d" % i) + b"\r\n")
            st = c.readline()
            assert not st.startswith(b"+OK"), st
            answered += 1
        closed, _ = c.is_closed(3)
    except Closed:
        closed = True
    finally:
        c.close()
    assert closed and answered < 50, \
        "%d wrong passwords on one connection were all answered" % answered
