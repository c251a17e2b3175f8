//! The delta an incremental sync carries: the objects that changed between two documents,
//! with the digests before and after, so that a device applies it only onto the document it
//! was made from and checks that it reached the same one.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::document::{GroupDocument, OBJECT_SECTIONS, WHOLE_SECTIONS};
use super::generation::Digest;

/// One change of a delta.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Change {
    /// An object of an object section, new or changed.
    Put {
        section: String,
        name: String,
        value: Value,
    },
    /// An object removed.
    Remove { section: String, name: String },
    /// A whole section replaced (`virtual_addresses`, `device_group`).
    Section { section: String, value: Value },
}

/// The changes from the document with digest `base` to the one with digest `target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    pub base: Digest,
    pub target: Digest,
    pub changes: Vec<Change>,
}

/// Why a delta does not apply: the receiver then needs a full sync.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    #[error("the incremental sync was made from {base:?}, this device holds {have:?}")]
    Base { base: Digest, have: Digest },
    #[error("the incremental sync led to {got:?}, not {want:?}")]
    Target { got: Digest, want: Digest },
    #[error("the incremental sync names section `{0}`, which config sync does not carry")]
    Section(String),
}

impl Delta {
    /// The changes from `from` to `to`, object by object.
    pub fn between(from: &GroupDocument, to: &GroupDocument) -> Delta {
        let mut changes = Vec::new();
        for section in OBJECT_SECTIONS {
            let empty = serde_json::Map::new();
            let old = from.section(section).as_object().unwrap_or(&empty);
            let new = to.section(section).as_object().unwrap_or(&empty);
            for (name, value) in new {
                if old.get(name) != Some(value) {
                    changes.push(Change::Put {
                        section: section.into(),
                        name: name.clone(),
                        value: value.clone(),
                    });
                }
            }
            for name in old.keys().filter(|n| !new.contains_key(*n)) {
                changes.push(Change::Remove {
                    section: section.into(),
                    name: name.clone(),
                });
            }
        }
        for section in WHOLE_SECTIONS {
            if from.section(section) != to.section(section) {
                changes.push(Change::Section {
                    section: section.into(),
                    value: to.section(section).clone(),
                });
            }
        }
        Delta {
            base: from.digest(),
            target: to.digest(),
            changes,
        }
    }

    /// Applies the delta onto `doc`, which must be the document it was made from; the result
    /// must have the target digest.
    pub fn apply(&self, doc: &GroupDocument) -> Result<GroupDocument, DeltaError> {
        let have = doc.digest();
        if have != self.base {
            return Err(DeltaError::Base {
                base: self.base,
                have,
            });
        }
        let mut out = doc.clone();
        let sections = out.sections_mut();
        for change in &self.changes {
            match change {
                Change::Put {
                    section,
                    name,
                    value,
                } => object_section(sections, section)?.insert(name.clone(), value.clone()),
                Change::Remove { section, name } => object_section(sections, section)?.remove(name),
                Change::Section { section, value } => {
                    if !WHOLE_SECTIONS.contains(&section.as_str()) {
                        return Err(DeltaError::Section(section.clone()));
                    }
                    sections.insert(section.clone(), value.clone())
                }
            };
        }
        let got = out.digest();
        if got != self.target {
            return Err(DeltaError::Target {
                got,
                want: self.target,
            });
        }
        Ok(out)
    }

    /// The delta's size as it travels (JSON bytes): above `max_incremental_sync_size`, a full
    /// sync goes instead.
    pub fn encoded_len(&self) -> usize {
        serde_json::to_vec(self).map_or(usize::MAX, |v| v.len())
    }
}

/// The object map of `section` in `sections`, created when absent.
fn object_section<'a>(
    sections: &'a mut serde_json::Map<String, Value>,
    section: &str,
) -> Result<&'a mut serde_json::Map<String, Value>, DeltaError> {
    if !OBJECT_SECTIONS.contains(&section) {
        return Err(DeltaError::Section(section.into()));
    }
    let v = sections
        .entry(section.to_string())
        .or_insert_with(|| Value::Object(Default::default()));
    if !v.is_object() {
        *v = Value::Object(Default::default());
    }
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(DeltaError::Section(section.into())),
    }
}
