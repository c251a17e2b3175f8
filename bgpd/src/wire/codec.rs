//! Translation between [`super::Message`] and bytes.
//!
//! Decoding goes through netgauze-bgp-pkt. For UPDATEs we frame the path attributes ourselves
//! (RFC 7606 §4) and hand netgauze one attribute at a time, so that an error is pinned to the
//! attribute that caused it and RFC 7606 treat-as-withdraw / attribute-discard can be applied
//! reliably (netgauze's own error recovery can lose the attribute boundaries).
//!
//! Encoding writes the bytes directly: UPDATE packing is the hot path (hundreds of thousands of
//! /32s) and sizes are computed arithmetically instead of encode-and-retry. The tests check the
//! output byte for byte against hand-built RFC fixtures and decode it back through netgauze.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use netgauze_bgp_pkt::capabilities::BgpCapability;
use netgauze_bgp_pkt::iana::RouteRefreshSubcode;
use netgauze_bgp_pkt::notification::BgpNotificationMessage;
use netgauze_bgp_pkt::path_attribute::{
    AsPath, AsPathSegmentType, MpReach, MpUnreach, Origin as NgOrigin, PathAttribute,
    PathAttributeValue,
};
use netgauze_bgp_pkt::wire::deserializer::{BgpMessageParsingError, BgpParsingContext};
use netgauze_bgp_pkt::BgpMessage;
use netgauze_iana::address_family::AddressType;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;
use netgauze_parse_utils::WritablePdu;

use super::*;

/// BGP message types (RFC 4271 §4.1, RFC 2918 §3).
const MSG_OPEN: u8 = 1;
const MSG_UPDATE: u8 = 2;
const MSG_NOTIFICATION: u8 = 3;
const MSG_KEEPALIVE: u8 = 4;
const MSG_ROUTE_REFRESH: u8 = 5;

/// Path attribute type codes (RFC 4271 §5, RFC 1997, RFC 4760, RFC 6793, RFC 8092).
const ATTR_ORIGIN: u8 = 1;
const ATTR_AS_PATH: u8 = 2;
const ATTR_NEXT_HOP: u8 = 3;
const ATTR_MED: u8 = 4;
const ATTR_LOCAL_PREF: u8 = 5;
const ATTR_ATOMIC_AGGREGATE: u8 = 6;
const ATTR_AGGREGATOR: u8 = 7;
const ATTR_COMMUNITIES: u8 = 8;
const ATTR_ORIGINATOR_ID: u8 = 9;
const ATTR_CLUSTER_LIST: u8 = 10;
const ATTR_MP_REACH: u8 = 14;
const ATTR_MP_UNREACH: u8 = 15;
const ATTR_EXT_COMMUNITIES: u8 = 16;
const ATTR_AS4_PATH: u8 = 17;
const ATTR_AS4_AGGREGATOR: u8 = 18;
const ATTR_IPV6_EXT_COMMUNITIES: u8 = 25;
const ATTR_LARGE_COMMUNITIES: u8 = 32;

/// Attribute flag bits (RFC 4271 §4.3).
const FLAG_OPTIONAL: u8 = 0x80;
const FLAG_TRANSITIVE: u8 = 0x40;
const FLAG_EXTENDED: u8 = 0x10;

/// AS_PATH segment types (RFC 4271 §4.3).
const SEG_SET: u8 = 1;
const SEG_SEQUENCE: u8 = 2;

/// Capability codes (RFC 5492 and the IANA registry).
const CAP_MULTIPROTOCOL: u8 = 1;
const CAP_ROUTE_REFRESH: u8 = 2;
const CAP_GRACEFUL_RESTART: u8 = 64;
const CAP_FOUR_OCTET_AS: u8 = 65;
const CAP_ADD_PATH: u8 = 69;

/// AFI/SAFI values (RFC 4760 §3, IANA).
const AFI_IPV4: u16 = 1;
const AFI_IPV6: u16 = 2;
const SAFI_UNICAST: u8 = 1;

/// UPDATE error subcodes not in [`notif`] (RFC 4271 §4.5).
const UPDATE_UNRECOGNIZED_WELL_KNOWN: u8 = 2;
const UPDATE_OPTIONAL_ATTRIBUTE_ERROR: u8 = 9;
/// ROUTE-REFRESH error subcode "Invalid Message Length" (RFC 7313 §5).
const ROUTE_REFRESH_INVALID_LENGTH: u8 = 1;

fn err(code: u8, subcode: u8, data: Vec<u8>, detail: impl Into<String>) -> DecodeError {
    DecodeError {
        code,
        subcode,
        data,
        detail: detail.into(),
    }
}

fn family_afi_safi(family: Family) -> (u16, u8) {
    match family {
        Family::Ipv4Unicast => (AFI_IPV4, SAFI_UNICAST),
        Family::Ipv6Unicast => (AFI_IPV6, SAFI_UNICAST),
    }
}

fn family_of_address_type(at: AddressType) -> Option<Family> {
    match at {
        AddressType::Ipv4Unicast => Some(Family::Ipv4Unicast),
        AddressType::Ipv6Unicast => Some(Family::Ipv6Unicast),
        _ => None,
    }
}

fn address_type_of(family: Family) -> AddressType {
    match family {
        Family::Ipv4Unicast => AddressType::Ipv4Unicast,
        Family::Ipv6Unicast => AddressType::Ipv6Unicast,
    }
}

// ---------------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------------

