//! The field rules of spec §1: every rejected record names the field at fault.

use std::fmt;

use serde_json::Value;

use super::record::{JsonObject, MetadataContext, MetadataRecord, MetadataTarget};
use super::strict_json;
use super::time::Timestamp;

/// The largest accepted record, as JSON text (spec §1: a record whose JSON
/// exceeds 1 MiB is rejected). A line of input is measured as given.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// The most a stored record may take as the store writes it back: its
/// canonical JSON (defaults filled in, times in UTC), without its id.
/// Larger than [`MAX_RECORD_BYTES`] because a record within that as given
/// grows when written back (a minimal record by ~75 bytes of defaults, a
/// number written `9e15` by 14 bytes): such a record is accepted, as the
/// spec says, and a record over this is refused, so every line the store
/// writes (log, `tail`, `export`) is under [`MAX_LINE_BYTES`] and imports
/// again.
pub const MAX_WRITTEN_RECORD_BYTES: usize = MAX_RECORD_BYTES + (64 << 10);
/// What an id adds to a record's canonical JSON at most: `"id":`, 20 digits
/// and a comma.
pub const MAX_ID_PREFIX_BYTES: usize = r#""id":18446744073709551615,"#.len();
/// The longest line the store writes, and reads back from a file: a
/// written record with its id.
pub const MAX_LINE_BYTES: usize = MAX_WRITTEN_RECORD_BYTES + MAX_ID_PREFIX_BYTES;
/// The deepest accepted nesting of objects and arrays (the record itself is level 1).
pub const MAX_RECORD_DEPTH: usize = 64;
/// The longest accepted kind name, in bytes.
pub const MAX_KIND_BYTES: usize = 64;
/// The longest accepted producer id, in bytes.
pub const MAX_PRODUCER_BYTES: usize = 128;

/// A record broke a rule of the record format; `field` is the dotted path of
/// the field at fault (`target.table`, `payload.rows`), or `record` for the
/// whole record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationError {
    /// The dotted path of the offending field.
    pub field: String,
    /// What is wrong with it, in plain words.
    pub reason: String,
}

impl ValidationError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ValidationError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field `{}` {}", self.field, self.reason)
    }
}

impl std::error::Error for ValidationError {}

type Result<T> = std::result::Result<T, ValidationError>;

/// Parses JSON text into a record, checking size and depth before anything else.
/// With `allow_id`, an `"id"` field is accepted and returned (log and export lines).
pub(crate) fn record_from_str(text: &str, allow_id: bool) -> Result<(MetadataRecord, Option<u64>)> {
    record_from_str_limited(text, allow_id, MAX_RECORD_BYTES)
}

/// A line of JSONL input: a record, or a line the store wrote (`export`,
/// `tail`) with its id, which is returned. A record may be
/// [`MAX_RECORD_BYTES`] long as given, not counting an id; a line the store
/// wrote, exactly, as long as the store writes lines ([`MAX_LINE_BYTES`]).
pub(crate) fn record_from_line(text: &str) -> Result<(MetadataRecord, Option<u64>)> {
    let (record, id) = record_from_str_limited(text, true, MAX_LINE_BYTES)?;
    if text.len() > MAX_RECORD_BYTES {
        // Over 1 MiB with an id: a line the store wrote, byte for byte, holds
        // a record it accepted within the limit as given (its canonical form
        // can be longer); any other line is the producer's record, measured
        // without its `"id":N,`.
        let len = match id {
            None => text.len(),
            Some(id) if written_by_store(text, &record, id) => return Ok((record, Some(id))),
            Some(id) => text.len().saturating_sub(format!("\"id\":{id},").len()),
        };
        if len > MAX_RECORD_BYTES {
            return Err(too_long(len, MAX_RECORD_BYTES));
        }
    }
    Ok((record, id))
}

