"""The filter chain (issue 4): clamav in-process, clamd, command, header.

Signatures, infected mail and the Dovecot user "virus" come from the `av`
fixture (conftest.AvEnv, malware.py): real libclamav verdicts on real
ClamAV test files, checked against clamscan with the same limits. Every
clean message is judged against what Dovecot sends directly; every infected
one against the notice contract of DESIGN.md; every error path against
on_error (tempfail leaves the message on Dovecot, pass tags it).
"""

import datetime
import email
import email.policy
import hashlib
import os
import poplib
import random
import re
import shutil
import signal
import stat
import subprocess
import threading
import time

import pytest

import malware
from conftest import stream_retr
from pop3util import (RawPOP3, RssSampler, close_lines_for, parse_log_line,
                      unescape_log_value, unstuff)
from test_clients import mpop_fetch

SYS_TEMP = b"-ERR [SYS/TEMP]"
SYS_PERM = b"-ERR [SYS/PERM]"
TOP_ALL = 999999


@pytest.fixture(autouse=True)
def _big_lines():
    old = poplib._MAXLINE
    poplib._MAXLINE = 1 << 20
    yield
    poplib._MAXLINE = old


# ---------------------------------------------------------------------------
# configuration helpers
# ---------------------------------------------------------------------------

def clamav(av, **kw):
    d = {"type": "clamav", "database": av.db}
    d.update(kw)
    return d


def header(*lines):
    return {"type": "header", "add": list(lines)}


def command(cmd, **kw):
    d = {"type": "command", "command": cmd}
    d.update(kw)
    return d


def clamd_filter(sock, **kw):
    d = {"type": "clamd", "socket": sock}
    d.update(kw)
    return d


@pytest.fixture
def start_pg(popgate_factory, tmp_path):
    """start_pg({"av": {...filter keys...}, ...}, popgate={}, listener={},
    env={}) -> a started Popgate whose listener runs the given filters in
    that order. Each gets .spool (spool_dir) and .quarantine (a directory
    that "quarantine_dir": QDIR values are replaced with)."""
    count = [0]
    immutable = []

    def start(filters, popgate=None, listener=None, env=None, start=True):
        count[0] += 1
        spool = str(tmp_path / ("spool%d" % count[0]))
        quarantine = str(tmp_path / ("quarantine%d" % count[0]))
        os.makedirs(spool)
        os.makedirs(quarantine)
        pg = {"spool_dir": spool}
        pg.update(popgate or {})
        li = {"filters": ", ".join(filters)}
        li.update(listener or {})
        sections = []
        for name, keys in filters.items():
            keys = dict(keys)
            if keys.get("quarantine_dir") == "QDIR":
                keys["quarantine_dir"] = quarantine
            sections.append(("filter:" + name, keys))
        p = popgate_factory(popgate=pg, listener=li, extra_sections=sections, env=env,
                            start=start)
        p.spool, p.quarantine = spool, quarantine
        p.make_immutable = lambda: (immutable.append(spool), make_immutable(spool))
        return p

    yield start
    for d in immutable:
        subprocess.run(["chattr", "-R", "-i", d], capture_output=True)


def make_immutable(path):
    """Nobody may create files under path, root included (chmod alone does
    not stop root: CAP_DAC_OVERRIDE)."""
    for root, dirs, _ in os.walk(path):
        for x in [root] + [os.path.join(root, d) for d in dirs]:
            os.chmod(x, 0o500)
    r = subprocess.run(["chattr", "-R", "+i", path], capture_output=True, text=True)
    assert r.returncode == 0, "chattr +i: %s" % r.stderr
    try:
        fd = os.open(path, os.O_TMPFILE | os.O_RDWR, 0o600)
    except OSError:
        return
    os.close(fd)
    pytest.fail("could not make %s unwritable for root" % path)


# ---------------------------------------------------------------------------
# what a client sees
# ---------------------------------------------------------------------------

def norm(v):
    return " ".join(str(v).split()) if v is not None else None


def octets(status):
    m = re.match(rb"\+OK (\d+) octets", status)
    return int(m.group(1)) if m else None


def assert_new_size(st, dst, added, delivered, what):
    """A filter that put `added` bytes on top must announce the new size:
    Dovecot's count plus `added`, or the exact length of what it delivers
    (`delivered`, un-stuffed; the two differ by the CRLF Dovecot adds to a
    message without a final line end, which its count leaves out)."""
    n, d = octets(st), octets(dst)
    assert d is not None, "Dovecot's status %r has no size" % dst
    ok = {d + added} | ({delivered} if delivered is not None else set())
    assert n in ok, "%s: %r, expected %s octets (Dovecot %r, %d bytes added)" % (
        what, st, " or ".join(map(str, sorted(ok))), dst, added)


def assert_crlf(raw, what):
    assert raw.count(b"\n") == raw.count(b"\r\n"), "%s has bare LF line ends" % what


def text_of(msg):
    """The text of every text/* part of a parsed message."""
    out = []
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            out.append(part.get_content())
    return "\n".join(out)


def check_notice(av, n, st, block, virus, what):
    """The replace notice for message n (RFC 5322 per Python's parser, the
    original's From/To/Date/Message-ID, "[virus removed] " + its Subject,
    X-Virus-Status: infected; NAME, the name in the body). Returns
    (parsed notice, its text)."""
    assert st.startswith(b"+OK") and block is not None, \
        "%s: expected the notice, got %r" % (what, st)
    raw = unstuff(block)
    assert raw != av.original(n), "%s: the infected original was delivered" % what
    assert_crlf(raw, what)
    if octets(st) is not None:
        assert octets(st) == len(raw), "%s: %r but the notice has %d octets" % (
            what, st, len(raw))
    m = email.message_from_bytes(raw, policy=email.policy.default)
    defects = [(p.get_content_type(), d) for p in m.walk() for d in p.defects]
    assert not defects, "%s: the notice parses with defects %r" % (what, defects)
    orig = email.message_from_bytes(av.original(n), policy=email.policy.compat32)
    for h in ("From", "To", "Date", "Message-ID"):
        if orig[h] is not None:
            assert norm(m[h]) == norm(orig[h]), "%s: %s %r, original %r" % (
                what, h, m[h], orig[h])
    assert m["From"] and m["Date"], "%s: the notice lacks From or Date" % what
    assert norm(m["Subject"]) == "[virus removed] " + norm(orig["Subject"]), \
        "%s: Subject %r (original %r)" % (what, m["Subject"], orig["Subject"])
    assert len(m.get_all("X-Virus-Status") or []) == 1, what
    assert norm(m["X-Virus-Status"]) == "infected; " + virus, \
        "%s: X-Virus-Status %r, clamscan says %s" % (what, m["X-Virus-Status"], virus)
    text = text_of(m)
    assert virus in text, "%s: the notice body does not name %s:\n%s" % (what, virus, text)
    return m, text