/// Length of the first complete message in `buf`: `Ok(None)` while fewer bytes than a whole
/// message are buffered, an error for a bad marker or a length outside 19..=4096
/// (RFC 4271 §6.1).
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    // RFC 4271 §6.1: the marker must be all ones, else Connection Not Synchronized.
    if header[..16].iter().any(|&b| b != 0xff) {
        return Err(err(
            notif::HEADER,
            notif::HEADER_NOT_SYNCHRONIZED,
            Vec::new(),
            "message marker is not all ones",
        ));
    }
    let len_bytes = [header[16], header[17]];
    let len = usize::from(u16::from_be_bytes(len_bytes));
    // RFC 4271 §6.1: Bad Message Length, the data field carries the erroneous Length field.
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len) {
        return Err(err(
            notif::HEADER,
            notif::HEADER_BAD_LENGTH,
            len_bytes.to_vec(),
            format!("message length {len} outside {HEADER_LEN}..={MAX_MESSAGE_LEN}"),
        ));
    }
    if buf.len() < len {
        return Ok(None);
    }
    Ok(Some(len))
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/// Decodes one whole message (header included).
///
/// Errors carry the NOTIFICATION to send (RFC 4271 §6). Two cases are not worth a session
/// reset and callers may ignore them instead: a ROUTE-REFRESH for a family other than IPv4/IPv6
/// unicast, or with a non-zero (RFC 7313) subtype, is reported as code 7 subcode 0 (RFC 2918 §4
/// says to ignore such a request); a NOTIFICATION that netgauze cannot interpret is still
/// returned as [`Message::Notification`] from its raw code/subcode/data (RFC 4271 §6: never
/// answer a NOTIFICATION with one).
pub fn decode(msg: &[u8], ctx: &SessionCodec) -> Result<Message, DecodeError> {
    let len = frame_len(msg)?.ok_or_else(|| {
        let data = msg.get(16..18).map(<[u8]>::to_vec).unwrap_or_default();
        err(
            notif::HEADER,
            notif::HEADER_BAD_LENGTH,
            data,
            "truncated message",
        )
    })?;
    let len_field = msg[16..18].to_vec();
    if len != msg.len() {
        return Err(err(
            notif::HEADER,
            notif::HEADER_BAD_LENGTH,
            len_field,
            format!(
                "message length {len} does not match the {} bytes given",
                msg.len()
            ),
        ));
    }
    let msg_type = msg[18];
    // RFC 4271 §6.1: per-type minimum / exact lengths.
    let bad_len = match msg_type {
        MSG_OPEN => len < 29,
        MSG_UPDATE => len < 23,
        MSG_NOTIFICATION => len < 21,
        MSG_KEEPALIVE => len != HEADER_LEN,
        MSG_ROUTE_REFRESH => {
            // RFC 7313 §5: ROUTE-REFRESH Message Error / Invalid Message Length, data is the
            // whole message.
            if len != 23 {
                return Err(err(
                    notif::ROUTE_REFRESH,
                    ROUTE_REFRESH_INVALID_LENGTH,
                    msg.to_vec(),
                    format!("route-refresh length {len}, expected 23"),
                ));
            }
            false
        }
        other => {
            return Err(err(
                notif::HEADER,
                notif::HEADER_BAD_TYPE,
                vec![other],
                format!("unknown message type {other}"),
            ));
        }
    };
    if bad_len {
        return Err(err(
            notif::HEADER,
            notif::HEADER_BAD_LENGTH,
            len_field,
            format!("length {len} invalid for message type {msg_type}"),
        ));
    }
    match msg_type {
        MSG_UPDATE => decode_update(msg, ctx).map(Message::Update),
        MSG_NOTIFICATION => {
            // Let netgauze validate it; an unknown code is still a NOTIFICATION to report.
            let _ = parse_with_netgauze(msg, &mut parsing_context(ctx));
            Ok(Message::Notification(Notification {
                code: msg[19],
                subcode: msg[20],
                data: msg[21..].to_vec(),
            }))
        }
        _ => match parse_with_netgauze(msg, &mut parsing_context(ctx)) {
            Ok(BgpMessage::Open(open)) => Ok(Message::Open(convert_open(&open))),
            Ok(BgpMessage::KeepAlive) => Ok(Message::Keepalive),
            Ok(BgpMessage::RouteRefresh(rr)) => {
                match (
                    family_of_address_type(rr.address_type()),
                    rr.operation_type(),
                ) {
                    (Some(family), RouteRefreshSubcode::NormalRequest) => {
                        Ok(Message::RouteRefresh(RouteRefresh { family }))
                    }
                    _ => Err(unsupported_route_refresh(msg)),
                }
            }
            Ok(_) => Err(err(
                notif::HEADER,
                notif::HEADER_BAD_TYPE,
                vec![msg_type],
                "netgauze decoded a different message type",
            )),
            Err(BgpMessageParsingError::BgpRouteRefreshMessageParsingError(_)) => {
                Err(unsupported_route_refresh(msg))
            }
            Err(e) => Err(map_netgauze_error(e)),
        },
    }
}

fn unsupported_route_refresh(msg: &[u8]) -> DecodeError {
    let afi = u16::from_be_bytes([msg[19], msg[20]]);
    err(
        notif::ROUTE_REFRESH,
        0,
        msg.to_vec(),
        format!(
            "route-refresh for unsupported afi {afi} safi {} subtype {} (ignore per rfc 2918 §4)",
            msg[22], msg[21]
        ),
    )
}

/// The netgauze context for this session: ADD-PATH receive families expect path ids
/// (RFC 7911 §3); all "fail on" switches off so that we decide what an error means.
fn parsing_context(ctx: &SessionCodec) -> BgpParsingContext {
    let add_path = ctx
        .add_path_receive
        .iter()
        .map(|f| (address_type_of(*f), true))
        .collect::<HashMap<_, _>>();
    BgpParsingContext::new(
        ctx.asn4,
        HashMap::new(),
        add_path,
        false,
        false,
        false,
        false,
    )
}

fn parse_with_netgauze(
    msg: &[u8],
    pctx: &mut BgpParsingContext,
) -> Result<BgpMessage, BgpMessageParsingError> {
    let mut reader = SliceReader::new(msg);
    let parsed = BgpMessage::parse(&mut reader, pctx)?;
    if !reader.is_empty() {
        return Err(BgpMessageParsingError::UnparseableBytes {
            offset: reader.offset(),
            length: u16::try_from(msg.len()).unwrap_or(u16::MAX),
            unparsed_bytes: reader.remaining(),
        });
    }
    Ok(parsed)
}

/// Maps a netgauze error to the NOTIFICATION netgauze itself derives for it (RFC 4271 §6).
fn map_netgauze_error(e: BgpMessageParsingError) -> DecodeError {
    let detail = format!("malformed message: {e}");
    let notification = BgpNotificationMessage::from(e);
    let mut buf = Vec::new();
    match notification.write(&mut buf) {
        Ok(()) if buf.len() >= 2 => err(
            buf[0],
            buf[1],
            buf.get(2..).map(<[u8]>::to_vec).unwrap_or_default(),
            detail,
        ),
        _ => err(notif::FSM, 0, Vec::new(), detail),
    }
}

fn convert_open(open: &netgauze_bgp_pkt::open::BgpOpenMessage) -> Open {
    let mut caps = Capabilities::default();
    for cap in open.capabilities() {
        match cap {
            BgpCapability::MultiProtocolExtensions(mp) => {
                // RFC 4760 §8: families we do not speak are not recorded.
                if let Some(f) = family_of_address_type(mp.address_type()) {
                    if !caps.multiprotocol.contains(&f) {
                        caps.multiprotocol.push(f);
                    }
                }
            }
            BgpCapability::RouteRefresh => caps.route_refresh = true,
            BgpCapability::FourOctetAs(c) => caps.four_octet_as = Some(c.asn4()),
            BgpCapability::GracefulRestartCapability(gr) => {
                // RFC 4724 §3: families we do not speak are left out.
                let families = gr
                    .address_families()
                    .iter()
                    .filter_map(|af| {
                        family_of_address_type(af.address_type())
                            .map(|f| (f, af.forwarding_state()))
                    })
                    .collect();
                caps.graceful_restart = Some(GracefulRestart {
                    restarted: gr.restart(),
                    notification: gr.graceful_notification(),
                    restart_time: gr.time() & GracefulRestart::MAX_RESTART_TIME,
                    families,
                });
            }
            BgpCapability::AddPath(ap) => {
                for af in ap.address_families() {
                    if let Some(f) = family_of_address_type(af.address_type()) {
                        let mode = AddPathMode {
                            receive: af.receive(),
                            send: af.send(),
                        };
                        match caps.add_path.iter_mut().find(|(g, _)| *g == f) {
                            Some(entry) => entry.1 = mode,
                            None => caps.add_path.push((f, mode)),
                        }
                    }
                }
            }
            other => {
                let code = match other.code() {
                    Ok(c) => u8::from(c),
                    Err(c) => c,
                };
                if !caps.other.contains(&code) {
                    caps.other.push(code);
                }
            }
        }
    }
    Open {
        // RFC 6793 §4.1: the 4-octet capability carries the real AS.
        asn: caps.four_octet_as.unwrap_or(u32::from(open.my_as())),
        hold_time: open.hold_time(),
        bgp_id: open.bgp_id(),
        capabilities: caps,
    }
}

