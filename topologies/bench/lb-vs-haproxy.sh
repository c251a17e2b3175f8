#!/usr/bin/env bash
# lb-vs-haproxy.sh — lbd (spanlb) against HAProxy (Debian, mode tcp) as a TCP proxy in front of
# the same nginx, driven by the same wrk, on loopback: new connections per second, keep-alive
# requests per second, bulk throughput, p99 latency, proxy CPU.
#
# Usage (as root): topologies/bench/lb-vs-haproxy.sh [options]
#   --rounds N         rounds; every row of the table is the median of N runs   (default 5)
#   --duration S       seconds per wrk run                                       (default 10)
#   --pause S          idle seconds before every run (lets TIME_WAIT/softirq settle; default 1)
#   --threads N        wrk threads                                               (default 1)
#   --conns N          wrk connections for the conn/s and req/s runs             (default 50)
#   --bulk-conns N     wrk connections for the throughput run                    (default 4)
#   --bulk-mib N       size of the bulk file in MiB                              (default 256)
#   --nginx-workers N  nginx worker_processes (a number or auto)                 (default 1)
#   --no-build         do not run cargo; use the lbd binary as it is
#   --lbd-cmd CMD      run CMD (through bash) instead of lbd, e.g. a second HAProxy, to try
#                      the harness while lbd is not ready (env LBD_CMD). Placeholders:
#                        {port}        the port the "lbd" row must listen on (127.0.0.1)
#                        {backend}     127.0.0.1:<nginx port>
#                        {config}      lbd's TOML config for this benchmark
#                        {haproxy_cfg} an HAProxy config equal to the haproxy row's, but
#                                      listening on {port}
#                        {dir}         the work directory
#                      e.g. --lbd-cmd 'haproxy -f {haproxy_cfg} -db'
#   --json FILE        also write every run's raw numbers, the medians and ratios as JSON
#   --keep             keep the work directory (configs, logs, raw wrk output)
# Env: LBD_BIN (default ${CARGO_TARGET_DIR:-<root>/target}/release/lbd; when LBD_BIN is set
# the script does not build), LBD_CMD (as --lbd-cmd).
# Defaults take about 9 minutes: 5 rounds x 9 runs x (10 s + 1 s pause), plus set-up.
#
# Topology (all on 127.0.0.1, ports picked at random in 20000..<ephemeral range start>,
# checked free; nothing outside the work directory is configured):
#
#     wrk ──> 127.0.0.1:H  haproxy  ──┐
#     wrk ──> 127.0.0.1:L  lbd      ──┼──> 127.0.0.1:N  nginx (own config, in the work dir)
#     wrk ─────────────────────────────┘   ("direct": the ceiling, no proxy)
#
# Fairness — both proxies get the same treatment:
#   * One nginx (the backend) and one wrk binary for every row. nginx: `daemon off;
#     master_process on; worker_processes 1` by default (see below), access_log off,
#     keepalive_requests 1000000 (keep-alive runs stay on their connections), sendfile on.
#     GET / returns `return 200 "ok\n"` (3-byte body); GET /bulk is a static file of
#     --bulk-mib MiB of zeros (head -c /dev/zero).
#   * HAProxy 2.6: `mode tcp`, one frontend, one backend with the one nginx server,
#     roundrobin, timeout connect 5s / client 60s / server 60s (lbd: idle_timeout = "60s"),
#     no logging, nbthread default (= all cores), maxconn 4096 (fits the 20,000 fd limit;
#     the runs use at most --conns); started as `haproxy -f CFG -db` (foreground).
#   * lbd: `$LBD_BIN --config lbd.toml` with one TCP virtual server, one round-robin pool with
#     the one nginx member, snat none, idle_timeout 60s (the file is printed with --keep).
#   * Each proxy and nginx run in their own process group (lb_bench.py exec = setsid + exec);
#     the proxy's CPU is the sum of user+system time over its group (threads included).
#   * Before any measurement each proxy must accept on its port (bounded wait), return the
#     3-byte body and pass the whole bulk file (byte count checked, warms the page cache);
#     then each target gets one unrecorded 2-second keep-alive warm-up.
#   * Run order: each round runs conn/s, then req/s, then throughput; for each workload the
#     direct run comes first, then the two proxies back to back, and which proxy goes first
#     alternates from round to round (haproxy,lbd / lbd,haproxy / ...), so neither always
#     inherits the other's TIME_WAIT sockets or a warmer cache. Every row is the median of
#     its --rounds runs.
#
# Workloads (wrk 4.1, -t1 on this 2-core machine: wrk, nginx and the proxy share two cores,
# and a second wrk thread would take CPU from the proxy being measured):
#   conn/s      wrk -t1 -c50 -dS --latency -H 'Connection: close' http://127.0.0.1:PORT/
#               every request on a new TCP connection (nginx closes after the response):
#               Requests/sec = connections/s. p99 = wrk's 99% latency: from writing the
#               request (the handshake itself is done by the kernel) to the full response, so
#               it includes the proxy's accept, its connect to nginx and the relay.
#   req/s       wrk -t1 -c50 -dS --latency http://127.0.0.1:PORT/  (keep-alive)
#   throughput  wrk -t1 -c4 -dS --latency --timeout 60s http://127.0.0.1:PORT/bulk, MiB/s from
#               Transfer/sec (wrk counts bytes per read, partial responses included).
# A run fails the script (with the counts) if wrk's socket errors + non-2xx/3xx responses
# exceed 1% of its requests; the counts are logged for every run.
#
# Why nginx worker_processes 1: three parties share two cores. With one worker, the backend
# costs the same (at most one core) behind either proxy and the proxies' threads are what the
# scheduler has to place; with `auto` (2 workers) nginx would fight the proxy's threads on both
# cores and the result would mostly measure scheduling. The direct row is then "wrk + one nginx
# worker", an upper bound for any proxy row. --nginx-workers auto is there to try.
#
# Output: per-run lines on stderr; on stdout the table (rows direct / haproxy / lbd; columns
# conn/s, conn_p99_ms, req/s, req_p99_ms, MiB/s, CPU% (proxy, conn/s run), cpu_ms/1k_conn,
# req_CPU%, bulk_CPU%), the min..max spread over rounds, and the ratio lines; the last line is
# `lbd/haproxy conn/s ratio: X`. Aim: conn/s >= 1.2x, throughput >= 1.0x, p99 no worse.
# These are wall-clock figures on a shared 2-core host: run it on an idle machine (every run
# logs, and the report summarises, the CPU used by processes other than wrk, nginx and the
# proxy; it should be ~0), and more than once.
#
# Prerequisites: bash, python3, haproxy, nginx, wrk (missing ones are installed with apt-get
# when run as root: haproxy nginx-light wrk), cargo unless --no-build / LBD_BIN / --lbd-cmd.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
HELPER="$HERE/lb_bench.py"

