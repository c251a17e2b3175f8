#!/usr/bin/env bash
# Installs what spanlb's build, lab, tests and benchmarks need on a Debian machine.
# Idempotent; needs root. Used by the README's commands and by .ci/run.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (network namespaces and apt need it)" >&2
  exit 1
fi
# systemd (systemd-analyze), man-db and binutils (strip): the package test (tests/tests/package.rs)
# verifies the units, their man: references, and builds the .deb with packaging/build-deb.sh.
pkgs=(frr bird2 gobgpd exabgp iproute2 iputils-ping procps psmisc python3 ethtool tcpdump time sip-tester openssl
  systemd man-db binutils)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The packaged services are not wanted: the lab starts its own daemons per namespace.
for svc in frr bird gobgpd exabgp; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup.sh: cargo not found; install Rust (rustup) first" >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup.sh: installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