/// What to do with the UPDATE after an attribute error (RFC 7606 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    TreatAsWithdraw,
    Discard,
    /// Session reset with this UPDATE error subcode.
    Reset(u8),
}

/// RFC 7606 §7 (and the attributes' own RFCs): the action for a malformed attribute.
fn outcome_for(code: u8, ebgp: bool) -> Outcome {
    match code {
        // RFC 7606 §7.5, §7.9, §7.10: from an external neighbor these are discarded whatever
        // their form.
        ATTR_LOCAL_PREF | ATTR_ORIGINATOR_ID | ATTR_CLUSTER_LIST if ebgp => Outcome::Discard,
        // RFC 7606 §7.1-7.5, §7.8-7.10, §7.14; RFC 8092 §6 (large communities).
        ATTR_ORIGIN
        | ATTR_AS_PATH
        | ATTR_NEXT_HOP
        | ATTR_MED
        | ATTR_LOCAL_PREF
        | ATTR_COMMUNITIES
        | ATTR_ORIGINATOR_ID
        | ATTR_CLUSTER_LIST
        | ATTR_EXT_COMMUNITIES
        | ATTR_IPV6_EXT_COMMUNITIES
        | ATTR_LARGE_COMMUNITIES => Outcome::TreatAsWithdraw,
        // RFC 7606 §7.6, §7.7; RFC 6793 §6 (AS4_PATH, AS4_AGGREGATOR).
        ATTR_ATOMIC_AGGREGATE | ATTR_AGGREGATOR | ATTR_AS4_PATH | ATTR_AS4_AGGREGATOR => {
            Outcome::Discard
        }
        // RFC 7606 §5.3, §7.11; RFC 4760 §7: a broken MP_(UN)REACH_NLRI means we cannot tell
        // which routes are affected.
        ATTR_MP_REACH | ATTR_MP_UNREACH => Outcome::Reset(UPDATE_OPTIONAL_ATTRIBUTE_ERROR),
        // Attributes bgpd does not use: dropping them loses nothing.
        _ => Outcome::Discard,
    }
}

/// Attributes netgauze parsed successfully, kept by type.
#[derive(Default)]
struct Parsed {
    origin: Option<Origin>,
    as_path: Option<Vec<AsSegment>>,
    /// AS_PATH counted per RFC 6793 §4.2.3 when it arrives over a 2-octet session.
    as4_path: Option<Vec<AsSegment>>,
    next_hop: Option<Ipv4Addr>,
    med: Option<u32>,
    local_pref: Option<u32>,
    communities: Vec<u32>,
    large_communities: Vec<LargeCommunity>,
    mp_reach: Option<MpReach>,
    mp_unreach: Option<MpUnreach>,
}

struct UpdateDecoder {
    parsed: Parsed,
    errors: Vec<AttrError>,
    treat_as_withdraw: bool,
    ebgp: bool,
}

impl UpdateDecoder {
    /// Applies the RFC 7606 outcome for the malformed attribute `raw` (header included).
    fn attr_error(&mut self, code: u8, raw: &[u8], detail: String) -> Result<(), DecodeError> {
        match outcome_for(code, self.ebgp) {
            Outcome::TreatAsWithdraw => {
                self.treat_as_withdraw = true;
                self.errors.push(AttrError {
                    action: AttrErrorAction::TreatAsWithdraw,
                    detail,
                });
            }
            Outcome::Discard => self.errors.push(AttrError {
                action: AttrErrorAction::AttributeDiscard,
                detail,
            }),
            // RFC 4271 §6.3: the Data field of an Optional Attribute Error carries the attribute
            // (type, length and value).
            Outcome::Reset(sub) => return Err(err(notif::UPDATE, sub, raw.to_vec(), detail)),
        }
        Ok(())
    }
}

