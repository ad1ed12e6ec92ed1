//! The six standard kinds of spec §1a, registered in every new store.
//!
//! Each has one payload schema (version 1) in JSON Schema draft 2020-12 that
//! says exactly what the spec's table says: the required fields, the optional
//! fields typed "when present", and nothing against other fields.

use serde_json::{json, Value};

use super::{Bucket, KindSpec, Retention};

/// The paths every standard kind summarizes per partition: the window of
/// time a record covers. Windows follow `produced_at`, so a partition's
/// smallest and largest window bounds prune as well as an index would,
/// without the two index entries a record (about a fifth of a bulk load's
/// time; see benches/README.md).
const WINDOW_PATHS: [&str; 2] = ["extras.window_start", "extras.window_end"];

/// The standard kinds with their schemas, retention, bucket and indexed paths.
///
/// Every one is kept forever (nothing is lost unless an operator sets a
/// retention); high-frequency kinds are partitioned by day, snapshots by month.
pub fn standard_kinds() -> Vec<KindSpec> {
    vec![
        standard(
            "ingestion_volume",
            "rows (and bytes) an ingestion run loaded into a table, with its filter and watermark",
            Bucket::Day,
            &[],
            object_schema(
                &["rows"],
                json!({
                    "rows": count(),
                    "bytes": count(),
                    "filter": {"type": "string"},
                    "watermark": {"type": "string", "format": "date-time"},
                    "slices": count(),
                }),
            ),
        ),
        standard(
            "ingestion_runtime",
            "how long an ingestion run took, in seconds, and how often it retried",
            Bucket::Day,
            &[],
            object_schema(
                &["duration_s"],
                json!({
                    "duration_s": {"type": "number", "minimum": 0},
                    "retries": count(),
                }),
            ),
        ),
        standard(
            "recon_result",
            "the outcome of a reconciliation check on a table, with the ingestion runs it covers",
            Bucket::Day,
            &["payload.outcome", "payload.ingestion_run_ids"],
            object_schema(
                &["outcome"],
                json!({
                    "outcome": {"type": "string", "enum": ["pass", "fail", "timeout", "error"]},
                    "observed": {"type": "number"},
                    "threshold": {"type": "number"},
                    "tolerance": {"type": "object"},
                    "ingestion_run_ids": strings(),
                    "drill_down": strings(),
                    "variability": {"type": "object"},
                }),
            ),
        ),
        standard(
            "schema_snapshot",
            "the columns of a table as a collector saw them: name, type, nullability, precision",
            Bucket::Month,
            &[],
            object_schema(
                &["columns"],
                json!({
                    "columns": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "type"],
                            "properties": {
                                "name": {"type": "string"},
                                "type": {"type": "string"},
                                "nullable": {"type": "boolean"},
                                "precision": {"type": "integer"},
                            },
                            "additionalProperties": true,
                        },
                    },
                }),
            ),
        ),
        standard(
            "statistics_snapshot",
            "statistics a collector computed on a table: row count, null fraction",
            Bucket::Month,
            &[],
            object_schema(
                &[],
                json!({
                    "row_count": count(),
                    "null_fraction": {"type": "number", "minimum": 0, "maximum": 1},
                }),
            ),
        ),
        standard(
            "catalog_diff",
            "one change to a table's definition in the catalog, and whether it breaks readers",
            Bucket::Month,
            &[],
            object_schema(
                &["change"],
                json!({
                    "change": {"type": "string"},
                    "column": {"type": "string"},
                    "breaking": {"type": "boolean"},
                }),
            ),
        ),
    ]
}

/// A standard kind: kept forever, one schema version, windows summarized.
fn standard(
    name: &str,
    description: &str,
    bucket: Bucket,
    payload_paths: &[&str],
    schema: Value,
) -> KindSpec {
    let mut spec = KindSpec::new(name, description);
    spec.schemas = vec![schema];
    spec.retention = Retention::Forever;
    spec.bucket = bucket;
    spec.indexed_paths = payload_paths
        .iter()
        .map(|path| (*path).to_owned())
        .collect();
    spec.summarized_paths = WINDOW_PATHS.iter().map(|path| (*path).to_owned()).collect();
    spec
}

