//! Translation between [`super::Message`] and bytes through netgauze-bgp-pkt.
//! (Stub: being implemented.)

use super::*;

/// Length of the first complete message in `buf`: `Ok(None)` while fewer bytes than a whole
/// message are buffered, an error for a bad marker or a length outside 19..=4096
/// (RFC 4271 §6.1).
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    let _ = buf;
    todo!()
}

/// Decodes one whole message (header included).
pub fn decode(msg: &[u8], ctx: &SessionCodec) -> Result<Message, DecodeError> {
    let _ = (msg, ctx);
    todo!()
}

/// Encodes one message. An UPDATE must fit in [`MAX_MESSAGE_LEN`]; use [`encode_updates`] to
/// pack many prefixes.
pub fn encode(msg: &Message, ctx: &SessionCodec) -> Vec<u8> {
    let _ = (msg, ctx);
    todo!()
}

/// Packs withdrawals and announcements sharing `attrs` into as few UPDATE messages as fit in
/// [`MAX_MESSAGE_LEN`] each.
pub fn encode_updates(
    withdrawn: &[Nlri],
    announced: &[Nlri],
    attrs: &PathAttrs,
    ctx: &SessionCodec,
) -> Vec<Vec<u8>> {
    let _ = (withdrawn, announced, attrs, ctx);
    todo!()
}
