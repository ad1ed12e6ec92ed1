//! Indexed payload and extras paths: order-preserving keys for scalar values.
//!
//! A kind may declare paths such as `payload.outcome` or `extras.window_end`;
//! each partition of the kind then keeps a table
//! `part/{kind}/{bucket_start}/ix:{path}` keyed by
//! `(encoded value, produced_at, id)`. A scalar is indexed once; an array is
//! indexed once per scalar element (so `payload.ingestion_run_ids` finds the
//! records naming a run). Objects and nulls are not indexed.

use serde_json::Value;

use super::codec::{any_scalar_at, DecodeError, EncodedScalar, PathRoot};
use crate::model::{MetadataRecord, Timestamp};

const TAG_FALSE: u8 = 0;
const TAG_TRUE: u8 = 1;
const TAG_NUMBER: u8 = 2;
const TAG_INSTANT: u8 = 3;
const TAG_STRING: u8 = 4;

/// A scalar to look up in a path index.
///
/// Strings that parse as RFC 3339 are indexed (and looked up) as instants,
/// so ranges over window bounds order by time, not by text.
#[derive(Clone, Debug, PartialEq)]
pub enum IndexValue {
    /// `true` or `false`.
    Bool(bool),
    /// Any JSON number (compared as f64).
    Number(f64),
    /// An instant (from an RFC 3339 string).
    Instant(Timestamp),
    /// Any other string.
    String(String),
}

impl IndexValue {
    /// The index value of a JSON scalar; `None` for null, arrays and objects.
    pub fn from_json(value: &Value) -> Option<Self> {
        match value {
            Value::Bool(b) => Some(IndexValue::Bool(*b)),
            Value::Number(n) => n.as_f64().map(IndexValue::Number),
            Value::String(s) => Some(IndexValue::from_str_value(s)),
            _ => None,
        }
    }

    /// The index value of a string: an instant when it is RFC 3339.
    pub fn from_str_value(s: &str) -> Self {
        match Timestamp::parse_rfc3339(s) {
            Some(ts) => IndexValue::Instant(ts),
            None => IndexValue::String(s.to_owned()),
        }
    }

    /// The order-preserving key bytes.
    pub fn key(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.push_key(&mut out);
        out
    }

    /// Appends [`IndexValue::key`] to `out`.
    fn push_key(&self, out: &mut Vec<u8>) {
        match self {
            IndexValue::Bool(false) => out.push(TAG_FALSE),
            IndexValue::Bool(true) => out.push(TAG_TRUE),
            IndexValue::Number(f) => out.extend_from_slice(&number_key(*f)),
            IndexValue::Instant(ts) => push_instant_key(*ts, out),
            IndexValue::String(s) => push_string_key(s, out),
        }
    }
}

fn push_instant_key(ts: Timestamp, out: &mut Vec<u8>) {
    out.push(TAG_INSTANT);
    out.extend_from_slice(&((ts.as_micros() as u64) ^ (1 << 63)).to_be_bytes());
}

fn push_string_key(s: &str, out: &mut Vec<u8>) {
    out.push(TAG_STRING);
    out.extend_from_slice(s.as_bytes());
}

/// The key of a number: `-0.0` is `0.0` (they compare equal, so they must
/// share a key, or a range from `0` would miss `-0.0`).
fn number_key(f: f64) -> [u8; 9] {
    let f = if f == 0.0 { 0.0 } else { f };
    let bits = f.to_bits();
    // Flip so that byte order is numeric order (negative numbers reversed).
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    let mut out = [TAG_NUMBER; 9];
    out[1..].copy_from_slice(&ordered.to_be_bytes());
    out
}

/// Writes the index key of an encoded scalar into `out` (cleared first).
fn scalar_key(scalar: EncodedScalar<'_>, out: &mut Vec<u8>) {
    out.clear();
    match scalar {
        EncodedScalar::Bool(false) => out.push(TAG_FALSE),
        EncodedScalar::Bool(true) => out.push(TAG_TRUE),
        EncodedScalar::Number(f) => out.extend_from_slice(&number_key(f)),
        EncodedScalar::Str(s) => match Timestamp::parse_rfc3339(s) {
            Some(ts) => out.extend_from_slice(&IndexValue::Instant(ts).key()),
            None => {
                out.push(TAG_STRING);
                out.extend_from_slice(s.as_bytes());
            }
        },
    }
}