fn decode_update(msg: &[u8], ctx: &SessionCodec) -> Result<Update, DecodeError> {
    let body = &msg[HEADER_LEN..];
    // RFC 4271 §6.3: Withdrawn Routes Length or Total Attribute Length too large → Malformed
    // Attribute List (RFC 7606 §5.3 keeps this a session reset).
    let malformed_list = |detail: &str| {
        err(
            notif::UPDATE,
            notif::UPDATE_MALFORMED_ATTRIBUTE_LIST,
            Vec::new(),
            detail.to_string(),
        )
    };
    let wd_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let withdrawn_raw = body
        .get(2..2 + wd_len)
        .ok_or_else(|| malformed_list("withdrawn routes length overruns the message"))?;
    let rest = &body[2 + wd_len..];
    let attr_len = match rest {
        [a, b, ..] => usize::from(u16::from_be_bytes([*a, *b])),
        _ => {
            return Err(malformed_list(
                "no room for the total path attribute length",
            ))
        }
    };
    let attrs_raw = rest
        .get(2..2 + attr_len)
        .ok_or_else(|| malformed_list("total path attribute length overruns the message"))?;
    let nlri_raw = &rest[2 + attr_len..];

    let mut pctx = parsing_context(ctx);
    let (body_withdrawn, body_nlri) = parse_body_prefixes(withdrawn_raw, nlri_raw, &mut pctx)?;

    let mut dec = UpdateDecoder {
        parsed: Parsed::default(),
        errors: Vec::new(),
        treat_as_withdraw: false,
        ebgp: ctx.ebgp,
    };
    parse_attributes(attrs_raw, &mut pctx, &mut dec)?;
    let UpdateDecoder {
        parsed,
        mut errors,
        mut treat_as_withdraw,
        ..
    } = dec;

    let mut withdrawn = body_withdrawn;
    let mut announced_v4 = body_nlri;
    let mut announced_v6 = Vec::new();
    let mut v6_next_hop: Option<(Ipv6Addr, Option<Ipv6Addr>)> = None;
    let mut mp_v4_next_hop: Option<IpAddr> = None;
    let mut eor_unreach: Option<Family> = None;

    match &parsed.mp_unreach {
        Some(MpUnreach::Ipv4Unicast { nlri }) => {
            if nlri.is_empty() {
                eor_unreach = Some(Family::Ipv4Unicast);
            }
            withdrawn.extend(nlri.iter().map(|a| Nlri {
                prefix: IpNet::V4(a.network().address().trunc()),
                path_id: a.path_id(),
            }));
        }
        Some(MpUnreach::Ipv6Unicast { nlri }) => {
            if nlri.is_empty() {
                eor_unreach = Some(Family::Ipv6Unicast);
            }
            withdrawn.extend(nlri.iter().map(|a| Nlri {
                prefix: IpNet::V6(a.network().address().trunc()),
                path_id: a.path_id(),
            }));
        }
        // Other families are not ours (RFC 4760 §7 lets us ignore what we did not negotiate).
        _ => {}
    }
    match &parsed.mp_reach {
        Some(MpReach::Ipv4Unicast { next_hop, nlri, .. }) => {
            mp_v4_next_hop = Some(*next_hop);
            announced_v4.extend(nlri.iter().map(|a| Nlri {
                prefix: IpNet::V4(a.network().address().trunc()),
                path_id: a.path_id(),
            }));
        }
        Some(MpReach::Ipv6Unicast {
            next_hop_global,
            next_hop_local,
            nlri,
        }) => {
            v6_next_hop = Some((*next_hop_global, *next_hop_local));
            announced_v6.extend(nlri.iter().map(|a| Nlri {
                prefix: IpNet::V6(a.network().address().trunc()),
                path_id: a.path_id(),
            }));
        }
        _ => {}
    }

    let mut attrs = PathAttrs {
        origin: parsed.origin.unwrap_or_default(),
        as_path: Vec::new(),
        next_hop: None,
        next_hop_local: None,
        med: parsed.med,
        local_pref: parsed.local_pref,
        communities: parsed.communities.clone(),
        large_communities: parsed.large_communities.clone(),
    };
    // RFC 6793 §4.2.3: a NEW speaker on a 2-octet session rebuilds the path from AS_PATH and
    // AS4_PATH; on a 4-octet session AS4_PATH must be ignored (§4.1).
    attrs.as_path = match (&parsed.as_path, &parsed.as4_path) {
        (Some(p), Some(p4)) if !ctx.asn4 => merge_as4_path(p, p4),
        (Some(p), _) => p.clone(),
        (None, _) => Vec::new(),
    };

    let body_reach = !announced_v4.is_empty() && mp_v4_next_hop.is_none();
    if !announced_v4.is_empty() {
        attrs.next_hop = parsed.next_hop.map(IpAddr::V4).or(mp_v4_next_hop);
        if !announced_v6.is_empty() {
            // Our Update carries one next hop; a peer mixing both families' reachability in
            // one UPDATE (nobody we know does) gets its IPv6 routes ignored.
            errors.push(AttrError {
                action: AttrErrorAction::TreatAsWithdraw,
                detail: "ipv6 nlri in an update that also announces ipv4: ignored".to_string(),
            });
            withdrawn.append(&mut announced_v6);
        }
    } else if let Some((global, local)) = v6_next_hop {
        attrs.next_hop = Some(IpAddr::V6(global));
        attrs.next_hop_local = local;
    }

    let mut announced = announced_v4;
    announced.append(&mut announced_v6);

    if !announced.is_empty() {
        // RFC 7606 §3 (d), RFC 4760 §3: missing well-known mandatory attributes.
        let mut missing = Vec::new();
        if parsed.origin.is_none() && !has_error_for(&errors, "origin") {
            missing.push("origin");
        }
        if parsed.as_path.is_none() && !has_error_for(&errors, "as_path") {
            missing.push("as_path");
        }
        if body_reach && parsed.next_hop.is_none() && !has_error_for(&errors, "next_hop") {
            missing.push("next_hop");
        }
        if !missing.is_empty() {
            treat_as_withdraw = true;
            errors.push(AttrError {
                action: AttrErrorAction::TreatAsWithdraw,
                detail: format!("missing mandatory attribute(s): {}", missing.join(", ")),
            });
        }
        // RFC 7606 §7.3 / RFC 4271 §6.3: a next hop that is not a unicast host address.
        if let Some(nh) = attrs.next_hop {
            if !valid_next_hop(nh) {
                treat_as_withdraw = true;
                errors.push(AttrError {
                    action: AttrErrorAction::TreatAsWithdraw,
                    detail: format!("next hop {nh} is not a unicast host address"),
                });
            }
        }
    }

    // RFC 7606 §2: treat-as-withdraw, the announced routes are withdrawn instead.
    if treat_as_withdraw && !announced.is_empty() {
        withdrawn.append(&mut announced);
    }
    if announced.is_empty() {
        attrs = PathAttrs::default();
    }

    // RFC 4724 §2: End-of-RIB is an empty UPDATE (IPv4 unicast) or an UPDATE with only an
    // empty MP_UNREACH_NLRI for the family.
    let end_of_rib = if withdrawn.is_empty() && announced.is_empty() && errors.is_empty() {
        if attrs_raw.is_empty() && wd_len == 0 && nlri_raw.is_empty() {
            Some(Family::Ipv4Unicast)
        } else {
            eor_unreach.filter(|_| parsed.mp_reach.is_none())
        }
    } else {
        None
    };

    Ok(Update {
        withdrawn,
        announced,
        attrs,
        errors,
        end_of_rib,
    })
}

fn has_error_for(errors: &[AttrError], name: &str) -> bool {
    errors.iter().any(|e| e.detail.starts_with(name))
}

fn valid_next_hop(nh: IpAddr) -> bool {
    match nh {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_broadcast() || a.is_multicast()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast()),
    }
}

