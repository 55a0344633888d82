"""Relay correctness against a real Dovecot: the proxy's answers must be
byte-identical to what Dovecot sends directly for the same command."""

import base64
import hashlib
import re
import socket

import pytest

import corpus as corpus_mod
from pop3util import RawPOP3, plain_b64, unstuff

ALL_NAMES = [n for n, _ in corpus_mod.email_data()] + [n for n, _ in corpus_mod.edge_cases()
                                                        if n != "big_50m"]


def first_diff(a, b):
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def assert_same_bytes(got, want, what):
    if got == want:
        return
    i = first_diff(got, want)
    pytest.fail("%s differs: len got=%d want=%d, first difference at offset %d:\n"
                "got  ...%r\nwant ...%r" % (what, len(got), len(want), i,
                                             got[max(0, i - 40):i + 40],
                                             want[max(0, i - 40):i + 40]))


def both(dovecot, popgate, user="alice", password="secret"):
    d = dovecot.connect()
    d.login(user, password)
    p = popgate.connect()
    p.login(user, password)
    return d, p


# ---------------------------------------------------------------------------
# RETR
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL_NAMES)
def test_retr_byte_exact(name, popgate, direct, mailbox):
    n = mailbox.number[name]
    want_st, want_block = direct[n]
    with popgate.session() as p:
        st, block = p.retr(n)
        assert st == want_st, "status line of RETR %d (%s)" % (n, name)
        assert_same_bytes(block, want_block, "RETR %d (%s)" % (n, name))
        assert p.cmd("NOOP").startswith(b"+OK"), "session out of sync after RETR"
        assert p.quit().startswith(b"+OK")


@pytest.mark.slow
def test_retr_50mib_byte_exact(popgate, direct, mailbox):
    n = mailbox.number["big_50m"]
    want_st, want_block = direct[n]
    assert len(want_block) > corpus_mod.BIG_SIZE
    with popgate.session(timeout=60) as p:
        st, block = p.retr(n)
        assert st == want_st
        if hashlib.sha256(block).hexdigest() != direct.digest[n]:
            assert_same_bytes(block, want_block, "RETR of the 50 MiB message")
        assert p.cmd("NOOP").startswith(b"+OK")
        p.quit()


def test_retr_all_in_one_session_pipelined(popgate, direct, mailbox):
    """Every small message, all RETRs pipelined in one write."""
    nums = [mailbox.number[nm] for nm in ALL_NAMES]
    with popgate.session(timeout=60) as p:
        p.send(b"".join(b"RETR %d\r\n" % n for n in nums))
        for n in nums:
            st = p.readline()
            assert st == direct[n][0], "status of pipelined RETR %d" % n
            block = p.read_multi()
            assert_same_bytes(block, direct[n][1], "pipelined RETR %d" % n)
        p.quit()


# ---------------------------------------------------------------------------
# other commands, compared with Dovecot
# ---------------------------------------------------------------------------

SINGLE = ["STAT", "LIST 1", "LIST 2", "UIDL 1", "UIDL 3", "NOOP", "RSET",
          "LIST 99999", "UIDL 99999", "RETR 99999", "DELE 99999", "TOP 99999 0"]
MULTI = ["LIST", "UIDL"]


@pytest.mark.parametrize("cmd", SINGLE)
def test_single_line_same_as_dovecot(cmd, dovecot, popgate):
    d, p = both(dovecot, popgate)
    try:
        want = d.cmd(cmd)
        got = p.cmd(cmd)
        assert got == want, "%s: proxy %r, dovecot %r" % (cmd, got, want)
    finally:
        d.quit()
        p.quit()


@pytest.mark.parametrize("cmd", MULTI)
def test_multi_line_same_as_dovecot(cmd, dovecot, popgate, mailbox):
    d, p = both(dovecot, popgate)
    try:
        want = d.multi(cmd)
        got = p.multi(cmd)
        assert got[0] == want[0]
        assert_same_bytes(got[1], want[1], cmd)
        # sanity of the oracle: one line per message
        assert want[1].count(b"\r\n") == len(mailbox.names) + 1
    finally:
        d.quit()
        p.quit()


