//! The in-memory view of the kind registry: specs plus compiled schemas.
//! The storage engine persists the specs; this type checks records.

use std::collections::BTreeMap;

use super::{Bucket, GovernanceError, KindError, KindSpec, PayloadSchema, Retention};
use crate::model::{check_kind_name, MetadataRecord};

/// A kind with its schemas compiled.
#[derive(Debug)]
struct CompiledKind {
    spec: KindSpec,
    schemas: Vec<PayloadSchema>,
}

/// Every registered kind, ready to check records.
#[derive(Debug, Default)]
pub struct KindRegistry {
    kinds: BTreeMap<String, CompiledKind>,
}

impl KindRegistry {
    /// A registry of the given specs; fails on a bad name or schema.
    pub fn from_specs(specs: Vec<KindSpec>) -> Result<Self, KindError> {
        let mut registry = KindRegistry::default();
        for spec in specs {
            registry.insert(spec)?;
        }
        Ok(registry)
    }

    /// Adds or replaces a kind after checking its name and compiling its schemas.
    pub fn insert(&mut self, spec: KindSpec) -> Result<(), KindError> {
        check_kind_name(&spec.name).map_err(|e| KindError::InvalidName(e.reason))?;
        let mut schemas = Vec::with_capacity(spec.schemas.len());
        for (idx, schema) in spec.schemas.iter().enumerate() {
            schemas.push(PayloadSchema::compile(schema).map_err(|reason| {
                KindError::InvalidSchema {
                    kind: spec.name.clone(),
                    reason: format!("version {}: {reason}", idx + 1),
                }
            })?);
        }
        self.kinds
            .insert(spec.name.clone(), CompiledKind { spec, schemas });
        Ok(())
    }

    /// The spec of a kind, if registered.
    pub fn get(&self, kind: &str) -> Option<&KindSpec> {
        self.kinds.get(kind).map(|k| &k.spec)
    }

    /// Every registered spec, by name.
    pub fn specs(&self) -> impl Iterator<Item = &KindSpec> {
        self.kinds.values().map(|k| &k.spec)
    }

    /// The partition bucket for a kind: its registered bucket, or a day.
    pub fn bucket_of(&self, kind: &str) -> Bucket {
        self.get(kind).map_or(Bucket::Day, |s| s.bucket)
    }

    /// The payload or extras paths a kind indexes (none when unregistered).
    pub fn indexed_paths_of(&self, kind: &str) -> &[String] {
        self.get(kind).map_or(&[], |s| s.indexed_paths.as_slice())
    }

    /// The payload or extras paths a kind summarizes per partition (none
    /// when unregistered).
    pub fn summarized_paths_of(&self, kind: &str) -> &[String] {
        self.get(kind)
            .map_or(&[], |s| s.summarized_paths.as_slice())
    }

    /// The retention of a kind: its registered retention, or forever.
    pub fn retention_of(&self, kind: &str) -> Retention {
        self.get(kind).map_or(Retention::Forever, |s| s.retention)
    }

