//! One test per fixed bug, named after what broke.

mod common;

use almanac::query::{Params, ScanRequest};
use almanac::{MetadataRecord, MetadataRepository, Store, StoredRecord};
use common::*;

/// A batch of one invalid record reported no batch index (it was treated as
/// a single `store`), so importers could not name the line.
#[test]
fn bulk_store_of_one_invalid_record_names_index_zero() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut bad = volume(1, 1, 1);
    bad.producer_id.clear();
    let err = store.bulk_store(&[bad.clone()]).unwrap_err();
    assert_eq!(err.record_index(), Some(0));
    let err = store.store(&bad).unwrap_err();
    assert_eq!(err.record_index(), None);
}

/// The log kept the producer's key order while records read back from the
/// store came out sorted, so `tail` and `export` printed different JSON.
#[test]
fn log_and_store_show_the_same_json() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let record = MetadataRecord::from_json_str(
        r#"{"kind":"ingestion_volume","target":{"table":"t","extras":{"z":1,"a":2}},
            "payload":{"rows":5,"bytes":9,"nested":{"y":[{"b":1,"a":2}],"x":0}},
            "produced_at":"2024-01-10T07:00:00+02:00","producer_id":"p",
            "context":{"extras":{"tenant":"acme","cluster":"eu"}},"extras":{"zz":1,"aa":2}}"#,
    )
    .unwrap();
    store.store(&record).unwrap();
    let logged = store.tail(1).unwrap();
    let scanned: Vec<StoredRecord> = store
        .scan(&ScanRequest::default())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(logged[0].to_json_string(), scanned[0].to_json_string());
    let line = std::fs::read_to_string(
        almanac::storage::log::segments(&dir.path().join("log")).unwrap()[0]
            .path
            .clone(),
    )
    .unwrap();
    assert_eq!(line.trim_end(), scanned[0].to_json_string());
    assert!(
        line.contains(r#""payload":{"bytes":9,"nested":{"x":0,"y":[{"a":2,"b":1}]},"rows":5}"#),
        "{line}"
    );
    let out = store.query("ingestion_volume", &Params::new()).unwrap();
    assert_eq!(out.rows.len(), 1);
}

/// The path index keyed `-0.0` below `0.0`, so an indexed `rows >= 0` or
/// `rows = 0` missed a record whose rows were `-0.0` (which equals 0).
#[test]
fn negative_zero_is_found_by_indexed_zero_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .add_indexed_path("ingestion_volume", "payload.rows")
        .unwrap();
    let mut negative_zero = volume(1, 1, 0);
    negative_zero
        .payload
        .insert("rows".into(), serde_json::json!(-0.0));
    let ids = store
        .bulk_store(&[negative_zero, volume(2, 2, 0), volume(3, 3, 5)])
        .unwrap()
        .ids;
    for (query, n_found) in [
        ("ingestion_volume | where payload.rows >= 0", 3),
        ("ingestion_volume | where payload.rows = 0", 2),
        ("ingestion_volume | where payload.rows <= 0", 2),
    ] {
        let found: Vec<u64> = store
            .query(query, &Params::new())
            .unwrap()
            .rows
            .into_iter()
            .filter_map(|row| match row {
                almanac::query::Row::Record { record, .. } => Some(record.id),
                almanac::query::Row::Values(_) => None,
            })
            .collect();
        assert_eq!(found, ids[..n_found], "{query}");
    }
}
