//! Payload schemas: JSON Schema documents compiled once, checked on every store.
//!
//! The validator is the `jsonschema` crate with format assertions on, so
//! `"format": "date-time"` really rejects anything but RFC 3339 with an offset.
//! A rejected payload names the first failing path (`payload.columns[0].name`)
//! and says what was expected in plain words, worded from the schema itself
//! where it can be (`must be an integer >= 0`).

use std::fmt::Write as _;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{JsonType, ValidationError, Validator};
use serde_json::Value;

use super::GovernanceError;
use crate::model::JsonObject;

/// A compiled payload schema.
#[derive(Debug)]
pub struct PayloadSchema {
    validator: Validator,
    /// The source document: read only to word error messages.
    document: Value,
}

impl PayloadSchema {
    /// Compiles a JSON Schema document (draft 2020-12 unless its `$schema`
    /// says otherwise), with format assertions on.
    pub fn compile(schema: &Value) -> Result<Self, String> {
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(schema)
            .map_err(|error| {
                let message = lowercase_first(&error.to_string());
                match error.instance_path().as_str() {
                    "" => message,
                    at => format!("{message} (at `{at}`)"),
                }
            })?;
        Ok(PayloadSchema {
            validator,
            document: schema.clone(),
        })
    }

    /// Checks a payload; the error's field is `payload.<path>` of the first
    /// failing value (for a missing property, the property itself). Which
    /// error is first depends only on the schema and the payload: the
    /// validator walks keywords and members in document order.
    pub fn validate(&self, payload: &JsonObject) -> Result<(), GovernanceError> {
        // The validator wants a `&Value` and the record owns a bare map: one
        // conversion per record, nothing more.
        let instance = Value::Object(payload.clone());
        // `is_valid` stops at the first failure and builds no error; only a
        // rejected payload pays for the detailed (and deterministic) first error.
        if self.validator.is_valid(&instance) {
            return Ok(());
        }
        Err(match self.validator.validate(&instance) {
            Err(error) => self.governance_error(&instance, &error),
            Ok(()) => GovernanceError::new("payload", "does not match the schema of its kind"),
        })
    }

    /// Words one validator error as a governance error.
    fn governance_error(&self, instance: &Value, error: &ValidationError<'_>) -> GovernanceError {
        let mut field = field_path(instance, error.instance_path().as_str());
        let reason = match error.kind() {
            ValidationErrorKind::Required { property } => {
                push_property(&mut field, &property_name(property));
                "is required".to_owned()
            }
            ValidationErrorKind::AdditionalProperties { unexpected }
            | ValidationErrorKind::UnevaluatedProperties { unexpected }
                if !unexpected.is_empty() =>
            {
                push_property(&mut field, &unexpected[0]);
                "is not allowed".to_owned()
            }
            ValidationErrorKind::Type { .. }
            | ValidationErrorKind::Minimum { .. }
            | ValidationErrorKind::Maximum { .. }
            | ValidationErrorKind::ExclusiveMinimum { .. }
            | ValidationErrorKind::ExclusiveMaximum { .. }
            | ValidationErrorKind::Enum { .. }
            | ValidationErrorKind::Constant { .. }
            | ValidationErrorKind::Format { .. } => self
                .failed_subschema(error)
                .and_then(expectation)
                .map(|expected| format!("must be {expected}"))
                .unwrap_or_else(|| fallback_reason(error)),
            _ => fallback_reason(error),
        };
        GovernanceError::new(field, reason)
    }

    /// The subschema holding the keyword that failed, when the error's schema
    /// path leads to it in the document (it may not across a `$ref`).
    fn failed_subschema(&self, error: &ValidationError<'_>) -> Option<&Value> {
        let keyword_path = error.schema_path().as_str();
        let (parent, keyword) = keyword_path.rsplit_once('/')?;
        let subschema = self.document.pointer(parent)?;
        let expected_keyword = error.kind().keyword();
        (keyword == expected_keyword && subschema.get(keyword).is_some()).then_some(subschema)
    }
}

/// `payload` followed by a JSON pointer into the payload in dotted form, with
/// array indexes in brackets: `/columns/0/name` is `payload.columns[0].name`.
/// Walks the instance so that an object key made of digits stays a key.
fn field_path(instance: &Value, pointer: &str) -> String {
    let mut field = String::with_capacity("payload".len() + pointer.len() + 4);
    field.push_str("payload");
    let mut current = Some(instance);
    for raw in pointer.split('/').skip(1) {
        let segment = raw.replace("~1", "/").replace("~0", "~");
        current = match current {
            Some(Value::Array(items)) => match segment.parse::<usize>() {
                Ok(idx) => {
                    let _ = write!(field, "[{idx}]");
                    items.get(idx)
                }
                Err(_) => {
                    push_property(&mut field, &segment);
                    None
                }
            },
            Some(Value::Object(members)) => {
                push_property(&mut field, &segment);
                members.get(&segment)
            }
            _ => {
                push_property(&mut field, &segment);
                None
            }
        };
    }
    field
}

