//! One test per fixed bug, named after what broke.

mod common;

use almanac::query::{Params, ScanRequest};
use almanac::{MetadataRecord, MetadataRepository, Store, StoredRecord};
use common::*;
use serde_json::json;

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
        assert_eq!(ids_of(&store, query), ids[..n_found], "{query}");
    }
}

/// The ids of a query's record rows.
fn record_ids(store: &Store, query: &str, params: &Params) -> Result<Vec<u64>, almanac::Error> {
    Ok(store
        .query(query, params)?
        .rows
        .into_iter()
        .filter_map(|row| match row {
            almanac::query::Row::Record { record, .. } => Some(record.id),
            almanac::query::Row::Values(_) => None,
        })
        .collect())
}

/// [`record_ids`] without parameters; a failed query fails the test.
fn ids_of(store: &Store, query: &str) -> Vec<u64> {
    record_ids(store, query, &Params::new()).unwrap_or_else(|e| panic!("{query}: {e}"))
}

/// `x in (y)` was true on rows where both were null: a candidate that was
/// null on the row was taken for a written `null`, so `in` disagreed with
/// `x = y` (spec: every comparison with null is false except `x = null`).
#[test]
fn in_tests_for_null_only_where_null_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut with_x = volume(1, 2, 5);
    with_x.payload.insert("x".into(), serde_json::json!(5));
    let ids = store.bulk_store(&[volume(1, 1, 7), with_x]).unwrap().ids;
    for (query, expected) in [
        ("ingestion_volume | where payload.x in (payload.y)", vec![]),
        ("ingestion_volume | where payload.x = payload.y", vec![]),
        ("ingestion_volume | where payload.x in (null)", vec![ids[0]]),
        (
            "ingestion_volume | where payload.x in (null, 5)",
            vec![ids[0], ids[1]],
        ),
        (
            "ingestion_volume | where payload.x in (payload.y, 5)",
            vec![ids[1]],
        ),
        (
            "ingestion_volume | where not (payload.x in (null))",
            vec![ids[1]],
        ),
    ] {
        assert_eq!(ids_of(&store, query), expected, "{query}");
    }
    let mut params = Params::new();
    params.insert("v", almanac::query::ast::Literal::Null);
    let bound = record_ids(
        &store,
        "ingestion_volume | where payload.x in ($v)",
        &params,
    )
    .unwrap();
    assert_eq!(bound, vec![ids[0]], "a parameter bound to null");
}

/// `{run_id=""}` matched nothing: the equality went to the by-run index,
/// which has no entry for a record without a run id, while a missing label
/// reads as `""` (`{run_id=~""}` and `{job_id=""}` matched such records).
#[test]
fn an_empty_run_id_matches_records_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut with_run = volume(1, 2, 7);
    with_run.context.run_id = Some("r1".into());
    let ids = store.bulk_store(&[volume(1, 1, 5), with_run]).unwrap().ids;
    for query in [
        r#"ingestion_volume{run_id=""}"#,
        r#"ingestion_volume{run_id=~""}"#,
        r#"ingestion_volume{run_id!="r1"}"#,
    ] {
        assert_eq!(ids_of(&store, query), vec![ids[0]], "{query}");
    }
    assert_eq!(
        ids_of(&store, r#"ingestion_volume{run_id="r1"}"#),
        vec![ids[1]]
    );
}

/// A bare date in the data (`"2024-01-01"`) compared equal to the instant
/// `2024-01-01` row by row but not in the storage filter, so the answer
/// depended on how the query was written. The spec reads the string as
/// RFC 3339: a bare date is not a timestamp and compares false either way.
#[test]
fn a_bare_date_string_is_not_an_instant_wherever_the_filter_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut dated = volume(1, 1, 5);
    dated
        .payload
        .insert("d".into(), serde_json::json!("2024-01-01"));
    let mut timestamped = volume(2, 1, 5);
    timestamped
        .payload
        .insert("d".into(), serde_json::json!("2024-01-01T00:00:00Z"));
    let ids = store.bulk_store(&[dated, timestamped]).unwrap().ids;
    for query in [
        "ingestion_volume | where payload.d = 2024-01-01",
        "ingestion_volume | where payload.d = 2024-01-01 or false",
        "ingestion_volume | where payload.d >= 2024-01-01",
        "ingestion_volume | where not (payload.d < 2024-01-01) and exists(payload.d) and payload.d != \"2024-01-01\"",
    ] {
        assert_eq!(ids_of(&store, query), vec![ids[1]], "{query}");
    }
    assert_eq!(
        ids_of(
            &store,
            r#"ingestion_volume | where payload.d = "2024-01-01""#
        ),
        vec![ids[0]]
    );
}

