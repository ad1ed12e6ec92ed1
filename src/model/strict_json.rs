//! JSON text into a `serde_json::Value`, refusing an object that names a
//! key twice. serde_json keeps the last of the two silently, so a record
//! `{"kind":"a", ..., "kind":"b"}` would be stored as kind `b` with nothing
//! said; the producer most likely meant something else. The error names
//! the key's path (`payload.rows`, `payload.columns[2].name`).
//!
//! It also refuses an integer written in the text beyond what a JSON
//! number is kept as exactly (`i64` or `u64`): serde_json would make it
//! the nearest `f64` silently, so two records differing only there would
//! be stored as one and the value written back changed. The error names
//! its path too, as does the one for a decimal beyond `f64` (`1e400`),
//! which serde_json reports without one.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Value};

/// Parses `text`; an object or array nested deeper than `max_depth`
/// levels (the text itself is level 1) is an error found before parsing,
/// a key named twice in one object is an error naming its path, and
/// anything else serde_json refuses is its error.
pub(crate) fn parse(text: &str, max_depth: usize) -> Result<Value, Error> {
    let too_large = scan(text, max_depth)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let mut found = Found {
        too_large,
        ..Found::default()
    };
    let parsed = Seed {
        at: None,
        found: &mut found,
    }
    .deserialize(&mut de)
    .and_then(|value| de.end().map(|()| value));
    match (parsed, found.duplicate, found.too_large_at) {
        (_, Some(path), _) => Err(Error::DuplicateKey(path)),
        (_, None, Some(path)) => Err(Error::IntegerOutOfRange {
            path,
            literal: found.too_large.map(|(_, l)| l).unwrap_or_default(),
        }),
        (Ok(value), None, None) => Ok(value),
        // serde_json's message for a decimal beyond f64 (`1e400`).
        (Err(e), None, None) if e.to_string().starts_with("number out of range") => {
            Err(Error::NumberOutOfRange {
                path: found.failed_at.unwrap_or_else(|| "record".to_owned()),
            })
        }
        (Err(e), None, None) => Err(Error::Json(e)),
    }
}

