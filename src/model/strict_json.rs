//! JSON text into a `serde_json::Value`, refusing an object that names a
//! key twice. serde_json keeps the last of the two silently, so a record
//! `{"kind":"a", ..., "kind":"b"}` would be stored as kind `b` with nothing
//! said; the producer most likely meant something else. The error names
//! the key's path (`payload.rows`, `payload.columns[2].name`).

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Value};

/// Parses `text`; a key named twice in one object is an error naming its
/// path, and anything else serde_json refuses is its error.
pub(crate) fn parse(text: &str) -> Result<Value, Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let mut duplicate = None;
    let parsed = Seed {
        at: None,
        duplicate: &mut duplicate,
    }
    .deserialize(&mut de)
    .and_then(|value| de.end().map(|()| value));
    match (parsed, duplicate) {
        (_, Some(path)) => Err(Error::DuplicateKey(path)),
        (Ok(value), None) => Ok(value),
        (Err(e), None) => Err(Error::Json(e)),
    }
}

/// Why [`parse`] failed.
#[derive(Debug)]
pub(crate) enum Error {
    /// Not JSON (serde_json's message, with line and column).
    Json(serde_json::Error),
    /// This key path appears twice in its object.
    DuplicateKey(String),
}

/// One step of the path to the value being parsed, kept on the stack and
/// only written out when a duplicate is found.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

struct At<'a> {
    step: Step<'a>,
    parent: Option<&'a At<'a>>,
}

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(parent) = self.parent {
            write!(f, "{parent}")?;
        }
        match (&self.step, self.parent) {
            (Step::Key(key), None) => write!(f, "{key}"),
            (Step::Key(key), Some(_)) => write!(f, ".{key}"),
            (Step::Index(i), _) => write!(f, "[{i}]"),
        }
    }
}

fn path(at: Option<&At<'_>>, key: &str) -> String {
    match at {
        None => key.to_owned(),
        Some(at) => format!("{at}.{key}"),
    }
}

struct Seed<'a, 'd> {
    at: Option<&'a At<'a>>,
    /// Set to the first duplicate's path; parsing then stops with an error.
    duplicate: &'d mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for Seed<'_, '_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON text has no NaN or infinity; `from` would make them null.
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        loop {
            let at = At {
                step: Step::Index(items.len()),
                parent: self.at,
            };
            let seed = Seed {
                at: Some(&at),
                duplicate: &mut *self.duplicate,
            };
            match seq.next_element_seed(seed)? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let value = {
                let at = At {
                    step: Step::Key(&key),
                    parent: self.at,
                };
                access.next_value_seed(Seed {
                    at: Some(&at),
                    duplicate: &mut *self.duplicate,
                })?
            };
            match map.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                Entry::Occupied(slot) => {
                    let found = path(self.at, slot.key());
                    let message = format!("duplicate key `{found}`");
                    *self.duplicate = Some(found);
                    return Err(de::Error::custom(message));
                }
            }
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duplicate(text: &str) -> Option<String> {
        match parse(text) {
            Err(Error::DuplicateKey(path)) => Some(path),
            _ => None,
        }
    }

    #[test]
    fn parses_what_serde_json_parses() {
        for text in [
            r#"{"a":1,"b":[1,2.5,-3,"x",null,true,{"c":{}}],"d":18446744073709551615}"#,
            "[]",
            "\"\\u00e9\\n\"",
            "1e300",
            "  {\"a\" : { \"b\" : [ ] } }  ",
        ] {
            let ours = parse(text).unwrap();
            let theirs: Value = serde_json::from_str(text).unwrap();
            assert_eq!(ours, theirs, "{text}");
        }
    }

    #[test]
    fn a_key_named_twice_is_refused_with_its_path() {
        assert_eq!(
            duplicate(r#"{"kind":"a","kind":"b"}"#).as_deref(),
            Some("kind")
        );
        assert_eq!(
            duplicate(r#"{"payload":{"rows":1,"x":{},"rows":2}}"#).as_deref(),
            Some("payload.rows")
        );
        assert_eq!(
            duplicate(r#"{"p":{"cols":[{"n":1},{"n":2,"n":3}]}}"#).as_deref(),
            Some("p.cols[1].n")
        );
        assert_eq!(duplicate(r#"[{"a":1,"a":1}]"#).as_deref(), Some("[0].a"));
        // The same key in two objects is no duplicate.
        assert!(parse(r#"{"a":{"k":1},"b":{"k":1}}"#).is_ok());
    }

    #[test]
    fn bad_json_and_trailing_text_are_serde_json_errors() {
        for text in ["{", "{\"a\":}", "{} x", "", "[1,]", "NaN"] {
            assert!(matches!(parse(text), Err(Error::Json(_))), "{text}");
        }
    }
}
