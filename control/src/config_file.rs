//! The TOML configuration files of both daemons, as read: text → typed structs through `toml`
//! and serde (with the key path tracked by `serde_path_to_error`), and errors rewritten into
//! one line an operator can act on. lbd (its file and the device-group file) and bgpd read
//! through here, each wrapping [`LoadError`] into its own configuration error with the file
//! name.
//!
//! - Keys are kept as written: `[pools.web]` and `[pools.WEB]` are two tables (the `config`
//!   crate used before lowercased them, and one silently replaced the other).
//!   [`case_duplicate`] finds two names that differ only in case, which the daemons refuse.
//! - Errors name the key path (`pools.web.method`); an unknown value of an enumeration lists
//!   the valid ones (`unknown value "leastconn", expected one of: round-robin, ...`); a
//!   missing top-level table names the section (`missing section [device]`).
//! - Durations ([`duration`]) are a string with a unit (`"300s"`, `"5m"`, `"200ms"`) or a
//!   plain number of seconds (`300`).
//!
//! No I/O: the caller reads the file.

use serde::de::DeserializeOwned;

/// A configuration that does not load: the key it is about (None: the whole file, e.g. a TOML
/// syntax error or a missing section) and the message, one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub key: Option<String>,
    pub message: String,
}

/// Parses TOML `text` into `T`. `sections` are the top-level tables `T` requires: their
/// absence reads `missing section [NAME]`.
pub fn from_toml<T: DeserializeOwned>(text: &str, sections: &[&str]) -> Result<T, LoadError> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let mut message = one_line(inner.message());
        if path_is_root(&path) {
            if let Some(span) = inner.span() {
                let (line, col) = line_col(text, span.start);
                if !message.starts_with("missing field") {
                    message = format!("line {line}, column {col}: {message}");
                }
            }
        }
        rewrite(&path, &message, sections)
    })
}

/// Deserializes a configuration received as JSON (config sync) into `T`, with the errors of
/// [`from_toml`].
pub fn from_json<T: DeserializeOwned>(
    v: serde_json::Value,
    sections: &[&str],
) -> Result<T, LoadError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        rewrite(&path, &one_line(&e.into_inner().to_string()), sections)
    })
}

/// Two of `names` that differ only in case, if any: the first one met and the other.
pub fn case_duplicate<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<(&'a str, &'a str)> {
    let mut seen: std::collections::HashMap<String, &'a str> = Default::default();
    for n in names {
        if let Some(first) = seen.insert(n.to_lowercase(), n) {
            if first != n {
                return Some((first, n));
            }
        }
    }
    None
}