    /// Governance checks for one record: registered kind (when `strict`),
    /// schema version, payload schema. A record older than its kind's
    /// retention is accepted (spec §1a names no such rejection): the next
    /// retention run drops it with its partition, once the whole partition
    /// is past the cutoff.
    pub fn check(&self, record: &MetadataRecord, strict: bool) -> Result<(), GovernanceError> {
        let Some(kind) = self.kinds.get(&record.kind) else {
            if strict {
                return Err(GovernanceError::new(
                    "kind",
                    format!(
                        "names `{}`, which is not registered (strict governance mode)",
                        record.kind
                    ),
                ));
            }
            return Ok(());
        };
        let n_versions = kind.schemas.len() as u64;
        let schema = match record.version {
            None => kind.schemas.last(),
            Some(v) if v >= 1 && v <= n_versions => kind.schemas.get((v - 1) as usize),
            Some(v) => {
                return Err(GovernanceError::new(
                    "version",
                    format!(
                        "names schema version {v} of kind `{}`, which has {}",
                        record.kind,
                        match n_versions {
                            0 => "no schema versions".to_owned(),
                            1 => "only version 1".to_owned(),
                            n => format!("versions 1 to {n}"),
                        }
                    ),
                ))
            }
        };
        if let Some(schema) = schema {
            schema.validate(&record.payload)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::kinds::standard_kinds;
    use crate::model::{MetadataTarget, Timestamp, MICROS_PER_DAY};

    fn now() -> Timestamp {
        Timestamp::parse_rfc3339("2024-03-01T00:00:00Z").expect("valid instant")
    }

    /// A record of `kind` with `payload`, produced `days_ago` days before [`now`].
    fn record(kind: &str, payload: Value, version: Option<u64>, days_ago: i64) -> MetadataRecord {
        let Value::Object(payload) = payload else {
            panic!("test payload is not an object: {payload}");
        };
        let produced_at = now().saturating_add_micros(-days_ago * MICROS_PER_DAY);
        let mut record = MetadataRecord::new(
            kind,
            MetadataTarget::new("oracle_prod", "s", "t"),
            payload,
            produced_at,
            "test.v1",
        );
        record.version = version;
        record
    }

    /// The standard kinds plus `extra`.
    fn registry(extra: Vec<KindSpec>) -> KindRegistry {
        let mut specs = standard_kinds();
        specs.extend(extra);
        KindRegistry::from_specs(specs).expect("specs register")
    }

    /// Runs the governance checks; `expected` is `None` when the
    /// record passes, else the field the error must name.
    fn check(
        registry: &KindRegistry,
        record: &MetadataRecord,
        strict: bool,
        expected: Option<&str>,
    ) {
        let got = registry.check(record, strict);
        match (got, expected) {
            (Ok(()), None) => {}
            (Err(error), Some(field)) => {
                assert_eq!(error.field, field, "{error}");
                assert!(!error.reason.is_empty(), "{error}");
            }
            (got, expected) => panic!("record {record:?}: got {got:?}, expected {expected:?}"),
        }
    }

    /// A kind whose version 1 requires `a` and version 2 requires `b`.
    fn two_version_kind() -> KindSpec {
        let mut spec = KindSpec::new("evolving", "a kind with two schema versions");
        spec.schemas = vec![
            json!({"type": "object", "required": ["a"]}),
            json!({"type": "object", "required": ["b"]}),
        ];
        spec
    }

    #[test]
    fn payloads_are_checked_against_the_kind_schema() {
        let registry = registry(vec![]);
        let valid = record("ingestion_volume", json!({"rows": 5}), None, 0);
        check(&registry, &valid, true, None);
        let invalid = record("ingestion_volume", json!({"rows": -1}), None, 0);
        check(&registry, &invalid, false, Some("payload.rows"));
    }

    #[test]
    fn versions_name_a_registered_schema_version() {
        let registry = registry(vec![]);
        for (version, expected) in [
            (Some(1), None),
            (Some(2), Some("version")),
            (Some(0), Some("version")),
        ] {
            let volume = record("ingestion_volume", json!({"rows": 5}), version, 0);
            check(&registry, &volume, false, expected);
        }
        let error = registry
            .check(
                &record("ingestion_volume", json!({"rows": 5}), Some(2), 0),
                false,
            )
            .expect_err("version 2 is not registered");
        assert!(error.reason.contains("only version 1"), "{error}");
    }

    #[test]
    fn omitted_version_uses_the_newest_schema() {
        let registry = registry(vec![two_version_kind()]);
        let only_a = json!({"a": 1});
        let only_b = json!({"b": 1});
        check(
            &registry,
            &record("evolving", only_b.clone(), None, 0),
            false,
            None,
        );
        check(
            &registry,
            &record("evolving", only_a.clone(), None, 0),
            false,
            Some("payload.b"),
        );
        check(
            &registry,
            &record("evolving", only_a, Some(1), 0),
            false,
            None,
        );
        check(
            &registry,
            &record("evolving", only_b, Some(1), 0),
            false,
            Some("payload.a"),
        );
    }

    #[test]
    fn strict_mode_rejects_unregistered_kinds() {
        let registry = registry(vec![]);
        let unknown = record("custom_probe", json!({"anything": [1, 2]}), None, 0);
        check(&registry, &unknown, true, Some("kind"));
        check(&registry, &unknown, false, None);
        // Strict mode does not get in the way of registered kinds.
        check(
            &registry,
            &record("catalog_diff", json!({"change": "x"}), None, 0),
            true,
            None,
        );
    }

    #[test]
    fn records_older_than_retention_are_accepted() {
        let mut short_lived = KindSpec::new("probe_latency", "latency of a health probe");
        short_lived.retention = Retention::Days(30);
        let registry = registry(vec![short_lived]);
        for days_ago in [29, 31, 10_000] {
            check(
                &registry,
                &record("probe_latency", json!({}), None, days_ago),
                false,
                None,
            );
        }
        // Kept forever: any age is fine.
        check(
            &registry,
            &record("ingestion_volume", json!({"rows": 1}), None, 10_000),
            false,
            None,
        );
    }
}