/// Withdrawn routes and body NLRI through netgauze: we hand it an UPDATE made of just those
/// two fields. RFC 7606 §3 (j), §5.3: a syntax error there is a session reset.
fn parse_body_prefixes(
    withdrawn_raw: &[u8],
    nlri_raw: &[u8],
    pctx: &mut BgpParsingContext,
) -> Result<(Vec<Nlri>, Vec<Nlri>), DecodeError> {
    if withdrawn_raw.is_empty() && nlri_raw.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let total = HEADER_LEN + 4 + withdrawn_raw.len() + nlri_raw.len();
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&[0xff; 16]);
    m.extend_from_slice(&u16::try_from(total).unwrap_or(u16::MAX).to_be_bytes());
    m.push(MSG_UPDATE);
    m.extend_from_slice(
        &u16::try_from(withdrawn_raw.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    m.extend_from_slice(withdrawn_raw);
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(nlri_raw);
    match parse_with_netgauze(&m, pctx) {
        Ok(BgpMessage::Update(u)) => {
            let conv = |a: &netgauze_bgp_pkt::nlri::Ipv4UnicastAddress| Nlri {
                prefix: IpNet::V4(a.network().address().trunc()),
                path_id: a.path_id(),
            };
            let w = u.withdraw_routes().iter().map(conv).collect();
            let n = u.nlri().iter().map(conv).collect();
            Ok((w, n))
        }
        Ok(_) => Err(err(
            notif::UPDATE,
            notif::UPDATE_INVALID_NETWORK_FIELD,
            Vec::new(),
            "nlri",
        )),
        Err(e) => Err(err(
            notif::UPDATE,
            notif::UPDATE_INVALID_NETWORK_FIELD,
            Vec::new(),
            format!("malformed withdrawn routes or nlri field: {e}"),
        )),
    }
}

fn attr_name(code: u8) -> String {
    match code {
        ATTR_ORIGIN => "origin".into(),
        ATTR_AS_PATH => "as_path".into(),
        ATTR_NEXT_HOP => "next_hop".into(),
        ATTR_MED => "multi_exit_disc".into(),
        ATTR_LOCAL_PREF => "local_pref".into(),
        ATTR_ATOMIC_AGGREGATE => "atomic_aggregate".into(),
        ATTR_AGGREGATOR => "aggregator".into(),
        ATTR_COMMUNITIES => "communities".into(),
        ATTR_MP_REACH => "mp_reach_nlri".into(),
        ATTR_MP_UNREACH => "mp_unreach_nlri".into(),
        ATTR_AS4_PATH => "as4_path".into(),
        ATTR_LARGE_COMMUNITIES => "large_communities".into(),
        other => format!("attribute {other}"),
    }
}

/// Walks the path attributes (RFC 4271 §4.3) and parses each with netgauze.
fn parse_attributes(
    attrs_raw: &[u8],
    pctx: &mut BgpParsingContext,
    dec: &mut UpdateDecoder,
) -> Result<(), DecodeError> {
    let mut seen = [false; 256];
    let mut pos = 0;
    while pos < attrs_raw.len() {
        let rest = &attrs_raw[pos..];
        // RFC 7606 §4: too few octets for an attribute header, or a length running past the
        // Total Attribute Length → treat-as-withdraw; NLRI are still located by the total.
        let (flags, code) = match rest {
            [f, c, ..] => (*f, *c),
            _ => {
                dec.treat_as_withdraw = true;
                dec.errors.push(AttrError {
                    action: AttrErrorAction::TreatAsWithdraw,
                    detail: "attribute list ends inside an attribute header".into(),
                });
                return Ok(());
            }
        };
        let extended = flags & FLAG_EXTENDED != 0;
        let (hdr, vlen) = match (extended, rest.get(2), rest.get(3)) {
            (false, Some(l), _) => (3, usize::from(*l)),
            (true, Some(h), Some(l)) => (4, usize::from(u16::from_be_bytes([*h, *l]))),
            _ => {
                dec.treat_as_withdraw = true;
                dec.errors.push(AttrError {
                    action: AttrErrorAction::TreatAsWithdraw,
                    detail: "attribute list ends inside an attribute header".into(),
                });
                return Ok(());
            }
        };
        let Some(raw) = rest.get(..hdr + vlen) else {
            if code == ATTR_MP_REACH || code == ATTR_MP_UNREACH {
                // The attribute as far as the list goes (RFC 4271 §6.3).
                return Err(err(
                    notif::UPDATE,
                    UPDATE_OPTIONAL_ATTRIBUTE_ERROR,
                    rest.to_vec(),
                    format!("{} length overruns the attribute list", attr_name(code)),
                ));
            }
            dec.treat_as_withdraw = true;
            dec.errors.push(AttrError {
                action: AttrErrorAction::TreatAsWithdraw,
                detail: format!("{} length overruns the attribute list", attr_name(code)),
            });
            return Ok(());
        };
        pos += raw.len();
        // RFC 7606 §3 (g): repeated MP_(UN)REACH_NLRI is a session reset, other repeats are
        // discarded after the first.
        if seen[usize::from(code)] {
            if code == ATTR_MP_REACH || code == ATTR_MP_UNREACH {
                return Err(err(
                    notif::UPDATE,
                    notif::UPDATE_MALFORMED_ATTRIBUTE_LIST,
                    Vec::new(),
                    format!("{} appears more than once", attr_name(code)),
                ));
            }
            dec.errors.push(AttrError {
                action: AttrErrorAction::AttributeDiscard,
                detail: format!("{} repeated: later copies discarded", attr_name(code)),
            });
            continue;
        }
        seen[usize::from(code)] = true;
        // netgauze reads any next-hop length for IPv6 unicast MP_REACH: check it here
        // (RFC 2545 §3: 16 or 32 octets; RFC 7606 §7.11: inconsistent length is a reset).
        if code == ATTR_MP_REACH {
            let value = &raw[hdr..];
            if let [0, 2, 1, nh_len, ..] = value {
                if *nh_len != 16 && *nh_len != 32 {
                    return Err(err(
                        notif::UPDATE,
                        UPDATE_OPTIONAL_ATTRIBUTE_ERROR,
                        raw.to_vec(),
                        format!("mp_reach_nlri ipv6 next hop length {nh_len}"),
                    ));
                }
            }
        }
        let mut reader = SliceReader::new(raw);
        match PathAttribute::parse(&mut reader, &mut *pctx) {
            Ok(_) if !reader.is_empty() => {
                dec.attr_error(code, raw, format!("{} has trailing bytes", attr_name(code)))?;
            }
            Ok(attr) => {
                if let PathAttributeValue::UnknownAttribute(_) = attr.value() {
                    // RFC 4271 §6.3: an unrecognized well-known attribute resets the session.
                    if flags & FLAG_OPTIONAL == 0 {
                        return Err(err(
                            notif::UPDATE,
                            UPDATE_UNRECOGNIZED_WELL_KNOWN,
                            raw.to_vec(),
                            format!("unrecognized well-known attribute {code}"),
                        ));
                    }
                }
                store_attribute(attr, pctx.asn4(), dec)?;
            }
            Err(e) => {
                dec.attr_error(code, raw, format!("{} malformed: {e}", attr_name(code)))?;
            }
        }
    }
    Ok(())
}

/// netgauze 0.13 knows AS_SET and AS_SEQUENCE only; confederation segments (RFC 5065) make
/// the AS_PATH malformed there, hence treat-as-withdraw (bgpd is never in a confederation).
fn convert_segments(
    segments: impl Iterator<Item = (AsPathSegmentType, Vec<u32>)>,
) -> Vec<AsSegment> {
    segments
        .map(|(t, asns)| match t {
            AsPathSegmentType::AsSequence => AsSegment::Sequence(asns),
            AsPathSegmentType::AsSet => AsSegment::Set(asns),
        })
        .collect()
}

fn store_attribute(
    attr: PathAttribute,
    asn4: bool,
    dec: &mut UpdateDecoder,
) -> Result<(), DecodeError> {
    let p = &mut dec.parsed;
    match attr.value() {
        PathAttributeValue::Origin(o) => {
            p.origin = Some(match o {
                NgOrigin::IGP => Origin::Igp,
                NgOrigin::EGP => Origin::Egp,
                NgOrigin::Incomplete => Origin::Incomplete,
            })
        }
        PathAttributeValue::AsPath(AsPath::As2PathSegments(segs)) => {
            p.as_path = Some(convert_segments(segs.iter().map(|s| {
                (
                    s.segment_type(),
                    s.as_numbers().iter().map(|a| u32::from(*a)).collect(),
                )
            })));
        }
        PathAttributeValue::AsPath(AsPath::As4PathSegments(segs)) => {
            p.as_path = Some(convert_segments(
                segs.iter()
                    .map(|s| (s.segment_type(), s.as_numbers().to_vec())),
            ));
        }
        // RFC 6793 §4.1: AS4_PATH is ignored on a 4-octet session.
        PathAttributeValue::As4Path(p4) if !asn4 => {
            p.as4_path = Some(convert_segments(
                p4.segments()
                    .iter()
                    .map(|s| (s.segment_type(), s.as_numbers().to_vec())),
            ));
        }
        PathAttributeValue::NextHop(nh) => p.next_hop = Some(nh.next_hop()),
        PathAttributeValue::MultiExitDiscriminator(m) => p.med = Some(m.metric()),
        PathAttributeValue::LocalPreference(l) => p.local_pref = Some(l.metric()),
        PathAttributeValue::Communities(c) => {
            p.communities = c.communities().iter().map(|c| c.value()).collect();
        }
        PathAttributeValue::LargeCommunities(c) => {
            p.large_communities = c
                .communities()
                .iter()
                .map(|c| LargeCommunity(c.global_admin(), c.local_data1(), c.local_data2()))
                .collect();
        }
        PathAttributeValue::MpReach(r) => p.mp_reach = Some(r.clone()),
        PathAttributeValue::MpUnreach(u) => p.mp_unreach = Some(u.clone()),
        _ => {}
    }
    Ok(())
}

/// Number of ASes in a path for RFC 6793 §4.2.3 (an AS_SET counts as one).
fn path_count(path: &[AsSegment]) -> usize {
    path.iter()
        .map(|s| match s {
            AsSegment::Sequence(v) => v.len(),
            AsSegment::Set(_) => 1,
        })
        .sum()
}

/// RFC 6793 §4.2.3: take the leading (count(AS_PATH) - count(AS4_PATH)) ASes of AS_PATH and
/// prepend them to AS4_PATH; ignore AS4_PATH if it is longer than AS_PATH.
fn merge_as4_path(as_path: &[AsSegment], as4_path: &[AsSegment]) -> Vec<AsSegment> {
    let n2 = path_count(as_path);
    let n4 = path_count(as4_path);
    if n4 > n2 {
        return as_path.to_vec();
    }
    let mut take = n2 - n4;
    let mut out: Vec<AsSegment> = Vec::new();
    // Whether the split point fell inside an AS_SEQUENCE.
    let mut split = false;
    for seg in as_path {
        if take == 0 {
            break;
        }
        match seg {
            AsSegment::Sequence(v) => {
                let k = take.min(v.len());
                split = k < v.len();
                out.push(AsSegment::Sequence(v[..k].to_vec()));
                take -= k;
            }
            AsSegment::Set(v) => {
                split = false;
                out.push(AsSegment::Set(v.clone()));
                take -= 1;
            }
        }
    }
    let mut rest = as4_path.iter();
    if split {
        // The halves of one AS_SEQUENCE: join them again.
        if let (Some(AsSegment::Sequence(prev)), Some(AsSegment::Sequence(first))) =
            (out.last_mut(), as4_path.first())
        {
            if prev.len() + first.len() <= 255 {
                prev.extend_from_slice(first);
                rest.next();
            }
        }
    }
    out.extend(rest.cloned());
    out
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

fn start_message(out: &mut Vec<u8>, msg_type: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0xff; 16]);
    out.extend_from_slice(&[0, 0]);
    out.push(msg_type);
    start
}

