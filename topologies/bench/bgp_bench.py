#!/usr/bin/env python3
"""Helper for topologies/bench/bgp-announce.sh (standard library only).

Subcommands:
  gen OUTDIR COUNT NEXT_HOP
      Writes the workload for both speakers, generated once so both get the same prefixes:
        OUTDIR/announce.json  one bgpd control request: announce COUNT /32s (persistent)
        OUTDIR/withdraw.json  one bgpd control request: withdraw the same COUNT /32s
        OUTDIR/announce-lines.json, OUTDIR/withdraw-lines.json
                              the same as COUNT one-route requests (one JSON line each)
        OUTDIR/routes.mrt     the same COUNT /32s as an MRT TABLE_DUMP_V2 file for
                              `gobgp mrt inject global` (ORIGIN IGP, empty AS_PATH,
                              NEXT_HOP, source peer AS 0 = locally originated)
      Prefixes: 198.18.0.0/32, 198.18.0.1/32, ... (RFC 2544 benchmark range 198.18.0.0/15).
  send SOCKET FILE
      Sends FILE (JSON lines, one request each) to bgpd's control socket on one connection,
      pipelined (a thread writes while the responses are read), and exits 0 once every
      response says "ok":true. Bounded by a 300 s socket timeout.
  count VTY_DIR NEIGHBOR
      Prints FRR's state and pfxRcd for NEIGHBOR (run inside the router namespace).
  updates VTY_DIR NEIGHBOR
      Prints how many UPDATE messages FRR has received from NEIGHBOR (-1 if unknown).
  measure --vty-dir DIR --neighbor ADDR --target N [--timeout S] [--interval S] -- CMD...
      Run inside the router namespace's view (CMD is typically `ip netns exec SPEAKER_NS ...`).
      Takes t0, starts CMD, and polls FRR (`show bgp ipv4 unicast summary json`) every
      --interval seconds until the neighbor's pfxRcd == N. Prints one JSON line:
        {"converge_s": t(pfxRcd == N) - t0, "cmd_s": t(CMD exited) - t0, "polls": k}
      Fails (exit 1, one-line reason) on timeout, if CMD fails, or if the session leaves
      Established.
      --feed FILE --fifo PATH: FILE is read into memory before t0; after CMD starts it is
      written into the named pipe PATH (which CMD reads), and the pipe is held open until FRR
      has all N. Needed for `gobgp mrt inject` 3.10: it sends its AddPathStream messages and
      exits at EOF without CloseAndRecv(), so gobgpd loses whatever it had not yet read
      (measured: 478 of 1,000 routes lost). Held open, the client stays connected until every
      route has arrived; cmd_s is then not meaningful and reported as null.
"""

import ipaddress
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

FIRST = ipaddress.IPv4Address("198.18.0.0")
LIMIT = 1 << 17  # 198.18.0.0/15


def die(msg):
    print(f"bgp_bench.py: {msg}", file=sys.stderr)
    sys.exit(1)


def prefixes(count):
    if not 0 < count <= LIMIT:
        die(f"count {count} does not fit 198.18.0.0/15")
    base = int(FIRST)
    for i in range(count):
        yield str(ipaddress.IPv4Address(base + i))


def mrt_record(ts, subtype, body):
    # MRT common header (RFC 6396 §2): timestamp, type 13 = TABLE_DUMP_V2, subtype, length.
    return struct.pack("!IHHI", ts, 13, subtype, len(body)) + body


