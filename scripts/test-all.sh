#!/usr/bin/env bash
# The whole test suite: setup, lints, then every test (codec, FSM, loopback, and the namespace
# topologies with FRR, BIRD, GoBGP and ExaBGP). Needs root for the topology tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Every target (benches too, in the dev profile: they must link, not run). The tests built here
# are the ones nextest runs next, so this costs little more than building the binaries.
cargo build --workspace --all-targets --locked
cargo nextest run --workspace --locked --profile ci "$@"
# Every fuzz target (fuzz/) for a short bounded time from its committed corpus: a regression
# of a decoder shows here. The long run is `scripts/fuzz.sh 600`.
bash scripts/fuzz.sh 15
