//! The record: one fact a producer emitted about one artifact (spec `records.md` §1).

use serde::ser::{Serialize, SerializeMap, SerializeSeq, SerializeStruct, Serializer};
use serde_json::{Map, Value};

use super::time::Timestamp;
use super::validate::{self, ValidationError};

/// A JSON object, as used for payloads and extras.
pub type JsonObject = Map<String, Value>;

/// The artifact a record is about: `source_id:schema.table`, plus free extras.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetadataTarget {
    /// The system the table lives in (`oracle_prod`); may be empty.
    pub source_id: String,
    /// The schema (or database) name; may be empty.
    pub schema: String,
    /// The table name; never empty.
    pub table: String,
    /// Free attributes of the target (`{"partition": "p2024"}`).
    pub extras: JsonObject,
}

impl MetadataTarget {
    /// A target with empty extras.
    pub fn new(source_id: &str, schema: &str, table: &str) -> Self {
        MetadataTarget {
            source_id: source_id.to_owned(),
            schema: schema.to_owned(),
            table: table.to_owned(),
            extras: JsonObject::new(),
        }
    }

    /// The canonical name: `source_id:schema.table`, or `schema.table` when
    /// `source_id` is empty. Target extras are not part of the name.
    pub fn canonical_name(&self) -> String {
        canonical_name(&self.source_id, &self.schema, &self.table)
    }

    /// The key that names this target exactly (see [`target_key`]).
    pub fn key(&self) -> String {
        target_key(&self.source_id, &self.schema, &self.table)
    }
}

/// The canonical target name for its three parts (spec §1).
pub fn canonical_name(source_id: &str, schema: &str, table: &str) -> String {
    let mut name = String::with_capacity(source_id.len() + schema.len() + table.len() + 2);
    push_canonical_name(&mut name, source_id, schema, table);
    name
}

/// Appends the canonical target name for its three parts to `out`.
pub fn push_canonical_name(out: &mut String, source_id: &str, schema: &str, table: &str) {
    if !source_id.is_empty() {
        out.push_str(source_id);
        out.push(':');
    }
    out.push_str(schema);
    out.push('.');
    out.push_str(table);
}

/// The key that names a target exactly, where stores keep one entry per
/// target (the target dictionary, the `latest` table): its canonical name,
/// unless that name reads back as other parts (a `:` in `source_id`, a `.`
/// in `schema`, ...: `pg:sales.eu.orders` is both (`pg`, `sales`,
/// `eu.orders`) and (`pg`, `sales.eu`, `orders`)); then a NUL and the JSON
/// array of the three parts, which no canonical name key starts with.
pub fn target_key(source_id: &str, schema: &str, table: &str) -> String {
    let mut key = String::with_capacity(source_id.len() + schema.len() + table.len() + 2);
    push_target_key(&mut key, source_id, schema, table);
    key
}

/// Appends [`target_key`] of the three parts to `out`.
pub fn push_target_key(out: &mut String, source_id: &str, schema: &str, table: &str) {
    if canonical_name_is_exact(source_id, schema, table) {
        push_canonical_name(out, source_id, schema, table);
    } else {
        out.push('\0');
        let parts = serde_json::to_string(&[source_id, schema, table]).unwrap_or_default();
        out.push_str(&parts);
    }
}

/// Whether the canonical name of the three parts reads back as them: the
/// source ends at the first `:` (none: no source), the schema at the next
/// `.`; and it does not start with NUL (the escaped keys' mark).
fn canonical_name_is_exact(source_id: &str, schema: &str, table: &str) -> bool {
    if source_id.contains(':') || schema.contains('.') {
        return false;
    }
    if source_id.is_empty() && (schema.contains(':') || table.contains(':')) {
        return false;
    }
    let first = if source_id.is_empty() {
        schema
    } else {
        source_id
    };
    !first.starts_with('\0')
}

/// Where and as part of what a record was produced: job, run, namespace and
/// environment identifiers (`extras.cluster`, `extras.workspace`, `extras.tenant`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetadataContext {
    /// The orchestrator's job name.
    pub job_id: Option<String>,
    /// The run of the job that produced the record.
    pub run_id: Option<String>,
    /// The namespace (environment) the run belongs to.
    pub namespace: Option<String>,
    /// Free attributes; `tenant`, `cluster` and `workspace` by convention.
    pub extras: JsonObject,
}

