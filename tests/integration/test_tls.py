"""TLS: implicit and STARTTLS listeners, TLS parameters, upstream TLS.

What is asserted is /tmp/pg/tls-spec.md (issue 3) and security.md 2.1-2.5,
2.14 and 2.15, with real clients (curl, poplib, mpop, fetchmail, openssl
s_client, testssl.sh) and verifying trust everywhere: the test CA of
certs.py, names pop.test (the proxy), other.test (SNI) and up.test (the
upstreams). Byte-exactness is judged against Dovecot's own answers.

Layout of this module:
  gate            one popgate (module scope) in front of the plaintext
                  Dovecot: implicit TLS on gate.port, STARTTLS on
                  gate.stls_port; certificates pop.test (first) and
                  other.test (SNI).
  client side     real clients, STLS state machine, injection, parameters
  timeouts, log   handshake_timeout, the ev=close line's tls/cipher/sni
  upstream side   TLS fake upstreams (fakeupstream.py) and a TLS Dovecot
  testssl.sh      two scans (implicit and -t pop3), run in parallel
"""

import hashlib
import json
import os
import poplib
import re
import selectors
import socket
import ssl
import subprocess
import threading
import time

import pytest

import conftest
from conftest import Lines, Popgate
from fakeupstream import STARTTLS, FakeUpstream, sample_message, stuff_block
from pop3util import (Closed, POP3Error, RawPOP3, maildir_new, close_lines_for, free_port, parse_log_line,
                      tls_client_context, unstuff, wait_listening)

CURL = "/usr/bin/curl"
OPENSSL = "/usr/bin/openssl"
TESTSSL = "/usr/bin/testssl"     # Debian package testssl.sh
MPOP = "/usr/bin/mpop"
FETCHMAIL = "/usr/bin/fetchmail"

CRED_KEYWORDS = ("USER", "PASS", "APOP", "AUTH")
# a few corpus messages: plain, dot-stuffed, 100 KiB line, 8-bit, no final newline
TLS_MESSAGES = ["msg_01", "dots", "dot_first_body_line", "long_line", "eight_bit",
                "no_final_newline", "many_short_lines"]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def cert_lines(certs, *bases):
    """cert/key lines in pairs, in order (the first pair is the default)."""
    out = []
    for b in bases:
        c, k = certs.pair(b)
        out += [("cert", c), ("key", k)]
    return Lines(out)


def tls_listener(certs, mode="implicit", bases=("pop", "other"), **kw):
    d = {"tls": mode, "certs": cert_lines(certs, *bases)}
    d.update(kw)
    return d


def ctx_for(certs, ca=None, **kw):
    return tls_client_context(ca or certs.ca_pem, **kw)


def wait_log(p, pred, timeout=5.0):
    """Poll p's log until a line satisfies pred; return it (or None)."""
    end = time.monotonic() + timeout
    while True:
        for line in p.log_text().splitlines():
            if pred(line):
                return line
        if time.monotonic() > end:
            return None
        time.sleep(0.05)


def wait_close_line(p, port, timeout=5.0, since=0):
    """Close lines of the session from local port `port`, among the log
    written after offset `since` (a shared popgate sees ports reused)."""
    end = time.monotonic() + timeout
    while True:
        lines = close_lines_for(p.log_text()[since:], port)
        if lines or time.monotonic() > end:
            return lines
        time.sleep(0.05)


def capa_lines(block):
    """raw CAPA block -> capability lines (no terminators, no final '.')."""
    return [x for x in block.decode("latin-1").split("\r\n") if x and x != "."]


def has_sasl(lines):
    return any(x.upper().startswith("SASL") for x in lines)


def s_client(port, args, script=(), timeout=20.0, ca=None):
    """Run openssl s_client -connect 127.0.0.1:port with args. script is a
    list of (delay_seconds, bytes) written to stdin; stdin is then closed.
    Returns (rc, stdout+stderr text). The process is killed at timeout."""
    cmd = [OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % port]
    if ca is not False:
        cmd += ["-CAfile", ca] if ca else []
    cmd += list(args)
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    out = []
    reader = threading.Thread(target=lambda: out.append(p.stdout.read()), daemon=True)
    reader.start()
    end = time.monotonic() + timeout
    try:
        for delay, data in script:
            time.sleep(delay)
            if p.poll() is not None:
                break
            p.stdin.write(data)
            p.stdin.flush()
        p.stdin.close()
    except (BrokenPipeError, OSError):
        pass
    try:
        p.wait(max(0.1, end - time.monotonic()))
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)
    reader.join(5)
    return p.returncode, (out[0] if out else b"").decode("latin-1")


def brief(out, limit=3000):
    """s_client output for a failure message: without the hex dumps of
    session tickets, the last `limit` characters."""
    keep, pem = [], False
    for ln in out.splitlines():
        if ln.startswith("-----BEGIN"):
            pem = True
        elif ln.startswith("-----END"):
            pem = False
        elif not pem and not re.match(r"\s+[0-9a-f]{4} - ", ln) and \
                not re.match(r"\s+(PSK|SRP|Resumption PSK|Session-ID|Master-Key)", ln):
            keep.append(ln)
    return "\n".join(keep)[-limit:]


def s_negotiated(out):
    """('New'|'Reused', 'TLSv1.3', cipher) from s_client output, or None."""
    m = re.search(r"^(New|Reused), (TLSv1(?:\.\d)?|SSLv3), Cipher is (\S+)", out, re.M)
    if not m or m.group(3) == "(NONE)":
        return None
    return m.groups()


def s_subject_cn(out):
    m = re.search(r"^subject=.*?CN = ([^,\n]+)", out, re.M)
    return m.group(1).strip() if m else None


def pop_lines(out):
    """POP3 status lines (+OK/-ERR) in s_client output."""
    return re.findall(r"^([+-](?:OK|ERR)[^\r\n]*)", out, re.M)


def curl_tls(scheme, port, path="", *args, ca, user="alice:secret"):
    cmd = [CURL, "-sS", "--max-time", "60", "--cacert", ca,
           "--resolve", "pop.test:%d:127.0.0.1" % port, "-u", user]
    cmd += list(args)
    cmd.append("%s://pop.test:%d/%s" % (scheme, port, path))
    r = subprocess.run(cmd, capture_output=True, timeout=90)
    return r.returncode, r.stdout, r.stderr.decode("latin-1")


def curl_plain(port, path=""):
    r = subprocess.run([CURL, "-sS", "--max-time", "60", "-u", "alice:secret",
                        "pop3://127.0.0.1:%d/%s" % (port, path)], capture_output=True, timeout=90)
    return r.returncode, r.stdout, r.stderr.decode("latin-1")


def client_hello_bytes(server_hostname="pop.test"):
    """The bytes of a real TLS ClientHello (from Python's ssl, not sent)."""
    ctx = ssl.create_default_context()
    inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, outg, server_hostname=server_hostname)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    data = outg.read()
    assert data[:1] == b"\x16", data[:10]
    return data


