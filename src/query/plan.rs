//! The planner: resolves names before any data is read, then (once the
//! parameters are bound) chooses the access path.
//!
//! [`compile`] turns the syntax tree into a [`Plan`]: every path is resolved
//! to a record field or a computed slot (unknown field → error with a
//! suggestion), every call to a known function with the right arity,
//! aggregates only in `stats`/`window`, literal regexes compiled. The plan
//! still holds parameters and `now`; [`Plan::bind`] substitutes them,
//! type-checks the stage arguments and compiles parameter regexes. Then
//! [`access_path`] moves what the store's indexes answer (kinds, target
//! matchers, `producer`/`run_id` equality, time bounds at the head of the
//! pipeline) into a [`ScanRequest`].

use std::collections::BTreeMap;

use regex::Regex;

use super::ast::*;
use super::error::QueryError;
use super::source::{IndexValue, PathConstraint, PathMatch, Projection, RecordSource, ScanRequest};
use super::suggest;
use super::value::{negate, parse_instant, Value};
use crate::model::{TimeRange, Timestamp};

/// The top-level fields of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Field {
    Id,
    Kind,
    /// The canonical name; `target.source_id`, `.schema`, `.table`, `.extras` below it.
    Target,
    ProducerId,
    ProducedAt,
    Context,
    Version,
    Quality,
    Payload,
    Extras,
}

const RECORD_FIELDS: [(&str, Field); 10] = [
    ("id", Field::Id),
    ("kind", Field::Kind),
    ("target", Field::Target),
    ("producer_id", Field::ProducerId),
    ("produced_at", Field::ProducedAt),
    ("context", Field::Context),
    ("version", Field::Version),
    ("quality", Field::Quality),
    ("payload", Field::Payload),
    ("extras", Field::Extras),
];

/// Names users reach for that live elsewhere in a record.
const ALIASES: [(&str, &str); 11] = [
    ("source", "target.source_id"),
    ("source_id", "target.source_id"),
    ("schema", "target.schema"),
    ("table", "target.table"),
    ("producer", "producer_id"),
    ("run_id", "context.run_id"),
    ("job_id", "context.job_id"),
    ("namespace", "context.namespace"),
    ("tenant", "context.extras.tenant"),
    ("window_start", "extras.window_start"),
    ("window_end", "extras.window_end"),
];

/// A compiled expression.
#[derive(Clone, Debug)]
pub(crate) enum CExpr {
    Const(Value),
    /// Unbound until [`Plan::bind`].
    Param {
        name: String,
        span: Span,
    },
    /// `now` plus an offset in microseconds; bound to a constant.
    Now(i64),
    /// A stage's time argument: bound to an instant (a duration `D` means `now - D`).
    Time(Box<CExpr>, Span, &'static str),
    Rec(Field, Vec<Segment>),
    Slot(usize, Vec<Segment>),
    Exists(Box<CExpr>),
    Neg(Box<CExpr>),
    Not(Box<CExpr>),
    And(Box<CExpr>, Box<CExpr>),
    Or(Box<CExpr>, Box<CExpr>),
    Cmp(BinOp, Box<CExpr>, Box<CExpr>),
    /// `x = null` (false) / `x != null` (true).
    IsNull(Box<CExpr>, bool),
    /// The first operand, then each operator and operand, applied left
    /// to right (flat: see [`ExprKind::Arith`]).
    Arith(Box<CExpr>, Vec<(BinOp, CExpr)>),
    Regex {
        expr: Box<CExpr>,
        pattern: Pattern,
        negated: bool,
    },
    In(Box<CExpr>, Vec<CExpr>),
    Func(Func, Vec<CExpr>),
    /// A subtree [`GUARD_EVERY`] levels below the root or below the
    /// previous guard (see [`guard_deep`]): evaluated, cloned and dropped
    /// on a stack with room for the next [`GUARD_EVERY`] levels.
    Deep(Deep),
}

/// A guarded subtree; see [`CExpr::Deep`].
#[derive(Debug)]
pub(crate) struct Deep(pub(crate) Box<CExpr>);

/// Every this many levels of a compiled expression, [`guard_deep`] puts a
/// [`CExpr::Deep`] node.
const GUARD_EVERY: usize = 32;

/// The stack a [`CExpr::Deep`] node makes sure of before it recurses:
/// room for [`GUARD_EVERY`] levels (a debug build needs about 1.7 KiB a
/// level to evaluate) and the functions at the leaves, with a wide margin.
const DEEP_RED_ZONE: usize = 256 * 1024;

/// The stack segment a [`CExpr::Deep`] node switches to when the current
/// stack has less than [`DEEP_RED_ZONE`] left.
const DEEP_STACK: usize = 2 * 1024 * 1024;

impl Deep {
    /// Runs `f` where at least [`DEEP_RED_ZONE`] of stack is free: on this
    /// stack, or on a new segment of [`DEEP_STACK`] bytes.
    pub(crate) fn with_room<T>(f: impl FnOnce() -> T) -> T {
        stacker::maybe_grow(DEEP_RED_ZONE, DEEP_STACK, f)
    }
}

impl Clone for Deep {
    fn clone(&self) -> Self {
        Deep::with_room(|| Deep(self.0.clone()))
    }
}

impl Drop for Deep {
    fn drop(&mut self) {
        let inner = std::mem::replace(&mut *self.0, CExpr::Const(Value::Null));
        Deep::with_room(move || drop(inner));
    }
}

/// The pattern of `=~` / `!~`.
#[derive(Clone, Debug)]
pub(crate) enum Pattern {
    Param { name: String, span: Span },
    Compiled(Regex),
}

/// A source matcher as a row test; a missing label reads as `""`.
#[derive(Clone, Debug)]
pub(crate) enum LabelTest {
    Eq(String),
    Ne(String),
    Re(Regex),
    NotRe(Regex),
}

impl LabelTest {
    pub(crate) fn matches(&self, value: &str) -> bool {
        match self {
            LabelTest::Eq(s) => value == s,
            LabelTest::Ne(s) => value != s,
            LabelTest::Re(re) => re.is_match(value),
            LabelTest::NotRe(re) => !re.is_match(value),
        }
    }
}

/// Scalar functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Func {
    Len,
    Lower,
    Upper,
    Abs,
    Coalesce,
    Timestamp,
    Bin,
}

/// Aggregate functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AggFn {
    Count,
    CountIf,
    CountDistinct,
    Sum,
    Avg,
    Min,
    Max,
    Stddev,
    Percentile,
    First,
    Last,
}

const SCALARS: [(&str, Option<Func>, usize, usize); 8] = [
    ("exists", None, 1, 1),
    ("len", Some(Func::Len), 1, 1),
    ("lower", Some(Func::Lower), 1, 1),
    ("upper", Some(Func::Upper), 1, 1),
    ("abs", Some(Func::Abs), 1, 1),
    ("coalesce", Some(Func::Coalesce), 1, usize::MAX),
    ("timestamp", Some(Func::Timestamp), 1, 1),
    ("bin", Some(Func::Bin), 2, 2),
];

const AGGREGATES: [(&str, AggFn, usize, usize); 11] = [
    ("count", AggFn::Count, 0, 1),
    ("countif", AggFn::CountIf, 1, 1),
    ("count_distinct", AggFn::CountDistinct, 1, 1),
    ("sum", AggFn::Sum, 1, 1),
    ("avg", AggFn::Avg, 1, 1),
    ("min", AggFn::Min, 1, 1),
    ("max", AggFn::Max, 1, 1),
    ("stddev", AggFn::Stddev, 1, 1),
    ("percentile", AggFn::Percentile, 2, 2),
    ("first", AggFn::First, 1, 1),
    ("last", AggFn::Last, 1, 1),
];

/// A compiled aggregate.
#[derive(Clone, Debug)]
pub(crate) struct CAgg {
    pub(crate) func: AggFn,
    /// The argument (none for `count()`).
    pub(crate) arg: Option<CExpr>,
    /// `percentile`'s P in [0, 100] once bound (a constant or parameter before).
    pub(crate) p: Option<CExpr>,
}

/// A compiled stage.
#[derive(Clone, Debug)]
pub(crate) enum CStage {
    Filter(CExpr),
    Latest(Vec<CExpr>),
    /// A sort, with the limit that follows it (top-N).
    Sort {
        keys: Vec<(CExpr, bool)>,
        limit: Option<CExpr>,
    },
    Limit(CExpr),
    /// (slot, value): a slot past the current ones is a new field.
    Extend(Vec<(usize, CExpr)>),
    Select(Vec<CExpr>),
    Stats {
        aggregates: Vec<CAgg>,
        by: Vec<CExpr>,
    },
    Window {
        aggregates: Vec<CAgg>,
        slots: Vec<usize>,
        by: Vec<CExpr>,
        /// The frame's offsets: integer constants once bound.
        start: CExpr,
        end: CExpr,
        /// Where the frame was written (for errors found when binding).
        frame_span: Span,
    },
}

