//! The group configuration as one canonical document ([`GroupDocument`]) and its digest.

use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use super::generation::Digest;
use crate::cluster::config::GroupConfig;
use crate::config::Config;

/// The sections of lbd's configuration that are objects by name: a delta replaces or removes
/// one object of them at a time.
pub const OBJECT_SECTIONS: [&str; 4] = ["virtual_servers", "pools", "monitors", "persistence"];
/// The sections replaced whole when they change.
pub const WHOLE_SECTIONS: [&str; 2] = ["virtual_addresses", "device_group"];

/// Why a document cannot be built or applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error("group configuration: {0}")]
    Encode(String),
    #[error("group configuration: section `{0}` is not what config sync carries")]
    Section(String),
    #[error("group configuration: {0}")]
    Invalid(String),
}

/// The group configuration: what config sync carries (module documentation), as canonical
/// JSON sections.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupDocument {
    sections: Map<String, Value>,
}

impl GroupDocument {
    /// The group configuration of `cfg` and, when the device runs one, its device group.
    pub fn from_parts(
        cfg: &Config,
        group: Option<&GroupConfig>,
    ) -> Result<GroupDocument, DocumentError> {
        let enc = |e: serde_json::Error| DocumentError::Encode(e.to_string());
        let mut all = match serde_json::to_value(cfg).map_err(enc)? {
            Value::Object(m) => m,
            _ => return Err(DocumentError::Encode("not an object".into())),
        };
        all.remove("device");
        let mut sections = Map::new();
        for name in OBJECT_SECTIONS.iter().chain(&["virtual_addresses"]) {
            let v = all.remove(*name).unwrap_or(Value::Null);
            sections.insert(name.to_string(), v);
        }
        if let Some((extra, _)) = all.into_iter().next() {
            return Err(DocumentError::Section(extra));
        }
        let group = match group {
            Some(g) => {
                let mut v = serde_json::to_value(g).map_err(enc)?;
                // The key's path is device-local; the key itself is never carried.
                if let Some(Value::Object(settings)) = v.get_mut("group") {
                    settings.remove("key_file");
                }
                v
            }
            None => Value::Null,
        };
        sections.insert("device_group".into(), group);
        Ok(GroupDocument { sections })
    }

    /// The canonical bytes (sorted keys, no whitespace).
    pub fn canonical(&self) -> Vec<u8> {
        // serde_json's maps are sorted (no `preserve_order`), so this is canonical.
        serde_json::to_vec(&self.sections).unwrap_or_default()
    }

    pub fn digest(&self) -> Digest {
        Digest(Sha256::digest(self.canonical()).into())
    }

    /// A section (`Value::Null` when absent).
    pub fn section(&self, name: &str) -> &Value {
        self.sections.get(name).unwrap_or(&Value::Null)
    }

    pub(crate) fn sections_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.sections
    }

    /// The document as it travels (canonical JSON text).
    pub fn to_json(&self) -> String {
        String::from_utf8(self.canonical()).unwrap_or_default()
    }

    /// A document received from a peer: only the sections config sync carries.
    pub fn from_json(text: &str) -> Result<GroupDocument, DocumentError> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| DocumentError::Encode(e.to_string()))?;
        let Value::Object(sections) = v else {
            return Err(DocumentError::Encode("not an object".into()));
        };
        if let Some(bad) = sections.keys().find(|k| {
            !OBJECT_SECTIONS.contains(&k.as_str()) && !WHOLE_SECTIONS.contains(&k.as_str())
        }) {
            return Err(DocumentError::Section(bad.clone()));
        }
        Ok(GroupDocument { sections })
    }

    /// This device's configuration with the group configuration of `self`: `local`'s
    /// `[device]` and everything else from the document, validated as a file would be.
    pub fn to_config(&self, local: &Config) -> Result<Config, DocumentError> {
        let mut all = Map::new();
        let device = serde_json::to_value(&local.device)
            .map_err(|e| DocumentError::Encode(e.to_string()))?;
        all.insert("device".into(), device);
        for (k, v) in &self.sections {
            if k != "device_group" && !v.is_null() {
                all.insert(k.clone(), v.clone());
            }
        }
        Config::from_value(Value::Object(all)).map_err(|e| DocumentError::Invalid(e.to_string()))
    }

    /// The device group of the document, with `key_file` (device-local) put back; None when
    /// the document has none.
    pub fn to_group(
        &self,
        key_file: &std::path::Path,
    ) -> Result<Option<GroupConfig>, DocumentError> {
        let mut v = self.section("device_group").clone();
        if v.is_null() {
            return Ok(None);
        }
        if let Some(Value::Object(settings)) = v.get_mut("group") {
            settings.insert(
                "key_file".into(),
                Value::String(key_file.display().to_string()),
            );
        }
        GroupConfig::from_value(v)
            .map(Some)
            .map_err(|e| DocumentError::Invalid(e.to_string()))
    }
}