def gen(outdir, count, next_hop):
    nh = ipaddress.IPv4Address(next_hop)
    pfx = list(prefixes(count))
    with open(os.path.join(outdir, "announce.json"), "w") as f:
        routes = [{"prefix": f"{p}/32", "next_hop": str(nh)} for p in pfx]
        json.dump({"cmd": "announce", "routes": routes, "persistent": True}, f,
                  separators=(",", ":"))
        f.write("\n")
    with open(os.path.join(outdir, "withdraw.json"), "w") as f:
        routes = [{"prefix": f"{p}/32"} for p in pfx]
        json.dump({"cmd": "withdraw", "routes": routes}, f, separators=(",", ":"))
        f.write("\n")
    with open(os.path.join(outdir, "announce-lines.json"), "w") as f:
        for p in pfx:
            f.write(f'{{"cmd":"announce","routes":[{{"prefix":"{p}/32","next_hop":"{nh}"}}],'
                    f'"persistent":true}}\n')
    with open(os.path.join(outdir, "withdraw-lines.json"), "w") as f:
        for p in pfx:
            f.write(f'{{"cmd":"withdraw","routes":[{{"prefix":"{p}/32"}}]}}\n')
    ts = int(time.time())
    # PEER_INDEX_TABLE (RFC 6396 §4.3.1): collector id, empty view name, one peer:
    # type 0x02 (IPv4 address, 4-byte AS), BGP id 0.0.0.0, address 0.0.0.0, AS 0.
    # gobgp maps peer AS 0 to "no source peer", i.e. a locally originated path, which is what
    # `gobgp global rib add` creates too.
    peer = struct.pack("!B4s4sI", 0x02, bytes(4), bytes(4), 0)
    pit = struct.pack("!4sHH", nh.packed, 0, 1) + peer
    # Path attributes: ORIGIN IGP, AS_PATH empty (the speaker prepends its AS toward eBGP),
    # NEXT_HOP.
    attrs = (struct.pack("!BBBB", 0x40, 1, 1, 0)
             + struct.pack("!BBB", 0x40, 2, 0)
             + struct.pack("!BBB4s", 0x40, 3, 4, nh.packed))
    entry = struct.pack("!HIH", 0, ts, len(attrs)) + attrs
    with open(os.path.join(outdir, "routes.mrt"), "wb") as f:
        f.write(mrt_record(ts, 1, pit))
        for seq, p in enumerate(pfx):
            # RIB_IPV4_UNICAST (subtype 2): sequence, prefix length, prefix, entry count, entries.
            body = (struct.pack("!IB", seq, 32) + ipaddress.IPv4Address(p).packed
                    + struct.pack("!H", 1) + entry)
            f.write(mrt_record(ts, 2, body))


def send(sock_path, file):
    with open(file, "rb") as f:
        data = f.read()
    want = data.count(b"\n")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(300)
    werr = []

    def writer():
        try:
            s.sendall(data)
        except OSError as e:
            werr.append(e)

    try:
        s.connect(sock_path)
        t = threading.Thread(target=writer, daemon=True)
        t.start()
        rd = s.makefile("rb")
        n = 0
        first = None
        while n < want:
            line = rd.readline()
            if not line:
                die(f"bgpd closed the control connection after {n} of {want} responses"
                    f"{' (' + str(werr[0]) + ')' if werr else ''}")
            try:
                resp = json.loads(line)
            except ValueError:
                die(f"bad response from bgpd: {line[:300]!r}")
            if not resp.get("ok"):
                die(f"bgpd refused request {n + 1}: {resp.get('error')}")
            first = first or resp
            n += 1
        t.join(300)
    except OSError as e:
        die(f"control socket {sock_path}: {e}")
    finally:
        s.close()
    print(json.dumps({"responses": n, "first": first}))


def frr_peer(vty_dir, neighbor):
    """(state, pfxRcd) of `neighbor` in FRR's IPv4 unicast summary; ("?", -1) on error."""
    try:
        out = subprocess.run(
            ["vtysh", "--vty_socket", vty_dir, "-c", "show bgp ipv4 unicast summary json"],
            capture_output=True, timeout=20, check=False).stdout
        peer = json.loads(out).get("peers", {}).get(neighbor, {})
        return peer.get("state", "?"), int(peer.get("pfxRcd", -1))
    except (subprocess.TimeoutExpired, ValueError):
        return "?", -1