/// A stage of the plan and the index of the query stage it came from.
#[derive(Clone, Debug)]
pub(crate) struct PlanStage {
    pub(crate) stage: CStage,
    pub(crate) origin: usize,
    /// Slots in the stream after this stage (computed fields or columns).
    pub(crate) width: usize,
    /// True when the stream after this stage is made of records.
    pub(crate) records: bool,
    /// Where this stage's input is rows of columns: the columns named
    /// `produced_at` and `id`, which order them for `latest`, `first`,
    /// `last` and `window` as the record fields order records.
    pub(crate) order: Option<RowOrder>,
}

/// The slots of the columns named `produced_at` and `id` (at least one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RowOrder {
    pub(crate) produced_at: Option<usize>,
    pub(crate) id: Option<usize>,
}

impl RowOrder {
    fn of(scope: &Scope) -> Option<RowOrder> {
        if scope.records {
            return None;
        }
        let slot = |name: &str| scope.names.iter().position(|n| n == name);
        let order = RowOrder {
            produced_at: slot("produced_at"),
            id: slot("id"),
        };
        (order.produced_at.is_some() || order.id.is_some()).then_some(order)
    }
}

/// A source matcher, value unbound.
#[derive(Clone, Debug)]
pub(crate) struct MatcherSpec {
    pub(crate) label: Label,
    pub(crate) op: MatchOp,
    pub(crate) value: MatchValue,
    pub(crate) value_span: Span,
}

/// A resolved query, parameters unbound.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) kinds: Option<Vec<String>>,
    pub(crate) matchers: Vec<MatcherSpec>,
    pub(crate) stages: Vec<PlanStage>,
    /// The names of the output slots (computed fields or columns).
    pub(crate) columns: Vec<String>,
    /// True when the output rows are records.
    pub(crate) records: bool,
}

/// The names visible to a stage.
struct Scope {
    records: bool,
    names: Vec<String>,
}

fn invalid(message: impl Into<String>, span: Span) -> QueryError {
    QueryError::Invalid {
        message: message.into(),
        span,
    }
}

/// Resolves a parsed query.
pub(crate) fn compile(query: &Query) -> Result<Plan, QueryError> {
    let kinds = if query.source.kinds.is_empty() {
        None
    } else {
        let mut kinds: Vec<String> = query.source.kinds.iter().map(|k| k.name.clone()).collect();
        kinds.sort();
        kinds.dedup();
        Some(kinds)
    };
    let mut matchers = Vec::new();
    for m in &query.source.matchers {
        if let (MatchOp::Re | MatchOp::NotRe, MatchValue::String(pattern)) = (m.op, &m.value) {
            compile_regex(pattern, m.value_span)?;
        }
        matchers.push(MatcherSpec {
            label: m.label,
            op: m.op,
            value: m.value.clone(),
            value_span: m.value_span,
        });
    }
    let mut scope = Scope {
        records: true,
        names: Vec::new(),
    };
    let mut stages: Vec<PlanStage> = Vec::new();
    for (origin, stage) in query.stages.iter().enumerate() {
        let order = RowOrder::of(&scope);
        let mut compiled = compile_stage(stage, &mut scope)?;
        for_each_expr_mut(&mut compiled, &mut |e| guard_deep(e, 0));
        // `sort | limit` runs as one bounded top-N.
        if let CStage::Limit(n) = &compiled {
            if let Some(PlanStage {
                stage:
                    CStage::Sort {
                        limit: limit @ None,
                        ..
                    },
                ..
            }) = stages.last_mut()
            {
                *limit = Some(n.clone());
                continue;
            }
        }
        stages.push(PlanStage {
            stage: compiled,
            origin,
            width: scope.names.len(),
            records: scope.records,
            order,
        });
    }
    Ok(Plan {
        kinds,
        matchers,
        stages,
        columns: scope.names,
        records: scope.records,
    })
}

fn compile_stage(stage: &Stage, scope: &mut Scope) -> Result<CStage, QueryError> {
    let produced_at = |scope: &Scope| {
        let path = Path {
            segments: vec![Segment::Field("produced_at".into())],
            head_span: stage.span,
        };
        resolve_path(&path, scope)
    };
    Ok(match &stage.kind {
        StageKind::Where(e) => CStage::Filter(compile_expr(e, scope)?),
        StageKind::Since(t) => CStage::Filter(CExpr::Cmp(
            BinOp::Ge,
            Box::new(produced_at(scope)?),
            Box::new(time_arg(t, "since")?),
        )),
        StageKind::Until(t) => CStage::Filter(CExpr::Cmp(
            BinOp::Lt,
            Box::new(produced_at(scope)?),
            Box::new(time_arg(t, "until")?),
        )),
        StageKind::Between(a, b) => {
            let at = produced_at(scope)?;
            CStage::Filter(CExpr::And(
                Box::new(CExpr::Cmp(
                    BinOp::Ge,
                    Box::new(at.clone()),
                    Box::new(time_arg(a, "between")?),
                )),
                Box::new(CExpr::Cmp(
                    BinOp::Lt,
                    Box::new(at),
                    Box::new(time_arg(b, "between")?),
                )),
            ))
        }
        StageKind::Overlaps(a, b) => {
            let path = |name: &str| Path {
                segments: vec![Segment::Field("extras".into()), Segment::Field(name.into())],
                head_span: stage.span,
            };
            let start = resolve_path(&path("window_start"), scope)?;
            let end = resolve_path(&path("window_end"), scope)?;
            CStage::Filter(CExpr::And(
                Box::new(CExpr::Cmp(
                    BinOp::Lt,
                    Box::new(start),
                    Box::new(time_arg(b, "overlaps")?),
                )),
                Box::new(CExpr::Cmp(
                    BinOp::Gt,
                    Box::new(end),
                    Box::new(time_arg(a, "overlaps")?),
                )),
            ))
        }
        StageKind::Latest(by) => {
            let by = if by.is_empty() {
                let path = |name: &str| Path {
                    segments: vec![Segment::Field(name.into())],
                    head_span: stage.span,
                };
                vec![
                    resolve_path(&path("kind"), scope)?,
                    resolve_path(&path("target"), scope)?,
                ]
            } else {
                by.iter()
                    .map(|e| compile_expr(e, scope))
                    .collect::<Result<_, _>>()?
            };
            CStage::Latest(by)
        }
        StageKind::Sort(keys) => CStage::Sort {
            keys: keys
                .iter()
                .map(|k| Ok((compile_expr(&k.expr, scope)?, k.descending)))
                .collect::<Result<_, QueryError>>()?,
            limit: None,
        },
        StageKind::Limit(n) => {
            let arg = constant_arg(n, "limit")?;
            if let CExpr::Const(v) = &arg {
                if !matches!(v, Value::Int(i) if *i >= 0) {
                    return Err(invalid(
                        format!(
                            "`limit` takes a non-negative integer, found {}",
                            describe_value(v)
                        ),
                        n.span,
                    ));
                }
            }
            CStage::Limit(arg)
        }
        StageKind::Extend(assignments) => {
            let mut out = Vec::new();
            for a in assignments {
                let expr = compile_expr(&a.expr, scope)?;
                let slot = define_name(&a.name, scope, true)?;
                out.push((slot, expr));
            }
            CStage::Extend(out)
        }
        StageKind::Select(items) => {
            let exprs = items
                .iter()
                .map(|item| compile_expr(&item.expr, scope))
                .collect::<Result<Vec<_>, _>>()?;
            scope.records = false;
            scope.names = column_names(items)?;
            CStage::Select(exprs)
        }
        StageKind::Stats { aggregates, by } => {
            let aggs = aggregates
                .iter()
                .map(|item| compile_aggregate(&item.expr, scope, "stats"))
                .collect::<Result<Vec<_>, _>>()?;
            let keys = by
                .iter()
                .map(|item| compile_expr(&item.expr, scope))
                .collect::<Result<Vec<_>, _>>()?;
            let all: Vec<Item> = by.iter().chain(aggregates).cloned().collect();
            scope.records = false;
            scope.names = column_names(&all)?;
            CStage::Stats {
                aggregates: aggs,
                by: keys,
            }
        }
        StageKind::Window {
            aggregates,
            by,
            rows,
        } => {
            if let (Offset::Int(start), Offset::Int(end)) = (&rows.start, &rows.end) {
                check_frame(*start, *end, rows.span)?;
            }
            let offset = |o: &Offset| match o {
                Offset::Int(n) => CExpr::Const(Value::Int(*n)),
                Offset::Param(name, span) => CExpr::Param {
                    name: name.clone(),
                    span: *span,
                },
            };
            let aggs = aggregates
                .iter()
                .map(|item| compile_aggregate(&item.expr, scope, "window"))
                .collect::<Result<Vec<_>, _>>()?;
            let by = by
                .iter()
                .map(|e| compile_expr(e, scope))
                .collect::<Result<Vec<_>, _>>()?;
            let mut slots = Vec::new();
            for item in aggregates {
                let name = Name {
                    name: item.column_name(),
                    span: item.alias.as_ref().map_or(item.expr.span, |a| a.span),
                };
                slots.push(define_name(&name, scope, item.alias.is_some())?);
            }
            CStage::Window {
                aggregates: aggs,
                slots,
                by,
                start: offset(&rows.start),
                end: offset(&rows.end),
                frame_span: rows.span,
            }
        }
    })
}

