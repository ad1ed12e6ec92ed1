//! The six standard kinds of spec §1a, registered in every new store.
//! (placeholder: schemas land with the validator)

use super::{Bucket, KindSpec, Retention};

/// The standard kinds with their schemas, retention, bucket and indexed paths.
pub fn standard_kinds() -> Vec<KindSpec> {
    let mut kinds = Vec::new();
    for (name, bucket) in [
        ("ingestion_volume", Bucket::Day),
        ("ingestion_runtime", Bucket::Day),
        ("recon_result", Bucket::Day),
        ("schema_snapshot", Bucket::Month),
        ("statistics_snapshot", Bucket::Month),
        ("catalog_diff", Bucket::Month),
    ] {
        let mut spec = KindSpec::new(name, "");
        spec.bucket = bucket;
        spec.retention = Retention::Forever;
        kinds.push(spec);
    }
    kinds
}
