"""Fixtures of the popgate integration suite.

dovecot          a real Dovecot 2.3 (POP3 only, plaintext, passwd-file auth)
                 started by the suite in its own directory; session scope.
mailbox          the corpus layout: names <-> message numbers of user alice.
direct           exact RETR blocks of alice's mailbox as Dovecot sends them.
popgate          a popgate in front of that Dovecot (session scope).
popgate_factory  start a popgate with a custom config (function scope).
fake_upstream    factory of scripted fake POP3 upstreams (fakeupstream.py),
                 plaintext or TLS (tls="implicit", certfile=...; STARTTLS action).
scratch_user     a fresh Dovecot user with its own small mailbox (for DELE).
certs            the test PKI generated at test time (certs.py; session scope).
dovecot_tls      a second Dovecot with ssl = yes (certificate up.test/127.0.0.1):
                 STLS on .port, implicit TLS on .tls_port (session scope).
av               the filter tests' world (AvEnv): a signature database made
                 with sigtool, Dovecot users "virus" (infected samples from
                 clamav-testfiles, clean corpus messages, a zip bomb) and
                 "bigmail" (200 and 100 MiB), clamscan's verdicts (session).
clamd_factory    start a real clamd on those signatures (function scope).

Environment:
  POPGATE_BIN          the binary (default <repo>/build/popgate)
  POPGATE_TEST_TARGET  "dovecot": point the `popgate` fixture straight at
                       Dovecot (only to debug the fixtures; most proxy tests
                       then fail by design)
"""

import hashlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import certs as certs_mod  # noqa: E402
import corpus as corpus_mod  # noqa: E402
import pop3util  # noqa: E402
from fakeupstream import FakeUpstream  # noqa: E402
from pop3util import RawPOP3, free_port  # noqa: E402

REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
MAIL_UID = 8
MAIL_GID = 8
LOG_FLOOD = 100 * 1024 * 1024      # a popgate log larger than this is a bug
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                     "runtime error:", "WARNING: ThreadSanitizer")


def pytest_configure(config):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    config.addinivalue_line("markers", "slow: takes more than ~5 s (still run by default)")


def terminate(proc):
    """SIGTERM a server we started, then SIGKILL after 20 s."""
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def popgate_bin():
    b = os.environ.get("POPGATE_BIN") or os.path.join(REPO, "build", "popgate")
    if not os.path.isabs(b):
        b = os.path.join(REPO, b)
    return b


# ---------------------------------------------------------------------------
# Dovecot
# ---------------------------------------------------------------------------

DOVECOT_CONF = """\
base_dir = {d}/run
state_dir = {d}/state
instance_name = popgate-test-{port}
protocols = pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login apop
auth_failure_delay = 0
log_path = {d}/dovecot.log
first_valid_uid = {uid}
first_valid_gid = {gid}
mail_location = maildir:~/Maildir
mail_max_userip_connections = 5000
default_client_limit = 5000
default_process_limit = 2000
default_vsz_limit = 1G
protocol pop3 {{
  mail_max_userip_connections = 5000
}}
passdb {{
  driver = passwd-file
  args = {d}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/mail/%u
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {port}
  }}
  service_count = 0
  process_min_avail = 2
  process_limit = 16
  client_limit = 4000
}}
service pop3 {{
  process_limit = 1500
  client_limit = 1
}}
service auth {{
  client_limit = 5000
}}
service anvil {{
  client_limit = 5000
  # no auth penalty for repeated failed logins from 127.0.0.1
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service log {{
  client_limit = 5000
}}
"""