/// Whether `text` is exactly the line the store writes for `record` under
/// `id` (log, `tail`, `export`): `{"id":N,` and its canonical JSON.
fn written_by_store(text: &str, record: &MetadataRecord, id: u64) -> bool {
    let Ok(json) = serde_json::to_string(&super::record::SortedJson(record)) else {
        return false;
    };
    let prefix = format!("{{\"id\":{id},");
    text.strip_prefix(prefix.as_str())
        .is_some_and(|rest| json.strip_prefix('{') == Some(rest))
}

fn too_long(len: usize, max_bytes: usize) -> ValidationError {
    ValidationError::new(
        "record",
        format!("is {len} bytes of JSON, more than the limit of {max_bytes}"),
    )
}

/// Which rule a record's timestamps are read by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timestamps {
    /// Input: [`Timestamp::parse_record_rfc3339`] (the `date-time` format's
    /// rule), and window ends compared to the nanosecond.
    Strict,
    /// The store's own log, which earlier versions wrote under a looser
    /// rule (a space for `T`, a second of 60 at any minute, window ends
    /// compared in microseconds): what they stored reads back, so their
    /// stores open and replay.
    Stored,
}

/// [`record_from_str`] with a size limit of `max_bytes`.
pub(crate) fn record_from_str_limited(
    text: &str,
    allow_id: bool,
    max_bytes: usize,
) -> Result<(MetadataRecord, Option<u64>)> {
    record_from_str_with(text, allow_id, max_bytes, Timestamps::Strict)
}

/// [`record_from_str_limited`], reading timestamps by `rule`.
pub(crate) fn record_from_str_with(
    text: &str,
    allow_id: bool,
    max_bytes: usize,
    rule: Timestamps,
) -> Result<(MetadataRecord, Option<u64>)> {
    if text.len() > max_bytes {
        return Err(too_long(text.len(), max_bytes));
    }
    // Nesting is measured on the text first, so serde_json's own recursion
    // limit is never what decides, and the message names our limit. A key
    // named twice in one object is refused (serde_json would keep the
    // last one silently).
    let value = strict_json::parse(text, MAX_RECORD_DEPTH).map_err(|e| match e {
        strict_json::Error::TooDeep => too_deep(),
        strict_json::Error::DuplicateKey(path) => {
            ValidationError::new(path, "appears twice in its object")
        }
        strict_json::Error::Json(e) => {
            ValidationError::new("record", format!("is not valid JSON: {e}"))
        }
        strict_json::Error::NumberOutOfRange { path } => {
            ValidationError::new(path, "is a number beyond the range of a 64-bit float")
        }
        strict_json::Error::IntegerOutOfRange { path, literal } => ValidationError::new(
            path,
            format!(
                "is the integer {literal}, outside the range kept exactly \
                 ({} to {}): write it as a string, or as a decimal to store it rounded",
                i64::MIN,
                u64::MAX
            ),
        ),
    })?;
    fields_from_value(&value, allow_id, rule)
}

fn too_deep() -> ValidationError {
    ValidationError::new(
        "record",
        format!("nests deeper than {MAX_RECORD_DEPTH} levels"),
    )
}