die() { echo "lb-vs-haproxy: $*" >&2; exit 2; }
fail() { echo "lb-vs-haproxy: $*" >&2; exit 1; }
log() { echo "[$(date +%T)] $*" >&2; }
usage() { awk '/^# Usage/ { on = 1 } on { last = /^# Defaults take/; sub(/^# ?/, ""); print; if (last) exit }' "${BASH_SOURCE[0]}"; }

# ---------------------------------------------------------------- options
ROUNDS=5 DURATION=10 PAUSE=1 THREADS=1 CONNS=50 BULK_CONNS=4 BULK_MIB=256 NGINX_WORKERS=1
BUILD=1 KEEP=${KEEP:-0} JSON_OUT="" LBD_CMD=${LBD_CMD:-}
while (($#)); do
    case $1 in
        --no-build) BUILD=0; shift; continue ;;
        --keep) KEEP=1; shift; continue ;;
        -h | --help) usage; exit 0 ;;
        --rounds | --duration | --pause | --threads | --conns | --bulk-conns | --bulk-mib | \
            --nginx-workers | --lbd-cmd | --json)
            (($# >= 2)) || die "option $1 needs a value (see --help)" ;;
        *) die "unknown option: $1 (see --help)" ;;
    esac
    case $1 in
        --rounds) ROUNDS=$2 ;;
        --duration) DURATION=$2 ;;
        --pause) PAUSE=$2 ;;
        --threads) THREADS=$2 ;;
        --conns) CONNS=$2 ;;
        --bulk-conns) BULK_CONNS=$2 ;;
        --bulk-mib) BULK_MIB=$2 ;;
        --nginx-workers) NGINX_WORKERS=$2 ;;
        --lbd-cmd) LBD_CMD=$2 ;;
        --json) JSON_OUT=$2 ;;
    esac
    shift 2