def file_bytes(path):
    """A file's contents; b"" while it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


class Dovecot:
    def __init__(self, corpus, prefix="popgate-it-dovecot-"):
        self.dir = tempfile.mkdtemp(prefix=prefix)
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.host = "127.0.0.1"
        self.conf = os.path.join(self.dir, "dovecot.conf")
        self.log = os.path.join(self.dir, "dovecot.log")
        self.passwd = os.path.join(self.dir, "passwd")
        self.store = os.path.join(self.dir, "store")   # originals for hardlinks
        self.corpus = corpus
        self.names = [n for n, _ in corpus]
        self.number = {n: i + 1 for i, n in enumerate(self.names)}
        self.users = {}
        self._next_scratch = 0
        self._lock = threading.Lock()
        self.proc = None

    # -- setup -------------------------------------------------------------
    def prepare(self):
        os.makedirs(self.store)
        for name, data in self.corpus:
            with open(os.path.join(self.store, name), "wb") as f:
                f.write(data)
        with open(self.conf, "w") as f:
            f.write(self.config_text())
        open(self.passwd, "w").close()
        os.makedirs(os.path.join(self.dir, "mail"))
        os.chown(os.path.join(self.dir, "mail"), MAIL_UID, MAIL_GID)
        self.add_user("alice", "secret", self.names)
        # users for clients that need a mailbox of their own
        self.add_user("bob", "bobpass", corpus_mod.SMALL)

    def config_text(self):
        return DOVECOT_CONF.format(d=self.dir, port=self.port, uid=MAIL_UID, gid=MAIL_GID)

    def add_user(self, user, password, names):
        """Create user with a maildir holding the named corpus messages, in
        that order (message n = names[n-1]). Hardlinks, no copies."""
        home = os.path.join(self.dir, "mail", user)
        md = os.path.join(home, "Maildir")
        for sub in ("new", "cur", "tmp"):
            os.makedirs(os.path.join(md, sub))
        for i, name in enumerate(names):
            # Dovecot assigns UIDs to new mail in the order of the timestamp
            # at the start of the file name.
            fn = "%d.M%dP%d.popgate" % (1000000000 + i, i, os.getpid())
            os.link(os.path.join(self.store, name), os.path.join(md, "new", fn))
        for root, dirs, files in os.walk(home):
            os.chown(root, MAIL_UID, MAIL_GID)
            for x in files:
                os.chown(os.path.join(root, x), MAIL_UID, MAIL_GID)
        with open(self.passwd, "a") as f:
            # nodelay: failed logins are answered at once (tests do many)
            f.write("%s:{PLAIN}%s::::::nodelay\n" % (user, password))
        self.users[user] = list(names)
        # passwd-file is re-read when its mtime/size change; make sure the
        # change is seen even within the same second.
        st = os.stat(self.passwd)
        os.utime(self.passwd, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))

    def scratch_user(self, names=None):
        with self._lock:
            self._next_scratch += 1
            user = "scratch%03d" % self._next_scratch
        self.add_user(user, "pw" + user, names or corpus_mod.SMALL)
        self.wait_login(user, "pw" + user)
        return user, "pw" + user

    def wait_login(self, user, password):
        """Dovecot re-reads passwd-file at most once a second: wait until
        a new user can log in (and that session's end is logged)."""
        end = time.monotonic() + 5
        while True:
            with self.connect() as c:
                if c.cmd("USER " + user).startswith(b"+OK") and \
                        c.cmd("PASS " + password).startswith(b"+OK"):
                    c.cmd("QUIT")
                    break
            if time.monotonic() > end:
                raise RuntimeError("dovecot does not know new user %s" % user)
            time.sleep(0.2)
        self.wait_user_disconnected(user, 1)

    def store_path(self, name):
        """Where add_user() takes message `name` from (write it there
        first for messages that are not in the corpus)."""
        return os.path.join(self.store, name)

    def store_message(self, name, data):
        assert not os.path.exists(self.store_path(name)), name
        with open(self.store_path(name), "wb") as f:
            f.write(data)

    # -- process -----------------------------------------------------------
    def start(self):
        self.stdout = open(os.path.join(self.dir, "dovecot.stdout"), "wb")
        self.proc = subprocess.Popen(["/usr/sbin/dovecot", "-F", "-c", self.conf],
                                     stdout=self.stdout, stderr=subprocess.STDOUT)
        try:
            pop3util.wait_greeting(self.port, timeout=20)
        except Exception:
            self.stop()
            raise RuntimeError("dovecot did not start: %s\n%s" % (
                self.read_file("dovecot.stdout"), self.read_file("dovecot.log")))

    def read_file(self, name):
        return file_bytes(os.path.join(self.dir, name)).decode("utf-8", "replace")

    def log_text(self):
        return self.read_file("dovecot.log")

    def stop(self):
        terminate(self.proc)
        if getattr(self, "stdout", None):
            self.stdout.close()

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers -----------------------------------------------------------
    def connect(self, **kw):
        return RawPOP3(self.port, **kw)

    def session(self, user="alice", password=None):
        c = self.connect()
        c.login(user, password or ("secret" if user == "alice" else self.password(user)))
        return c

    def password(self, user):
        with open(self.passwd) as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if fields[0] == user:
                    return fields[1].replace("{PLAIN}", "")
        raise KeyError(user)

    def disconnects(self, user):
        """Dovecot's "Disconnected" log lines of user's post-login sessions."""
        tag = "pop3(%s)" % user
        return [ln for ln in self.log_text().splitlines()
                if tag in ln and "Disconnected" in ln]

    def wait_user_disconnected(self, user, count=1, timeout=15.0):
        """Wait until Dovecot logged at least `count` "Disconnected" lines
        of user's post-login sessions (in total); return all of them."""
        end = time.monotonic() + timeout
        while True:
            lines = self.disconnects(user)
            if len(lines) >= count or time.monotonic() > end:
                return lines
            time.sleep(0.1)


@pytest.fixture(scope="session")
def corpus():
    return corpus_mod.build()


@pytest.fixture(scope="session")
def dovecot(corpus):
    if os.geteuid() != 0:
        pytest.fail("the integration suite runs as root: it starts its own Dovecot, "
                    "whose maildirs belong to uid/gid mail (8)", pytrace=False)
    if not os.path.exists("/usr/sbin/dovecot"):
        pytest.fail("dovecot is not installed (scripts/deps.sh)", pytrace=False)
    d = Dovecot(corpus)
    try:
        d.prepare()
        d.start()
        # sanity: the message order in alice's mailbox is the corpus order
        c = d.session()
        n, _ = c.stat()
        assert n == len(corpus), "dovecot sees %d messages, corpus has %d" % (n, len(corpus))
        for i in (1, len(corpus) // 2, d.number["dots"]):
            _, block = c.retr(i)
            want = pop3util.to_crlf(corpus[i - 1][1])
            got = pop3util.unstuff(block)
            assert got.rstrip(b"\r\n") == want.rstrip(b"\r\n"), \
                "message %d is not %s" % (i, corpus[i - 1][0])
        c.quit()
        yield d
    finally:
        d.stop()
        if os.environ.get("POPGATE_KEEP_TMP"):
            print("dovecot dir kept:", d.dir)
        else:
            d.cleanup()


class DovecotTLS(Dovecot):
    """Dovecot with ssl = yes: STLS on .port, implicit TLS on .tls_port,
    certificate certs up.pem (DNS:up.test, IP:127.0.0.1). Same users and
    mailboxes as the plaintext fixture."""

    def __init__(self, corpus, certs):
        super().__init__(corpus, prefix="popgate-it-dovecot-tls-")
        self.certs = certs
        self.tls_port = free_port()

    def config_text(self):
        text = super().config_text()
        assert "ssl = no\n" in text
        text = text.replace("ssl = no\n",
                            "ssl = yes\nssl_cert = <%s\nssl_key = <%s\n"
                            "ssl_min_protocol = TLSv1.2\n"
                            % (self.certs.up_pem, self.certs.up_key))
        anchor = "service pop3-login {\n"
        assert anchor in text
        text = text.replace(anchor, anchor + "  inet_listener pop3s {\n"
                            "    address = 127.0.0.1\n    port = %d\n    ssl = yes\n  }\n"
                            % self.tls_port)
        return text

    def start(self):
        super().start()
        if not pop3util.wait_listening(self.tls_port, timeout=10):
            self.stop()
            raise RuntimeError("dovecot does not listen on its pop3s port %d" % self.tls_port)

    def connect_tls(self, implicit=True, **kw):
        """A RawPOP3 in TLS (implicit port, or STLS on the plain port),
        verifying the certificate against the test CA for up.test."""
        ctx = pop3util.tls_client_context(self.certs.ca_pem)
        if implicit:
            return RawPOP3(self.tls_port, tls_context=ctx, server_hostname="up.test", **kw)
        c = RawPOP3(self.port, **kw)
        c.starttls(ctx, server_hostname="up.test")
        return c


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    """The test PKI (see certs.py): CA, pop.test/other.test server certs,
    valid/expired/wrong-name/self-signed/unknown-CA upstream certs."""
    return certs_mod.make_certs(str(tmp_path_factory.mktemp("certs")))


@pytest.fixture(scope="session")
def dovecot_tls(corpus, certs, dovecot):
    """A second Dovecot with TLS (see DovecotTLS); started on first use."""
    d = DovecotTLS(corpus, certs)
    try:
        d.prepare()
        d.start()
        yield d
    finally:
        d.stop()
        if os.environ.get("POPGATE_KEEP_TMP"):
            print("dovecot-tls dir kept:", d.dir)
        else:
            d.cleanup()


@pytest.fixture(scope="session")
def mailbox(dovecot):
    """names <-> numbers of alice's messages."""
    return dovecot


class DirectCache:
    """Exact (status, block) of each alice message as Dovecot sends it."""

    def __init__(self, dovecot):
        self.dovecot = dovecot
        self.blocks = {}
        self.digest = {}

    def load(self):
        c = self.dovecot.session()
        for n in range(1, len(self.dovecot.names) + 1):
            st, block = c.retr(n)
            self.blocks[n] = (st, block)
            self.digest[n] = hashlib.sha256(block).hexdigest()
        c.quit()
        return self

    def __getitem__(self, n):
        return self.blocks[n]


@pytest.fixture(scope="session")
def direct(dovecot):
    return DirectCache(dovecot).load()


@pytest.fixture
def scratch_user(dovecot):
    """A fresh user (name, password) with corpus.SMALL as its mailbox."""
    return dovecot.scratch_user()


@pytest.fixture
def make_scratch_user(dovecot):
    return dovecot.scratch_user


# ---------------------------------------------------------------------------
# popgate
# ---------------------------------------------------------------------------

class Lines(list):
    """A section value that renders as its own (key, value) lines, in order,
    whatever dict key holds it: Lines([("cert", a), ("key", ak), ("cert", b),
    ("key", bk)]) keeps each cert next to its key."""


def render_ini(sections):
    """sections: list of (header, {key: value or [values] or Lines}) -> INI text."""
    out = []
    for header, keys in sections:
        out.append("[%s]" % header)
        for k, v in keys.items():
            if v is None:
                continue
            if isinstance(v, Lines):
                out.extend("%s = %s" % kv for kv in v)
                continue
            for x in (v if isinstance(v, (list, tuple)) else [v]):
                out.append("%s = %s" % (k, x))
        out.append("")
    return "\n".join(out)


class Popgate:
    """One popgate process with a generated config."""

    def __init__(self, workdir, servers, popgate=None, listener=None, upstream=None,
                 extra_sections=None, binary=None, env=None, port=None, extra_ports=()):
        self.dir = workdir
        self.extra_ports = list(extra_ports)   # other listeners' ports (readiness)
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.binary = binary or popgate_bin()
        self.log_path = os.path.join(self.dir, "popgate.log")
        self.stderr_path = os.path.join(self.dir, "popgate.stderr")
        self.conf = os.path.join(self.dir, "popgate.ini")
        self.env = dict(os.environ)
        self.env.update(env or {})
        pg = {"workers": 1, "log": self.log_path, "log_level": "info",
              "shutdown_timeout": "5s"}
        pg.update(popgate or {})
        li = {"bind": "127.0.0.1:%d" % self.port, "tls": "off", "upstream": "up",
              "max_clients": 10000, "max_clients_per_ip": 200,
              "idle_timeout": "10m", "login_timeout": "3m", "max_errors": 10}
        li.update(listener or {})
        up = {"server": ["%s:%d" % s if isinstance(s, tuple) else s for s in servers],
              "tls": "off", "connect_timeout": "10s", "timeout": "10m",
              "max_response_line": 1024}
        up.update(upstream or {})
        self.sections = [("popgate", pg), ("listener:plain", li), ("upstream:up", up)]
        self.sections += list(extra_sections or [])
        self.proc = None
        self.stopped = False
        self.returncode = None

    def write_config(self):
        with open(self.conf, "w") as f:
            f.write(render_ini(self.sections))

    def start(self, ready_timeout=15.0):
        if not os.path.exists(self.binary):
            pytest.fail("popgate binary not found: %s (set POPGATE_BIN or run make)"
                        % self.binary, pytrace=False)
        self.write_config()
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([self.binary, "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=self._stderr, stderr=self._stderr, env=self.env)
        ok = all(pop3util.wait_listening(p, timeout=ready_timeout,
                                         alive=lambda: self.proc.poll() is None)
                 for p in [self.port] + self.extra_ports)
        if not ok:
            rc = self.proc.poll()
            if rc is None:
                self.proc.kill()
                self.proc.wait(5)
            self._stderr.close()
            pytest.fail("popgate did not listen on %d (rc=%r)\nconfig:\n%s\nstderr:\n%s" % (
                self.port, rc, render_ini(self.sections), self.stderr_text()), pytrace=False)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr_text(self):
        return file_bytes(self.stderr_path).decode("utf-8", "replace")

    def log_text(self):
        return self.log_bytes().decode("utf-8", "replace")

    def log_bytes(self):
        return file_bytes(self.log_path)

    def connect(self, **kw):
        return RawPOP3(self.port, **kw)

    def session(self, user="alice", password="secret", **kw):
        c = self.connect(**kw)
        c.login(user, password)
        return c

    def stop(self, timeout=None):
        """SIGTERM, wait, and return the list of problems (empty = fine)."""
        if self.stopped or self.proc is None:
            return []
        self.stopped = True
        problems = []
        if self.proc.poll() is not None:
            # A test may have sent SIGTERM itself (exit 0 is then fine);
            # anything else is a crash or an error exit.
            if self.proc.returncode != 0:
                problems.append("popgate had already exited with rc=%r" % self.proc.returncode)
        else:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout or 20)
            except subprocess.TimeoutExpired:
                problems.append("popgate did not exit within %ss of SIGTERM" % (timeout or 20))
                self.proc.kill()
                self.proc.wait(10)
            else:
                if self.proc.returncode != 0:
                    problems.append("popgate exited with rc=%r after SIGTERM" % self.proc.returncode)
        self.returncode = self.proc.returncode
        self._stderr.close()
        err = self.stderr_text()
        try:
            size = os.path.getsize(self.log_path)
        except OSError:
            size = 0
        if size > LOG_FLOOD:
            with open(self.log_path, "rb") as f:
                head = f.read(2000).decode("utf-8", "replace")
            problems.append("log flood: %s is %d bytes (truncated to 0 by the test "
                            "suite); it began:\n%s" % (self.log_path, size, head))
            os.truncate(self.log_path, 0)
        for m in SANITIZER_MARKERS:
            if m in err:
                problems.append("sanitizer report (%s) on stderr" % m)
        if problems:
            problems.append("stderr (last 4000 chars):\n" + err[-4000:])
        return problems

    def check_stop(self):
        problems = self.stop()
        assert not problems, "\n".join(problems)


class DovecotAsPopgate:
    """POPGATE_TEST_TARGET=dovecot: fixture debugging only."""

    def __init__(self, dovecot):
        self.port = dovecot.port
        self.pid = dovecot.proc.pid
        self.log_path = os.devnull

    def alive(self):
        return True

    # The same client side as Popgate's: both listen on self.port.
    connect = Popgate.connect
    session = Popgate.session

    def log_text(self):
        return ""

    def stop(self):
        return []

    def check_stop(self):
        pass


@pytest.fixture(scope="session")
def popgate(dovecot, tmp_path_factory):
    """The shared popgate in front of the test Dovecot."""
    if os.environ.get("POPGATE_TEST_TARGET") == "dovecot":
        yield DovecotAsPopgate(dovecot)
        return
    p = Popgate(str(tmp_path_factory.mktemp("popgate-shared")),
                [(dovecot.host, dovecot.port)])
    p.start()
    yield p
    p.check_stop()


@pytest.fixture
def popgate_factory(tmp_path, dovecot):
    """popgate_factory(servers=None, popgate={}, listener={}, upstream={}, ...)
    -> a started Popgate; servers default to the test Dovecot. Stopped (and
    checked: exit 0, no sanitizer report) at teardown."""
    started = []

    def start(servers=None, start=True, **kw):
        if servers is None:
            servers = [(dovecot.host, dovecot.port)]
        p = Popgate(str(tmp_path / ("popgate%d" % len(started))), servers, **kw)
        started.append(p)
        if start:
            p.start()
        return p

    yield start
    problems = []
    for p in started:
        problems += p.stop()
    assert not problems, "\n".join(problems)


@pytest.fixture
def fake_upstream():
    """fake_upstream(greeting=..., on={...}, messages=[...]) -> started fake."""
    fakes = []

    def make(**kw):
        f = FakeUpstream(**kw).start()
        fakes.append(f)
        return f

    yield make
    for f in fakes:
        f.stop()


@pytest.fixture
def proxy_to_fake(fake_upstream, popgate_factory):
    """proxy_to_fake(fake kwargs..., pg=dict(popgate_factory kwargs))
    -> (popgate, fake)."""
    def make(pg=None, **kw):
        f = fake_upstream(**kw)
        p = popgate_factory(servers=[("127.0.0.1", f.port)], **(pg or {}))
        return p, f
    return make


# ---------------------------------------------------------------------------
# filters: signatures, infected mail in Dovecot, clamd (test_filters.py)
# ---------------------------------------------------------------------------

import malware  # noqa: E402

# Clean corpus messages stored beside the infected ones (user "virus").
AV_CLEAN = ["msg_01", "msg_02", "msg_07", "msg_16", "dots", "dot_first_body_line",
            "no_final_newline", "ends_with_dot_no_newline", "eight_bit", "control_bytes",
            "long_line", "many_short_lines", "empty_body", "headers_only", "crlf_stored"]
BIG_SIZES = {"big200": 200 * 1024 * 1024, "big100": 100 * 1024 * 1024}
# clamscan options equal to popgate's [filter:NAME] defaults, with the
# "alert when limits are exceeded" heuristics on (the oracle for names)
CLAMSCAN_DEFAULTS = ("--alert-exceeds-max=yes", "--max-recursion=16", "--max-files=10000",
                     "--max-filesize=25M", "--max-scansize=100M")


class AvEnv:
    """The filter tests' world, built once per session:

    db            signature directory (clam.hdb from sigtool, eicar.ndb)
    user/password the Dovecot user "virus": infected samples, clean corpus
                  messages, the zip bomb and the reload marker message
    names         its message names in order; number[name] -> message n
    infected      names of the samples clamscan detects (as Dovecot sends them)
    virus[name]   the signature name clamscan reports for that message
    skipped       samples clamscan did not detect (left out, printed)
    clean         names of the clean messages
    direct[n]     (status, raw block) of message n as Dovecot sends it
    original(n)   message n un-stuffed: what a quarantine copy must hold
    bomb_alert    clamscan's name for the bomb with limits alerts on
    big_user      user "bigmail": message 1 = 200 MiB, 2 = 100 MiB (clean)
    big_sha[n]    SHA-256 of Dovecot's raw RETR block of big message n
    big_status[n] Dovecot's status line for it
    expected(name) (status, SHA-256 of the raw block) Dovecot sends for a
                  message of either user (names big200/big100 for the big ones)
    """

    def __init__(self, dovecot, base):
        self.dovecot = dovecot
        self.dir = base
        self.db = malware.make_sigdb(os.path.join(base, "db"))
        self.user, self.password = "virus", "viruspw"
        self.big_user, self.big_password = "bigmail", "bigpw"
        self.skipped = []
        self.virus = {}

    def prepare(self):
        d = self.dovecot
        samples = malware.infected_messages()
        for name, data in samples:
            d.store_message("av_" + name, data)
        d.store_message("av_zip_bomb", malware.bomb_message())
        d.store_message("av_reload_marker", malware.marker_message())
        stored = ["av_" + n for n, _ in samples] + AV_CLEAN + ["av_zip_bomb", "av_reload_marker"]
        d.add_user(self.user, self.password, stored)
        self.names = [n[3:] if n.startswith("av_") else n for n in stored]
        self.number = {n: i + 1 for i, n in enumerate(self.names)}
        for name, size in BIG_SIZES.items():
            malware.write_big_message(d.store_path("av_" + name), size, "big " + name)
        d.add_user(self.big_user, self.big_password, ["av_big200", "av_big100"])
        d.wait_login(self.user, self.password)
        d.wait_login(self.big_user, self.big_password)

        c = d.session(self.user, self.password)
        assert c.stat()[0] == len(self.names)
        self.direct = {n: c.retr(n) for n in range(1, len(self.names) + 1)}
        c.quit()
        self.big_sha, self.big_status = {}, {}
        c = d.session(self.big_user, self.big_password)
        for n in (1, 2):
            st, sha, size = stream_retr(c, "RETR %d" % n)
            assert st.startswith(b"+OK"), st
            self.big_sha[n], self.big_status[n] = sha, st
        c.quit()

        # clamscan sees what popgate's filter will see: the un-stuffed
        # message with CRLF line ends, as Dovecot sends it
        scan_dir = os.path.join(self.dir, "scan")
        os.makedirs(scan_dir)

        def scan(name, *opts, db=None):
            path = os.path.join(scan_dir, name + ".eml")
            with open(path, "wb") as f:
                f.write(self.original(self.number[name]))
            return malware.clamscan(db or self.db, path, *opts)

        self.infected = []
        for name, _ in samples:
            v = scan(name, *CLAMSCAN_DEFAULTS)
            if v is None:
                self.skipped.append(name)
            else:
                self.infected.append(name)
                self.virus[name] = v
        if self.skipped:
            print("filter samples clamscan does not detect (left out):", self.skipped)
        assert len(self.infected) >= 8, "clamscan detects only %r" % self.infected
        self.clean = list(AV_CLEAN)
        for name in self.clean:
            v = scan(name, *CLAMSCAN_DEFAULTS)
            assert v is None, "clean corpus message %s: clamscan says %s" % (name, v)
        # the bomb: clean without the limits heuristics (libclamav's silent
        # pass), a Heuristics.Limits.Exceeded.* alert with it
        assert scan("zip_bomb", "--max-recursion=16") is None
        self.bomb_alert = scan("zip_bomb", *CLAMSCAN_DEFAULTS)
        assert (self.bomb_alert or "").startswith("Heuristics.Limits.Exceeded."), self.bomb_alert
        # the marker: clean, detected once its signature is loaded
        assert scan("reload_marker") is None
        mdb = os.path.join(self.dir, "markerdb")
        shutil.copytree(self.db, mdb)
        with open(os.path.join(mdb, "marker.ndb"), "w") as f:
            f.write(malware.marker_sig_line())
        self.marker_virus = scan("reload_marker", db=mdb)
        assert self.marker_virus and self.marker_virus.startswith("Popgate-Reload-Marker")
        return self

    def expected(self, name):
        if name in BIG_SIZES:
            n = 1 if name == "big200" else 2
            return self.big_status[n], self.big_sha[n]
        st, block = self.direct[self.number[name]]
        return st, hashlib.sha256(block).hexdigest()

    def original(self, n):
        return pop3util.unstuff(self.direct[n][1])

    def session(self):
        return self.dovecot.session(self.user, self.password)

    def make_user(self, names):
        """A fresh Dovecot user holding the named messages (names of this
        mailbox): for tests that delete. Returns (user, password)."""
        return self.dovecot.scratch_user(
            [n if os.path.exists(self.dovecot.store_path(n)) else "av_" + n for n in names])


def stream_retr(conn, command, sink=None):
    """Send a multi-line command on a RawPOP3 and read the answer without
    keeping it: returns (status line, SHA-256 hex of the raw block with its
    terminator, block length). sink(chunk) sees every block byte."""
    st = conn.cmd(command)
    if not st.startswith(b"+OK"):
        return st, None, 0
    h = hashlib.sha256()
    tail = b""
    total = 0
    while total == 0 and len(conn.buf) < 3:
        conn._fill(1 << 20)
    while True:
        if not conn.buf:
            conn._fill(1 << 20)
        data = bytes(conn.buf)
        conn.buf.clear()
        window = tail + data
        # the first byte of the block may itself begin the terminator
        if total == 0 and window.startswith(b".\r\n"):
            end = 3
        else:
            i = window.find(b"\r\n.\r\n")
            end = i + 5 if i >= 0 else -1
        if end >= 0:
            used = end - len(tail)
            chunk = data[:used]
            conn.buf += data[used:]
        else:
            chunk = data
        h.update(chunk)
        if sink:
            sink(chunk)
        total += len(chunk)
        if end >= 0:
            return st, h.hexdigest(), total
        tail = window[-4:]


@pytest.fixture(scope="session")
def av(dovecot):
    """The filter tests' signatures and infected mailbox (AvEnv)."""
    for tool in (malware.SIGTOOL, malware.CLAMSCAN, "/usr/sbin/clamd"):
        if not os.path.exists(tool):
            pytest.fail("%s missing: apt-get install clamav clamav-daemon clamav-testfiles"
                        % tool, pytrace=False)
    base = tempfile.mkdtemp(prefix="popgate-it-av-")
    try:
        yield AvEnv(dovecot, base).prepare()
    finally:
        if os.environ.get("POPGATE_KEEP_TMP"):
            print("av dir kept:", base)
        else:
            shutil.rmtree(base, ignore_errors=True)


CLAMD_CONF = """\
Foreground yes
LocalSocket {sock}
DatabaseDirectory {db}
TemporaryDirectory {d}
LogFile {d}/clamd.log
LogTime yes
PidFile {d}/clamd.pid
AlertExceedsMax yes
MaxRecursion 16
StreamMaxLength 300M
MaxThreads 4
SelfCheck 0
"""


class Clamd:
    """A real clamd (clamav-daemon) in a fresh short directory (the
    socket path must fit sun_path), with the session's signatures."""

    def __init__(self, db):
        self.dir = tempfile.mkdtemp(prefix="pg-clamd-")
        self.socket = os.path.join(self.dir, "clamd.sock")
        self.conf = os.path.join(self.dir, "clamd.conf")
        with open(self.conf, "w") as f:
            f.write(CLAMD_CONF.format(sock=self.socket, db=db, d=self.dir))
        self.proc = None

    def start(self, timeout=60):
        out = open(os.path.join(self.dir, "clamd.stdout"), "wb")
        self.proc = subprocess.Popen(["/usr/sbin/clamd", "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=subprocess.STDOUT)
        out.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                break
            if self.ping():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("clamd did not answer PING: %s" % file_bytes(
            os.path.join(self.dir, "clamd.stdout"))[-3000:])

    def ping(self):
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(self.socket)
                s.sendall(b"zPING\0")
                return s.recv(64).startswith(b"PONG")
        except OSError:
            return False

    def stop(self):
        terminate(self.proc)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def clamd_factory(av):
    """clamd_factory() -> a started Clamd on the session's signatures;
    stopped at teardown."""
    started = []

    def make():
        c = Clamd(av.db)
        started.append(c)
        return c.start()

    yield make
    for c in started:
        c.cleanup()
