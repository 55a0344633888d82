#!/usr/bin/python3
"""Quick check of bench.py's (b): sequential RETRs of 4 KiB messages over one
session, direct to Dovecot vs through popgate, a few interleaved rounds (the
order rotating), median of the per-round ratios. Reuses bench.py's set-up
(mailbox, Dovecot, popgate, client, CPU pinning); the big message is shrunk
to 1 MiB since it is not used. Takes a few seconds.

    /usr/bin/python3 tests/bench/seqretr.py [--rounds N] [--count N] [--quiet]
        [--tls] [--alt BIN] [--socat] [--strace DIR] [--perf FILE [--perf-side S]]

Besides RETR/s and the ratio it prints, per RETR, the proxy's CPU (schedstat,
all threads), the client's CPU and the CPUs' idle share during the passes.

--quiet       wait (up to 60 s) for idle CPUs before each round: on a shared
              VM a round next to other work is noise.
--tls         also through an implicit-TLS popgate (same binary).
--alt BIN     also through a second popgate binary: A/B in the same run.
--socat       also through socat -b 262144 (a byte relay that parses
              nothing: the floor of any relay on this machine).
--strace DIR  after the rounds, one more pass per side under strace -f -tt
              (SEQ_TRACE, default trace=network,read,write,epoll_wait,writev;
              trace=all shows epoll_ctl too) on popgate and on the Dovecot
              pop3 process of each session; prints syscalls per RETR.
--perf FILE   10 more passes of one side (--perf-side proxy, tls or alt)
              under perf record -g -F 20000.
POPGATE_BIN and BENCH_PIN as for bench.py. Run as root.
"""

import argparse
import collections
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

bench.BIG_SIZE = 1 << 20  # not measured here: keep the set-up quick


def pid_by_local_port(port):
    """PID of the process whose socket has local port `port` (ss -tnp)."""
    out = subprocess.run(["ss", "-tnpH", f"sport = :{port}"], capture_output=True,
                         text=True).stdout
    m = re.search(r"pid=(\d+)", out)
    return int(m.group(1)) if m else None


def peer_pids(port):
    """PIDs of the processes on the other end of connections to/from port."""
    out = subprocess.run(["ss", "-tnpH", f"dport = :{port}"], capture_output=True,
                         text=True).stdout
    return [int(p) for p in re.findall(r"pid=(\d+)", out)]