@pytest.mark.parametrize("lines", [0, 5, 999999])
def test_top_same_as_dovecot(lines, dovecot, popgate, mailbox):
    d, p = both(dovecot, popgate)
    d.settimeout(60)
    p.settimeout(60)
    try:
        for n in range(1, len(mailbox.names) + 1):
            cmd = "TOP %d %d" % (n, lines)
            want = d.multi(cmd)
            got = p.multi(cmd)
            assert got[0] == want[0], cmd
            if got[1] != want[1]:
                assert_same_bytes(got[1], want[1], "%s (%s)" % (cmd, mailbox.names[n - 1]))
    finally:
        d.quit()
        p.quit()


def test_top_999999_is_whole_message(popgate, direct, mailbox):
    n = mailbox.number["dots"]
    with popgate.session() as p:
        st, block = p.multi("TOP %d 999999" % n)
        assert st.startswith(b"+OK")
        assert unstuff(block) == unstuff(direct[n][1])
        p.quit()


def test_stat_matches_list(popgate, mailbox):
    with popgate.session() as p:
        count, size = p.stat()
        assert count == len(mailbox.names)
        st, block = p.multi("LIST")
        sizes = [int(x.split()[1]) for x in block.split(b"\r\n")[:-2]]
        assert len(sizes) == count and sum(sizes) == size
        p.quit()


def test_lowercase_and_mixed_case_commands(dovecot, popgate):
    d, p = both(dovecot, popgate)
    try:
        for cmd in ("stat", "Stat", "list 1", "uidl 2", "noop"):
            want = d.cmd(cmd)
            got = p.cmd(cmd)
            assert got == want, cmd
        st, block = p.multi("list")
        assert st.startswith(b"+OK") and block.endswith(b"\r\n.\r\n")
    finally:
        d.quit()
        p.quit()


# ---------------------------------------------------------------------------
# CAPA
# ---------------------------------------------------------------------------

def capa_set(block):
    return [ln for ln in block.split(b"\r\n")[:-2]]


def test_capa_with_dovecot(dovecot, popgate):
    for login in (False, True):
        d = dovecot.connect()
        p = popgate.connect()
        if login:
            d.login()
            p.login()
        st, block = p.multi("CAPA")
        assert st.startswith(b"+OK"), st
        caps = capa_set(block)
        words = [c.split(b" ")[0].upper() for c in caps]
        _, dblock = d.multi("CAPA")
        dwords = [c.split(b" ")[0].upper() for c in capa_set(dblock)]
        assert b"PIPELINING" in words, caps
        for bad in (b"STLS", b"IMPLEMENTATION", b"XCLIENT"):
            assert bad not in words, caps
        # everything Dovecot offers here is framed, so it must be kept
        for keep in (b"TOP", b"UIDL", b"RESP-CODES", b"PIPELINING", b"AUTH-RESP-CODE",
                     b"USER", b"SASL"):
            if keep in dwords:
                assert keep in words, "%s dropped from %r" % (keep, caps)
        d.quit()
        p.quit()


def test_capa_rewrite_from_fake_upstream(proxy_to_fake):
    capa = [b"TOP", b"UIDL", b"USER", b"STLS", b"IMPLEMENTATION Dovecot 2.3.19",
            b"XCLIENT", b"X-EXPERIMENTAL-FOO", b"PIPELINING", b"RESP-CODES",
            b"AUTH-RESP-CODE", b"LOGIN-DELAY 900", b"EXPIRE NEVER", b"UTF8",
            b"LANG", b"SASL PLAIN LOGIN", b"XTND", b"LAST"]
    p, f = proxy_to_fake(capa=capa)
    c = p.connect()
    st, block = c.multi("CAPA")
    assert st.startswith(b"+OK")
    caps = capa_set(block)
    words = [x.split(b" ")[0].upper() for x in caps]
    for bad in (b"STLS", b"IMPLEMENTATION", b"XCLIENT", b"X-EXPERIMENTAL-FOO", b"XTND", b"LAST"):
        assert bad not in words, caps
    for keep in (b"TOP", b"UIDL", b"USER", b"PIPELINING", b"RESP-CODES",
                 b"AUTH-RESP-CODE", b"LOGIN-DELAY", b"EXPIRE", b"UTF8", b"LANG", b"SASL"):
        assert keep in words, "%s dropped: %r" % (keep, caps)
    assert b"LOGIN-DELAY 900" in caps and b"EXPIRE NEVER" in caps
    assert any(x.upper().startswith(b"SASL ") and b"PLAIN" in x.upper() for x in caps), caps
    assert len(words) == len(set(words)), "duplicate capabilities: %r" % caps
    # in sync afterwards
    assert c.cmd("USER alice").startswith(b"+OK")
    c.close()


