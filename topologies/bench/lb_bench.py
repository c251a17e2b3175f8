#!/usr/bin/env python3
"""Helper for topologies/bench/lb-vs-haproxy.sh (standard library only).

Subcommands:
  ports N
      Prints N distinct TCP ports that are free on 127.0.0.1, picked at random in
      20000..(start of the kernel's ephemeral range), so that the load generator's and the
      proxies' outgoing connections never compete for them.
  exec -- CMD...
      Makes itself the leader of a new session (and process group) and execs CMD, so the pid
      the shell sees ($!) is CMD's pid, and the script can later stop CMD together with every
      process it forks (kill -- -PID) and sum the CPU time of the whole group.
  wait-ready --port P --pgid PID --name NAME [--timeout S] [--small-url U --small-body B]
             [--bulk-url U --bulk-size N]
      Waits (bounded, default 30 s) until 127.0.0.1:P accepts TCP connections, failing early
      if process PID has exited; then checks one GET of --small-url returns 200 with body B,
      and one GET of --bulk-url returns 200 with exactly N body bytes (the proxy passes the
      whole bulk file through; this also warms the page cache).
  run --raw FILE --round R --target NAME --workload conn|req|bulk --port P
      --duration S --threads T --conns C --bulk-conns C [--pgid PID] [--backend-pgid PID]
      [--max-error-pct X] [--log FILE] [--wrk PATH] [--warmup]
      Runs one wrk measurement against 127.0.0.1:P and appends one JSON line to FILE:
        conn  wrk -tT -cC -dS --latency -H 'Connection: close' http://127.0.0.1:P/
              (every request is a new TCP connection, so Requests/sec = connections/s)
        req   wrk -tT -cC -dS --latency http://127.0.0.1:P/       (keep-alive)
        bulk  wrk -tT -cC -dS --latency --timeout 60s http://127.0.0.1:P/bulk
              (C = --bulk-conns; Transfer/sec, counted per read, so partially
              transferred responses count too)
      CPU: user+system time (fields 14-17 of /proc/PID/stat: utime, stime, cutime, cstime)
      summed over every process whose process group is --pgid (the proxy; threads are
      included in their process's figures), sampled right before wrk starts and right after
      it exits; reported as % of one core over that interval and, for conn, as CPU ms per
      1,000 connections. The same for --backend-pgid (nginx), for wrk (getrusage of the
      children), for the whole machine (/proc/stat, busy % of all cores) and for everything
      else (machine busy time - wrk - nginx - proxy, % of one core: other jobs disturbing
      the run) go into the JSON; the last one is also logged and summarised by report.
      Fails (exit 1, one line saying why) if wrk fails, completes no request, or if its
      socket errors + non-2xx/3xx responses exceed --max-error-pct (default 1) % of the
      completed requests. The error counts are printed for every run either way.
      --warmup: run and check, but record nothing.
  report RAW [--json OUT] [--meta KEY=VALUE]...
      Prints the table of medians (rows direct, haproxy, lbd), the spread over rounds, and
      the ratio lines; the last line is `lbd/haproxy conn/s ratio: X`. With --json, writes
      {"meta", "runs" (every raw run), "medians", "ratios"} to OUT.
"""

import http.client
import json
import os
import random
import re
import resource
import socket
import statistics
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGETS = ("direct", "haproxy", "lbd")
WORKLOADS = ("conn", "req", "bulk")


def die(msg):
    print(f"lb_bench.py: {msg}", file=sys.stderr)
    sys.exit(1)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_opts(argv, flags=(), multi_keys=()):
    """--key value pairs (and bare --flags) up to an optional `--`; returns (dict, rest).
    A repeated key overrides the earlier value, except keys in multi_keys (-> list)."""
    opts = {}
    multi = {}
    while argv and argv[0] != "--":
        key = argv[0]
        if not key.startswith("--"):
            die(f"unexpected argument {key!r}")
        if key in flags:
            opts[key] = True
            argv = argv[1:]
            continue
        if len(argv) < 2:
            die(f"option {key} needs a value")
        if key in multi_keys:
            multi.setdefault(key, []).append(argv[1])
        opts[key] = argv[1]
        argv = argv[2:]
    for k, v in multi.items():
        opts[k] = v
    return opts, argv[1:]


