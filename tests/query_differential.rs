//! Differential tests of the query engine: on a generated data set, every
//! stage and aggregate is compared with the same computation written plainly
//! over the records in a `Vec` (a reference evaluator here, not the engine),
//! every query gives the same rows with and without indexes, and the spec's
//! error cases are refused before any data is read.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use almanac::model::{JsonObject, MetadataContext, MetadataRecord, MetadataTarget};
use almanac::query::{
    self, ExecOptions, MemorySource, Params, QueryError, QueryOutput, RecordIter, RecordSource,
    Row, ScanDescription, ScanRequest, TargetInfo,
};
use almanac::{StoredRecord, Timestamp};
use serde_json::{json, Value as Json};

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;

fn ts(text: &str) -> Timestamp {
    Timestamp::parse_rfc3339(text).expect("timestamp")
}

fn now() -> Timestamp {
    ts("2024-01-31T00:00:00Z")
}

/// xorshift64*: a small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const TARGETS: [(&str, &str, &str); 6] = [
    ("oracle_prod", "itcftth", "srv_cfsver_ct_main"),
    ("oracle_prod", "itcftth", "orders"),
    ("pg_main", "public", "orders"),
    ("pg_main", "sales", "customers"),
    ("", "staging", "events"),
    ("pg_replica", "public", "orders"),
];
const KINDS: [&str; 4] = [
    "ingestion_volume",
    "recon_result",
    "schema_snapshot",
    "custom_kind",
];
const OUTCOMES: [&str; 4] = ["pass", "fail", "timeout", "error"];

fn dataset() -> Vec<StoredRecord> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let base = ts("2024-01-01T00:00:00Z").as_micros();
    let mut records = Vec::new();
    for id in 1..=600u64 {
        let kind = KINDS[rng.below(4) as usize];
        let (source, schema, table) = TARGETS[rng.below(6) as usize];
        // Whole hours, so that some records share a produced_at.
        let produced_at = Timestamp::from_micros(base + rng.below(30 * 24) as i64 * HOUR);
        let mut payload = JsonObject::new();
        match rng.below(7) {
            0 => {}
            1 => {
                payload.insert("rows".into(), Json::Null);
            }
            2 => {
                payload.insert("rows".into(), json!("n/a"));
            }
            3 | 4 => {
                payload.insert("rows".into(), json!(rng.below(1000) as i64 - 100));
            }
            _ => {
                payload.insert("rows".into(), json!(rng.below(100_000) as f64 / 8.0));
            }
        }
        if rng.below(5) > 0 {
            payload.insert("outcome".into(), json!(OUTCOMES[rng.below(4) as usize]));
        }
        if kind == "schema_snapshot" {
            let n = rng.below(4);
            let columns: Vec<Json> = (0..n)
                .map(|i| json!({"name": format!("c{i}"), "type": "int"}))
                .collect();
            payload.insert("columns".into(), Json::Array(columns));
        }
        let mut context = MetadataContext {
            run_id: Some(format!("run-{}", rng.below(25))),
            ..MetadataContext::default()
        };
        if rng.below(2) == 0 {
            context.job_id = Some(format!("job-{}", rng.below(3)));
        }
        if rng.below(3) == 0 {
            context.extras.insert(
                "tenant".into(),
                json!(["acme", "globex"][rng.below(2) as usize]),
            );
        }
        let mut extras = JsonObject::new();
        if rng.below(3) == 0 {
            let start = base + rng.below(30) as i64 * DAY;
            let len = rng.below(3) as i64 * DAY;
            extras.insert(
                "window_start".into(),
                json!(Timestamp::from_micros(start).to_rfc3339()),
            );
            extras.insert(
                "window_end".into(),
                json!(Timestamp::from_micros(start + len).to_rfc3339()),
            );
        }
        let mut record = MetadataRecord::new(
            kind,
            MetadataTarget::new(source, schema, table),
            payload,
            produced_at,
            ["ingestion.v1", "recon.v2", "catalog"][rng.below(3) as usize],
        );
        record.context = context;
        record.extras = extras;
        records.push(StoredRecord { id, record });
    }
    records.sort_by_key(|r| (r.record.produced_at, r.id));
    records
}

// ---------------------------------------------------------------- running

fn run_on(
    source: &dyn RecordSource,
    text: &str,
    params: &Params,
    use_indexes: bool,
) -> QueryOutput {
    let prepared = query::prepare(text).unwrap_or_else(|e| panic!("{}", e.render(text)));
    let options = ExecOptions {
        now: now(),
        use_indexes,
    };
    prepared
        .run(source, params, &options)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// Runs with and without indexes, checks they agree, returns the rows.
fn run_with(text: &str, params: &Params) -> QueryOutput {
    let source = MemorySource::new(dataset());
    let with = run_on(&source, text, params, true);
    let without = run_on(&source, text, params, false);
    assert_eq!(with, without, "indexes change the answer of {text}");
    with
}

fn run(text: &str) -> QueryOutput {
    run_with(text, &Params::new())
}

fn ids(out: &QueryOutput) -> Vec<u64> {
    out.rows
        .iter()
        .map(|row| match row {
            Row::Record { record, .. } => record.id,
            Row::Values(_) => panic!("expected records"),
        })
        .collect()
}

fn objects(out: &QueryOutput) -> Vec<Json> {
    out.rows.iter().map(|r| r.to_json(&out.columns)).collect()
}

fn records() -> Vec<StoredRecord> {
    dataset()
}

fn ids_of<'a>(it: impl IntoIterator<Item = &'a StoredRecord>) -> Vec<u64> {
    it.into_iter().map(|r| r.id).collect()
}

/// Numbers compare with a relative tolerance; everything else exactly.
fn assert_json_close(actual: &[Json], expected: &[Json], what: &str) {
    fn close(a: &Json, b: &Json) -> bool {
        match (a, b) {
            (Json::Number(x), Json::Number(y)) => {
                let (x, y) = (
                    x.as_f64().unwrap_or(f64::NAN),
                    y.as_f64().unwrap_or(f64::NAN),
                );
                (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
            }
            (Json::Object(x), Json::Object(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .zip(y)
                        .all(|((ka, va), (kb, vb))| ka == kb && close(va, vb))
            }
            (Json::Array(x), Json::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(a, b)| close(a, b))
            }
            _ => a == b,
        }
    }
    assert_eq!(
        actual.len(),
        expected.len(),
        "{what}: row count\nactual {actual:#?}\nexpected {expected:#?}"
    );
    for (a, e) in actual.iter().zip(expected) {
        assert!(close(a, e), "{what}:\n  actual   {a}\n  expected {e}");
    }
}

// ---------------------------------------------------------------- reference helpers

fn payload<'a>(r: &'a StoredRecord, key: &str) -> Option<&'a Json> {
    r.record.payload.get(key)
}

