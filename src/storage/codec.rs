//! The byte encoding of stored records (documented in `docs/format.md`).
//!
//! Hand-written rather than postcard or bincode: payloads are arbitrary JSON,
//! which non-self-describing formats cannot decode into `serde_json::Value`,
//! and a format we own can be read byte by byte from the docs. Object keys are
//! written sorted, so equal content always encodes to equal bytes; the content
//! hash used for duplicate detection is taken over these bytes.

use serde_json::{Map, Number, Value};

use crate::model::{JsonObject, MetadataContext, MetadataRecord, MetadataTarget, Timestamp};

/// The first byte of every encoded record: the record encoding version.
pub const RECORD_ENCODING_V1: u8 = 1;

const TAG_NULL: u8 = 0;
const TAG_FALSE: u8 = 1;
const TAG_TRUE: u8 = 2;
const TAG_INT: u8 = 3;
const TAG_UINT: u8 = 4;
const TAG_FLOAT: u8 = 5;
const TAG_STRING: u8 = 6;
const TAG_ARRAY: u8 = 7;
const TAG_OBJECT: u8 = 8;

/// Bytes that do not decode as a record: the store is corrupt or newer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

type Result<T> = std::result::Result<T, DecodeError>;

/// Encodes a record (without its id).
pub fn encode_record(record: &MetadataRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(RECORD_ENCODING_V1);
    put_str(&mut out, &record.kind);
    put_str(&mut out, &record.target.source_id);
    put_str(&mut out, &record.target.schema);
    put_str(&mut out, &record.target.table);
    put_object(&mut out, &record.target.extras);
    put_object(&mut out, &record.payload);
    out.extend_from_slice(&record.produced_at.as_micros().to_le_bytes());
    put_str(&mut out, &record.producer_id);
    put_opt_str(&mut out, record.context.job_id.as_deref());
    put_opt_str(&mut out, record.context.run_id.as_deref());
    put_opt_str(&mut out, record.context.namespace.as_deref());
    put_object(&mut out, &record.context.extras);
    match record.version {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            put_varint(&mut out, v);
        }
    }
    match &record.quality {
        None => out.push(0),
        Some(q) => {
            out.push(1);
            put_value(&mut out, q);
        }
    }
    put_object(&mut out, &record.extras);
    out
}

/// Decodes a record encoded by [`encode_record`]: [`decode_projected`]
/// with every part kept (one decoder for both, so they cannot drift apart).
pub fn decode_record(bytes: &[u8]) -> Result<MetadataRecord> {
    decode_projected(bytes, &Projection::ALL)
}

/// Which top-level keys of an object (`payload`, `extras`) a projection keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum KeySet {
    /// None: the object decodes as empty.
    #[default]
    Nothing,
    /// Only these keys (their whole values).
    Keys(Vec<String>),
    /// Every key.
    All,
}

impl KeySet {
    fn keeps(&self, key: &[u8]) -> bool {
        match self {
            KeySet::Nothing => false,
            KeySet::Keys(keys) => keys.iter().any(|k| k.as_bytes() == key),
            KeySet::All => true,
        }
    }

    /// Adds `key` (or everything when `None`).
    pub fn add(&mut self, key: Option<&str>) {
        match (key, &mut *self) {
            (_, KeySet::All) => {}
            (None, _) => *self = KeySet::All,
            (Some(key), KeySet::Nothing) => *self = KeySet::Keys(vec![key.to_owned()]),
            (Some(key), KeySet::Keys(keys)) => {
                if !keys.iter().any(|k| k == key) {
                    keys.push(key.to_owned());
                }
            }
        }
    }

    fn union(&mut self, other: &KeySet) {
        match other {
            KeySet::Nothing => {}
            KeySet::All => *self = KeySet::All,
            KeySet::Keys(keys) => keys.iter().for_each(|k| self.add(Some(k))),
        }
    }
}

/// The parts of a record a reader needs; the others decode as empty (empty
/// strings and objects, `None`), which saves building them. `produced_at`
/// is always decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Projection {
    /// `kind`.
    pub kind: bool,
    /// `target.source_id`, `target.schema` and `target.table`.
    pub target: bool,
    /// `target.extras`.
    pub target_extras: bool,
    /// Keys of `payload`.
    pub payload: KeySet,
    /// `producer_id`.
    pub producer_id: bool,
    /// `context.job_id`, `run_id`, `namespace`.
    pub context: bool,
    /// `context.extras`.
    pub context_extras: bool,
    /// `version`.
    pub version: bool,
    /// `quality`.
    pub quality: bool,
    /// Keys of `extras`.
    pub extras: KeySet,
}

impl Projection {
    /// Whether any part encoded after `produced_at` is asked for. When none
    /// is, decoding stops there: bytes after it are not read, so damage
    /// there goes unnoticed by such a projection (the whole decoding,
    /// [`decode_record`], still finds it).
    pub fn reads_past_produced_at(&self) -> bool {
        self.producer_id
            || self.context
            || self.context_extras
            || self.version
            || self.quality
            || !matches!(&self.extras, KeySet::Nothing)
    }

    /// Every field: decoding with it is [`decode_record`].
    pub const ALL: Projection = Projection {
        kind: true,
        target: true,
        target_extras: true,
        payload: KeySet::All,
        producer_id: true,
        context: true,
        context_extras: true,
        version: true,
        quality: true,
        extras: KeySet::All,
    };