impl MetadataContext {
    /// True when no field is set: such a context is the same as no context.
    pub fn is_empty(&self) -> bool {
        self.job_id.is_none()
            && self.run_id.is_none()
            && self.namespace.is_none()
            && self.extras.is_empty()
    }

    /// `extras.tenant` when it is a string.
    pub fn tenant(&self) -> Option<&str> {
        self.extras.get("tenant").and_then(Value::as_str)
    }
}

/// One fact about one artifact, as a producer emits it (before it has an id).
#[derive(Clone, Debug, PartialEq)]
pub struct MetadataRecord {
    /// The kind of fact (`ingestion_volume`), `[a-z][a-z0-9_]*`, at most 64 bytes.
    pub kind: String,
    /// The artifact the fact is about.
    pub target: MetadataTarget,
    /// The fact itself; its shape is governed by the kind's schema.
    pub payload: JsonObject,
    /// When the fact was produced, in UTC.
    pub produced_at: Timestamp,
    /// Who produced it (`ingestion.v1`), non-empty, at most 128 bytes.
    pub producer_id: String,
    /// The run context; an empty context is the same as none.
    pub context: MetadataContext,
    /// The version of the kind's payload schema the producer wrote.
    pub version: Option<u64>,
    /// A quality marker: a string or a number.
    pub quality: Option<Value>,
    /// Free extras, such as `window_start` and `window_end`.
    pub extras: JsonObject,
}

impl MetadataRecord {
    /// A record with an empty context and no version, quality or extras.
    pub fn new(
        kind: &str,
        target: MetadataTarget,
        payload: JsonObject,
        produced_at: Timestamp,
        producer_id: &str,
    ) -> Self {
        MetadataRecord {
            kind: kind.to_owned(),
            target,
            payload,
            produced_at,
            producer_id: producer_id.to_owned(),
            context: MetadataContext::default(),
            version: None,
            quality: None,
            extras: JsonObject::new(),
        }
    }

    /// Parses and validates one record from its canonical JSON text.
    ///
    /// Checks the size (1 MiB) and depth (64) limits, then every field rule
    /// of spec §1. An `"id"` field is rejected: ids are assigned by the store.
    pub fn from_json_str(text: &str) -> Result<Self, ValidationError> {
        validate::record_from_str(text, false).map(|(record, _)| record)
    }

    /// Parses and validates one line of JSONL input: a record, or a line
    /// the store wrote (`export`, `tail`), whose `"id"` is returned (the
    /// store assigns its own). A record may be 1 MiB
    /// ([`super::MAX_RECORD_BYTES`]) as given, not counting an id; a line
    /// the store wrote, exactly, may be as long as the store writes lines
    /// ([`super::MAX_LINE_BYTES`]).
    pub fn from_json_line(text: &str) -> Result<(Self, Option<u64>), ValidationError> {
        validate::record_from_line(text)
    }

    /// Validates one record given as a parsed JSON value (see [`Self::from_json_str`]).
    pub fn from_json_value(value: &Value) -> Result<Self, ValidationError> {
        validate::record_from_value(value, false).map(|(record, _)| record)
    }

    /// Sorts the keys of every JSON object in the record (payload, extras,
    /// target and context extras, at every depth). Stored records are kept
    /// in this form, so a record reads back, logs and exports identically.
    pub fn normalize(&mut self) {
        for map in [
            &mut self.payload,
            &mut self.extras,
            &mut self.target.extras,
            &mut self.context.extras,
        ] {
            sort_object(map);
        }
    }

    /// Checks the field rules of spec §1 on a record built in code.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate::check_record(self)
    }

    /// The canonical name of the target.
    pub fn target_name(&self) -> String {
        self.target.canonical_name()
    }

    /// The canonical JSON form as a `serde_json::Value`.
    pub fn to_json_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The canonical JSON text, on one line.
    pub fn to_json_string(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn sort_object(map: &mut JsonObject) {
    map.sort_keys();
    for value in map.values_mut() {
        sort_value(value);
    }
}

fn sort_value(value: &mut Value) {
    // Iterative: nesting depth is bounded by validation, but keep the stack flat anyway.
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                map.sort_keys();
                stack.extend(map.values_mut());
            }
            Value::Array(items) => stack.extend(items.iter_mut()),
            _ => {}
        }
    }
}

