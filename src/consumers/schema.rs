//! Schema changes: differences between successive `schema_snapshot` records
//! of a table, each flagged breaking or not, so an orchestrator can hold an
//! ingestion back on a breaking change.
//!
//! The rule (from the point of view of a loader writing into the table and
//! of readers reading it):
//!
//! | change | breaking |
//! |---|---|
//! | column dropped | yes |
//! | column retyped | yes |
//! | column added, nullable (or nullability unknown) | no |
//! | column added, not nullable | yes: loaders that do not know it fail |
//! | nullable → not nullable | yes: rows with nulls no longer load |
//! | not nullable → nullable | no |
//! | precision lowered, or a limit set where there was none | yes: values may no longer fit |
//! | precision raised, or a limit removed | no |
//!
//! Columns are matched by exact name; types compare trimmed and
//! case-insensitively (`varchar` = `VARCHAR`); a missing `nullable` counts
//! as nullable (the SQL default). Column order is not compared. When a
//! snapshot names a column twice, the first occurrence counts.

use super::ConsumerError;
use crate::model::{MetadataTarget, TimeRange, Timestamp};
use crate::producers::{Column, SchemaSnapshot, StandardPayload};
use crate::repository::MetadataRepository;

/// What happened to one column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// The column is new.
    Added {
        /// Its type.
        data_type: String,
        /// Whether it accepts nulls (`None`: not reported).
        nullable: Option<bool>,
    },
    /// The column is gone.
    Dropped {
        /// The type it had.
        data_type: String,
    },
    /// The column's type changed.
    Retyped {
        /// The old type.
        from: String,
        /// The new type.
        to: String,
    },
    /// The column's nullability changed.
    NullabilityChanged {
        /// Whether it accepted nulls before.
        from: bool,
        /// Whether it accepts nulls now.
        to: bool,
    },
    /// The column's precision (or length) changed.
    PrecisionChanged {
        /// The old precision (`None`: none).
        from: Option<i64>,
        /// The new precision (`None`: none).
        to: Option<i64>,
    },
}

impl ChangeKind {
    /// Whether the change breaks loaders or readers (see the module docs).
    pub fn is_breaking(&self) -> bool {
        match self {
            ChangeKind::Dropped { .. } | ChangeKind::Retyped { .. } => true,
            ChangeKind::Added { nullable, .. } => *nullable == Some(false),
            ChangeKind::NullabilityChanged { from, to } => *from && !*to,
            ChangeKind::PrecisionChanged { from, to } => match (from, to) {
                (Some(from), Some(to)) => to < from,
                (None, Some(_)) => true,
                (_, None) => false,
            },
        }
    }
}

/// One change to one column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnChange {
    /// The column's name.
    pub column: String,
    /// What changed.
    pub change: ChangeKind,
    /// Whether the change is breaking (see the module docs).
    pub breaking: bool,
}

impl ColumnChange {
    fn new(column: &str, change: ChangeKind) -> Self {
        ColumnChange {
            column: column.to_owned(),
            breaking: change.is_breaking(),
            change,
        }
    }
}

/// The changes between two successive snapshots of a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaChange {
    /// The id of the older snapshot.
    pub from_id: u64,
    /// The id of the newer snapshot.
    pub to_id: u64,
    /// `produced_at` of the newer snapshot: when the change was seen.
    pub seen_at: Timestamp,
    /// The column changes: dropped and changed columns in the old order,
    /// then added columns in the new order.
    pub changes: Vec<ColumnChange>,
}

impl SchemaChange {
    /// True when any of the changes is breaking.
    pub fn is_breaking(&self) -> bool {
        self.changes.iter().any(|c| c.breaking)
    }
}

/// The changes from the columns `old` to the columns `new` (see the module
/// docs for matching and the breaking rule).
pub fn diff_columns(old: &[Column], new: &[Column]) -> Vec<ColumnChange> {
    let find = |columns: &'_ [Column], name: &str| -> Option<usize> {
        columns.iter().position(|c| c.name == name)
    };
    let mut changes = Vec::new();
    for (i, before) in old.iter().enumerate() {
        if find(old, &before.name) != Some(i) {
            continue; // a repeated name: the first occurrence counts
        }
        let Some(after) = find(new, &before.name).map(|j| &new[j]) else {
            changes.push(ColumnChange::new(
                &before.name,
                ChangeKind::Dropped {
                    data_type: before.data_type.clone(),
                },
            ));
            continue;
        };
        if !before
            .data_type
            .trim()
            .eq_ignore_ascii_case(after.data_type.trim())
        {
            changes.push(ColumnChange::new(
                &before.name,
                ChangeKind::Retyped {
                    from: before.data_type.clone(),
                    to: after.data_type.clone(),
                },
            ));
        }
        let (was_nullable, is_nullable) = (
            before.nullable.unwrap_or(true),
            after.nullable.unwrap_or(true),
        );
        if was_nullable != is_nullable {
            changes.push(ColumnChange::new(
                &before.name,
                ChangeKind::NullabilityChanged {
                    from: was_nullable,
                    to: is_nullable,
                },
            ));
        }
        if before.precision != after.precision {
            changes.push(ColumnChange::new(
                &before.name,
                ChangeKind::PrecisionChanged {
                    from: before.precision,
                    to: after.precision,
                },
            ));
        }
    }
    for (j, added) in new.iter().enumerate() {
        if find(new, &added.name) == Some(j) && find(old, &added.name).is_none() {
            changes.push(ColumnChange::new(
                &added.name,
                ChangeKind::Added {
                    data_type: added.data_type.clone(),
                    nullable: added.nullable,
                },
            ));
        }
    }
    changes
}