    /// Every field: decoding with it equals [`decode_record`].
    pub fn all() -> Self {
        Self::ALL
    }

    /// Keeps what either projection keeps.
    pub fn union(&mut self, other: &Projection) {
        self.kind |= other.kind;
        self.target |= other.target;
        self.target_extras |= other.target_extras;
        self.payload.union(&other.payload);
        self.producer_id |= other.producer_id;
        self.context |= other.context;
        self.context_extras |= other.context_extras;
        self.version |= other.version;
        self.quality |= other.quality;
        self.extras.union(&other.extras);
    }

    /// The record with only the projected parts (the value-level twin of
    /// [`decode_projected`]).
    pub fn apply(&self, record: &MetadataRecord) -> MetadataRecord {
        let text = |keep: bool, s: &String| if keep { s.clone() } else { String::new() };
        let object = |keys: &KeySet, map: &JsonObject| match keys {
            KeySet::All => map.clone(),
            KeySet::Nothing => JsonObject::new(),
            KeySet::Keys(_) => map
                .iter()
                .filter(|(k, _)| keys.keeps(k.as_bytes()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let all = |keep: bool, map: &JsonObject| {
            object(if keep { &KeySet::All } else { &KeySet::Nothing }, map)
        };
        let c = &record.context;
        let opt = |keep: bool, v: &Option<String>| if keep { v.clone() } else { None };
        MetadataRecord {
            kind: text(self.kind, &record.kind),
            target: MetadataTarget {
                source_id: text(self.target, &record.target.source_id),
                schema: text(self.target, &record.target.schema),
                table: text(self.target, &record.target.table),
                extras: all(self.target_extras, &record.target.extras),
            },
            payload: object(&self.payload, &record.payload),
            produced_at: record.produced_at,
            producer_id: text(self.producer_id, &record.producer_id),
            context: MetadataContext {
                job_id: opt(self.context, &c.job_id),
                run_id: opt(self.context, &c.run_id),
                namespace: opt(self.context, &c.namespace),
                extras: all(self.context_extras, &c.extras),
            },
            version: record.version.filter(|_| self.version),
            quality: record.quality.clone().filter(|_| self.quality),
            extras: object(&self.extras, &record.extras),
        }
    }
}

/// Decodes only the parts of a record `projection` names (see [`Projection`]);
/// equal to decoding the whole record, then [`Projection::apply`].
pub fn decode_projected(bytes: &[u8], projection: &Projection) -> Result<MetadataRecord> {
    let mut record = empty_record();
    decode_projected_into(bytes, projection, &mut record)?;
    Ok(record)
}

/// A record with every part empty (nothing allocated), to decode into.
pub fn empty_record() -> MetadataRecord {
    MetadataRecord {
        kind: String::new(),
        target: MetadataTarget::default(),
        payload: JsonObject::new(),
        produced_at: Timestamp::from_micros(0),
        producer_id: String::new(),
        context: MetadataContext::default(),
        version: None,
        quality: None,
        extras: JsonObject::new(),
    }
}

/// [`decode_projected`] into `record`, reusing its strings' and objects'
/// buffers, so a scan that decodes record after record into one place
/// allocates little. On success `record` equals what [`decode_projected`]
/// returns, whatever it held before; on error its content is unspecified.
pub fn decode_projected_into(
    bytes: &[u8],
    projection: &Projection,
    record: &mut MetadataRecord,
) -> Result<()> {
    let mut r = Reader { bytes, pos: 0 };
    if r.byte()? != RECORD_ENCODING_V1 {
        return Err(DecodeError("unknown record encoding version"));
    }
    let p = projection;
    let all_if = |keep: bool| if keep { &KeySet::All } else { &KeySet::Nothing };
    r.string_into(p.kind, &mut record.kind)?;
    let target = &mut record.target;
    r.string_into(p.target, &mut target.source_id)?;
    r.string_into(p.target, &mut target.schema)?;
    r.string_into(p.target, &mut target.table)?;
    r.object_into(all_if(p.target_extras), &mut target.extras)?;
    r.object_into(&p.payload, &mut record.payload)?;
    record.produced_at = Timestamp::from_micros(r.i64_le()?);
    if !p.reads_past_produced_at() {
        // Nothing after `produced_at` is asked for: the rest is not read
        // (a scan's `stats` of payload values skips most of each record so).
        record.producer_id.clear();
        let context = &mut record.context;
        (context.job_id, context.run_id, context.namespace) = (None, None, None);
        context.extras.clear();
        (record.version, record.quality) = (None, None);
        record.extras.clear();
        return Ok(());
    }
    r.string_into(p.producer_id, &mut record.producer_id)?;
    let context = &mut record.context;
    r.opt_string_into(p.context, &mut context.job_id)?;
    r.opt_string_into(p.context, &mut context.run_id)?;
    r.opt_string_into(p.context, &mut context.namespace)?;
    r.object_into(all_if(p.context_extras), &mut context.extras)?;
    record.version = match r.byte()? {
        0 => None,
        _ => Some(r.varint()?).filter(|_| p.version),
    };
    record.quality = match r.byte()? {
        0 => None,
        _ if p.quality => Some(r.value(0)?),
        _ => {
            r.skip_value(0)?;
            None
        }
    };
    r.object_into(&p.extras, &mut record.extras)?;
    if r.pos != bytes.len() {
        return Err(DecodeError("trailing bytes after record"));
    }
    Ok(())
}

/// A scalar read from encoded bytes, without allocating (strings borrowed).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum EncodedScalar<'a> {
    Bool(bool),
    Number(f64),
    Str(&'a str),
}

/// The object a path starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PathRoot {
    Payload,
    Extras,
    /// Any other root: no record has a value there.
    Other,
}

/// Calls `f` with each scalar at the path `root.segments...` (`payload.a.b`
/// or `extras.a`) of an encoded record: the value there, or each scalar
/// element of an array there; nothing for nulls, objects or a missing path.
/// Stops early when `f` returns true, and returns whether it did. The
/// byte-level twin of [`super::keys_at`].
pub(crate) fn any_scalar_at(
    bytes: &[u8],
    root: PathRoot,
    segments: &[String],
    mut f: impl FnMut(EncodedScalar<'_>) -> bool,
) -> Result<bool> {
    let in_payload = match root {
        PathRoot::Payload => true,
        PathRoot::Extras => false,
        PathRoot::Other => return Ok(false),
    };
    if segments.is_empty() {
        return Ok(false);
    }
    let mut r = Reader { bytes, pos: 0 };
    if r.byte()? != RECORD_ENCODING_V1 {
        return Err(DecodeError("unknown record encoding version"));
    }
    for _ in 0..4 {
        r.skip_string()?;
    }
    r.skip_object(0)?; // target.extras
    if !in_payload {
        r.skip_object(0)?; // payload
        r.take(8)?; // produced_at
        r.skip_string()?; // producer_id
        for _ in 0..3 {
            r.skip_opt_string()?;
        }
        r.skip_object(0)?; // context.extras
        if r.byte()? != 0 {
            r.varint()?;
        }
        if r.byte()? != 0 {
            r.skip_value(0)?;
        }
    }
    // At the root object; find each segment in turn (keys are sorted).
    let mut segments = segments.iter().peekable();
    let mut is_object = true; // the root is an object without a tag
    while let Some(segment) = segments.next() {
        if !is_object || !r.find_key(segment.as_bytes())? {
            return Ok(false);
        }
        if segments.peek().is_some() {
            is_object = r.byte()? == TAG_OBJECT;
        }
    }
    match r.byte()? {
        TAG_ARRAY => {
            let n = r.len()?;
            for _ in 0..n {
                if let Some(s) = r.scalar_or_skip()? {
                    if f(s) {
                        return Ok(true);
                    }
                }
            }
            Ok(false)
        }
        _ => {
            r.pos -= 1;
            Ok(r.scalar_or_skip()?.is_some_and(f))
        }
    }
}

/// The 128-bit content hash of an encoded record (xxh3-128), for duplicate detection.
pub fn content_hash(encoded: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(encoded)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

fn put_object(out: &mut Vec<u8>, map: &JsonObject) {
    put_varint(out, map.len() as u64);
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (key, value) in entries {
        put_str(out, key);
        put_value(out, value);
    }
}

fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(TAG_NULL),
        Value::Bool(false) => out.push(TAG_FALSE),
        Value::Bool(true) => out.push(TAG_TRUE),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push(TAG_INT);
                put_varint(out, ((i << 1) ^ (i >> 63)) as u64);
            } else if let Some(u) = n.as_u64() {
                out.push(TAG_UINT);
                put_varint(out, u);
            } else {
                out.push(TAG_FLOAT);
                out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_le_bytes());
            }
        }
        Value::String(s) => {
            out.push(TAG_STRING);
            put_str(out, s);
        }
        Value::Array(items) => {
            out.push(TAG_ARRAY);
            put_varint(out, items.len() as u64);
            for item in items {
                put_value(out, item);
            }
        }
        Value::Object(map) => {
            out.push(TAG_OBJECT);
            put_object(out, map);
        }
    }
}

