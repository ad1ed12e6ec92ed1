//! Runtime values and the typing rules of the spec: comparisons, arithmetic,
//! the total order used by `sort` and group keys, and JSON output.

use std::cmp::Ordering;

use serde_json::Value as Json;

use crate::model::Timestamp;

/// A value during execution.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    /// `null`, or a path no record has.
    Null,
    Bool(bool),
    Int(i64),
    /// Always finite: operations that would give NaN or ±inf give `Null`.
    Float(f64),
    Str(String),
    Instant(Timestamp),
    /// Microseconds.
    Duration(i64),
    /// A JSON array or object from a record.
    Json(Json),
}

impl Value {
    /// A value read from a record's JSON.
    pub(crate) fn from_json(json: &Json) -> Value {
        match json {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => n.as_f64().map_or(Value::Null, float),
            },
            Json::String(s) => Value::Str(s.clone()),
            other => Value::Json(other.clone()),
        }
    }

    /// The value in query output: instants as RFC 3339 UTC strings (`null`
    /// for a computed instant outside years 0000-9999, which RFC 3339
    /// cannot write), durations as their canonical text (`90d`).
    pub(crate) fn to_json(&self) -> Json {
        match self {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Int(i) => Json::from(*i),
            Value::Float(x) => serde_json::Number::from_f64(*x).map_or(Json::Null, Json::Number),
            Value::Str(s) => Json::String(s.clone()),
            Value::Instant(ts) => ts.to_rfc3339_checked().map_or(Json::Null, Json::String),
            Value::Duration(micros) => Json::String(duration_text(*micros)),
            Value::Json(j) => j.clone(),
        }
    }

    /// [`Value::to_json`], consuming the value (no copy of strings).
    pub(crate) fn into_json(self) -> Json {
        match self {
            Value::Str(s) => Json::String(s),
            Value::Json(j) => j,
            other => other.to_json(),
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Only `true` is true (two-valued logic: null and non-booleans are false).
    pub(crate) fn is_true(&self) -> bool {
        matches!(self, Value::Bool(true))
    }

    pub(crate) fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(x) => Some(*x),
            _ => None,
        }
    }

    /// The value as an instant: an instant, or a string in RFC 3339 (or a
    /// bare date, midnight UTC).
    pub(crate) fn to_instant(&self) -> Option<Timestamp> {
        match self {
            Value::Instant(ts) => Some(*ts),
            Value::Str(s) => parse_instant(s),
            _ => None,
        }
    }
}

/// A float result, or null when it is not finite.
pub(crate) fn float(x: f64) -> Value {
    if x.is_finite() {
        Value::Float(x)
    } else {
        Value::Null
    }
}

/// RFC 3339 with an offset, or `YYYY-MM-DD` (midnight UTC).
pub(crate) fn parse_instant(text: &str) -> Option<Timestamp> {
    if let Some(ts) = Timestamp::parse_rfc3339(text) {
        return Some(ts);
    }
    let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    let micros = date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros();
    Some(Timestamp::from_micros(micros))
}

/// A duration in its canonical text: the largest unit that divides it.
pub(crate) fn duration_text(micros: i64) -> String {
    for (unit, size) in [
        ("w", 604_800_000_000i64),
        ("d", 86_400_000_000),
        ("h", 3_600_000_000),
        ("m", 60_000_000),
        ("s", 1_000_000),
        ("ms", 1_000),
    ] {
        if micros != 0 && micros % size == 0 {
            return format!("{}{unit}", micros / size);
        }
    }
    if micros == 0 {
        return "0s".into();
    }
    format!("{micros}us")
}

/// Compares two numbers exactly (an i64 and an f64 compare by value).
fn cmp_numbers(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y),
        (Value::Int(x), Value::Float(y)) => Some(cmp_int_float(*x, *y)),
        (Value::Float(x), Value::Int(y)) => Some(cmp_int_float(*y, *x).reverse()),
        _ => None,
    }
}

