//! Helpers shared by the integration tests.
#![allow(dead_code)]

use almanac::model::JsonObject;
use almanac::{MetadataRecord, MetadataTarget, Timestamp};
use serde_json::json;

/// 2024-03-01T00:00:00Z.
pub const BASE: i64 = 1_709_251_200_000_000;
pub const HOUR: i64 = 3_600_000_000;
pub const DAY: i64 = 24 * HOUR;

pub fn ts(micros: i64) -> Timestamp {
    Timestamp::from_micros(micros)
}

pub fn target(i: usize) -> MetadataTarget {
    MetadataTarget::new("src", "sch", &format!("t{i}"))
}

pub fn object(value: serde_json::Value) -> JsonObject {
    match value {
        serde_json::Value::Object(map) => map,
        _ => JsonObject::new(),
    }
}

/// An `ingestion_volume` record for target `t`, `hours` after BASE.
pub fn volume(t: usize, hours: i64, rows: i64) -> MetadataRecord {
    MetadataRecord::new(
        "ingestion_volume",
        target(t),
        object(json!({ "rows": rows })),
        ts(BASE + hours * HOUR),
        "ingestion.v1",
    )
}

/// Registers `heartbeat`, a short-lived kind kept `days` days.
pub fn register_heartbeat(store: &almanac::Store, days: u32) {
    let mut spec = almanac::kinds::KindSpec::new("heartbeat", "a short-lived kind");
    spec.retention = almanac::kinds::Retention::Days(days);
    store.register_kind(spec).unwrap();
}
