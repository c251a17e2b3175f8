#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) for SECONDS_PER_TARGET seconds each (default 20),
# from its committed corpus (fuzz/corpus/<target>/; new inputs go to a scratch copy), and fails
# on the first crash: the input is left in fuzz/artifacts/<target>/. Installs cargo-fuzz if it
# is missing. Needs the nightly toolchain (cargo-fuzz's coverage instrumentation); without it
# the step is skipped, or fails under CI=true. Built with debug assertions (overflow checks:
# an arithmetic overflow is a crash) and without AddressSanitizer (the code under test is safe
# Rust; twice the executions per second instead).
#
#   scripts/fuzz.sh            # the CI slice
#   scripts/fuzz.sh 600        # ten minutes per target
#   scripts/fuzz.sh 600 bgp_decode plugin_inspect   # only these targets
#
# Environment: FUZZ_JOBS (default 1) targets at once; CARGO_TARGET_DIR is honoured for the
# plugins' .so files (plugin_inspect loads them as lbd does); the fuzz crate builds in
# fuzz/target.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-20}"
shift || true
jobs="${FUZZ_JOBS:-1}"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  if [ "${CI:-}" = "true" ]; then
    echo "fuzz.sh: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
    exit 1
  fi
  echo "fuzz.sh: no nightly toolchain; skipping the fuzz targets" >&2
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

# Release with debug assertions, no sanitizer; 16 codegen units (cargo-fuzz's default is 1)
# so that the build uses every core.
flags=(-O -a -s none --codegen-units 16)

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir fuzz)
fi

# plugin_inspect loads the plugins' .so files with lbd's loader: build them as lbd's are built.
target_dir="${CARGO_TARGET_DIR:-target}"
cargo build --locked -p spanlb-plugin-sip -p spanlb-plugin-msrdp -p spanlb-plugin-ssl -p spanlb-plugin-hash
plugins="$PWD/fuzz/target/plugins"
rm -rf "$plugins"
mkdir -p "$plugins"
for p in sip msrdp ssl hash; do
  cp "$target_dir/debug/libspanlb_plugin_$p.so" "$plugins/"
done
export SPANLB_FUZZ_PLUGIN_DIR="$plugins"

# Every target in one build (`fuzz run` below then finds them built).
cargo +nightly fuzz build "${flags[@]}" --fuzz-dir fuzz

run_one() {
  local t="$1"
  local scratch
  scratch="$(mktemp -d "${TMPDIR:-/tmp}/fuzz-$t.XXXXXX")"
  mkdir -p "fuzz/artifacts/$t"
  local log="fuzz/target/$t.log"
  # Scratch first: new inputs go there, the committed seeds stay as they are.
  if cargo +nightly fuzz run "${flags[@]}" --fuzz-dir fuzz "$t" "$scratch" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=4096 -timeout=10 \
    -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1; then
    local execs
    execs="$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')"
    echo "fuzz: $t: ${secs}s, ${execs:-?} executions, no crash"
    rm -rf "$scratch"
  else
    echo "fuzz: $t: CRASH (input in fuzz/artifacts/$t/); the end of $log:" >&2
    tail -n 40 "$log" >&2
    rm -rf "$scratch"
    return 1
  fi
}

failed=0
running=0
pids=()
for t in "${targets[@]}"; do
  run_one "$t" &
  pids+=($!)
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || failed=1
    running=$((running - 1))
  fi
done
while [ "$running" -gt 0 ]; do
  wait -n || failed=1
  running=$((running - 1))
done
exit "$failed"