/// A frame whose first offset exceeds its last is empty: refused.
fn check_frame(start: i64, end: i64, span: Span) -> Result<(), QueryError> {
    if start > end {
        return Err(invalid(
            format!(
                "window frame `rows {start} .. {end}` is empty: the first offset must not exceed the last"
            ),
            span,
        ));
    }
    Ok(())
}

/// The frame's offsets bound to integer constants, checked as literal
/// offsets are when compiled.
fn bind_frame(
    start: &CExpr,
    end: &CExpr,
    span: Span,
    b: &Bindings<'_>,
) -> Result<(CExpr, CExpr), QueryError> {
    let offset = |e: &CExpr| {
        // A parameter's own span, so the error points at it.
        let at = match e {
            CExpr::Param { span, .. } => *span,
            _ => span,
        };
        match bind_expr(e, b)? {
            CExpr::Const(Value::Int(n)) => Ok(n),
            CExpr::Const(v) => Err(invalid(
                format!(
                    "a window frame offset must be an integer, found {}",
                    describe_value(&v)
                ),
                at,
            )),
            _ => Err(invalid("a window frame offset must be an integer", at)),
        }
    };
    let (start, end) = (offset(start)?, offset(end)?);
    check_frame(start, end, span)?;
    Ok((
        CExpr::Const(Value::Int(start)),
        CExpr::Const(Value::Int(end)),
    ))
}

/// The column names of `select`/`stats` items; duplicates are refused.
fn column_names(items: &[Item]) -> Result<Vec<String>, QueryError> {
    let mut names: Vec<String> = Vec::new();
    for item in items {
        let name = item.column_name();
        if names.contains(&name) {
            let span = item.alias.as_ref().map_or(item.expr.span, |a| a.span);
            return Err(invalid(
                format!("duplicate column `{name}`; rename one with `as`"),
                span,
            ));
        }
        names.push(name);
    }
    Ok(names)
}

/// Adds (or, for an existing computed name, reuses) a slot for `name`.
/// On records, a record field's name cannot be reused.
fn define_name(name: &Name, scope: &mut Scope, written: bool) -> Result<usize, QueryError> {
    if scope.records && RECORD_FIELDS.iter().any(|(f, _)| *f == name.name) {
        let hint = if written {
            "choose another name"
        } else {
            "name it with `as`"
        };
        return Err(invalid(
            format!("`{}` is a record field; {hint}", name.name),
            name.span,
        ));
    }
    if let Some(slot) = scope.names.iter().position(|n| *n == name.name) {
        return Ok(slot);
    }
    scope.names.push(name.name.clone());
    Ok(scope.names.len() - 1)
}

/// A stage argument that must be a literal or a parameter (bound later).
fn constant_arg(e: &Expr, stage: &str) -> Result<CExpr, QueryError> {
    match &e.kind {
        ExprKind::Literal(lit) => Ok(literal(lit)),
        ExprKind::Param(name) => Ok(CExpr::Param {
            name: name.clone(),
            span: e.span,
        }),
        _ => Err(invalid(
            format!("`{stage}` takes a literal or a parameter, found `{e}`"),
            e.span,
        )),
    }
}

fn time_arg(e: &Expr, stage: &'static str) -> Result<CExpr, QueryError> {
    let arg = constant_arg(e, stage)?;
    if let CExpr::Const(v) = &arg {
        check_time_value(v, e.span, stage)?;
    }
    Ok(CExpr::Time(Box::new(arg), e.span, stage))
}

fn check_time_value(v: &Value, span: Span, stage: &str) -> Result<(), QueryError> {
    match v {
        Value::Instant(_) | Value::Duration(_) => Ok(()),
        Value::Str(s) if parse_instant(s).is_some() => Ok(()),
        _ => Err(invalid(
            format!(
                "`{stage}` takes an instant or a duration, found {}",
                describe_value(v)
            ),
            span,
        )),
    }
}

pub(crate) fn describe_value(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Int(i) => format!("`{i}`"),
        Value::Float(x) => format!("`{x:?}`"),
        Value::Str(s) => {
            let mut out = String::new();
            let _ = super::print::write_string(&mut out, s);
            format!("string {out}")
        }
        Value::Instant(ts) => format!("`{ts}`"),
        Value::Duration(d) => format!("`{}`", super::value::duration_text(*d)),
        Value::Json(j) => format!("`{j}`"),
    }
}

fn literal(lit: &Literal) -> CExpr {
    CExpr::Const(match lit {
        Literal::Null => Value::Null,
        Literal::Bool(b) => Value::Bool(*b),
        Literal::Int(i) => Value::Int(*i),
        Literal::Float(x) => Value::Float(*x),
        Literal::String(s) => Value::Str(s.clone()),
        Literal::Instant(Instant::At(ts) | Instant::Date(ts)) => Value::Instant(*ts),
        Literal::Instant(Instant::Now(offset)) => {
            let micros = match offset {
                None => 0,
                Some((sign, d)) => {
                    let m = d.micros().unwrap_or(i64::MAX);
                    if *sign == Sign::Minus {
                        -m
                    } else {
                        m
                    }
                }
            };
            return CExpr::Now(micros);
        }
        Literal::Duration(d) => Value::Duration(d.micros().unwrap_or(i64::MAX)),
    })
}

fn compile_regex(pattern: &str, span: Span) -> Result<Regex, QueryError> {
    let bad = |e: &dyn std::fmt::Display| QueryError::BadRegex {
        message: e
            .to_string()
            .lines()
            .last()
            .unwrap_or("")
            .trim()
            .trim_start_matches("error: ")
            .to_owned(),
        span,
    };
    // The pattern is parsed alone and printed back (a pattern without
    // comments, its flags scoped to it) before it is anchored: pasted in
    // as written, `a)|(b` would close the anchoring group and match
    // anywhere, and a `(?x)` comment would swallow the anchor.
    let hir = regex_syntax::Parser::new()
        .parse(pattern)
        .map_err(|e| bad(&e))?;
    Regex::new(&format!("^(?:{hir})$")).map_err(|e| bad(&e))
}

/// Resolves a path against the scope.
fn resolve_path(path: &Path, scope: &Scope) -> Result<CExpr, QueryError> {
    let head = path.head();
    let rest: Vec<Segment> = path.segments.iter().skip(1).cloned().collect();
    if !scope.records {
        // A column named like the whole path (`select payload.rows`) first.
        let text = path.to_string();
        if let Some(slot) = scope.names.iter().position(|n| *n == text) {
            return Ok(CExpr::Slot(slot, Vec::new()));
        }
    }
    if let Some(slot) = scope.names.iter().position(|n| n == head) {
        return Ok(CExpr::Slot(slot, rest));
    }
    if scope.records {
        if let Some((_, field)) = RECORD_FIELDS.iter().find(|(name, _)| *name == head) {
            return Ok(CExpr::Rec(*field, rest));
        }
    }
    Err(QueryError::UnknownField {
        name: head.to_owned(),
        suggestion: suggest_path(path, scope),
        span: path.head_span,
    })
}