def quarantine_files(qdir):
    """{file name: path} of the quarantine copies (qdir/YYYYMMDD/ID.eml)."""
    out = {}
    for root, _, files in os.walk(qdir):
        for f in files:
            out[f] = os.path.join(root, f)
    return out


def check_quarantine(qdir, before, original, text, what):
    """Exactly one new copy since `before`, named YYYYMMDD/ID.eml, equal to
    the original; the notice text names ID. Returns ID."""
    now = quarantine_files(qdir)
    new = sorted(set(now) - set(before))
    assert len(new) == 1, "%s: new quarantine files %r (expected one)" % (what, new)
    path = now[new[0]]
    rel = os.path.relpath(path, qdir)
    m = re.match(r"^(\d{8})/(.+)\.eml$", rel)
    assert m, "%s: quarantine file %s is not YYYYMMDD/ID.eml" % (what, rel)
    day = datetime.datetime.strptime(m.group(1), "%Y%m%d").date()
    assert abs((day - datetime.date.today()).days) <= 1, rel
    with open(path, "rb") as f:
        copy = f.read()
    assert copy == original, "%s: quarantine copy (%d bytes) differs from the original " \
        "(%d bytes)" % (what, len(copy), len(original))
    qid = m.group(2)
    if text is not None:
        assert qid in text, "%s: the notice does not name quarantine id %s" % (what, qid)
    return qid


def log_mark(p):
    return len(p.log_bytes())


def verdict_lines(p, since=0):
    text = p.log_bytes()[since:].decode("utf-8", "replace")
    return [parse_log_line(ln) for ln in text.splitlines() if re.search(r"\bev=verdict\b", ln)]


def wait_verdicts(p, since, count, timeout=10.0):
    end = time.monotonic() + timeout
    while True:
        v = verdict_lines(p, since)
        if len(v) >= count or time.monotonic() > end:
            return v
        time.sleep(0.05)


def check_verdict_line(d, filt, verdict, msg, virus=None, quarantine=None):
    """filt: the filter's name, or a tuple of acceptable values ("-" where
    the message never reached a filter: too big, spool failed)."""
    got = {k: unescape_log_value(d.get(k, "")) for k in
           ("filter", "verdict", "msg", "virus", "quarantine")}
    assert d.get("sid"), d
    filts = filt if isinstance(filt, tuple) else (filt,)
    assert got["filter"] in filts and got["verdict"] == verdict and got["msg"] == str(msg), \
        "verdict line %r, expected filter=%s verdict=%s msg=%d" % (d, filt, verdict, msg)
    if virus is not None:
        assert got["virus"] == virus, "verdict line %r: virus, expected %s" % (d, virus)
    if quarantine is not None:
        assert got["quarantine"] == quarantine, "verdict line %r: quarantine %s" % (d, quarantine)


def virus_session(p, av, **kw):
    c = p.connect(**kw)
    c.login(av.user, av.password)
    return c


