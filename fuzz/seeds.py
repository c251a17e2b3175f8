#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/) from the repository's
fixtures: the BGP hex fixtures of bgpd/src/wire/tests.rs and the FRR 8.4 capture, the BFD packets
of bgpd/src/bfd/packet/tests.rs, heartbeat and mirror frames laid out as their tests build them,
control requests from control/src, the TOML examples of the README and lbd's config tests, and
the plugins' byte fixtures (plugins/*/src/tests.rs, plugins/ssl/fixtures). Run from anywhere;
only adds files (named by content hash). After a fuzzing run, `cargo fuzz cmin` keeps the
corpora small."""
import hashlib, hmac, os, re, struct, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def hx(s):
    return bytes.fromhex("".join(c for c in s if c in "0123456789abcdefABCDEF"))


def put(target, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def read(rel):
    with open(os.path.join(ROOT, rel), "rb") as f:
        return f.read()


# ---- BGP -------------------------------------------------------------------------------------
def bgp(t, body):
    return b"\xff" * 16 + struct.pack(">HB", 19 + len(body), t) + body


def update(withdrawn, attrs, nlri):
    w, a, n = hx(withdrawn), hx(attrs), hx(nlri)
    return bgp(2, struct.pack(">H", len(w)) + w + struct.pack(">H", len(a)) + a + n)


caps = hx("0104 00010001 0104 00020001 0200 4104 fa56ea01 400a c078 00010180 00020100 4508 00010103 00020101")
open_msg = bgp(1, hx("04 5ba0 005a 0a000001") + bytes([len(caps) + 2, 2, len(caps)]) + caps)
v4_attrs = "40010100 4002060201 0000fde9 400304c0000201 800404 0000000a c00808 ffff0000 fde90064 c0200c 0000fde9 00000001 00000002"
mp = "0002 01 20 20010db8000000000000000000000001 fe800000000000000000000000000001 00 40 20010db800010000 80 20010db8000200000000000000000005"
mpb = hx(mp)
v6_attrs = "40 01 01 02  40 02 0a 02 02 0000fde9 0000fdea  40 05 04 00000064  90 0e %04x " % len(mpb) + mp
GOOD = "40010100 400206020100000001 400304c0000201"
msgs = [
    (0x01, bgp(4, b"")),
    (0x01, bgp(3, hx("0602 026869"))),
    (0x01, bgp(5, hx("00020001"))),
    (0x01, bgp(5, hx("00010001"))),
    (0x01, bgp(5, hx("00010002"))),
    (0x01, open_msg),
    (0x00, bgp(1, hx("04 fde9 00b4 0a000002 00"))),
    (0x1f, update("", v4_attrs, "00000007 20 0a000001 00000008 18 0a0001")),
    (0x01, update("", v4_attrs.replace("4002060201 0000fde9", "4002060201 0000fde9"), "20 0a000001 18 0a0001")),
    (0x01, update("", v6_attrs, "")),
    (0x21, update("", v6_attrs, "")),
    (0x01, update("18 0a0001 20 0a000001", "", "")),
    (0x01, bgp(2, hx("00000000"))),
    (0x01, bgp(2, hx("0000 0006 800f03 000201"))),
    (0x01, bgp(2, hx("0000 0007 900f0003 000201"))),
    (0x00, update("", "40010100 40020802 03 fde9 5ba0 fdea 400304c0000201 c0110e 02 03 0000fde9 fa56ea01 0000fdea", "18 0a0001")),
    (0x01, update("", GOOD, "21 0a000001 00")),
    (0x01, update("", GOOD + " c00705 0000000102", "18 0a0001")),
    (0x01, update("", GOOD + " 40060101", "18 0a0001")),
    (0x01, update("", GOOD + " c0630201ff", "18 0a0001")),
    (0x21, update("", GOOD + " 40050400000064 800904 0a000001 800a04 0a000002", "18 0a0001")),
    (0x01, update("", "40010100 400206020100000001 800e0b 000201 05 0102030405 00 00", "")),
    (0x01, update("", "800f03000201 800f03000201", "")),
]
for line in read("bgpd/src/wire/fixtures/frr84_capture.hex").decode().split():
    msgs.append((0x01, hx(line)))
    msgs.append((0x21, hx(line)))
for flags, m in msgs:
    put("bgp_decode", bytes([flags]) + m)

# FSM: config bytes, then records op, delay, ... (see fuzz_targets/bgp_fsm.rs).
fsm = [
    # start, connect outbound, peer OPEN, KEEPALIVE -> Established, update, timeouts.
    bytes([0x00, 3, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 0x08, 0, 5, 0, 0, 6, 0, 0, 1, 11, 50, 11, 200, 11, 255]),
    # passive: inbound connection, OPEN, KEEPALIVE, route refresh, notification.
    bytes([0x01, 3, 0, 0, 2, 0, 1, 1, 4, 0, 2, 0, 0x0c, 0, 5, 0, 2, 8, 0, 2, 0, 7, 0, 2, 6, 2]),
    # collision: outbound and inbound, OPENs on both.
    bytes([0x00, 3, 0, 0, 2, 0, 0, 0, 2, 0, 2, 1, 4, 0, 0, 0, 0x08, 4, 0, 2, 0, 0x08, 5, 0, 0, 5, 0, 2]),
    # graceful restart, add-path, cease, restart.
    bytes([0x38, 3, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 0x18, 0x1b, 5, 0, 0, 10, 0, 1, 11, 30, 2, 0, 0, 0]),
    # raw messages decoded with the session's codec (op 12: conn, len, bytes).
    bytes([0x00, 3, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 0x08, 0, 5, 0, 0, 12, 0, 0, 19]) + bgp(4, b"")
    + bytes([12, 0, 0, 23]) + bgp(2, hx("00000000")) + bytes([12, 0, 0, 21]) + bgp(3, hx("0602")),
]
for f in fsm:
    put("bgp_fsm", f)

# ---- BFD -------------------------------------------------------------------------------------
DOWN = hx("20 40 03 18 00000001 00000000 000f4240 000f4240 00000000")
UP = hx("20 c0 03 18 00000002 00000001 0000c350 0000c350 00000000")
INIT = hx("20 80 03 18 00000002 01020304 000f4240 000f4240 00000000")
md5 = hx("20 44 03 30 00000001 00000000 000f4240 000f4240 00000000 02 18 07 00 00000005") + bytes(16)
sha1 = hx("20 44 03 34 00000001 00000000 000f4240 000f4240 00000000 04 1c 07 00 00000005") + bytes(20)
pw = hx("20 44 03 1d 00000001 00000000 000f4240 000f4240 00000000 01 05 01 616263")
for first in (0, 1, 2, 3, 4, 5, 0x12):
    for pkts in ((DOWN,), (DOWN, INIT, UP), (md5,), (sha1,), (pw,)):
        seq = b""
        for p in pkts:
            op = 1 if first % 6 else 0
            seq += bytes([op, 10, len(p)]) + p + (bytes([1]) if op == 1 else b"")
            seq += bytes([2, 0])
        put("bfd_packet", bytes([first]) + seq + bytes([3, 0, 1, 3, 0, 0, 4, 0, 30, 30, 3, 2, 0]))

# ---- Heartbeat -------------------------------------------------------------------------------
KEY = b"0123456789abcdef0123456789abcdef"


def name(s):
    return bytes([len(s)]) + s


def hb_body(version=4, device=b"lb-a", active=((b"tg-1", 1_700_000_000_100, 0), (b"tg-2", 1_700_000_000_101, 1)),
            orders=((1_700_000_000_000_001, b"tg-3", b"lb-b"),), unsynced=(), unavailable=(), config=None):
    b = b"SLHB" + bytes([version, 0]) + name(device)
    b += struct.pack(">QQQB", 1_700_000_000_000, 42, 1_700_000_004_200, 1)
    if version >= 3:
        b += struct.pack(">Q", 4000)
    b += struct.pack(">H", len(active))
    for tg, gen, ordered in active:
        b += name(tg) + (struct.pack(">QB", gen, ordered) if version >= 3 else b"")
    b += struct.pack(">H", len(orders))
    for oid, tg, to in orders:
        b += struct.pack(">Q", oid) + name(tg) + name(to)
    if version >= 2 and (version >= 3 or unsynced):
        b += struct.pack(">H", len(unsynced))
        for tg in unsynced:
            b += name(tg)
    if version >= 3:
        b += struct.pack(">H", len(unavailable))
        for a in unavailable:
            b += a
    if version >= 4:
        if config is None:
            b += b"\x00"
        else:
            b += b"\x01" + name(b"lb-b") + struct.pack(">QQ", 7, 1_700_000_003_000) + b"\xab" * 32 + b"\x01"
    return b


bodies = [
    hb_body(),
    hb_body(config=True),
    hb_body(unsynced=(b"tg-1",), unavailable=(b"\x04" + bytes([30, 1, 1, 10]), b"\x06" + bytes(16))),
    hb_body(version=3),
    hb_body(version=2, unsynced=(b"tg-1",)),
    hb_body(version=1),
    hb_body(device=b"x" * 64, active=(), orders=()),
]
for b in bodies:
    put("heartbeat_decode", b"\x01" + b)
    put("heartbeat_decode", b"\x00" + b + hmac.new(KEY, b, hashlib.sha256).digest())

# ---- Mirror ----------------------------------------------------------------------------------
def frame(kind, body):
    return b"SLMR" + bytes([1, kind]) + struct.pack(">I", len(body)) + body


def s(x):
    return struct.pack(">H", len(x)) + x


def a4(ip, port):
    return b"\x04" + bytes(ip) + struct.pack(">H", port)


def a6(port):
    return b"\x06" + bytes(15) + b"\x01" + struct.pack(">H", port)


repair = struct.pack(">IIIIHBBBIIII", 1000, 2000, 65535, 65535, 1460, 7, 7, 3, 12345, 999, 65535, 2000)
persist = b"\x01" + s(b"src") + s(b"") + s(b"192.0.2.1") + s(b"web") + a4([10, 1, 1, 50], 80) + s(b"web") + struct.pack(">Q", 1_700_000_100_000)
udp = b"\x02" + a4([192, 0, 2, 1], 5060) + a4([30, 1, 1, 10], 5060) + a4([10, 1, 1, 50], 5060) + a4([10, 1, 1, 9], 40000) + struct.pack(">Q", 5) + b"\x01" + s(b"call-id")
tcp = b"\x03" + a6(40000) + a6(80) + a4([10, 1, 1, 50], 80) + a4([10, 1, 1, 9], 40001) + repair + repair + struct.pack(">Q", 6)
hello = frame(1, s(b"lb-a") + s(b"tg-2") + struct.pack(">Q", 7) + b"\x00")
hello_resume = frame(1, s(b"lb-b") + s(b"tg-2") + struct.pack(">Q", 7) + b"\x01" + struct.pack(">Q", 3))


def rec(uid, kind):
    return frame(3, struct.pack(">Q", uid) + s(b"tg-2") + kind)


streams = [
    hello + frame(2, struct.pack(">Q", 3)) + rec(1, persist) + rec(2, udp) + rec(3, tcp) + frame(4, struct.pack(">Q", 3)),
    hello + frame(2, struct.pack(">Q", 0)) + frame(4, struct.pack(">Q", 0)) + rec(4, persist)
    + frame(5, struct.pack(">Q", 5) + b"\x01" + s(b"src") + s(b"") + s(b"192.0.2.1")) + frame(7, struct.pack(">Q", 1000)),
    hello_resume + frame(6, struct.pack(">Q", 0)) + frame(7, struct.pack(">Q", 1)),
    frame(5, struct.pack(">Q", 9) + b"\x02" + a4([192, 0, 2, 1], 5060) + a4([30, 1, 1, 10], 5060) + a4([10, 1, 1, 50], 5060)),
    frame(5, struct.pack(">Q", 9) + b"\x03" + a4([192, 0, 2, 1], 5060) + a4([30, 1, 1, 10], 5060)),
]
for st in streams:
    put("mirror_frame", b"\x02" + st)
    put("mirror_frame", b"\x65" + st)

# ---- Control JSON ----------------------------------------------------------------------------
lines = [
    b'{"cmd":"announce","routes":[{"prefix":"30.1.1.10/32","next_hop":"20.1.1.6","path_id":1,"communities":["65001:100","graceful-shutdown"],"large_communities":["65001:1:2"],"med":10,"local_pref":200,"as_path_prepend":2}],"persistent":true}',
    b'{"cmd":"withdraw","routes":[{"prefix":"30.1.1.10/32","path_id":1}],"graceful":true}',
    b'{"cmd":"withdraw-all-mine"}', b'{"cmd":"routes"}', b'{"cmd":"neighbors"}',
    b'{"cmd":"adj-rib-out","neighbor":"20.1.1.1"}', b'{"cmd":"reload"}', b'{"cmd":"bfd"}', b'{"cmd":"ready"}',
    b'{"cmd":"status"}', b'{"cmd":"show-virtual-servers","name":"web"}', b'{"cmd":"show-connections","limit":10,"virtual_server":null}',
    b'{"cmd":"delete-persistence","key":"192.0.2.1","member":"10.1.1.50:80","profile":"src"}',
    b'{"cmd":"member","member":"[fd00::1]:80","pool":"web","state":"forced-offline"}',
    b'{"cmd":"failover","to":"lb-b","traffic_group":"tg-1"}',
    b'{"cmd":"device-group-add","name":"lb-d","failover_addresses":["10.9.9.4"],"mirror_addresses":["10.9.9.4"],"config_sync_address":"10.9.9.4","ha_capacity":2}',
    b'{"cmd":"device-group-remove","name":"lb-d"}',
    b'{"data":{"virtual_servers":[]},"ok":true}', b'{"error":"no such pool","ok":false}',
    b'{"ok":true,"announced":2}', b'{"ok":true,"routes":[]}', b'{"ok":true,"withdrawn":1}',
]
for i, l in enumerate(lines):
    put("control_json", bytes([64]) + l + b"\n")
put("control_json", bytes([4]) + b"\n".join(lines[:6]) + b"\r\n" + lines[9])
put("control_json", bytes([255]) + b"\n".join(lines[9:]) + b"\n")

# ---- TOML configs ----------------------------------------------------------------------------
readme = read("README.md").decode()
blocks = re.findall(r"```toml\n(.*?)```", readme, re.S)
for b in blocks:
    put("config_toml", "\n".join(l.strip() if l.startswith("  ") else l for l in b.splitlines()).encode())
lbd_tests = read("lbd/src/config/tests.rs").decode()
for m in re.findall(r'r#"(.*?)"#', lbd_tests, re.S)[:12]:
    if "[device]" in m:
        put("config_toml", m.encode())
bgpd_cfg = read("bgpd/src/config.rs").decode()
for m in re.findall(r'r#"(.*?)"#', bgpd_cfg, re.S)[:8]:
    if "router_id" in m:
        put("config_toml", m.encode())

# ---- Plugins (byte 0: profile index | 0x40 UDP | 0x80 server-to-client) -----------------------
SDP = b"v=0\r\no=alice 2890844526 2890844526 IN IP4 pc33.atlanta.com\r\ns=-\r\nc=IN IP4 pc33.atlanta.com\r\nt=0 0\r\nm=audio 49172 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
invite = (b"INVITE sip:bob@biloxi.com SIP/2.0\r\nVia: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8\r\n"
          b"Max-Forwards: 70\r\nTo: Bob <sip:bob@biloxi.com>\r\nFrom: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n"
          b"Call-ID: a84b4c76e66710@pc33.atlanta.com\r\nCSeq: 314159 INVITE\r\nContact: <sip:alice@pc33.atlanta.com>\r\n"
          b"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n" % len(SDP) + SDP)
compact = (b"INVITE sip:bob@biloxi.com SIP/2.0\r\nv: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8\r\n"
           b"Max-Forwards: 70\r\nt: Bob <sip:bob@biloxi.com>\r\nf: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n"
           b"Subject: I know you're there,\r\n pick up the phone\r\n and talk to me!\r\n"
           b"I  :   a84b4c76e66710@pc33.atlanta.com  \r\nCSeq: 314159 INVITE\r\nm: <sip:alice@pc33.atlanta.com>\r\n"
           b"c: application/sdp\r\nL\t: %d\r\n\r\n" % len(SDP) + SDP)
ok = (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP server10.biloxi.com;branch=z9hG4bK4b43c2ff8.1;received=192.0.2.3\r\n"
      b"To: Bob <sip:bob@biloxi.com>;tag=a6c85cf\r\nFrom: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n"
      b"Call-ID: a84b4c76e66710@pc33.atlanta.com\r\nCSeq: 314159 INVITE\r\nContact: <sip:bob@192.0.2.4>\r\nContent-Length: 0\r\n\r\n")
for sel in (0, 0x40, 0x80):
    for m in (invite, compact, ok):
        put("plugin_inspect", bytes([sel]) + m)
rdp = bytes([0x03, 0x00, 0x00, 0x2c, 0x27, 0xe0, 0, 0, 0, 0, 0]) + b"Cookie: mstshash=eltons\r\n" + bytes([1, 0, 8, 0, 0, 0, 0, 0])
tok = b"Cookie: msts=3640205228.15629.0000\r\n" + bytes([1, 0, 8, 0, 3, 0, 0, 0])
rdp2 = bytes([3, 0]) + struct.pack(">H", 11 + len(tok)) + bytes([6 + len(tok), 0xe0, 0, 0, 0, 0, 0]) + tok
for m in (rdp, rdp2):
    put("plugin_inspect", bytes([1]) + m)
fx = os.path.join(ROOT, "plugins/ssl/fixtures")
for f in sorted(os.listdir(fx)):
    if f.endswith(".hex"):
        data = hx(read(os.path.join("plugins/ssl/fixtures", f)).decode())
        put("plugin_inspect", bytes([2 | (0x80 if "serverhello" in f else 0)]) + data)
REQ = b"GET /app HTTP/1.1\r\nHost: a.example\r\nCookie: x=1; JSESSIONID=ab12cd; y=2\r\n\r\n"
for sel in (3, 4, 5, 6, 7, 0x43):
    put("plugin_inspect", bytes([sel]) + REQ)
put("plugin_inspect", bytes([6]) + b"GET / HTTP/1.1\r\nCookie: USER=alice;\r\n\r\n")
print("seeds written under", CORPUS)