/// A record as stored: the record and the id the store assigned to it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRecord {
    /// Unique in the store, increasing in commit order.
    pub id: u64,
    /// The record's content.
    pub record: MetadataRecord,
}

impl StoredRecord {
    /// Parses a stored record's canonical JSON (with `"id"`), as found in
    /// the log or an export: at most [`super::MAX_LINE_BYTES`].
    pub fn from_json_str(text: &str) -> Result<Self, ValidationError> {
        let (record, id) = validate::record_from_str_limited(text, true, validate::MAX_LINE_BYTES)?;
        let id = id.ok_or_else(|| ValidationError::new("id", "is required"))?;
        Ok(StoredRecord { id, record })
    }

    /// A line of the store's log (or of `export`): [`Self::from_json_str`]
    /// without a limit on the text, which a store written before the limit
    /// counted the canonical form could exceed (such a record still reads
    /// back, for `tail`, replay and import's own checks).
    pub fn from_log_line(text: &str) -> Result<Self, ValidationError> {
        // Timestamps by the rule of the version that wrote the line.
        let (record, id) =
            validate::record_from_str_with(text, true, usize::MAX, validate::Timestamps::Stored)?;
        let id = id.ok_or_else(|| ValidationError::new("id", "is required"))?;
        Ok(StoredRecord { id, record })
    }

    /// The canonical JSON form (with `"id"` first) as a `serde_json::Value`.
    pub fn to_json_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The canonical JSON text, on one line.
    pub fn to_json_string(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A JSON object serialised as is, or with its keys sorted (at every depth).
struct Obj<'a, const SORTED: bool>(&'a JsonObject);

impl<const SORTED: bool> Serialize for Obj<'_, SORTED> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !SORTED {
            return self.0.serialize(s);
        }
        let mut entries: Vec<(&String, &Value)> = self.0.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut map = s.serialize_map(Some(entries.len()))?;
        for (key, value) in entries {
            map.serialize_entry(key, &SortedValue(value))?;
        }
        map.end()
    }
}

/// A JSON value with the keys of its objects sorted.
struct SortedValue<'a>(&'a Value);

impl Serialize for SortedValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => Obj::<true>(map).serialize(s),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&SortedValue(item))?;
                }
                seq.end()
            }
            other => other.serialize(s),
        }
    }
}

struct TargetJson<'a, const SORTED: bool>(&'a MetadataTarget);

impl<const SORTED: bool> Serialize for TargetJson<'_, SORTED> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("target", 4)?;
        st.serialize_field("source_id", &self.0.source_id)?;
        st.serialize_field("schema", &self.0.schema)?;
        st.serialize_field("table", &self.0.table)?;
        st.serialize_field("extras", &Obj::<SORTED>(&self.0.extras))?;
        st.end()
    }
}

struct ContextJson<'a, const SORTED: bool>(&'a MetadataContext);

impl<const SORTED: bool> Serialize for ContextJson<'_, SORTED> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        let mut st = s.serialize_struct("context", 4)?;
        if let Some(job_id) = &c.job_id {
            st.serialize_field("job_id", job_id)?;
        }
        if let Some(run_id) = &c.run_id {
            st.serialize_field("run_id", run_id)?;
        }
        if let Some(namespace) = &c.namespace {
            st.serialize_field("namespace", namespace)?;
        }
        st.serialize_field("extras", &Obj::<SORTED>(&c.extras))?;
        st.end()
    }
}