fn value_depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(value_depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(value_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Validates a parsed JSON value as a record.
pub(crate) fn record_from_value(
    value: &Value,
    allow_id: bool,
) -> Result<(MetadataRecord, Option<u64>)> {
    if value_depth(value) > MAX_RECORD_DEPTH {
        return Err(too_deep());
    }
    fields_from_value(value, allow_id, Timestamps::Strict)
}

/// The field rules, on a value whose depth is already known to be within
/// the limit (the text path measures it before parsing).
fn fields_from_value(
    value: &Value,
    allow_id: bool,
    rule: Timestamps,
) -> Result<(MetadataRecord, Option<u64>)> {
    let obj = value
        .as_object()
        .ok_or_else(|| ValidationError::new("record", "must be a JSON object"))?;
    let mut id = None;
    for key in obj.keys() {
        match key.as_str() {
            "kind" | "target" | "payload" | "produced_at" | "producer_id" | "context"
            | "version" | "quality" | "extras" => {}
            "id" if allow_id => {
                id =
                    Some(obj[key].as_u64().ok_or_else(|| {
                        ValidationError::new("id", "must be an unsigned integer")
                    })?);
            }
            _ => {
                return Err(ValidationError::new(
                    key.as_str(),
                    "is not a field of a record",
                ))
            }
        }
    }
    let kind = required_str(obj, "kind", "kind")?.to_owned();
    let target = parse_target(required(obj, "target", "target")?)?;
    let payload = as_object(required(obj, "payload", "payload")?, "payload")?.clone();
    let produced_at_text = required_str(obj, "produced_at", "produced_at")?;
    let produced_at = match rule {
        Timestamps::Strict => {
            Timestamp::parse_record_rfc3339(produced_at_text).map(Timestamp::from_datetime)
        }
        Timestamps::Stored => Timestamp::parse_rfc3339(produced_at_text),
    };
    let produced_at = produced_at.ok_or_else(|| {
        ValidationError::new(
            "produced_at",
            format!("must be an RFC 3339 timestamp with an offset, got {produced_at_text:?}"),
        )
    })?;
    let producer_id = required_str(obj, "producer_id", "producer_id")?.to_owned();
    let context = match obj.get("context") {
        None => MetadataContext::default(),
        Some(v) => parse_context(v)?,
    };
    let version = match obj.get("version") {
        None => None,
        // An integer as JSON Schema's `integer` counts one (as the payload
        // schemas do): `1.0` and `1e0` are 1, `-0` is 0.
        Some(v) => Some(
            v.as_u64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|x| {
                            x.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(x)
                        })
                        .map(|x| x as u64)
                })
                .ok_or_else(|| ValidationError::new("version", "must be an integer >= 0"))?,
        ),
    };
    let quality = match obj.get("quality") {
        None => None,
        Some(v @ (Value::String(_) | Value::Number(_))) => Some(v.clone()),
        Some(_) => {
            return Err(ValidationError::new(
                "quality",
                "must be a string or a number",
            ))
        }
    };
    let extras = match obj.get("extras") {
        None => JsonObject::new(),
        Some(v) => as_object(v, "extras")?.clone(),
    };
    let record = MetadataRecord {
        kind,
        target,
        payload,
        produced_at,
        producer_id,
        context,
        version,
        quality,
        extras,
    };
    check_record_with(&record, rule)?;
    Ok((record, id))
}

fn required<'a>(obj: &'a JsonObject, key: &str, field: &str) -> Result<&'a Value> {
    obj.get(key)
        .ok_or_else(|| ValidationError::new(field, "is required"))
}

fn required_str<'a>(obj: &'a JsonObject, key: &str, field: &str) -> Result<&'a str> {
    required(obj, key, field)?
        .as_str()
        .ok_or_else(|| ValidationError::new(field, "must be a string"))
}

fn optional_str(obj: &JsonObject, key: &str, field: &str) -> Result<Option<String>> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ValidationError::new(field, "must be a string")),
    }
}

fn as_object<'a>(value: &'a Value, field: &str) -> Result<&'a JsonObject> {
    value
        .as_object()
        .ok_or_else(|| ValidationError::new(field, "must be a JSON object"))
}

fn parse_target(value: &Value) -> Result<MetadataTarget> {
    let obj = as_object(value, "target")?;
    for key in obj.keys() {
        if !matches!(key.as_str(), "source_id" | "schema" | "table" | "extras") {
            return Err(ValidationError::new(
                format!("target.{key}"),
                "is not a field of a target",
            ));
        }
    }
    Ok(MetadataTarget {
        source_id: optional_str(obj, "source_id", "target.source_id")?.unwrap_or_default(),
        schema: optional_str(obj, "schema", "target.schema")?.unwrap_or_default(),
        table: required_str(obj, "table", "target.table")?.to_owned(),
        extras: match obj.get("extras") {
            None => JsonObject::new(),
            Some(v) => as_object(v, "target.extras")?.clone(),
        },
    })
}

