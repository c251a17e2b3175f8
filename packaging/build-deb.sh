#!/usr/bin/env bash
# Builds spanlb's Debian package: spanlb_VERSION_ARCH.deb with lbd, lbctl, bgpd, bgpctl, the
# four plugins, the systemd units, the sysctl.d file, man pages, shell completions and the
# example configuration. Plain dpkg-deb (no debhelper, no cargo-deb): nothing to install beyond
# dpkg and the Rust toolchain, and the layout is spelled out below.
#
#   packaging/build-deb.sh                      # release build, package in target/debian/
#   packaging/build-deb.sh --profile dev        # the debug binaries (what the tests build)
#   packaging/build-deb.sh --no-build --bin-dir target/debug --out /tmp/x
#
# Options: --profile NAME (cargo profile, default release), --no-build (take the files already
# built), --bin-dir DIR (where the binaries and plugins are; default target/<profile dir>),
# --out DIR (default target/debian), --version V (default: the workspace's version).
# Honours CARGO_TARGET_DIR. Needs no root (dpkg-deb --root-owner-group).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

profile=release
build=1
bin_dir=
out=
version=
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --bin-dir) bin_dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "build-deb.sh: unknown argument $1 (--help)" >&2; exit 2 ;;
  esac
done

target=${CARGO_TARGET_DIR:-$repo/target}
case "$profile" in
  dev|test) profile_dir=debug ;;
  *) profile_dir=$profile ;;
esac
bin_dir=${bin_dir:-$target/$profile_dir}
out=${out:-$target/debian}
if [ -z "$version" ]; then
  version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
fi
arch=$(dpkg --print-architecture)
plugins=(sip msrdp ssl hash)

if [ "$build" = 1 ]; then
  pkgs=(-p spanlb-lbd -p spanlb-bgpd -p spanlb-packaging)
  for p in "${plugins[@]}"; do pkgs+=(-p "spanlb-plugin-$p"); done
  echo "build-deb.sh: cargo build --profile $profile"
  cargo build --locked --profile "$profile" "${pkgs[@]}"
fi

need=("$bin_dir/lbd" "$bin_dir/lbctl" "$bin_dir/bgpd" "$bin_dir/bgpctl" "$bin_dir/spanlb-gendocs")
for p in "${plugins[@]}"; do need+=("$bin_dir/libspanlb_plugin_$p.so"); done
for f in "${need[@]}"; do
  if [ ! -f "$f" ]; then
    echo "build-deb.sh: $f is missing (build it, or drop --no-build)" >&2
    exit 1
  fi
done

stage=$(mktemp -d "${TMPDIR:-/tmp}/spanlb-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root=$stage/spanlb
install -d -m 0755 "$root/DEBIAN" "$root/usr/sbin" "$root/usr/bin" \
  "$root/usr/lib/spanlb/plugins" "$root/usr/lib/systemd/system" "$root/usr/lib/sysctl.d" \
  "$root/usr/share/man/man1" "$root/usr/share/man/man8" \
  "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
  "$root/usr/share/fish/vendor_completions.d" "$root/usr/share/doc/spanlb/examples"

# Daemons in /usr/sbin, the operators' CLIs in /usr/bin (a control_group member may run them).
# Debug info stripped: the package carries the code, not the build's symbols.
strip_into() { install -m 0755 "$1" "$2"; strip --strip-debug "$2"; }
strip_into "$bin_dir/lbd" "$root/usr/sbin/lbd"
strip_into "$bin_dir/bgpd" "$root/usr/sbin/bgpd"
strip_into "$bin_dir/lbctl" "$root/usr/bin/lbctl"
strip_into "$bin_dir/bgpctl" "$root/usr/bin/bgpctl"
# Plugins: root-owned, not writable by others (lbd refuses a plugin directory or .so that is).
for p in "${plugins[@]}"; do
  install -m 0644 "$bin_dir/libspanlb_plugin_$p.so" "$root/usr/lib/spanlb/plugins/"
  strip --strip-debug "$root/usr/lib/spanlb/plugins/libspanlb_plugin_$p.so"
done

install -m 0644 packaging/systemd/spanlb-bgpd.service packaging/systemd/spanlb-lbd.service \
  "$root/usr/lib/systemd/system/"
install -m 0644 packaging/sysctl/60-spanlb.conf "$root/usr/lib/sysctl.d/"

gen=$stage/gen
"$bin_dir/spanlb-gendocs" "$gen"
for page in "$gen"/man/*; do
  section=${page##*.}
  gzip -9n -c "$page" > "$root/usr/share/man/man$section/$(basename "$page").gz"
done
# bash-completion loads completions/NAME when NAME is first completed: no .bash suffix.
for f in "$gen"/completions/bash/*.bash; do
  install -m 0644 "$f" "$root/usr/share/bash-completion/completions/$(basename "$f" .bash)"
done
install -m 0644 "$gen"/completions/zsh/* "$root/usr/share/zsh/vendor-completions/"
install -m 0644 "$gen"/completions/fish/* "$root/usr/share/fish/vendor_completions.d/"

doc=$root/usr/share/doc/spanlb
install -m 0644 README.md "$doc/"
install -m 0644 packaging/examples/* "$doc/examples/"
install -m 0644 packaging/debian/copyright "$doc/"

install -m 0755 packaging/debian/postinst packaging/debian/postrm "$root/DEBIAN/"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
  packaging/debian/control.in > "$root/DEBIAN/control"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z \
  | xargs -0 md5sum) > "$root/DEBIAN/md5sums"

mkdir -p "$out"
deb=$out/spanlb_${version}_${arch}.deb
# Release packages get xz; a test's package (--profile dev) the fast gzip.
if [ "$profile" = release ]; then comp=(-Zxz); else comp=(-Zgzip -z1); fi
dpkg-deb --root-owner-group "${comp[@]}" --build "$root" "$deb" >/dev/null
echo "$deb"