def eof_times(socks, deadline_s):
    """{sock: seconds (monotonic) when EOF/RST was seen} within deadline;
    data received is ignored."""
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    res = {}
    end = time.monotonic() + deadline_s
    while len(res) < len(socks) and time.monotonic() < end:
        for key, _ in sel.select(timeout=max(0.0, min(0.2, end - time.monotonic()))):
            s = key.fileobj
            try:
                chunk = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                res[s] = time.monotonic()
                sel.unregister(s)
    sel.close()
    return res


def creds_in(commands):
    return [c for c in commands if c.split(" ", 1)[0].upper() in CRED_KEYWORDS]


def login_refused_check(c):
    """Read what a client of a failing upstream sees. Returns (first_line,
    rest) where rest holds the answers to USER/PASS if popgate relayed a
    +OK greeting anyway (so that a proxy that goes on in spite of a failed
    upstream TLS shows up in the fake's transcript)."""
    try:
        first = c.readline()
    except Closed as e:
        return e.data, b""
    rest = b""
    if first.startswith(b"+OK"):
        try:
            rest += c.cmd("USER alice")
            rest += c.cmd("PASS secret")
        except (Closed, OSError):
            pass
    return first, rest


# ---------------------------------------------------------------------------
# the shared gate: implicit + STARTTLS listeners in front of Dovecot
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gate(dovecot, certs, tmp_path_factory):
    stls_port = free_port()
    p = Popgate(str(tmp_path_factory.mktemp("popgate-tls")), [(dovecot.host, dovecot.port)],
                listener=tls_listener(certs, "implicit"),
                extra_sections=[("listener:stls", {
                    "bind": "127.0.0.1:%d" % stls_port, "upstream": "up",
                    "max_clients": 10000, "max_clients_per_ip": 200, "idle_timeout": "10m",
                    "login_timeout": "3m", "max_errors": 10,
                    **tls_listener(certs, "starttls")})],
                extra_ports=[stls_port])
    p.stls_port = stls_port
    p.start()
    yield p
    p.check_stop()


def tls_session(gate, certs, sni="pop.test", **kw):
    """RawPOP3 over implicit TLS to the gate, verifying pop.test."""
    ctx = ctx_for(certs)
    if sni is None:
        ctx.check_hostname = False
    return RawPOP3(gate.port, tls_context=ctx, server_hostname=sni, **kw)


# ---------------------------------------------------------------------------
# implicit TLS: real clients
# ---------------------------------------------------------------------------

def test_implicit_curl_byte_exact(gate, dovecot, mailbox, direct, certs):
    for name in TLS_MESSAGES:
        n = mailbox.number[name]
        rc_d, out_d, err_d = curl_plain(dovecot.port, str(n))
        assert rc_d == 0, err_d
        rc, out, err = curl_tls("pop3s", gate.port, str(n), ca=certs.ca_pem)
        assert rc == 0, "curl pop3s RETR %d (%s): rc=%d %s" % (n, name, rc, err)
        assert out == out_d, "curl pop3s RETR %d (%s) differs from Dovecot's" % (n, name)
        assert out == unstuff(direct[n][1]), name
    # LIST through TLS is Dovecot's LIST
    rc, out, err = curl_tls("pop3s", gate.port, "", ca=certs.ca_pem)
    assert rc == 0, err
    assert out == curl_plain(dovecot.port, "")[1]
    # the check is real: another CA -> curl refuses the certificate (60)
    rc, out, err = curl_tls("pop3s", gate.port, "1", ca=certs.rogue_ca_pem)
    assert rc == 60, "curl trusted a certificate it should not: rc=%d %s" % (rc, err)


class POP3_SSL_SNI(poplib.POP3_SSL):
    """poplib.POP3_SSL that connects to an address but verifies (and sends
    SNI for) another name."""

    def __init__(self, host, port, server_hostname, context, timeout=30):
        self._sni = server_hostname
        super().__init__(host, port, context=context, timeout=timeout)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout)
        return self.context.wrap_socket(sock, server_hostname=self._sni)


@pytest.fixture
def big_poplib_lines():
    old = poplib._MAXLINE
    poplib._MAXLINE = 1 << 20
    yield
    poplib._MAXLINE = old


def test_implicit_poplib_verified(gate, mailbox, direct, certs, big_poplib_lines):
    for host_name in ("pop.test", "127.0.0.1"):
        p = POP3_SSL_SNI("127.0.0.1", gate.port, host_name, ctx_for(certs))
        assert p.getwelcome().startswith(b"+OK")
        assert p.sock.version() in ("TLSv1.2", "TLSv1.3")
        p.user("alice")
        p.pass_("secret")
        assert p.stat()[0] == len(mailbox.names)
        for name in TLS_MESSAGES:
            n = mailbox.number[name]
            resp, lines, octets = p.retr(n)
            assert resp == direct[n][0].rstrip(b"\r\n")
            assert b"".join(x + b"\r\n" for x in lines) == unstuff(direct[n][1]), name
        assert p.quit().startswith(b"+OK")
    # verification is on: wrong name, wrong CA
    with pytest.raises(ssl.SSLCertVerificationError):
        POP3_SSL_SNI("127.0.0.1", gate.port, "wrong.test", ctx_for(certs))
    with pytest.raises(ssl.SSLCertVerificationError):
        POP3_SSL_SNI("127.0.0.1", gate.port, "pop.test", ctx_for(certs, ca=certs.rogue_ca_pem))


def mpop_fetch(port, outdir, tls, certs, user="bob", password="bobpass"):
    md = os.path.join(outdir, "maildir")
    for sub in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(md, sub), exist_ok=True)
    cmd = [MPOP, "--quiet", "--host=127.0.0.1", "--port=%d" % port,
           "--auth=user", "--user=" + user, "--passwordeval=echo " + password,
           "--keep=on", "--only-new=off", "--received-header=off", "--timeout=60",
           "--delivery=maildir," + md, "--uidls-file=" + os.path.join(outdir, "uidls")]
    if tls == "off":
        cmd += ["--tls=off"]
    else:
        cmd += ["--tls=on", "--tls-starttls=" + ("on" if tls == "starttls" else "off"),
                "--tls-trust-file=" + certs.ca_pem, "--tls-host-override=pop.test"]
    r = subprocess.run(cmd, capture_output=True, timeout=120, env=dict(os.environ, HOME=outdir))
    return r, maildir_new(md)


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_mpop_tls_delivers(mode, gate, dovecot, certs, tmp_path):
    rd, want = mpop_fetch(dovecot.port, str(tmp_path / "direct"), "off", certs)
    assert rd.returncode == 0, rd.stderr
    port = gate.port if mode == "implicit" else gate.stls_port
    r, got = mpop_fetch(port, str(tmp_path / "proxy"), mode, certs)
    assert r.returncode == 0, "mpop --tls (%s) via popgate: rc=%d %s" % (
        mode, r.returncode, r.stderr.decode("latin-1")[-2000:])
    assert len(want) == len(dovecot.users["bob"]) and got == want


