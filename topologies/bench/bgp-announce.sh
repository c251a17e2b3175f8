#!/usr/bin/env bash
# bgp-announce.sh — how fast do bgpd (spanlb) and gobgpd (Debian) announce and withdraw
# 100,000 /32 prefixes to an FRR router?
#
# Usage (as root): topologies/bench/bgp-announce.sh        (env: COUNT=100000, KEEP=1 keeps the work dir)
#
# Topology (created by this script, removed on exit, also on error or Ctrl-C):
#
#     netns R (FRR 8.4 zebra + bgpd, AS 65000)            netns S (the speaker, AS 65001)
#     eth0 20.1.1.1/24  <------------ veth ------------>  eth0 20.1.1.6/24
#
# All traffic stays on that veth pair and on the namespaces' loopbacks (gobgp's gRPC API at
# 127.0.0.1:50051 inside S). Nothing is configured in the host namespace.
#
# Fairness — both speakers get exactly the same treatment:
#   * Each speaker runs in a fresh pair of namespaces with a freshly started FRR (zebra + bgpd,
#     the same frr.conf: eBGP neighbor 20.1.1.6, `no bgp ebgp-requires-policy`, connect timer
#     1 s; zebra installs the received routes in R's kernel FIB, as in the lab).
#   * Each speaker is configured alike: one eBGP neighbor 20.1.1.1 AS 65000, IPv4 unicast only,
#     no ADD-PATH, hold time 90 s, started with no routes. The measurement starts only once FRR
#     reports the session Established with pfxRcd 0.
#   * The same 100,000 prefixes (198.18.0.0/32 .. 198.19.134.159/32, RFC 2544 range, only inside
#     the namespaces), ORIGIN IGP, NEXT_HOP 20.1.1.6, no communities/MED, generated once by
#     bgp_bench.py, are handed to each speaker through ONE bulk call of its own local API:
#       bgpd:   one JSON request on its control socket: {"cmd":"announce","routes":[100k],
#               "persistent":true} (bgp_bench.py send)
#       gobgpd: one `gobgp mrt inject global` — a single gRPC AddPathStream call carrying the
#               same routes from an MRT TABLE_DUMP_V2 file (locally originated, like
#               `gobgp global rib add`, which would be one process per prefix). gobgp 3.10's
#               client exits at EOF without waiting for gobgpd (no CloseAndRecv), which loses
#               the routes gobgpd had not read yet (measured: 478 of 1,000). So the file is fed
#               through a named pipe that is held open until FRR has all routes; the client
#               thus stays connected, and gobgpd reads the stream at its own pace.
#     Withdraw-all is likewise one call: bgpd {"cmd":"withdraw","routes":[100k]} /
#     `gobgp global rib -a ipv4 del all`.
#   * gobgp's stream carries one path per message (one MRT record each), while the bgpd row gets
#     one request with every route. So a third row, bgpd-lines, gives bgpd the stream's shape:
#     100,000 one-route announce requests (then 100,000 one-route withdraws) written back to
#     back on one control connection, responses read concurrently. The ratio on the last line
#     is bgpd (one batch) / gobgpd, each speaker's bulk path; the line before it gives
#     bgpd-lines / gobgpd.
#   * Client start-up (python3 / the gobgp binary, via `ip netns exec S`) is inside the timed
#     interval for both.
#
# Measurement (bgp_bench.py measure, run inside R): t0 is taken just before the client is
# started; FRR is polled every 100 ms with `vtysh -c "show bgp ipv4 unicast summary json"`;
# announce_s = first poll with the neighbor's pfxRcd == 100000, withdraw_s = first poll with
# pfxRcd == 0 (resolution ~0.1 s plus one vtysh call). api_s columns: when the client's call
# returned (the speaker accepted the request; routes may still be in flight; "-" for the gobgp
# MRT inject, whose return is held back by the pipe, see above). Every wait is
# bounded (300 s). peak_rss_MiB = VmHWM from /proc/PID/status of the speaker daemon (bgpd /
# gobgpd, not the client) read after the withdraw, i.e. the peak over the whole run.
# Extra columns: cpu_s = the speaker's user+system CPU time over the run (/proc/PID/stat);
# announce_updates = UPDATE messages FRR counted from the speaker during the announce
# (`show bgp neighbors 20.1.1.6 json`, messageStats.updatesRecv), i.e. how well it packs NLRI.
# The last output line is `bgpd/gobgpd announce-time ratio: X` (X < 1: bgpd is faster).
# Rounds run in the order bgpd, gobgpd, bgpd-lines; a whole run takes about a minute. The
# figures are wall-clock times on a shared host: run it on an idle machine, and more than once.
#
# Prerequisites (checked; missing -> one line on stderr, exit 2): root, iproute2, python3,
# cargo, FRR (/usr/lib/frr/zebra, /usr/lib/frr/bgpd, vtysh, user frr), gobgpd, gobgp.
# The script builds bgpd with `cargo build --release -p spanlb-bgpd --bins` in the workspace
# root and runs ${CARGO_TARGET_DIR:-<root>/target}/release/bgpd.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
HELPER="$HERE/bgp_bench.py"
COUNT=${COUNT:-100000}
WAIT=300                 # seconds, maximum for any single wait
R_ADDR=20.1.1.1
S_ADDR=20.1.1.6
R_AS=65000
S_AS=65001
TAG="bab$$"              # unique per run: namespaces ${TAG}<round>r / ${TAG}<round>s (FRR -N the same)