/// What a path constraint accepts.
#[derive(Clone, Debug, PartialEq)]
pub enum PathMatch {
    /// Equal to one of these values.
    AnyOf(Vec<IndexValue>),
    /// Within bounds; each bound is (value, inclusive). Values of another
    /// type than the bounds never match.
    Range {
        /// Lower bound.
        lower: Option<(IndexValue, bool)>,
        /// Upper bound.
        upper: Option<(IndexValue, bool)>,
    },
}

/// A constraint on a payload or extras path: the record's value there (or,
/// for an array, one of its elements) must match.
#[derive(Clone, Debug, PartialEq)]
pub struct PathConstraint {
    /// A dotted path starting with `payload.` or `extras.`.
    pub path: String,
    /// The accepted values.
    pub matcher: PathMatch,
}

impl PathConstraint {
    /// Does the record satisfy the constraint?
    pub fn matches(&self, record: &MetadataRecord) -> bool {
        KeyTest::new(self).matches(record)
    }

    #[cfg(test)]
    fn matches_key(&self, key: &[u8]) -> bool {
        KeyTest::new(self).matches_key(key)
    }
}

/// A [`PathConstraint`] with its bounds' keys computed once, for testing
/// many records.
#[derive(Clone, Debug)]
pub(crate) struct KeyTest {
    path: String,
    /// The path split once: its root and the segments below it.
    root: PathRoot,
    segments: Vec<String>,
    matcher: KeyMatcher,
}

#[derive(Clone, Debug)]
enum KeyMatcher {
    AnyOf(Vec<Vec<u8>>),
    /// Bounds as (key, inclusive); a key of another type tag never matches.
    Range {
        lower: Option<(Vec<u8>, bool)>,
        upper: Option<(Vec<u8>, bool)>,
    },
}

impl KeyTest {
    pub(crate) fn new(c: &PathConstraint) -> Self {
        let bound = |b: &Option<(IndexValue, bool)>| b.as_ref().map(|(v, inc)| (v.key(), *inc));
        let mut segments = c.path.split('.');
        let root = match segments.next() {
            Some("payload") => PathRoot::Payload,
            Some("extras") => PathRoot::Extras,
            _ => PathRoot::Other,
        };
        KeyTest {
            path: c.path.clone(),
            root,
            segments: segments.map(str::to_owned).collect(),
            matcher: match &c.matcher {
                PathMatch::AnyOf(values) => {
                    KeyMatcher::AnyOf(values.iter().map(IndexValue::key).collect())
                }
                PathMatch::Range { lower, upper } => KeyMatcher::Range {
                    lower: bound(lower),
                    upper: bound(upper),
                },
            },
        }
    }

    /// Does the record satisfy the constraint?
    pub(crate) fn matches(&self, record: &MetadataRecord) -> bool {
        keys_at(record, &self.path)
            .iter()
            .any(|k| self.matches_key(k))
    }

    /// Does the encoded record satisfy the constraint? Equal to decoding it
    /// and calling [`KeyTest::matches`], without decoding it.
    pub(crate) fn matches_encoded(&self, bytes: &[u8]) -> Result<bool, DecodeError> {
        let mut key = Vec::new();
        any_scalar_at(bytes, self.root, &self.segments, |scalar| {
            // Fast path: a number against number bounds needs no buffer.
            if let (EncodedScalar::Number(f), KeyMatcher::Range { .. }) = (scalar, &self.matcher) {
                return self.matches_key(&number_key(f));
            }
            scalar_key(scalar, &mut key);
            self.matches_key(&key)
        })
    }

    pub(crate) fn matches_key(&self, key: &[u8]) -> bool {
        match &self.matcher {
            KeyMatcher::AnyOf(values) => values.iter().any(|v| v.as_slice() == key),
            KeyMatcher::Range { lower, upper } => {
                let tag = key.first().copied();
                let same_type = |b: &(Vec<u8>, bool)| b.0.first().copied() == tag;
                if lower.as_ref().is_some_and(|b| !same_type(b))
                    || upper.as_ref().is_some_and(|b| !same_type(b))
                {
                    return false;
                }
                let above = lower.as_ref().is_none_or(|(bound, inclusive)| {
                    if *inclusive {
                        key >= bound.as_slice()
                    } else {
                        key > bound.as_slice()
                    }
                });
                let below = upper.as_ref().is_none_or(|(bound, inclusive)| {
                    if *inclusive {
                        key <= bound.as_slice()
                    } else {
                        key < bound.as_slice()
                    }
                });
                above && below
            }
        }
    }
}