fn finish_message(out: &mut [u8], start: usize) {
    let len = out.len() - start;
    let len = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
    out[start + 16] = len[0];
    out[start + 17] = len[1];
}

/// Encodes one message. An UPDATE must fit in [`MAX_MESSAGE_LEN`]; use [`encode_updates`] to
/// pack many prefixes.
///
/// An UPDATE whose prefixes are of one family and fit is one message (withdrawn and announced
/// together); otherwise the messages [`encode_updates`] produces are concatenated (they are
/// still a valid byte stream). `Update::errors` is not encoded. An UPDATE with `end_of_rib` set
/// encodes that family's End-of-RIB marker (RFC 4724 §2) and nothing else.
/// [`Capabilities::other`] is informational (decode only) and is not encoded.
pub fn encode(msg: &Message, ctx: &SessionCodec) -> Vec<u8> {
    let mut out = Vec::new();
    match msg {
        Message::Open(open) => encode_open(&mut out, open),
        Message::Update(u) => {
            if let Some(family) = u.end_of_rib {
                encode_end_of_rib(&mut out, family);
            } else {
                encode_update_single(&mut out, u, ctx);
            }
        }
        Message::Notification(n) => {
            let start = start_message(&mut out, MSG_NOTIFICATION);
            out.push(n.code);
            out.push(n.subcode);
            out.extend_from_slice(&n.data);
            finish_message(&mut out, start);
        }
        Message::Keepalive => {
            let start = start_message(&mut out, MSG_KEEPALIVE);
            finish_message(&mut out, start);
        }
        Message::RouteRefresh(rr) => {
            // RFC 2918 §3: AFI, reserved, SAFI.
            let start = start_message(&mut out, MSG_ROUTE_REFRESH);
            let (afi, safi) = family_afi_safi(rr.family);
            out.extend_from_slice(&afi.to_be_bytes());
            out.push(0);
            out.push(safi);
            finish_message(&mut out, start);
        }
    }
    out
}

fn encode_open(out: &mut Vec<u8>, open: &Open) {
    let start = start_message(out, MSG_OPEN);
    out.push(4); // RFC 4271 §4.2: version 4
                 // RFC 6793 §4.2.1: AS_TRANS in My Autonomous System when the AS does not fit.
    let my_as = u16::try_from(open.asn).unwrap_or(AS_TRANS as u16);
    out.extend_from_slice(&my_as.to_be_bytes());
    out.extend_from_slice(&open.hold_time.to_be_bytes());
    out.extend_from_slice(&open.bgp_id.octets());
    let caps = &open.capabilities;
    let mut cap_bytes = Vec::new();
    // RFC 5492 §4: each capability is code, length, value.
    for f in &caps.multiprotocol {
        let (afi, safi) = family_afi_safi(*f);
        cap_bytes.extend_from_slice(&[CAP_MULTIPROTOCOL, 4]);
        cap_bytes.extend_from_slice(&afi.to_be_bytes());
        cap_bytes.extend_from_slice(&[0, safi]); // RFC 4760 §8
    }
    if caps.route_refresh {
        cap_bytes.extend_from_slice(&[CAP_ROUTE_REFRESH, 0]); // RFC 2918 §2
    }
    if let Some(asn) = caps.four_octet_as {
        cap_bytes.extend_from_slice(&[CAP_FOUR_OCTET_AS, 4]); // RFC 6793 §3
        cap_bytes.extend_from_slice(&asn.to_be_bytes());
    }
    if let Some(gr) = &caps.graceful_restart {
        // RFC 4724 §3: Restart Flags (R 0x8, N 0x4 of RFC 8538) and a 12-bit Restart Time,
        // then AFI, SAFI and Flags (F 0x80) per family.
        let families = &gr.families[..gr.families.len().min(60)];
        cap_bytes.push(CAP_GRACEFUL_RESTART);
        cap_bytes.push((2 + families.len() * 4) as u8);
        let flags = (u16::from(gr.restarted) << 15) | (u16::from(gr.notification) << 14);
        let word = flags | (gr.restart_time & GracefulRestart::MAX_RESTART_TIME);
        cap_bytes.extend_from_slice(&word.to_be_bytes());
        for (f, forwarding) in families {
            let (afi, safi) = family_afi_safi(*f);
            cap_bytes.extend_from_slice(&afi.to_be_bytes());
            cap_bytes.push(safi);
            cap_bytes.push(if *forwarding { 0x80 } else { 0 });
        }
    }
    if !caps.add_path.is_empty() {
        // RFC 7911 §4: AFI, SAFI, Send/Receive (1 receive, 2 send, 3 both).
        let entries = caps
            .add_path
            .iter()
            .filter(|(_, m)| m.receive || m.send)
            .take(63);
        let entries: Vec<_> = entries.collect();
        if !entries.is_empty() {
            cap_bytes.push(CAP_ADD_PATH);
            cap_bytes.push((entries.len() * 4) as u8);
            for (f, m) in entries {
                let (afi, safi) = family_afi_safi(*f);
                cap_bytes.extend_from_slice(&afi.to_be_bytes());
                cap_bytes.push(safi);
                cap_bytes.push(u8::from(m.receive) | (u8::from(m.send) << 1));
            }
        }
    }
    if cap_bytes.is_empty() {
        out.push(0);
    } else {
        // One Capabilities optional parameter (RFC 5492 §4, parameter type 2).
        let cap_len = cap_bytes.len().min(253);
        out.push((cap_len + 2) as u8);
        out.push(2);
        out.push(cap_len as u8);
        out.extend_from_slice(&cap_bytes[..cap_len]);
    }
    finish_message(out, start);
}

fn encode_end_of_rib(out: &mut Vec<u8>, family: Family) {
    let start = start_message(out, MSG_UPDATE);
    match family {
        Family::Ipv4Unicast => out.extend_from_slice(&[0, 0, 0, 0]),
        Family::Ipv6Unicast => {
            // RFC 4724 §2: an MP_UNREACH_NLRI with no withdrawn routes.
            out.extend_from_slice(&[0, 0, 0, 6]);
            out.extend_from_slice(&[FLAG_OPTIONAL, ATTR_MP_UNREACH, 3, 0, 2, 1]);
        }
    }
    finish_message(out, start);
}