fn push_property(field: &mut String, name: &str) {
    field.push('.');
    field.push_str(name);
}

fn property_name(property: &Value) -> String {
    match property {
        Value::String(name) => name.clone(),
        other => other.to_string(),
    }
}

/// What a subschema expects, for `must be ...`: `an integer >= 0`,
/// `one of "pass", "fail"`, `an RFC 3339 date-time string`. `None` when the
/// subschema says nothing this can word.
fn expectation(subschema: &Value) -> Option<String> {
    let schema = subschema.as_object()?;
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        let options: Vec<String> = options.iter().map(Value::to_string).collect();
        return Some(format!("one of {}", options.join(", ")));
    }
    if let Some(expected) = schema.get("const") {
        return Some(expected.to_string());
    }
    if let Some(format) = schema.get("format").and_then(Value::as_str) {
        return Some(match format {
            "date-time" => "an RFC 3339 date-time string with an offset".to_owned(),
            "date" => "an RFC 3339 full-date string".to_owned(),
            other => format!("a string in format \"{other}\""),
        });
    }
    let bounds: Vec<String> = [
        ("minimum", ">="),
        ("exclusiveMinimum", ">"),
        ("maximum", "<="),
        ("exclusiveMaximum", "<"),
    ]
    .into_iter()
    .filter_map(|(keyword, op)| {
        schema
            .get(keyword)
            .filter(|limit| limit.is_number())
            .map(|limit| format!("{op} {limit}"))
    })
    .collect();
    let noun = match schema.get("type") {
        Some(Value::String(name)) => type_phrase(name)?.to_owned(),
        Some(Value::Array(names)) => {
            let phrases: Option<Vec<&str>> = names
                .iter()
                .map(|name| name.as_str().and_then(type_phrase))
                .collect();
            phrases?.join(" or ")
        }
        Some(_) => return None,
        None if !bounds.is_empty() => "a number".to_owned(),
        None => return None,
    };
    if bounds.is_empty() {
        Some(noun)
    } else {
        Some(format!("{noun} {}", bounds.join(" and ")))
    }
}

/// `integer` is `an integer`, and so on; `None` for an unknown type name.
fn type_phrase(name: &str) -> Option<&'static str> {
    Some(match name {
        "array" => "an array",
        "boolean" => "a boolean",
        "integer" => "an integer",
        "null" => "null",
        "number" => "a number",
        "object" => "an object",
        "string" => "a string",
        _ => return None,
    })
}