fn suggest_path(path: &Path, scope: &Scope) -> Option<String> {
    let head = path.head();
    let text = path.to_string();
    let tail = text[head.len()..].to_owned();
    if !scope.records {
        // A column named like a whole path (`select payload.rows`) is
        // found by the whole path, so it is suggested whole.
        let whole = scope.names.iter().filter(|n| n.contains('.'));
        if let Some(close) = suggest::closest(&text, whole.map(String::as_str)) {
            return Some(close.to_owned());
        }
    }
    // Other names are found by a path's first segment, so only a name
    // that is one segment can stand for the head.
    let mut candidates: Vec<&str> = scope
        .names
        .iter()
        .map(String::as_str)
        .filter(|n| !n.contains('.'))
        .collect();
    if scope.records {
        if let Some((_, target)) = ALIASES.iter().find(|(alias, _)| *alias == head) {
            return Some(format!("{target}{tail}"));
        }
        candidates.extend(RECORD_FIELDS.iter().map(|(name, _)| *name));
    }
    if let Some(close) = suggest::closest(head, candidates) {
        return Some(format!("{close}{tail}"));
    }
    scope.records.then(|| format!("payload.{}", path))
}

/// A chain of `and` (or `or`) as a balanced tree of [`CExpr::And`]
/// ([`CExpr::Or`]) nodes, the operands left to right: a chain of n
/// operands is log2(n) levels deep, so the recursive passes over compiled
/// expressions stay shallow however long a generated filter is. Both
/// operators are associative, and evaluation still goes left to right and
/// stops at the first operand that decides.
fn balanced(op: LogicOp, mut operands: Vec<CExpr>) -> Option<CExpr> {
    if operands.len() <= 1 {
        return operands.pop();
    }
    let right = operands.split_off(operands.len() / 2);
    let (left, right) = (balanced(op, operands)?, balanced(op, right)?);
    Some(match op {
        LogicOp::And => CExpr::And(Box::new(left), Box::new(right)),
        LogicOp::Or => CExpr::Or(Box::new(left), Box::new(right)),
    })
}

fn compile_expr(e: &Expr, scope: &Scope) -> Result<CExpr, QueryError> {
    let sub = |x: &Expr| compile_expr(x, scope).map(Box::new);
    Ok(match &e.kind {
        ExprKind::Literal(lit) => literal(lit),
        ExprKind::Param(name) => CExpr::Param {
            name: name.clone(),
            span: e.span,
        },
        ExprKind::Path(path) => resolve_path(path, scope)?,
        ExprKind::Neg(x) => CExpr::Neg(sub(x)?),
        ExprKind::Not(x) => CExpr::Not(sub(x)?),
        ExprKind::Logic { op, operands } => {
            let compiled = operands
                .iter()
                .map(|x| compile_expr(x, scope))
                .collect::<Result<Vec<_>, _>>()?;
            balanced(*op, compiled)
                .ok_or_else(|| invalid(format!("`{}` without operands", op.as_str()), e.span))?
        }
        ExprKind::Binary { op, left, right } => match op {
            BinOp::Match | BinOp::NotMatch => {
                let pattern = match &right.kind {
                    ExprKind::Literal(Literal::String(s)) => {
                        Pattern::Compiled(compile_regex(s, right.span)?)
                    }
                    ExprKind::Param(name) => Pattern::Param {
                        name: name.clone(),
                        span: right.span,
                    },
                    _ => {
                        return Err(invalid(
                            format!(
                                "the pattern of `{}` must be a string literal or a parameter, found `{right}`",
                                op.as_str()
                            ),
                            right.span,
                        ))
                    }
                };
                CExpr::Regex {
                    expr: sub(left)?,
                    pattern,
                    negated: *op == BinOp::NotMatch,
                }
            }
            op if op.is_comparison() => CExpr::Cmp(*op, sub(left)?, sub(right)?),
            op => CExpr::Arith(sub(left)?, vec![(*op, compile_expr(right, scope)?)]),
        },
        ExprKind::Arith { first, rest } => {
            let mut compiled = Vec::with_capacity(rest.len());
            for (op, x) in rest {
                compiled.push((*op, compile_expr(x, scope)?));
            }
            CExpr::Arith(sub(first)?, compiled)
        }
        ExprKind::In { expr, list } => CExpr::In(
            sub(expr)?,
            list.iter()
                .map(|x| compile_expr(x, scope))
                .collect::<Result<_, _>>()?,
        ),
        ExprKind::Call {
            name,
            name_span,
            args,
        } => {
            if AGGREGATES.iter().any(|(n, ..)| n == name) {
                return Err(invalid(
                    format!("aggregate `{name}` is only allowed in `stats` and `window`"),
                    *name_span,
                ));
            }
            let Some((_, func, min, max)) = SCALARS.iter().find(|(n, ..)| n == name) else {
                return Err(unknown_function(name, *name_span));
            };
            check_arity(name, args.len(), *min, *max, e.span)?;
            let Some(func) = func else {
                // exists(P)
                let Some(Expr {
                    kind: ExprKind::Path(path),
                    ..
                }) = args.first()
                else {
                    let span = args.first().map_or(e.span, |a| a.span);
                    return Err(invalid("`exists` takes a field path", span));
                };
                return Ok(CExpr::Exists(Box::new(resolve_path(path, scope)?)));
            };
            let compiled: Vec<CExpr> = args
                .iter()
                .map(|x| compile_expr(x, scope))
                .collect::<Result<_, _>>()?;
            let span_of = |i: usize| Some(args.get(i).map_or(e.span, |a| a.span));
            if *func == Func::Bin {
                check_bin_args(&compiled, span_of)?;
            } else {
                check_args(name, scalar_arg_kinds(*func), &compiled, span_of)?;
            }
            CExpr::Func(*func, compiled)
        }
    })
}

/// `bin(T, D)` with a constant D that is not a positive duration, or a
/// constant T that is not an instant, is the wrong arguments (it would give
/// null on every row): refused when compiled, or bound for a parameter.
fn check_bin_args(
    args: &[CExpr],
    span_of: impl Fn(usize) -> Option<Span>,
) -> Result<(), QueryError> {
    if let (Some(t), Some(span)) = (args.first().and_then(known_value), span_of(0)) {
        if t.to_instant().is_none() {
            return Err(invalid(
                format!("bin takes an instant as T, found {}", describe_value(&t)),
                span,
            ));
        }
    }
    if let (Some(d), Some(span)) = (args.get(1).and_then(known_value), span_of(1)) {
        if !matches!(d, Value::Duration(d) if d > 0) {
            let found = match args.get(1) {
                Some(CExpr::Now(_)) => "`now`".to_owned(),
                _ => describe_value(&d),
            };
            return Err(invalid(
                format!("bin takes a positive duration as D (such as `1d`), found {found}"),
                span,
            ));
        }
    }
    Ok(())
}

/// What an argument of a function or aggregate must be, for refusing a
/// constant (a literal, or a parameter's value) that never can be: it would
/// give null (or count nothing) on every row. Null is let through: it is
/// no value rather than a wrong one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ArgKind {
    /// Anything.
    Any,
    /// A string (`lower`, `upper`).
    Text,
    /// A string or an array (`len`).
    TextOrArray,
    /// A number (`abs`, `sum`, `avg`, `stddev`, `percentile`'s X).
    Number,
    /// An instant, or text that reads as one (`timestamp`).
    Instant,
    /// A condition: true or false (`countif`).
    Bool,
    /// A number, a string or an instant (`min`, `max`).
    Ordered,
}

impl ArgKind {
    fn fits(self, v: &Value) -> bool {
        match self {
            _ if v.is_null() => true,
            ArgKind::Any => true,
            ArgKind::Text => matches!(v, Value::Str(_)),
            ArgKind::TextOrArray => {
                matches!(v, Value::Str(_) | Value::Json(serde_json::Value::Array(_)))
            }
            ArgKind::Number => matches!(v, Value::Int(_) | Value::Float(_)),
            ArgKind::Instant => v.to_instant().is_some(),
            ArgKind::Bool => matches!(v, Value::Bool(_)),
            ArgKind::Ordered => matches!(
                v,
                Value::Int(_) | Value::Float(_) | Value::Str(_) | Value::Instant(_)
            ),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ArgKind::Any => "any value",
            ArgKind::Text => "a string",
            ArgKind::TextOrArray => "a string or an array",
            ArgKind::Number => "a number",
            ArgKind::Instant => "an instant (RFC 3339 text or a date)",
            ArgKind::Bool => "a condition (true or false)",
            ArgKind::Ordered => "a number, a string or an instant",
        }
    }
}

/// The argument kinds of a scalar function other than `bin` (which
/// `check_bin_args` checks).
fn scalar_arg_kinds(func: Func) -> &'static [ArgKind] {
    match func {
        Func::Len => &[ArgKind::TextOrArray],
        Func::Lower | Func::Upper => &[ArgKind::Text],
        Func::Abs => &[ArgKind::Number],
        Func::Timestamp => &[ArgKind::Instant],
        Func::Coalesce | Func::Bin => &[],
    }
}

