#!/usr/bin/env bash
# The README's main job: installs what is needed, builds, brings up the seed's three-device
# ECMP lab in network namespaces (FRR r1 + bgpd on A, B, C) and prints r1's ECMP route for the
# VIP. Run as root. `--keep` leaves the lab up.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh
cargo build --release --locked --workspace --bins
exec "${CARGO_TARGET_DIR:-target}/release/ecmp-seed" "$@"