def test_capa_sasl_drops_external_and_plus(proxy_to_fake):
    """security.md 1.11 rules 3-4: EXTERNAL and *-PLUS do not survive TLS
    termination and must not be offered."""
    p, f = proxy_to_fake(capa=[b"USER", b"SASL PLAIN EXTERNAL SCRAM-SHA-256-PLUS SCRAM-SHA-256"])
    c = p.connect()
    st, block = c.multi("CAPA")
    sasl = [x for x in capa_set(block) if x.upper().startswith(b"SASL")]
    mechs = b" ".join(sasl).upper().split()[1:] if sasl else []
    assert b"EXTERNAL" not in mechs and b"SCRAM-SHA-256-PLUS" not in mechs, sasl
    c.close()


# ---------------------------------------------------------------------------
# DELE / RSET / QUIT semantics
# ---------------------------------------------------------------------------

def test_dele_quit_deletes(dovecot, popgate, scratch_user):
    user, pw = scratch_user
    d = dovecot.session(user, pw)
    n0, _ = d.stat()
    _, uidl0 = d.multi("UIDL")
    d.quit()
    base = len(dovecot.wait_user_disconnected(user, 2))
    with popgate.session(user, pw) as p:
        assert p.cmd("DELE 2").startswith(b"+OK")
        assert p.cmd("DELE 2").startswith(b"-ERR"), "double DELE must fail"
        assert p.quit().startswith(b"+OK")
    lines = dovecot.wait_user_disconnected(user, base + 1)
    assert "Logged out" in lines[base] and "del=1/" in lines[base], lines[base:]
    d = dovecot.session(user, pw)
    n1, _ = d.stat()
    _, uidl1 = d.multi("UIDL")
    d.quit()
    assert n1 == n0 - 1
    uids0 = [x.split()[1] for x in uidl0.split(b"\r\n")[:-2]]
    uids1 = [x.split()[1] for x in uidl1.split(b"\r\n")[:-2]]
    assert uids1 == uids0[:1] + uids0[2:]


def test_dele_rset_quit_keeps(dovecot, popgate, scratch_user):
    user, pw = scratch_user
    with popgate.session(user, pw) as p:
        n0, _ = p.stat()
        assert p.cmd("DELE 1").startswith(b"+OK")
        assert p.stat()[0] == n0 - 1
        assert p.cmd("RSET").startswith(b"+OK")
        assert p.stat()[0] == n0
        assert p.quit().startswith(b"+OK")
    dovecot.wait_user_disconnected(user, 2)
    d = dovecot.session(user, pw)
    assert d.stat()[0] == n0
    d.quit()


def test_dele_then_disconnect_deletes_nothing(dovecot, popgate, scratch_user):
    user, pw = scratch_user
    base = len(dovecot.disconnects(user))
    p = popgate.session(user, pw)
    n0, _ = p.stat()
    for i in range(1, n0 + 1):
        assert p.cmd("DELE %d" % i).startswith(b"+OK")
    assert p.stat()[0] == 0
    p.close()   # no QUIT
    lines = dovecot.wait_user_disconnected(user, base + 1)
    assert len(lines) > base, "dovecot never saw the session end"
    assert "Logged out" not in lines[base], \
        "the proxy sent QUIT upstream although the client did not: %s" % lines[base]
    d = dovecot.session(user, pw)
    assert d.stat()[0] == n0, "messages were expunged after a client disconnect"
    d.quit()


def test_quit_answer_relayed_and_closed(popgate):
    p = popgate.session()
    st = p.cmd("QUIT")
    assert st.startswith(b"+OK")
    closed, extra = p.is_closed(5)
    assert closed and extra == b""


# ---------------------------------------------------------------------------
# authentication
# ---------------------------------------------------------------------------

APOP_TS = re.compile(rb"<[^<>@\s]+@[^<>\s]+>")


def test_greeting_relayed_verbatim_shape(dovecot, popgate):
    g_direct = dovecot.connect().greeting
    g_proxy = popgate.connect().greeting
    # same text apart from the per-connection timestamp
    assert APOP_TS.sub(b"<TS>", g_proxy) == APOP_TS.sub(b"<TS>", g_direct), (g_proxy, g_direct)
    assert g_proxy.endswith(b"\r\n")