FETCHMAIL_MDA = """#!/bin/sh
n=$(ls "{out}" | wc -l)
exec cat > "{out}/$(printf %05d "$n")"
"""


def fetchmail_fetch(port, workdir, certs, tls, user="bob", password="bobpass"):
    out = os.path.join(workdir, "out")
    os.makedirs(out)
    mda = os.path.join(workdir, "mda.sh")
    with open(mda, "w") as f:
        f.write(FETCHMAIL_MDA.format(out=out))
    os.chmod(mda, 0o755)
    rc = os.path.join(workdir, "fetchmailrc")
    if tls == "off":
        ssl_opts = 'sslproto ""'
        poll = "127.0.0.1"
    else:
        ssl_opts = ('%s sslproto "TLS1.2+" sslcertck sslcertfile "%s" sslcommonname "pop.test"'
                    % ("ssl" if tls == "implicit" else "", certs.ca_pem))
        poll = "pop.test via 127.0.0.1"
    with open(rc, "w") as f:
        f.write('set no bouncemail\nset invisible\n'
                'poll %s service %d protocol pop3 auth password no envelope timeout 60 '
                'bad-header accept\n'
                '  user "%s" there with password "%s" is "root" here\n'
                '  keep fetchall no rewrite %s mda "%s"\n'
                % (poll, port, user, password, ssl_opts, mda))
    os.chmod(rc, 0o600)
    env = dict(os.environ, FETCHMAILHOME=workdir, HOME=workdir)
    r = subprocess.run([FETCHMAIL, "-f", rc, "--nodetach", "--nosyslog", "-v"],
                       capture_output=True, timeout=120, env=env)
    msgs = []
    for fn in sorted(os.listdir(out)):
        with open(os.path.join(out, fn), "rb") as fh:
            msgs.append(fh.read())
    return r, msgs


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_fetchmail_tls_delivers(mode, gate, dovecot, certs, tmp_path):
    rd, want = fetchmail_fetch(dovecot.port, str(tmp_path / "direct"), certs, "off")
    assert rd.returncode == 0, rd.stdout[-2000:]
    port = gate.port if mode == "implicit" else gate.stls_port
    r, got = fetchmail_fetch(port, str(tmp_path / "proxy"), certs, mode)
    log = (r.stdout + r.stderr).decode("latin-1")
    assert r.returncode == 0, "fetchmail (%s) via popgate: rc=%d\n%s" % (mode, r.returncode,
                                                                      log[-3000:])
    assert len(want) == len(dovecot.users["bob"]) and got == want
    if mode == "starttls":
        assert "upgrade to TLS succeeded" in log, log[-3000:]


def test_implicit_s_client_verified(gate, certs):
    rc, out = s_client(gate.port, ["-verify_return_error", "-verify_hostname", "pop.test",
                                   "-servername", "pop.test", "-nocommands", "-ign_eof"],
                       script=[(0.3, b"CAPA\r\nQUIT\r\n")], ca=certs.ca_pem)
    assert rc == 0, brief(out)
    assert "Verify return code: 0 (ok)" in out, brief(out)
    lines = pop_lines(out)
    assert len(lines) >= 3 and lines[0].startswith("+OK"), brief(out)  # greeting, CAPA, QUIT
    assert "\nSTLS\r\n" not in out and "\nUSER\r\n" in out, brief(out)
    # the same with another CA fails: the verification is real
    rc, out = s_client(gate.port, ["-verify_return_error", "-servername", "pop.test",
                                   "-nocommands", "-ign_eof"],
                       script=[(0.3, b"QUIT\r\n")], ca=certs.rogue_ca_pem)
    assert rc != 0 and not pop_lines(out), brief(out)


# ---------------------------------------------------------------------------
# STARTTLS listener: real clients
# ---------------------------------------------------------------------------

def test_starttls_curl_ssl_reqd(gate, dovecot, mailbox, direct, certs):
    for name in TLS_MESSAGES[:4]:
        n = mailbox.number[name]
        rc, out, err = curl_tls("pop3", gate.stls_port, str(n), "--ssl-reqd", ca=certs.ca_pem)
        assert rc == 0, "curl --ssl-reqd RETR %d (%s): rc=%d %s" % (n, name, rc, err)
        assert out == unstuff(direct[n][1]), name
    rc, out, err = curl_tls("pop3", gate.stls_port, "", "--ssl-reqd", ca=certs.ca_pem)
    assert rc == 0 and out == curl_plain(dovecot.port, "")[1], err


def test_starttls_poplib_verified(gate, mailbox, direct, certs, big_poplib_lines):
    p = poplib.POP3("127.0.0.1", gate.stls_port, timeout=30)
    caps = p.capa()
    assert "STLS" in caps and "USER" not in caps and "SASL" not in caps, caps
    p.stls(context=ctx_for(certs))          # host 127.0.0.1: the IP SAN is checked
    assert p.sock.version() in ("TLSv1.2", "TLSv1.3")
    caps = p.capa()
    assert "STLS" not in caps and "USER" in caps and "SASL" in caps, caps
    p.user("alice")
    p.pass_("secret")
    for name in TLS_MESSAGES:
        n = mailbox.number[name]
        resp, lines, _ = p.retr(n)
        assert b"".join(x + b"\r\n" for x in lines) == unstuff(direct[n][1]), name
    assert p.quit().startswith(b"+OK")
    # a context that does not trust the test CA fails the handshake
    p = poplib.POP3("127.0.0.1", gate.stls_port, timeout=30)
    with pytest.raises(ssl.SSLCertVerificationError):
        p.stls(context=ctx_for(certs, ca=certs.rogue_ca_pem))
    p.sock.close()


def test_starttls_s_client(gate, certs):
    rc, out = s_client(gate.stls_port, ["-starttls", "pop3", "-verify_return_error",
                                        "-verify_hostname", "pop.test", "-servername",
                                        "pop.test", "-alpn", "pop3", "-nocommands", "-ign_eof"],
                       script=[(0.3, b"CAPA\r\nQUIT\r\n")], ca=certs.ca_pem)
    assert rc == 0, brief(out)
    assert "Verify return code: 0 (ok)" in out, brief(out)
    assert s_negotiated(out) is not None, brief(out)
    assert "ALPN protocol: pop3" in out, brief(out)
    lines = pop_lines(out)
    assert lines and lines[0].startswith("+OK"), brief(out)     # CAPA inside TLS
    assert "\nUSER\r\n" in out and "\nSTLS\r\n" not in out, brief(out)


# ---------------------------------------------------------------------------
# STARTTLS state machine (security.md 2.1, 2.4)
# ---------------------------------------------------------------------------