def need(opts, key):
    if key not in opts:
        die(f"missing option {key}")
    return opts[key]


# ---------------------------------------------------------------- ports / exec

def ports(n):
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            eph_lo = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        eph_lo = 32768
    hi = max(min(eph_lo, 65535), 21000)
    candidates = random.sample(range(20000, hi), min(400, hi - 20000))
    got = []
    for p in candidates:  # bounded: at most 400 bind attempts
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", p))
            got.append(p)
        except OSError:
            pass
        finally:
            s.close()
        if len(got) == n:
            print(" ".join(map(str, got)))
            return
    die(f"could not find {n} free ports in 20000..{hi}")


def exec_cmd(cmd):
    if not cmd:
        die("exec: no command")
    try:
        os.setsid()
    except OSError:
        pass  # already a group leader: it has its own group anyway
    try:
        os.execvp(cmd[0], cmd)
    except OSError as e:
        die(f"cannot execute {cmd[0]}: {e}")


# ---------------------------------------------------------------- readiness

def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped by the shell) is dead too
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def http_get(port, path, timeout):
    """(status, body length, first 64 body bytes) of GET path, reading the body in 1 MiB chunks."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        n, head = 0, b""
        while True:
            chunk = resp.read(1 << 20)
            if not chunk:
                break
            if len(head) < 64:
                head += chunk[: 64 - len(head)]
            n += len(chunk)
        return resp.status, n, head
    finally:
        conn.close()


def wait_ready(argv):
    opts, _ = parse_opts(argv)
    port, name = int(need(opts, "--port")), need(opts, "--name")
    pid = int(opts.get("--pgid", "0"))
    timeout = float(opts.get("--timeout", "30"))
    t0 = time.monotonic()
    last = "no attempt"
    while True:
        if pid and not alive(pid):
            die(f"{name} (pid {pid}) exited before accepting connections on 127.0.0.1:{port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError as e:
            last = str(e)
        if time.monotonic() - t0 > timeout:
            die(f"timeout after {timeout:.0f} s waiting for {name} to accept connections on"
                f" 127.0.0.1:{port} (last error: {last})")
        time.sleep(0.1)
    try:
        if "--small-url" in opts:
            want = opts.get("--small-body", "").encode().decode("unicode_escape").encode()
            status, n, head = http_get(port, opts["--small-url"], 10)
            if status != 200 or head != want:
                die(f"{name}: GET {opts['--small-url']} via 127.0.0.1:{port} returned"
                    f" {status} {head!r}, expected 200 {want!r}")
        if "--bulk-url" in opts:
            want = int(opts["--bulk-size"])
            status, n, _ = http_get(port, opts["--bulk-url"], 60)
            if status != 200 or n != want:
                die(f"{name}: GET {opts['--bulk-url']} via 127.0.0.1:{port} returned"
                    f" {status} with {n} bytes, expected 200 with {want}")
    except (OSError, http.client.HTTPException) as e:
        die(f"{name}: HTTP check via 127.0.0.1:{port} failed: {e}")
    if pid and not alive(pid):
        die(f"{name} (pid {pid}) exited during the readiness check")


# ---------------------------------------------------------------- CPU sampling

def group_cpu_s(pgid):
    """utime+stime+cutime+cstime in seconds over all processes in process group pgid."""
    if not pgid:
        return None
    ticks = 0
    found = False
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the comm: [0] state, [1] ppid, [2] pgrp, ... [11..14] utime stime cutime cstime
        if int(fields[2]) == pgid:
            found = True
            ticks += sum(int(x) for x in fields[11:15])
    return ticks / CLK_TCK if found else None


def system_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    total = sum(v[:8])  # user nice system idle iowait irq softirq steal
    return total, total - v[3] - v[4]


# ---------------------------------------------------------------- wrk

TIME_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}
BIN_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


def to_ms(num, unit):
    return float(num) * TIME_UNITS[unit]


def parse_wrk(out):
    """Parses wrk 4.x text output (the default report, with --latency)."""
    r = {}
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h), ([\d.]+)([KMGTP]?)B read",
                  out, re.M)
    if not m:
        raise ValueError("no 'N requests in T, X read' line")
    r["requests"] = int(m.group(1))
    r["wrk_time_s"] = to_ms(m.group(2), m.group(3)) / 1000
    r["bytes_read"] = int(float(m.group(4)) * BIN_UNITS[m.group(5)])
    m = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if not m:
        raise ValueError("no Requests/sec line")
    r["rps"] = float(m.group(1))
    m = re.search(r"^Transfer/sec:\s+([\d.]+)([KMGTP]?)B", out, re.M)
    if not m:
        raise ValueError("no Transfer/sec line")
    r["mib_s"] = float(m.group(1)) * BIN_UNITS[m.group(2)] / (1 << 20)
    pct = {}
    dist = out.split("Latency Distribution", 1)
    if len(dist) == 2:
        for m in re.finditer(r"^\s*(\d+)%\s+([\d.]+)(us|ms|s|m|h)\s*$", dist[1], re.M):
            pct[m.group(1)] = to_ms(m.group(2), m.group(3))
    if "99" not in pct:
        raise ValueError("no 99% line in the Latency Distribution (was --latency given?)")
    r["p50_ms"], r["p99_ms"] = pct.get("50"), pct["99"]
    errs = {"connect": 0, "read": 0, "write": 0, "timeout": 0, "non2xx3xx": 0}
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errs.update(connect=int(m.group(1)), read=int(m.group(2)), write=int(m.group(3)),
                    timeout=int(m.group(4)))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errs["non2xx3xx"] = int(m.group(1))
    r["errors"] = errs
    return r


def wrk_cmd(wrk, workload, port, duration, threads, conns, bulk_conns):
    base = [wrk, f"-t{threads}", f"-d{duration}s", "--latency"]
    if workload == "conn":
        return base + [f"-c{conns}", "-H", "Connection: close", f"http://127.0.0.1:{port}/"]
    if workload == "req":
        return base + [f"-c{conns}", f"http://127.0.0.1:{port}/"]
    if workload == "bulk":
        return base + [f"-c{bulk_conns}", "--timeout", "60s", f"http://127.0.0.1:{port}/bulk"]
    die(f"unknown workload {workload}")


def run(argv):
    opts, _ = parse_opts(argv, flags=("--warmup",))
    workload, target = need(opts, "--workload"), need(opts, "--target")
    port, duration = int(need(opts, "--port")), int(need(opts, "--duration"))
    threads, conns = int(need(opts, "--threads")), int(need(opts, "--conns"))
    bulk_conns = int(need(opts, "--bulk-conns"))
    pgid, bpgid = int(opts.get("--pgid", "0")), int(opts.get("--backend-pgid", "0"))
    max_err = float(opts.get("--max-error-pct", "1"))
    warm = opts.get("--warmup", False)
    rnd = int(opts.get("--round", "0"))
    cmd = wrk_cmd(opts.get("--wrk", "wrk"), workload, port, duration, threads, conns, bulk_conns)

    if pgid and group_cpu_s(pgid) is None:
        die(f"{target} (process group {pgid}) is not running before the {workload} run")
    c0, b0, s0 = group_cpu_s(pgid), group_cpu_s(bpgid), system_ticks()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 90,
                           check=False)
    except subprocess.TimeoutExpired:
        die(f"{target} {workload}: wrk did not finish within {duration + 90} s")
    t1 = time.monotonic()
    c1, b1, s1 = group_cpu_s(pgid), group_cpu_s(bpgid), system_ticks()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = t1 - t0
    if "--log" in opts:
        with open(opts["--log"], "a") as f:
            f.write(f"### round {rnd} {target} {workload}: {' '.join(cmd)} (exit {p.returncode})\n")
            f.write(p.stdout + p.stderr + "\n")
    if p.returncode != 0:
        die(f"{target} {workload}: wrk exited with {p.returncode}: {p.stderr.strip()[:300]}")
    try:
        r = parse_wrk(p.stdout)
    except ValueError as e:
        die(f"{target} {workload}: cannot parse wrk output ({e}):\n{p.stdout[-1500:]}")
    if pgid and c1 is None:
        die(f"{target} (process group {pgid}) exited during the {workload} run")

    e = r["errors"]
    n_err = sum(e.values())
    err_pct = 100.0 * n_err / r["requests"] if r["requests"] else 100.0
    rec = {"round": rnd, "target": target, "workload": workload, "wrk": cmd,
           "wall_s": round(wall, 3), **r, "error_count": n_err, "error_pct": round(err_pct, 4)}
    rec["proxy_cpu_s"] = None if c0 is None else round(c1 - c0, 2)
    rec["proxy_cpu_pct"] = None if c0 is None else round(100 * (c1 - c0) / wall, 1)
    rec["proxy_cpu_ms_per_1k_conn"] = (
        round((c1 - c0) * 1000 / (r["requests"] / 1000), 2)
        if c0 is not None and workload == "conn" and r["requests"] else None)
    rec["backend_cpu_pct"] = (None if b0 is None or b1 is None
                              else round(100 * (b1 - b0) / wall, 1))
    wrk_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    rec["wrk_cpu_pct"] = round(100 * wrk_cpu / wall, 1)
    dt, db = s1[0] - s0[0], s1[1] - s0[1]
    rec["system_busy_pct"] = round(100 * db / dt, 1) if dt else None
    # CPU time the machine spent outside wrk, nginx and the proxy (another job, kernel threads),
    # in % of one core: should stay near 0 on an idle machine.
    ours = wrk_cpu + (b1 - b0 if b0 is not None and b1 is not None else 0) + (
        c1 - c0 if c0 is not None else 0)
    # (clamped at 0: the per-process and per-machine tick counts can differ by a tick or two)
    rec["other_cpu_pct"] = max(0.0, round(100 * (db / CLK_TCK - ours) / wall, 1))

    main = (f"{r['mib_s']:.1f} MiB/s" if workload == "bulk"
            else f"{r['rps']:.0f} {'conn' if workload == 'conn' else 'req'}/s")
    cpu = "" if rec["proxy_cpu_pct"] is None else f", proxy CPU {rec['proxy_cpu_pct']:.0f}%"
    log(f"{'warm-up' if warm else f'round {rnd}'} {workload:<4} {target:<7}: {main},"
        f" p99 {r['p99_ms']:.2f} ms, {r['requests']} requests, errors connect {e['connect']}"
        f" read {e['read']} write {e['write']} timeout {e['timeout']}"
        f" non-2xx/3xx {e['non2xx3xx']} ({err_pct:.2f}%){cpu},"
        f" other processes {rec['other_cpu_pct']:.0f}%")
    if r["requests"] == 0:
        die(f"{target} {workload}: wrk completed no request in {duration} s")
    if err_pct > max_err:
        die(f"{target} {workload}: {n_err} errors in {r['requests']} requests ({err_pct:.2f}%"
            f" > {max_err}%): connect {e['connect']}, read {e['read']}, write {e['write']},"
            f" timeout {e['timeout']}, non-2xx/3xx {e['non2xx3xx']}")
    if not warm:
        with open(need(opts, "--raw"), "a") as f:
            f.write(json.dumps(rec) + "\n")


# ---------------------------------------------------------------- report

COLUMNS = [  # (header, workload, field, format)
    ("conn/s", "conn", "rps", "{:.0f}"),
    ("conn_p99_ms", "conn", "p99_ms", "{:.2f}"),
    ("req/s", "req", "rps", "{:.0f}"),
    ("req_p99_ms", "req", "p99_ms", "{:.2f}"),
    ("MiB/s", "bulk", "mib_s", "{:.1f}"),
    ("CPU%", "conn", "proxy_cpu_pct", "{:.0f}"),
    ("cpu_ms/1k_conn", "conn", "proxy_cpu_ms_per_1k_conn", "{:.1f}"),
    ("req_CPU%", "req", "proxy_cpu_pct", "{:.0f}"),
    ("bulk_CPU%", "bulk", "proxy_cpu_pct", "{:.0f}"),
]


def ratio(a, b):
    if a is None or b is None:
        return None
    return a / b if b > 0 else float("inf")


def report(argv):
    if not argv:
        die("report: RAW file missing")
    raw = argv[0]
    opts, _ = parse_opts(argv[1:], multi_keys=("--meta",))
    runs = []
    with open(raw) as f:
        for line in f:
            if line.strip():
                runs.append(json.loads(line))
    if not runs:
        die(f"report: no runs in {raw}")
    meta = dict(m.split("=", 1) for m in opts.get("--meta", []))

    def values(target, workload, field):
        return [r[field] for r in runs if r["target"] == target and r["workload"] == workload
                and r.get(field) is not None]

    med = {}
    for t in TARGETS:
        med[t] = {}
        for w in WORKLOADS:
            for field in ("rps", "p50_ms", "p99_ms", "mib_s", "proxy_cpu_pct",
                          "proxy_cpu_ms_per_1k_conn", "backend_cpu_pct", "wrk_cpu_pct",
                          "system_busy_pct", "other_cpu_pct",
                          "error_count"):
                v = values(t, w, field)
                med[t][f"{w}_{field}"] = statistics.median(v) if v else None
            med[t][f"{w}_runs"] = len(values(t, w, "rps"))

    hdr = ["target"] + [c[0] for c in COLUMNS]
    rows = []
    for t in TARGETS:
        row = [t]
        for _, w, field, fmt in COLUMNS:
            v = med[t][f"{w}_{field}"]
            row.append("-" if v is None else fmt.format(v))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows + [hdr]) for i in range(len(hdr))]
    line = lambda r: "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i])
                               for i, c in enumerate(r))
    rounds = max(r["round"] for r in runs)
    print(f"medians of {rounds} round(s); CPU% = the proxy's user+sys CPU, % of one core, over"
          f" the run (conn/s run unless named)")
    print(line(hdr))
    for r in rows:
        print(line(r))
    print("spread over rounds (min..max):")
    for t in TARGETS:
        parts = []
        for w, field, unit, fmt in (("conn", "rps", "conn/s", "{:.0f}"),
                                    ("conn", "p99_ms", "ms conn p99", "{:.2f}"),
                                    ("req", "rps", "req/s", "{:.0f}"),
                                    ("bulk", "mib_s", "MiB/s", "{:.1f}")):
            v = values(t, w, field)
            if v:
                parts.append(f"{fmt.format(min(v))}..{fmt.format(max(v))} {unit}")
        if parts:
            print(f"  {t:<8} " + ", ".join(parts))
    other = [r["other_cpu_pct"] for r in runs if r.get("other_cpu_pct") is not None]
    if other:
        print(f"CPU used by other processes during the runs (% of one core, ~0 on an idle"
              f" machine): median {statistics.median(other):.0f}, max {max(other):.0f}")

    L, H = med["lbd"], med["haproxy"]
    ratios = {
        "req/s": ratio(L["req_rps"], H["req_rps"]),
        "throughput": ratio(L["bulk_mib_s"], H["bulk_mib_s"]),
        "p99 (req)": ratio(L["req_p99_ms"], H["req_p99_ms"]),
        "p99 (conn)": ratio(L["conn_p99_ms"], H["conn_p99_ms"]),
        "conn/s": ratio(L["conn_rps"], H["conn_rps"]),
    }
    if "--json" in opts:
        with open(opts["--json"], "w") as f:
            json.dump({"meta": meta, "runs": runs, "medians": med,
                       "ratios": {k: None if v is None else round(v, 4)
                                  for k, v in ratios.items()}}, f, indent=1)
            f.write("\n")
    print("aim: conn/s >= 1.20, throughput >= 1.00, p99 (conn) <= 1.00 (lbd/haproxy)")
    for k, v in ratios.items():
        print(f"lbd/haproxy {k} ratio: {'-' if v is None else f'{v:.2f}'}")


def main():
    a = sys.argv[1:]
    if a[:1] == ["ports"] and len(a) == 2:
        ports(int(a[1]))
    elif a[:1] == ["exec"] and a[1:2] == ["--"]:
        exec_cmd(a[2:])
    elif a[:1] == ["wait-ready"]:
        wait_ready(a[1:])
    elif a[:1] == ["run"]:
        run(a[1:])
    elif a[:1] == ["report"]:
        report(a[1:])
    else:
        die(__doc__.strip().splitlines()[0] + "; see the docstring for usage")


if __name__ == "__main__":
    main()