fn cmp_int_float(i: i64, f: f64) -> Ordering {
    // i64 spans [-2^63, 2^63).
    if f >= 9_223_372_036_854_775_808.0 {
        return Ordering::Less;
    }
    if f < -9_223_372_036_854_775_808.0 {
        return Ordering::Greater;
    }
    let floor = f.floor();
    // In range, so the cast is exact.
    match i.cmp(&(floor as i64)) {
        Ordering::Equal if f > floor => Ordering::Less,
        other => other,
    }
}

/// The order of two values for `<`, `<=`, `>`, `>=`, `=` and `!=`, or `None`
/// when they do not compare (then every comparison is false): numbers
/// numerically, strings by bytes, instants in time (a string against an
/// instant is read as RFC 3339), booleans false < true, durations by length;
/// arrays and objects only compare equal or not.
pub(crate) fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Null, _) | (_, Value::Null) => None,
        (Value::Str(x), Value::Str(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (Value::Instant(x), Value::Instant(y)) => Some(x.cmp(y)),
        // The string is read as RFC 3339 (spec: "a string that is not a
        // timestamp compares false"), as the storage filters read it: a
        // bare date is a string here, not midnight.
        (Value::Instant(x), Value::Str(s)) => Timestamp::parse_rfc3339(s).map(|y| x.cmp(&y)),
        (Value::Str(s), Value::Instant(y)) => Timestamp::parse_rfc3339(s).map(|x| x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Duration(x), Value::Duration(y)) => Some(x.cmp(y)),
        (Value::Json(x), Value::Json(y)) => (x == y).then_some(Ordering::Equal),
        _ => cmp_numbers(a, b),
    }
}

/// A total order over every value, for `sort`, group keys and `min`/`max`
/// ties: null < booleans < numbers < instants < durations < strings <
/// arrays and objects (by their JSON text).
pub(crate) fn total_cmp(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) | Value::Float(_) => 2,
            Value::Instant(_) => 3,
            Value::Duration(_) => 4,
            Value::Str(_) => 5,
            Value::Json(_) => 6,
        }
    }
    match (a, b) {
        // The common pairs first (sorting groups compares them often); the
        // same orders as the general arms below.
        (Value::Str(x), Value::Str(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Instant(x), Value::Instant(y)) => x.cmp(y),
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Json(x), Value::Json(y)) => x.to_string().cmp(&y.to_string()),
        _ => match rank(a).cmp(&rank(b)) {
            Ordering::Equal => match (a, b) {
                (Value::Str(x), Value::Str(y)) => x.as_bytes().cmp(y.as_bytes()),
                (Value::Float(x), Value::Float(y)) => x.total_cmp(y),
                _ => compare(a, b).unwrap_or(Ordering::Equal),
            },
            other => other,
        },
    }
}

/// A value with the total order of [`total_cmp`], usable as a map key.
#[derive(Clone, Debug)]
pub(crate) struct Key(pub(crate) Value);

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        total_cmp(&self.0, &other.0) == Ordering::Equal
    }
}
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Key) -> Ordering {
        total_cmp(&self.0, &other.0)
    }
}

/// Unary minus: numbers negate (an integer that overflows gives null),
/// anything else gives null.
pub(crate) fn negate(v: &Value) -> Value {
    match v {
        Value::Int(i) => i.checked_neg().map_or(Value::Null, Value::Int),
        Value::Float(f) => Value::Float(-f),
        _ => Value::Null,
    }
}