done
int_in() { [[ $2 =~ ^[0-9]+$ ]] && (($2 >= $3 && $2 <= $4)) || die "$1 must be an integer in $3..$4 (got '$2')"; }
int_in --rounds "$ROUNDS" 1 100
int_in --duration "$DURATION" 1 3600
int_in --pause "$PAUSE" 0 600
int_in --threads "$THREADS" 1 64
int_in --conns "$CONNS" 1 2000
int_in --bulk-conns "$BULK_CONNS" 1 64
int_in --bulk-mib "$BULK_MIB" 1 65536
[[ $NGINX_WORKERS == auto ]] || int_in --nginx-workers "$NGINX_WORKERS" 1 64
((THREADS <= CONNS && THREADS <= BULK_CONNS)) || die "--threads must not exceed --conns and --bulk-conns (wrk needs a connection per thread)"
if [[ -n $JSON_OUT ]]; then
    [[ $JSON_OUT == /* ]] || JSON_OUT="$PWD/$JSON_OUT"
    [[ -d $(dirname "$JSON_OUT") ]] || die "--json: directory $(dirname "$JSON_OUT") does not exist"
fi

# ---------------------------------------------------------------- prerequisites
command -v python3 >/dev/null 2>&1 || die "missing prerequisite: python3"
[[ -f $HELPER ]] || die "missing helper $HELPER"
# bin NAME: path of NAME (also looked for in /usr/sbin, which a non-root PATH may lack).
bin() { command -v "$1" 2>/dev/null || { [[ -x /usr/sbin/$1 ]] && echo "/usr/sbin/$1"; }; }
missing=()
bin haproxy >/dev/null || missing+=(haproxy)
bin nginx >/dev/null || missing+=(nginx-light)
bin wrk >/dev/null || missing+=(wrk)
if ((${#missing[@]})); then
    [[ $(id -u) == 0 ]] || die "missing ${missing[*]}: run as root to have them installed, or apt-get install -y ${missing[*]}"
    log "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${missing[@]}" >/dev/null ||
        { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; } ||
        die "apt-get install ${missing[*]} failed"
    for t in haproxy nginx wrk; do bin "$t" >/dev/null || die "$t still missing after apt-get"; done
fi
NGINX=$(bin nginx) HAPROXY=$(bin haproxy) WRK=$(bin wrk)

if [[ -z $LBD_CMD ]]; then
    if [[ -z ${LBD_BIN:-} ]]; then
        TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
        [[ $TARGET_DIR == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
        LBD_BIN="$TARGET_DIR/release/lbd"
        if ((BUILD)); then
            command -v cargo >/dev/null 2>&1 || die "missing prerequisite: cargo (or pass --no-build / LBD_BIN)"
        fi
    else
        BUILD=0
    fi
else
    BUILD=0
fi

# ---------------------------------------------------------------- state and cleanup
WORK=$(mktemp -d /tmp/lb-vs-haproxy.XXXXXX)
chmod 755 "$WORK" # nginx workers (user nobody when started as root) read the bulk file
declare -A PG=()  # name -> pid = process group id of a daemon we started

# stop_group NAME: TERM, then KILL after 5 s, to the daemon's whole process group.
stop_group() {
    local name=$1 pg=${PG[$1]:-} i
    [[ -n $pg ]] || return 0
    unset "PG[$name]"
    kill -TERM -- "-$pg" 2>/dev/null || kill -TERM "$pg" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 -- "-$pg" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pg" 2>/dev/null || true
    wait "$pg" 2>/dev/null || true
}

on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    local n
    for n in lbd haproxy nginx; do stop_group "$n"; done
    if [[ $rc != 0 && -d $WORK ]]; then
        local f
        for f in "$WORK"/{nginx-error,nginx,haproxy,lbd}.log; do
            [[ -s $f ]] || continue
            echo "---- last lines of $(basename "$f"):" >&2
            tail -n 15 "$f" >&2
        done
    fi
    rm -f "$WORK/www/bulk"
    if [[ $KEEP == 1 ]]; then
        echo "lb-vs-haproxy: configs, logs and raw wrk output kept in $WORK (bulk file removed)" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME CMD...: runs CMD in the background in its own session/process group; log in
# $WORK/NAME.log.
start() {
    local name=$1
    shift
    python3 "$HELPER" exec -- "$@" >"$WORK/$name.log" 2>&1 </dev/null &
    PG[$name]=$!
}

# ---------------------------------------------------------------- build lbd
if ((BUILD)); then
    log "building lbd (cargo build --release -p spanlb-lbd --bin lbd)"
    (cd "$ROOT" && cargo build --release -p spanlb-lbd --bin lbd) >"$WORK/cargo.log" 2>&1 ||
        { tail -n 30 "$WORK/cargo.log" >&2; fail "cargo build failed"; }
fi
if [[ -z $LBD_CMD ]]; then
    [[ -x $LBD_BIN ]] || fail "lbd binary $LBD_BIN not found (build it, or set LBD_BIN)"
fi

# ---------------------------------------------------------------- configs
read -r P_NGINX P_HAPROXY P_LBD < <(python3 "$HELPER" ports 3) || fail "no free ports"
BULK_BYTES=$((BULK_MIB * 1024 * 1024))
mkdir -p "$WORK/www" "$WORK/nginx-tmp"
head -c "$BULK_BYTES" /dev/zero >"$WORK/www/bulk"
chmod 644 "$WORK/www/bulk"

cat >"$WORK/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes $NGINX_WORKERS;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
worker_rlimit_nofile 16384;
events {
    worker_connections 8192;
}
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 60s;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path $WORK/nginx-tmp/body;
    proxy_temp_path $WORK/nginx-tmp/proxy;
    fastcgi_temp_path $WORK/nginx-tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx-tmp/uwsgi;
    scgi_temp_path $WORK/nginx-tmp/scgi;
    server {
        listen 127.0.0.1:$P_NGINX backlog=4096;
        location = / {
            return 200 "ok\n";
        }
        location = /bulk {
            root $WORK/www;
        }
    }
}
EOF

# haproxy_cfg PORT: the HAProxy configuration for a frontend on 127.0.0.1:PORT.
haproxy_cfg() {
    cat <<EOF
global
    maxconn 4096

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend fe
    bind 127.0.0.1:$1
    default_backend be

backend be
    balance roundrobin
    server nginx 127.0.0.1:$P_NGINX
EOF
}
haproxy_cfg "$P_HAPROXY" >"$WORK/haproxy.cfg"
haproxy_cfg "$P_LBD" >"$WORK/haproxy-as-lbd.cfg"

cat >"$WORK/lbd.toml" <<EOF
[device]
name = "bench"
control_socket = "$WORK/lbd.sock"

[virtual_servers.web]
destination = "127.0.0.1:$P_LBD"
protocol = "tcp"
pool = "web"
snat = "none"
idle_timeout = "60s"

[pools.web]
method = "round-robin"
members = [{ address = "127.0.0.1:$P_NGINX" }]
EOF

"$NGINX" -t -q -p "$WORK/" -e "$WORK/nginx-error.log" -c "$WORK/nginx.conf" >"$WORK/nginx-t.log" 2>&1 ||
    { cat "$WORK/nginx-t.log" >&2; fail "nginx rejected its configuration"; }
"$HAPROXY" -c -q -f "$WORK/haproxy.cfg" >"$WORK/haproxy-c.log" 2>&1 ||
    { cat "$WORK/haproxy-c.log" >&2; fail "haproxy rejected its configuration"; }

if [[ -n $LBD_CMD ]]; then
    cmd=$LBD_CMD
    cmd=${cmd//\{port\}/$P_LBD}
    cmd=${cmd//\{backend\}/127.0.0.1:$P_NGINX}
    cmd=${cmd//\{config\}/$WORK/lbd.toml}
    cmd=${cmd//\{haproxy_cfg\}/$WORK/haproxy-as-lbd.cfg}
    cmd=${cmd//\{dir\}/$WORK}
    LBD_ARGV=(bash -c "exec $cmd")
    LBD_DESC="--lbd-cmd: $cmd (NOT the real lbd)"
else
    LBD_ARGV=("$LBD_BIN" --config "$WORK/lbd.toml")
    LBD_DESC="$LBD_BIN --config lbd.toml"
fi

# ---------------------------------------------------------------- start and check
log "ports: nginx $P_NGINX, haproxy $P_HAPROXY, lbd $P_LBD; work dir $WORK"
start nginx "$NGINX" -p "$WORK/" -e "$WORK/nginx-error.log" -c "$WORK/nginx.conf"
start haproxy "$HAPROXY" -f "$WORK/haproxy.cfg" -db
start lbd "${LBD_ARGV[@]}"
# ready NAME PORT: bounded wait for the port, then a GET / and a full GET /bulk through it.
ready() {
    local pg=${PG[$1]:-0} st=0
    python3 "$HELPER" wait-ready --name "$1" --port "$2" --pgid "$pg" --timeout 30 \
        --small-url / --small-body 'ok\n' --bulk-url /bulk --bulk-size "$BULK_BYTES" && return 0
    if ! kill -0 "$pg" 2>/dev/null; then
        wait "$pg" 2>/dev/null || st=$?
        unset "PG[$1]"
        fail "$1 is not ready: it exited with status $st (its log follows if not empty)"
    fi
    fail "$1 is not ready (its log follows if not empty)"
}
ready nginx "$P_NGINX"
ready haproxy "$P_HAPROXY"
ready lbd "$P_LBD"
log "nginx, haproxy and lbd ($LBD_DESC) answer; bulk file of $BULK_MIB MiB passes through both"

RAW="$WORK/runs.jsonl"
: >"$RAW"
declare -A PORT=([direct]=$P_NGINX [haproxy]=$P_HAPROXY [lbd]=$P_LBD)
# measure ROUND TARGET WORKLOAD [--warmup] [--duration S]
measure() {
    local round=$1 target=$2 workload=$3
    shift 3
    local pg=0
    [[ $target == direct ]] || pg=${PG[$target]}
    ((PAUSE == 0)) || sleep "$PAUSE"
    python3 "$HELPER" run --wrk "$WRK" --raw "$RAW" --log "$WORK/wrk.log" --round "$round" --target "$target" \
        --workload "$workload" --port "${PORT[$target]}" --duration "$DURATION" \
        --threads "$THREADS" --conns "$CONNS" --bulk-conns "$BULK_CONNS" \
        --pgid "$pg" --backend-pgid "${PG[nginx]}" --max-error-pct 1 "$@" ||
        fail "round $round, $workload via $target failed (wrk output: $WORK/wrk.log, kept with --keep)"
}

for t in direct haproxy lbd; do measure 0 "$t" req --warmup --duration 2; done

for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then pair=(haproxy lbd); else pair=(lbd haproxy); fi
    log "round $r/$ROUNDS (order: direct, ${pair[0]}, ${pair[1]})"
    for w in conn req bulk; do
        for t in direct "${pair[@]}"; do measure "$r" "$t" "$w"; done
    done
done

for n in lbd haproxy nginx; do
    if ! kill -0 "${PG[$n]}" 2>/dev/null; then fail "$n exited during the benchmark (log: $WORK/$n.log)"; fi
done

# ---------------------------------------------------------------- report
if [[ -n $LBD_CMD ]]; then
    LBD_VERSION="(lbd replaced by --lbd-cmd)"
else
    LBD_VERSION=$("$LBD_BIN" --version 2>/dev/null | sed -n 1p || true)
    LBD_VERSION=${LBD_VERSION:-lbd ?}
fi
GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
HAPROXY_VERSION=$("$HAPROXY" -v 2>/dev/null | awk 'NR == 1 { print $3 }' || true)
NGINX_VERSION=$("$NGINX" -v 2>&1 | sed 's/.*nginx\///')
WRK_VERSION=$("$WRK" -v 2>&1 | awk 'NR == 1 { print $2 }' || true)
CPUS=$(nproc)

echo "versions: $LBD_VERSION (git $GIT_REV) | HAProxy $HAPROXY_VERSION | nginx $NGINX_VERSION | wrk $WRK_VERSION | $(uname -r), $CPUS CPUs"
echo "lbd row:  $LBD_DESC"
echo "workload: loopback; backend nginx (worker_processes $NGINX_WORKERS): GET / -> 3-byte body, GET /bulk -> $BULK_MIB MiB file;"
echo "          conn/s: wrk -t$THREADS -c$CONNS -d${DURATION}s 'Connection: close'; req/s: the same, keep-alive;"
echo "          MiB/s: wrk -t$THREADS -c$BULK_CONNS -d${DURATION}s on /bulk; p99 from wrk --latency;"
echo "          $ROUNDS round(s), proxies alternating first/second; HAProxy mode tcp, nbthread default"
echo
report_args=(report "$RAW"
    --meta "git=$GIT_REV" --meta "lbd=$LBD_DESC" --meta "lbd_version=$LBD_VERSION"
    --meta "haproxy=$HAPROXY_VERSION" --meta "nginx=$NGINX_VERSION" --meta "wrk=$WRK_VERSION"
    --meta "kernel=$(uname -r)" --meta "cpus=$CPUS" --meta "rounds=$ROUNDS"
    --meta "duration_s=$DURATION" --meta "threads=$THREADS" --meta "conns=$CONNS"
    --meta "bulk_conns=$BULK_CONNS" --meta "bulk_mib=$BULK_MIB" --meta "nginx_workers=$NGINX_WORKERS")
[[ -z $JSON_OUT ]] || report_args+=(--json "$JSON_OUT")
python3 "$HELPER" "${report_args[@]}" || fail "report failed"
[[ -z $JSON_OUT ]] || log "raw runs, medians and ratios written to $JSON_OUT"
