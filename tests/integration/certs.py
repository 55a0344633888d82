"""Test PKI for the TLS tests, generated at test time with the openssl CLI.

Nothing here is committed: make_certs(dir) writes every file into dir and
returns a Certs with their paths. All keys are ECDSA P-256.

    ca.pem / ca.key               the test CA (trusted by the tests)
    pop.pem / pop.key             server cert: SAN DNS:pop.test, IP:127.0.0.1
    other.pem / other.key         server cert: SAN DNS:other.test (SNI)
    up.pem / up.key               upstream cert: SAN DNS:up.test, IP:127.0.0.1
    up-expired.pem / .key         same names, expired (notAfter in the past)
    up-wrongname.pem / .key       SAN DNS:other.example only
    up-selfsigned.pem / .key      self-signed, SAN DNS:up.test, IP:127.0.0.1
    up-unknownca.pem / .key       issued by another CA (rogue-ca.pem), right names
    rogue-ca.pem / .key           a CA the tests never trust

Leaf certificates are valid for 90 days from yesterday (testssl.sh flags
lifetimes over 398 days), carry serverAuth and clientAuth, digitalSignature,
and a CRL distribution point (testssl.sh rates a certificate without any
revocation information HIGH). Their subject CN is the first DNS name, so an
"openssl s_client" subject line tells which certificate was served.
"""

import os
import subprocess
import time

OPENSSL = "/usr/bin/openssl"

CA_CNF = """\
[ca]
default_ca = testca

[testca]
dir = {d}
database = {d}/index.txt
new_certs_dir = {d}/newcerts
serial = {d}/serial
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
email_in_dn = no

[anything]
commonName = supplied
organizationName = optional

[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
"""

LEAF_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = {san}
crlDistributionPoints = URI:http://127.0.0.1:9/popgate-test.crl
"""

CA_EXT = """\
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""