/// Attribute bytes shared by every UPDATE carrying one set of [`PathAttrs`], split around
/// MP_REACH_NLRI (type 14) so that attributes stay ordered by type code.
struct AttrBlocks {
    /// IPv4: every attribute, NEXT_HOP included.
    v4: Vec<u8>,
    /// IPv6: attributes with codes below 14 (no NEXT_HOP).
    v6_pre: Vec<u8>,
    /// IPv6: attributes with codes above 15.
    v6_post: Vec<u8>,
    /// IPv6 next-hop field of MP_REACH_NLRI (16 or 32 octets, RFC 2545 §3).
    v6_next_hop: Vec<u8>,
}

fn put_attr(out: &mut Vec<u8>, flags: u8, code: u8, value: &[u8]) {
    if value.len() > 255 {
        out.push(flags | FLAG_EXTENDED);
        out.push(code);
        out.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
    } else {
        out.push(flags);
        out.push(code);
        out.push(value.len() as u8);
    }
    out.extend_from_slice(value);
}

/// AS_PATH value (RFC 4271 §4.3), with 4-octet or 2-octet numbers (RFC 6793 §4.2.2: AS_TRANS
/// stands in for numbers above 65535). Segments longer than 255 are split.
fn as_path_value(path: &[AsSegment], four_octet: bool) -> Vec<u8> {
    let mut v = Vec::new();
    for seg in path {
        let (t, asns) = match seg {
            AsSegment::Sequence(a) => (SEG_SEQUENCE, a),
            AsSegment::Set(a) => (SEG_SET, a),
        };
        for chunk in asns.chunks(255) {
            v.push(t);
            v.push(chunk.len() as u8);
            for asn in chunk {
                if four_octet {
                    v.extend_from_slice(&asn.to_be_bytes());
                } else {
                    let a = u16::try_from(*asn).unwrap_or(AS_TRANS as u16);
                    v.extend_from_slice(&a.to_be_bytes());
                }
            }
        }
    }
    v
}

fn attr_blocks(attrs: &PathAttrs, ctx: &SessionCodec) -> AttrBlocks {
    let mut pre = Vec::with_capacity(64);
    // ORIGIN (RFC 4271 §5.1.1), well-known mandatory.
    let origin = match attrs.origin {
        Origin::Igp => 0,
        Origin::Egp => 1,
        Origin::Incomplete => 2,
    };
    put_attr(&mut pre, FLAG_TRANSITIVE, ATTR_ORIGIN, &[origin]);
    put_attr(
        &mut pre,
        FLAG_TRANSITIVE,
        ATTR_AS_PATH,
        &as_path_value(&attrs.as_path, ctx.asn4),
    );
    let nh_pos = pre.len();
    let mut rest = Vec::with_capacity(64);
    if let Some(med) = attrs.med {
        put_attr(&mut rest, FLAG_OPTIONAL, ATTR_MED, &med.to_be_bytes());
    }
    if let Some(lp) = attrs.local_pref {
        put_attr(
            &mut rest,
            FLAG_TRANSITIVE,
            ATTR_LOCAL_PREF,
            &lp.to_be_bytes(),
        );
    }
    if !attrs.communities.is_empty() {
        let v: Vec<u8> = attrs
            .communities
            .iter()
            .flat_map(|c| c.to_be_bytes())
            .collect();
        put_attr(
            &mut rest,
            FLAG_OPTIONAL | FLAG_TRANSITIVE,
            ATTR_COMMUNITIES,
            &v,
        );
    }
    let mut post = Vec::new();
    // RFC 6793 §4.2.2: toward a 2-octet peer, AS4_PATH carries the real path when it does not
    // fit in 2 octets.
    if !ctx.asn4
        && attrs.as_path.iter().any(|s| match s {
            AsSegment::Sequence(a) | AsSegment::Set(a) => a.iter().any(|asn| *asn > 0xffff),
        })
    {
        let v = as_path_value(&attrs.as_path, true);
        put_attr(
            &mut post,
            FLAG_OPTIONAL | FLAG_TRANSITIVE,
            ATTR_AS4_PATH,
            &v,
        );
    }
    if !attrs.large_communities.is_empty() {
        let v: Vec<u8> = attrs
            .large_communities
            .iter()
            .flat_map(|c| [c.0.to_be_bytes(), c.1.to_be_bytes(), c.2.to_be_bytes()])
            .flatten()
            .collect();
        put_attr(
            &mut post,
            FLAG_OPTIONAL | FLAG_TRANSITIVE,
            ATTR_LARGE_COMMUNITIES,
            &v,
        );
    }

    let mut v4 = Vec::with_capacity(pre.len() + 7 + rest.len() + post.len());
    v4.extend_from_slice(&pre[..nh_pos]);
    // NEXT_HOP (RFC 4271 §5.1.3). IPv4 routes need an IPv4 next hop; without one 0.0.0.0 is
    // written and the peer will refuse the routes.
    let nh4 = match attrs.next_hop {
        Some(IpAddr::V4(a)) => a,
        _ => Ipv4Addr::UNSPECIFIED,
    };
    put_attr(&mut v4, FLAG_TRANSITIVE, ATTR_NEXT_HOP, &nh4.octets());
    v4.extend_from_slice(&rest);
    v4.extend_from_slice(&post);

    let mut v6_pre = pre;
    v6_pre.extend_from_slice(&rest);
    // RFC 2545 §3: global address, then the link-local one when there is one. An IPv4 next
    // hop is written IPv4-mapped (RFC 4291 §2.5.5.2).
    let global = match attrs.next_hop {
        Some(IpAddr::V6(a)) => a,
        Some(IpAddr::V4(a)) => a.to_ipv6_mapped(),
        None => Ipv6Addr::UNSPECIFIED,
    };
    let mut v6_next_hop = global.octets().to_vec();
    if let Some(ll) = attrs.next_hop_local {
        v6_next_hop.extend_from_slice(&ll.octets());
    }
    AttrBlocks {
        v4,
        v6_pre,
        v6_post: post,
        v6_next_hop,
    }
}

#[inline]
fn nlri_len(n: &Nlri, add_path: bool) -> usize {
    usize::from(add_path) * 4 + 1 + usize::from(n.prefix.prefix_len()).div_ceil(8)
}

/// One NLRI (RFC 4271 §4.3, RFC 4760 §5), with the path id first when ADD-PATH is on
/// (RFC 7911 §3).
#[inline]
fn put_nlri(out: &mut Vec<u8>, n: &Nlri, add_path: bool) {
    if add_path {
        out.extend_from_slice(&n.path_id.unwrap_or(0).to_be_bytes());
    }
    let len = n.prefix.prefix_len();
    out.push(len);
    let bytes = usize::from(len).div_ceil(8);
    match n.prefix.trunc() {
        IpNet::V4(p) => out.extend_from_slice(&p.addr().octets()[..bytes.min(4)]),
        IpNet::V6(p) => out.extend_from_slice(&p.addr().octets()[..bytes.min(16)]),
    }
}

/// Writes the length of what follows the 2-octet field at `pos` into that field.
fn patch_len(out: &mut [u8], pos: usize) {
    let v = out.len() - pos - 2;
    let b = u16::try_from(v).unwrap_or(u16::MAX).to_be_bytes();
    out[pos] = b[0];
    out[pos + 1] = b[1];
}