def test_capa_before_and_after_stls(gate, certs, direct, mailbox):
    c = RawPOP3(gate.stls_port, source="127.0.0.2")
    assert c.greeting.startswith(b"+OK"), c.greeting
    st, block = c.multi("CAPA")
    assert st.startswith(b"+OK"), st
    before = capa_lines(block)
    assert "STLS" in before, before
    assert "USER" not in before and not has_sasl(before), before
    st = c.starttls(ctx_for(certs), server_hostname="pop.test")
    assert st.startswith(b"+OK Begin TLS negotiation"), st
    # nothing from before the handshake is replayed: the next CAPA gets one answer
    st, block = c.multi("CAPA")
    after = capa_lines(block)
    assert "STLS" not in after, after
    assert "USER" in after and has_sasl(after), after
    c.login()
    n = mailbox.number["dots"]
    assert c.retr(n) == direct[n]
    c.settimeout(1.0)
    assert c.quit().startswith(b"+OK")


def dovecot_alice_lines(dovecot):
    return [ln for ln in dovecot.log_text().splitlines() if "user=<alice>" in ln]


def dovecot_login_disconnects(dovecot):
    return [ln for ln in dovecot.log_text().splitlines()
            if "pop3-login:" in ln and "Disconnected" in ln]


def test_credentials_before_stls_refused_dovecot(gate, dovecot, certs):
    """From 127.0.0.2 (not loopback-exempt): USER/PASS/APOP/AUTH before
    STLS get -ERR and Dovecot sees no login attempt (had USER and PASS
    been relayed, Dovecot would log "Login: user=<alice>")."""
    before = len(dovecot_alice_lines(dovecot))
    disc_before = len(dovecot_login_disconnects(dovecot))
    c = RawPOP3(gate.stls_port, source="127.0.0.2")
    for cmd in ("USER alice", "PASS secret",
                "APOP alice 0123456789abcdef0123456789abcdef",
                "AUTH PLAIN AGFsaWNlAHNlY3JldA==", "AUTH LOGIN"):
        st = c.cmd(cmd)
        assert st.startswith(b"-ERR "), (cmd, st)
    # close without QUIT: popgate drops its upstream connection, and
    # Dovecot logs how that pre-login session ended
    c.close()
    end = time.monotonic() + 10
    while len(dovecot_login_disconnects(dovecot)) <= disc_before and time.monotonic() < end:
        time.sleep(0.1)
    new = dovecot_login_disconnects(dovecot)[disc_before:]
    assert new, "Dovecot logged no end of the session:\n" + dovecot.log_text()[-2000:]
    assert all("no auth attempts" in ln for ln in new), new
    assert len(dovecot_alice_lines(dovecot)) == before, dovecot_alice_lines(dovecot)[before:]


def test_credentials_before_stls_never_forwarded(popgate_factory, fake_upstream, certs):
    f = fake_upstream()
    p = popgate_factory(servers=[("127.0.0.1", f.port)], listener=tls_listener(certs, "starttls"))
    c = RawPOP3(p.port, source="127.0.0.2")
    assert c.greeting.startswith(b"+OK")
    refused = ["USER alice", "PASS secret", "APOP alice 0123456789abcdef0123456789abcdef",
               "AUTH PLAIN AGFsaWNlAHNlY3JldA==", "AUTH LOGIN", "AUTH"]
    for cmd in refused:
        st = c.cmd(cmd)
        assert st.startswith(b"-ERR "), (cmd, st)
    c.starttls(ctx_for(certs), server_hostname="pop.test")
    assert c.cmd("NOOP").startswith(b"+OK")     # barrier: everything before is forwarded
    assert f.wait_conns(1)
    cmds = f.conns[0].commands()
    assert not creds_in(cmds), "credentials reached the upstream before TLS: %r" % cmds
    c.login()
    cmds = f.conns[0].commands()
    assert creds_in(cmds) == ["USER alice", "PASS secret"], cmds
    c.quit()


def test_stls_twice_and_on_implicit(gate, certs):
    c = RawPOP3(gate.stls_port)
    c.starttls(ctx_for(certs), server_hostname="pop.test")
    st = c.cmd("STLS")
    assert st.startswith(b"-ERR"), st
    c.login()                                   # still a working TLS session
    assert c.stat()[0] > 0
    c.quit()
    c = tls_session(gate, certs)
    st = c.cmd("STLS")
    assert st.startswith(b"-ERR"), st
    c.login()
    assert c.cmd("STLS").startswith(b"-ERR")
    c.quit()


def test_stls_after_login_with_require_tls_no(popgate_factory, certs):
    p = popgate_factory(listener=tls_listener(certs, "starttls", require_tls="no"))
    c = p.connect()
    st, block = c.multi("CAPA")
    caps = capa_lines(block)
    assert "STLS" in caps and "USER" in caps, caps
    c.login()
    st = c.cmd("STLS")
    assert st.startswith(b"-ERR"), st
    assert c.stat()[0] > 0
    c.quit()


def test_stls_command_injection(gate, certs):
    """security.md 2.1: STLS\\r\\nCAPA\\r\\n in one write -> closed, no +OK,
    no CAPA answer."""
    for tail in (b"CAPA\r\n", b"CAPA\r\nQUIT\r\n", b"C"):
        c = RawPOP3(gate.stls_port)
        c.send(b"STLS\r\n" + tail)
        try:
            data = c.read_until_close(timeout=5)
        except socket.timeout:
            pytest.fail("STLS + %r: still open after 5 s (buffer %r)" % (tail, bytes(c.buf)))
        assert b"+OK" not in data, "STLS + %r: answered %r" % (tail, data)
        assert b"\r\n." not in data and b"USER" not in data, data
        if data:
            assert data.startswith(b"-ERR") and data.count(b"\r\n") == 1, data
        c.close()


def test_stls_then_garbage_closes(gate, certs):
    c = RawPOP3(gate.stls_port)
    c.send(b"STLS\r\n")
    st = c.readline()
    assert st.startswith(b"+OK"), st
    c.send(b"CAPA\r\nNOOP\r\n")
    closed, extra = c.is_closed(timeout=5)
    assert closed, "not closed after non-TLS bytes following STLS +OK: %r" % extra
    assert b"+OK" not in extra and b"USER" not in extra, extra


# ---------------------------------------------------------------------------
# TLS parameters (security.md 2.5, 2.14)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("proto", ["-tls1", "-tls1_1"])
def test_old_protocols_refused(proto, gate, certs):
    # SECLEVEL=0 so that our own OpenSSL offers TLS 1.0/1.1 at all
    rc, out = s_client(gate.port, [proto, "-cipher", "DEFAULT@SECLEVEL=0", "-nocommands",
                                   "-ign_eof"], script=[(0.3, b"QUIT\r\n")], ca=certs.ca_pem)
    assert rc != 0, brief(out)
    assert s_negotiated(out) is None and not pop_lines(out), brief(out)


