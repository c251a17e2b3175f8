#!/usr/bin/env bash
# mirror-failover.sh — what a failover costs when the next-active device holds many mirrored
# TCP connections (issue 15): in the seed cluster lab with connection mirroring, N idle
# connections go through device B (r1 routes the VIP through B), B mirrors them to C, then B
# hangs (kill -STOP) and C rebuilds the sockets — within its takeover_restore_budget before it
# takes tg-2's floating addresses, the rest right after.
#
# Usage: topologies/bench/mirror-failover.sh [--connections N] [--restore-budget D] [--no-build]
#        (as root)
#   --connections N     idle connections (default 10000; each is two sockets in lbd and two in
#                       this program, so RLIMIT_NOFILE's hard limit must allow ~2N + slack)
#   --restore-budget D  every lbd's takeover_restore_budget (humantime, e.g. 100ms; default:
#                       lbd's own, 1s)
#   --no-build          do not run cargo; use the release binaries as they are
#
# Output: how long mirroring took to hold them, when tg-2 was active on C, how many C rebuilt
# before the addresses and in how long, how many after (from its log), and how many
# connections answer an echo after the hang (p50/p99/max time from the hang); last line
# `failover with N mirrored connections ...`. Fails when fewer than 99 % survive. Everything
# runs in the lab's own namespaces, torn down at exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

die() { echo "mirror-failover.sh: $*" >&2; exit 2; }
connections=10000 build=1 budget=()
while [ $# -gt 0 ]; do
  case "$1" in
    --connections)
      [ $# -ge 2 ] || die "option $1 needs a value"
      case "$2" in '' | *[!0-9]* | 0) die "option $1 needs a positive number" ;; esac
      connections=$2; shift 2 ;;
    --restore-budget)
      [ $# -ge 2 ] || die "option $1 needs a value"
      case "$2" in '' | *[!0-9a-z]*) die "option $1 needs a duration such as 100ms" ;; esac
      budget=(--restore-budget "$2"); shift 2 ;;
    --no-build) build=0; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "mirror-failover.sh: needs root (the lab makes network namespaces)" >&2; exit 1; }
target="${CARGO_TARGET_DIR:-target}"
if [ "$build" = 1 ]; then
  cargo build --release --locked -p spanlb-lbd -p spanlb-bgpd >&2
  cargo build --release --locked -p spanlb-tests --bin mirror-failover >&2
fi
bench="$target/release/mirror-failover"
for b in "$bench" "$target/release/lbd" "$target/release/lbctl" "$target/release/bgpd"; do
  [ -x "$b" ] || { echo "mirror-failover.sh: $b is not built (run without --no-build)" >&2; exit 1; }
done
exec "$bench" --connections "$connections" "${budget[@]}"