/// Writes one UPDATE for one family with the given withdrawn and announced prefixes (which
/// the caller sized to fit).
fn write_update(
    out: &mut Vec<u8>,
    family: Family,
    withdrawn: &[Nlri],
    announced: &[Nlri],
    blocks: &AttrBlocks,
    ctx: &SessionCodec,
) {
    let add_path = ctx.add_path_send.contains(&family);
    let start = start_message(out, MSG_UPDATE);
    match family {
        Family::Ipv4Unicast => {
            let wd_pos = out.len();
            out.extend_from_slice(&[0, 0]);
            for n in withdrawn {
                put_nlri(out, n, add_path);
            }
            patch_len(out, wd_pos);
            if announced.is_empty() {
                out.extend_from_slice(&[0, 0]);
            } else {
                out.extend_from_slice(&u16::try_from(blocks.v4.len()).unwrap_or(0).to_be_bytes());
                out.extend_from_slice(&blocks.v4);
                for n in announced {
                    put_nlri(out, n, add_path);
                }
            }
        }
        Family::Ipv6Unicast => {
            out.extend_from_slice(&[0, 0]);
            let attr_pos = out.len();
            out.extend_from_slice(&[0, 0]);
            if !announced.is_empty() {
                out.extend_from_slice(&blocks.v6_pre);
                // MP_REACH_NLRI (RFC 4760 §3), always with the extended length.
                out.extend_from_slice(&[FLAG_OPTIONAL | FLAG_EXTENDED, ATTR_MP_REACH, 0, 0]);
                let len_pos = out.len() - 2;
                out.extend_from_slice(&AFI_IPV6.to_be_bytes());
                out.push(SAFI_UNICAST);
                out.push(blocks.v6_next_hop.len() as u8);
                out.extend_from_slice(&blocks.v6_next_hop);
                out.push(0); // reserved
                for n in announced {
                    put_nlri(out, n, add_path);
                }
                patch_len(out, len_pos);
            }
            if !withdrawn.is_empty() {
                // MP_UNREACH_NLRI (RFC 4760 §4).
                out.extend_from_slice(&[FLAG_OPTIONAL | FLAG_EXTENDED, ATTR_MP_UNREACH, 0, 0]);
                let len_pos = out.len() - 2;
                out.extend_from_slice(&AFI_IPV6.to_be_bytes());
                out.push(SAFI_UNICAST);
                for n in withdrawn {
                    put_nlri(out, n, add_path);
                }
                patch_len(out, len_pos);
            }
            if !announced.is_empty() {
                out.extend_from_slice(&blocks.v6_post);
            }
            patch_len(out, attr_pos);
        }
    }
    finish_message(out, start);
}

/// Octets of an UPDATE around its withdrawn prefixes (no announcements).
fn withdraw_overhead(family: Family) -> usize {
    match family {
        Family::Ipv4Unicast => HEADER_LEN + 4,
        Family::Ipv6Unicast => HEADER_LEN + 4 + 4 + 3,
    }
}

/// Octets of an UPDATE around its announced prefixes (no withdrawals).
fn announce_overhead(family: Family, blocks: &AttrBlocks) -> usize {
    match family {
        Family::Ipv4Unicast => HEADER_LEN + 4 + blocks.v4.len(),
        Family::Ipv6Unicast => {
            HEADER_LEN
                + 4
                + blocks.v6_pre.len()
                + blocks.v6_post.len()
                + 4
                + 3
                + 1
                + blocks.v6_next_hop.len()
                + 1
        }
    }
}

fn encode_update_single(out: &mut Vec<u8>, u: &Update, ctx: &SessionCodec) {
    let fam_of = |n: &Nlri| Family::of(&n.prefix);
    let first = u.withdrawn.first().or(u.announced.first()).map(fam_of);
    let Some(family) = first else {
        // Nothing to say: an empty UPDATE (which is also the IPv4 End-of-RIB).
        encode_end_of_rib(out, Family::Ipv4Unicast);
        return;
    };
    let single_family = u
        .withdrawn
        .iter()
        .chain(&u.announced)
        .all(|n| fam_of(n) == family);
    let blocks = attr_blocks(&u.attrs, ctx);
    let add_path = ctx.add_path_send.contains(&family);
    let wsize: usize = u.withdrawn.iter().map(|n| nlri_len(n, add_path)).sum();
    let asize: usize = u.announced.iter().map(|n| nlri_len(n, add_path)).sum();
    let total = if u.announced.is_empty() {
        withdraw_overhead(family) + wsize
    } else {
        let unreach = if family == Family::Ipv6Unicast && !u.withdrawn.is_empty() {
            7
        } else {
            0
        };
        announce_overhead(family, &blocks) + wsize + asize + unreach
    };
    if single_family && total <= MAX_MESSAGE_LEN {
        write_update(out, family, &u.withdrawn, &u.announced, &blocks, ctx);
    } else {
        for m in encode_updates(&u.withdrawn, &u.announced, &u.attrs, ctx) {
            out.extend_from_slice(&m);
        }
    }
}

/// Packs withdrawals and announcements sharing `attrs` into as few UPDATE messages as fit in
/// [`MAX_MESSAGE_LEN`] each.
///
/// Withdrawals come first, in their own messages, then announcements; IPv4 before IPv6 in
/// each (IPv6 through MP_UNREACH_NLRI / MP_REACH_NLRI). Prefix order within a family is kept.
/// Sizes are computed, not probed: the cost is linear in the number of prefixes.
pub fn encode_updates(
    withdrawn: &[Nlri],
    announced: &[Nlri],
    attrs: &PathAttrs,
    ctx: &SessionCodec,
) -> Vec<Vec<u8>> {
    let mut msgs = Vec::new();
    let blocks = attr_blocks(attrs, ctx);
    for (list, is_announce) in [(withdrawn, false), (announced, true)] {
        for family in Family::ALL {
            let add_path = ctx.add_path_send.contains(&family);
            let overhead = if is_announce {
                announce_overhead(family, &blocks)
            } else {
                withdraw_overhead(family)
            };
            let budget = MAX_MESSAGE_LEN.saturating_sub(overhead);
            let mut chunk: Vec<Nlri> = Vec::new();
            let mut used = 0;
            let flush = |chunk: &mut Vec<Nlri>, msgs: &mut Vec<Vec<u8>>| {
                if chunk.is_empty() {
                    return;
                }
                let mut out = Vec::with_capacity(MAX_MESSAGE_LEN);
                let (w, a): (&[Nlri], &[Nlri]) = if is_announce {
                    (&[], chunk)
                } else {
                    (chunk, &[])
                };
                write_update(&mut out, family, w, a, &blocks, ctx);
                // A message queued for a slow peer keeps its allocation: not 4 KiB for an
                // UPDATE of one prefix (50,000 of them held 200 MB).
                out.shrink_to_fit();
                msgs.push(out);
                chunk.clear();
            };
            for n in list.iter().filter(|n| Family::of(&n.prefix) == family) {
                let size = nlri_len(n, add_path);
                // At least one prefix per message, even if the attributes are too large.
                if used + size > budget && !chunk.is_empty() {
                    flush(&mut chunk, &mut msgs);
                    used = 0;
                }
                chunk.push(*n);
                used += size;
            }
            flush(&mut chunk, &mut msgs);
        }
    }
    msgs
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
