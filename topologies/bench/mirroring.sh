#!/usr/bin/env bash
# mirroring.sh — what mirroring costs lbd (issue 6): new connections per second of a virtual
# server with persistence and connection mirroring on, against the same virtual server with
# mirroring off, in the seed cluster lab (FRR router r1, devices A, B, C running bgpd + lbd,
# servers s1-s3; DESIGN.md §6), plus the mirroring channel's throughput (updates/s) and lag
# p99 under that load.
#
# Usage: sudo topologies/bench/mirroring.sh [--rounds N] [--duration S] [--threads N] [--no-build]
#   --rounds N     rounds; each runs both sides, alternating which goes first   (default 5)
#   --duration S   seconds of load per side and round                           (default 8)
#   --threads N    closed-loop client threads in the client namespace           (default 16)
#   --no-build     do not run cargo; use the release binaries as they are
# Defaults take about 3 minutes: the lab (~30 s), then 5 rounds x 2 x (8 s + settling).
#
# What is measured (tests/src/bin/mirror-bench.rs has the details):
#   * Two virtual servers on the VIP 30.1.1.10, identical but for mirroring: `on` (port 8101)
#     has hash persistence on the client's address:port (plugin `hash`, plugin_config =
#     "client") with mirror = true and TCP connection mirroring (mirror = true on the virtual
#     server); `off` (port 8102) the same profile with mirror = false and no connection
#     mirroring. Every connection comes from a new client port, so each makes a persistence
#     record update (a new record, or the refresh of an expired or aging one when a port comes
#     round again; the profiles' timeout is 10 s for that): the worst case for the channel.
#     The connections are shorter than the 100 ms quiet time before a TCP snapshot, so
#     connection mirroring costs them its per-connection check but no channel updates.
#   * r1 sends all the VIP's traffic through device B (a policy route set once the lab is
#     steady), so every connection is tg-2's and B mirrors it to C, tg-2's next-active.
#   * Each client thread connects, sends a line, reads the member's answer line and closes,
#     for --duration seconds. The client and device namespaces get a wide port range and
#     net.ipv4.tcp_tw_reuse=1 (TIME_WAIT must not starve them).
#   * During every run (both sides) a thread in B's namespace scrapes lbd's metrics
#     (127.0.0.1:9464 in each device's namespace) every 50 ms: lag p99 is over the
#     lbd_mirror_channel_lag_seconds samples of B's senders; updates/s is the growth of
#     their lbd_mirror_channel_last_update_id over the run (read once the channel caught up).
#   * A run with more than 1% errors, or with answers not coming through B, fails the script.
# Output: one line per round, a table of medians (side, conn/s median/min/max, errors,
# updates/s, offered/s, upd/conn, lag_p99_ms), and as the last line
# `mirroring conn/s ratio (on/off): X`. Aim: X >= 0.9.
#
# Everything runs in the lab's own network namespaces (uniquely named, torn down at exit, on
# failure too); nothing is sent outside them. Needs root, iproute2 and FRR (zebra, bgpd,
# vtysh); cargo unless --no-build. It shares the machine's cores with everything else: run
# it on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/../.."

die() { echo "mirroring.sh: $*" >&2; exit 2; }
rounds=5 duration=8 threads=16 build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds | --duration | --threads)
      [ $# -ge 2 ] || die "option $1 needs a value"
      case "$2" in '' | *[!0-9]* | 0) die "option $1 needs a positive number" ;; esac
      case "$1" in
        --rounds) rounds=$2 ;;
        --duration) duration=$2 ;;
        --threads) threads=$2 ;;
      esac
      shift 2 ;;
    --no-build) build=0; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

[ "$(id -u)" = 0 ] || { echo "mirroring.sh: needs root (the lab makes network namespaces)" >&2; exit 1; }
for t in /usr/lib/frr/zebra /usr/lib/frr/bgpd vtysh ip; do
  command -v "$t" >/dev/null || { echo "mirroring.sh: FRR and iproute2 are needed ($t is missing; apt-get install frr iproute2)" >&2; exit 1; }
done

target="${CARGO_TARGET_DIR:-target}"
if [ "$build" = 1 ]; then
  # The lab runs lbd, lbctl and bgpd from the benchmark binary's directory (release), and
  # copies the hash plugin's .so (built in release here; the harness builds it again, a no-op).
  cargo build --release --locked -p spanlb-lbd -p spanlb-bgpd -p spanlb-plugin-hash >&2
  cargo build --release --locked -p spanlb-tests --bin mirror-bench >&2
fi
bench="$target/release/mirror-bench"
for b in "$bench" "$target/release/lbd" "$target/release/lbctl" "$target/release/bgpd"; do
  [ -x "$b" ] || { echo "mirroring.sh: $b is not built (run without --no-build)" >&2; exit 1; }
done
exec "$bench" --rounds "$rounds" --duration "$duration" --threads "$threads"