/// `payload.rows` as a number, when it is one.
fn rows_num(r: &StoredRecord) -> Option<f64> {
    payload(r, "rows").and_then(Json::as_f64)
}

fn rows_json(r: &StoredRecord) -> Json {
    payload(r, "rows").cloned().unwrap_or(Json::Null)
}

fn target(r: &StoredRecord) -> String {
    r.record.target.canonical_name()
}

fn number(x: f64) -> Json {
    json!(x)
}

// ---------------------------------------------------------------- filters

#[test]
fn where_compares_numbers_and_skips_nulls_and_strings() {
    let expected = ids_of(
        records()
            .iter()
            .filter(|r| rows_num(r).is_some_and(|x| x > 300.0)),
    );
    assert_eq!(ids(&run("* | where payload.rows > 300")), expected);
    let expected = ids_of(
        records()
            .iter()
            .filter(|r| !rows_num(r).is_some_and(|x| x > 300.0)),
    );
    assert_eq!(ids(&run("* | where not payload.rows > 300")), expected);
    let expected = ids_of(records().iter().filter(|r| rows_json(r).is_null()));
    assert_eq!(ids(&run("* | where payload.rows = null")), expected);
    let expected = ids_of(records().iter().filter(|r| !rows_json(r).is_null()));
    assert_eq!(ids(&run("* | where payload.rows != null")), expected);
    let expected = ids_of(records().iter().filter(|r| payload(r, "rows").is_some()));
    assert_eq!(ids(&run("* | where exists(payload.rows)")), expected);
    let expected = ids_of(records().iter().filter(|r| {
        payload(r, "outcome")
            .and_then(Json::as_str)
            .is_some_and(|o| o == "fail" || o == "timeout")
    }));
    assert_eq!(
        ids(&run(r#"* | where payload.outcome in ("fail", "timeout")"#)),
        expected
    );
    let expected = ids_of(records().iter().filter(|r| {
        payload(r, "outcome")
            .and_then(Json::as_str)
            .is_some_and(|o| o.starts_with('t') || o.ends_with('s'))
    }));
    assert_eq!(
        ids(&run(r#"* | where payload.outcome =~ "t.*|.*s""#)),
        expected
    );
}

/// A generated filter: thousands of alternatives in one `or` (or `and`)
/// chain run like the short forms of the same filter.
#[test]
fn long_logic_chains_run_like_their_short_forms() {
    let alternatives: Vec<String> = (0..2_500).map(|n| format!("payload.rows = {n}")).collect();
    let query = format!("* | where {}", alternatives.join(" or "));
    let expected =
        ids_of(records().iter().filter(|r| {
            rows_num(r).is_some_and(|x| x.fract() == 0.0 && (0.0..2_500.0).contains(&x))
        }));
    assert!(!expected.is_empty());
    assert_eq!(ids(&run(&query)), expected);
    let exclusions: Vec<String> = (0..2_500).map(|n| format!("payload.rows != {n}")).collect();
    let query = format!(
        "* | where exists(payload.rows) and {}",
        exclusions.join(" and ")
    );
    // `!=` on a null or a string is false, like every comparison of them
    // with a number.
    let expected = ids_of(records().iter().filter(|r| {
        rows_num(r).is_some_and(|x| !(x.fract() == 0.0 && (0.0..2_500.0).contains(&x)))
    }));
    assert!(!expected.is_empty());
    assert_eq!(ids(&run(&query)), expected);
    let names: Vec<String> = TARGETS
        .iter()
        .map(|(_, schema, table)| {
            format!("target.table = \"{table}\" and target.schema = \"{schema}\"")
        })
        .cycle()
        .take(700)
        .collect();
    let long = run(&format!("* | where {}", names.join(" or ")));
    assert_eq!(ids(&long), ids_of(records().iter()));
}

/// A generated sum or product of thousands of terms (one flat chain, run
/// left to right) gives what its short form gives; so does the deepest
/// expression tree the nesting limit allows, on a test thread's stack.
#[test]
fn long_arithmetic_chains_run_like_their_short_forms() {
    let same = |long: &str, short: &str| {
        let run_column = |expr: &str| {
            objects(&run(&format!(
                "ingestion_volume | extend s = {expr} | select id, s"
            )))
        };
        let (long_out, short_out) = (run_column(long), run_column(short));
        assert!(long_out.iter().any(|row| row["s"].is_number()));
        assert_eq!(long_out, short_out, "{short}");
    };
    let sum = format!(
        "payload.rows{}{}",
        " + 1".repeat(3_000),
        " - 1".repeat(1_000)
    );
    same(&sum, "payload.rows + 2000");
    let product = format!("payload.rows{}", " * 2 / 2".repeat(2_000));
    same(&product, "payload.rows * 2 / 2");
    let mixed = format!("payload.rows{}", " + 0 * 5 - 2 % 2".repeat(2_000));
    same(&mixed, "payload.rows + 0");
    // Six tree levels for each of 128 nested calls.
    let level = "payload.rows >= 0 or payload.rows = -1 and payload.rows = 1 + 2 * abs(";
    let calls = query::MAX_DEPTH;
    let deepest = format!(
        "* | where {}payload.rows{}",
        level.repeat(calls),
        ")".repeat(calls)
    );
    let expected = ids_of(
        records()
            .iter()
            .filter(|r| rows_num(r).is_some_and(|x| x >= 0.0)),
    );
    assert!(!expected.is_empty());
    assert_eq!(ids(&run(&deepest)), expected);
    // The deepest evaluation: at each of 128 levels, long `or` and `and`
    // chains (balanced trees when planned: 4 and 3 levels deep) lead to the
    // call, which is their first operand, so every row evaluates it all.
    let level = format!(
        "abs({{}}) * 1 + 0 = 0{}{}",
        " and true".repeat(7),
        " or true".repeat(15)
    );
    let widest = |levels: usize| {
        let mut text = "payload.rows".to_owned();
        for _ in 0..levels {
            text = level.replace("{}", &text);
        }
        format!("* | where {text}")
    };
    // Eleven planned levels a nesting level, six in the syntax tree: all
    // 128 levels the spec allows are accepted and run, ~1,400 planned
    // levels deep (on a test thread's stack: see `CExpr::Deep`).
    let text = widest(query::MAX_DEPTH);
    assert!(text.len() < query::MAX_QUERY_BYTES);
    assert_eq!(ids(&run(&text)), ids_of(records().iter()));
}

#[test]
fn arithmetic_follows_the_typing_rules() {
    let out = run("ingestion_volume | extend half = payload.rows / 2, twice = payload.rows * 2, m = payload.rows % 7 | select id, half, twice, m");
    let expected: Vec<Json> = records()
        .iter()
        .filter(|r| r.record.kind == "ingestion_volume")
        .map(|r| {
            let (half, twice, m) = match payload(r, "rows") {
                Some(Json::Number(n)) if n.is_i64() => {
                    let i = n.as_i64().unwrap_or(0);
                    (json!(i as f64 / 2.0), json!(i * 2), json!(i % 7))
                }
                Some(Json::Number(n)) => {
                    let x = n.as_f64().unwrap_or(0.0);
                    (json!(x / 2.0), json!(x * 2.0), Json::Null)
                }
                _ => (Json::Null, Json::Null, Json::Null),
            };
            json!({"id": r.id, "half": half, "twice": twice, "m": m})
        })
        .collect();
    assert_json_close(&objects(&out), &expected, "arithmetic");
}

#[test]
fn source_matchers_select_targets_and_labels() {
    let all = records();
    let check = |query: &str, keep: &dyn Fn(&StoredRecord) -> bool| {
        let expected = ids_of(all.iter().filter(|r| keep(r)));
        assert_eq!(ids(&run(query)), expected, "{query}");
    };
    check(r#"*{table="orders"}"#, &|r| {
        r.record.target.table == "orders"
    });
    check(
        r#"recon_result, ingestion_volume{source=~"pg_.*", table!="customers"}"#,
        &|r| {
            (r.record.kind == "recon_result" || r.record.kind == "ingestion_volume")
                && r.record.target.source_id.starts_with("pg_")
                && r.record.target.table != "customers"
        },
    );
    check(r#"*{target="staging.events"}"#, &|r| {
        target(r) == "staging.events"
    });
    check(r#"*{schema!~"p.*"}"#, &|r| {
        !r.record.target.schema.starts_with('p')
    });
    check(r#"*{producer="recon.v2"}"#, &|r| {
        r.record.producer_id == "recon.v2"
    });
    check(r#"*{producer!="recon.v2", run_id="run-3"}"#, &|r| {
        r.record.producer_id != "recon.v2" && r.record.context.run_id.as_deref() == Some("run-3")
    });
    check(r#"*{run_id=~"run-1."}"#, &|r| {
        r.record
            .context
            .run_id
            .as_deref()
            .is_some_and(|id| id.len() == 6 && id.starts_with("run-1"))
    });
    // A missing label reads as the empty string.
    check(r#"*{job_id!="job-1"}"#, &|r| {
        r.record.context.job_id.as_deref() != Some("job-1")
    });
    check(r#"*{tenant="acme", namespace=""}"#, &|r| {
        r.record.context.tenant() == Some("acme")
    });
    check(r#"*{table="nope"}"#, &|_| false);
    check(r#"*{producer="catalog", producer="recon.v2"}"#, &|_| false);
}

#[test]
fn time_stages_bound_produced_at() {
    let all = records();
    let at = |r: &StoredRecord| r.record.produced_at;
    let check = |query: &str, keep: &dyn Fn(&StoredRecord) -> bool| {
        let expected = ids_of(all.iter().filter(|r| keep(r)));
        assert_eq!(ids(&run(query)), expected, "{query}");
    };
    let week_ago = now().saturating_add_micros(-7 * DAY);
    check("* | since 7d", &|r| at(r) >= week_ago);
    check("* | since now - 7d", &|r| at(r) >= week_ago);
    check("* | until 2024-01-05", &|r| {
        at(r) < ts("2024-01-05T00:00:00Z")
    });
    check(
        "* | between 2024-01-05 .. 2024-01-07T12:00:00+02:00",
        &|r| at(r) >= ts("2024-01-05T00:00:00Z") && at(r) < ts("2024-01-07T10:00:00Z"),
    );
    check(
        "* | where produced_at > 2024-01-10T05:00:00Z and payload.rows > 0",
        &|r| at(r) > ts("2024-01-10T05:00:00Z") && rows_num(r).is_some_and(|x| x > 0.0),
    );
    check(r#"* | where produced_at <= "2024-01-03T00:00:00Z""#, &|r| {
        at(r) <= ts("2024-01-03T00:00:00Z")
    });
    check("* | overlaps 2024-01-10 .. 2024-01-12", &|r| {
        let get = |k: &str| {
            r.record
                .extras
                .get(k)
                .and_then(Json::as_str)
                .and_then(Timestamp::parse_rfc3339)
        };
        match (get("window_start"), get("window_end")) {
            (Some(s), Some(e)) => s < ts("2024-01-12T00:00:00Z") && e > ts("2024-01-10T00:00:00Z"),
            _ => false,
        }
    });
    let mut params = Params::new();
    params.insert_binding("from=2024-01-20").expect("binding");
    let expected = ids_of(all.iter().filter(|r| at(r) >= ts("2024-01-20T00:00:00Z")));
    assert_eq!(ids(&run_with("* | since $from", &params)), expected);
}