SELF_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyCertSign
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
subjectAltName = {san}
"""


def _run(args, cwd=None):
    r = subprocess.run([OPENSSL] + args, capture_output=True, cwd=cwd, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (" ".join(args),
                                                      r.stderr.decode("utf-8", "replace")))
    return r.stdout


def _utc(t):
    """epoch seconds -> openssl ca date (YYYYMMDDHHMMSSZ)."""
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(t))


class Certs:
    def __init__(self, d):
        self.dir = d

    def path(self, name):
        return os.path.join(self.dir, name)

    # convenience attributes
    def __getattr__(self, name):
        # certs.pop_pem -> <dir>/pop.pem, certs.up_expired_key -> up-expired.key
        if name.endswith("_pem") or name.endswith("_key"):
            base, ext = name.rsplit("_", 1)
            p = os.path.join(self.dir, base.replace("_", "-") + "." + ext)
            if os.path.exists(p):
                return p
        raise AttributeError(name)

    def pair(self, base):
        """(cert, key) paths of base ("pop", "up-expired", ...)."""
        return self.path(base + ".pem"), self.path(base + ".key")


class _CA:
    def __init__(self, d, name, cn):
        self.dir = os.path.join(d, name + ".db")
        self.name = name
        self.pem = os.path.join(d, name + ".pem")
        self.key = os.path.join(d, name + ".key")
        os.makedirs(os.path.join(self.dir, "newcerts"))
        open(os.path.join(self.dir, "index.txt"), "w").close()
        with open(os.path.join(self.dir, "serial"), "w") as f:
            f.write("%016X\n" % (int.from_bytes(os.urandom(7), "big") | 1 << 55))
        self.cnf = os.path.join(self.dir, "ca.cnf")
        with open(self.cnf, "w") as f:
            f.write(CA_CNF.format(d=self.dir))
        ext = os.path.join(self.dir, "ca.ext")
        with open(ext, "w") as f:
            f.write(CA_EXT)
        _genkey(self.key)
        csr = os.path.join(self.dir, "ca.csr")
        _run(["req", "-new", "-key", self.key, "-subj", "/O=popgate tests/CN=" + cn,
              "-out", csr])
        now = time.time()
        _run(["ca", "-batch", "-config", self.cnf, "-selfsign", "-keyfile", self.key,
              "-in", csr, "-out", self.pem, "-notext", "-extfile", ext,
              "-startdate", _utc(now - 2 * 86400), "-enddate", _utc(now + 3650 * 86400)])

    def issue(self, out_base, cn, san, start, end):
        key = out_base + ".key"
        pem = out_base + ".pem"
        _genkey(key)
        csr = out_base + ".csr"
        _run(["req", "-new", "-key", key, "-subj", "/O=popgate tests/CN=" + cn, "-out", csr])
        ext = out_base + ".ext"
        with open(ext, "w") as f:
            f.write(LEAF_EXT.format(san=san))
        _run(["ca", "-batch", "-config", self.cnf, "-cert", self.pem, "-keyfile", self.key,
              "-in", csr, "-out", pem, "-notext", "-extfile", ext,
              "-startdate", _utc(start), "-enddate", _utc(end)])
        os.unlink(csr)
        os.unlink(ext)
        return pem, key


def _genkey(path):
    _run(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
          "-pkeyopt", "ec_param_enc:named_curve", "-out", path])
    os.chmod(path, 0o600)


def make_certs(d):
    os.makedirs(d, exist_ok=True)
    now = time.time()
    day = 86400
    start, end = now - day, now + 90 * day
    ca = _CA(d, "ca", "popgate test CA")
    rogue = _CA(d, "rogue-ca", "popgate rogue CA")
    ca.issue(os.path.join(d, "pop"), "pop.test", "DNS:pop.test, IP:127.0.0.1", start, end)
    ca.issue(os.path.join(d, "other"), "other.test", "DNS:other.test", start, end)
    ca.issue(os.path.join(d, "up"), "up.test", "DNS:up.test, IP:127.0.0.1", start, end)
    ca.issue(os.path.join(d, "up-expired"), "up.test", "DNS:up.test, IP:127.0.0.1",
             now - 400 * day, now - 10 * day)
    ca.issue(os.path.join(d, "up-wrongname"), "other.example", "DNS:other.example",
             start, end)
    rogue.issue(os.path.join(d, "up-unknownca"), "up.test", "DNS:up.test, IP:127.0.0.1",
                start, end)
    # self-signed leaf with the right names
    key = os.path.join(d, "up-selfsigned.key")
    _genkey(key)
    ext = os.path.join(d, "selfsigned.ext")
    with open(ext, "w") as f:
        f.write(SELF_EXT.format(san="DNS:up.test, IP:127.0.0.1"))
    # "openssl req -x509" takes -days only: the cert starts now, which is fine
    _run(["req", "-new", "-x509", "-key", key, "-subj", "/O=popgate tests/CN=up.test",
          "-days", "90", "-sha256", "-extensions", "v3_self", "-config", _self_cnf(d, ext),
          "-out", os.path.join(d, "up-selfsigned.pem")])
    # a file with the server chain for servers that want cert+key in one file
    for base in ("pop", "other", "up"):
        with open(os.path.join(d, base + "-full.pem"), "wb") as f:
            for p in (base + ".pem", base + ".key"):
                with open(os.path.join(d, p), "rb") as g:
                    f.write(g.read())
        os.chmod(os.path.join(d, base + "-full.pem"), 0o600)
    return Certs(d)


def _self_cnf(d, extfile):
    p = os.path.join(d, "selfsigned.cnf")
    with open(extfile) as f:
        ext = f.read()
    with open(p, "w") as f:
        f.write("[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = up.test\n"
                "[v3_self]\n" + ext)
    return p


def describe(pem):
    """subject, issuer, dates and SAN of a certificate (for failure messages)."""
    return _run(["x509", "-in", pem, "-noout", "-subject", "-issuer", "-dates",
                 "-ext", "subjectAltName"]).decode()


if __name__ == "__main__":
    import sys
    import tempfile
    out = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="popgate-certs-")
    c = make_certs(out)
    for f in sorted(os.listdir(out)):
        if f.endswith(".pem") and not f.endswith("-full.pem"):
            print("==", f)
            print(describe(os.path.join(out, f)))