def test_apop_through_proxy(popgate):
    c = popgate.connect()
    m = APOP_TS.search(c.greeting)
    assert m, "no APOP timestamp in the greeting: %r" % c.greeting
    digest = hashlib.md5(m.group(0) + b"secret").hexdigest()
    st = c.cmd("APOP alice " + digest)
    assert st.startswith(b"+OK"), st
    assert c.stat()[0] > 0
    c.quit()


def test_apop_wrong_digest(popgate):
    c = popgate.connect()
    st = c.cmd("APOP alice " + "0" * 32)
    assert st.startswith(b"-ERR"), st
    c.login()
    c.quit()


def test_auth_plain_initial_response(popgate):
    c = popgate.connect()
    st = c.cmd("AUTH PLAIN " + plain_b64("alice", "secret"))
    assert st.startswith(b"+OK"), st
    assert c.stat()[0] > 0
    c.quit()


def test_auth_plain_continuation(popgate):
    c = popgate.connect()
    st = c.cmd("AUTH PLAIN")
    assert st.startswith(b"+ ") or st == b"+\r\n", st
    st = c.cmd(plain_b64("alice", "secret"))
    assert st.startswith(b"+OK"), st
    assert c.stat()[0] > 0
    c.quit()


def test_auth_login_mechanism(popgate):
    c = popgate.connect()
    st = c.cmd("AUTH LOGIN")
    assert st.startswith(b"+ "), st
    st = c.cmd(base64.b64encode(b"alice").decode())
    assert st.startswith(b"+ "), st
    st = c.cmd(base64.b64encode(b"secret").decode())
    assert st.startswith(b"+OK"), st
    assert c.stat()[0] > 0
    c.quit()


def test_auth_cancel(popgate):
    c = popgate.connect()
    st = c.cmd("AUTH PLAIN")
    assert st.startswith(b"+"), st
    st = c.cmd("*")
    assert st.startswith(b"-ERR"), st
    # the session is still usable and in sync
    c.login()
    assert c.stat()[0] > 0
    c.quit()


def test_auth_wrong_password_then_login(popgate):
    c = popgate.connect()
    st = c.cmd("AUTH PLAIN " + plain_b64("alice", "wrong"))
    assert st.startswith(b"-ERR"), st
    st = c.cmd("USER alice")
    assert st.startswith(b"+OK"), st
    st = c.cmd("PASS wrong")
    assert st.startswith(b"-ERR"), st
    c.login()
    c.quit()


def test_auth_mechanism_list(dovecot, popgate):
    """AUTH without a mechanism is a multi-line list (Dovecot)."""
    d = dovecot.connect()
    want = d.multi("AUTH")
    c = popgate.connect()
    got = c.multi("AUTH")
    assert got == want
    c.login()
    c.quit()
    d.close()


# ---------------------------------------------------------------------------
# odd arguments, pipelined authentication, half-close, IPv6, workers
# ---------------------------------------------------------------------------

ODD_ARGS = ["RETR 4294967297", "LIST 4294967297", "UIDL 4294967297", "TOP 4294967297 0",
            "RETR 18446744073709551617", "TOP 1 4294967297", "TOP 1 18446744073709551617",
            "TOP 1 -1", "RETR 01", "RETR +1", "RETR 1.0", "RETR 0x1", "RETR 0", "LIST 0",
            "LIST -0", "DELE 4294967297", "DELE 0"]


def _is_multi(cmd, status):
    kw = cmd.split()
    return status.startswith(b"+OK") and (kw[0] in ("RETR", "TOP") or len(kw) == 1)


@pytest.mark.parametrize("cmd", ODD_ARGS)
def test_odd_numbers_never_change_meaning(cmd, dovecot, popgate):
    """A number must never be re-serialized into another one (wrap-around,
    sign, base): the proxy answers -ERR itself or exactly what Dovecot says."""
    d, p = both(dovecot, popgate)
    try:
        want = d.cmd(cmd)
        want_block = d.read_multi() if _is_multi(cmd, want) else None
        got = p.cmd(cmd)
        got_block = p.read_multi() if _is_multi(cmd, got) else None
        if not got.startswith(b"-ERR"):
            assert (got, got_block) == (want, want_block), \
                "%s: proxy %r, dovecot %r" % (cmd, got[:60], want[:60])
        assert p.cmd("RSET").startswith(b"+OK")
        assert p.cmd("NOOP") == b"+OK\r\n"
    finally:
        d.close()       # no QUIT: a DELE must not be committed
        p.close()