/// A scalar function's name, as written in canonical form.
fn scalar_name(func: Func) -> &'static str {
    SCALARS
        .iter()
        .find(|(_, f, ..)| *f == Some(func))
        .map_or("function", |(n, ..)| n)
}

/// An aggregate's name, as written in canonical form.
fn aggregate_name(func: AggFn) -> &'static str {
    AGGREGATES
        .iter()
        .find(|(_, f, ..)| *f == func)
        .map_or("aggregate", |(n, ..)| n)
}

/// The kind of an aggregate's first argument.
fn aggregate_arg_kind(func: AggFn) -> ArgKind {
    match func {
        AggFn::CountIf => ArgKind::Bool,
        AggFn::Sum | AggFn::Avg | AggFn::Stddev | AggFn::Percentile => ArgKind::Number,
        AggFn::Min | AggFn::Max => ArgKind::Ordered,
        _ => ArgKind::Any,
    }
}

/// What an argument is known to be before any row, for [`check_args`]
/// and [`check_bin_args`]: a constant, `now`, or a minus before a constant
/// (what the minus gives, see `value::negate`; a duration as written,
/// `-1d`, so that a message can show it); `None` when rows decide.
fn known_value(e: &CExpr) -> Option<Value> {
    match e {
        CExpr::Const(v) => Some(v.clone()),
        CExpr::Now(_) => Some(Value::Instant(Timestamp::MIN)),
        CExpr::Neg(x) => match &**x {
            CExpr::Const(Value::Duration(d)) => Some(Value::Duration(d.saturating_neg())),
            CExpr::Const(v) => Some(negate(v)),
            _ => None,
        },
        _ => None,
    }
}

/// Refuses an argument known before any row (see [`known_value`]) that
/// is not of its kind, at the argument's span (`span_of` gives `None` for
/// arguments not to check, such as those checked when compiled).
fn check_args(
    name: &str,
    kinds: &[ArgKind],
    args: &[CExpr],
    span_of: impl Fn(usize) -> Option<Span>,
) -> Result<(), QueryError> {
    for (i, (kind, arg)) in kinds.iter().zip(args).enumerate() {
        let (Some(value), Some(span)) = (known_value(arg), span_of(i)) else {
            continue;
        };
        if !kind.fits(&value) {
            let found = match arg {
                CExpr::Now(_) => "`now`".to_owned(),
                _ => describe_value(&value),
            };
            return Err(invalid(
                format!("{name} takes {}, found {found}", kind.describe()),
                span,
            ));
        }
    }
    Ok(())
}

fn unknown_function(name: &str, span: Span) -> QueryError {
    let names = SCALARS
        .iter()
        .map(|(n, ..)| *n)
        .chain(AGGREGATES.iter().map(|(n, ..)| *n));
    QueryError::UnknownFunction {
        name: name.to_owned(),
        suggestion: suggest::closest(name, names).map(|s| format!("{s}()")),
        span,
    }
}

fn check_arity(
    name: &str,
    found: usize,
    min: usize,
    max: usize,
    span: Span,
) -> Result<(), QueryError> {
    if (min..=max).contains(&found) {
        return Ok(());
    }
    let plural = |n: usize| if n == 1 { "argument" } else { "arguments" };
    let expected = if max == usize::MAX {
        format!("{min} or more {}", plural(2))
    } else if min == max {
        format!("{min} {}", plural(min))
    } else {
        format!("{min} or {max} {}", plural(2))
    };
    Err(QueryError::WrongArity {
        name: name.to_owned(),
        expected,
        found,
        span,
    })
}

fn compile_aggregate(e: &Expr, scope: &Scope, stage: &str) -> Result<CAgg, QueryError> {
    let ExprKind::Call {
        name,
        name_span,
        args,
    } = &e.kind
    else {
        return Err(invalid(
            format!("expected an aggregate such as `count()` in `{stage}`, found `{e}`"),
            e.span,
        ));
    };
    let Some((_, func, min, max)) = AGGREGATES.iter().find(|(n, ..)| n == name) else {
        if SCALARS.iter().any(|(n, ..)| n == name) {
            return Err(invalid(
                format!("expected an aggregate such as `count()` in `{stage}`, found `{e}`"),
                e.span,
            ));
        }
        return Err(unknown_function(name, *name_span));
    };
    check_arity(name, args.len(), *min, *max, e.span)?;
    let arg = args.first().map(|a| compile_expr(a, scope)).transpose()?;
    if let (Some(compiled), Some(first)) = (&arg, args.first()) {
        check_args(
            name,
            &[aggregate_arg_kind(*func)],
            std::slice::from_ref(compiled),
            |_| Some(first.span),
        )?;
    }
    let p = match args.get(1) {
        Some(p) => {
            let c = constant_arg(p, "percentile")?;
            if let CExpr::Const(v) = &c {
                check_percentile(v, p.span)?;
            }
            Some(c)
        }
        None => None,
    };
    Ok(CAgg {
        func: *func,
        arg,
        p,
    })
}

fn check_percentile(v: &Value, span: Span) -> Result<f64, QueryError> {
    match v.as_f64() {
        Some(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(invalid(
            format!(
                "percentile takes P between 0 and 100, found {}",
                describe_value(v)
            ),
            span,
        )),
    }
}

// ------------------------------------------------------------------ binding

/// Bound parameter values (already read as values) and `now`.
pub(crate) struct Bindings<'a> {
    pub(crate) params: &'a BTreeMap<String, Value>,
    /// Values as written, for bindings read from text (see `Params`).
    pub(crate) texts: &'a BTreeMap<String, String>,
    pub(crate) now: Timestamp,
}

/// A source matcher with its value bound.
#[derive(Clone, Debug)]
pub(crate) struct BoundMatcher {
    pub(crate) label: Label,
    pub(crate) test: LabelTest,
}

/// A plan with every parameter and `now` replaced by a constant.
#[derive(Clone, Debug)]
pub(crate) struct BoundPlan {
    pub(crate) kinds: Option<Vec<String>>,
    pub(crate) matchers: Vec<BoundMatcher>,
    pub(crate) stages: Vec<PlanStage>,
}

impl Plan {
    /// Substitutes parameters and `now`, checking their types; fails on the
    /// first unbound parameter (before any data is read).
    pub(crate) fn bind(&self, b: &Bindings<'_>) -> Result<BoundPlan, QueryError> {
        let mut matchers = Vec::new();
        for m in &self.matchers {
            let text = match &m.value {
                MatchValue::String(s) => s.clone(),
                MatchValue::Param(name) => match (param(b, name, m.value_span)?, b.texts.get(name))
                {
                    (Value::Str(s), _) => s,
                    // Read from text (`--param t=2024`): as written.
                    (_, Some(written)) => written.clone(),
                    (other, None) => {
                        return Err(invalid(
                            format!(
                                "label `{}` matches strings; parameter `${name}` is {}",
                                m.label.as_str(),
                                describe_value(&other)
                            ),
                            m.value_span,
                        ))
                    }
                },
            };
            let test = match m.op {
                MatchOp::Eq => LabelTest::Eq(text),
                MatchOp::Ne => LabelTest::Ne(text),
                MatchOp::Re => LabelTest::Re(compile_regex(&text, m.value_span)?),
                MatchOp::NotRe => LabelTest::NotRe(compile_regex(&text, m.value_span)?),
            };
            matchers.push(BoundMatcher {
                label: m.label,
                test,
            });
        }
        let mut stages = Vec::with_capacity(self.stages.len());
        for s in &self.stages {
            stages.push(PlanStage {
                stage: bind_stage(&s.stage, b)?,
                origin: s.origin,
                width: s.width,
                records: s.records,
                order: s.order,
            });
        }
        Ok(BoundPlan {
            kinds: self.kinds.clone(),
            matchers,
            stages,
        })
    }

    /// Every parameter name the plan uses, with its first span.
    pub(crate) fn params(&self) -> Vec<(String, Span)> {
        let mut out: Vec<(String, Span)> = Vec::new();
        let mut add = |name: &str, span: Span| {
            if !out.iter().any(|(n, _)| n == name) {
                out.push((name.to_owned(), span));
            }
        };
        for m in &self.matchers {
            if let MatchValue::Param(name) = &m.value {
                add(name, m.value_span);
            }
        }
        for s in &self.stages {
            for_each_expr(&s.stage, &mut |e| collect_params(e, &mut add));
        }
        out
    }
}