die() { echo "bgp-announce: $*" >&2; exit 2; }
fail() { echo "bgp-announce: $*" >&2; exit 1; }
log() { echo "[$(date +%T)] $*" >&2; }

# ---------------------------------------------------------------- prerequisites
[[ $(id -u) == 0 ]] || die "must run as root (network namespaces, FRR)"
for t in ip python3 vtysh gobgpd gobgp cargo; do
    command -v "$t" >/dev/null 2>&1 || die "missing prerequisite: $t"
done
for t in /usr/lib/frr/zebra /usr/lib/frr/bgpd; do
    [[ -x $t ]] || die "missing prerequisite: $t (install frr)"
done
id frr >/dev/null 2>&1 || die "missing prerequisite: user frr (install frr)"
[[ -f $HELPER ]] || die "missing helper $HELPER"
[[ $COUNT =~ ^[0-9]+$ && $COUNT -ge 1 && $COUNT -le 131072 ]] || die "COUNT must be 1..131072"

# ---------------------------------------------------------------- state and cleanup
WORK=$(mktemp -d /tmp/bgp-announce.XXXXXX)
chmod 755 "$WORK"
SPEAKER_PID=""
RNS="" SNS="" FRRDIR=""

# Kills the processes this script started, by pid: the speaker, FRR (pid files of our
# instance, checked against the command line), anything left inside our own namespaces.
stop_pid() {
    local pid=$1 i
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
}

