#!/bin/bash
# A seed-lab device (docs/design.md, "The lab"): sets its static self IPs from the node's environment
# (ecmp-seed.clab.yml), then starts bgpd, waits for its control socket, and starts lbd.
# The container ends when either daemon ends, so `docker ps` shows a failed device.
#
#   EXT_ADDR    static external self IP with prefix, on ext0 (e.g. 20.1.1.6/24)
#   INT_ADDR    static internal self IP with prefix, on int0 (e.g. 10.1.1.6/24)
#   HA_ADDR     HA (heartbeat, mirroring) address with prefix, on ha0 (e.g. 192.168.100.6/24)
#   ROUTER      r1's address on the external segment (20.1.1.1)
#   CLIENT_NET  the clients' network, routed via ROUTER (172.16.1.0/24): lbd answers clients
#               from the VIP, and the container's default route is the management network's.
set -euo pipefail

: "${EXT_ADDR:?EXT_ADDR not set (set in the node env of ecmp-seed.clab.yml)}"
: "${INT_ADDR:?INT_ADDR not set}"
: "${HA_ADDR:?HA_ADDR not set}"
: "${ROUTER:?ROUTER not set}"
: "${CLIENT_NET:?CLIENT_NET not set}"

log() { echo "spanlb-entrypoint: $*" >&2; }

if [ ! -s /etc/spanlb/group.key ]; then
    log "/etc/spanlb/group.key is missing or empty: create it once on the host with"
    log "  openssl rand -hex 32 > topologies/ecmp-seed/clab/group.key && chmod 600 topologies/ecmp-seed/clab/group.key"
    log "  (the same key for every device; lbd refuses a key file others can read)"
    exit 1
fi

# containerlab adds the data interfaces after the container has started.
for ifname in ext0 int0 ha0; do
    for _ in $(seq 1 600); do
        ip link show "$ifname" >/dev/null 2>&1 && break
        sleep 0.1
    done
    ip link show "$ifname" >/dev/null 2>&1 || { log "interface $ifname never appeared"; exit 1; }
done

# The external segment carries floating addresses (and MAC-masquerade macvlans): the static
# interface must not answer ARP for addresses it does not hold, nor use them as ARP sources,
# and replies may leave by another interface than the request came in on.
sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
    net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 || log "sysctl failed (not privileged?)"

ip addr replace "$EXT_ADDR" dev ext0
ip addr replace "$INT_ADDR" dev int0
ip addr replace "$HA_ADDR" dev ha0
for ifname in ext0 int0 ha0; do ip link set "$ifname" up; done
ip route replace "$CLIENT_NET" via "$ROUTER" dev ext0

mkdir -p /run/spanlb
bgpd --config /etc/spanlb/bgpd.toml --check
lbd --config /etc/spanlb/lbd.toml --check

bgpd --config /etc/spanlb/bgpd.toml &
bgpd_pid=$!
for _ in $(seq 1 100); do
    [ -S /run/spanlb/bgpd.sock ] && break
    sleep 0.1
done
[ -S /run/spanlb/bgpd.sock ] || log "bgpd's control socket did not appear; starting lbd anyway"

lbd --config /etc/spanlb/lbd.toml &
lbd_pid=$!

trap 'kill -TERM "$lbd_pid" "$bgpd_pid" 2>/dev/null; wait' TERM INT
status=0
wait -n "$bgpd_pid" "$lbd_pid" || status=$?
log "a daemon exited (status $status); stopping the other"
kill -TERM "$lbd_pid" "$bgpd_pid" 2>/dev/null || true
wait || true
exit "$status"