fn for_each_expr(stage: &CStage, f: &mut dyn FnMut(&CExpr)) {
    let aggs = |aggregates: &Vec<CAgg>, f: &mut dyn FnMut(&CExpr)| {
        for a in aggregates {
            a.arg.iter().chain(a.p.iter()).for_each(&mut *f);
        }
    };
    match stage {
        CStage::Filter(e) | CStage::Limit(e) => f(e),
        CStage::Latest(list) | CStage::Select(list) => list.iter().for_each(f),
        CStage::Sort { keys, limit } => {
            keys.iter().for_each(|(e, _)| f(e));
            limit.iter().for_each(f);
        }
        CStage::Extend(list) => list.iter().for_each(|(_, e)| f(e)),
        CStage::Stats { aggregates, by } => {
            aggs(aggregates, f);
            by.iter().for_each(f);
        }
        CStage::Window {
            aggregates,
            by,
            start,
            end,
            ..
        } => {
            aggs(aggregates, f);
            by.iter().for_each(&mut *f);
            f(start);
            f(end);
        }
    }
}

fn collect_params(e: &CExpr, add: &mut dyn FnMut(&str, Span)) {
    match e {
        CExpr::Param { name, span } => add(name, *span),
        CExpr::Regex { expr, pattern, .. } => {
            collect_params(expr, add);
            if let Pattern::Param { name, span } = pattern {
                add(name, *span);
            }
        }
        _ => children(e).into_iter().for_each(|c| collect_params(c, add)),
    }
}

/// [`for_each_expr`], for changing the expressions.
fn for_each_expr_mut(stage: &mut CStage, f: &mut dyn FnMut(&mut CExpr)) {
    let aggs = |aggregates: &mut Vec<CAgg>, f: &mut dyn FnMut(&mut CExpr)| {
        for a in aggregates {
            a.arg.iter_mut().chain(a.p.iter_mut()).for_each(&mut *f);
        }
    };
    match stage {
        CStage::Filter(e) | CStage::Limit(e) => f(e),
        CStage::Latest(list) | CStage::Select(list) => list.iter_mut().for_each(f),
        CStage::Sort { keys, limit } => {
            keys.iter_mut().for_each(|(e, _)| f(e));
            limit.iter_mut().for_each(f);
        }
        CStage::Extend(list) => list.iter_mut().for_each(|(_, e)| f(e)),
        CStage::Stats { aggregates, by } => {
            aggs(aggregates, f);
            by.iter_mut().for_each(f);
        }
        CStage::Window {
            aggregates,
            by,
            start,
            end,
            ..
        } => {
            aggs(aggregates, f);
            by.iter_mut().for_each(&mut *f);
            f(start);
            f(end);
        }
    }
}

/// Wraps every subtree [`GUARD_EVERY`] levels below `e` (`level` is
/// `e`'s), and every [`GUARD_EVERY`] levels below those, in a
/// [`CExpr::Deep`] node, so that walking the tree recursively (evaluating
/// it row by row on the caller's thread or a scan thread, binding, cloning,
/// dropping) never needs more than [`GUARD_EVERY`] levels of stack beyond
/// what a guard makes sure of. Trees at most [`GUARD_EVERY`] deep, nearly
/// all, are left as they are and pay nothing. Runs where the planner
/// runs: on a large stack when the text may nest deeply.
fn guard_deep(e: &mut CExpr, level: usize) {
    for c in children_mut(e) {
        guard_deep(c, level + 1);
    }
    if level > 0 && level.is_multiple_of(GUARD_EVERY) {
        let inner = std::mem::replace(e, CExpr::Const(Value::Null));
        *e = CExpr::Deep(Deep(Box::new(inner)));
    }
}

fn children_mut(e: &mut CExpr) -> Vec<&mut CExpr> {
    match e {
        CExpr::Const(_)
        | CExpr::Param { .. }
        | CExpr::Now(_)
        | CExpr::Rec(..)
        | CExpr::Slot(..) => Vec::new(),
        CExpr::Time(x, ..)
        | CExpr::Exists(x)
        | CExpr::Neg(x)
        | CExpr::Not(x)
        | CExpr::IsNull(x, _)
        | CExpr::Deep(Deep(x)) => vec![x],
        CExpr::Regex { expr, .. } => vec![expr],
        CExpr::And(a, b) | CExpr::Or(a, b) | CExpr::Cmp(_, a, b) => vec![a, b],
        CExpr::Arith(first, rest) => std::iter::once(&mut **first)
            .chain(rest.iter_mut().map(|(_, x)| x))
            .collect(),
        CExpr::In(x, list) => std::iter::once(&mut **x).chain(list).collect(),
        CExpr::Func(_, args) => args.iter_mut().collect(),
    }
}

fn children(e: &CExpr) -> Vec<&CExpr> {
    match e {
        CExpr::Const(_)
        | CExpr::Param { .. }
        | CExpr::Now(_)
        | CExpr::Rec(..)
        | CExpr::Slot(..) => Vec::new(),
        CExpr::Time(x, ..)
        | CExpr::Exists(x)
        | CExpr::Neg(x)
        | CExpr::Not(x)
        | CExpr::IsNull(x, _)
        | CExpr::Deep(Deep(x)) => vec![x],
        CExpr::Regex { expr, .. } => vec![expr],
        CExpr::And(a, b) | CExpr::Or(a, b) | CExpr::Cmp(_, a, b) => vec![a, b],
        CExpr::Arith(first, rest) => std::iter::once(&**first)
            .chain(rest.iter().map(|(_, x)| x))
            .collect(),
        CExpr::In(x, list) => std::iter::once(&**x).chain(list).collect(),
        CExpr::Func(_, args) => args.iter().collect(),
    }
}

fn param(b: &Bindings<'_>, name: &str, span: Span) -> Result<Value, QueryError> {
    b.params
        .get(name)
        .cloned()
        .ok_or_else(|| QueryError::UnboundParameter {
            name: name.to_owned(),
            span,
        })
}

fn bind_stage(stage: &CStage, b: &Bindings<'_>) -> Result<CStage, QueryError> {
    let list = |l: &Vec<CExpr>| {
        l.iter()
            .map(|e| bind_expr(e, b))
            .collect::<Result<Vec<_>, _>>()
    };
    let aggs = |aggregates: &Vec<CAgg>| {
        aggregates
            .iter()
            .map(|a| {
                let p = match &a.p {
                    Some(p) => {
                        let span = match p {
                            CExpr::Param { span, .. } => *span,
                            _ => Span::default(),
                        };
                        let bound = bind_expr(p, b)?;
                        if let CExpr::Const(v) = &bound {
                            check_percentile(v, span)?;
                        }
                        Some(bound)
                    }
                    None => None,
                };
                let arg = a.arg.as_ref().map(|e| bind_expr(e, b)).transpose()?;
                if let (Some(CExpr::Param { span, .. }), Some(bound)) = (&a.arg, &arg) {
                    // A parameter's value is checked as a literal's was.
                    check_args(
                        aggregate_name(a.func),
                        &[aggregate_arg_kind(a.func)],
                        std::slice::from_ref(bound),
                        |_| Some(*span),
                    )?;
                }
                Ok(CAgg {
                    func: a.func,
                    arg,
                    p,
                })
            })
            .collect::<Result<Vec<_>, QueryError>>()
    };
    Ok(match stage {
        CStage::Filter(e) => CStage::Filter(bind_expr(e, b)?),
        CStage::Latest(by) => CStage::Latest(list(by)?),
        CStage::Sort { keys, limit } => CStage::Sort {
            keys: keys
                .iter()
                .map(|(e, d)| Ok((bind_expr(e, b)?, *d)))
                .collect::<Result<_, QueryError>>()?,
            limit: limit.as_ref().map(|n| bind_limit(n, b)).transpose()?,
        },
        CStage::Limit(n) => CStage::Limit(bind_limit(n, b)?),
        CStage::Extend(list) => CStage::Extend(
            list.iter()
                .map(|(slot, e)| Ok((*slot, bind_expr(e, b)?)))
                .collect::<Result<_, QueryError>>()?,
        ),
        CStage::Select(l) => CStage::Select(list(l)?),
        CStage::Stats { aggregates, by } => CStage::Stats {
            aggregates: aggs(aggregates)?,
            by: list(by)?,
        },
        CStage::Window {
            aggregates,
            slots,
            by,
            start,
            end,
            frame_span,
        } => {
            let (start, end) = bind_frame(start, end, *frame_span, b)?;
            CStage::Window {
                aggregates: aggs(aggregates)?,
                slots: slots.clone(),
                by: list(by)?,
                start,
                end,
                frame_span: *frame_span,
            }
        }
    })
}