def cpu_idle():
    """Idle+iowait jiffies per CPU, from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for ln in f:
            if ln.startswith("cpu") and ln[3].isdigit():
                v = ln.split()
                out[int(v[0][3:])] = int(v[4]) + int(v[5])
    return out


def wait_quiet(limit=60.0):
    """Waits (at most limit s) until both CPUs are >= 95% idle over 0.3 s:
    this VM is shared, and a round next to other work is noise."""
    end = time.monotonic() + limit
    hz = os.sysconf("SC_CLK_TCK")
    while True:
        i0 = cpu_idle()
        time.sleep(0.3)
        i1 = cpu_idle()
        if all((i1[k] - i0[k]) / hz / 0.3 >= 0.95 for k in i1):
            return True
        if time.monotonic() > end:
            print("  (not quiet: measuring anyway)", flush=True)
            return False


CPU = collections.defaultdict(list)  # side -> [(proxy us/RETR, client us/RETR, cpu idle %)]


def pass_time(c, small, side=None, pid=None):
    i0 = cpu_idle()
    c0 = bench.tree_cpu_seconds(pid) if pid else 0.0
    p0 = time.process_time()
    t0 = time.perf_counter()
    for n in small:
        c.retr_count(n)
    dt = time.perf_counter() - t0
    if side is not None:
        i1 = cpu_idle()
        hz = os.sysconf("SC_CLK_TCK")
        CPU[side].append(((bench.tree_cpu_seconds(pid) - c0) * 1e6 / len(small) if pid else 0.0,
                          (time.process_time() - p0) * 1e6 / len(small),
                          {k: 100 * (i1[k] - i0[k]) / hz / dt for k in i1}))
    return len(small) / dt


def count_syscalls(path, nretr):
    """Counts of syscalls in an strace -f -tt file, per RETR."""
    cnt = collections.Counter()
    for ln in open(path):
        m = re.match(r"(?:\[pid\s+\d+\]\s+|\d+\s+)?[\d:.]+\s+(\w+)\(", ln)
        if m:
            cnt[m.group(1)] += 1
    return {k: v / nretr for k, v in sorted(cnt.items())}


def traced_pass(tag, c, small, pids, outdir):
    procs = []
    files = []
    for who, pid in pids:
        f = os.path.join(outdir, f"{tag}-{who}.strace")
        files.append((who, f))
        trace = os.environ.get("SEQ_TRACE", "trace=network,read,write,epoll_wait,writev")
        procs.append(subprocess.Popen(
            ["strace", "-f", "-tt", "-e", trace, "-o", f, "-p", str(pid)],
            stderr=subprocess.DEVNULL))
    time.sleep(1.0)
    rate = pass_time(c, small)
    time.sleep(0.3)
    for p in procs:
        p.terminate()
        p.wait()
    for who, f in files:
        cnt = count_syscalls(f, len(small))
        print(f"  {tag}: {who}: " + ", ".join(f"{k} {v:.2f}" for k, v in cnt.items())
              + f"  (per RETR; {rate:.0f} RETR/s traced)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--count", type=int, default=bench.SMALL_COUNT)
    ap.add_argument("--tls", action="store_true", help="also through an implicit-TLS popgate")
    ap.add_argument("--quiet", action="store_true",
                    help="before each round, wait until the CPUs are idle")
    ap.add_argument("--alt", metavar="BIN",
                    help="also through a second popgate binary (A/B in one run)")
    ap.add_argument("--socat", action="store_true", help="also through socat (byte relay floor)")
    ap.add_argument("--strace", metavar="DIR")
    ap.add_argument("--perf", metavar="FILE")
    ap.add_argument("--perf-side", default="proxy", help="proxy (default), tls or alt")
    args = ap.parse_args()

    binary = os.environ.get("POPGATE_BIN", "build/popgate")
    if not os.path.isabs(binary):
        binary = os.path.join(bench.REPO, binary)
    bench.raise_fd_limit()
    tmp = tempfile.mkdtemp(prefix="popgate-seqretr.")
    os.chmod(tmp, 0o755)
    procs = {}
    try:
        pin = bench.placement()
        dport, pport = bench.free_port(), bench.free_port()
        home = os.path.join(tmp, "mail", bench.USER)
        os.makedirs(home)
        bench.write_mailbox(home)
        procs["dovecot"] = bench.start_dovecot(tmp, dport, home, pin[2] if pin else None)
        procs["popgate"] = bench.start_popgate(tmp, binary, pport, dport,
                                               pin[1] if pin else None)
        sides = [("direct", dport), ("proxy", pport)]
        ctx = None
        if args.tls:
            certs = bench.make_certs(tmp)
            ctx, _ = bench.tls_context(certs["ca"])
            tport = bench.free_port()
            procs["popgate-tls"] = bench.start_popgate(
                tmp, binary, tport, dport, pin[1] if pin else None, sub="popgate-tls",
                template=bench.POPGATE_TLS_CONF, cert=certs["cert"], key=certs["key"])
            sides.append(("tls", tport))
        if args.alt:
            aport = bench.free_port()
            procs["popgate-alt"] = bench.start_popgate(tmp, os.path.abspath(args.alt), aport,
                                                       dport, pin[1] if pin else None,
                                                       sub="popgate-alt")
            sides.append(("alt", aport))
        if args.socat:
            sport = bench.free_port()
            procs["socat"] = bench.start_floor(tmp, sport, dport, pin[1] if pin else None)
            sides.append(("socat", sport))
        if pin:
            os.sched_setaffinity(0, pin[0])
        _, small = bench.locate(dport)
        small = small[: args.count]
        conns = {}
        for name, port in sides:
            c = bench.TLSClient(port, ctx) if name == "tls" else bench.Client(port)
            c.login()
            for n in small[:100]:
                c.retr_count(n)
            conns[name] = c
        rates = {name: [] for name, _ in sides}
        for r in range(args.rounds):
            if args.quiet:
                wait_quiet()
            order = [n for n, _ in sides]
            k = r % len(order)
            for name in order[k:] + order[:k]:
                pid = {"proxy": "popgate", "tls": "popgate-tls", "socat": "socat",
                       "alt": "popgate-alt"}.get(name)
                pid = procs[pid].pid if pid else None
                rates[name].append(pass_time(conns[name], small, name, pid))
        print(f"{len(small)} sequential RETRs of 4 KiB, {args.rounds} rounds, pinning "
              f"{'on' if pin else 'off'}, {os.path.basename(binary)}")
        for name, _ in sides:
            line = f"  {name:6s} RETR/s: " + " ".join(f"{x:.0f}" for x in rates[name])
            line += f"  median {statistics.median(rates[name]):.0f}"
            if name != "direct":
                ratios = [p / d for d, p in zip(rates["direct"], rates[name])]
                line += f"  ratio {statistics.median(ratios):.2f}x"
                line += " (" + " ".join(f"{x:.2f}" for x in ratios) + ")"
            print(line, flush=True)
            cp = CPU[name]
            print(f"         per RETR: proxy CPU {statistics.median(x[0] for x in cp):.1f} us,"
                  f" client CPU {statistics.median(x[1] for x in cp):.1f} us,"
                  f" wall {1e6 / statistics.median(rates[name]):.1f} us; idle %: "
                  + " ".join(f"cpu{k} {statistics.median(x[2][k] for x in cp):.0f}"
                             for k in sorted(cp[0][2])))

        if args.strace:
            os.makedirs(args.strace, exist_ok=True)
            dpop3 = peer_pids(conns["direct"].s.getsockname()[1])
            dpop3 = [p for p in dpop3 if p != procs["popgate"].pid]
            # popgate's upstream connection: the pop3 process on Dovecot's
            # side whose peer is popgate.
            out = subprocess.run(["ss", "-tnpH", f"sport = :{dport}"], capture_output=True,
                                 text=True).stdout
            ppop3 = None
            for ln in out.splitlines():
                peer = int(ln.split()[4].rsplit(":", 1)[1])
                if pid_by_local_port(peer) == procs["popgate"].pid:
                    m = re.search(r"pid=(\d+)", ln)
                    ppop3 = int(m.group(1)) if m else None
            traced_pass("direct", conns["direct"], small,
                        [("dovecot-pop3", dpop3[0])] if dpop3 else [], args.strace)
            traced_pass("proxy", conns["proxy"], small,
                        [("popgate", procs["popgate"].pid)]
                        + ([("dovecot-pop3", ppop3)] if ppop3 else []), args.strace)
            if args.tls:
                traced_pass("tls", conns["tls"], small,
                            [("popgate", procs["popgate-tls"].pid)], args.strace)
            if args.alt:
                traced_pass("alt", conns["alt"], small,
                            [("popgate", procs["popgate-alt"].pid)], args.strace)
        if args.perf:
            p = subprocess.Popen(["perf", "record", "-g", "-F", "20000", "-o", args.perf, "-p",
                                  str(procs[{"proxy": "popgate", "tls": "popgate-tls",
                                             "alt": "popgate-alt"}[args.perf_side]].pid)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            for _ in range(10):
                pass_time(conns[args.perf_side], small)
            p.send_signal(2)
            p.wait()
            print(f"  perf data in {args.perf}")
        for c in conns.values():
            c.cmd("QUIT")
            c.close()
        for name, p in procs.items():
            if p.poll() is not None:
                raise bench.BenchError(f"{name} died (exit {p.returncode})")
        return 0
    finally:
        for name in sorted(procs, key=lambda n: n == "dovecot"):
            bench.stop(procs[name], name)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
