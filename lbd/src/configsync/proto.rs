//! What one device sends another to sync the group configuration, and how each side decides,
//! without I/O: the sender [`plan`]s a [`Push`] (a delta from what the peer holds when this
//! device still has that document and the delta is small enough, else the whole document);
//! the receiver [`receive`]s it into the document to validate and apply, or an [`Answer`]
//! saying why not.
//!
//! The messages are JSON; the transport (mutual TLS between devices of the group) frames them.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::delta::Delta;
use super::document::GroupDocument;
use super::generation::{Digest, Generation};

/// BIG-IP's default for `max_incremental_sync_size`: a larger change set goes as a full sync.
pub const MAX_INCREMENTAL: usize = 1024 * 1024;
/// Documents a device keeps to make deltas from.
pub const HISTORY: usize = 8;

/// The configuration a push carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Payload {
    /// The whole document (canonical JSON).
    Full { document: String },
    /// The changes from the document the receiver holds.
    Delta { delta: Delta },
}

/// A sync of the sender's configuration, generation `generation`, to one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Push {
    pub generation: Generation,
    pub payload: Payload,
}

/// The receiver's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "kebab-case")]
pub enum Answer {
    /// Validated, applied and saved: the receiver holds `generation`.
    Applied { generation: Generation },
    /// The delta does not apply to what the receiver holds (`have`): send the whole document.
    NeedFull { have: Option<Digest> },
    /// Refused whole (it did not validate there, or could not be applied): nothing changed.
    Refused { reason: String },
}

/// The documents this device held most recently, newest last.
#[derive(Debug, Clone, Default)]
pub struct History {
    docs: VecDeque<GroupDocument>,
}

impl History {
    /// Remembers `doc` (the one this device now holds).
    pub fn push(&mut self, doc: GroupDocument) {
        let d = doc.digest();
        self.docs.retain(|x| x.digest() != d);
        self.docs.push_back(doc);
        while self.docs.len() > HISTORY {
            self.docs.pop_front();
        }
    }

    /// The document with digest `d`, if this device still has it.
    pub fn get(&self, d: Digest) -> Option<&GroupDocument> {
        self.docs.iter().rev().find(|x| x.digest() == d)
    }
}

/// What to send a peer that holds `peer_has` so that it holds `current` (generation `g`): a
/// delta when this device still has the peer's document and the delta is at most
/// `max_incremental` bytes, else the whole document.
pub fn plan(
    current: &GroupDocument,
    g: &Generation,
    peer_has: Option<Digest>,
    history: &History,
    max_incremental: usize,
) -> Push {
    let delta = peer_has
        .and_then(|d| history.get(d))
        .map(|base| Delta::between(base, current))
        .filter(|d| d.encoded_len() <= max_incremental);
    Push {
        generation: g.clone(),
        payload: match delta {
            Some(delta) => Payload::Delta { delta },
            None => Payload::Full {
                document: current.to_json(),
            },
        },
    }
}

/// The document `push` makes of `have` (what the receiver holds; None: nothing yet), to be
/// validated and applied; or the answer to send back at once.
pub fn receive(have: Option<&GroupDocument>, push: &Push) -> Result<GroupDocument, Answer> {
    let doc = match &push.payload {
        Payload::Full { document } => {
            GroupDocument::from_json(document).map_err(|e| Answer::Refused {
                reason: e.to_string(),
            })?
        }
        Payload::Delta { delta } => {
            let Some(have) = have else {
                return Err(Answer::NeedFull { have: None });
            };
            delta.apply(have).map_err(|_| Answer::NeedFull {
                have: Some(have.digest()),
            })?
        }
    };
    if doc.digest() != push.generation.digest {
        return Err(Answer::Refused {
            reason: format!(
                "the configuration received does not match its generation {}",
                push.generation
            ),
        });
    }
    Ok(doc)
}