/// `raw` as a string, or an error if it is not UTF-8. Nearly every stored
/// string (keys, names, ids, timestamps) is ASCII, which is checked a word at
/// a time inline; anything else gets the full check.
#[inline]
fn utf8(raw: &[u8]) -> Result<&str> {
    if raw.is_ascii() {
        // SAFETY: every ASCII byte sequence is valid UTF-8.
        Ok(unsafe { std::str::from_utf8_unchecked(raw) })
    } else {
        std::str::from_utf8(raw).map_err(|_| DecodeError("string is not UTF-8"))
    }
}

/// Nesting beyond this is corruption: records are validated to 64 levels.
const MAX_DECODE_DEPTH: usize = 128;

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or(DecodeError("record bytes end early"))?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(DecodeError("record bytes end early"))?;
        let bytes: &'a [u8] = self.bytes;
        let slice = &bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    #[inline]
    fn varint(&mut self) -> Result<u64> {
        // Most varints (lengths, small counts) are one byte.
        match self.bytes.get(self.pos) {
            Some(&b) if b < 0x80 => {
                self.pos += 1;
                Ok(u64::from(b))
            }
            _ => self.varint_long(),
        }
    }

    fn varint_long(&mut self) -> Result<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError("varint longer than 10 bytes"))
    }

    fn len(&mut self) -> Result<usize> {
        let n = self.varint()?;
        // A length can never exceed the bytes left; this also bounds allocations.
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.bytes.len() - self.pos)
            .ok_or(DecodeError("length beyond the end of the record"))
    }

    fn i64_le(&mut self) -> Result<i64> {
        let raw = self.take(8)?;
        let mut buf = [0u8; 8];
        buf.copy_from_slice(raw);
        Ok(i64::from_le_bytes(buf))
    }

    fn string(&mut self) -> Result<String> {
        self.str_ref().map(String::from)
    }

    fn str_ref(&mut self) -> Result<&'a str> {
        let n = self.len()?;
        utf8(self.take(n)?)
    }

    fn skip_string(&mut self) -> Result<()> {
        // `len` already checked that `n` bytes are left.
        let n = self.len()?;
        self.pos += n;
        Ok(())
    }

    fn skip_opt_string(&mut self) -> Result<()> {
        match self.byte()? {
            0 => Ok(()),
            _ => self.skip_string(),
        }
    }

    /// The string into `out` (its buffer reused), or skipped and `out` emptied.
    /// A scan decodes record after record into one place, and neighbours
    /// often share a string (a target's source and schema): when `out`
    /// already holds these bytes they are neither checked nor copied again.
    fn string_into(&mut self, keep: bool, out: &mut String) -> Result<()> {
        if !keep {
            out.clear();
            return self.skip_string();
        }
        let n = self.len()?;
        let raw = self.take(n)?;
        if out.as_bytes() != raw {
            let s = utf8(raw)?;
            if out.capacity() == 0 {
                // A fresh record (`decode_record`): one allocation of the exact size.
                *out = String::from(s);
            } else {
                out.clear();
                out.push_str(s);
            }
        }
        Ok(())
    }

    fn opt_string_into(&mut self, keep: bool, out: &mut Option<String>) -> Result<()> {
        if self.byte()? == 0 {
            *out = None;
            return Ok(());
        }
        if !keep {
            *out = None;
            return self.skip_string();
        }
        let s = self.str_ref()?;
        match out {
            Some(buf) => {
                buf.clear();
                buf.push_str(s);
            }
            None => *out = Some(s.to_owned()),
        }
        Ok(())
    }

    /// An object with only the keys of `keys` (the others skipped) into
    /// `map`, whose table is reused.
    fn object_into(&mut self, keys: &KeySet, map: &mut JsonObject) -> Result<()> {
        if let KeySet::Keys(_) = keys {
            // Records of a kind mostly have the same keys: when `map` holds
            // exactly the kept keys, in order, only the values are replaced
            // (no key is freed and allocated again).
            let start = self.pos;
            if !map.is_empty() && self.values_into_same_keys(keys, map)? {
                return Ok(());
            }
            self.pos = start;
        }
        if !map.is_empty() {
            map.clear();
        }
        match keys {
            KeySet::All => *map = self.object(0)?,
            KeySet::Nothing => self.skip_object(0)?,
            KeySet::Keys(_) => {
                let n = self.len()?;
                for _ in 0..n {
                    let key_len = self.len()?;
                    let key = self.take(key_len)?;
                    if keys.keeps(key) {
                        let key = utf8(key)?.to_owned();
                        let value = self.value(1)?;
                        map.insert(key, value);
                    } else {
                        self.skip_value(1)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The kept values of the object at hand into `map`'s entries, when its
    /// kept keys are exactly `map`'s keys in order; false (position and
    /// `map`'s values unspecified) when they are not.
    fn values_into_same_keys(&mut self, keys: &KeySet, map: &mut JsonObject) -> Result<bool> {
        let n = self.len()?;
        let mut entries = map.iter_mut();
        for _ in 0..n {
            let key_len = self.len()?;
            let key = self.take(key_len)?;
            if !keys.keeps(key) {
                self.skip_value(1)?;
                continue;
            }
            match entries.next() {
                Some((k, v)) if k.as_bytes() == key => *v = self.value(1)?,
                _ => return Ok(false),
            }
        }
        Ok(entries.next().is_none())
    }

    fn skip_object(&mut self, depth: usize) -> Result<()> {
        if depth > MAX_DECODE_DEPTH {
            return Err(DecodeError("value nested too deeply"));
        }
        let n = self.len()?;
        self.skip_items(n, true, depth + 1)
    }

    fn skip_value(&mut self, depth: usize) -> Result<()> {
        self.skip_items(1, false, depth)
    }

    /// Skips `n` values at `depth`, each after a key when `keyed` (an
    /// object's entries). Scalars are skipped in this loop, without a call
    /// each: skipping what a projection does not keep is most of a scan's
    /// decoding.
    fn skip_items(&mut self, n: usize, keyed: bool, depth: usize) -> Result<()> {
        for _ in 0..n {
            if keyed {
                self.skip_string()?;
            }
            if depth > MAX_DECODE_DEPTH {
                return Err(DecodeError("value nested too deeply"));
            }
            match self.byte()? {
                TAG_NULL | TAG_FALSE | TAG_TRUE => {}
                TAG_INT | TAG_UINT => {
                    self.varint()?;
                }
                TAG_FLOAT => {
                    self.take(8)?;
                }
                TAG_STRING => self.skip_string()?,
                TAG_ARRAY => {
                    let len = self.len()?;
                    self.skip_items(len, false, depth + 1)?;
                }
                TAG_OBJECT => self.skip_object(depth + 1)?,
                _ => return Err(DecodeError("unknown value tag")),
            }
        }
        Ok(())
    }

    /// In an object (at its entry count), moves to the value of `key` and
    /// returns true, or returns false when it has no such key. Keys are
    /// written sorted, so the search stops at the first greater key.
    fn find_key(&mut self, key: &[u8]) -> Result<bool> {
        let n = self.len()?;
        for _ in 0..n {
            let key_len = self.len()?;
            let found = self.take(key_len)?;
            // Most keys differ from the wanted one in their first byte:
            // decide on it without a call to compare the slices.
            let order = match (found.first(), key.first()) {
                (Some(a), Some(b)) if a != b => a.cmp(b),
                _ => found.cmp(key),
            };
            match order {
                std::cmp::Ordering::Equal => return Ok(true),
                std::cmp::Ordering::Greater => return Ok(false),
                std::cmp::Ordering::Less => self.skip_value(1)?,
            }
        }
        Ok(false)
    }

    /// The next value as a scalar, or `None` (skipped) for nulls, arrays and objects.
    fn scalar_or_skip(&mut self) -> Result<Option<EncodedScalar<'a>>> {
        let tag = self.byte()?;
        Ok(Some(match tag {
            TAG_FALSE => EncodedScalar::Bool(false),
            TAG_TRUE => EncodedScalar::Bool(true),
            TAG_INT => {
                let z = self.varint()?;
                EncodedScalar::Number((((z >> 1) as i64) ^ -((z & 1) as i64)) as f64)
            }
            TAG_UINT => EncodedScalar::Number(self.varint()? as f64),
            TAG_FLOAT => {
                let raw = self.take(8)?;
                let mut buf = [0u8; 8];
                buf.copy_from_slice(raw);
                let f = f64::from_le_bytes(buf);
                if !f.is_finite() {
                    return Err(DecodeError("non-finite number"));
                }
                EncodedScalar::Number(f)
            }
            TAG_STRING => EncodedScalar::Str(self.str_ref()?),
            TAG_NULL | TAG_ARRAY | TAG_OBJECT => {
                self.pos -= 1;
                self.skip_value(1)?;
                return Ok(None);
            }
            _ => return Err(DecodeError("unknown value tag")),
        }))
    }

    fn object(&mut self, depth: usize) -> Result<JsonObject> {
        if depth > MAX_DECODE_DEPTH {
            return Err(DecodeError("value nested too deeply"));
        }
        let n = self.len()?;
        let mut map = Map::with_capacity(n);
        for _ in 0..n {
            let key = self.string()?;
            let value = self.value(depth + 1)?;
            map.insert(key, value);
        }
        Ok(map)
    }

    fn value(&mut self, depth: usize) -> Result<Value> {
        if depth > MAX_DECODE_DEPTH {
            return Err(DecodeError("value nested too deeply"));
        }
        Ok(match self.byte()? {
            TAG_NULL => Value::Null,
            TAG_FALSE => Value::Bool(false),
            TAG_TRUE => Value::Bool(true),
            TAG_INT => {
                let z = self.varint()?;
                Value::from(((z >> 1) as i64) ^ -((z & 1) as i64))
            }
            TAG_UINT => Value::from(self.varint()?),
            TAG_FLOAT => {
                let raw = self.take(8)?;
                let mut buf = [0u8; 8];
                buf.copy_from_slice(raw);
                let f = f64::from_le_bytes(buf);
                Value::Number(Number::from_f64(f).ok_or(DecodeError("non-finite number"))?)
            }
            TAG_STRING => Value::String(self.string()?),
            TAG_ARRAY => {
                let n = self.len()?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Value::Array(items)
            }
            TAG_OBJECT => Value::Object(self.object(depth + 1)?),
            _ => return Err(DecodeError("unknown value tag")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str) {
        let record = MetadataRecord::from_json_str(json).unwrap();
        let bytes = encode_record(&record);
        assert_eq!(decode_record(&bytes).unwrap(), record);
        // Truncations never panic and never decode.
        for cut in 0..bytes.len() {
            assert!(decode_record(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn round_trips() {
        check(
            r#"{"kind":"k","target":{"table":"t"},"payload":{},"produced_at":"2024-01-10T05:00:00Z","producer_id":"p"}"#,
        );
        check(
            r#"{"kind":"ingestion_volume","target":{"source_id":"o","schema":"s","table":"t","extras":{"p":"x"}},
               "payload":{"rows":-5,"big":18446744073709551615,"f":1.5,"n":null,"b":[true,false,{"z":"ü"}]},
               "produced_at":"1969-12-31T23:59:59.999999Z","producer_id":"p",
               "context":{"job_id":"j","run_id":"r","namespace":"n","extras":{"tenant":"acme"}},
               "version":3,"quality":0.5,"extras":{"window_start":"2024-01-01T00:00:00Z","window_end":"2024-01-02T00:00:00Z"}}"#,
        );
    }

    #[test]
    fn a_place_reused_record_after_record_decodes_each_afresh() {
        // Neighbours that share strings and kept keys (decoded over what is
        // there) and that do not (rebuilt), in turn.
        let payloads = [
            r#"{"a":1,"b":2,"c":3}"#,
            r#"{"a":5,"b":"x","c":7}"#,
            r#"{"a":1,"c":3}"#,
            r#"{"a":[1,{"x":2}],"b":null}"#,
            r#"{"b":2,"c":3}"#,
            r#"{"a":1,"b":2,"d":4}"#,
            r#"{}"#,
            r#"{"a":{"n":1},"b":-2}"#,
        ];
        let tables = ["t", "t", "u", "t", "ü", "ü", "t", "t"];
        let mut projection = Projection {
            target: true,
            ..Projection::default()
        };
        projection.payload.add(Some("a"));
        projection.payload.add(Some("b"));
        let mut place = empty_record();
        for round in 0..2 {
            for (payload, table) in payloads.iter().zip(tables) {
                let json = format!(
                    r#"{{"kind":"k","target":{{"source_id":"s{round}","schema":"sc","table":"{table}"}},"payload":{payload},"produced_at":"2024-01-10T05:00:00Z","producer_id":"p"}}"#
                );
                let bytes = encode_record(&MetadataRecord::from_json_str(&json).unwrap());
                decode_projected_into(&bytes, &projection, &mut place).unwrap();
                let fresh = decode_projected(&bytes, &projection).unwrap();
                assert_eq!(place, fresh, "{payload}");
                // Maps compare without order; the order is part of the answer.
                let keys = |r: &MetadataRecord| r.payload.keys().cloned().collect::<Vec<_>>();
                assert_eq!(keys(&place), keys(&fresh), "{payload}");
            }
        }
    }

    #[test]
    fn key_order_does_not_change_the_bytes() {
        let a = r#"{"kind":"k","target":{"table":"t"},"payload":{"a":1,"b":2},"produced_at":"2024-01-10T05:00:00Z","producer_id":"p"}"#;
        let b = r#"{"producer_id":"p","kind":"k","target":{"table":"t"},"payload":{"b":2,"a":1},"produced_at":"2024-01-10T07:00:00+02:00"}"#;
        let ea = encode_record(&MetadataRecord::from_json_str(a).unwrap());
        let eb = encode_record(&MetadataRecord::from_json_str(b).unwrap());
        assert_eq!(ea, eb);
        assert_eq!(content_hash(&ea), content_hash(&eb));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode_record(&[]).is_err());
        assert!(decode_record(&[9, 1, 2]).is_err());
        assert!(decode_record(&[
            1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
        ])
        .is_err());
    }

    #[test]
    fn strings_that_are_not_utf8_are_an_error() {
        let record = MetadataRecord::from_json_str(
            r#"{"kind":"k","target":{"table":"t"},"payload":{"é":"ü"},"produced_at":"2024-01-10T05:00:00Z","producer_id":"p"}"#,
        )
        .unwrap();
        let bytes = encode_record(&record);
        let not_utf8 = Err(DecodeError("string is not UTF-8"));
        // An ASCII string (the kind, at offset 2) with a byte that is not ASCII.
        for bad in [0x80, 0xc3, 0xff] {
            let mut b = bytes.clone();
            assert_eq!(b[2], b'k');
            b[2] = bad;
            assert_eq!(decode_record(&b), not_utf8, "{bad:#x}");
        }
        // A non-ASCII key and value whose continuation byte is broken.
        for (i, pair) in bytes.windows(2).enumerate() {
            if pair == "é".as_bytes() || pair == "ü".as_bytes() {
                let mut b = bytes.clone();
                b[i + 1] = b'A';
                assert_eq!(decode_record(&b), not_utf8);
            }
            if pair == "ü".as_bytes() {
                // The value of a projected key.
                let mut b = bytes.clone();
                b[i + 1] = b'A';
                let projection = Projection {
                    payload: KeySet::Keys(vec!["é".into()]),
                    ..Projection::default()
                };
                assert_eq!(decode_projected(&b, &projection), not_utf8);
            }
        }
    }

    mod fast_path {
        //! The one decoder round-trips any record, whatever its strings, and
        //! damaged bytes give errors, never panics.
        use proptest::prelude::*;
        use serde_json::Value;

        use super::super::*;

        fn text() -> impl Strategy<Value = String> {
            prop_oneof!["[a-z_.]{0,12}", any::<String>(), "[ü😀é\\x00\"]{0,4}"]
        }

        fn value() -> impl Strategy<Value = Value> {
            let scalar = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(Value::from),
                text().prop_map(Value::String),
            ];
            scalar.prop_recursive(3, 16, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::vec((text(), inner), 0..4)
                        .prop_map(|entries| Value::Object(entries.into_iter().collect())),
                ]
            })
        }

        fn object() -> impl Strategy<Value = JsonObject> {
            prop::collection::vec((text(), value()), 0..5)
                .prop_map(|entries| entries.into_iter().collect())
        }

        fn record() -> impl Strategy<Value = MetadataRecord> {
            let names = (text(), text(), text(), text(), text());
            let context = (
                prop::option::of(text()),
                prop::option::of(text()),
                prop::option::of(text()),
                object(),
            );
            let objects = (object(), object(), object());
            let rest = (
                any::<i64>(),
                prop::option::of(any::<u64>()),
                prop::option::of(value()),
            );
            (names, context, objects, rest).prop_map(
                |(
                    (kind, source_id, schema, table, producer_id),
                    (job_id, run_id, namespace, context_extras),
                    (target_extras, payload, extras),
                    (at, version, quality),
                )| MetadataRecord {
                    kind,
                    target: MetadataTarget {
                        source_id,
                        schema,
                        table,
                        extras: target_extras,
                    },
                    payload,
                    produced_at: Timestamp::from_micros(at),
                    producer_id,
                    context: MetadataContext {
                        job_id,
                        run_id,
                        namespace,
                        extras: context_extras,
                    },
                    version,
                    quality,
                    extras,
                },
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn any_record_round_trips(record in record()) {
                let bytes = encode_record(&record);
                prop_assert_eq!(&decode_record(&bytes).unwrap(), &record);
                let mut place = empty_record();
                decode_projected_into(&bytes, &Projection::ALL, &mut place).unwrap();
                prop_assert_eq!(place, record);
            }

            #[test]
            fn damaged_bytes_never_panic(
                record in record(),
                damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            ) {
                let mut bytes = encode_record(&record);
                for (at, byte) in damage {
                    let i = at.index(bytes.len());
                    bytes[i] = byte;
                }
                // An error, or another record if the damage left valid bytes.
                let _ = decode_record(&bytes);
                let _ = decode_projected(&bytes, &Projection::default());
            }
        }
    }

    mod lazy {
        //! Lazy decoding equals full decoding: projections, and path
        //! constraints tested on the bytes.
        use proptest::prelude::*;
        use serde_json::json;

        use super::super::*;
        use crate::storage::path_index::KeyTest;
        use crate::storage::{IndexValue, PathConstraint, PathMatch};

        /// Keys drawn from a small set, so paths often exist.
        const KEYS: [&str; 6] = ["rows", "a", "b", "outcome", "z", "ts"];

        fn scalar() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                (-3i64..3).prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                prop_oneof![
                    Just(0.0f64),
                    Just(-0.0),
                    Just(1.0),
                    Just(-1.5),
                    Just(5e7),
                    Just(1e300),
                    any::<f64>().prop_filter("finite", |f| f.is_finite()),
                ]
                .prop_map(|f| json!(f)),
                prop_oneof![
                    Just("1"),
                    Just("-0.0"),
                    Just("50000001"),
                    Just("true"),
                    Just("2024-01-10T05:00:00Z"),
                    Just("2024-01-10T07:00:00+02:00"),
                    Just("pass"),
                    Just(""),
                ]
                .prop_map(Value::from),
            ]
        }

        fn value() -> impl Strategy<Value = Value> {
            scalar().prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::vec((prop::sample::select(&KEYS[..]), inner), 0..4).prop_map(
                        |entries| Value::Object(
                            entries
                                .into_iter()
                                .map(|(k, v)| (k.to_owned(), v))
                                .collect()
                        )
                    ),
                ]
            })
        }

        fn object() -> impl Strategy<Value = JsonObject> {
            prop::collection::vec((prop::sample::select(&KEYS[..]), value()), 0..5).prop_map(
                |entries| {
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect()
                },
            )
        }

        fn record() -> impl Strategy<Value = MetadataRecord> {
            (
                object(),
                object(),
                object(),
                prop::option::of(value()),
                prop::option::of(any::<u64>()),
                prop::option::of("[a-z]{0,3}"),
                any::<i64>(),
            )
                .prop_map(
                    |(payload, extras, target_extras, quality, version, run_id, at)| {
                        MetadataRecord {
                            kind: "k".into(),
                            target: MetadataTarget {
                                source_id: "src".into(),
                                schema: "s".into(),
                                table: "t".into(),
                                extras: target_extras,
                            },
                            payload,
                            produced_at: Timestamp::from_micros(at),
                            producer_id: "p".into(),
                            context: MetadataContext {
                                job_id: Some("j".into()),
                                run_id,
                                namespace: None,
                                extras: JsonObject::new(),
                            },
                            version,
                            quality,
                            extras,
                        }
                    },
                )
        }

        fn key_set() -> impl Strategy<Value = KeySet> {
            prop_oneof![
                Just(KeySet::Nothing),
                Just(KeySet::All),
                prop::collection::vec(prop::sample::select(&KEYS[..]), 1..3)
                    .prop_map(|k| KeySet::Keys(k.into_iter().map(str::to_owned).collect())),
            ]
        }

        fn projection() -> impl Strategy<Value = Projection> {
            (any::<[bool; 8]>(), key_set(), key_set()).prop_map(|(b, payload, extras)| Projection {
                kind: b[0],
                target: b[1],
                target_extras: b[2],
                payload,
                producer_id: b[3],
                context: b[4],
                context_extras: b[5],
                version: b[6],
                quality: b[7],
                extras,
            })
        }

        fn index_value() -> impl Strategy<Value = IndexValue> {
            prop_oneof![
                any::<bool>().prop_map(IndexValue::Bool),
                prop_oneof![
                    Just(0.0f64),
                    Just(-0.0),
                    Just(1.0),
                    Just(-1.5),
                    Just(5e7),
                    (-3i64..3).prop_map(|i| i as f64),
                    any::<f64>().prop_filter("finite", |f| f.is_finite()),
                ]
                .prop_map(IndexValue::Number),
                prop_oneof![
                    Just("1"),
                    Just("pass"),
                    Just("true"),
                    Just("2024-01-10T05:00:00Z")
                ]
                .prop_map(IndexValue::from_str_value),
            ]
        }

        fn constraint() -> impl Strategy<Value = PathConstraint> {
            let path = (
                prop::sample::select(&["payload", "extras", "context", "target"][..]),
                prop::collection::vec(prop::sample::select(&KEYS[..]), 0..3),
            )
                .prop_map(|(root, segments)| {
                    std::iter::once(root)
                        .chain(segments)
                        .collect::<Vec<_>>()
                        .join(".")
                });
            let bound = || prop::option::of((index_value(), any::<bool>()));
            let matcher = prop_oneof![
                prop::collection::vec(index_value(), 0..3).prop_map(PathMatch::AnyOf),
                (bound(), bound()).prop_map(|(lower, upper)| PathMatch::Range { lower, upper }),
            ];
            (path, matcher).prop_map(|(path, matcher)| PathConstraint { path, matcher })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn projected_decoding_equals_decoding_then_projecting(
                record in record(),
                projection in projection(),
            ) {
                let bytes = encode_record(&record);
                let lazy = decode_projected(&bytes, &projection).unwrap();
                prop_assert_eq!(&lazy, &projection.apply(&decode_record(&bytes).unwrap()));
                prop_assert_eq!(decode_projected(&bytes, &Projection::all()).unwrap(), record);
                // Truncations are errors, never panics; a projection that
                // stops at `produced_at` may not read as far as the cut, and
                // then gives its whole answer.
                for cut in 0..bytes.len() {
                    prop_assert!(decode_projected(&bytes[..cut], &Projection::all()).is_err());
                    match decode_projected(&bytes[..cut], &projection) {
                        Err(_) => {}
                        Ok(got) => {
                            prop_assert!(!projection.reads_past_produced_at());
                            prop_assert_eq!(&got, &lazy);
                        }
                    }
                }
            }

            #[test]
            fn decoding_into_a_used_record_equals_decoding_afresh(
                first in record(),
                second in record(),
                projection in projection(),
            ) {
                // The buffers of whatever the place held before never show.
                let mut place = first;
                let bytes = encode_record(&second);
                decode_projected_into(&bytes, &projection, &mut place).unwrap();
                prop_assert_eq!(&place, &decode_projected(&bytes, &projection).unwrap());
                decode_projected_into(&bytes, &Projection::all(), &mut place).unwrap();
                prop_assert_eq!(place, second);
            }

            #[test]
            fn byte_level_constraint_equals_value_level(
                record in record(),
                constraint in constraint(),
            ) {
                let bytes = encode_record(&record);
                let test = KeyTest::new(&constraint);
                prop_assert_eq!(
                    test.matches_encoded(&bytes).unwrap(),
                    constraint.matches(&record)
                );
                for cut in 0..bytes.len() {
                    // A truncated record may still be tested (the path may
                    // lie before the cut), but never panics.
                    let _ = test.matches_encoded(&bytes[..cut]);
                }
            }
        }

        fn check(payload: Value, constraint: &str, matcher: PathMatch, expected: bool) {
            let Value::Object(payload) = payload else {
                panic!("payload must be an object")
            };
            let mut record = MetadataRecord::from_json_str(
                r#"{"kind":"k","target":{"table":"t"},"payload":{},"produced_at":"2024-01-10T05:00:00Z","producer_id":"p"}"#,
            )
            .unwrap();
            record.payload = payload;
            let c = PathConstraint {
                path: constraint.into(),
                matcher,
            };
            assert_eq!(c.matches(&record), expected, "value level: {c:?}");
            let bytes = encode_record(&record);
            assert_eq!(
                KeyTest::new(&c).matches_encoded(&bytes).unwrap(),
                expected,
                "byte level: {c:?}"
            );
        }

        fn at_least(x: f64) -> PathMatch {
            PathMatch::Range {
                lower: Some((IndexValue::Number(x), true)),
                upper: None,
            }
        }

        #[test]
        fn edge_cases() {
            // ints, uints and floats compare as numbers
            check(
                json!({"rows": 50000001}),
                "payload.rows",
                at_least(5e7),
                true,
            );
            check(json!({"rows": 5e7}), "payload.rows", at_least(5e7), true);
            check(
                json!({"rows": 49999999.5}),
                "payload.rows",
                at_least(5e7),
                false,
            );
            check(
                json!({"rows": u64::MAX}),
                "payload.rows",
                at_least(5e7),
                true,
            );
            check(json!({"rows": -1}), "payload.rows", at_least(0.0), false);
            // -0.0 is 0
            check(json!({"rows": -0.0}), "payload.rows", at_least(0.0), true);
            check(
                json!({"rows": -0.0}),
                "payload.rows",
                PathMatch::AnyOf(vec![IndexValue::Number(0.0)]),
                true,
            );
            // strings that look like numbers are strings
            check(
                json!({"rows": "60000000"}),
                "payload.rows",
                at_least(5e7),
                false,
            );
            // missing paths, nested objects, arrays
            check(json!({"row": 6e7}), "payload.rows", at_least(5e7), false);
            check(
                json!({"a": {"rows": 6e7}}),
                "payload.a.rows",
                at_least(5e7),
                true,
            );
            check(
                json!({"a": [{"rows": 6e7}]}),
                "payload.a.rows",
                at_least(5e7),
                false,
            );
            check(
                json!({"a": [1, [6e7], 6e7]}),
                "payload.a",
                at_least(5e7),
                true,
            );
            check(
                json!({"a": {"rows": 6e7}}),
                "payload.a",
                at_least(5e7),
                false,
            );
            check(json!({"rows": null}), "payload.rows", at_least(5e7), false);
            check(json!({"rows": 6e7}), "payload", at_least(5e7), false);
            check(json!({"rows": 6e7}), "extras.rows", at_least(5e7), false);
            // instants written differently are one instant
            check(
                json!({"ts": "2024-01-10T07:00:00+02:00"}),
                "payload.ts",
                PathMatch::AnyOf(vec![IndexValue::from_str_value("2024-01-10T05:00:00Z")]),
                true,
            );
        }
    }
}