/// A payload schema: an object with these required fields and typed
/// properties, open to any other field.
fn object_schema(required: &[&str], properties: Value) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": true,
    })
}

/// An integer >= 0.
fn count() -> Value {
    json!({"type": "integer", "minimum": 0})
}

/// An array of strings.
fn strings() -> Value {
    json!({"type": "array", "items": {"type": "string"}})
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::kinds::PayloadSchema;

    const COUNT: &str = "must be an integer >= 0";

    /// Validates `payload` against the schema of standard kind `kind`;
    /// `expected` is `None` when accepted, else the error's field and reason.
    fn check(kind: &str, payload: Value, expected: Option<(&str, &str)>) {
        let kinds = standard_kinds();
        let spec = kinds
            .iter()
            .find(|spec| spec.name == kind)
            .unwrap_or_else(|| panic!("no standard kind {kind}"));
        let schema = PayloadSchema::compile(&spec.schemas[0]).expect("standard schema compiles");
        let Value::Object(payload) = payload else {
            panic!("test payload is not an object: {payload}");
        };
        let got = schema.validate(&payload).map_err(|e| (e.field, e.reason));
        let expected = match expected {
            None => Ok(()),
            Some((field, reason)) => Err((field.to_owned(), reason.to_owned())),
        };
        assert_eq!(
            got,
            expected,
            "{kind} payload {}",
            Value::Object(payload.clone())
        );
    }

    #[test]
    fn registry_attributes() {
        let kinds = standard_kinds();
        let names: Vec<&str> = kinds.iter().map(|spec| spec.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "ingestion_volume",
                "ingestion_runtime",
                "recon_result",
                "schema_snapshot",
                "statistics_snapshot",
                "catalog_diff",
            ]
        );
        for spec in &kinds {
            let expected_bucket = match spec.name.as_str() {
                "ingestion_volume" | "ingestion_runtime" | "recon_result" => Bucket::Day,
                _ => Bucket::Month,
            };
            assert_eq!(spec.bucket, expected_bucket, "{}", spec.name);
            assert_eq!(spec.retention, Retention::Forever, "{}", spec.name);
            assert_eq!(spec.latest_version(), 1, "{}", spec.name);
            assert!(!spec.description.is_empty(), "{}", spec.name);
            let expected_paths = match spec.name.as_str() {
                "recon_result" => vec!["payload.outcome", "payload.ingestion_run_ids"],
                _ => vec![],
            };
            assert_eq!(spec.indexed_paths, expected_paths, "{}", spec.name);
            assert_eq!(
                spec.summarized_paths,
                ["extras.window_start", "extras.window_end"],
                "{}",
                spec.name
            );
        }
    }

    #[test]
    fn ingestion_volume() {
        let kind = "ingestion_volume";
        check(kind, json!({"rows": 0}), None);
        check(
            kind,
            json!({"rows": 1843221, "bytes": 734003200, "filter": "year_month = '2024-01'",
                   "watermark": "2024-01-10T05:00:00Z", "slices": 4}),
            None,
        );
        check(
            kind,
            json!({"rows": 1, "watermark": "2024-01-10T07:00:00+02:00"}),
            None,
        );
        // JSON Schema counts 1.0 as an integer (draft 2020-12 compares values).
        check(kind, json!({"rows": 1.0}), None);
        check(
            kind,
            json!({"rows": 1, "source_file": "a.csv", "nested": {"x": [1]}}),
            None,
        );

        check(kind, json!({}), Some(("payload.rows", "is required")));
        check(
            kind,
            json!({"bytes": 5}),
            Some(("payload.rows", "is required")),
        );
        check(kind, json!({"rows": -1}), Some(("payload.rows", COUNT)));
        check(kind, json!({"rows": 2.5}), Some(("payload.rows", COUNT)));
        check(kind, json!({"rows": "5"}), Some(("payload.rows", COUNT)));
        check(kind, json!({"rows": null}), Some(("payload.rows", COUNT)));
        check(
            kind,
            json!({"rows": 1, "bytes": -1}),
            Some(("payload.bytes", COUNT)),
        );
        check(
            kind,
            json!({"rows": 1, "bytes": "1k"}),
            Some(("payload.bytes", COUNT)),
        );
        check(
            kind,
            json!({"rows": 1, "slices": -3}),
            Some(("payload.slices", COUNT)),
        );
        check(
            kind,
            json!({"rows": 1, "slices": 0.5}),
            Some(("payload.slices", COUNT)),
        );
        check(
            kind,
            json!({"rows": 1, "filter": 3}),
            Some(("payload.filter", "must be a string")),
        );
        let rfc3339 = "must be an RFC 3339 date-time string with an offset";
        for watermark in [
            json!("yesterday"),
            json!("2024-01-10T05:00:00"),
            json!(20240110),
        ] {
            check(
                kind,
                json!({"rows": 1, "watermark": watermark}),
                Some(("payload.watermark", rfc3339)),
            );
        }
    }

    #[test]
    fn ingestion_runtime() {
        let kind = "ingestion_runtime";
        check(kind, json!({"duration_s": 0}), None);
        check(kind, json!({"duration_s": 12.5, "retries": 2}), None);
        check(kind, json!({"duration_s": 1, "engine": "spark"}), None);

        check(
            kind,
            json!({"retries": 1}),
            Some(("payload.duration_s", "is required")),
        );
        let seconds = "must be a number >= 0";
        check(
            kind,
            json!({"duration_s": -0.1}),
            Some(("payload.duration_s", seconds)),
        );
        check(
            kind,
            json!({"duration_s": "12"}),
            Some(("payload.duration_s", seconds)),
        );
        check(
            kind,
            json!({"duration_s": 1, "retries": -1}),
            Some(("payload.retries", COUNT)),
        );
        check(
            kind,
            json!({"duration_s": 1, "retries": 1.5}),
            Some(("payload.retries", COUNT)),
        );
    }

    #[test]
    fn recon_result() {
        let kind = "recon_result";
        for outcome in ["pass", "fail", "timeout", "error"] {
            check(kind, json!({"outcome": outcome}), None);
        }
        check(
            kind,
            json!({"outcome": "fail", "observed": 1843000, "threshold": 0.01,
                   "tolerance": {"relative": 0.01}, "ingestion_run_ids": ["run-1", "run-2"],
                   "drill_down": ["by_day"], "variability": {"sigma": 2.5}}),
            None,
        );
        check(
            kind,
            json!({"outcome": "pass", "checker": "rowcount"}),
            None,
        );

        let outcome = r#"must be one of "pass", "fail", "timeout", "error""#;
        check(kind, json!({}), Some(("payload.outcome", "is required")));
        check(
            kind,
            json!({"outcome": "maybe"}),
            Some(("payload.outcome", outcome)),
        );
        check(
            kind,
            json!({"outcome": "PASS"}),
            Some(("payload.outcome", outcome)),
        );
        check(
            kind,
            json!({"outcome": 1}),
            Some(("payload.outcome", outcome)),
        );
        let number = "must be a number";
        check(
            kind,
            json!({"outcome": "pass", "observed": "high"}),
            Some(("payload.observed", number)),
        );
        check(
            kind,
            json!({"outcome": "pass", "threshold": null}),
            Some(("payload.threshold", number)),
        );
        check(
            kind,
            json!({"outcome": "pass", "tolerance": [0.1]}),
            Some(("payload.tolerance", "must be an object")),
        );
        check(
            kind,
            json!({"outcome": "pass", "ingestion_run_ids": "run-1"}),
            Some(("payload.ingestion_run_ids", "must be an array")),
        );
        check(
            kind,
            json!({"outcome": "pass", "ingestion_run_ids": ["run-1", 2]}),
            Some(("payload.ingestion_run_ids[1]", "must be a string")),
        );
        check(
            kind,
            json!({"outcome": "pass", "drill_down": [true]}),
            Some(("payload.drill_down[0]", "must be a string")),
        );
        check(
            kind,
            json!({"outcome": "pass", "variability": 0.3}),
            Some(("payload.variability", "must be an object")),
        );
    }

    #[test]
    fn schema_snapshot() {
        let kind = "schema_snapshot";
        check(kind, json!({"columns": []}), None);
        check(
            kind,
            json!({"columns": [
                {"name": "id", "type": "NUMBER", "nullable": false, "precision": 38},
                {"name": "label", "type": "VARCHAR2", "comment": "free text"},
            ], "collected_by": "oracle"}),
            None,
        );

        check(kind, json!({}), Some(("payload.columns", "is required")));
        check(
            kind,
            json!({"columns": {"id": "NUMBER"}}),
            Some(("payload.columns", "must be an array")),
        );
        check(
            kind,
            json!({"columns": ["id"]}),
            Some(("payload.columns[0]", "must be an object")),
        );
        check(
            kind,
            json!({"columns": [{"type": "NUMBER"}]}),
            Some(("payload.columns[0].name", "is required")),
        );
        check(
            kind,
            json!({"columns": [{"name": "id", "type": "NUMBER"}, {"name": "label"}]}),
            Some(("payload.columns[1].type", "is required")),
        );
        check(
            kind,
            json!({"columns": [{"name": "id", "type": "NUMBER"}, {"name": "label", "type": 3}]}),
            Some(("payload.columns[1].type", "must be a string")),
        );
        check(
            kind,
            json!({"columns": [{"name": 1, "type": "NUMBER"}]}),
            Some(("payload.columns[0].name", "must be a string")),
        );
        check(
            kind,
            json!({"columns": [{"name": "id", "type": "NUMBER", "nullable": "yes"}]}),
            Some(("payload.columns[0].nullable", "must be a boolean")),
        );
        for precision in [json!(1.5), json!("38")] {
            check(
                kind,
                json!({"columns": [{"name": "id", "type": "NUMBER", "precision": precision}]}),
                Some(("payload.columns[0].precision", "must be an integer")),
            );
        }
    }

    #[test]
    fn statistics_snapshot() {
        let kind = "statistics_snapshot";
        check(kind, json!({}), None);
        check(kind, json!({"row_count": 10, "null_fraction": 0}), None);
        check(
            kind,
            json!({"row_count": 0, "null_fraction": 1, "distinct": 4}),
            None,
        );
        check(kind, json!({"null_fraction": 0.25}), None);

        check(
            kind,
            json!({"row_count": -1}),
            Some(("payload.row_count", COUNT)),
        );
        check(
            kind,
            json!({"row_count": 2.5}),
            Some(("payload.row_count", COUNT)),
        );
        let fraction = "must be a number >= 0 and <= 1";
        for null_fraction in [json!(1.5), json!(-0.1), json!("0.5")] {
            check(
                kind,
                json!({"null_fraction": null_fraction}),
                Some(("payload.null_fraction", fraction)),
            );
        }
    }

    #[test]
    fn catalog_diff() {
        let kind = "catalog_diff";
        check(kind, json!({"change": "column_added"}), None);
        check(
            kind,
            json!({"change": "column_retyped", "column": "amount", "breaking": true}),
            None,
        );
        check(
            kind,
            json!({"change": "table_renamed", "from": "a", "to": "b"}),
            None,
        );

        check(
            kind,
            json!({"column": "a"}),
            Some(("payload.change", "is required")),
        );
        check(
            kind,
            json!({"change": 1}),
            Some(("payload.change", "must be a string")),
        );
        check(
            kind,
            json!({"change": "column_dropped", "column": ["a"]}),
            Some(("payload.column", "must be a string")),
        );
        check(
            kind,
            json!({"change": "column_dropped", "breaking": "yes"}),
            Some(("payload.breaking", "must be a boolean")),
        );
    }
}