/// `--param t=2024` bound the integer 2024, and `{table=$t}` refused it
/// (labels match strings), so a table named `2024` needed `t="2024"`. A
/// binding read from text now matches a label as written.
#[test]
fn a_numeric_looking_binding_matches_a_label_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut numbered = volume(1, 1, 5);
    numbered.target.table = "2024".into();
    let mut padded = volume(1, 2, 5);
    padded.target.table = "007".into();
    let ids = store
        .bulk_store(&[numbered, padded, volume(2, 3, 5)])
        .unwrap()
        .ids;
    let found = |params: &Params| {
        record_ids(
            &store,
            "ingestion_volume{table=$t} | where payload.rows = $t or true",
            params,
        )
    };
    for (binding, expected) in [
        ("t=2024", ids[0]),
        ("t=007", ids[1]),
        ("t=\"2024\"", ids[0]),
    ] {
        let mut params = Params::new();
        params.insert_binding(binding).unwrap();
        assert_eq!(found(&params).unwrap(), [expected], "{binding}");
    }
    // Bound in code, an integer is an integer: refused for a label.
    let mut params = Params::new();
    params.insert_int("t", 2024);
    let err = found(&params).unwrap_err().to_string();
    assert!(err.contains("label `table` matches strings"), "{err}");
}

/// A kind registered without a schema had no schema version at all, so a
/// record of it naming `"version": 1` was refused (spec §1a: every kind
/// has a payload schema, which `version` names). It now gets version 1,
/// any object.
#[test]
fn a_kind_registered_without_a_schema_refused_version_1() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .register_kind(almanac::kinds::KindSpec::new("bare", "no schema given"))
        .unwrap();
    assert_eq!(
        store.kind("bare").unwrap().schemas,
        vec![json!({"type": "object"})]
    );
    let mut record = volume(1, 1, 5);
    record.kind = "bare".into();
    record.payload.insert("anything".into(), json!([1, "x"]));
    for version in [None, Some(1)] {
        record.version = version;
        record.producer_id = format!("p{version:?}");
        store.store(&record).unwrap();
    }
    record.version = Some(2);
    let error = store.store(&record).unwrap_err().to_string();
    assert!(
        error.contains("version") && error.contains("only version 1"),
        "{error}"
    );
}

/// An integer beyond u64 was read as the nearest float: the value written
/// back changed, and two records differing only there were one record.
#[test]
fn integers_beyond_u64_were_rounded_and_merged_as_duplicates() {
    let text = |n: &str| {
        format!(
            r#"{{"kind":"k","target":{{"table":"t"}},"payload":{{"n":{n}}},"produced_at":"2024-01-10T05:00:00Z","producer_id":"p"}}"#
        )
    };
    let error = MetadataRecord::from_json_str(&text("123456789012345678901")).unwrap_err();
    assert_eq!(error.field, "payload.n");
    assert!(MetadataRecord::from_json_str(&text("18446744073709551615")).is_ok());
    assert!(MetadataRecord::from_json_str(&text("1.2345678901234568e20")).is_ok());
}