// ---------------------------------------------------------------- row-shaping stages

#[test]
fn latest_keeps_the_newest_row_per_group() {
    let all = records();
    let latest_by = |key: &dyn Fn(&StoredRecord) -> String| {
        let mut best: BTreeMap<String, &StoredRecord> = BTreeMap::new();
        for r in &all {
            // Ascending order: a later record replaces an earlier one.
            best.insert(key(r), r);
        }
        let mut out: Vec<&StoredRecord> = best.into_values().collect();
        out.sort_by_key(|r| (r.record.produced_at, r.id));
        ids_of(out)
    };
    assert_eq!(
        ids(&run("* | latest")),
        latest_by(&|r| format!("{}|{}", r.record.kind, target(r)))
    );
    assert_eq!(ids(&run("* | latest by target")), latest_by(&|r| target(r)));
    let expected = {
        let mut best: BTreeMap<String, &StoredRecord> = BTreeMap::new();
        for r in all
            .iter()
            .filter(|r| r.record.kind == "recon_result" && r.record.target.table == "orders")
        {
            best.insert(target(r), r);
        }
        let mut out: Vec<&StoredRecord> = best.into_values().collect();
        out.sort_by_key(|r| (r.record.produced_at, r.id));
        ids_of(out)
    };
    assert_eq!(
        ids(&run(r#"recon_result{table="orders"} | latest"#)),
        expected
    );
    // The same groups named otherwise (answered from the latest table).
    assert_eq!(
        ids(&run(r#"recon_result{table="orders"} | latest by target"#)),
        expected
    );
    assert_eq!(
        ids(&run(
            r#"recon_result{table="orders"} | latest by target, kind"#
        )),
        expected
    );
    assert_eq!(
        ids(&run("* | latest by target, kind")),
        ids(&run("* | latest"))
    );
    let recon_by_target = {
        let mut best: BTreeMap<String, &StoredRecord> = BTreeMap::new();
        for r in all.iter().filter(|r| r.record.kind == "recon_result") {
            best.insert(target(r), r);
        }
        let mut out: Vec<&StoredRecord> = best.into_values().collect();
        out.sort_by_key(|r| (r.record.produced_at, r.id));
        ids_of(out)
    };
    assert!(recon_by_target.len() > 1);
    assert_eq!(
        ids(&run("recon_result | latest by target")),
        recon_by_target
    );
    // `latest` keeps rows as `where` does: after a `sort`, the rows it keeps
    // stay in the sorted order, and `limit` takes the first of those.
    let by_rows_desc = |ids: Vec<u64>| {
        let mut kept: Vec<&StoredRecord> = all.iter().filter(|r| ids.contains(&r.id)).collect();
        kept.sort_by(|a, b| {
            let (ra, rb) = (rows_rank(a), rows_rank(b));
            rb.0.cmp(&ra.0).then(rb.1.total_cmp(&ra.1))
        });
        ids_of(kept)
    };
    let volumes_by_target = {
        let mut best: BTreeMap<String, &StoredRecord> = BTreeMap::new();
        for r in all.iter().filter(|r| r.record.kind == "ingestion_volume") {
            best.insert(target(r), r);
        }
        best.into_values().map(|r| r.id).collect::<Vec<_>>()
    };
    assert!(volumes_by_target.len() > 2);
    let sorted = by_rows_desc(volumes_by_target);
    assert_eq!(
        ids(&run(
            "ingestion_volume | sort payload.rows desc | latest by target"
        )),
        sorted
    );
    assert_eq!(
        ids(&run(
            "ingestion_volume | sort payload.rows desc | latest by target | limit 2"
        )),
        sorted[..2]
    );
}

/// The reference order of `sort payload.rows desc`: nulls (and non-numbers
/// after numbers...) per the total order: null < bool < numbers < strings.
fn rows_rank(r: &StoredRecord) -> (u8, f64) {
    match payload(r, "rows") {
        None | Some(Json::Null) => (0, 0.0),
        Some(Json::Number(n)) => (2, n.as_f64().unwrap_or(0.0)),
        Some(_) => (5, 0.0),
    }
}

#[test]
fn sort_and_limit_agree_with_a_stable_sort() {
    let all = records();
    let mut sorted: Vec<&StoredRecord> = all.iter().collect();
    sorted.sort_by(|a, b| {
        let (ra, rb) = (rows_rank(a), rows_rank(b));
        rb.0.cmp(&ra.0).then(rb.1.total_cmp(&ra.1))
    });
    let expected = ids_of(sorted.iter().copied());
    assert_eq!(ids(&run("* | sort payload.rows desc")), expected);
    assert_eq!(
        ids(&run("* | sort payload.rows desc | limit 7")),
        expected[..7].to_vec()
    );
    assert_eq!(ids(&run("* | limit 5")), ids_of(all.iter().take(5)));
    assert_eq!(
        ids(&run("* | sort payload.rows desc | limit 0")),
        Vec::<u64>::new()
    );
    let mut asc: Vec<&StoredRecord> = all.iter().collect();
    asc.sort_by(|a, b| {
        let (ra, rb) = (rows_rank(a), rows_rank(b));
        ra.0.cmp(&rb.0).then(ra.1.total_cmp(&rb.1))
    });
    let mut params = Params::new();
    params.insert_int("n", 11);
    assert_eq!(
        ids(&run_with("* | sort payload.rows | limit $n", &params)),
        ids_of(asc.iter().copied().take(11))
    );
}

#[test]
fn extend_and_select_shape_rows() {
    let out = run(
        r#"schema_snapshot{source="pg_main"} | latest by target | select target, len(payload.columns) as columns, upper(kind) as k"#,
    );
    assert_eq!(out.columns, ["target", "columns", "k"]);
    let all = records();
    let mut best: BTreeMap<String, &StoredRecord> = BTreeMap::new();
    for r in all
        .iter()
        .filter(|r| r.record.kind == "schema_snapshot" && r.record.target.source_id == "pg_main")
    {
        best.insert(target(r), r);
    }
    let mut rows: Vec<&StoredRecord> = best.into_values().collect();
    rows.sort_by_key(|r| (r.record.produced_at, r.id));
    let expected: Vec<Json> = rows
        .iter()
        .map(|r| {
            let n = payload(r, "columns")
                .and_then(Json::as_array)
                .map_or(Json::Null, |a| json!(a.len()));
            json!({"target": target(r), "columns": n, "k": "SCHEMA_SNAPSHOT"})
        })
        .collect();
    assert_eq!(objects(&out), expected);

    let out = run("recon_result | extend t = target, late = produced_at > 2024-01-20 | limit 3");
    for (row, r) in out
        .rows
        .iter()
        .zip(records().iter().filter(|r| r.record.kind == "recon_result"))
    {
        let mut expected = r.to_json_value();
        expected["t"] = json!(target(r));
        expected["late"] = json!(r.record.produced_at > ts("2024-01-20T00:00:00Z"));
        assert_eq!(row.to_json(&out.columns), expected);
    }
}

// ---------------------------------------------------------------- aggregates

/// The reference of every aggregate over one group of records, for `payload.rows`.
fn reference_aggregates(group: &[&StoredRecord]) -> Json {
    let numbers: Vec<f64> = group.iter().filter_map(|r| rows_num(r)).collect();
    let all_ints = group
        .iter()
        .filter_map(|r| payload(r, "rows"))
        .filter(|v| v.is_number())
        .all(|v| v.is_i64());
    let sum = if numbers.is_empty() {
        Json::Null
    } else if all_ints {
        json!(group
            .iter()
            .filter_map(|r| payload(r, "rows").and_then(Json::as_i64))
            .sum::<i64>())
    } else {
        number(numbers.iter().sum())
    };
    let avg = if numbers.is_empty() {
        Json::Null
    } else {
        number(numbers.iter().sum::<f64>() / numbers.len() as f64)
    };
    let stddev = if numbers.len() < 2 {
        Json::Null
    } else {
        let mean = numbers.iter().sum::<f64>() / numbers.len() as f64;
        let var = numbers.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>()
            / (numbers.len() - 1) as f64;
        number(var.sqrt())
    };
    let percentile = |p: f64| {
        if numbers.is_empty() {
            return Json::Null;
        }
        let mut v = numbers.clone();
        v.sort_by(f64::total_cmp);
        let rank = p / 100.0 * (v.len() - 1) as f64;
        let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
        number(v[lo] + (v[hi] - v[lo]) * (rank - lo as f64))
    };
    // min/max over numbers: keep the JSON number as stored (int or float).
    let pick = |better: &dyn Fn(f64, f64) -> bool| {
        let mut best: Option<&Json> = None;
        for v in group
            .iter()
            .filter_map(|r| payload(r, "rows"))
            .filter(|v| v.is_number())
        {
            if best.is_none_or(|b| better(v.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0))) {
                best = Some(v);
            }
        }
        best.cloned().unwrap_or(Json::Null)
    };
    let outcomes: BTreeSet<&str> = group
        .iter()
        .filter_map(|r| payload(r, "outcome").and_then(Json::as_str))
        .collect();
    let first = group
        .iter()
        .min_by_key(|r| (r.record.produced_at, r.id))
        .map_or(Json::Null, |r| rows_json(r));
    let last = group
        .iter()
        .max_by_key(|r| (r.record.produced_at, r.id))
        .map_or(Json::Null, |r| rows_json(r));
    let max_at = group
        .iter()
        .map(|r| r.record.produced_at)
        .max()
        .map_or(Json::Null, |t| json!(t.to_rfc3339()));
    json!({
        "n": group.len(),
        "n_rows": group.iter().filter(|r| !rows_json(r).is_null()).count(),
        "fails": group.iter().filter(|r| payload(r, "outcome").and_then(Json::as_str) == Some("fail")).count(),
        "distinct_outcomes": outcomes.len(),
        "sum": sum,
        "avg": avg,
        "min": pick(&|x, b| x < b),
        "max": pick(&|x, b| x > b),
        "sd": stddev,
        "p90": percentile(90.0),
        "p0": percentile(0.0),
        "first": first,
        "last": last,
        "max_at": max_at,
    })
}

const AGGREGATES: &str = "count() as n, count(payload.rows) as n_rows, countif(payload.outcome = \"fail\") as fails, \
    count_distinct(payload.outcome) as distinct_outcomes, sum(payload.rows) as sum, avg(payload.rows) as avg, \
    min(payload.rows) as min, max(payload.rows) as max, stddev(payload.rows) as sd, \
    percentile(payload.rows, 90) as p90, percentile(payload.rows, 0) as p0, first(payload.rows) as first, \
    last(payload.rows) as last, max(produced_at) as max_at";

#[test]
fn stats_computes_every_aggregate_per_group() {
    let all = records();
    let out = run(&format!("* | stats {AGGREGATES} by target"));
    let mut groups: BTreeMap<String, Vec<&StoredRecord>> = BTreeMap::new();
    for r in &all {
        groups.entry(target(r)).or_default().push(r);
    }
    let expected: Vec<Json> = groups
        .iter()
        .map(|(name, group)| {
            let mut row = json!({"target": name});
            if let (Json::Object(row), Json::Object(aggs)) = (&mut row, reference_aggregates(group))
            {
                row.extend(aggs);
            }
            row
        })
        .collect();
    assert_json_close(&objects(&out), &expected, "stats by target");

    // No `by`: one row, even for no input.
    let out = run(&format!("* | stats {AGGREGATES}"));
    let everything: Vec<&StoredRecord> = all.iter().collect();
    assert_json_close(
        &objects(&out),
        &[reference_aggregates(&everything)],
        "stats",
    );
    let out = run("nothing | stats count() as n, sum(payload.rows) as s");
    assert_eq!(objects(&out), vec![json!({"n": 0, "s": null})]);
}

#[test]
fn stats_groups_by_day_bins_in_order() {
    let all = records();
    let out = run("recon_result | stats countif(payload.outcome = \"fail\") as failures, count() as checks by target, bin(produced_at, 1d) as day");
    let mut groups: BTreeMap<(String, i64), (usize, usize)> = BTreeMap::new();
    for r in all.iter().filter(|r| r.record.kind == "recon_result") {
        let day = r.record.produced_at.as_micros().div_euclid(DAY) * DAY;
        let entry = groups.entry((target(r), day)).or_default();
        entry.1 += 1;
        if payload(r, "outcome").and_then(Json::as_str) == Some("fail") {
            entry.0 += 1;
        }
    }
    let expected: Vec<Json> = groups
        .into_iter()
        .map(|((t, day), (failures, checks))| {
            json!({"target": t, "day": Timestamp::from_micros(day).to_rfc3339(), "failures": failures, "checks": checks})
        })
        .collect();
    assert_eq!(objects(&out), expected);
}

#[test]
fn window_aggregates_over_frames_within_groups() {
    let all = records();
    for (start, end) in [(-3i64, 0i64), (-7, -1), (-1, 2), (0, 0), (1, 3)] {
        let query = format!(
            "ingestion_volume | window count() as n, sum(payload.rows) as s, avg(payload.rows) as a, first(payload.rows) as f by target rows {start} .. {end}"
        );
        let out = run(&query);
        let rows: Vec<&StoredRecord> = all
            .iter()
            .filter(|r| r.record.kind == "ingestion_volume")
            .collect();
        let mut groups: BTreeMap<String, Vec<&StoredRecord>> = BTreeMap::new();
        for r in &rows {
            groups.entry(target(r)).or_default().push(r);
        }
        let mut by_id: BTreeMap<u64, Json> = BTreeMap::new();
        for group in groups.values() {
            for (pos, r) in group.iter().enumerate() {
                let lo = (pos as i64 + start).max(0);
                let hi = (pos as i64 + end).min(group.len() as i64 - 1);
                let frame: Vec<&StoredRecord> = if lo > hi {
                    Vec::new()
                } else {
                    group[lo as usize..=hi as usize].to_vec()
                };
                let aggs = reference_aggregates(&frame);
                by_id.insert(
                    r.id,
                    json!({"n": aggs["n"], "s": aggs["sum"], "a": aggs["avg"], "f": aggs["first"]}),
                );
            }
        }
        let actual: Vec<Json> = out
            .rows
            .iter()
            .map(|row| match row {
                Row::Record { computed, .. } => Json::Object(computed.iter().cloned().collect()),
                Row::Values(_) => Json::Null,
            })
            .collect();
        let expected: Vec<Json> = rows.iter().map(|r| by_id[&r.id].clone()).collect();
        assert_eq!(ids(&out), ids_of(rows.iter().copied()), "{query}: order");
        assert_json_close(&actual, &expected, &query);
    }
}

#[test]
fn spec_window_example_finds_timeout_streaks() {
    let all = records();
    let out = run("recon_result | window countif(payload.outcome = \"timeout\") as streak by target rows -2 .. 0 | where streak = 3 | latest by target");
    let mut groups: BTreeMap<String, Vec<&StoredRecord>> = BTreeMap::new();
    for r in all.iter().filter(|r| r.record.kind == "recon_result") {
        groups.entry(target(r)).or_default().push(r);
    }
    let mut hits: Vec<&StoredRecord> = Vec::new();
    for group in groups.values() {
        let timeout =
            |r: &StoredRecord| payload(r, "outcome").and_then(Json::as_str) == Some("timeout");
        let last_hit = (2..group.len())
            .rev()
            .find(|&i| group[i - 2..=i].iter().all(|r| timeout(r)));
        if let Some(i) = last_hit {
            hits.push(group[i]);
        }
    }
    hits.sort_by_key(|r| (r.record.produced_at, r.id));
    assert_eq!(ids(&out), ids_of(hits));
}

// ---------------------------------------------------------------- errors

/// A source that counts reads, to prove errors come before any data.
struct Counting {
    inner: MemorySource,
    reads: Cell<usize>,
}

impl RecordSource for Counting {
    fn scan(&self, request: &ScanRequest) -> almanac::Result<RecordIter<'_>> {
        self.reads.set(self.reads.get() + 1);
        self.inner.scan(request)
    }
    fn latest_records(
        &self,
        kinds: Option<&[String]>,
        targets: Option<&[String]>,
    ) -> almanac::Result<Vec<StoredRecord>> {
        self.reads.set(self.reads.get() + 1);
        self.inner.latest_records(kinds, targets)
    }
    fn kind_names(&self) -> almanac::Result<Vec<String>> {
        self.inner.kind_names()
    }
    fn targets(&self) -> almanac::Result<Vec<TargetInfo>> {
        self.reads.set(self.reads.get() + 1);
        self.inner.targets()
    }
    fn producer_ids(&self) -> almanac::Result<Vec<String>> {
        self.inner.producer_ids()
    }
    fn describe_scan(&self, request: &ScanRequest) -> almanac::Result<ScanDescription> {
        self.inner.describe_scan(request)
    }
}

fn check_error(text: &str, message: &str, column: usize) {
    let err = query::prepare(text).expect_err(text);
    assert_eq!(err.to_string(), message, "{text}");
    assert_eq!(err.column_in(text), Some(column), "{text}");
}

#[test]
fn the_spec_error_cases_point_at_the_problem() {
    check_error(
        "ingestion_volume | where rows > 0",
        "unknown field `rows`; did you mean `payload.rows`?",
        26,
    );
    check_error(
        "recon_result | stats cnt() by target",
        "unknown function `cnt`",
        22,
    );
    check_error(
        "recon_result | stats countt() by target",
        "unknown function `countt`; did you mean `count()`?",
        22,
    );
    check_error(
        "k | where len(payload.a, payload.b) > 1",
        "function `len` takes 1 argument, found 2",
        11,
    );
    check_error(
        "k | stats percentile(payload.rows)",
        "function `percentile` takes 2 arguments, found 1",
        11,
    );
    // `bin(T, D)`: a constant D that is not a positive duration, or a
    // constant T that is not an instant, is the wrong arguments.
    check_error(
        "k | stats count() by bin(produced_at, 5)",
        "bin takes a positive duration as D (such as `1d`), found `5`",
        39,
    );
    check_error(
        "k | extend b = bin(produced_at, 0d)",
        "bin takes a positive duration as D (such as `1d`), found `0s`",
        33,
    );
    check_error(
        "k | extend b = bin(true, 1h)",
        "bin takes an instant as T, found `true`",
        20,
    );
    check_error(
        "k | extend b = bin(null, 1h)",
        "bin takes an instant as T, found null",
        20,
    );
    check_error(
        "k | extend b = bin(produced_at, -1d)",
        "bin takes a positive duration as D (such as `1d`), found `-1d`",
        33,
    );
    check_error(
        "k | extend b = bin(produced_at, now)",
        "bin takes a positive duration as D (such as `1d`), found `now`",
        33,
    );
    let err = query::prepare("k | where").expect_err("parse error");
    assert!(
        err.render("k | where").contains("column 10"),
        "{}",
        err.render("k | where")
    );
}

#[test]
fn an_unbound_parameter_is_refused_before_any_data_is_read() {
    let source = Counting {
        inner: MemorySource::new(dataset()),
        reads: Cell::new(0),
    };
    let prepared = query::prepare("*{table=$table} | where payload.rows > $min").expect("prepares");
    assert_eq!(prepared.param_names(), ["table", "min"]);
    let mut params = Params::new();
    params.insert_str("table", "orders");
    let err = prepared
        .run(&source, &params, &ExecOptions::default())
        .expect_err("unbound");
    assert!(
        matches!(&err, almanac::Error::Query(QueryError::UnboundParameter { name, .. }) if name == "min"),
        "{err}"
    );
    assert_eq!(source.reads.get(), 0);
    // Bound, the same prepared query runs, again and again.
    params.insert_int("min", 500);
    let first = prepared
        .run(&source, &params, &ExecOptions::default())
        .expect("runs");
    params.insert_int("min", 900);
    let second = prepared
        .run(&source, &params, &ExecOptions::default())
        .expect("runs");
    assert!(second.rows.len() <= first.rows.len());
    assert!(source.reads.get() > 0);
}

/// A parameter given as `bin`'s D is checked when bound, as a literal is
/// when compiled, before any data is read.
#[test]
fn a_bin_width_parameter_is_checked_when_bound() {
    let source = Counting {
        inner: MemorySource::new(dataset()),
        reads: Cell::new(0),
    };
    let prepared =
        query::prepare("ingestion_volume | stats count() by bin(produced_at, $d) as day")
            .expect("prepares");
    let mut params = Params::new();
    params.insert_int("d", 5);
    let err = prepared
        .run(&source, &params, &ExecOptions::default())
        .expect_err("not a duration");
    assert!(err.to_string().contains("positive duration"), "{err}");
    assert_eq!(source.reads.get(), 0);
    params.insert_binding("d=1d").expect("a duration");
    let out = prepared
        .run(&source, &params, &ExecOptions::default())
        .expect("runs");
    assert!(!out.rows.is_empty());
}

/// Window frame offsets are literals, so they may be parameters: bound,
/// they run like the literal frame; a value that is not an integer, or
/// an empty frame, is refused when bound, before any data is read.
#[test]
fn window_frame_offsets_may_be_parameters() {
    let literal =
        run("ingestion_volume | window count() as c by target rows -2 .. 0 | select id, c");
    let text = "ingestion_volume | window count() as c by target rows $a .. $b | select id, c";
    let prepared = query::prepare(text).expect("prepares");
    assert_eq!(prepared.param_names(), ["a", "b"]);
    assert_eq!(prepared.query().to_string(), text);
    let mut params = Params::new();
    params.insert_int("a", -2).insert_int("b", 0);
    assert_eq!(run_with(text, &params), literal);
    let source = Counting {
        inner: MemorySource::new(dataset()),
        reads: Cell::new(0),
    };
    let (at_a, at_b) = (text.find("$a").unwrap(), text.find("$b").unwrap());
    let frame = text.find("$a .. $b").unwrap();
    for (a, b, message, at) in [
        ("1", "0", "is empty", frame),
        ("\"x\"", "0", "must be an integer", at_a),
        ("1.5", "2", "must be an integer", at_a),
        ("0", "true", "must be an integer", at_b),
    ] {
        let mut params = Params::new();
        params
            .insert_binding(&format!("a={a}"))
            .unwrap()
            .insert_binding(&format!("b={b}"))
            .unwrap();
        let err = prepared
            .run(&source, &params, &ExecOptions::default())
            .expect_err(message);
        assert!(err.to_string().contains(message), "{a} .. {b}: {err}");
        assert_eq!(
            query_span(&err).map(|s| s.start),
            Some(at),
            "{a} .. {b}: {err}"
        );
    }
    // An unbound offset is named where it is written, not the whole frame.
    let mut params = Params::new();
    params.insert_int("a", -2);
    let err = prepared
        .run(&source, &params, &ExecOptions::default())
        .expect_err("unbound");
    assert!(err.to_string().contains("`$b` is not bound"), "{err}");
    assert_eq!(
        query_span(&err).map(|s| (s.start, s.end)),
        Some((at_b, at_b + 2))
    );
    assert_eq!(source.reads.get(), 0);
}

/// The span a query error points at.
fn query_span(err: &almanac::Error) -> Option<almanac::query::ast::Span> {
    match err {
        almanac::Error::Query(e) => e.span(),
        _ => None,
    }
}

/// A function or aggregate given a constant it can never use (it would give
/// null, or count nothing, on every row) is "the wrong arguments": refused
/// before any data is read, at the argument, for a literal when prepared and
/// for a parameter's value when bound.
#[test]
fn constant_arguments_of_the_wrong_kind_are_refused() {
    for (text, message) in [
        (
            "k | select lower(1) as a",
            "lower takes a string, found `1`",
        ),
        ("k | select abs(\"x\") as a", "abs takes a number"),
        (
            "k | select len(true) as a",
            "len takes a string or an array",
        ),
        (
            "k | select timestamp(\"soon\") as a",
            "timestamp takes an instant",
        ),
        ("k | stats avg(\"x\")", "avg takes a number"),
        ("k | stats countif(5)", "countif takes a condition"),
        (
            "k | stats max(false)",
            "max takes a number, a string or an instant",
        ),
        (
            "k | window stddev(now) as s rows -1 .. 0",
            "stddev takes a number, found `now`",
        ),
        (
            "k | select lower(-5) as a",
            "lower takes a string, found `-5`",
        ),
        (
            "k | select abs(-1d) as a",
            "abs takes a number, found `-1d`",
        ),
    ] {
        let err = query::prepare(text).expect_err(text);
        assert!(err.to_string().contains(message), "{text}: {err}");
        let column = text.find(['(']).map(|i| i + 1);
        assert_eq!(err.span().map(|s| s.start), column, "{text}: {err}");
    }
    // What can be right on some row, or is null, still runs.
    for text in [
        "k | select abs(-5) as a, lower(null) as b, len(\"abc\") as c, timestamp(\"2024-01-01\") as d",
        "k | select lower(payload.name) as a, abs(payload.rows) as b",
        "k | stats sum(1), countif(true), min(\"a\"), count(5), first(true)",
    ] {
        query::prepare(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    }
    let source = Counting {
        inner: MemorySource::new(dataset()),
        reads: Cell::new(0),
    };
    for (text, value, message) in [
        (
            "ingestion_volume | select lower($x) as a",
            "1",
            "lower takes a string",
        ),
        (
            "ingestion_volume | stats sum($x)",
            "\"a\"",
            "sum takes a number",
        ),
        (
            "ingestion_volume | window countif($x) as c by target rows -1 .. 0",
            "3",
            "countif takes a condition",
        ),
    ] {
        let prepared = query::prepare(text).expect(text);
        let mut params = Params::new();
        params.insert_binding(&format!("x={value}")).unwrap();
        let err = prepared
            .run(&source, &params, &ExecOptions::default())
            .expect_err(text);
        assert!(err.to_string().contains(message), "{text}: {err}");
        let at = text.find("$x").unwrap();
        assert_eq!(query_span(&err).map(|s| s.start), Some(at), "{text}: {err}");
    }
    assert_eq!(source.reads.get(), 0);
}

#[test]
fn parameters_cannot_change_the_query_shape() {
    let mut params = Params::new();
    params.insert_str("o", "fail\" or true or \"");
    let out = run_with("recon_result | where payload.outcome = $o", &params);
    assert!(out.rows.is_empty());
}

#[test]
fn absurd_queries_are_refused() {
    let parens = format!("k | where {}x{}", "(".repeat(100_000), ")".repeat(100_000));
    assert!(matches!(
        query::prepare(&parens),
        Err(QueryError::TooLong { .. })
    ));
    let parens = format!("k | where {}x{}", "(".repeat(30_000), ")".repeat(30_000));
    assert!(matches!(
        query::prepare(&parens),
        Err(QueryError::TooDeep { .. })
    ));
    let huge = format!("k | where payload.a = \"{}\"", "x".repeat(4 << 20));
    assert!(matches!(
        query::prepare(&huge),
        Err(QueryError::TooLong { .. })
    ));
    let nots = format!("k | where {}true", "not ".repeat(15_000));
    assert!(matches!(
        query::prepare(&nots),
        Err(QueryError::TooDeep { .. })
    ));
}

#[test]
fn explain_shows_the_access_path_and_the_row_steps() {
    let source = MemorySource::new(dataset());
    let prepared = query::prepare(r#"recon_result{table="orders", job_id="job-1"} | since 7d | where payload.outcome = "fail" | stats count() by target"#)
        .expect("prepares");
    let options = ExecOptions {
        now: now(),
        use_indexes: true,
    };
    let text = prepared
        .explain(&source, &Params::new(), &options)
        .expect("explains");
    assert!(text.contains("access: scan"), "{text}");
    assert!(text.contains("time: [2024-01-24T00:00:00Z, ..)"), "{text}");
    assert!(
        text.contains(
            "targets: oracle_prod:itcftth.orders, pg_main:public.orders, pg_replica:public.orders"
        ),
        "{text}"
    );
    assert!(text.contains("index: target"), "{text}");
    assert!(text.contains("1. filter job_id=\"job-1\""), "{text}");
    assert!(
        text.contains("since 7d  (answered by the access path)"),
        "{text}"
    );
    assert!(
        text.contains("2. where payload.outcome = \"fail\""),
        "{text}"
    );
    let latest = query::prepare(r#"recon_result{table="orders"} | latest"#).expect("prepares");
    let text = latest
        .explain(&source, &Params::new(), &options)
        .expect("explains");
    assert!(text.contains("access: latest table"), "{text}");
    // The same grouping named otherwise also reads the latest table; `by
    // target` over several kinds is another grouping and scans.
    for (q, latest_table) in [
        ("recon_result | latest by target", true),
        ("* | latest by target, kind", true),
        ("* | latest by target", false),
        ("recon_result | latest by kind", false),
    ] {
        let text = query::prepare(q)
            .expect("prepares")
            .explain(&source, &Params::new(), &options)
            .expect("explains");
        assert_eq!(
            text.contains("access: latest table"),
            latest_table,
            "{q}: {text}"
        );
    }
}

// ---------------------------------------------------------------- projections

/// A source that ignores the request's projection (every record whole),
/// and notes whether a projection was asked for.
struct Whole {
    inner: MemorySource,
    projected: Cell<bool>,
}

impl RecordSource for Whole {
    fn scan(&self, request: &ScanRequest) -> almanac::Result<RecordIter<'_>> {
        self.projected
            .set(self.projected.get() || request.projection.is_some());
        let whole = ScanRequest {
            projection: None,
            ..request.clone()
        };
        self.inner.scan(&whole)
    }
    fn latest_records(
        &self,
        kinds: Option<&[String]>,
        targets: Option<&[String]>,
    ) -> almanac::Result<Vec<StoredRecord>> {
        self.inner.latest_records(kinds, targets)
    }
    fn kind_names(&self) -> almanac::Result<Vec<String>> {
        self.inner.kind_names()
    }
    fn targets(&self) -> almanac::Result<Vec<TargetInfo>> {
        self.inner.targets()
    }
    fn producer_ids(&self) -> almanac::Result<Vec<String>> {
        self.inner.producer_ids()
    }
    fn describe_scan(&self, request: &ScanRequest) -> almanac::Result<ScanDescription> {
        self.inner.describe_scan(request)
    }
}

/// Queries whose output is not records get a projection; decoding only it
/// gives the same rows as decoding whole records, whichever fields, labels
/// and stages the query reads.
#[test]
fn projected_records_give_the_same_rows_as_whole_ones() {
    let queries = [
        "* | stats count(), avg(payload.rows) by target, bin(produced_at, 1d)",
        "* | stats count() by kind, producer_id",
        "* | select id, kind, target, target.source_id, target.schema, target.table, target.extras",
        "* | select context, context.run_id, context.job_id, context.namespace, context.extras.tenant",
        "* | select version, quality, payload, extras",
        "* | select payload.columns[0].name, payload.outcome, extras.window_end",
        "* | where exists(payload.rows) | stats count() by payload.outcome",
        r#"*{producer=~"rec.*", run_id!="run-3", tenant="acme"} | stats count()"#,
        r#"*{job_id="job-1"} | stats count() by target"#,
        r#"*{namespace=""} | stats count()"#,
        "* | extend r = payload.rows | sort r desc | limit 20 | select id, r, payload.outcome",
        "* | latest by target | stats count() by payload.outcome",
        "* | window count() as n by extras.window_start rows -1 .. 0 | select id, n",
        "* | where payload.rows > 100 | stats sum(payload.rows), first(payload.outcome), last(kind)",
        "* | where len(payload.columns) > 1 | select target",
    ];
    for text in queries {
        let prepared = query::prepare(text).unwrap_or_else(|e| panic!("{}", e.render(text)));
        let options = ExecOptions {
            now: now(),
            use_indexes: true,
        };
        let projected = MemorySource::new(dataset());
        let whole = Whole {
            inner: MemorySource::new(dataset()),
            projected: Cell::new(false),
        };
        let a = prepared.run(&projected, &Params::new(), &options).unwrap();
        let b = prepared.run(&whole, &Params::new(), &options).unwrap();
        assert!(whole.projected.get(), "no projection for {text}");
        assert!(!a.rows.is_empty(), "no rows for {text}");
        assert_eq!(a, b, "{text}");
    }
}