/// Is `path` an indexable path (`payload.x...` or `extras.x...`, plain segments)?
pub fn check_index_path(path: &str) -> Result<(), String> {
    let mut segments = path.split('.');
    match segments.next() {
        Some("payload" | "extras") => {}
        _ => {
            return Err(format!(
                "indexed path `{path}` must start with `payload.` or `extras.`"
            ))
        }
    }
    let rest: Vec<&str> = segments.collect();
    if rest.is_empty() || rest.iter().any(|s| s.is_empty()) {
        return Err(format!(
            "indexed path `{path}` needs non-empty segments after the root"
        ));
    }
    Ok(())
}

/// The index keys of a record at a dotted path: one per scalar (array elements included).
pub fn keys_at(record: &MetadataRecord, path: &str) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    push_keys_at(record, path, &mut Vec::new(), |key| keys.push(key.to_vec()));
    keys
}

/// Calls `f` with each of [`keys_at`]'s keys in turn, each built in `buf`
/// (cleared first): no allocation per key once `buf` has grown.
pub(crate) fn push_keys_at(
    record: &MetadataRecord,
    path: &str,
    buf: &mut Vec<u8>,
    mut f: impl FnMut(&[u8]),
) {
    let mut segments = path.split('.');
    let root = match segments.next() {
        Some("payload") => &record.payload,
        Some("extras") => &record.extras,
        _ => return,
    };
    let Some(first) = segments.next() else {
        return;
    };
    let mut value = root.get(first);
    for seg in segments {
        value = value.and_then(|v| v.get(seg));
    }
    let mut one = |v: &Value| {
        buf.clear();
        if push_scalar_key(v, buf) {
            f(buf);
        }
    };
    match value {
        Some(Value::Array(items)) => items.iter().for_each(&mut one),
        Some(v) => one(v),
        None => {}
    }
}

/// Appends the key of a JSON scalar to `out` (what `IndexValue::from_json`
/// then `push_key` append, without copying a string value); false, with
/// nothing appended, for null, arrays and objects.
fn push_scalar_key(value: &Value, out: &mut Vec<u8>) -> bool {
    match value {
        Value::String(s) => match Timestamp::parse_rfc3339(s) {
            Some(ts) => push_instant_key(ts, out),
            None => push_string_key(s, out),
        },
        _ => match IndexValue::from_json(value) {
            Some(v) => v.push_key(out),
            None => return false,
        },
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_order(values: &[IndexValue]) {
        for pair in values.windows(2) {
            assert!(
                pair[0].key() < pair[1].key(),
                "{:?} < {:?}",
                pair[0],
                pair[1]
            );
        }
    }

    #[test]
    fn keys_preserve_order() {
        check_order(&[
            IndexValue::Number(-1e9),
            IndexValue::Number(-2.5),
            IndexValue::Number(-0.0),
            IndexValue::Number(0.5),
            IndexValue::Number(3.0),
            IndexValue::Number(1e12),
        ]);
        check_order(&[
            IndexValue::from_str_value("1969-01-01T00:00:00Z"),
            IndexValue::from_str_value("2024-01-10T07:00:00+02:00"),
            IndexValue::from_str_value("2024-01-10T05:00:00.5Z"),
        ]);
        check_order(&[
            IndexValue::String("a".into()),
            IndexValue::String("ab".into()),
            IndexValue::String("b".into()),
        ]);
    }

    #[test]
    fn negative_zero_has_the_key_of_zero() {
        assert_eq!(
            IndexValue::Number(-0.0).key(),
            IndexValue::Number(0.0).key()
        );
        assert!(IndexValue::Number(-1e-300).key() < IndexValue::Number(-0.0).key());
        assert!(IndexValue::Number(-0.0).key() < IndexValue::Number(1e-300).key());
    }

    #[test]
    fn ranges_do_not_mix_types() {
        let c = PathConstraint {
            path: "payload.x".into(),
            matcher: PathMatch::Range {
                lower: Some((IndexValue::Number(1.0), true)),
                upper: None,
            },
        };
        assert!(c.matches_key(&IndexValue::Number(2.0).key()));
        assert!(!c.matches_key(&IndexValue::Number(0.0).key()));
        assert!(!c.matches_key(&IndexValue::String("z".into()).key()));
    }
}