fn bind_limit(n: &CExpr, b: &Bindings<'_>) -> Result<CExpr, QueryError> {
    let span = match n {
        CExpr::Param { span, .. } => *span,
        _ => Span::default(),
    };
    match bind_expr(n, b)? {
        CExpr::Const(Value::Int(i)) if i >= 0 => Ok(CExpr::Const(Value::Int(i))),
        CExpr::Const(v) => Err(invalid(
            format!(
                "`limit` takes a non-negative integer, found {}",
                describe_value(&v)
            ),
            span,
        )),
        other => Ok(other),
    }
}

fn bind_expr(e: &CExpr, b: &Bindings<'_>) -> Result<CExpr, QueryError> {
    let sub = |x: &CExpr| bind_expr(x, b).map(Box::new);
    Ok(match e {
        CExpr::Param { name, span } => CExpr::Const(param(b, name, *span)?),
        CExpr::Now(offset) => CExpr::Const(Value::Instant(b.now.saturating_add_micros(*offset))),
        CExpr::Time(arg, span, stage) => {
            let value = match bind_expr(arg, b)? {
                CExpr::Const(v) => v,
                _ => Value::Null,
            };
            check_time_value(&value, *span, stage)?;
            let ts = match value {
                Value::Duration(d) => b.now.saturating_add_micros(d.saturating_neg()),
                other => other.to_instant().unwrap_or(Timestamp::MIN),
            };
            CExpr::Const(Value::Instant(ts))
        }
        CExpr::Const(_) | CExpr::Rec(..) | CExpr::Slot(..) => e.clone(),
        CExpr::Deep(Deep(x)) => CExpr::Deep(Deep(Deep::with_room(|| sub(x))?)),
        CExpr::Exists(x) => CExpr::Exists(sub(x)?),
        CExpr::Neg(x) => CExpr::Neg(sub(x)?),
        CExpr::Not(x) => CExpr::Not(sub(x)?),
        CExpr::IsNull(x, negated) => CExpr::IsNull(sub(x)?, *negated),
        CExpr::And(x, y) => CExpr::And(sub(x)?, sub(y)?),
        CExpr::Or(x, y) => CExpr::Or(sub(x)?, sub(y)?),
        CExpr::Arith(first, rest) => CExpr::Arith(
            sub(first)?,
            rest.iter()
                .map(|(op, x)| Ok((*op, bind_expr(x, b)?)))
                .collect::<Result<_, QueryError>>()?,
        ),
        CExpr::Cmp(op, x, y) => {
            let (x, y) = (sub(x)?, sub(y)?);
            // `x = null` and `x != null` test for null (or missing).
            let is_null_const = |c: &CExpr| matches!(c, CExpr::Const(Value::Null));
            match op {
                BinOp::Eq | BinOp::Ne if is_null_const(&y) => CExpr::IsNull(x, *op == BinOp::Ne),
                BinOp::Eq | BinOp::Ne if is_null_const(&x) => CExpr::IsNull(y, *op == BinOp::Ne),
                _ => CExpr::Cmp(*op, x, y),
            }
        }
        CExpr::Regex {
            expr,
            pattern,
            negated,
        } => {
            let pattern = match pattern {
                Pattern::Compiled(re) => Pattern::Compiled(re.clone()),
                Pattern::Param { name, span } => match param(b, name, *span)? {
                    Value::Str(s) => Pattern::Compiled(compile_regex(&s, *span)?),
                    other => {
                        return Err(invalid(
                            format!(
                                "a regular expression must be a string; parameter `${name}` is {}",
                                describe_value(&other)
                            ),
                            *span,
                        ))
                    }
                },
            };
            CExpr::Regex {
                expr: sub(expr)?,
                pattern,
                negated: *negated,
            }
        }
        CExpr::In(x, list) => {
            // A `null` candidate (the literal, or a parameter bound to null)
            // tests for null as `x = null` does; any other candidate is
            // compared, so one that is null on a row matches nothing, as
            // `x = y` does not.
            let x = sub(x)?;
            let mut null_listed = false;
            let mut compared = Vec::with_capacity(list.len());
            for c in list {
                match bind_expr(c, b)? {
                    CExpr::Const(Value::Null) => null_listed = true,
                    c => compared.push(c),
                }
            }
            let any_of = CExpr::In(x.clone(), compared);
            if null_listed {
                CExpr::Or(Box::new(CExpr::IsNull(x, false)), Box::new(any_of))
            } else {
                any_of
            }
        }
        CExpr::Func(f, args) => {
            let bound: Vec<CExpr> = args
                .iter()
                .map(|c| bind_expr(c, b))
                .collect::<Result<_, _>>()?;
            // A parameter's value is checked as a literal's was (the rest
            // were checked when compiled).
            let span_of = |i: usize| match args.get(i) {
                Some(CExpr::Param { span, .. }) => Some(*span),
                _ => None,
            };
            if *f == Func::Bin {
                check_bin_args(&bound, span_of)?;
            } else {
                check_args(scalar_name(*f), scalar_arg_kinds(*f), &bound, span_of)?;
            }
            CExpr::Func(*f, bound)
        }
    })
}

// ------------------------------------------------------------------ access paths

/// How the rows enter the pipeline.
#[derive(Clone, Debug)]
pub(crate) enum Access {
    /// `RecordSource::scan`.
    Scan(ScanRequest),
    /// `RecordSource::latest_records`, then sorted (it replaces a leading `latest`).
    Latest {
        kinds: Option<Vec<String>>,
        targets: Option<Vec<String>>,
    },
}

/// The access path and the stages left to run row by row.
#[derive(Clone, Debug)]
pub(crate) struct Physical {
    pub(crate) access: Access,
    /// Source matchers the scan does not answer, checked row by row.
    pub(crate) label_filters: Vec<BoundMatcher>,
    pub(crate) stages: Vec<PlanStage>,
    /// Stage origins (query stage indexes) fully answered by the access path.
    pub(crate) absorbed: Vec<usize>,
}

/// Whether `latest by <by>` keeps one row per (kind, target), as the
/// `latest` table does: grouped by kind and target in either order, or by
/// target alone when the query reads one kind. (The stage's rows come out
/// ordered by (`produced_at`, `id`) whatever the grouping's order.)
fn groups_like_the_latest_table(by: &[CExpr], kinds: Option<&[String]>) -> bool {
    let field = |e: &CExpr| match e {
        CExpr::Rec(f @ (Field::Kind | Field::Target), rest) if rest.is_empty() => Some(*f),
        _ => None,
    };
    match by {
        [a, b] => matches!(
            (field(a), field(b)),
            (Some(Field::Kind), Some(Field::Target)) | (Some(Field::Target), Some(Field::Kind))
        ),
        [a] => field(a) == Some(Field::Target) && kinds.is_some_and(|k| k.len() == 1),
        _ => false,
    }
}