def spool_leftovers(p):
    """Regular files under spool_dir, and popgate's open fds on files there
    (an O_TMPFILE or unlinked file shows as "SPOOL/#N (deleted)")."""
    files = []
    for root, _, fs in os.walk(p.spool):
        files += [os.path.join(root, f) for f in fs]
    fds = []
    fd_dir = "/proc/%d/fd" % p.pid
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
            st = os.stat(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith(p.spool + "/") and stat.S_ISREG(st.st_mode):
            fds.append("%s -> %s" % (fd, target))
    return files, fds


def wait_no_spool_leftovers(p, timeout=5.0):
    end = time.monotonic() + timeout
    while True:
        files, fds = spool_leftovers(p)
        if not (files or fds) or time.monotonic() > end:
            return files, fds
        time.sleep(0.1)


class HeadSplit:
    """A stream_retr sink: keeps the first line of the block, hashes the
    rest (the raw block after an added header line)."""

    def __init__(self):
        self.head = bytearray()
        self.rest = hashlib.sha256()
        self.done = False

    def __call__(self, chunk):
        if not self.done:
            self.head += chunk
            i = self.head.find(b"\r\n")
            if i < 0:
                return
            self.rest.update(bytes(self.head[i + 2:]))
            del self.head[i + 2:]
            self.done = True
        else:
            self.rest.update(chunk)


# ---------------------------------------------------------------------------
# the fixtures themselves
# ---------------------------------------------------------------------------

def test_samples_detected_and_served(av):
    """clamscan (same limits as popgate's defaults) detects every sample
    that the other tests use, and Dovecot serves them."""
    print("infected samples:", {n: av.virus[n] for n in av.infected})
    print("left out (clamscan does not detect them):", av.skipped)
    for must in ("clam_mail", "att_zip", "att_exe", "eicar_body"):
        assert must in av.infected, must
    assert av.virus["eicar_body"].startswith("Eicar-Test-Signature")
    assert av.virus["att_zip"].startswith("clam.exe")
    assert av.bomb_alert.startswith("Heuristics.Limits.Exceeded.")
    c = av.session()
    assert c.stat()[0] == len(av.names)
    c.quit()


# ---------------------------------------------------------------------------
# clamav: infected caught, clean byte-exact
# ---------------------------------------------------------------------------

def test_clamav_catches_every_infected_sample_retr_and_top(start_pg, av):
    p = start_pg({"av": clamav(av, quarantine_dir="QDIR")})
    d = av.session()
    direct_top = {}
    for name in av.infected:
        n = av.number[name]
        direct_top[n] = d.multi("TOP %d %d" % (n, TOP_ALL))
    d.quit()
    c = virus_session(p, av)
    port = c.local_port
    mark = log_mark(p)
    expected = []
    for name in av.infected:
        n = av.number[name]
        for cmd, original in (("RETR %d" % n, av.original(n)),
                              ("TOP %d %d" % (n, TOP_ALL), unstuff(direct_top[n][1]))):
            before = quarantine_files(p.quarantine)
            st, block = c.multi(cmd)
            what = "%s (%s)" % (cmd, name)
            m, text = check_notice(av, n, st, block, av.virus[name], what)
            qid = check_quarantine(p.quarantine, before, original, text, what)
            expected.append((n, av.virus[name], qid))
    # clean messages in the same session: exact, status line included
    for name in av.clean:
        n = av.number[name]
        st, block = c.multi("RETR %d" % n)
        assert (st, block) == av.direct[n], "RETR %d (%s) is not what Dovecot sends" % (n, name)
        assert c.multi("TOP %d 0" % n)[1] is not None
    assert c.quit().startswith(b"+OK")
    lines = wait_verdicts(p, mark, len(expected))
    assert len(lines) == len(expected), \
        "%d ev=verdict lines for %d infected fetches (none for clean ones):\n%s" % (
            len(lines), len(expected), "\n".join(map(str, lines)))
    for d_, (n, virus, qid) in zip(lines, expected):
        check_verdict_line(d_, "av", "replace", n, virus=virus, quarantine=qid)
    # the session's close line counts its verdicts
    end = time.monotonic() + 5
    while not close_lines_for(p.log_text(), port) and time.monotonic() < end:
        time.sleep(0.05)
    close = close_lines_for(p.log_text(), port)
    assert len(close) == 1, close
    counts = parse_log_line(close[0]).get("verdicts", "")
    assert counts and sum(map(int, re.findall(r"\d+", counts))) == len(expected), \
        "close line verdicts=%r for %d replaced messages: %s" % (counts, len(expected), close[0])


def test_clamav_clean_corpus_is_byte_exact(start_pg, av, direct, mailbox):
    """Every corpus message (the 50 MiB one too: limits raised above it)
    arrives exactly as from Dovecot, status line verbatim."""
    # max_scan_size counts what libclamav extracts too (the body of the
    # 50 MiB message once more)
    p = start_pg({"av": clamav(av, quarantine_dir="QDIR", max_file_size="64M",
                               max_scan_size="256M")})
    mark = log_mark(p)
    c = p.session(timeout=120)
    for n in range(1, len(mailbox.names) + 1):
        st, block = c.multi("RETR %d" % n)
        if (st, block) != direct[n]:
            pytest.fail("RETR %d (%s) through clamav: %r, %d bytes; Dovecot: %r, %d bytes" % (
                n, mailbox.names[n - 1], st, len(block or b""), direct[n][0], len(direct[n][1])))
    for name in ("dots", "no_final_newline", "msg_07"):
        n = mailbox.number[name]
        dc = mailbox.connect()
        dc.login()
        want = dc.multi("TOP %d %d" % (n, TOP_ALL))
        dc.quit()
        assert c.multi("TOP %d %d" % (n, TOP_ALL)) == want, "TOP %d %d (%s)" % (n, TOP_ALL, name)
    assert c.quit().startswith(b"+OK")
    assert verdict_lines(p, mark) == [], "ev=verdict lines for clean mail"
    assert quarantine_files(p.quarantine) == {}
    files, fds = wait_no_spool_leftovers(p)
    assert not files and not fds, "spool leftovers %r %r" % (files, fds)


def test_mpop_through_clamav(start_pg, av, tmp_path):
    """A real client: clean mail as mpop gets it from Dovecot directly,
    infected mail as the notice."""
    names = ["msg_01", "att_zip", "dots", "eicar_body", "eight_bit", "clam_mail",
             "no_final_newline"]
    names = [n for n in names if n in av.clean or n in av.infected]
    user, pw = av.make_user(names)
    p = start_pg({"av": clamav(av, quarantine_dir="QDIR")})
    rd, direct_msgs = mpop_fetch(av.dovecot.port, str(tmp_path / "direct"), user, pw)
    assert rd.returncode == 0, rd.stderr
    rp, msgs = mpop_fetch(p.port, str(tmp_path / "proxy"), user, pw)
    assert rp.returncode == 0, "mpop through popgate: rc=%d %s" % (rp.returncode, rp.stderr[-2000:])
    assert len(msgs) == len(names) == len(direct_msgs)
    for i, name in enumerate(names):
        if name in av.clean:
            assert msgs[i] == direct_msgs[i], "mpop: clean %s differs from direct" % name
        else:
            assert msgs[i] != direct_msgs[i]
            m = email.message_from_bytes(msgs[i], policy=email.policy.default)
            assert not m.defects
            assert norm(m["X-Virus-Status"]) == "infected; " + av.virus[name], (name, m["X-Virus-Status"])
            assert norm(m["Subject"]).startswith("[virus removed] "), m["Subject"]
    assert len(quarantine_files(p.quarantine)) == sum(1 for n in names if n in av.infected)


# ---------------------------------------------------------------------------
# on_virus
# ---------------------------------------------------------------------------

def test_replace_then_dele_keeps_quarantine_copy(start_pg, av, dovecot):
    """poplib: notice, quarantine copy written before the notice arrives,
    DELE + QUIT removes the message from Dovecot only."""
    names = [n for n in av.infected] + ["msg_02"]
    user, pw = av.make_user(names)
    p = start_pg({"av": clamav(av, quarantine_dir="QDIR", on_virus="replace")})
    mark = log_mark(p)
    cl = poplib.POP3("127.0.0.1", p.port, timeout=60)
    cl.user(user)
    cl.pass_(pw)
    copies = {}
    for i, name in enumerate(names[:-1], 1):
        before = quarantine_files(p.quarantine)
        resp, lines, size = cl.retr(i)
        # poplib took the stuffing dots off; check_notice wants the wire form
        block = b"".join((b"." + x if x.startswith(b".") else x) + b"\r\n"
                         for x in lines) + b".\r\n"
        m, text = check_notice(av, av.number[name], resp, block, av.virus[name],
                               "poplib RETR %s" % name)
        # nothing waited for: the copy must be there when the notice is
        qid = check_quarantine(p.quarantine, before, av.original(av.number[name]), text, name)
        copies[qid] = av.original(av.number[name])
        assert cl.dele(i).startswith(b"+OK")
    assert cl.quit().startswith(b"+OK")
    dovecot.wait_user_disconnected(user, 2)
    d = dovecot.session(user, pw)
    n, _ = d.stat()
    assert n == 1, "Dovecot still has %d messages after DELE of %d notices" % (n, len(names) - 1)
    assert d.retr(1) == av.direct[av.number["msg_02"]]
    d.quit()
    q = quarantine_files(p.quarantine)
    for qid, original in copies.items():
        with open(q[qid + ".eml"], "rb") as f:
            assert f.read() == original, "quarantine copy %s changed after DELE" % qid
    lines = wait_verdicts(p, mark, len(copies))
    assert sorted(unescape_log_value(x.get("quarantine", "")) for x in lines) == sorted(copies)


def test_on_virus_tag(start_pg, av):
    p = start_pg({"av": clamav(av, on_virus="tag")})
    c = virus_session(p, av)
    mark = log_mark(p)
    for name in av.infected:
        n = av.number[name]
        hdr = b"X-Virus-Status: infected; " + av.virus[name].encode() + b"\r\n"
        st, block = c.multi("RETR %d" % n)
        dst, dblock = av.direct[n]
        assert block == hdr + dblock, "tag %s: expected the header line on top of the " \
            "original, got %r..." % (name, (block or b"")[:200])
        assert_new_size(st, dst, len(hdr), len(unstuff(block)), "tag " + name)
        st, block = c.multi("TOP %d %d" % (n, TOP_ALL))
        assert block == hdr + dblock, "tag via TOP: %s" % name
    n = av.number["msg_01"]
    assert c.multi("RETR %d" % n) == av.direct[n]
    assert c.quit().startswith(b"+OK")
    lines = wait_verdicts(p, mark, 2 * len(av.infected))
    assert len(lines) == 2 * len(av.infected)
    for d_, name in zip(lines, [x for x in av.infected for _ in (0, 1)]):
        check_verdict_line(d_, "av", "tag", av.number[name], virus=av.virus[name])


def test_on_virus_reject(start_pg, av):
    p = start_pg({"av": clamav(av, on_virus="reject", quarantine_dir="QDIR")})
    c = virus_session(p, av)
    mark = log_mark(p)
    for name in av.infected:
        n = av.number[name]
        st = c.cmd("RETR %d" % n)
        assert st.startswith(SYS_PERM), "reject %s: %r" % (name, st)
        assert c.cmd("NOOP") == b"+OK\r\n", "NOOP after a rejected RETR"
        st = c.cmd("TOP %d %d" % (n, TOP_ALL))
        assert st.startswith(SYS_PERM), "reject TOP %s: %r" % (name, st)
    n = av.number["dots"]
    assert c.multi("RETR %d" % n) == av.direct[n], "clean RETR after rejections"
    assert c.cmd("NOOP") == b"+OK\r\n"
    assert c.quit().startswith(b"+OK")
    lines = wait_verdicts(p, mark, 2 * len(av.infected))
    assert len(lines) == 2 * len(av.infected)
    for d_, name in zip(lines, [x for x in av.infected for _ in (0, 1)]):
        check_verdict_line(d_, "av", "reject", av.number[name], virus=av.virus[name])


# ---------------------------------------------------------------------------
# on_error
# ---------------------------------------------------------------------------

def _cause_timeout(av, pol):
    # the 100 MiB text message, limits raised above it: a full scan takes
    # libclamav seconds; 1s is the smallest scan_timeout
    return {"av": clamav(av, on_error=pol, scan_timeout="1s", max_file_size="200M",
                         max_scan_size="512M")}, {}, "big100", ("time",)


def _cause_bomb(av, pol):
    return {"av": clamav(av, on_error=pol)}, {}, "zip_bomb", ("limit", "recursion")


def _cause_too_big(av, pol):
    return {"av": clamav(av, on_error=pol)}, \
        {"memory_per_message": "4K", "max_message_size": "64K"}, "long_line", \
        ("size", "big", "large", "max_message")


def _cause_spool(av, pol):
    return {"av": clamav(av, on_error=pol)}, {"memory_per_message": "4K"}, "long_line", ()


def _cause_command_exit(av, pol):
    return {"cmd": command("/bin/false", on_error=pol)}, {}, "msg_07", ("exit", "status", "1")


def _cause_command_hang(av, pol):
    return {"cmd": command("/bin/sleep 30", on_error=pol, scan_timeout="1s")}, {}, "msg_07", \
        ("time",)


CAUSES = {"scan_timeout": _cause_timeout, "zip_bomb": _cause_bomb,
          "max_message_size": _cause_too_big, "spool_unwritable": _cause_spool,
          "command_exit_1": _cause_command_exit, "command_hang": _cause_command_hang}


def children(pid, comm=None):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                s = f.read()
        except OSError:
            continue
        name = s[s.index("(") + 1:s.rindex(")")]
        ppid = int(s[s.rindex(")") + 2:].split()[1])
        if ppid == pid and (comm is None or name == comm):
            out.append(int(d))
    return out


def check_tempfail(p, av, dovecot, target, filt, since, companions=True):
    """A session on a fresh user [msg_01, target, dots] (or [target] when
    the cause fails every message): RETR and TOP of the target ->
    -ERR [SYS/TEMP]; the others are delivered and DELEd; after QUIT Dovecot
    holds exactly the target, unchanged."""
    others = [(1, "msg_01"), (3, "dots")] if companions else []
    t = 2 if companions else 1
    user, pw = av.make_user(["msg_01", target, "dots"] if companions else [target])
    c = p.connect(timeout=120)
    c.login(user, pw)
    st = c.cmd("RETR %d" % t)
    assert st.startswith(SYS_TEMP), "on_error=tempfail, %s: RETR answered %r" % (target, st)
    assert c.cmd("NOOP") == b"+OK\r\n"
    for n, name in others:
        assert c.multi("RETR %d" % n) == av.direct[av.number[name]], name
        assert c.cmd("DELE %d" % n).startswith(b"+OK")
    st = c.cmd("TOP %d %d" % (t, TOP_ALL))
    assert st.startswith(SYS_TEMP), "TOP after tempfail: %r" % st
    assert c.quit().startswith(b"+OK")
    dovecot.wait_user_disconnected(user, 2)
    d = dovecot.session(user, pw)
    assert d.stat()[0] == 1, "Dovecot should hold only the tempfailed message"
    st, sha, _ = stream_retr(d, "RETR 1")
    assert (st, sha) == av.expected(target), "the tempfailed message changed on Dovecot"
    d.quit()
    lines = wait_verdicts(p, since, 2)
    assert len(lines) == 2, lines
    for x in lines:
        check_verdict_line(x, filt, "tempfail", t)


def check_pass(p, av, target, filt, since, words):
    """RETR target -> "X-Virus-Status: unscanned; REASON" on top of what
    Dovecot sends, "+OK n octets" grown by that line. Returns REASON."""
    if target in ("big100", "big200"):
        c = p.connect(timeout=120)
        c.login(av.big_user, av.big_password)
        n = 2 if target == "big100" else 1
    else:
        c = virus_session(p, av, timeout=120)
        n = av.number[target]
    split = HeadSplit()
    st, _, _ = stream_retr(c, "RETR %d" % n, sink=split)
    head = bytes(split.head)
    assert st.startswith(b"+OK"), "on_error=pass, %s: %r" % (target, st)
    m = re.match(rb"X-Virus-Status: unscanned; ([\x20-\x7e]+)\r\n$", head)
    assert m, "on_error=pass, %s: no X-Virus-Status: unscanned line on top: %r" % (
        target, head[:200])
    reason = m.group(1).decode()
    dst, dsha = av.expected(target)
    assert split.rest.hexdigest() == dsha, "on_error=pass, %s: the message after the tag " \
        "is not Dovecot's" % target
    delivered = None if target in ("big100", "big200") else len(head) + len(av.original(n))
    assert_new_size(st, dst, len(head), delivered, "on_error=pass, " + target)
    print("on_error=pass, %s: X-Virus-Status: unscanned; %s" % (target, reason))
    if words:
        assert any(w in reason.lower() for w in words), \
            "unscanned reason %r names none of %r" % (reason, words)
    assert c.cmd("NOOP") == b"+OK\r\n"
    assert c.quit().startswith(b"+OK")
    lines = wait_verdicts(p, since, 1)
    assert len(lines) == 1, lines
    check_verdict_line(lines[0], filt, "unscanned", n)
    return reason


@pytest.mark.parametrize("policy", ["tempfail", "pass"])
@pytest.mark.parametrize("cause", list(CAUSES))
def test_on_error(cause, policy, start_pg, av, dovecot):
    filters, pg, target, words = CAUSES[cause](av, policy)
    p = start_pg(filters, popgate=pg)
    filt = list(filters)[0]
    if cause in ("max_message_size", "spool_unwritable"):
        # refused before the chain runs: no filter decided
        filt = (filt, "-")
    if cause == "spool_unwritable":
        p.make_immutable()
    mark = log_mark(p)
    t0 = time.monotonic()
    if policy == "tempfail":
        # with these causes every message fails, not only the target
        every = cause in ("spool_unwritable", "command_exit_1", "command_hang")
        check_tempfail(p, av, dovecot, target, filt, mark, companions=not every)
    else:
        check_pass(p, av, target, filt, mark, words)
    took = time.monotonic() - t0
    if cause == "command_hang":
        assert took < 15, "a 1s command timeout took %.1f s" % took
        end = time.monotonic() + 5
        while children(p.pid, "sleep") and time.monotonic() < end:
            time.sleep(0.1)
        assert not children(p.pid, "sleep"), "the timed-out command is still running"
    files, fds = wait_no_spool_leftovers(p)
    assert not files and not fds, "spool leftovers %r %r" % (files, fds)
    assert p.alive()


@pytest.mark.parametrize("policy", ["tempfail", "pass"])
def test_mpop_on_error(policy, start_pg, av, dovecot, tmp_path):
    """A real client, --keep=off: with tempfail mpop reports the error and
    the bomb stays on Dovecot; with pass it gets the tagged message and
    deletes everything."""
    names = ["msg_01", "zip_bomb", "dots"]
    user, pw = av.make_user(names)
    p = start_pg({"av": clamav(av, on_error=policy)})
    md = tmp_path / "mpop"
    for sub in ("new", "cur", "tmp"):
        (md / "maildir" / sub).mkdir(parents=True)
    r = subprocess.run(
        ["/usr/bin/mpop", "--quiet", "--host=127.0.0.1", "--port=%d" % p.port, "--tls=off",
         "--auth=user", "--user=" + user, "--passwordeval=echo " + pw, "--keep=off",
         "--only-new=off", "--received-header=off", "--timeout=60",
         "--delivery=maildir," + str(md / "maildir"), "--uidls-file=" + str(md / "uidls")],
        capture_output=True, timeout=120, env=dict(os.environ, HOME=str(md)))
    dovecot.wait_user_disconnected(user, 2)
    d = dovecot.session(user, pw)
    left = d.stat()[0]
    blocks = [d.retr(n)[1] for n in range(1, left + 1)]
    d.quit()
    delivered = []
    for f in sorted((md / "maildir" / "new").glob("*")):
        delivered.append(f.read_bytes())
    bomb = av.direct[av.number["zip_bomb"]][1]
    if policy == "tempfail":
        assert r.returncode != 0 and b"SYS/TEMP" in r.stderr, (r.returncode, r.stderr)
        assert bomb in blocks, "the tempfailed message is gone from Dovecot"
        assert not any(b"nested.zip" in x for x in delivered), "mpop got the bomb"
    else:
        assert r.returncode == 0, r.stderr
        assert left == 0, "%d messages left on Dovecot" % left
        tagged = [x for x in delivered if x.startswith(b"X-Virus-Status: unscanned; ")]
        assert len(tagged) == 1 and b"nested.zip" in tagged[0], [x[:80] for x in delivered]
        assert len(delivered) == 3


def test_clamd_filter_and_clamd_stopped(start_pg, av, clamd_factory, dovecot):
    """clamd (INSTREAM): the same verdicts; limits alerts are errors; clamd
    stopped mid-test is an error (tempfail), and it works again when clamd
    is back."""
    cd = clamd_factory()
    p = start_pg({"cd": clamd_filter(cd.socket, quarantine_dir="QDIR", on_error="tempfail")})
    c = virus_session(p, av)
    mark = log_mark(p)
    infected = [n for n in ("clam_mail", "att_zip", "att_7z", "eicar_body", "tnef")
                if n in av.infected]
    for name in infected:
        n = av.number[name]
        before = quarantine_files(p.quarantine)
        st, block = c.multi("RETR %d" % n)
        m, text = check_notice(av, n, st, block, av.virus[name], "clamd RETR %s" % name)
        check_quarantine(p.quarantine, before, av.original(n), text, "clamd " + name)
    for name in ("msg_01", "dots", "long_line", "eight_bit"):
        n = av.number[name]
        assert c.multi("RETR %d" % n) == av.direct[n], "clamd: clean %s" % name
    st = c.cmd("RETR %d" % av.number["zip_bomb"])
    assert st.startswith(SYS_TEMP), "clamd: the zip bomb (clamd says %s) answered %r" % (
        av.bomb_alert, st)
    lines = wait_verdicts(p, mark, len(infected) + 1)
    assert [x.get("verdict") for x in lines] == ["replace"] * len(infected) + ["tempfail"], lines
    # clamd goes away in the middle of the session
    cd.stop()
    for name in ("att_zip", "msg_01"):
        st = c.cmd("RETR %d" % av.number[name])
        assert st.startswith(SYS_TEMP), "clamd stopped, RETR %s answered %r" % (name, st)
    assert c.cmd("NOOP") == b"+OK\r\n"
    c.quit()
    # pass with clamd down: tagged, delivered
    p2 = start_pg({"cd": clamd_filter(cd.socket, on_error="pass")})
    mark2 = log_mark(p2)
    check_pass(p2, av, "msg_01", "cd", mark2, ())
    user, pw = av.make_user(["att_zip"])
    # tempfail with clamd down leaves the message on Dovecot
    c = p.connect()
    c.login(user, pw)
    assert c.cmd("RETR 1").startswith(SYS_TEMP)
    assert c.quit().startswith(b"+OK")
    d = dovecot.session(user, pw)
    assert d.stat()[0] == 1 and d.retr(1) == av.direct[av.number["att_zip"]]
    d.quit()
    # clamd back: scanning again
    cd.start()
    c = virus_session(p, av)
    n = av.number["att_zip"]
    check_notice(av, n, *c.multi("RETR %d" % n), av.virus["att_zip"], "clamd restarted")
    c.quit()


# ---------------------------------------------------------------------------
# header and command filters
# ---------------------------------------------------------------------------

HDR_MESSAGES = ["msg_01", "dots", "dot_first_body_line", "no_final_newline",
                "ends_with_dot_no_newline", "empty_body", "headers_only", "eight_bit",
                "long_line", "crlf_stored"]


def test_header_filter(start_pg, av):
    p = start_pg({"tag": header("X-Scanned-By: popgate", "X-Filter-Test: two words")})
    hdr = b"X-Scanned-By: popgate\r\nX-Filter-Test: two words\r\n"
    c = virus_session(p, av)
    mark = log_mark(p)
    for name in HDR_MESSAGES + ["att_zip"]:
        n = av.number[name]
        st, block = c.multi("RETR %d" % n)
        dst, dblock = av.direct[n]
        assert block == hdr + dblock, "header filter, %s: %r..." % (name, (block or b"")[:120])
        assert_new_size(st, dst, len(hdr), len(unstuff(block)), "header filter, " + name)
    d = av.session()
    for name in ("dots", "msg_07"):
        n = av.number[name]
        for lines in (0, 3, TOP_ALL):
            dst, dblock = d.multi("TOP %d %d" % (n, lines))
            st, block = c.multi("TOP %d %d" % (n, lines))
            assert block == hdr + dblock, "header filter, TOP %d %d" % (n, lines)
    d.quit()
    assert c.quit().startswith(b"+OK")
    assert verdict_lines(p, mark) == [], "a header filter's pass is not a verdict line"


def test_chain_clamav_then_header(start_pg, av):
    p = start_pg({"av": clamav(av, quarantine_dir="QDIR"),
                  "tag": header("X-Scanned-By: popgate")})
    hdr = b"X-Scanned-By: popgate\r\n"
    c = virus_session(p, av)
    for name in ("msg_01", "dots", "no_final_newline"):
        n = av.number[name]
        st, block = c.multi("RETR %d" % n)
        assert block == hdr + av.direct[n][1], "av, tag chain: clean %s" % name
        assert_new_size(st, av.direct[n][0], len(hdr), len(unstuff(block)), "av, tag: " + name)
    for name in ("att_zip", "eicar_body"):
        n = av.number[name]
        st, block = c.multi("RETR %d" % n)
        assert block.startswith(hdr), "av, tag chain: the notice for %s lacks the header " \
            "on top: %r" % (name, block[:200])
        m = email.message_from_bytes(unstuff(block), policy=email.policy.default)
        assert not m.defects
        assert norm(m["X-Virus-Status"]) == "infected; " + av.virus[name]
        assert norm(m["X-Scanned-By"]) == "popgate"
        assert norm(m["Subject"]).startswith("[virus removed] ")
        if octets(st) is not None:
            assert octets(st) == len(unstuff(block))
    c.quit()


CMD_MESSAGES = ["msg_01", "msg_07", "dots", "dot_first_body_line", "no_final_newline",
                "ends_with_dot_no_newline", "empty_body", "eight_bit", "control_bytes",
                "long_line", "many_short_lines", "crlf_stored"]


def test_command_filter_cat_and_script(start_pg, av, tmp_path):
    script = tmp_path / "addhdr.sh"
    script.write_text("#!/bin/sh\nprintf 'X-Script-Filter: yes\\r\\n'\nexec /bin/cat\n")
    script.chmod(0o755)
    p = start_pg({"cat": command("/bin/cat")})
    c = virus_session(p, av)
    for name in CMD_MESSAGES:
        n = av.number[name]
        assert c.multi("RETR %d" % n) == av.direct[n], "command /bin/cat: %s" % name
    c.quit()
    p2 = start_pg({"script": command(str(script))})
    hdr = b"X-Script-Filter: yes\r\n"
    c = virus_session(p2, av)
    for name in CMD_MESSAGES:
        n = av.number[name]
        st, block = c.multi("RETR %d" % n)
        assert block == hdr + av.direct[n][1], "command script: %s: %r" % (name, (block or b"")[:100])
        assert_new_size(st, av.direct[n][0], len(hdr), len(unstuff(block)), "script: " + name)
    c.quit()
    for q in (p, p2):
        files, fds = wait_no_spool_leftovers(q)
        assert not files and not fds, (files, fds)


# ---------------------------------------------------------------------------
# reload
# ---------------------------------------------------------------------------

def fetch_check(c, av, n, name):
    """One RETR checked: infected -> the notice, clean -> exact. Returns an
    error string or None."""
    try:
        st, block = c.multi("RETR %d" % n)
    except Exception as e:          # noqa: BLE001 (reported as a failure)
        return "RETR %d (%s): %r" % (n, name, e)
    if name in av.infected:
        if not st.startswith(b"+OK") or block is None:
            return "RETR %d (%s): %r" % (n, name, st)
        head = unstuff(block).split(b"\r\n\r\n", 1)[0]
        want = b"X-Virus-Status: infected; " + av.virus[name].encode()
        if want not in head:
            return "RETR %d (%s): no %r in the headers: %r" % (n, name, want, head[:300])
    elif (st, block) != av.direct[n]:
        return "RETR %d (%s): %r, %d bytes, not Dovecot's" % (n, name, st, len(block or b""))
    return None


def test_reload_under_load(start_pg, av):
    """20 clients fetch (infected and clean) in a loop for ~10 s while
    SIGHUP swaps the engine 10 times: no failed or skipped scan."""
    p = start_pg({"av": clamav(av, quarantine_dir="QDIR")},
                 listener={"max_clients_per_ip": 500})
    pool = av.infected + [n for n in av.clean if n != "long_line"]
    stop = threading.Event()
    results = [[] for _ in range(20)]
    errors = []
    mark = log_mark(p)

    def client(k):
        # a new session every few fetches: sessions stay on the engine they
        # started with, new ones get the newest
        rnd = random.Random(k)
        c = None
        while not stop.is_set():
            if c is None:
                try:
                    c = virus_session(p, av, timeout=30)
                except Exception as e:       # noqa: BLE001
                    errors.append("client %d login: %r" % (k, e))
                    return
            name = rnd.choice(pool)
            err = fetch_check(c, av, av.number[name], name)
            results[k].append(name)
            if err:
                errors.append("client %d: %s" % (k, err))
                return
            if len(results[k]) % 4 == 0:
                c.quit()
                c = None
        if c is not None:
            c.quit()

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(20)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    for _ in range(10):
        p.proc.send_signal(signal.SIGHUP)
        time.sleep(0.9)
    stop.set()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "clients hung"
    assert not errors, "\n".join(errors[:10])
    total = sum(len(r) for r in results)
    assert all(len(r) >= 5 for r in results), [len(r) for r in results]
    infected = sum(1 for r in results for x in r if x in av.infected)
    log = p.log_bytes()[mark:].decode("utf-8", "replace")
    oks = len(re.findall(r"ev=reload status=ok", log))
    assert oks >= 10, "%d reloads logged ok of 10 SIGHUPs:\n%s" % (oks, log[-3000:])
    assert "reload_failed" not in log, log[-3000:]
    lines = wait_verdicts(p, mark, infected)
    assert len(lines) == infected, "%d verdict lines for %d infected fetches (%d in all)" % (
        len(lines), infected, total)
    assert p.alive()


def test_reload_new_signatures_and_corrupt_database(start_pg, av, tmp_path):
    db = str(tmp_path / "db")
    shutil.copytree(av.db, db)
    p = start_pg({"av": clamav(av, database=db)})
    n_marker = av.number["reload_marker"]
    n_zip = av.number["att_zip"]
    old = virus_session(p, av)
    assert old.multi("RETR %d" % n_marker) == av.direct[n_marker]
    # a new signature: new sessions find it after SIGHUP (the engine is
    # built beside the old one and swapped in when ready)
    with open(os.path.join(db, "marker.ndb"), "w") as f:
        f.write(malware.marker_sig_line())
    p.proc.send_signal(signal.SIGHUP)
    end = time.monotonic() + 20
    while True:
        c = virus_session(p, av)
        st, block = c.multi("RETR %d" % n_marker)
        c.quit()
        if block != av.direct[n_marker][1] or time.monotonic() > end:
            break
        time.sleep(0.2)
    check_notice(av, n_marker, st, block, av.marker_virus, "marker after reload")
    # the session from before the reload still scans (on the old engine)
    assert old.multi("RETR %d" % n_marker) == av.direct[n_marker], \
        "a session from before the reload: the marker is not a virus on its engine"
    check_notice(av, n_zip, *old.multi("RETR %d" % n_zip), av.virus["att_zip"],
                 "att_zip on the old engine")
    old.quit()
    # a corrupt database: the reload fails, logged; the old engine stays
    mark = log_mark(p)
    with open(os.path.join(db, "broken.ndb"), "w") as f:
        f.write("this is not a signature\n")
    p.proc.send_signal(signal.SIGHUP)
    end = time.monotonic() + 20
    while time.monotonic() < end:
        log = p.log_bytes()[mark:].decode("utf-8", "replace")
        if "broken.ndb" in log or "reload_failed" in log:
            break
        time.sleep(0.2)
    log = p.log_bytes()[mark:].decode("utf-8", "replace")
    assert "reload_failed" in log or re.search(r"\b(error|fail)", log, re.I), \
        "a corrupt database at reload is not logged as a failure:\n" + log[-2000:]
    assert "broken.ndb" in log or db in log, \
        "the failed reload names neither the database nor the bad file:\n" + log[-2000:]
    time.sleep(0.5)
    assert p.alive()
    c = virus_session(p, av)
    check_notice(av, n_marker, *c.multi("RETR %d" % n_marker), av.marker_virus,
                 "marker after a failed reload (the previous engine stays)")
    check_notice(av, n_zip, *c.multi("RETR %d" % n_zip), av.virus["att_zip"],
                 "att_zip after a failed reload")
    c.quit()
    # repaired: the next reload works again
    os.unlink(os.path.join(db, "broken.ndb"))
    os.unlink(os.path.join(db, "marker.ndb"))
    mark = log_mark(p)
    p.proc.send_signal(signal.SIGHUP)
    end = time.monotonic() + 20
    while True:
        c = virus_session(p, av)
        st, block = c.multi("RETR %d" % n_marker)
        c.quit()
        if block == av.direct[n_marker][1] or time.monotonic() > end:
            break
        time.sleep(0.2)
    assert block == av.direct[n_marker][1], "after a good reload the removed signature still fires"
    assert "reload_failed" not in p.log_bytes()[mark:].decode("utf-8", "replace")


# ---------------------------------------------------------------------------
# memory and isolation
# ---------------------------------------------------------------------------

@pytest.mark.slow
def test_200mib_message_memory_and_spool(start_pg, av):
    """A 200 MiB message through clamav (default limits: the engine stops
    at max_file_size and the message is delivered as unscanned): popgate's
    RSS stays under memory_per_message + 64 MiB above its idle RSS, the
    message arrives exact, and no spool file is left.

    Default limits on purpose: with max_file_size above the message,
    libclamav's own mail parser holds about 2.5 times the message (clamscan:
    ~500 MiB anonymous memory for this one), which no proxy can bound."""
    asan = os.environ.get("ASAN_OPTIONS", "")
    p = start_pg({"av": clamav(av, on_error="pass")}, popgate={"memory_per_message": "1M"},
                 env={"ASAN_OPTIONS": (asan + ":" if asan else "") + "quarantine_size_mb=8"})
    c = RawPOP3(p.port, timeout=120)
    c.login(av.big_user, av.big_password)
    assert c.cmd("NOOP") == b"+OK\r\n"
    base = RssSampler.rss_kib(p.pid)
    sampler = RssSampler(p.pid, interval=0.05)
    sampler.start()
    seen_spool = []

    def watch():
        while sampler.is_alive() and not seen_spool:
            files, fds = spool_leftovers(p)
            if fds:
                seen_spool.append(fds)
            time.sleep(0.05)
    w = threading.Thread(target=watch, daemon=True)
    w.start()
    try:
        split = HeadSplit()
        st, sha, size = stream_retr(c, "RETR 1", sink=split)
    finally:
        sampler.stop()
    w.join(2)
    assert st.startswith(b"+OK"), st
    m = re.match(rb"X-Virus-Status: unscanned; ([\x20-\x7e]+)\r\n$", bytes(split.head))
    assert m, "200 MiB, on_error=pass: first line %r" % bytes(split.head[:200])
    assert split.rest.hexdigest() == av.big_sha[1], "the 200 MiB message is not Dovecot's"
    peak = sampler.max_kib
    grew = (peak - base) / 1024.0
    print("200 MiB: idle RSS %d KiB, peak %d KiB (+%.1f MiB), %d samples; %s" % (
        base, peak, grew, len(sampler.samples), bytes(split.head).strip().decode()))
    assert grew < 1 + 64, "RSS grew %.1f MiB (idle %d KiB, peak %d KiB) for a 200 MiB " \
        "message with memory_per_message = 1M" % (grew, base, peak)
    assert seen_spool, "no spool file seen while the 200 MiB message was held"
    c.quit()
    files, fds = wait_no_spool_leftovers(p)
    assert not files and not fds, "after the 200 MiB message: files %r, fds %r" % (files, fds)
    # why it is unscanned: clamscan with these limits says
    # Heuristics.Limits.Exceeded.MaxFileSize
    reason = m.group(1).decode()
    assert "limit" in reason.lower() or "size" in reason.lower(), \
        "200 MiB over max_file_size (25M): the unscanned reason %r names no limit " \
        "(clamscan: Heuristics.Limits.Exceeded.MaxFileSize)" % reason


@pytest.mark.slow
def test_isolation_big_scan_does_not_stall_others(start_pg, av):
    """While a 100 MiB message is held and scanned, 20 other clients keep
    getting their small messages, each within 2 s. scan_threads = 2: the
    big scan takes one thread, the 20 other clients share the other."""
    p = start_pg({"av": clamav(av, max_file_size="200M", max_scan_size="512M")},
                 popgate={"scan_threads": 2})
    small = [n for n in ("msg_01", "msg_02", "dots", "eight_bit", "no_final_newline")]
    clients = [virus_session(p, av, timeout=30) for _ in range(20)]
    big = RawPOP3(p.port, timeout=180)
    big.login(av.big_user, av.big_password)
    big_state = {}
    samples = [[] for _ in clients]
    errors = []
    done = threading.Event()

    def run_big():
        big_state["t0"] = time.monotonic()
        st = big.cmd("RETR 2")
        big_state["t_ok"] = time.monotonic()
        big_state["st"] = st
        if not st.startswith(b"+OK"):
            done.set()
            return
        # the rest of the block
        h = hashlib.sha256()
        h_state = {"tail": b""}
        data = bytes(big.buf)
        big.buf.clear()
        while True:
            window = h_state["tail"] + data
            i = window.find(b"\r\n.\r\n")
            if i >= 0:
                used = i + 5 - len(h_state["tail"])
                h.update(data[:used])
                break
            h.update(data)
            h_state["tail"] = window[-4:]
            big._fill(1 << 20)
            data = bytes(big.buf)
            big.buf.clear()
        big_state["sha"] = h.hexdigest()
        big_state["t_done"] = time.monotonic()
        done.set()

    def run_small(k):
        c = clients[k]
        i = k
        while not done.is_set():
            name = small[i % len(small)]
            i += 1
            t0 = time.monotonic()
            err = fetch_check(c, av, av.number[name], name)
            samples[k].append((t0, time.monotonic()))
            if err:
                errors.append(err)
                return
            time.sleep(0.05)

    tb = threading.Thread(target=run_big, daemon=True)
    tb.start()
    time.sleep(0.3)
    ts = [threading.Thread(target=run_small, args=(k,), daemon=True) for k in range(20)]
    for t in ts:
        t.start()
    tb.join(180)
    done.set()
    for t in ts:
        t.join(30)
    for c in clients:
        c.close()
    assert not errors, errors[:5]
    assert big_state.get("st") == av.big_status[2], "100 MiB message: %r" % big_state.get("st")
    assert "sha" in big_state, "the 100 MiB message did not arrive in 180 s"
    assert big_state["sha"] == av.big_sha[2], "the 100 MiB message is not Dovecot's"
    held = big_state["t_ok"] - big_state["t0"]
    window = (big_state["t0"] + 0.3, big_state["t_ok"])
    assert held > 1.0, "the 100 MiB message was held only %.2f s: nothing to measure" % held
    inside = [[(a, b) for a, b in s if a >= window[0] and b <= window[1]] for s in samples]
    lat = [b - a for s in inside for a, b in s]
    slow = sorted(lat)[-5:]
    print("100 MiB held %.2f s; %d small RETRs inside, max %.3f s" % (
        held, len(lat), max(lat) if lat else -1))
    assert all(len(s) >= 1 for s in inside), \
        "clients without a single answer while the big message was held (%.2f s): %r" % (
            held, [len(s) for s in inside])
    assert max(lat) < 2.0, "small RETR latencies during the big scan: %r (held %.2f s)" % (
        slow, held)
    # started while held, answered no later than 2 s after starting
    late = [(a, b) for s in samples for a, b in s
            if window[0] <= a <= window[1] and b - a >= 2.0]
    assert not late, "small RETRs that took over 2 s during the big scan: %r" % late[:5]


def test_pass_cannot_hold_more_than_max_message_size_in_memory(start_pg, av, dovecot):
    """on_error = pass delivers what the filters could not examine, but only
    what popgate could hold: with the spool unusable, memory holds at most
    max_message_size of a message, so a larger one is refused with
    -ERR [SYS/TEMP] and stays on the server."""
    p = start_pg({"av": clamav(av, on_error="pass")},
                 popgate={"memory_per_message": "4K", "max_message_size": "64K"})
    p.make_immutable()
    mark = log_mark(p)
    check_tempfail(p, av, dovecot, "long_line", ("av", "-"), mark, companions=False)
    assert p.alive()