/// `produced_at` took a space for `T` and a second of 60 at any minute,
/// which `payload.watermark` (JSON Schema `date-time`) refused; and window
/// ends 100 ns apart in the wrong order passed, being compared in µs.
#[test]
fn record_timestamps_followed_a_looser_rule_than_the_watermark() {
    let with = |produced_at: &str, window: (&str, &str)| {
        MetadataRecord::from_json_str(&format!(
            r#"{{"kind":"k","target":{{"table":"t"}},"payload":{{}},"produced_at":"{produced_at}","producer_id":"p","extras":{{"window_start":"{}","window_end":"{}"}}}}"#,
            window.0, window.1
        ))
        .map_err(|e| e.field)
    };
    let day = ("2024-01-09T00:00:00Z", "2024-01-10T00:00:00Z");
    assert!(with("2024-01-10T05:00:00Z", day).is_ok());
    for bad in ["2024-01-10 05:00:00Z", "2024-01-10T05:00:60Z"] {
        assert_eq!(with(bad, day).unwrap_err(), "produced_at");
    }
    let reversed = (
        "2024-01-10T00:00:00.0000002Z",
        "2024-01-10T00:00:00.0000001Z",
    );
    assert_eq!(
        with("2024-01-10T05:00:00Z", reversed).unwrap_err(),
        "extras.window_start"
    );
}

/// After a `select` that kept `produced_at`, `latest` kept the row that
/// came last, not the newest: rows of columns were ordered by arrival.
#[test]
fn latest_after_select_kept_the_last_row_to_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .bulk_store(&[volume(1, 1, 10), volume(1, 3, 30), volume(1, 2, 20)])
        .unwrap();
    let out = store
        .query(
            "ingestion_volume | sort produced_at desc | select produced_at, payload.rows as rows, \
             kind, target | latest",
            &Params::new(),
        )
        .unwrap();
    let rows: Vec<String> = out.rows.iter().map(|r| format!("{r:?}")).collect();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].contains("Number(30)"), "{rows:?}");
}

/// `stddev` of integers near 6.8e18 was noise (1.4e11 for two values one
/// apart): the sums overflowed i128 and their difference was taken in f64.
#[test]
fn stddev_of_large_integers_was_rounding_noise() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .bulk_store(&[
            volume(1, 1, 6_817_960_789_916_693_799),
            volume(1, 2, 6_817_960_789_916_693_798),
        ])
        .unwrap();
    let out = store
        .query(
            "ingestion_volume | stats stddev(payload.rows)",
            &Params::new(),
        )
        .unwrap();
    let row = format!("{:?}", out.rows[0]);
    assert!(row.contains(&format!("{:?}", 0.5f64.sqrt())), "{row}");
}

/// Expressions were evaluated by plain recursion on the caller's thread:
/// the deepest query the limits allowed overflowed a small thread's stack
/// and aborted the process, and deeper planned trees (long `and`/`or`
/// chains at each of 128 nesting levels, valid by the spec) were refused.
#[test]
fn deep_expressions_overflowed_a_small_threads_stack() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let stored = store
        .bulk_store(&[volume(1, 1, 5), volume(2, 2, 7)])
        .unwrap()
        .ids;
    // At each of 128 nesting levels a call under long `or` and `and`
    // chains: ~1,400 levels once planned, evaluated for every row.
    let level = format!(
        "abs({{}}) * 1 + 0 = 0{}{}",
        " and true".repeat(7),
        " or true".repeat(15)
    );
    let mut text = "payload.rows".to_owned();
    for _ in 0..almanac::query::MAX_DEPTH {
        text = level.replace("{}", &text);
    }
    let query = format!("* | where {text}");
    let ids = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn_scoped(scope, || ids_of(&store, &query))
            .unwrap()
            .join()
            .unwrap()
    });
    assert_eq!(ids, stored);
}