@pytest.mark.parametrize("cmd", ["UTF8", "LANG", "LANG en"])
def test_known_extension_commands_relayed(cmd, dovecot, popgate):
    """UTF8/LANG are known to the proxy; Dovecot 2.3 refuses them: the
    proxy relays that -ERR (or answers -ERR itself) and stays in sync."""
    d, p = both(dovecot, popgate)
    try:
        want = d.cmd(cmd)
        got = p.cmd(cmd)
        assert got.startswith(b"-ERR") == want.startswith(b"-ERR"), (got, want)
        assert p.cmd("NOOP") == b"+OK\r\n"
    finally:
        d.quit()
        p.quit()


def test_pipelined_auth_continuation_and_commands(popgate, mailbox):
    c = popgate.connect()
    c.send(b"AUTH PLAIN\r\n" + plain_b64("alice", "secret").encode() + b"\r\nSTAT\r\nQUIT\r\n")
    assert c.readline().startswith(b"+")
    st = c.readline()
    assert st.startswith(b"+OK"), st
    assert c.readline().startswith(b"+OK %d " % len(mailbox.names))
    assert c.readline().startswith(b"+OK")
    closed, extra = c.is_closed(5)
    assert closed and extra == b""


def test_pipelined_auth_cancel_then_user_pass(popgate):
    c = popgate.connect()
    c.send(b"AUTH PLAIN\r\n*\r\nUSER alice\r\nPASS secret\r\nNOOP\r\n")
    assert c.readline().startswith(b"+")
    assert c.readline().startswith(b"-ERR")
    assert c.readline().startswith(b"+OK")
    assert c.readline().startswith(b"+OK")
    assert c.readline() == b"+OK\r\n"
    c.quit()


def test_pipelined_auth_line_that_looks_like_a_command(proxy_to_fake):
    """A SASL response line is data, even when it reads like a command."""
    p, f = proxy_to_fake()
    c = p.connect()
    c.send(b"AUTH PLAIN\r\nQUIT\r\nNOOP\r\n")
    assert c.readline().startswith(b"+")
    st = c.readline()
    assert st.startswith((b"+OK", b"-ERR")), st
    assert c.readline().startswith(b"+OK")      # NOOP, session alive
    cmds = f.conns[0].commands()
    assert cmds[:3] == ["AUTH PLAIN", "QUIT", "NOOP"], cmds


def test_half_close_after_quit_commits(dovecot, popgate, scratch_user):
    """`printf 'USER..PASS..DELE 1\\r\\nQUIT\\r\\n' | nc -N`: the client's
    QUIT arrived before its EOF, so it is relayed and answered."""
    user, pw = scratch_user
    d = dovecot.session(user, pw)
    n0, _ = d.stat()
    d.quit()
    base = len(dovecot.wait_user_disconnected(user, 2))
    c = popgate.connect()
    c.send(("USER %s\r\nPASS %s\r\nDELE 1\r\nQUIT\r\n" % (user, pw)).encode())
    c.sock.shutdown(socket.SHUT_WR)
    data = c.read_until_close(timeout=10)
    lines = data.split(b"\r\n")
    assert [ln[:3] for ln in lines[:4]] == [b"+OK"] * 4, data
    dovecot.wait_user_disconnected(user, base + 1)
    d = dovecot.session(user, pw)
    assert d.stat()[0] == n0 - 1
    d.quit()


def test_ipv6_listener_and_upstream(popgate_factory, fake_upstream):
    from pop3util import free_port
    f = fake_upstream(host="::1")
    port = free_port("::1")
    p = popgate_factory(servers=["[::1]:%d" % f.port], port=port,
                        listener={"bind": "[::1]:%d" % port})
    c = RawPOP3(port, host="::1")
    assert c.greeting.startswith(b"+OK")
    c.login()
    st, block = c.retr(1)
    assert block.endswith(b"\r\n.\r\n")
    c.quit()
    assert f.conns[0].commands()[:3] == ["USER alice", "PASS secret", "RETR 1"]


@pytest.mark.parametrize("workers", [2, "auto"])
def test_workers(workers, popgate_factory, direct, mailbox):
    p = popgate_factory(popgate={"workers": workers})
    n = mailbox.number["dots"]
    conns = [p.session() for _ in range(8)]
    for c in conns:
        st, block = c.retr(n)
        assert block == direct[n][1]
    for c in conns:
        assert c.quit().startswith(b"+OK")
