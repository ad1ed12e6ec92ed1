//! The in-memory view of the kind registry: specs plus compiled schemas.
//! The storage engine persists the specs; this type checks records.

use std::collections::BTreeMap;

use super::{Bucket, GovernanceError, KindError, KindSpec, PayloadSchema, Retention};
use crate::model::{check_kind_name, MetadataRecord, Timestamp};

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

    /// The retention of a kind: its registered retention, or forever.
    pub fn retention_of(&self, kind: &str) -> Retention {
        self.get(kind).map_or(Retention::Forever, |s| s.retention)
    }

    /// Governance checks for one record at `now`: registered kind (when
    /// `strict`), schema version, payload schema, and retention.
    pub fn check(
        &self,
        record: &MetadataRecord,
        now: Timestamp,
        strict: bool,
    ) -> Result<(), GovernanceError> {
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
        if let Some(cutoff) = kind.spec.retention.cutoff(now) {
            if record.produced_at < cutoff {
                return Err(GovernanceError::new(
                    "produced_at",
                    format!(
                        "is {}, older than the retention of kind `{}` ({}): it would expire at once",
                        record.produced_at, record.kind, kind.spec.retention
                    ),
                ));
            }
        }
        Ok(())
    }
}