/// One pass over `text` before parsing it: fails when brackets (outside
/// strings) nest deeper than `max_depth`, so serde_json's own recursion
/// limit is never what decides; else returns the first integer literal
/// (outside strings) that fits neither `i64` nor `u64`, as its place among
/// the text's numbers (0 for the first number) and the literal. Numbers
/// come in the same order as the parser meets them, which is how [`Seed`]
/// finds its path.
fn scan(text: &str, max_depth: usize) -> Result<Option<(usize, String)>, Error> {
    let bytes = text.as_bytes();
    let mut strings = Strings::default();
    let mut too_large = None;
    let mut depth = 0usize;
    let mut ordinal = 0;
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if strings.holds(byte) {
            i += 1;
            continue;
        }
        match byte {
            b'{' | b'[' => {
                depth += 1;
                if depth > max_depth {
                    return Err(Error::TooDeep);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                let literal = &text[start..i];
                let integer = !literal.contains(['.', 'e', 'E']);
                // 19 digits and more may not fit; fewer always do.
                if too_large.is_none()
                    && integer
                    && literal.trim_start_matches('-').len() >= 19
                    && literal.parse::<i64>().is_err()
                    && literal.parse::<u64>().is_err()
                {
                    too_large = Some((ordinal, literal.to_owned()));
                }
                ordinal += 1;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(too_large)
}

/// Follows JSON text byte by byte to tell what is inside strings (where
/// brackets, digits and quotes escaped are text).
#[derive(Default)]
struct Strings {
    inside: bool,
    escaped: bool,
}

impl Strings {
    /// Whether `byte`, the next byte of the text, belongs to a string (its
    /// quotes included).
    fn holds(&mut self, byte: u8) -> bool {
        if self.inside {
            match (self.escaped, byte) {
                (true, _) => self.escaped = false,
                (false, b'\\') => self.escaped = true,
                (false, b'"') => self.inside = false,
                _ => {}
            }
            return true;
        }
        self.inside = byte == b'"';
        self.inside
    }
}

/// Why [`parse`] failed.
#[derive(Debug)]
pub(crate) enum Error {
    /// Objects and arrays nest deeper than the limit given.
    TooDeep,
    /// Not JSON (serde_json's message, with line and column).
    Json(serde_json::Error),
    /// This key path appears twice in its object.
    DuplicateKey(String),
    /// The integer at this path (its literal as written) fits neither
    /// `i64` nor `u64`.
    IntegerOutOfRange { path: String, literal: String },
    /// The number at this path is beyond what an `f64` holds (`1e400`).
    NumberOutOfRange { path: String },
}

/// What parsing found on its way.
#[derive(Default)]
struct Found {
    /// The first duplicate key's path; parsing then stops with an error.
    duplicate: Option<String>,
    /// From [`scan`]: the place among the numbers of an
    /// integer too large, and its literal.
    too_large: Option<(usize, String)>,
    /// Numbers met so far.
    numbers: usize,
    /// The path of the integer too large, once met; parsing then stops.
    too_large_at: Option<String>,
    /// The path of the value being parsed when parsing failed.
    failed_at: Option<String>,
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
    found: &'d mut Found,
}

impl Seed<'_, '_> {
    /// Counts a number; an error if it is the integer too large.
    fn number<E: de::Error>(self, value: Value) -> Result<Value, E> {
        let found = self.found;
        let this = found.numbers;
        found.numbers += 1;
        if found.too_large.as_ref().is_some_and(|(at, _)| *at == this) {
            let path = match self.at {
                Some(at) => at.to_string(),
                None => "record".to_owned(),
            };
            let message = format!("integer too large at `{path}`");
            found.too_large_at = Some(path);
            return Err(E::custom(message));
        }
        Ok(value)
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_, '_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        let Seed { at, found } = self;
        let parsed = d.deserialize_any(Seed {
            at,
            found: &mut *found,
        });
        // The innermost value an error leaves is where it happened.
        if parsed.is_err() && found.failed_at.is_none() {
            found.failed_at = Some(at.map_or_else(|| "record".to_owned(), |at| at.to_string()));
        }
        parsed
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

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.number(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.number(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // JSON text has no NaN or infinity; `from` would make them null.
        self.number(Value::from(v))
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
                found: &mut *self.found,
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
                    found: &mut *self.found,
                })?
            };
            match map.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                Entry::Occupied(slot) => {
                    let found = path(self.at, slot.key());
                    let message = format!("duplicate key `{found}`");
                    self.found.duplicate = Some(found);
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

    /// [`super::parse`] with the record limit's depth.
    fn parse(text: &str) -> Result<Value, Error> {
        super::parse(text, 64)
    }

    #[test]
    fn a_decimal_beyond_f64_names_its_path() {
        for (text, want) in [
            (r#"{"a":{"b":[1,1e400]}}"#, "a.b[1]"),
            (r#"{"a":-1e999}"#, "a"),
            ("1e400", "record"),
        ] {
            match parse(text) {
                Err(Error::NumberOutOfRange { path }) => assert_eq!(path, want, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        // Other errors stay serde_json's.
        assert!(matches!(parse(r#"{"a":1,}"#), Err(Error::Json(_))));
    }

    #[test]
    fn nesting_past_the_limit_is_refused_before_parsing_and_strings_do_not_count() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(parse(&nested(64)).is_ok());
        assert!(matches!(parse(&nested(65)), Err(Error::TooDeep)));
        // Unbalanced text past the limit: the depth decides, not the syntax.
        assert!(matches!(parse(&"[".repeat(65)), Err(Error::TooDeep)));
        let in_strings = format!(
            r#"{{"a":"{}","b":"\"{}"}}"#,
            "[".repeat(100),
            "{".repeat(100)
        );
        assert!(parse(&in_strings).is_ok());
    }

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

    fn too_large(text: &str) -> Option<(String, String)> {
        match parse(text) {
            Err(Error::IntegerOutOfRange { path, literal }) => Some((path, literal)),
            _ => None,
        }
    }

    #[test]
    fn an_integer_beyond_i64_and_u64_is_refused_with_its_path() {
        let cases = [
            (
                r#"{"payload":{"n":123456789012345678901}}"#,
                "payload.n",
                "123456789012345678901",
            ),
            (
                r#"{"a":"99999999999999999999","b":[1,2.5e3,-9223372036854775809]}"#,
                "b[2]",
                "-9223372036854775809",
            ),
            (
                r#"{"s":"x\"1","n":[18446744073709551616]}"#,
                "n[0]",
                "18446744073709551616",
            ),
            ("100000000000000000000", "record", "100000000000000000000"),
        ];
        for (text, path, literal) in cases {
            assert_eq!(
                too_large(text),
                Some((path.to_owned(), literal.to_owned())),
                "{text}"
            );
        }
        // The extremes fit; decimals and exponents are floats as written.
        for text in [
            "[18446744073709551615,-9223372036854775808,1000000000000000000]",
            "[1e20,123456789012345678901.0,1.8e19]",
            r#"{"digits in a string":"123456789012345678901234567890"}"#,
        ] {
            assert!(parse(text).is_ok(), "{text}");
        }
    }

    #[test]
    fn bad_json_and_trailing_text_are_serde_json_errors() {
        for text in ["{", "{\"a\":}", "{} x", "", "[1,]", "NaN"] {
            assert!(matches!(parse(text), Err(Error::Json(_))), "{text}");
        }
    }
}
