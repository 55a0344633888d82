"""The mail corpus stored in the test Dovecot's maildirs.

CORPUS is an ordered list of (name, bytes): message number n (1-based) in
alice's mailbox is CORPUS[n-1]. Names: the 47 files
/usr/lib/python3.11/test/test_email/data/msg_*.txt by stem ("msg_01"...),
then generated edge cases. Stored bytes use LF line ends (like the files);
Dovecot sends CRLF whatever is stored, so byte-exactness is always judged
against what Dovecot returns directly for the same command.
"""

import glob
import hashlib
import os

EMAIL_DATA = "/usr/lib/python3.11/test/test_email/data"

BIG_SIZE = 50 * 1024 * 1024          # the 50 MiB message
LONG_LINE = 100 * 1024               # the 100 KiB line


def _hdr(subject, extra=b""):
    return (b"From: Corpus Generator <gen@example.test>\n"
            b"To: alice@example.test\n"
            b"Date: Thu, 26 Nov 2026 11:47:00 +0000\n"
            b"Message-ID: <" + subject.replace(b" ", b".") + b"@popgate.test>\n"
            b"Subject: " + subject + b"\n" + extra)


def big_message(size=BIG_SIZE):
    """Deterministic message of exactly `size` bytes (LF lines of 76 chars,
    every 97th line starts with a dot, a lone "." line every 1009 lines)."""
    head = _hdr(b"big fifty mebibytes", b"MIME-Version: 1.0\n"
                b"Content-Type: text/plain; charset=us-ascii\n") + b"\n"
    chunks = [head]
    total = len(head)
    i = 0
    seed = hashlib.sha256(b"popgate-big").digest()
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    block = bytes(alphabet[b % 64] for b in hashlib.sha256(seed).digest() * 40)
    while total < size:
        if i % 1009 == 1008:
            line = b".\n"
        else:
            off = (i * 7) % (len(block) - 80)
            line = block[off:off + 75] + b"\n"
            if i % 97 == 0:
                line = b"." + line[1:]
        i += 1
        if total + len(line) > size:
            line = b"x" * (size - total - 1) + b"\n" if size - total > 1 else b"\n"
        chunks.append(line)
        total += len(line)
    data = b"".join(chunks)
    assert len(data) == size
    return data


def edge_cases():
    E = []
    E.append(("dots", _hdr(b"dot lines") + b"\n"
              b"first\n.\n..\n.x\n...\n. space\n.\r\nmid\n.\n"))
    E.append(("dot_first_body_line", _hdr(b"dot first") + b"\n.\nafter\n"))
    E.append(("long_line", _hdr(b"long line") + b"\nbefore\n" +
              bytes((97 + (k % 26)) for k in range(LONG_LINE)) + b"\nafter\n"))
    E.append(("eight_bit", _hdr(b"eight bit", b"Content-Type: text/plain; charset=iso-8859-1\n"
                                b"Content-Transfer-Encoding: 8bit\n") + b"\n" +
              bytes(range(0x80, 0x100)) + b"\n\xe9t\xe9 \xff\xfe\n\xc3\xa9\xc3\xa0\n"))
    E.append(("control_bytes", _hdr(b"control bytes") + b"\n"
              b"nul:\x00:nul\nbell\x07 esc\x1b[0m del\x7f\nbare\rcr in line\n"))
    E.append(("no_final_newline", _hdr(b"no final newline") + b"\nline one\nlast line no LF"))
    E.append(("ends_with_dot_no_newline", _hdr(b"ends with dot") + b"\nline\n."))
    E.append(("empty_body", _hdr(b"empty body") + b"\n"))
    E.append(("headers_only", _hdr(b"headers only")))
    E.append(("crlf_stored", (_hdr(b"crlf stored") + b"\nline 1\n.\nline 3\n").replace(b"\n", b"\r\n")))
    E.append(("many_short_lines", _hdr(b"many short lines") + b"\n" +
              b"".join(b".\n" if k % 2 else b"\n" for k in range(20000))))
    E.append(("big_50m", big_message()))
    return E


def email_data():
    out = []
    for path in sorted(glob.glob(os.path.join(EMAIL_DATA, "msg_*.txt"))):
        with open(path, "rb") as f:
            out.append((os.path.basename(path)[:-4], f.read()))
    return out


def build():
    corpus = email_data() + edge_cases()
    names = [n for n, _ in corpus]
    assert len(set(names)) == len(names)
    return corpus


SMALL = ["msg_01", "msg_02", "dots", "no_final_newline", "eight_bit"]