fn parse_context(value: &Value) -> Result<MetadataContext> {
    let obj = as_object(value, "context")?;
    for key in obj.keys() {
        if !matches!(key.as_str(), "job_id" | "run_id" | "namespace" | "extras") {
            return Err(ValidationError::new(
                format!("context.{key}"),
                "is not a field of a context",
            ));
        }
    }
    Ok(MetadataContext {
        job_id: optional_str(obj, "job_id", "context.job_id")?,
        run_id: optional_str(obj, "run_id", "context.run_id")?,
        namespace: optional_str(obj, "namespace", "context.namespace")?,
        extras: match obj.get("extras") {
            None => JsonObject::new(),
            Some(v) => as_object(v, "context.extras")?.clone(),
        },
    })
}

/// Is `kind` a valid kind name: `[a-z][a-z0-9_]*`, at most 64 bytes?
pub fn check_kind_name(kind: &str) -> Result<()> {
    let mut bytes = kind.bytes();
    let first_ok = matches!(bytes.next(), Some(b'a'..=b'z'));
    if !first_ok || !bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_')) {
        return Err(ValidationError::new(
            "kind",
            format!("must match [a-z][a-z0-9_]*, got {kind:?}"),
        ));
    }
    if kind.len() > MAX_KIND_BYTES {
        return Err(ValidationError::new(
            "kind",
            format!("is {} bytes long, more than {MAX_KIND_BYTES}", kind.len()),
        ));
    }
    Ok(())
}

/// The rules of spec §1 that a typed record can still break.
pub(crate) fn check_record(record: &MetadataRecord) -> Result<()> {
    check_record_with(record, Timestamps::Strict)
}

/// [`check_record`], reading the window's timestamps by `rule`.
fn check_record_with(record: &MetadataRecord, rule: Timestamps) -> Result<()> {
    check_kind_name(&record.kind)?;
    if !record.produced_at.is_rfc3339() {
        // An offset can carry a valid text past 9999 (or before 0000) in
        // UTC, and a record built in code can hold any instant: neither
        // has an RFC 3339 form, which the log and every output need.
        return Err(ValidationError::new(
            "produced_at",
            "must lie within years 0000 to 9999 in UTC",
        ));
    }
    if record.target.table.is_empty() {
        return Err(ValidationError::new("target.table", "must not be empty"));
    }
    if record.producer_id.is_empty() {
        return Err(ValidationError::new("producer_id", "must not be empty"));
    }
    if record.producer_id.len() > MAX_PRODUCER_BYTES {
        return Err(ValidationError::new(
            "producer_id",
            format!(
                "is {} bytes long, more than {MAX_PRODUCER_BYTES}",
                record.producer_id.len()
            ),
        ));
    }
    if let Some(quality) = &record.quality {
        if !(quality.is_string() || quality.is_number()) {
            return Err(ValidationError::new(
                "quality",
                "must be a string or a number",
            ));
        }
    }
    // (field, levels above the object: the record is level 1)
    for (field, object, above) in [
        ("payload", &record.payload, 1),
        ("extras", &record.extras, 1),
        ("target.extras", &record.target.extras, 2),
        ("context.extras", &record.context.extras, 2),
    ] {
        let depth = 1 + object.values().map(value_depth).max().unwrap_or(0);
        if depth + above > MAX_RECORD_DEPTH {
            return Err(ValidationError::new(
                field,
                format!("nests deeper than {MAX_RECORD_DEPTH} levels"),
            ));
        }
    }
    check_window(&record.extras, rule)?;
    Ok(())
}