/// `a + b`, `a - b`, `a * b`: integers stay integers (overflow gives null),
/// otherwise decimals; anything but numbers gives null.
pub(crate) fn arith(op: super::ast::BinOp, a: &Value, b: &Value) -> Value {
    use super::ast::BinOp;
    match op {
        BinOp::Div => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => {
                if y == 0.0 {
                    Value::Null
                } else {
                    float(x / y)
                }
            }
            _ => Value::Null,
        },
        BinOp::Rem => match (a, b) {
            // Null only for a zero divisor: `i64::MIN % -1` is 0 (the
            // quotient overflows, the remainder does not).
            (Value::Int(_), Value::Int(0)) => Value::Null,
            (Value::Int(x), Value::Int(y)) => Value::Int(x.wrapping_rem(*y)),
            _ => Value::Null,
        },
        _ => match (a, b) {
            (Value::Int(x), Value::Int(y)) => {
                let result = match op {
                    BinOp::Add => x.checked_add(*y),
                    BinOp::Sub => x.checked_sub(*y),
                    _ => x.checked_mul(*y),
                };
                result.map_or(Value::Null, Value::Int)
            }
            _ => match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => float(match op {
                    BinOp::Add => x + y,
                    BinOp::Sub => x - y,
                    _ => x * y,
                }),
                _ => Value::Null,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::ast::BinOp;

    fn check(a: Value, b: Value, expected: Option<Ordering>) {
        assert_eq!(compare(&a, &b), expected, "{a:?} vs {b:?}");
    }

    #[test]
    fn comparisons_follow_the_spec() {
        check(Value::Int(1), Value::Float(1.0), Some(Ordering::Equal));
        check(Value::Int(2), Value::Float(1.5), Some(Ordering::Greater));
        check(
            Value::Int(i64::MAX),
            Value::Float(9.3e18),
            Some(Ordering::Less),
        );
        check(
            Value::Str("B".into()),
            Value::Str("a".into()),
            Some(Ordering::Less),
        );
        check(Value::Null, Value::Null, None);
        check(Value::Int(1), Value::Str("1".into()), None);
        let ts = Timestamp::parse_rfc3339("2024-01-10T05:00:00Z").unwrap();
        check(
            Value::Instant(ts),
            Value::Str("2024-01-10T07:00:00+02:00".into()),
            Some(Ordering::Equal),
        );
        check(Value::Instant(ts), Value::Str("yesterday".into()), None);
    }

    #[test]
    fn total_order_agrees_with_comparisons_within_a_type() {
        let ts = |m| Value::Instant(Timestamp::from_micros(m));
        let values = [
            Value::Int(-1),
            Value::Int(2),
            Value::Float(1.5),
            Value::Str("a".into()),
            Value::Str("ab".into()),
            Value::Str("B".into()),
            ts(-5),
            ts(7),
        ];
        for a in &values {
            for b in &values {
                let same_type = std::mem::discriminant(a) == std::mem::discriminant(b);
                if same_type {
                    assert_eq!(Some(total_cmp(a, b)), compare(a, b), "{a:?} vs {b:?}");
                }
                assert_eq!(total_cmp(a, b), total_cmp(b, a).reverse(), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn arithmetic_follows_the_spec() {
        assert_eq!(
            arith(BinOp::Add, &Value::Int(i64::MAX), &Value::Int(1)),
            Value::Null
        );
        assert_eq!(
            arith(BinOp::Div, &Value::Int(1), &Value::Int(2)),
            Value::Float(0.5)
        );
        assert_eq!(
            arith(BinOp::Div, &Value::Int(1), &Value::Int(0)),
            Value::Null
        );
        assert_eq!(
            arith(BinOp::Rem, &Value::Int(7), &Value::Int(3)),
            Value::Int(1)
        );
        assert_eq!(
            arith(BinOp::Rem, &Value::Float(7.0), &Value::Int(3)),
            Value::Null
        );
        // The quotient of `i64::MIN / -1` overflows; the remainder is 0.
        assert_eq!(
            arith(BinOp::Rem, &Value::Int(i64::MIN), &Value::Int(-1)),
            Value::Int(0)
        );
        assert_eq!(
            arith(BinOp::Rem, &Value::Int(-7), &Value::Int(3)),
            Value::Int(-1)
        );
        assert_eq!(
            arith(BinOp::Rem, &Value::Int(7), &Value::Int(0)),
            Value::Null
        );
        assert_eq!(
            arith(BinOp::Mul, &Value::Int(2), &Value::Float(1.5)),
            Value::Float(3.0)
        );
        assert_eq!(
            arith(BinOp::Add, &Value::Str("a".into()), &Value::Int(1)),
            Value::Null
        );
        assert_eq!(
            arith(BinOp::Mul, &Value::Float(1e308), &Value::Float(10.0)),
            Value::Null
        );
    }

    #[test]
    fn durations_print_in_their_largest_unit() {
        assert_eq!(duration_text(86_400_000_000), "1d");
        assert_eq!(duration_text(90_000), "90ms");
        assert_eq!(duration_text(0), "0s");
    }
}