/// Chooses the access path for a bound plan.
pub(crate) fn access_path(
    plan: &BoundPlan,
    source: &dyn RecordSource,
    use_indexes: bool,
) -> crate::Result<Physical> {
    let mut request = ScanRequest {
        kinds: plan.kinds.clone(),
        use_indexes,
        ..ScanRequest::default()
    };
    let mut label_filters = Vec::new();
    let target_tests: Vec<&BoundMatcher> = plan
        .matchers
        .iter()
        .filter(|m| m.label.is_target_part())
        .collect();
    if !target_tests.is_empty() {
        let mut names: Vec<String> = source
            .targets()?
            .into_iter()
            .filter(|t| {
                target_tests.iter().all(|m| {
                    let value = match m.label {
                        Label::Source => &t.source_id,
                        Label::Schema => &t.schema,
                        Label::Table => &t.table,
                        _ => &t.name,
                    };
                    m.test.matches(value)
                })
            })
            .map(|t| crate::model::target_key(&t.source_id, &t.schema, &t.table))
            .collect();
        names.sort();
        names.dedup();
        request.targets = Some(names);
    }
    for m in &plan.matchers {
        let slot = match (m.label, &m.test) {
            (Label::Producer, LabelTest::Eq(v)) => Some((&mut request.producers, v)),
            // A record without a run id reads as `""` (and is not in the
            // by-run index): `run_id=""` stays a row filter.
            (Label::RunId, LabelTest::Eq(v)) if !v.is_empty() => Some((&mut request.run_ids, v)),
            _ => None,
        };
        match slot {
            Some((list, value)) => {
                let next = match list.take() {
                    // Two different `=` on one label: nothing matches.
                    Some(existing) => existing.into_iter().filter(|v| v == value).collect(),
                    None => vec![value.clone()],
                };
                *list = Some(next);
            }
            None if m.label.is_target_part() => {}
            None => label_filters.push(m.clone()),
        }
    }

    let mut stages = plan.stages.clone();
    let mut absorbed = Vec::new();

    // `latest` first, with nothing but kinds and target matchers before it.
    if use_indexes
        && label_filters.is_empty()
        && request.producers.is_none()
        && request.run_ids.is_none()
    {
        if let Some(first) = stages.first() {
            if let CStage::Latest(by) = &first.stage {
                if groups_like_the_latest_table(by, request.kinds.as_deref()) {
                    absorbed.push(first.origin);
                    stages.remove(0);
                    return Ok(Physical {
                        access: Access::Latest {
                            kinds: request.kinds,
                            targets: request.targets,
                        },
                        label_filters,
                        stages,
                        absorbed,
                    });
                }
            }
        }
    }

    // Time bounds on `produced_at` at the head of the pipeline, before any
    // stage that changes which rows exist.
    let mut time = TimeRange::ALL;
    for stage in stages.iter_mut() {
        match &mut stage.stage {
            CStage::Filter(expr) => {
                let mut rest = Vec::new();
                for conjunct in split_and(expr.clone()) {
                    match time_bound(&conjunct) {
                        Some(range) => time = time.intersect(&range),
                        None => {
                            // Path constraints select a superset of the rows
                            // (arrays, instants written differently): the
                            // conjunct stays to be checked row by row.
                            if let Some(constraint) =
                                path_constraint(&conjunct).filter(|_| use_indexes)
                            {
                                request.paths.push(constraint);
                            }
                            rest.push(conjunct);
                        }
                    }
                }
                match join_and(rest) {
                    Some(e) => *expr = e,
                    None => {
                        absorbed.push(stage.origin);
                        *expr = CExpr::Const(Value::Bool(true));
                    }
                }
            }
            CStage::Extend(_) | CStage::Sort { limit: None, .. } => {}
            _ => break,
        }
    }
    stages.retain(|s| {
        !(matches!(&s.stage, CStage::Filter(CExpr::Const(Value::Bool(true))))
            && absorbed.contains(&s.origin))
    });
    request.time = time;
    request.projection = projection(&stages, &label_filters);
    Ok(Physical {
        access: Access::Scan(request),
        label_filters,
        stages,
        absorbed,
    })
}

/// The parts of each record the pipeline reads, when its output is not
/// records: what the label filters and the stages up to the first one that
/// turns records into rows (`select`, `stats`) name. `None` (every part)
/// when records reach the output.
fn projection(stages: &[PlanStage], label_filters: &[BoundMatcher]) -> Option<Projection> {
    let last = stages.iter().position(|s| !s.records)?;
    let mut p = Projection::default();
    for m in label_filters {
        match m.label {
            Label::Source | Label::Schema | Label::Table | Label::Target => p.target = true,
            Label::Producer => p.producer_id = true,
            Label::RunId | Label::JobId | Label::Namespace => p.context = true,
            Label::Tenant => p.context_extras = true,
        }
    }
    fn walk(e: &CExpr, p: &mut Projection) {
        if let CExpr::Rec(field, rest) = e {
            let first = match rest.first() {
                Some(Segment::Field(name)) => Some(name.as_str()),
                _ => None,
            };
            match field {
                Field::Id | Field::ProducedAt => {}
                Field::Kind => p.kind = true,
                Field::ProducerId => p.producer_id = true,
                Field::Version => p.version = true,
                Field::Quality => p.quality = true,
                Field::Payload => p.payload.add(first),
                Field::Extras => p.extras.add(first),
                Field::Target => match first {
                    Some("extras") => p.target_extras = true,
                    _ => p.target = true,
                },
                Field::Context => match first {
                    Some("extras") => p.context_extras = true,
                    Some(_) => p.context = true,
                    None => {
                        p.context = true;
                        p.context_extras = true;
                    }
                },
            }
        }
        for child in children(e) {
            walk(child, p);
        }
    }
    for stage in &stages[..=last] {
        for_each_expr(&stage.stage, &mut |e| walk(e, &mut p));
    }
    Some(p)
}

fn split_and(e: CExpr) -> Vec<CExpr> {
    let mut out = Vec::new();
    let mut stack = vec![e];
    while let Some(e) = stack.pop() {
        match e {
            CExpr::And(a, b) => {
                stack.push(*b);
                stack.push(*a);
            }
            other => out.push(other),
        }
    }
    out
}

/// The conjunction of `list`, as a balanced tree (see [`balanced`]): the
/// list can be a flattened chain of thousands of operands.
fn join_and(list: Vec<CExpr>) -> Option<CExpr> {
    balanced(LogicOp::And, list)
}

/// The range of `produced_at OP instant` (either way round), if `e` is one.
fn time_bound(e: &CExpr) -> Option<TimeRange> {
    let CExpr::Cmp(op, a, b) = e else {
        return None;
    };
    let (op, ts) = match (&**a, &**b) {
        (CExpr::Rec(Field::ProducedAt, rest), CExpr::Const(Value::Instant(ts)))
            if rest.is_empty() =>
        {
            (*op, *ts)
        }
        (CExpr::Const(Value::Instant(ts)), CExpr::Rec(Field::ProducedAt, rest))
            if rest.is_empty() =>
        {
            (flip(*op)?, *ts)
        }
        _ => return None,
    };
    let next = ts.saturating_add_micros(1);
    Some(match op {
        BinOp::Ge => TimeRange::new(ts, Timestamp::MAX),
        BinOp::Gt => TimeRange::new(next, Timestamp::MAX),
        BinOp::Lt => TimeRange::new(Timestamp::MIN, ts),
        BinOp::Le => TimeRange::new(Timestamp::MIN, next),
        BinOp::Eq => TimeRange::new(ts, next),
        _ => return None,
    })
}

/// A constraint on a payload or extras path that holds for every row where
/// `e` is true (so the index may narrow the scan), when `e` is
/// `path OP constant` (either way round) or `path in (constants)`.
fn path_constraint(e: &CExpr) -> Option<PathConstraint> {
    fn path_of(e: &CExpr) -> Option<String> {
        let CExpr::Rec(field, segments) = e else {
            return None;
        };
        let mut path = match field {
            Field::Payload => "payload".to_owned(),
            Field::Extras => "extras".to_owned(),
            _ => return None,
        };
        if segments.is_empty() {
            return None;
        }
        for segment in segments {
            match segment {
                Segment::Field(name) if !name.is_empty() && !name.contains('.') => {
                    path.push('.');
                    path.push_str(name);
                }
                _ => return None,
            }
        }
        Some(path)
    }
    // Strings and booleans only for equality: string order differs from the
    // index's order for strings that read as instants.
    fn value_of(v: &CExpr, for_range: bool) -> Option<IndexValue> {
        let CExpr::Const(v) = v else {
            return None;
        };
        match v {
            Value::Bool(b) if !for_range => Some(IndexValue::Bool(*b)),
            Value::Int(i) => Some(IndexValue::Number(*i as f64)),
            Value::Float(f) => Some(IndexValue::Number(*f)),
            Value::Str(s) if !for_range => Some(IndexValue::from_str_value(s)),
            Value::Instant(ts) => Some(IndexValue::Instant(*ts)),
            _ => None,
        }
    }
    match e {
        CExpr::In(x, list) => {
            let path = path_of(x)?;
            let values = list
                .iter()
                .map(|v| value_of(v, false))
                .collect::<Option<Vec<_>>>()?;
            Some(PathConstraint {
                path,
                matcher: PathMatch::AnyOf(values),
            })
        }
        CExpr::Cmp(op, a, b) => {
            let (op, path, constant) = match (path_of(a), path_of(b)) {
                (Some(path), None) => (*op, path, &**b),
                (None, Some(path)) => (flip(*op)?, path, &**a),
                _ => return None,
            };
            // Range bounds are inclusive: i64 to f64 rounding must never
            // leave out a row that the exact comparison keeps.
            let matcher = match op {
                BinOp::Eq => PathMatch::AnyOf(vec![value_of(constant, false)?]),
                BinOp::Gt | BinOp::Ge => PathMatch::Range {
                    lower: Some((value_of(constant, true)?, true)),
                    upper: None,
                },
                BinOp::Lt | BinOp::Le => PathMatch::Range {
                    lower: None,
                    upper: Some((value_of(constant, true)?, true)),
                },
                _ => return None,
            };
            Some(PathConstraint { path, matcher })
        }
        _ => None,
    }
}

fn flip(op: BinOp) -> Option<BinOp> {
    Some(match op {
        BinOp::Lt => BinOp::Gt,
        BinOp::Le => BinOp::Ge,
        BinOp::Gt => BinOp::Lt,
        BinOp::Ge => BinOp::Le,
        BinOp::Eq => BinOp::Eq,
        _ => return None,
    })
}