/// The reason when the schema cannot word it: from the error kind, or the
/// validator's own message (with the value masked, so it stays short).
fn fallback_reason(error: &ValidationError<'_>) -> String {
    if let ValidationErrorKind::Type { kind } = error.kind() {
        let names: Vec<JsonType> = match kind {
            TypeKind::Single(name) => vec![*name],
            TypeKind::Multiple(names) => names.iter().collect(),
        };
        let phrases: Vec<&str> = names
            .iter()
            .filter_map(|name| type_phrase(name.as_str()))
            .collect();
        if !phrases.is_empty() {
            return format!("must be {}", phrases.join(" or "));
        }
    }
    lowercase_first(&error.masked().to_string())
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Compiles `schema` and validates `payload` (a JSON object); `expected`
    /// is `None` when the payload is accepted, else the error's field and reason.
    fn check(schema: Value, payload: Value, expected: Option<(&str, &str)>) {
        let compiled = PayloadSchema::compile(&schema).expect("test schema compiles");
        let Value::Object(payload) = payload else {
            panic!("test payload is not an object: {payload}");
        };
        let got = compiled.validate(&payload).map_err(|e| (e.field, e.reason));
        let expected = match expected {
            None => Ok(()),
            Some((field, reason)) => Err((field.to_owned(), reason.to_owned())),
        };
        assert_eq!(got, expected, "payload {}", Value::Object(payload.clone()));
    }

    #[test]
    fn date_time_format_is_asserted() {
        // No `$schema`: the default draft (2020-12) treats `format` as an
        // annotation unless assertions are switched on, as they are here.
        let schema = json!({"properties": {"at": {"type": "string", "format": "date-time"}}});
        let reason = "must be an RFC 3339 date-time string with an offset";
        for ok in [
            "2024-01-10T05:00:00Z",
            "2024-01-10T07:00:00+02:00",
            "2024-01-10T05:00:00.123456Z",
        ] {
            check(schema.clone(), json!({"at": ok}), None);
        }
        for bad in [
            "yesterday",
            "2024-01-10T05:00:00",
            "2024-01-10",
            "2024-13-10T05:00:00Z",
        ] {
            check(
                schema.clone(),
                json!({"at": bad}),
                Some(("payload.at", reason)),
            );
        }
    }

    #[test]
    fn paths_are_dotted_with_bracketed_indexes() {
        let schema = json!({
            "properties": {
                "columns": {"items": {"required": ["name"], "properties": {"name": {"type": "string"}}}},
                "by_hour": {"properties": {"7": {"type": "integer"}}},
                "a/b~c": {"type": "boolean"},
            },
        });
        check(
            schema.clone(),
            json!({"columns": [{"name": "a"}, {"name": 2}]}),
            Some(("payload.columns[1].name", "must be a string")),
        );
        check(
            schema.clone(),
            json!({"columns": [{"name": "a"}, {}]}),
            Some(("payload.columns[1].name", "is required")),
        );
        // A key made of digits is a key, not an index.
        check(
            schema.clone(),
            json!({"by_hour": {"7": "x"}}),
            Some(("payload.by_hour.7", "must be an integer")),
        );
        // JSON pointer escapes are undone.
        check(
            schema,
            json!({"a/b~c": 1}),
            Some(("payload.a/b~c", "must be a boolean")),
        );
    }

    #[test]
    fn reasons_are_worded_from_the_schema() {
        let schema = json!({
            "$defs": {"count": {"type": "integer", "minimum": 0}},
            "properties": {
                "n": {"$ref": "#/$defs/count"},
                "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                "mode": {"enum": ["a", "b"]},
                "code": {"type": "string", "minLength": 3},
                "either": {"type": ["string", "null"]},
            },
            "additionalProperties": {"type": "integer"},
        });
        check(
            schema.clone(),
            json!({"n": -1}),
            Some(("payload.n", "must be an integer >= 0")),
        );
        check(
            schema.clone(),
            json!({"ratio": 0}),
            Some(("payload.ratio", "must be a number > 0 and <= 1")),
        );
        check(
            schema.clone(),
            json!({"mode": "c"}),
            Some(("payload.mode", r#"must be one of "a", "b""#)),
        );
        check(
            schema.clone(),
            json!({"either": 1}),
            Some(("payload.either", "must be a string or null")),
        );
        // Nothing to word it from the schema: the validator's message, masked.
        check(
            schema.clone(),
            json!({"code": "ab"}),
            Some(("payload.code", "value is shorter than 3 characters")),
        );
        check(
            schema,
            json!({"other": "x"}),
            Some(("payload.other", "must be an integer")),
        );
    }

    #[test]
    fn the_first_error_is_the_same_every_time() {
        // Enough properties for the validator to index them in a hash map
        // (seeded afresh per compile): the error reported must not depend on it.
        let mut properties = serde_json::Map::new();
        for idx in 0..20 {
            properties.insert(format!("p{idx}"), json!({"type": "integer"}));
        }
        let schema = json!({"required": ["p0"], "properties": properties});
        let payload = json!({"p7": "x", "p3": "y", "p12": "z", "p0": 1});
        let Value::Object(payload) = payload else {
            unreachable!("literal object")
        };
        let compile_and_validate = || {
            PayloadSchema::compile(&schema)
                .expect("test schema compiles")
                .validate(&payload)
        };
        let first = compile_and_validate();
        assert!(first.is_err(), "payload with three errors accepted");
        for _ in 0..20 {
            assert_eq!(compile_and_validate(), first);
        }
    }

    #[test]
    fn closed_objects_name_the_unexpected_property() {
        let schema = json!({"properties": {"a": {}}, "additionalProperties": false});
        check(schema.clone(), json!({"a": 1}), None);
        check(
            schema,
            json!({"a": 1, "b": 2}),
            Some(("payload.b", "is not allowed")),
        );
    }

    #[test]
    fn the_whole_payload_can_be_at_fault() {
        check(
            json!({"minProperties": 1}),
            json!({}),
            Some(("payload", "value has less than 1 property")),
        );
        check(
            json!({"type": "array"}),
            json!({}),
            Some(("payload", "must be an array")),
        );
    }

    #[test]
    fn invalid_schemas_are_refused_with_a_message() {
        for schema in [
            json!({"type": 5}),
            json!({"minimum": "zero"}),
            json!({"required": "rows"}),
            json!({"$ref": "https://example.com/remote.json"}),
        ] {
            match PayloadSchema::compile(&schema) {
                Ok(_) => panic!("schema {schema} compiled"),
                Err(message) => {
                    assert!(!message.is_empty(), "schema {schema}");
                    assert!(
                        !message.starts_with(char::is_uppercase),
                        "schema {schema}: {message}"
                    );
                }
            }
        }
    }
}