fn serialize_record<S: SerializeStruct, const SORTED: bool>(
    st: &mut S,
    r: &MetadataRecord,
) -> Result<(), S::Error> {
    st.serialize_field("kind", &r.kind)?;
    st.serialize_field("target", &TargetJson::<SORTED>(&r.target))?;
    st.serialize_field("payload", &Obj::<SORTED>(&r.payload))?;
    st.serialize_field("produced_at", &r.produced_at.to_rfc3339())?;
    st.serialize_field("producer_id", &r.producer_id)?;
    st.serialize_field("context", &ContextJson::<SORTED>(&r.context))?;
    if let Some(version) = r.version {
        st.serialize_field("version", &version)?;
    }
    if let Some(quality) = &r.quality {
        st.serialize_field("quality", quality)?;
    }
    st.serialize_field("extras", &Obj::<SORTED>(&r.extras))
}

impl Serialize for MetadataRecord {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("record", 9)?;
        serialize_record::<_, false>(&mut st, self)?;
        st.end()
    }
}

/// Serialises a record in the store's canonical form: object keys sorted at
/// every depth, without copying the record (see [`MetadataRecord::normalize`]).
pub struct SortedJson<'a>(pub &'a MetadataRecord);

impl Serialize for SortedJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("record", 9)?;
        serialize_record::<_, true>(&mut st, self.0)?;
        st.end()
    }
}

impl Serialize for StoredRecord {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("record", 10)?;
        st.serialize_field("id", &self.id)?;
        serialize_record::<_, false>(&mut st, &self.record)?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_name(source: &str, schema: &str, table: &str, expected: &str) {
        assert_eq!(
            MetadataTarget::new(source, schema, table).canonical_name(),
            expected
        );
    }

    /// The canonical name read back: the source up to the first `:` (none
    /// without one), the schema up to the next `.`.
    fn read_back(name: &str) -> Option<(&str, &str, &str)> {
        let (source, rest) = name.split_once(':').unwrap_or(("", name));
        let (schema, table) = rest.split_once('.')?;
        Some((source, schema, table))
    }

    #[test]
    fn target_keys_are_canonical_names_when_those_read_back_and_distinct_always() {
        assert_eq!(target_key("pg", "sales", "eu.orders"), "pg:sales.eu.orders");
        assert_eq!(target_key("", "sales", "orders"), "sales.orders");
        assert_eq!(
            target_key("pg", "sales.eu", "orders"),
            "\0[\"pg\",\"sales.eu\",\"orders\"]"
        );
        // Every triple over a small alphabet: a key is the canonical name
        // exactly when that reads back as the same parts (and does not start
        // with NUL), and no two triples share a key.
        let alphabet = ["", "a", ":", ".", "\0", "a:", ".a", "a.b", ":a"];
        let mut keys = std::collections::HashMap::new();
        for s in alphabet {
            for sc in alphabet {
                for t in alphabet {
                    let key = target_key(s, sc, t);
                    let name = canonical_name(s, sc, t);
                    let exact = read_back(&name) == Some((s, sc, t)) && !name.starts_with('\0');
                    assert_eq!(key == name, exact, "{s:?} {sc:?} {t:?}");
                    if let Some(other) = keys.insert(key.clone(), (s, sc, t)) {
                        panic!("{key:?} names {other:?} and {:?}", (s, sc, t));
                    }
                }
            }
        }
    }

    #[test]
    fn canonical_names() {
        check_name("oracle_prod", "itcftth", "t", "oracle_prod:itcftth.t");
        check_name("", "itcftth", "t", "itcftth.t");
        check_name("", "", "t", ".t");
    }

    #[test]
    fn canonical_json_round_trips() {
        let text = r#"{"kind":"ingestion_volume","target":{"source_id":"oracle_prod","schema":"s","table":"t","extras":{"partition":"p2024"}},"payload":{"rows":5},"produced_at":"2024-01-10T07:00:00+02:00","producer_id":"ingestion.v1","context":{"run_id":"run-1","extras":{"tenant":"acme"}},"version":1,"quality":"verified","extras":{}}"#;
        let record = MetadataRecord::from_json_str(text).unwrap();
        let stored = StoredRecord { id: 7, record };
        let out = stored.to_json_string();
        assert!(
            out.starts_with(r#"{"id":7,"kind":"ingestion_volume""#),
            "{out}"
        );
        assert!(
            out.contains(r#""produced_at":"2024-01-10T05:00:00Z""#),
            "{out}"
        );
        assert_eq!(StoredRecord::from_json_str(&out).unwrap(), stored);
    }
}