/// `extras.window_start` and `extras.window_end`: RFC 3339, as a pair, start <= end.
fn check_window(extras: &JsonObject, rule: Timestamps) -> Result<()> {
    // Strict: compared at full precision, as (µs, the ns within it), so
    // ends 100 ns apart in the wrong order are refused though both truncate
    // to the same microsecond, and a leap second (23:59:60.5, which chrono
    // orders before midnight) counts as the instant it is stored as.
    let instant = |s: &str| match rule {
        Timestamps::Strict => Timestamp::parse_record_rfc3339(s).map(|at| {
            (
                Timestamp::from_datetime(at),
                at.timestamp_subsec_nanos() % 1000,
            )
        }),
        Timestamps::Stored => Timestamp::parse_rfc3339(s).map(|at| (at, 0)),
    };
    let parse = |key: &str| -> Result<Option<(Timestamp, u32)>> {
        match extras.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => instant(s).map(Some).ok_or_else(|| {
                ValidationError::new(
                    format!("extras.{key}"),
                    format!("must be an RFC 3339 timestamp with an offset, got {s:?}"),
                )
            }),
            Some(_) => Err(ValidationError::new(
                format!("extras.{key}"),
                "must be an RFC 3339 timestamp string",
            )),
        }
    };
    match (parse("window_start")?, parse("window_end")?) {
        (Some(start), Some(end)) if start > end => Err(ValidationError::new(
            "extras.window_start",
            "must not be after extras.window_end",
        )),
        (Some(_), None) => Err(ValidationError::new(
            "extras.window_end",
            "is required when extras.window_start is present",
        )),
        (None, Some(_)) => Err(ValidationError::new(
            "extras.window_start",
            "is required when extras.window_end is present",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"{"kind":"k","target":{"table":"t"},"payload":{},"produced_at":"2024-01-10T05:00:00Z","producer_id":"p"}"#;

    #[test]
    fn a_key_named_twice_is_refused_naming_it() {
        for (text, field) in [
            (
                r#"{"kind":"k","kind":"j","target":{"table":"t"},"payload":{},"produced_at":"2024-01-10T05:00:00Z","producer_id":"p"}"#,
                "kind",
            ),
            (
                r#"{"kind":"k","target":{"table":"t"},"payload":{"rows":1,"rows":2},"produced_at":"2024-01-10T05:00:00Z","producer_id":"p"}"#,
                "payload.rows",
            ),
        ] {
            let err = record_from_str(text, false).unwrap_err();
            assert_eq!(err.field, field, "{text}");
            assert_eq!(
                err.to_string(),
                format!("field `{field}` appears twice in its object")
            );
        }
        assert!(record_from_str(VALID, false).is_ok());
    }

    /// Replaces or adds a top-level field of the valid record, then checks which field is named.
    fn check(field: &str, value: Option<&str>, expected_field: &str) {
        let mut obj: Value = serde_json::from_str(VALID).unwrap();
        match value {
            Some(v) => {
                let parsed: Value = serde_json::from_str(v).unwrap();
                obj[field] = parsed;
            }
            None => {
                obj.as_object_mut().unwrap().remove(field);
            }
        }
        let err = MetadataRecord::from_json_str(&obj.to_string()).unwrap_err();
        assert_eq!(err.field, expected_field, "{err}");
    }

    #[test]
    fn valid_minimal_record() {
        let r = MetadataRecord::from_json_str(VALID).unwrap();
        assert_eq!(r.target.source_id, "");
        assert!(r.context.is_empty());
    }

    #[test]
    fn produced_at_must_have_an_rfc3339_form_in_utc() {
        check(
            "produced_at",
            Some(r#""9999-12-31T23:59:59-23:59""#),
            "produced_at",
        );
        check(
            "produced_at",
            Some(r#""0000-01-01T00:00:00+00:01""#),
            "produced_at",
        );
        let mut obj: Value = serde_json::from_str(VALID).unwrap();
        obj["produced_at"] = "9999-12-31T23:59:59Z".into();
        MetadataRecord::from_json_str(&obj.to_string()).unwrap();
        obj["produced_at"] = "0000-01-01T00:00:00Z".into();
        MetadataRecord::from_json_str(&obj.to_string()).unwrap();
        // A record built in code is checked on the store path too.
        let mut record = MetadataRecord::from_json_str(VALID).unwrap();
        record.produced_at = Timestamp::MAX;
        assert_eq!(check_record(&record).unwrap_err().field, "produced_at");
    }

    #[test]
    fn each_invalid_field_is_named() {
        check("kind", None, "kind");
        check("kind", Some("\"Bad\""), "kind");
        check("kind", Some("\"9x\""), "kind");
        check("kind", Some(&format!("\"{}\"", "a".repeat(65))), "kind");
        check("kind", Some("3"), "kind");
        check("target", None, "target");
        check("target", Some("[]"), "target");
        check("target", Some(r#"{"table":""}"#), "target.table");
        check("target", Some(r#"{"schema":"s"}"#), "target.table");
        check(
            "target",
            Some(r#"{"table":"t","schema":1}"#),
            "target.schema",
        );
        check(
            "target",
            Some(r#"{"table":"t","source_id":null}"#),
            "target.source_id",
        );
        check(
            "target",
            Some(r#"{"table":"t","extras":[]}"#),
            "target.extras",
        );
        check(
            "target",
            Some(r#"{"table":"t","owner":"x"}"#),
            "target.owner",
        );
        check("payload", None, "payload");
        check("payload", Some("[1]"), "payload");
        check("produced_at", None, "produced_at");
        check(
            "produced_at",
            Some("\"2024-01-10T05:00:00\""),
            "produced_at",
        );
        check("produced_at", Some("1704862800"), "produced_at");
        check("producer_id", None, "producer_id");
        check("producer_id", Some("\"\""), "producer_id");
        check(
            "producer_id",
            Some(&format!("\"{}\"", "p".repeat(129))),
            "producer_id",
        );
        check("context", Some("\"x\""), "context");
        check("context", Some(r#"{"run_id":5}"#), "context.run_id");
        check("context", Some(r#"{"job_id":true}"#), "context.job_id");
        check("context", Some(r#"{"namespace":[]}"#), "context.namespace");
        check("context", Some(r#"{"extras":"x"}"#), "context.extras");
        check("context", Some(r#"{"tenant":"x"}"#), "context.tenant");
        check("version", Some("-1"), "version");
        check("version", Some("1.5"), "version");
        check("version", Some("\"1\""), "version");
        check("version", Some("-1.0"), "version");
        check("version", Some("1e20"), "version");
        for (text, version) in [("1.0", 1), ("1e0", 1), ("-0", 0), ("-0.0", 0)] {
            let mut obj: Value = serde_json::from_str(VALID).unwrap();
            obj["version"] = serde_json::from_str(text).unwrap();
            let record = MetadataRecord::from_json_str(&obj.to_string()).unwrap();
            assert_eq!(record.version, Some(version), "{text}");
        }
        check("quality", Some("null"), "quality");
        check("quality", Some("[]"), "quality");
        check("extras", Some("3"), "extras");
        check(
            "extras",
            Some(r#"{"window_start":"2024-01-02T00:00:00Z"}"#),
            "extras.window_end",
        );
        check(
            "extras",
            Some(r#"{"window_end":"2024-01-02T00:00:00Z"}"#),
            "extras.window_start",
        );
        check(
            "extras",
            Some(r#"{"window_start":"2024-01-03T00:00:00Z","window_end":"2024-01-02T00:00:00Z"}"#),
            "extras.window_start",
        );
        check(
            "extras",
            Some(r#"{"window_start":"x","window_end":"2024-01-02T00:00:00Z"}"#),
            "extras.window_start",
        );
        // Ends in the wrong order by 100 ns: the same microsecond, refused.
        check(
            "extras",
            Some(
                r#"{"window_start":"2024-01-10T00:00:00.0000002Z","window_end":"2024-01-10T00:00:00.0000001Z"}"#,
            ),
            "extras.window_start",
        );
        // Every timestamp of a record follows one rule (that of
        // `payload.watermark`'s `date-time` format): no space for `T`, no
        // second 60 but at 23:59:60 UTC.
        for bad in [r#""2024-01-10 05:00:00Z""#, r#""2024-03-15T12:30:60Z""#] {
            check("produced_at", Some(bad), "produced_at");
            check(
                "extras",
                Some(&format!(
                    r#"{{"window_start":{bad},"window_end":"2024-12-01T00:00:00Z"}}"#
                )),
                "extras.window_start",
            );
        }
        check("surprise", Some("1"), "surprise");
        check("id", Some("1"), "id");
    }

    /// What earlier versions stored reads back from the log (replay,
    /// `tail`), though new input is held to the stricter rule.
    #[test]
    fn the_log_reads_back_what_earlier_versions_accepted() {
        let mut obj: Value = serde_json::from_str(VALID).unwrap();
        obj["produced_at"] = "2024-01-10 05:00:00Z".into();
        obj["extras"] = serde_json::json!({
            "window_start": "2024-01-10T00:00:00.0000002Z",
            "window_end": "2024-01-10 00:00:00.0000001Z"
        });
        let text = obj.to_string();
        assert!(record_from_str_limited(&text, false, MAX_RECORD_BYTES).is_err());
        let (record, _) =
            record_from_str_with(&text, false, MAX_RECORD_BYTES, Timestamps::Stored).unwrap();
        assert_eq!(
            record.produced_at,
            Timestamp::parse_rfc3339("2024-01-10T05:00:00Z").unwrap()
        );
    }

    /// A leap second's window end is the instant it is stored as: 23:59:60.5
    /// is 00:00:00.5, after a start at 00:00:00.2.
    #[test]
    fn a_leap_second_window_compares_as_stored() {
        let mut obj: Value = serde_json::from_str(VALID).unwrap();
        obj["extras"] = serde_json::json!({
            "window_start": "2016-12-31T23:59:60.5Z",
            "window_end": "2017-01-01T00:00:00.2Z"
        });
        let error = MetadataRecord::from_json_str(&obj.to_string()).unwrap_err();
        assert_eq!(error.field, "extras.window_start");
        obj["extras"]["window_end"] = "2017-01-01T00:00:00.5Z".into();
        MetadataRecord::from_json_str(&obj.to_string()).unwrap();
    }

    #[test]
    fn size_and_depth_limits() {
        let deep = format!("{}{}", "[".repeat(70), "]".repeat(70));
        check("payload", Some(&format!("{{\"a\":{deep}}}")), "record");
        let big = format!("\"{}\"", "x".repeat(MAX_RECORD_BYTES));
        check("payload", Some(&format!("{{\"a\":{big}}}")), "record");
        // Exactly 64 levels (record, payload, then 62 nested arrays) is allowed.
        let at_limit = format!("{}{}", "[".repeat(62), "]".repeat(62));
        let mut obj: Value = serde_json::from_str(VALID).unwrap();
        obj["payload"] = serde_json::from_str(&format!("{{\"a\":{at_limit}}}")).unwrap();
        let text = obj.to_string();
        let record = MetadataRecord::from_json_str(&text).unwrap();
        assert!(record.validate().is_ok());
        assert!(MetadataRecord::from_json_value(&obj).is_ok());
        let over = format!("{}{}", "[".repeat(63), "]".repeat(63));
        check("payload", Some(&format!("{{\"a\":{over}}}")), "record");
        let err = MetadataRecord::from_json_str("not json").unwrap_err();
        assert_eq!(err.field, "record");
    }
}