teardown() {
    stop_pid "$SPEAKER_PID"
    SPEAKER_PID=""
    if [[ -n $FRRDIR ]]; then
        local d pid
        for d in bgpd zebra; do
            pid=$(cat "$FRRDIR/$d.pid" 2>/dev/null || true)
            if [[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$FRRDIR"; then
                stop_pid "$pid"
            fi
        done
    fi
    local ns pid
    for ns in $RNS $SNS; do
        ip netns list 2>/dev/null | grep -qw "^$ns" || continue
        for pid in $(ip netns pids "$ns" 2>/dev/null); do stop_pid "$pid"; done
        ip netns del "$ns" 2>/dev/null || true
    done
    [[ -n $RNS && -d /run/frr/$RNS ]] && rm -rf "/run/frr/$RNS"
    RNS="" SNS="" FRRDIR=""
}

on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    teardown
    if [[ ${KEEP:-0} == 1 || $rc != 0 ]]; then
        echo "bgp-announce: logs and configs kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- build bgpd
log "building bgpd (cargo build --release -p spanlb-bgpd --bins)"
(cd "$ROOT" && cargo build --release -p spanlb-bgpd --bins) >"$WORK/cargo.log" 2>&1 ||
    { tail -n 30 "$WORK/cargo.log" >&2; fail "cargo build failed"; }
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $TARGET_DIR == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
BGPD="$TARGET_DIR/release/bgpd"
[[ -x $BGPD ]] || fail "$BGPD not found after the build"

# ---------------------------------------------------------------- workload (same for both)
log "generating $COUNT /32 routes (198.18.0.0/15, next hop $S_ADDR)"
python3 "$HELPER" gen "$WORK" "$COUNT" "$S_ADDR" || fail "workload generation failed"

# ---------------------------------------------------------------- lab per speaker
# wait_for SECONDS WHAT CMD...: polls CMD every 0.2 s, bounded.
wait_for() {
    local secs=$1 what=$2 i
    shift 2
    for ((i = 0; i < secs * 5; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    fail "timeout after ${secs}s waiting for $what"
}

vtysh_r() { ip netns exec "$RNS" vtysh --vty_socket "$FRRDIR" "$@"; }

frr_state() { ip netns exec "$RNS" python3 "$HELPER" count "$FRRDIR" "$S_ADDR"; }
frr_updates() { ip netns exec "$RNS" python3 "$HELPER" updates "$FRRDIR" "$S_ADDR"; }
upd_delta() { if [[ $1 -ge 0 && $2 -ge 0 ]]; then echo $(($2 - $1)); else echo "?"; fi; }
# cpu_s PID: user + system CPU seconds the process has used so far.
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat"; }

setup_lab() { # $1: round name
    RNS="${TAG}$1r"
    SNS="${TAG}$1s"
    ip netns add "$RNS"
    ip netns add "$SNS"
    ip -n "$RNS" link add eth0 type veth peer name eth0 netns "$SNS"
    ip -n "$RNS" addr add "$R_ADDR/24" dev eth0
    ip -n "$SNS" addr add "$S_ADDR/24" dev eth0
    for ns in "$RNS" "$SNS"; do
        ip -n "$ns" link set lo up
        ip -n "$ns" link set eth0 up
    done

    FRRDIR="$WORK/frr-$1"
    mkdir -p "$FRRDIR"
    cat >"$FRRDIR/frr.conf" <<EOF
frr defaults traditional
hostname r1
!
router bgp $R_AS
 bgp router-id $R_ADDR
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor $S_ADDR remote-as $S_AS
 neighbor $S_ADDR timers connect 1
 address-family ipv4 unicast
  neighbor $S_ADDR activate
 exit-address-family
!
EOF
    chown -R frr:frr "$FRRDIR"
    local d
    for d in zebra bgpd; do
        ip netns exec "$RNS" "/usr/lib/frr/$d" -d -N "$RNS" -i "$FRRDIR/$d.pid" \
            --vty_socket "$FRRDIR" -f "$FRRDIR/frr.conf" -z "$FRRDIR/zserv.api" \
            --log "file:$FRRDIR/$d.log" >>"$FRRDIR/$d.out" 2>&1 ||
            fail "FRR $d did not start (see $FRRDIR/$d.log)"
        wait_for 15 "FRR $d to answer vtysh" vtysh_r -d "$d" -c "show version"
    done
}

wait_established() {
    local i out
    for ((i = 0; i < 60 * 5; i++)); do
        out=$(frr_state 2>/dev/null || true)
        [[ $out == "Established 0" ]] && return 0
        kill -0 "$SPEAKER_PID" 2>/dev/null || fail "$1 exited before the session came up (see $WORK/$1.log)"
        sleep 0.2
    done
    fail "timeout after 60s waiting for FRR to report $1 Established with 0 prefixes (last: $out)"
}

# measure NAME KIND TARGET [measure options] -- CMD...: runs bgp_bench.py measure inside R;
# echoes its JSON line.
measure() {
    local name=$1 kind=$2 target=$3
    shift 3
    ip netns exec "$RNS" python3 "$HELPER" measure --vty-dir "$FRRDIR" --neighbor "$S_ADDR" \
        --target "$target" --timeout "$WAIT" --interval 0.1 --cmd-log "$WORK/$name-$kind-client.log" \
        "$@" ||
        fail "$name $kind failed (client log $WORK/$name-$kind-client.log, speaker log $WORK/$name.log, FRR $FRRDIR/bgpd.log)"
}

# json_get JSON KEY: the value, "-" for null.
json_get() {
    python3 -c 'import json,sys; v = json.loads(sys.argv[1])[sys.argv[2]]; print("-" if v is None else v)' "$1" "$2"
}

hwm_mib() {
    awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null ||
        fail "cannot read VmHWM of pid $1"
}

declare -A ANN ANN_API WDR WDR_API RSS CPU UPD

finish_round() { # $1 name, $2 announce json, $3 withdraw json, $4 UPDATEs for the announce
    local name=$1
    UPD[$name]=$4
    CPU[$name]=$(cpu_s "$SPEAKER_PID")
    ANN[$name]=$(json_get "$2" converge_s)
    ANN_API[$name]=$(json_get "$2" cmd_s)
    WDR[$name]=$(json_get "$3" converge_s)
    WDR_API[$name]=$(json_get "$3" cmd_s)
    kill -0 "$SPEAKER_PID" 2>/dev/null || fail "$name exited during the run (see $WORK/$name.log)"
    RSS[$name]=$(hwm_mib "$SPEAKER_PID")
    log "$name: announce ${ANN[$name]} s (API call returned after ${ANN_API[$name]} s, ${UPD[$name]} UPDATEs), withdraw ${WDR[$name]} s (API ${WDR_API[$name]} s), peak RSS ${RSS[$name]} MiB, CPU ${CPU[$name]} s"
}

sample_route() { # checks one received route: next hop and AS path as expected
    local out
    out=$(vtysh_r -c "show bgp ipv4 unicast 198.18.0.1/32 json") || fail "cannot read 198.18.0.1/32 from FRR"
    python3 - "$out" "$S_ADDR" "$S_AS" "$1" <<'EOF' || exit 1
import json, sys
out, nh, asn, name = sys.argv[1:]
paths = json.loads(out).get("paths", [])
if not paths:
    sys.exit(f"bgp-announce: {name}: FRR has no path for 198.18.0.1/32")
p = paths[0]
got_nh = p.get("nexthops", [{}])[0].get("ip")
got_as = p.get("aspath", {}).get("string")
if got_nh != nh or got_as != asn:
    sys.exit(f"bgp-announce: {name}: 198.18.0.1/32 has next hop {got_nh}, AS path {got_as};"
             f" expected {nh}, {asn}")
EOF
}

# ---------------------------------------------------------------- bgpd rounds
# run_bgpd NAME ROUND ANNOUNCE_FILE WITHDRAW_FILE
run_bgpd() {
    local name=$1 round=$2 ann=$3 wdr=$4
    log "$name: lab up"
    setup_lab "$round"
    local sock="$WORK/$name.sock"
    cat >"$WORK/$name.toml" <<EOF
router_id = "$S_ADDR"
local_as = $S_AS
listen = ["$S_ADDR:179"]
control_socket = "$sock"

[[neighbor]]
address = "$R_ADDR"
remote_as = $R_AS
local_address = "$S_ADDR"
hold_time = 90
connect_retry = 1
families = ["ipv4-unicast"]
EOF
    RUST_LOG=info ip netns exec "$SNS" "$BGPD" --config "$WORK/$name.toml" >"$WORK/$name.log" 2>&1 &
    SPEAKER_PID=$!
    wait_established "$name"
    [[ -S $sock ]] || fail "bgpd control socket $sock missing (see $WORK/$name.log)"
    log "$name: session Established; announcing $COUNT routes ($ann)"
    local a w u0 u1
    u0=$(frr_updates)
    a=$(measure "$name" announce "$COUNT" -- ip netns exec "$SNS" python3 "$HELPER" send "$sock" "$WORK/$ann")
    u1=$(frr_updates)
    sample_route "$name"
    log "$name: withdrawing ($wdr)"
    w=$(measure "$name" withdraw 0 -- ip netns exec "$SNS" python3 "$HELPER" send "$sock" "$WORK/$wdr")
    finish_round "$name" "$a" "$w" "$(upd_delta "$u0" "$u1")"
    teardown
}

# ---------------------------------------------------------------- round 2: gobgpd
run_gobgpd() {
    log "gobgpd: lab up"
    setup_lab 2
    cat >"$WORK/gobgpd.toml" <<EOF
[global.config]
  as = $S_AS
  router-id = "$S_ADDR"
  port = 179
  local-address-list = ["$S_ADDR"]

[[neighbors]]
  [neighbors.config]
    neighbor-address = "$R_ADDR"
    peer-as = $R_AS
  [neighbors.transport.config]
    local-address = "$S_ADDR"
  [neighbors.timers.config]
    connect-retry = 1
    hold-time = 90
    keepalive-interval = 30
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
EOF
    ip netns exec "$SNS" gobgpd -f "$WORK/gobgpd.toml" -t toml -p -l info \
        --api-hosts 127.0.0.1:50051 --pprof-disable >"$WORK/gobgpd.log" 2>&1 &
    SPEAKER_PID=$!
    wait_established gobgpd
    log "gobgpd: session Established; announcing $COUNT routes"
    local a w u0 u1
    u0=$(frr_updates)
    a=$(measure gobgpd announce "$COUNT" --feed "$WORK/routes.mrt" --fifo "$WORK/routes.fifo" \
        -- ip netns exec "$SNS" gobgp -u 127.0.0.1 -p 50051 mrt inject global "$WORK/routes.fifo")
    u1=$(frr_updates)
    sample_route gobgpd
    log "gobgpd: withdrawing"
    w=$(measure gobgpd withdraw 0 -- ip netns exec "$SNS" gobgp -u 127.0.0.1 -p 50051 global rib -a ipv4 del all)
    finish_round gobgpd "$a" "$w" "$(upd_delta "$u0" "$u1")"
    teardown
}

BGPD_VERSION=$("$BGPD" --version 2>/dev/null || echo "bgpd ?")
GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
FRR_VERSION=$(dpkg-query -W -f='${Version}' frr 2>/dev/null || vtysh --version | head -n1)
GOBGPD_VERSION=$(gobgpd --version 2>/dev/null | head -n1)
GOBGP_VERSION=$(gobgp --version 2>/dev/null | head -n1)

run_bgpd bgpd 1 announce.json withdraw.json
run_gobgpd
run_bgpd bgpd-lines 3 announce-lines.json withdraw-lines.json

ratio() { python3 -c 'import sys; a, b = map(float, sys.argv[1:]); print(f"{a / b:.2f}" if b > 0 else "inf")' "$1" "$2"; }
RATIO=$(ratio "${ANN[bgpd]}" "${ANN[gobgpd]}")
RATIO_LINES=$(ratio "${ANN[bgpd-lines]}" "${ANN[gobgpd]}")

echo "versions: $BGPD_VERSION (git $GIT_REV) | $GOBGPD_VERSION | $GOBGP_VERSION | FRR $FRR_VERSION"
echo "workload: $COUNT /32 prefixes (198.18.0.0/15), eBGP AS $S_AS -> FRR AS $R_AS over a veth pair, fresh"
echo "          namespaces + FRR per row; one bulk API call per speaker: bgpd = one control-socket"
echo "          request with all routes; gobgpd = one gobgp mrt inject (one gRPC AddPathStream, one path"
echo "          per stream message); bgpd-lines = $COUNT one-route requests pipelined on one control"
echo "          connection (the shape of gobgp's stream). Times: t0 (client start) to FRR pfxRcd == $COUNT"
echo "          (announce) / == 0 (withdraw), polled every 0.1 s; peak RSS = speaker VmHWM."
echo
fmt2() { [[ $1 == - ]] && echo - || printf '%.2f' "$1"; }
printf '%-10s  %10s  %10s  %12s  %14s  %14s  %10s  %15s\n' speaker announce_s withdraw_s peak_rss_MiB \
    announce_api_s withdraw_api_s cpu_s announce_updates
for s in bgpd gobgpd bgpd-lines; do
    printf '%-10s  %10.2f  %10.2f  %12.1f  %14s  %14s  %10s  %15s\n' "$s" "${ANN[$s]}" "${WDR[$s]}" "${RSS[$s]}" \
        "$(fmt2 "${ANN_API[$s]}")" "$(fmt2 "${WDR_API[$s]}")" "${CPU[$s]}" "${UPD[$s]}"
done
echo "(api_s: the client's call returned; cpu_s: speaker user+sys CPU over the whole run;"
echo " announce_updates: UPDATE messages FRR received from the speaker during the announce)"
echo "bgpd-lines/gobgpd announce-time ratio (one route per API message for both): $RATIO_LINES"
echo "bgpd/gobgpd announce-time ratio: $RATIO"
