#!/usr/bin/env bash
# The whole test suite: setup, lints, then every test (codec, FSM, loopback, and the namespace
# topologies with FRR, BIRD, GoBGP and ExaBGP). Needs root for the topology tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --bins --locked
cargo nextest run --workspace --locked --profile ci "$@"
