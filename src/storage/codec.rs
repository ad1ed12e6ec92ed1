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

/// Decodes a record encoded by [`encode_record`].
pub fn decode_record(bytes: &[u8]) -> Result<MetadataRecord> {
    let mut r = Reader { bytes, pos: 0 };
    if r.byte()? != RECORD_ENCODING_V1 {
        return Err(DecodeError("unknown record encoding version"));
    }
    let kind = r.string()?;
    let target = MetadataTarget {
        source_id: r.string()?,
        schema: r.string()?,
        table: r.string()?,
        extras: r.object(0)?,
    };
    let payload = r.object(0)?;
    let produced_at = Timestamp::from_micros(r.i64_le()?);
    let producer_id = r.string()?;
    let context = MetadataContext {
        job_id: r.opt_string()?,
        run_id: r.opt_string()?,
        namespace: r.opt_string()?,
        extras: r.object(0)?,
    };
    let version = match r.byte()? {
        0 => None,
        _ => Some(r.varint()?),
    };
    let quality = match r.byte()? {
        0 => None,
        _ => Some(r.value(0)?),
    };
    let extras = r.object(0)?;
    if r.pos != bytes.len() {
        return Err(DecodeError("trailing bytes after record"));
    }
    Ok(MetadataRecord {
        kind,
        target,
        payload,
        produced_at,
        producer_id,
        context,
        version,
        quality,
        extras,
    })
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

/// Nesting beyond this is corruption: records are validated to 64 levels.
const MAX_DECODE_DEPTH: usize = 128;

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or(DecodeError("record bytes end early"))?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(DecodeError("record bytes end early"))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn varint(&mut self) -> Result<u64> {
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
        let n = self.len()?;
        let raw = self.take(n)?;
        String::from_utf8(raw.to_vec()).map_err(|_| DecodeError("string is not UTF-8"))
    }

    fn opt_string(&mut self) -> Result<Option<String>> {
        match self.byte()? {
            0 => Ok(None),
            _ => self.string().map(Some),
        }
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
}