/// The changes between successive `schema_snapshot` records of `target`,
/// oldest first, one entry per pair of successive snapshots that differ.
///
/// A snapshot whose payload cannot be read is an error naming the record
/// and the field: skipping it could hide a breaking change.
pub fn schema_changes(
    repository: &dyn MetadataRepository,
    target: &MetadataTarget,
) -> Result<Vec<SchemaChange>, ConsumerError> {
    let history = repository.history(target, SchemaSnapshot::KIND, TimeRange::ALL)?;
    let mut previous: Option<(u64, SchemaSnapshot)> = None;
    let mut out = Vec::new();
    for stored in history {
        let snapshot = SchemaSnapshot::from_payload(&stored.record.payload).map_err(|error| {
            ConsumerError::Payload {
                id: stored.id,
                kind: SchemaSnapshot::KIND.to_owned(),
                error,
            }
        })?;
        if let Some((from_id, before)) = &previous {
            let changes = diff_columns(&before.columns, &snapshot.columns);
            if !changes.is_empty() {
                out.push(SchemaChange {
                    from_id: *from_id,
                    to_id: stored.id,
                    seen_at: stored.record.produced_at,
                    changes,
                });
            }
        }
        previous = Some((stored.id, snapshot));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(old: &[Column], new: &[Column], expected: &[(&str, ChangeKind, bool)]) {
        let got: Vec<(String, ChangeKind, bool)> = diff_columns(old, new)
            .into_iter()
            .map(|c| (c.column, c.change, c.breaking))
            .collect();
        let expected: Vec<(String, ChangeKind, bool)> = expected
            .iter()
            .map(|(n, k, b)| ((*n).to_owned(), k.clone(), *b))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn the_breaking_rule() {
        let id = Column::new("id", "NUMBER").nullable(false).precision(10);
        let ids = [id.clone()];
        check(&ids, &ids, &[]);
        check(
            &ids,
            &[Column::new("id", " number ").nullable(false).precision(10)],
            &[],
        );
        check(
            &ids,
            &[
                id.clone(),
                Column::new("a", "INT"),
                Column::new("b", "INT").nullable(false),
            ],
            &[
                (
                    "a",
                    ChangeKind::Added {
                        data_type: "INT".into(),
                        nullable: None,
                    },
                    false,
                ),
                (
                    "b",
                    ChangeKind::Added {
                        data_type: "INT".into(),
                        nullable: Some(false),
                    },
                    true,
                ),
            ],
        );
        check(
            &ids,
            &[],
            &[(
                "id",
                ChangeKind::Dropped {
                    data_type: "NUMBER".into(),
                },
                true,
            )],
        );
        check(
            &ids,
            &[Column::new("id", "VARCHAR2").nullable(true).precision(12)],
            &[
                (
                    "id",
                    ChangeKind::Retyped {
                        from: "NUMBER".into(),
                        to: "VARCHAR2".into(),
                    },
                    true,
                ),
                (
                    "id",
                    ChangeKind::NullabilityChanged {
                        from: false,
                        to: true,
                    },
                    false,
                ),
                (
                    "id",
                    ChangeKind::PrecisionChanged {
                        from: Some(10),
                        to: Some(12),
                    },
                    false,
                ),
            ],
        );
        check(
            &[Column::new("x", "INT")],
            &[Column::new("x", "INT").nullable(false).precision(5)],
            &[
                (
                    "x",
                    ChangeKind::NullabilityChanged {
                        from: true,
                        to: false,
                    },
                    true,
                ),
                (
                    "x",
                    ChangeKind::PrecisionChanged {
                        from: None,
                        to: Some(5),
                    },
                    true,
                ),
            ],
        );
    }
}