def frr_updates(vty_dir, neighbor):
    try:
        out = subprocess.run(
            ["vtysh", "--vty_socket", vty_dir, "-c", f"show bgp neighbors {neighbor} json"],
            capture_output=True, timeout=20, check=False).stdout
        return int(json.loads(out)[neighbor]["messageStats"]["updatesRecv"])
    except (subprocess.TimeoutExpired, ValueError, KeyError, TypeError):
        return -1


def measure(argv):
    opts = {"--timeout": "300", "--interval": "0.1"}
    while argv and argv[0] != "--":
        if len(argv) < 2:
            die("measure: option without value")
        opts[argv[0]] = argv[1]
        argv = argv[2:]
    cmd = argv[1:]
    if not cmd:
        die("measure: no command after --")
    vty_dir, neighbor = opts["--vty-dir"], opts["--neighbor"]
    target, timeout = int(opts["--target"]), float(opts["--timeout"])
    interval = float(opts["--interval"])
    log = open(opts.get("--cmd-log", os.devnull), "ab")
    feed = None
    if "--feed" in opts:
        with open(opts["--feed"], "rb") as f:
            feed = f.read()
        fifo = opts["--fifo"]
        if os.path.exists(fifo):
            os.unlink(fifo)
        os.mkfifo(fifo, 0o600)
        release = threading.Event()
        feed_err = []

        def feeder():
            try:
                fd = os.open(fifo, os.O_WRONLY)  # blocks until CMD opens it for reading
                with os.fdopen(fd, "wb") as w:
                    w.write(feed)
                    w.flush()
                    release.wait(timeout)
            except OSError as e:
                feed_err.append(e)

        threading.Thread(target=feeder, daemon=True).start()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    converge = cmd_s = None
    polls = 0
    last = (None, None)
    try:
        while True:
            now = time.monotonic()
            if cmd_s is None and proc.poll() is not None:
                cmd_s = now - t0
                if feed is not None and converge is None:
                    die(f"{' '.join(cmd)} exited before FRR had all routes"
                        f" (FRR state {last[0]}, pfxRcd {last[1]}; feeder {feed_err or 'ok'})")
                if proc.returncode != 0:
                    die(f"{' '.join(cmd)} exited with {proc.returncode}"
                        f" (see {opts.get('--cmd-log', 'its output')})")
            if converge is None:
                state, pfx = frr_peer(vty_dir, neighbor)
                polls += 1
                last = (state, pfx)
                if state == "Established" and pfx == target:
                    converge = time.monotonic() - t0
                    if feed is not None:
                        release.set()  # EOF for CMD: it may exit now
                elif state not in ("Established", "?"):
                    die(f"FRR session with {neighbor} left Established ({state}, pfxRcd {pfx})")
            if converge is not None and cmd_s is not None:
                break
            if time.monotonic() - t0 > timeout:
                die(f"timeout after {timeout:.0f} s: FRR state {last[0]}, pfxRcd {last[1]}"
                    f" (want {target}), command {'finished' if cmd_s is not None else 'running'}")
            time.sleep(interval)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(json.dumps({"converge_s": round(converge, 3),
                      "cmd_s": None if feed is not None else round(cmd_s, 3),
                      "polls": polls}))


def main():
    a = sys.argv[1:]
    if a[:1] == ["gen"] and len(a) == 4:
        gen(a[1], int(a[2]), a[3])
    elif a[:1] == ["send"] and len(a) == 3:
        send(a[1], a[2])
    elif a[:1] == ["count"] and len(a) == 3:
        state, pfx = frr_peer(a[1], a[2])
        print(f"{state} {pfx}")
    elif a[:1] == ["updates"] and len(a) == 3:
        print(frr_updates(a[1], a[2]))
    elif a[:1] == ["measure"]:
        measure(a[1:])
    else:
        die(__doc__.strip().splitlines()[0] + "; see the docstring for usage")


if __name__ == "__main__":
    main()
