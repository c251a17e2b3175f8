#!/usr/bin/env bash
# plugin-conn.sh — what a persistence plugin costs lbd in new connections per second: the same
# lbd virtual server in front of the same nginx, once with the msrdp persistence plugin and once
# without, driven by the same client on loopback (`rdp-load`: wrk refuses non-HTTP requests),
# sending RDP X.224 Connection Requests with a `Cookie: mstshash=USER` (a different user per
# request, so every connection makes a record). nginx answers each with 400 and closes, so
# every request is a new connection (conn/s).
#
# Usage: topologies/bench/plugin-conn.sh [--rounds N] [--duration S] [--conns N] [--no-build]
#   defaults: 5 rounds of 10 s per target, 50 client threads. Prints each round and
#   the medians, then `ratio plugin/plain conn/s = X`.
# Everything listens on 127.0.0.1 (ports picked free); the work directory is removed at exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=5 duration=10 conns=50 build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --conns) conns="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    *) echo "plugin-conn.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
for t in nginx python3; do
  command -v "$t" >/dev/null || { echo "plugin-conn.sh: $t is needed" >&2; exit 1; }
done
target="${CARGO_TARGET_DIR:-target}"
if [ "$build" = 1 ]; then
  cargo build --release --locked -p spanlb-lbd -p spanlb-plugin-msrdp -p spanlb-tests --bin rdp-load >&2
fi
load="$target/release/rdp-load"
lbd="$target/release/lbd"
so="$target/release/libspanlb_plugin_msrdp.so"
[ -x "$lbd" ] && [ -f "$so" ] && [ -x "$load" ] || { echo "plugin-conn.sh: build lbd and the msrdp plugin first" >&2; exit 1; }

work="$(mktemp -d /tmp/plugin-conn.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

mkdir -p "$work/plugins" "$work/nginx"
cp "$so" "$work/plugins/"
nport=$(port) pport=$(port) qport=$(port)
cat > "$work/nginx/nginx.conf" <<EOF
daemon off; master_process on; worker_processes 1; pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log crit;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$nport; location / { return 200 "ok\n"; } } }
EOF
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" &
pids+=($!)

config() { # name port persistence-lines
  cat <<EOF
[device]
name = "bench"
control_socket = "$work/$1.sock"
workers = 1
plugin_dir = "$work/plugins"

[virtual_servers.rdp]
destination = "127.0.0.1:$2"
pool = "p"
snat = "none"
idle_timeout = "60s"
$3

[pools.p]
members = [{ address = "127.0.0.1:$nport" }]

[persistence.rdp]
type = "msrdp"
timeout = "10m"
EOF
}
config plugin "$pport" 'persistence = "rdp"' > "$work/plugin.toml"
config plain "$qport" '' > "$work/plain.toml"
for n in plugin plain; do
  "$lbd" --config "$work/$n.toml" 2> "$work/$n.log" &
  pids+=($!)
done

ready() { # port
  for _ in $(seq 1 100); do
    python3 - "$1" <<'EOF' && return 0
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.sendall(b"\x03\x00\x00\x0b\x06\xe0\x00\x00\x00\x00\x00")
sys.exit(0 if s.recv(64) else 1)
EOF
    sleep 0.1
  done
  echo "plugin-conn.sh: port $1 does not answer" >&2; exit 1
}
ready "$pport"; ready "$qport"

rps() { # port -> connections/s
  "$load" "127.0.0.1:$1" "$conns" "$duration" | awk '/^conn\/s/ {print $2}'
}
plugin_runs=() plain_runs=()
for r in $(seq 1 "$rounds"); do
  # Alternate which goes first, so neither always inherits the other's TIME_WAIT sockets.
  if [ $((r % 2)) = 1 ]; then
    a=$(rps "$pport"); sleep 1; b=$(rps "$qport")
  else
    b=$(rps "$qport"); sleep 1; a=$(rps "$pport")
  fi
  sleep 1
  plugin_runs+=("$a") plain_runs+=("$b")
  echo "round $r: msrdp plugin $a conn/s, no plugin $b conn/s"
done
python3 - "${plugin_runs[*]}" "${plain_runs[*]}" "$work/plugin.sock" "$lbd" <<'EOF'
import json, statistics, subprocess, sys
a = statistics.median(float(x) for x in sys.argv[1].split())
b = statistics.median(float(x) for x in sys.argv[2].split())
print(f"median: msrdp plugin {a:.0f} conn/s, no plugin {b:.0f} conn/s")
print(f"ratio plugin/plain conn/s = {a / b:.3f}")
EOF
calls=$("$target/release/lbctl" --socket "$work/plugin.sock" --json show plugins |
  python3 -c 'import json,sys; p=json.load(sys.stdin)["plugins"][0]; print(p["calls"], p["keys"])')
echo "msrdp plugin calls and keys during the runs: $calls"