@pytest.mark.parametrize("proto,name", [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_tls12_and_tls13_accepted(proto, name, gate, certs):
    rc, out = s_client(gate.port, [proto, "-servername", "pop.test", "-verify_return_error",
                                   "-nocommands", "-ign_eof"],
                       script=[(0.3, b"QUIT\r\n")], ca=certs.ca_pem)
    assert rc == 0, brief(out)
    neg = s_negotiated(out)
    assert neg and neg[1] == name, brief(out)
    assert re.search(r"^Compression: NONE", out, re.M), brief(out)
    lines = pop_lines(out)
    assert len(lines) == 2 and lines[0].startswith("+OK"), brief(out)


def test_tls13_only_listener(popgate_factory, certs):
    p = popgate_factory(listener=tls_listener(certs, "implicit", tls_min_version="TLSv1.3"))
    rc, out = s_client(p.port, ["-tls1_2", "-nocommands", "-ign_eof"],
                       script=[(0.3, b"QUIT\r\n")], ca=certs.ca_pem)
    assert rc != 0 and not pop_lines(out), brief(out)
    rc, out = s_client(p.port, ["-tls1_3", "-nocommands", "-ign_eof"],
                       script=[(0.3, b"QUIT\r\n")], ca=certs.ca_pem)
    assert rc == 0 and s_negotiated(out)[1] == "TLSv1.3", brief(out)


def test_listener_ciphers_key(popgate_factory, certs):
    p = popgate_factory(listener=tls_listener(certs, "implicit", ciphers="ECDHE+CHACHA20"))
    for cipher, ok in (("ECDHE-ECDSA-CHACHA20-POLY1305", True),
                       ("ECDHE-ECDSA-AES128-GCM-SHA256", False)):
        rc, out = s_client(p.port, ["-tls1_2", "-cipher", cipher, "-nocommands", "-ign_eof"],
                           script=[(0.3, b"QUIT\r\n")], ca=certs.ca_pem)
        neg = s_negotiated(out)
        if ok:
            assert rc == 0 and neg and neg[2] == cipher, brief(out)
        else:
            assert neg is None and not pop_lines(out), brief(out)


@pytest.mark.parametrize("cipher,ok", [
    ("ECDHE-ECDSA-AES128-GCM-SHA256", True),
    ("ECDHE-ECDSA-AES256-GCM-SHA384", True),
    ("ECDHE-ECDSA-CHACHA20-POLY1305", True),
    ("ECDHE-ECDSA-AES128-SHA", False),       # CBC
    ("ECDHE-ECDSA-AES256-SHA384", False),    # CBC
    ("ECDHE-ECDSA-ARIA128-GCM-SHA256", False),
    ("ECDHE-ECDSA-CAMELLIA128-SHA256", False),
])
def test_default_tls12_ciphers(cipher, ok, gate, certs):
    rc, out = s_client(gate.port, ["-tls1_2", "-cipher", cipher, "-nocommands", "-ign_eof"],
                       script=[(0.3, b"QUIT\r\n")], ca=certs.ca_pem)
    neg = s_negotiated(out)
    if ok:
        assert rc == 0 and neg and neg[2] == cipher, brief(out)
    else:
        assert neg is None and not pop_lines(out), "TLS 1.2 cipher %s accepted:\n%s" % (
            cipher, brief(out))


def test_client_renegotiation_refused(gate, certs):
    """"R" in s_client (TLS 1.2) asks for a renegotiation; popgate refuses:
    no second handshake, and the NOOP sent after it gets no answer."""
    rc, out = s_client(gate.port, ["-tls1_2", "-servername", "pop.test"],
                       script=[(0.8, b"R\n"), (1.5, b"NOOP\r\n"), (1.0, b"")],
                       ca=certs.ca_pem, timeout=15)
    assert s_negotiated(out) and "+OK" in out, "no TLS 1.2 session to begin with:\n" + brief(out)
    assert "RENEGOTIATING" in out, brief(out)
    after = out.split("RENEGOTIATING", 1)[1]
    assert not re.search(r"^\+OK", after, re.M), "renegotiation accepted:\n" + brief(out)
    assert out.count("depth=0") <= 1, "a second handshake took place:\n" + brief(out)
    assert "no renegotiation" in after or "alert" in after or "errno" in after, brief(out)


def test_alpn(gate, certs):
    rc, out = s_client(gate.port, ["-alpn", "http/1.1", "-servername", "pop.test",
                                   "-nocommands", "-ign_eof"],
                       script=[(0.3, b"QUIT\r\n")], ca=certs.ca_pem)
    assert rc != 0 and not pop_lines(out), "ALPN http/1.1 accepted:\n" + brief(out)
    assert "no application protocol" in out, brief(out)
    rc, out = s_client(gate.port, ["-alpn", "pop3", "-servername", "pop.test",
                                   "-nocommands", "-ign_eof"],
                       script=[(0.3, b"QUIT\r\n")], ca=certs.ca_pem)
    assert rc == 0 and "ALPN protocol: pop3" in out, brief(out)
    rc, out = s_client(gate.port, ["-alpn", "http/1.1,pop3", "-nocommands", "-ign_eof"],
                       script=[(0.3, b"QUIT\r\n")], ca=certs.ca_pem)
    assert rc == 0 and "ALPN protocol: pop3" in out, brief(out)
    rc, out = s_client(gate.port, ["-servername", "pop.test", "-nocommands", "-ign_eof"],
                       script=[(0.3, b"QUIT\r\n")], ca=certs.ca_pem)
    assert rc == 0 and "No ALPN negotiated" in out and pop_lines(out), brief(out)


def test_http_request_over_tls_not_echoed(gate, certs):
    """security.md 2.5 (ALPACA): an HTTP request sent over TLS (a browser
    redirected to the POP3 port) is closed after max_errors (10) errors,
    and no answer carries the request's bytes back."""
    marker = b"a1paca7f3a"
    req = (b"GET /" + marker + b" HTTP/1.1\r\nHost: " + marker + b".test\r\n"
           b"X-Inject: <script>alert('" + marker + b"')</script>\r\n" +
           b"".join(b"X-Pad-%d: %s\r\n" % (i, marker) for i in range(15)) + b"\r\n")
    c = tls_session(gate, certs)
    c.send(req)
    try:
        data = c.read_until_close(timeout=5)
    except socket.timeout:
        pytest.fail("still open 5 s after 18 invalid lines (max_errors = 10): %r" % bytes(c.buf))
    assert marker not in data and b"script" not in data, data
    lines = data.split(b"\r\n")[:-1]
    assert lines and all(x.startswith(b"-ERR") for x in lines), data
    assert len(lines) <= 11, "%d answers before the close (max_errors = 10)" % len(lines)


@pytest.mark.parametrize("sni,want", [("other.test", "other.test"), ("pop.test", "pop.test"),
                                      (None, "pop.test"), ("nomatch.test", "pop.test")])
def test_sni_selects_certificate(sni, want, gate, certs):
    args = ["-servername", sni] if sni else ["-noservername"]
    rc, out = s_client(gate.port, args + ["-verify_return_error", "-nocommands", "-ign_eof"],
                       script=[(0.3, b"QUIT\r\n")], ca=certs.ca_pem)
    assert rc == 0, brief(out)
    assert s_subject_cn(out) == want, brief(out)
    # and a name-checking client is happy with it
    if sni in ("other.test", "pop.test"):
        c = RawPOP3(gate.port, tls_context=ctx_for(certs), server_hostname=sni)
        assert c.greeting.startswith(b"+OK")
        c.quit()


@pytest.mark.parametrize("proto", ["-tls1_2", "-tls1_3"])
def test_session_resumption(proto, gate, certs, tmp_path):
    sess = str(tmp_path / "sess.pem")
    rc, out = s_client(gate.port, [proto, "-servername", "pop.test", "-sess_out", sess,
                                   "-nocommands", "-ign_eof"],
                       script=[(0.5, b"QUIT\r\n")], ca=certs.ca_pem)
    assert rc == 0 and s_negotiated(out)[0] == "New", brief(out)
    assert os.path.exists(sess) and os.path.getsize(sess) > 0, "no session saved:\n" + brief(out)
    rc, out = s_client(gate.port, [proto, "-servername", "pop.test", "-sess_in", sess,
                                   "-nocommands", "-ign_eof"],
                       script=[(0.5, b"QUIT\r\n")], ca=certs.ca_pem)
    neg = s_negotiated(out)
    assert rc == 0 and neg and neg[0] == "Reused", "session not resumed:\n" + brief(out)
    assert pop_lines(out)[0].startswith("+OK"), brief(out)


# ---------------------------------------------------------------------------
# handshake_timeout (security.md 2.11)
# ---------------------------------------------------------------------------

def test_handshake_timeout(popgate_factory, certs):
    stls_port = free_port()
    p = popgate_factory(listener=tls_listener(certs, "implicit", handshake_timeout="2s"),
                        extra_sections=[("listener:stls", {
                            "bind": "127.0.0.1:%d" % stls_port, "upstream": "up",
                            **tls_listener(certs, "starttls", handshake_timeout="2s")})],
                        extra_ports=[stls_port])
    hello = client_hello_bytes()
    t0 = time.monotonic()
    silent = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    crowd = [socket.create_connection(("127.0.0.1", p.port), timeout=5) for _ in range(50)]
    partial = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    partial.sendall(hello[:len(hello) // 2])
    stls = RawPOP3(stls_port, timeout=5)
    st = stls.cmd("STLS")
    assert st.startswith(b"+OK"), st
    t_stls = time.monotonic()
    # a legitimate client meanwhile
    c = RawPOP3(p.port, tls_context=ctx_for(certs), server_hostname="pop.test", timeout=5)
    c.login()
    assert c.stat()[0] > 0
    c.quit()
    t_legit = time.monotonic() - t0
    socks = [silent, partial, stls.sock]
    times = eof_times(socks + crowd, 8.0)
    for s in socks + crowd:
        s.close()
    open_crowd = [s for s in crowd if s not in times]
    assert not open_crowd, "%d of 50 silent connections still open after 8 s" % len(open_crowd)
    late = [times[s] - t0 for s in crowd if not 1.5 <= times[s] - t0 <= 5.0]
    assert not late, "silent connections closed after %s s (handshake_timeout = 2s)" % late
    names = {silent: "silent", partial: "half a ClientHello", stls.sock: "silent after STLS"}
    starts = {silent: t0, partial: t0, stls.sock: t_stls}
    for s in socks:
        assert s in times, "%s client not closed within 8 s (handshake_timeout = 2s)" % names[s]
        dt = times[s] - starts[s]
        assert 1.5 <= dt <= 5.0, "%s client closed after %.2f s (handshake_timeout = 2s)" % (
            names[s], dt)
    assert t_legit < 1.5 + 0.5, "the legitimate session took %.2f s" % t_legit


# ---------------------------------------------------------------------------
# the session log line
# ---------------------------------------------------------------------------

_STDNAMES = {}


def cipher_names(openssl_name):
    """{OpenSSL name, IANA name} of a cipher suite."""
    if not _STDNAMES:
        out = subprocess.run([OPENSSL, "ciphers", "-stdname", "ALL"], capture_output=True,
                             text=True, timeout=10).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1] == "-":
                _STDNAMES[parts[2]] = parts[0]
    return {openssl_name, _STDNAMES.get(openssl_name, openssl_name)}


def test_log_line_tls_fields(gate, certs):
    since = len(gate.log_text())
    c = tls_session(gate, certs, sni="pop.test")
    assert c.tls_version == "TLSv1.3"
    cipher13 = c.cipher
    c.login()
    c.quit()
    ctx = ctx_for(certs, check_hostname=False, maximum=ssl.TLSVersion.TLSv1_2)
    c12 = RawPOP3(gate.port, tls_context=ctx, server_hostname=None)
    assert c12.tls_version == "TLSv1.2"
    cipher12 = c12.cipher
    c12.quit()
    plain = RawPOP3(gate.stls_port)
    plain.multi("CAPA")
    plain.quit()
    for port, tls, ciphers, sni in [(c.local_port, "TLSv1.3", cipher_names(cipher13), "pop.test"),
                                    (c12.local_port, "TLSv1.2", cipher_names(cipher12), "-"),
                                    (plain.local_port, "-", {"-"}, "-")]:
        lines = wait_close_line(gate, port, since=since)
        assert len(lines) == 1, (port, lines, gate.log_text()[-2000:])
        kv = parse_log_line(lines[0])
        assert kv.get("tls") == tls, lines[0]
        assert kv.get("cipher") in ciphers, (ciphers, lines[0])
        assert kv.get("sni") == sni, lines[0]


# ---------------------------------------------------------------------------
# upstream TLS with fake upstreams (security.md 2.2, 2.3, 2.15)
# ---------------------------------------------------------------------------

def upstream_tls(certs, mode="implicit", **kw):
    d = {"tls": mode, "ca_file": certs.ca_pem, "server_name": "up.test"}
    d.update(kw)
    return {k: v for k, v in d.items() if v is not None}


def check_relayed_session(p, f, tls_expected=True):
    c = p.connect()
    assert c.greeting == f.greeting, (c.greeting, f.greeting)
    c.login()
    st, block = c.retr(1)
    assert block == stuff_block(sample_message(1)), block[:200]
    assert c.quit().startswith(b"+OK")
    assert f.wait_conns(1)
    conn = f.conns[0]
    assert f.wait_closed(conn, 5)
    cmds = conn.commands()
    if tls_expected:
        assert conn.tls_version in ("TLSv1.2", "TLSv1.3"), (conn.tls_version, conn.tls_error)
        # every credential was sent inside TLS
        first_cred = min(i for i, x in enumerate(cmds) if x.split(" ")[0] in ("USER", "PASS"))
        assert conn.tls_line is not None and first_cred >= conn.tls_line, cmds
    assert "USER alice" in cmds and "PASS secret" in cmds, cmds
    return conn


def test_upstream_implicit_valid(popgate_factory, fake_upstream, certs):
    f = fake_upstream(tls="implicit", certfile=certs.up_pem, keyfile=certs.up_key)
    p = popgate_factory(servers=[("127.0.0.1", f.port)], upstream=upstream_tls(certs))
    conn = check_relayed_session(p, f)
    assert conn.sni == "up.test", conn.sni


def test_upstream_implicit_default_name_is_host(popgate_factory, fake_upstream, certs):
    """No server_name: the name checked is the server's host (127.0.0.1,
    in the certificate's IP SAN); an IP address is not sent as SNI."""
    f = fake_upstream(tls="implicit", certfile=certs.up_pem, keyfile=certs.up_key)
    p = popgate_factory(servers=[("127.0.0.1", f.port)],
                        upstream=upstream_tls(certs, server_name=None))
    conn = check_relayed_session(p, f)
    assert conn.sni is None, conn.sni


BAD_UPSTREAM = {
    # id: (cert base, server_name, OpenSSL's reason)
    "expired": ("up-expired", "up.test", r"certificate has expired"),
    "wrong-name": ("up-wrongname", "up.test", r"hostname mismatch"),
    "self-signed": ("up-selfsigned", "up.test", r"self[- ]signed certificate"),
    "unknown-ca": ("up-unknownca", "up.test", r"unable to get local issuer certificate"),
    "server_name-mismatch": ("up", "wrong.test", r"hostname mismatch"),
}


def assert_upstream_refused(p, f, reason_re=None, fail_tag="upstream_tls_failed"):
    c = p.connect(read_greeting=False, timeout=10)
    first, rest = login_refused_check(c)
    assert first.startswith(b"-ERR [SYS/TEMP]"), \
        "client saw %r then %r (wanted -ERR [SYS/TEMP])" % (first, rest)
    closed, extra = c.is_closed(timeout=5)
    assert closed, "not closed after -ERR [SYS/TEMP]: %r" % extra
    c.close()
    assert f.wait_conns(1)
    for conn in f.conns:
        f.wait_closed(conn, 5)
        assert not creds_in(conn.commands()), \
            "credentials reached the upstream: %r" % conn.commands()
    if reason_re:
        line = wait_log(p, lambda ln: "ev=" + fail_tag in ln)
        assert line, "no ev=%s line in the log:\n%s" % (fail_tag, p.log_text()[-3000:])
        kv = parse_log_line(line)
        assert kv.get("err"), line
        assert re.search(reason_re, line, re.I), "reason %r not in %r" % (reason_re, line)


@pytest.mark.parametrize("case", list(BAD_UPSTREAM))
def test_upstream_implicit_bad_certificate(case, popgate_factory, fake_upstream, certs):
    base, name, reason = BAD_UPSTREAM[case]
    cert, key = certs.pair(base)
    f = fake_upstream(tls="implicit", certfile=cert, keyfile=key)
    p = popgate_factory(servers=[("127.0.0.1", f.port)],
                        upstream=upstream_tls(certs, server_name=name))
    assert_upstream_refused(p, f, reason)


def popgate_t(p):
    p.write_config()
    r = subprocess.run([p.binary, "-t", "-c", p.conf], capture_output=True, text=True,
                       timeout=30)
    return r.returncode, r.stdout + r.stderr


def verify_warnings(out):
    """-t output lines that warn about verify (the config path, which may
    contain "verify", comes before the word "warning")."""
    return [ln for ln in out.splitlines() if re.search(r"warn.*\bverify\b", ln, re.I)]


def test_upstream_verify_no(popgate_factory, fake_upstream, certs):
    f = fake_upstream(tls="implicit", certfile=certs.up_selfsigned_pem,
                      keyfile=certs.up_selfsigned_key)
    p = popgate_factory(servers=[("127.0.0.1", f.port)], start=False,
                        upstream=upstream_tls(certs, ca_file=None, verify="no"))
    rc, out = popgate_t(p)
    assert rc == 0, out
    assert verify_warnings(out), "popgate -t printed no warning about verify = no:\n" + out
    p.start()
    check_relayed_session(p, f)
    # with verify = yes the same upstream is refused, and -t has no such warning
    p2 = popgate_factory(servers=[("127.0.0.1", f.port)], start=False,
                         upstream=upstream_tls(certs))
    rc, out = popgate_t(p2)
    assert rc == 0 and not verify_warnings(out), out


def client_cert_context(certs):
    ctx = FakeUpstream.make_server_context(certs.up_pem, certs.up_key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(certs.ca_pem)
    return ctx


def test_upstream_client_certificate(popgate_factory, fake_upstream, certs):
    """[upstream] cert/key: popgate presents a client certificate to an
    upstream that requires one; without it the upstream refuses."""
    f = fake_upstream(tls="implicit", ssl_context=client_cert_context(certs))
    p = popgate_factory(servers=[("127.0.0.1", f.port)],
                        upstream=upstream_tls(certs, cert=certs.pop_pem, key=certs.pop_key))
    conn = check_relayed_session(p, f)
    subject = dict(x[0] for x in conn.peer_cert["subject"])
    assert subject.get("commonName") == "pop.test", conn.peer_cert
    f2 = fake_upstream(tls="implicit", ssl_context=client_cert_context(certs))
    p2 = popgate_factory(servers=[("127.0.0.1", f2.port)], upstream=upstream_tls(certs))
    assert_upstream_refused(p2, f2)


STLS_OK = [b"+OK Begin TLS negotiation\r\n", STARTTLS]
CAPA_WITH_STLS = [b"TOP", b"UIDL", b"USER", b"STLS", b"SASL PLAIN LOGIN"]


def test_upstream_starttls_works(popgate_factory, fake_upstream, certs):
    # the fake does not advertise STLS: popgate sends it anyway
    f = fake_upstream(certfile=certs.up_pem, keyfile=certs.up_key, on={b"STLS": STLS_OK})
    p = popgate_factory(servers=[("127.0.0.1", f.port)], upstream=upstream_tls(certs, "starttls"))
    conn = check_relayed_session(p, f)
    cmds = conn.commands()
    assert cmds[0] == "STLS", cmds
    assert conn.tls_line == 1, "bytes were sent before the handshake: %r" % cmds
    assert conn.sni == "up.test", conn.sni


STLS_BAD = {
    "err-to-stls": dict(capa=CAPA_WITH_STLS, on={b"STLS": [b"-ERR not now\r\n"]}),
    "no-stls-support": dict(on={}),     # built-in: STLS -> -ERR Unknown command.
    "capa-hidden": dict(on={b"CAPA": [b"-ERR no\r\n"], b"STLS": [b"-ERR no\r\n"]}),
    "injected-capa": dict(capa=CAPA_WITH_STLS,
                          on={b"STLS": [b"+OK Begin TLS\r\n+OK\r\nPLAIN\r\n.\r\n", STARTTLS]}),
    "garbage-after-ok": dict(on={b"STLS": [b"+OK Begin TLS\r\n\x00garbage\xff\r\n", STARTTLS]}),
    "expired-after-stls": dict(cert="up-expired", on={b"STLS": STLS_OK}),
}


@pytest.mark.parametrize("case", list(STLS_BAD))
def test_upstream_starttls_refused(case, popgate_factory, fake_upstream, certs):
    kw = dict(STLS_BAD[case])
    cert, key = certs.pair(kw.pop("cert", "up"))
    f = fake_upstream(certfile=cert, keyfile=key, **kw)
    p = popgate_factory(servers=[("127.0.0.1", f.port)], upstream=upstream_tls(certs, "starttls"))
    assert_upstream_refused(p, f, r"certificate has expired" if case.startswith("expired")
                            else None)
    cmds = f.conns[0].commands()
    assert cmds and cmds[0] == "STLS", cmds


# ---------------------------------------------------------------------------
# a real Dovecot with TLS as the upstream
# ---------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_dovecot_tls_upstream(mode, popgate_factory, dovecot_tls, certs, mailbox, direct):
    port = dovecot_tls.tls_port if mode == "implicit" else dovecot_tls.port
    p = popgate_factory(servers=[("127.0.0.1", port)],
                        listener=tls_listener(certs, "implicit"),
                        upstream=upstream_tls(certs, mode))
    logins_before = [ln for ln in dovecot_tls.log_text().splitlines() if "Login:" in ln]
    c = RawPOP3(p.port, tls_context=ctx_for(certs), server_hostname="pop.test", timeout=60)
    assert c.greeting.startswith(b"+OK Dovecot"), c.greeting
    c.login()
    d = dovecot_tls.connect_tls(implicit=True, timeout=60)
    d.login()
    names = TLS_MESSAGES + (["big_50m"] if mode == "implicit" else [])
    for name in names:
        n = mailbox.number[name]
        got = c.retr(n)
        want = d.retr(n)
        if name == "big_50m":
            assert hashlib.sha256(got[1]).digest() == hashlib.sha256(want[1]).digest(), name
            assert got[0] == want[0]
        else:
            assert got == want, "RETR %d (%s) through popgate differs from Dovecot's" % (n, name)
        assert want == direct[n], name
    for cmd in ("LIST", "UIDL"):
        assert c.multi(cmd) == d.multi(cmd)
    c.quit()
    d.quit()
    end = time.monotonic() + 5
    while time.monotonic() < end:
        logins = [ln for ln in dovecot_tls.log_text().splitlines() if "Login:" in ln]
        if len(logins) >= len(logins_before) + 2:
            break
        time.sleep(0.1)
    new = logins[len(logins_before):]
    assert len(new) == 2, new
    for ln in new:
        assert "user=<alice>" in ln and ", TLS" in ln, "a login without TLS: %s" % ln


# ---------------------------------------------------------------------------
# testssl.sh (security.md 3): no finding MEDIUM or worse
# ---------------------------------------------------------------------------

TESTSSL_CHECKS = ["-p", "-s", "-S", "-P", "-R", "-C", "-H", "-I", "-T", "-BB", "-O", "-Z",
                  "-W", "-A", "-L", "-F", "-J", "-D", "-4"]
BAD_SEVERITIES = ("MEDIUM", "HIGH", "CRITICAL")


@pytest.fixture(scope="module")
def testssl_scans(dovecot, certs, tmp_path_factory):
    """Both scans (implicit and -t pop3) against one dedicated popgate, run
    in parallel. -> {"implicit"|"starttls": (rc, findings, output)}, plus
    "problems": what popgate's shutdown check found."""
    if not os.path.exists(TESTSSL):
        pytest.fail("testssl.sh is not installed (scripts/deps.sh)", pytrace=False)
    d = str(tmp_path_factory.mktemp("testssl"))
    stls_port = free_port()
    p = Popgate(os.path.join(d, "popgate"), [(dovecot.host, dovecot.port)],
                listener=tls_listener(certs, "implicit"),
                extra_sections=[("listener:stls", {
                    "bind": "127.0.0.1:%d" % stls_port, "upstream": "up",
                    **tls_listener(certs, "starttls")})],
                extra_ports=[stls_port])
    p.start()
    procs = {}
    for mode, port, extra in (("implicit", p.port, []), ("starttls", stls_port, ["-t", "pop3"])):
        out = os.path.join(d, mode + ".json")
        cmd = [TESTSSL, "--quiet", "--warnings", "off", "--color", "0", "--add-ca", certs.ca_pem,
               "--connect-timeout", "5", "--openssl-timeout", "10", "--jsonfile", out,
               "--ip", "one"] + extra + TESTSSL_CHECKS + ["127.0.0.1:%d" % port]
        log = open(os.path.join(d, mode + ".out"), "wb")
        procs[mode] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=d,
                                        start_new_session=True), out, log)
    res = {}
    end = time.monotonic() + 150
    for mode, (proc, out, log) in procs.items():
        try:
            rc = proc.wait(max(1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)     # its own session: testssl and its openssl children
            proc.wait(5)
            rc = "timeout"
        log.close()
        try:
            with open(out) as f:
                findings = json.load(f)
        except (OSError, ValueError) as e:
            findings = [{"id": "json", "severity": "FATAL", "finding": "unreadable: %s" % e}]
        with open(os.path.join(d, mode + ".out"), "rb") as f:
            text = f.read().decode("utf-8", "replace")
        res[mode] = (rc, findings, text)
    res["problems"] = p.stop()
    return res


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_testssl(mode, testssl_scans):
    rc, findings, text = testssl_scans[mode]
    assert rc != "timeout", "testssl.sh did not finish within 150 s:\n" + text[-3000:]
    by_id = {f.get("id"): f for f in findings}
    fatal = [f for f in findings if f.get("severity") == "FATAL" or f.get("id") == "scanProblem"]
    assert not fatal, "testssl.sh could not scan: %r\n%s" % (fatal, text[-3000:])
    # the scan really ran: the protocol and vulnerability sections are there
    for pid in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert pid in by_id and "not offered" in by_id[pid]["finding"], (pid, by_id.get(pid))
    for pid in ("TLS1_2", "TLS1_3"):
        assert pid in by_id and by_id[pid]["finding"].startswith("offered"), (pid, by_id.get(pid))
    for pid in ("secure_client_renego", "CRIME_TLS", "heartbleed", "ROBOT"):
        assert pid in by_id, "%s missing from the scan" % pid
    bad = ["%s %s: %s" % (f.get("severity"), f.get("id"), f.get("finding"))
           for f in findings if f.get("severity") in BAD_SEVERITIES]
    assert not bad, "testssl.sh (%s) findings of severity MEDIUM or worse:\n  %s" % (
        mode, "\n  ".join(bad))
    assert not testssl_scans["problems"], "\n".join(testssl_scans["problems"])