/// A line with an `"id"` was allowed the length of a line the store writes
/// (1 MiB + 64 KiB and the id), so a producer's record over the spec's
/// 1 MiB was stored just by carrying an id. Only the store's own line for a
/// record (an export's) may be longer now.
#[test]
fn an_id_lifted_the_1_mib_limit_from_any_record() {
    let max = almanac::model::MAX_RECORD_BYTES;
    let head = r#"{"id":1,"kind":"k","target":{"table":"t"},"producer_id":"p","produced_at":"2024-01-01T00:00:00Z","payload":{"s":""#;
    let tail = r#""}}"#;
    // Over 1 MiB without its `"id":1,` (7 bytes).
    let line = format!(
        "{head}{}{tail}",
        "x".repeat(max + 8 - head.len() - tail.len())
    );
    let err = MetadataRecord::from_json_line(&line).unwrap_err();
    assert_eq!(err.field, "record");
    assert!(
        err.reason.contains(&format!("is {} bytes", max + 1)),
        "{err}"
    );
    // Within 1 MiB as given, over it as the store writes it (defaults, id
    // first): that line, exactly, reads back.
    let head = head.replacen(r#""id":1,"#, "", 1);
    let fits = format!("{head}{}{tail}", "x".repeat(max - head.len() - tail.len()));
    let record = MetadataRecord::from_json_line(&fits).unwrap().0;
    let written = StoredRecord { id: 1, record }.to_json_string();
    assert!(written.len() > max);
    assert_eq!(MetadataRecord::from_json_line(&written).unwrap().1, Some(1));
}

/// A pattern was anchored by pasting it into `^(?:...)$`, so `a)|(b`
/// closed the group and matched any value starting with `a` (from a
/// parameter too, changing the query's shape), and a `(?x)` comment
/// swallowed the anchor, refusing a valid pattern.
#[test]
fn a_pattern_could_escape_its_whole_value_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let id = store.store(&volume(1, 1, 5)).unwrap().id;
    let table = volume(1, 1, 5).target.table;
    assert!(table.len() >= 2, "{table}");
    let (first, rest) = table.split_at(1);
    let bad = format!("{first})|(zzz");
    for query in [
        format!("ingestion_volume | where target.table =~ \"{bad}\""),
        format!("ingestion_volume{{table=~\"{bad}\"}}"),
        format!("ingestion_volume | where target.table !~ \"{bad}\""),
    ] {
        let err = store.query(&query, &Params::new()).unwrap_err();
        assert!(err.to_string().contains("unopened group"), "{query}: {err}");
    }
    let mut params = Params::new();
    params.insert_str("p", &format!("{first})|(.*"));
    let err = record_ids(&store, "* | where target.table =~ $p", &params).unwrap_err();
    assert!(err.to_string().contains("unopened group"), "{err}");
    // Still anchored: a prefix alone does not match.
    assert!(ids_of(&store, &format!("* | where target.table =~ \"{first}\"")).is_empty());
    // A valid pattern ending in a verbose-mode comment.
    let verbose = format!("* | where target.table =~ \"(?x) {first} {rest} # the table\"");
    assert_eq!(ids_of(&store, &verbose), [id]);
}

/// After `select payload.s`, a mistyped `payload.x` was met with "did you
/// mean `payload.s.x`?", itself unknown: the column's whole name was taken
/// for a first segment and the rest of the path appended.
#[test]
fn a_suggested_path_after_select_was_itself_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.store(&volume(1, 1, 5)).unwrap();
    let suggestion = |query: &str| match store.query(query, &Params::new()) {
        Err(almanac::Error::Query(almanac::query::QueryError::UnknownField {
            suggestion, ..
        })) => suggestion,
        other => panic!("{query}: {other:?}"),
    };
    let query = "ingestion_volume | select payload.rows | where payload.rowz > 1";
    assert_eq!(suggestion(query).as_deref(), Some("payload.rows"));
    // The suggestion resolves.
    store
        .query(
            "ingestion_volume | select payload.rows | where payload.rows > 1",
            &Params::new(),
        )
        .unwrap();
    let query = "ingestion_volume | select id, produced_at | where prodced_at > 1";
    assert_eq!(suggestion(query).as_deref(), Some("produced_at"));
}

/// A decimal beyond f64 (`1e400`) was refused as "field `record` is not
/// valid JSON: number out of range", naming the whole record where an
/// integer out of range names its field.
#[test]
fn a_decimal_beyond_f64_named_the_record_not_its_field() {
    let line = r#"{"kind":"k","target":{"table":"t"},"producer_id":"p","produced_at":"2024-01-01T00:00:00Z","payload":{"n":[0,1e400]}}"#;
    let err = MetadataRecord::from_json_line(line).unwrap_err();
    assert_eq!(err.field, "payload.n[1]", "{err}");
    assert!(err.reason.contains("beyond the range"), "{err}");
}