fn path_is_root(path: &str) -> bool {
    path.is_empty() || path == "."
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// 1-based line and column of byte `offset` of `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

/// The names between backticks in `s`.
fn backticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

/// serde's messages in the words of the configuration: values, keys, sections.
fn rewrite(path: &str, message: &str, sections: &[&str]) -> LoadError {
    let key = |k: Option<&str>| -> Option<String> {
        match (path_is_root(path), k) {
            (true, None) => None,
            (true, Some(k)) => Some(k.to_string()),
            (false, None) => Some(path.to_string()),
            (false, Some(k)) => Some(format!("{path}.{k}")),
        }
    };
    let listed = |what: &str, rest: &str| {
        let (value, expected) = rest.split_once(',').unwrap_or((rest, ""));
        let value = value.trim().trim_matches('`');
        let names = backticked(expected);
        if names.is_empty() {
            format!("unknown {what} \"{value}\" (none is accepted here)")
        } else {
            format!(
                "unknown {what} \"{value}\", expected one of: {}",
                names.join(", ")
            )
        }
    };
    if let Some(rest) = message.strip_prefix("missing field ") {
        let field = rest.trim_matches('`');
        if path_is_root(path) && sections.contains(&field) {
            return LoadError {
                key: None,
                message: format!("missing section [{field}]"),
            };
        }
        return LoadError {
            key: key(Some(field)),
            message: "is required".into(),
        };
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        return LoadError {
            key: key(None),
            message: listed("value", rest),
        };
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        return LoadError {
            key: key(None),
            message: listed("key", rest),
        };
    }
    LoadError {
        key: key(None),
        message: message.to_string(),
    }
}

/// Durations as operators write them: a string with a unit (`"300s"`, `"5m"`, `"1h 30m"`,
/// `"200ms"`; humantime's syntax) or a plain integer number of seconds (`300`). Written back
/// (config sync) as the string form. Use as `#[serde(with = "...::duration")]`, and
/// [`duration::option`] for an `Option<Duration>`.
pub mod duration {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    /// The accepted forms, as error messages state them.
    pub const FORMS: &str =
        "a number of seconds (300) or a string with a unit (\"300s\", \"5m\", \"200ms\")";

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a duration: {FORMS}")
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
            humantime::parse_duration(s.trim())
                .map_err(|e| E::custom(format!("\"{s}\" is not a duration ({e}): give {FORMS}")))
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(n))
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Duration, E> {
            u64::try_from(n)
                .map(Duration::from_secs)
                .map_err(|_| E::custom(format!("{n} is negative: give {FORMS}")))
        }

        fn visit_f64<E: de::Error>(self, n: f64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "{n} is not a whole number of seconds: give {FORMS}"
            )))
        }
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }

    /// The same for an `Option<Duration>` (absent: None).
    pub mod option {
        use std::fmt;
        use std::time::Duration;

        use serde::de::{self, Visitor};
        use serde::{Deserializer, Serializer};

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        struct OptionVisitor;

        impl<'de> Visitor<'de> for OptionVisitor {
            type Value = Option<Duration>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a duration: {}", super::FORMS)
            }

            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                super::deserialize(d).map(Some)
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            d.deserialize_option(OptionVisitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug, serde::Deserialize, serde::Serialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Top {
        section: Section,
        #[serde(default)]
        named: std::collections::BTreeMap<String, u8>,
    }

    #[derive(Debug, serde::Deserialize, serde::Serialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Section {
        #[serde(with = "duration")]
        every: Duration,
        #[serde(default, with = "duration::option")]
        maybe: Option<Duration>,
        #[serde(default)]
        kind: Kind,
    }

    #[derive(Debug, Default, serde::Deserialize, serde::Serialize, PartialEq)]
    #[serde(rename_all = "kebab-case")]
    enum Kind {
        #[default]
        RoundRobin,
        LeastConnections,
        Ratio,
    }

    fn load(text: &str) -> Result<Top, LoadError> {
        from_toml(text, &["section"])
    }

    #[test]
    fn durations_are_strings_with_units_or_plain_seconds() {
        let t = load("[section]\nevery = 300\nmaybe = \"200ms\"\n").unwrap();
        assert_eq!(t.section.every, Duration::from_secs(300));
        assert_eq!(t.section.maybe, Some(Duration::from_millis(200)));
        let t = load("[section]\nevery = \"5m\"\n").unwrap();
        assert_eq!(t.section.every, Duration::from_secs(300));
        assert_eq!(t.section.maybe, None);
        let e = load("[section]\nevery = \"300\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("section.every"));
        assert!(e.message.contains(duration::FORMS), "{e:?}");
        let e = load("[section]\nevery = -1\n").unwrap_err();
        assert!(e.message.contains("negative"), "{e:?}");
        // Written back as the string form, read again the same.
        let text = toml::to_string(&t).unwrap();
        assert!(text.contains("every = \"5m\""), "{text}");
        assert_eq!(load(&text).unwrap(), t);
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(from_json::<Top>(json, &["section"]).unwrap(), t);
    }

    #[test]
    fn enum_errors_list_the_values_and_name_the_key() {
        let e = load("[section]\nevery = 1\nkind = \"leastconn\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("section.kind"));
        assert_eq!(
            e.message,
            "unknown value \"leastconn\", expected one of: round-robin, least-connections, ratio"
        );
        let e = load("[section]\nevery = 1\nevry = 2\n").unwrap_err();
        assert!(
            e.message
                .starts_with("unknown key \"evry\", expected one of: every, maybe, kind"),
            "{e:?}"
        );
    }

    #[test]
    fn a_missing_section_is_named() {
        let e = load("[named]\na = 1\n").unwrap_err();
        assert_eq!(e.key, None);
        assert_eq!(e.message, "missing section [section]");
        let e = load("[section]\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("section.every"));
        assert_eq!(e.message, "is required");
    }

    #[test]
    fn keys_keep_their_case_and_syntax_errors_are_one_line() {
        let t = load("[section]\nevery = 1\n[named]\nWeb = 1\nweb = 2\n").unwrap();
        assert_eq!(t.named.len(), 2);
        assert_eq!(
            case_duplicate(t.named.keys().map(String::as_str)),
            Some(("Web", "web"))
        );
        assert_eq!(case_duplicate(["a", "b", "A-b"]), None);
        let e = load("[section\nevery = 1\n").unwrap_err();
        assert_eq!(e.key, None);
        assert!(e.message.starts_with("line 1, column"), "{e:?}");
        assert!(!e.message.contains('\n'), "{e:?}");
    }
}
