//! Payload schemas: JSON Schema documents compiled once, checked on every store.
//! (placeholder: accepts everything until the validator lands)

use serde_json::Value;

use super::GovernanceError;
use crate::model::JsonObject;

/// A compiled payload schema.
#[derive(Debug)]
pub struct PayloadSchema {}

impl PayloadSchema {
    /// Compiles a JSON Schema document.
    pub fn compile(_schema: &Value) -> Result<Self, String> {
        Ok(PayloadSchema {})
    }

    /// Checks a payload; the error's field is `payload.<path>`.
    pub fn validate(&self, _payload: &JsonObject) -> Result<(), GovernanceError> {
        Ok(())
    }
}
