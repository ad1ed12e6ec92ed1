//! The query language (spec `query-language.md`): parse → plan → execute.
//!
//! ```
//! use almanac::query::{self, ExecOptions, MemorySource, Params};
//!
//! let query = query::parse("recon_result | since 7d | stats count() by target").unwrap();
//! assert_eq!(query.to_string(), "recon_result | since 7d | stats count() by target");
//!
//! // Prepare once, run many times with different bindings.
//! let prepared = query::prepare("recon_result{table=$table} | latest").unwrap();
//! let mut params = Params::new();
//! params.insert_str("table", "orders");
//! let source = MemorySource::default();
//! let output = prepared.run(&source, &params, &ExecOptions::default()).unwrap();
//! assert!(output.rows.is_empty());
//! ```
//!
//! Layers, one way: [`parse`] (syntax only) → the planner (names resolved
//! before any data is read; access paths chosen once parameters are bound)
//! → the executor (an iterator pipeline) → a [`RecordSource`].

pub mod ast;
mod error;
mod exec;
mod memory;
mod parse;
mod plan;
mod print;
mod source;
mod suggest;
mod value;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value as Json;

pub use error::{line_column, QueryError};
pub use memory::MemorySource;
pub use source::{
    IndexValue, KeySet, PathConstraint, PathMatch, Projection, RecordIter, RecordSource,
    ScanDescription, ScanRequest, TargetInfo,
};

use crate::model::{StoredRecord, Timestamp};
use ast::Literal;
use plan::{Access, Bindings, Plan};
use value::Value;

/// The longest query text accepted, in bytes (64 KiB).
pub const MAX_QUERY_BYTES: usize = 64 * 1024;

/// The deepest nesting accepted: parentheses (but `(now)`), calls, lists.
pub const MAX_DEPTH: usize = 128;

/// The deepest syntax tree accepted. Operator chains
/// are flat (one level however long: [`ast::ExprKind::Logic`],
/// [`ast::ExprKind::Arith`]) and runs of `not` or `-` are read in a loop,
/// so a syntax tree grows by at most seven levels (`or`, `and`, `not`, a
/// comparison, a sum, a product, a minus or a call) per level of nesting:
/// no query within [`MAX_DEPTH`] reaches this, except with a run of
/// `not` or unary `-` (no level of nesting, but one node each) of about
/// as many as this. A planned tree can be deeper (an `and`/`or` chain is
/// planned as a balanced tree, log2 of its length deep: ~1,400 levels
/// for long chains at each of 128 nesting levels) and is not limited: every
/// 32 levels it holds a guard that makes sure of the stack the next 32
/// need, switching to a new stack segment when the thread has too little
/// left, so evaluating, cloning and dropping it fit any thread. Parsing,
/// planning and binding deep text run on a thread of their own with a
/// 64 MiB stack.
pub const MAX_TREE_DEPTH: usize = 7 * (MAX_DEPTH + 1) + 1;

/// The columns of a stream of records (before any computed field).
pub const RECORD_COLUMNS: [&str; 6] = [
    "id",
    "kind",
    "target",
    "produced_at",
    "producer_id",
    "payload",
];

/// Parses a query's text into its syntax tree (syntax only: names are
/// resolved when the query is prepared).
pub fn parse(text: &str) -> Result<ast::Query, QueryError> {
    parse::parse_query(text)
}

/// Parses and resolves a query once, for running many times.
pub fn prepare(text: &str) -> Result<PreparedQuery, QueryError> {
    let (query, plan) = parse::with_stack_for(text, || {
        let query = parse::parse_on_this_thread(text)?;
        let plan = plan::compile(&query)?;
        Ok((query, plan))
    })?;
    Ok(PreparedQuery {
        text: text.to_owned(),
        deep: parse::might_nest_deeply(text),
        query,
        plan,
    })
}

/// Parameter bindings: `$name` → a literal value.
///
/// A service passes user input only here, never in the query text, so the
/// input cannot change the query's shape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params {
    values: BTreeMap<String, Literal>,
    /// The value's text as written, for bindings read from text
    /// ([`Params::insert_binding`]): a label matcher, which only takes
    /// strings, takes that (`--param t=2024` binds the integer 2024, and
    /// `{table=$t}` matches the table named `2024`).
    texts: BTreeMap<String, String>,
}

impl Params {
    /// No bindings.
    pub fn new() -> Self {
        Params::default()
    }

    /// Binds `$name` to a literal (replacing an earlier binding).
    pub fn insert(&mut self, name: &str, value: Literal) -> &mut Self {
        self.texts.remove(name);
        self.values.insert(name.to_owned(), value);
        self
    }

    /// Binds `$name` to a string.
    pub fn insert_str(&mut self, name: &str, value: &str) -> &mut Self {
        self.insert(name, Literal::String(value.to_owned()))
    }

    /// Binds `$name` to an integer.
    pub fn insert_int(&mut self, name: &str, value: i64) -> &mut Self {
        self.insert(name, Literal::Int(value))
    }

    /// Binds `$name` to an instant.
    pub fn insert_instant(&mut self, name: &str, value: Timestamp) -> &mut Self {
        self.insert(name, Literal::Instant(ast::Instant::At(value)))
    }

    /// The value bound to `$name`.
    pub fn get(&self, name: &str) -> Option<&Literal> {
        self.values.get(name)
    }

    /// Reads a `--param name=value` binding. The value is read as a literal
    /// of the language when it is exactly one (a number, a quoted string, an
    /// instant such as `2024-01-10` or `now - 7d`, a duration, `true`,
    /// `false`, `null`), and otherwise taken as a plain string: `table=orders`
    /// binds the string `orders`, `min=5` the integer 5, `name="5"` the
    /// string `5`.
    pub fn parse_binding(text: &str) -> Result<(String, Literal), QueryError> {
        let bad = |message: &str| QueryError::BadBinding {
            text: text.to_owned(),
            message: message.to_owned(),
        };
        let (name, value) = text
            .split_once('=')
            .ok_or_else(|| bad("expected name=value"))?;
        let name = name.strip_prefix('$').unwrap_or(name);
        if !parse::is_param_name(name) {
            return Err(bad("parameter names match [a-z_][a-z0-9_]*"));
        }
        let literal =
            parse::parse_literal(value).unwrap_or_else(|| Literal::String(value.to_owned()));
        Ok((name.to_owned(), literal))
    }

    /// Reads and adds a `name=value` binding (see [`Params::parse_binding`]).
    /// Where the query matches a label with it (`{table=$t}`), which takes
    /// only strings, the value is its text as written (`t=2024` matches
    /// the table `2024`); everywhere else it is the literal read.
    pub fn insert_binding(&mut self, text: &str) -> Result<&mut Self, QueryError> {
        let (name, value) = Params::parse_binding(text)?;
        self.insert(&name, value);
        if let Some((_, written)) = text.split_once('=') {
            self.texts.insert(name, written.to_owned());
        }
        Ok(self)
    }

    fn values(&self, now: Timestamp) -> BTreeMap<String, Value> {
        self.values
            .iter()
            .map(|(name, lit)| (name.clone(), literal_value(lit, now)))
            .collect()
    }
}

fn literal_value(lit: &Literal, now: Timestamp) -> Value {
    match lit {
        Literal::Null => Value::Null,
        Literal::Bool(b) => Value::Bool(*b),
        Literal::Int(i) => Value::Int(*i),
        Literal::Float(x) => value::float(*x),
        Literal::String(s) => Value::Str(s.clone()),
        Literal::Instant(ast::Instant::At(ts) | ast::Instant::Date(ts)) => Value::Instant(*ts),
        Literal::Instant(ast::Instant::Now(offset)) => {
            let micros = offset.map_or(0, |(sign, d)| {
                let m = d.micros().unwrap_or(i64::MAX);
                if sign == ast::Sign::Minus {
                    -m
                } else {
                    m
                }
            });
            Value::Instant(now.saturating_add_micros(micros))
        }
        Literal::Duration(d) => Value::Duration(d.micros().unwrap_or(i64::MAX)),
    }
}

/// How a query runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecOptions {
    /// The instant `now` names (and bare durations count back from).
    pub now: Timestamp,
    /// Use secondary indexes and the latest table; with `false` the store
    /// scans partitions and filters row by row (same results, for checking).
    pub use_indexes: bool,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            now: Timestamp::now(),
            use_indexes: true,
        }
    }
}

/// One result row.
// Most rows of a query are of one variant or the other, never mixed.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Row {
    /// A record, with the fields `extend` and `window` computed for it.
    Record {
        /// The record.
        record: StoredRecord,
        /// Computed fields, in the order they were introduced.
        computed: Vec<(String, Json)>,
    },
    /// A row of `select` or `stats`: one value per column.
    Values(Vec<Json>),
}

impl Row {
    /// The row as the JSON text of spec `records.md` §3 (`jsonl`), on one
    /// line: a record is its canonical JSON with `id` (the log's line) plus
    /// each computed field as an extra top-level key, in the order they were
    /// introduced; a row of values has one key per column, in column order.
    pub fn json_text(&self, columns: &[String]) -> String {
        let mut out = String::new();
        match self {
            Row::Record { record, computed } => {
                out = serde_json::to_string(record).unwrap_or_default();
                if !computed.is_empty() && out.ends_with('}') {
                    out.pop();
                    for (name, value) in computed {
                        out.push(',');
                        push_json(&mut out, name);
                        out.push(':');
                        push_json(&mut out, value);
                    }
                    out.push('}');
                }
            }
            Row::Values(values) => {
                out.push('{');
                for (i, (name, value)) in columns.iter().zip(values).enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    push_json(&mut out, name);
                    out.push(':');
                    push_json(&mut out, value);
                }
                out.push('}');
            }
        }
        out
    }

    /// The row as a JSON value: the object [`Row::json_text`] prints, for
    /// comparing and inspecting rows. A `serde_json` object keeps its keys
    /// sorted, not in column order: print rows with [`Row::json_text`].
    pub fn to_json(&self, columns: &[String]) -> Json {
        match self {
            Row::Record { record, computed } => {
                let mut json = record.to_json_value();
                if let Json::Object(map) = &mut json {
                    for (name, value) in computed {
                        map.insert(name.clone(), value.clone());
                    }
                }
                json
            }
            Row::Values(values) => Json::Object(
                columns
                    .iter()
                    .cloned()
                    .zip(values.iter().cloned())
                    .collect(),
            ),
        }
    }

    /// The row's cells under `columns` (for tables and CSV): for a record,
    /// `target` is the canonical name and `produced_at` RFC 3339; other
    /// columns are computed fields or top-level fields of the record's JSON.
    pub fn cells(&self, columns: &[String]) -> Vec<Json> {
        match self {
            Row::Values(values) => values.clone(),
            Row::Record { record, computed } => {
                let json = record.to_json_value();
                columns
                    .iter()
                    .map(|column| {
                        if let Some((_, v)) = computed.iter().find(|(n, _)| n == column) {
                            return v.clone();
                        }
                        match column.as_str() {
                            "target" => Json::String(record.record.target_name()),
                            other => json.get(other).cloned().unwrap_or(Json::Null),
                        }
                    })
                    .collect()
            }
        }
    }
}

/// All the rows of a query, and the names of its columns.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryOutput {
    /// The column names: for records, [`RECORD_COLUMNS`] then computed fields.
    pub columns: Vec<String>,
    /// The rows, in the query's order.
    pub rows: Vec<Row>,
}

/// The rows of a query as they are produced.
pub struct RowStream<'a> {
    columns: Vec<String>,
    computed: Vec<String>,
    records: bool,
    inner: exec::RowIter<'a>,
}

impl RowStream<'_> {
    /// The column names (see [`QueryOutput::columns`]).
    pub fn columns(&self) -> &[String] {
        &self.columns
    }
}

impl Iterator for RowStream<'_> {
    type Item = crate::Result<Row>;

    fn next(&mut self) -> Option<Self::Item> {
        let row = match self.inner.next()? {
            Ok(row) => row,
            Err(e) => return Some(Err(e)),
        };
        Some(Ok(match row.record {
            Some(record) if self.records => Row::Record {
                record,
                computed: self
                    .computed
                    .iter()
                    .cloned()
                    .zip(
                        row.slots
                            .into_iter()
                            .map(Value::into_json)
                            .chain(std::iter::repeat(Json::Null)),
                    )
                    .collect(),
            },
            _ => Row::Values(row.slots.into_iter().map(Value::into_json).collect()),
        }))
    }
}

/// A parsed and resolved query, ready to run with parameter bindings.
#[derive(Clone, Debug)]
pub struct PreparedQuery {
    text: String,
    /// The text could make a deep tree: binding runs on a large stack.
    deep: bool,
    query: ast::Query,
    plan: Plan,
}

impl PreparedQuery {
    /// The query text as given.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The syntax tree.
    pub fn query(&self) -> &ast::Query {
        &self.query
    }

    /// True when the rows are records (with any field `extend` or `window`
    /// computed), false when they are rows of columns (`select`, `stats`).
    pub fn returns_records(&self) -> bool {
        self.plan.records
    }

    /// Checks `params` against the query as a run would before reading
    /// anything (every parameter bound, each value of a type its place
    /// accepts), without a source: a caller can refuse bad bindings before
    /// it opens a store.
    pub fn check_params(&self, params: &Params) -> Result<(), QueryError> {
        self.bind(params, Timestamp::now()).map(|_| ())
    }

    /// The plan with `params` and `now` substituted. Binding walks the
    /// tree recursively: a deep one on a large stack.
    fn bind(&self, params: &Params, now: Timestamp) -> Result<plan::BoundPlan, QueryError> {
        let values = params.values(now);
        parse::with_stack_if(self.deep, || {
            self.plan.bind(&Bindings {
                params: &values,
                texts: &params.texts,
                now,
            })
        })
    }

    /// The names of the parameters the query uses, without `$`.
    pub fn param_names(&self) -> Vec<String> {
        self.plan
            .params()
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }

    /// The output columns (see [`QueryOutput::columns`]).
    pub fn columns(&self) -> Vec<String> {
        if self.plan.records {
            RECORD_COLUMNS
                .iter()
                .map(|c| (*c).to_owned())
                .chain(self.plan.columns.iter().cloned())
                .collect()
        } else {
            self.plan.columns.clone()
        }
    }

    fn physical(
        &self,
        source: &dyn RecordSource,
        params: &Params,
        options: &ExecOptions,
    ) -> crate::Result<plan::Physical> {
        let bound = self.bind(params, options.now)?;
        plan::access_path(&bound, source, options.use_indexes)
    }

    /// Runs the query and streams its rows. Parameters are checked (an
    /// unbound one is an error) before any data is read.
    pub fn stream<'a>(
        &self,
        source: &'a dyn RecordSource,
        params: &Params,
        options: &ExecOptions,
    ) -> crate::Result<RowStream<'a>> {
        let physical = self.physical(source, params, options)?;
        Ok(RowStream {
            columns: self.columns(),
            computed: self.plan.columns.clone(),
            records: self.plan.records,
            inner: exec::execute(physical, source)?,
        })
    }

    /// Runs the query and collects its rows.
    pub fn run(
        &self,
        source: &dyn RecordSource,
        params: &Params,
        options: &ExecOptions,
    ) -> crate::Result<QueryOutput> {
        let stream = self.stream(source, params, options)?;
        let columns = stream.columns().to_vec();
        let rows = stream.collect::<crate::Result<Vec<_>>>()?;
        Ok(QueryOutput { columns, rows })
    }

    /// How the query would run: the access path (partitions, pruning,
    /// index) and each step done row by row.
    pub fn explain(
        &self,
        source: &dyn RecordSource,
        params: &Params,
        options: &ExecOptions,
    ) -> crate::Result<String> {
        let physical = self.physical(source, params, options)?;
        let mut out = String::new();
        let _ = writeln!(out, "query: {}", self.query);
        let list = |l: &Option<Vec<String>>| match l {
            None => "any".to_owned(),
            Some(l) if l.is_empty() => "none match".to_owned(),
            Some(l) => l.join(", "),
        };
        // Target keys: a key that is not a canonical name starts with NUL,
        // which a terminal would not show; its JSON array of parts is shown.
        let show_targets = |l: &Option<Vec<String>>| {
            list(&l.as_ref().map(|keys| {
                keys.iter()
                    .map(|k| k.strip_prefix('\0').unwrap_or(k).to_owned())
                    .collect()
            }))
        };
        match &physical.access {
            Access::Latest { kinds, targets } => {
                let _ = writeln!(out, "access: latest table (replaces `latest`)");
                let _ = writeln!(out, "  kinds: {}", list(kinds));
                let _ = writeln!(out, "  targets: {}", show_targets(targets));
            }
            Access::Scan(request) => {
                let description = source.describe_scan(request)?;
                let _ = writeln!(out, "access: scan");
                let _ = writeln!(out, "  kinds: {}", list(&request.kinds));
                let time = if request.time == crate::model::TimeRange::ALL {
                    "all".to_owned()
                } else {
                    let bound = |ts: Timestamp, open: Timestamp| {
                        if ts == open {
                            "..".to_owned()
                        } else {
                            ts.to_rfc3339()
                        }
                    };
                    format!(
                        "[{}, {})",
                        bound(request.time.from, Timestamp::MIN),
                        bound(request.time.until, Timestamp::MAX)
                    )
                };
                let _ = writeln!(out, "  time: {time}");
                let _ = writeln!(out, "  targets: {}", show_targets(&request.targets));
                let _ = writeln!(out, "  producers: {}", list(&request.producers));
                let _ = writeln!(out, "  run ids: {}", list(&request.run_ids));
                for constraint in &request.paths {
                    let _ = writeln!(
                        out,
                        "  path: {} {}",
                        constraint.path,
                        describe_path_match(&constraint.matcher)
                    );
                }
                let _ = writeln!(
                    out,
                    "  partitions: {} read, {} pruned{}",
                    description.partitions.len(),
                    description.partitions_pruned,
                    match description.partitions.as_slice() {
                        [] => String::new(),
                        few @ [_, ..] if few.len() <= 6 => format!(" ({})", few.join(", ")),
                        [first, second, .., before_last, last] =>
                            format!(" ({first}, {second}, ... {before_last}, {last})"),
                        _ => String::new(),
                    }
                );
                let _ = writeln!(
                    out,
                    "  index: {}",
                    description
                        .index
                        .as_deref()
                        .unwrap_or("none (full partition scan)")
                );
                for filter in &description.row_filters {
                    let _ = writeln!(out, "  storage filter: {filter}");
                }
            }
        }
        let _ = writeln!(out, "row by row:");
        let mut step = 0;
        for m in &self.query.source.matchers {
            let in_scan = m.label.is_target_part()
                || (matches!(m.label, ast::Label::Producer | ast::Label::RunId)
                    && m.op == ast::MatchOp::Eq);
            if !in_scan {
                step += 1;
                let _ = writeln!(out, "  {step}. filter {m}");
            }
        }
        for (index, stage) in self.query.stages.iter().enumerate() {
            if physical.absorbed.contains(&index) {
                let _ = writeln!(out, "  -  {stage}  (answered by the access path)");
                continue;
            }
            step += 1;
            let note = match &stage.kind {
                ast::StageKind::Sort(_) => "  (holds all rows; top-N heap when a limit follows)",
                ast::StageKind::Latest(_) | ast::StageKind::Stats { .. } => {
                    "  (holds one row per group)"
                }
                ast::StageKind::Window { .. } => "  (holds its input rows)",
                _ => "",
            };
            let _ = writeln!(out, "  {step}. {stage}{note}");
        }
        if step == 0 {
            let _ = writeln!(out, "  (nothing)");
        }
        Ok(out)
    }
}

/// `in (...)` or a range, for `explain`.
fn describe_path_match(matcher: &source::PathMatch) -> String {
    use source::{IndexValue, PathMatch};
    let show = |v: &IndexValue| match v {
        IndexValue::Bool(b) => b.to_string(),
        IndexValue::Number(n) => n.to_string(),
        IndexValue::Instant(ts) => ts.to_rfc3339(),
        IndexValue::String(s) => format!("{s:?}"),
    };
    match matcher {
        PathMatch::AnyOf(values) => {
            let list: Vec<String> = values.iter().map(show).collect();
            format!("in ({})", list.join(", "))
        }
        PathMatch::Range { lower, upper } => {
            let mut parts = Vec::new();
            if let Some((v, inclusive)) = lower {
                parts.push(format!(
                    "{} {}",
                    if *inclusive { ">=" } else { ">" },
                    show(v)
                ));
            }
            if let Some((v, inclusive)) = upper {
                parts.push(format!(
                    "{} {}",
                    if *inclusive { "<=" } else { "<" },
                    show(v)
                ));
            }
            parts.join(" and ")
        }
    }
}

/// Appends `value` as JSON text.
fn push_json(out: &mut String, value: &(impl serde::Serialize + ?Sized)) {
    out.push_str(&serde_json::to_string(value).unwrap_or_else(|_| "null".into()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(binding: &str, expected: Literal) {
        let (name, value) = Params::parse_binding(binding).expect("binding");
        assert_eq!(name, "p");
        assert_eq!(value, expected, "{binding}");
    }

    #[test]
    fn bindings_read_literals_else_strings() {
        check("p=5", Literal::Int(5));
        check("p=-3.5", Literal::Float(-3.5));
        check("p=\"5\"", Literal::String("5".into()));
        check("p=orders", Literal::String("orders".into()));
        check("p=a=b", Literal::String("a=b".into()));
        check("p=true", Literal::Bool(true));
        check("p=null", Literal::Null);
        check("p=", Literal::String(String::new()));
        check("p=$q", Literal::String("$q".into()));
        check(
            "p=2024-01-10",
            Literal::Instant(ast::Instant::Date(Timestamp::from_micros(
                1_704_844_800_000_000,
            ))),
        );
        check(
            "p=30d",
            Literal::Duration(ast::Duration {
                amount: 30,
                unit: ast::DurationUnit::Day,
            }),
        );
        let deep = format!("p={}1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(matches!(
            Params::parse_binding(&deep),
            Ok((_, Literal::String(_)))
        ));
        assert!(Params::parse_binding("Bad=1").is_err());
        assert!(Params::parse_binding("novalue").is_err());
    }

    /// Rows print in the spec's key order: a record as its log line with
    /// computed fields appended, a row of values in column order (which
    /// a `serde_json` object, its keys sorted, would not keep).
    #[test]
    fn rows_print_records_as_their_line_and_values_in_column_order() {
        let mut record = crate::model::MetadataRecord::new(
            "vol",
            crate::model::MetadataTarget::new("src", "sch", "tbl"),
            serde_json::json!({"rows": 5, "a": {"z": 1, "b": 2}})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            Timestamp::from_micros(0),
            "p",
        );
        record.normalize();
        let record = crate::model::StoredRecord { id: 7, record };
        let line = record.to_json_string();
        let row = Row::Record {
            record: record.clone(),
            computed: vec![("zz".into(), Json::from(1)), ("aa".into(), Json::from("x"))],
        };
        let text = row.json_text(&[]);
        assert!(text.starts_with("{\"id\":7,\"kind\":\"vol\","), "{text}");
        assert_eq!(
            text,
            format!("{},\"zz\":1,\"aa\":\"x\"}}", &line[..line.len() - 1])
        );
        let plain = Row::Record {
            record,
            computed: vec![],
        };
        assert_eq!(plain.json_text(&[]), line);
        let columns = ["z".to_string(), "a".to_string(), "m \"q\"".to_string()];
        let values = Row::Values(vec![
            Json::from(1),
            Json::Null,
            serde_json::json!({"k": [1]}),
        ]);
        assert_eq!(
            values.json_text(&columns),
            r#"{"z":1,"a":null,"m \"q\"":{"k":[1]}}"#
        );
        let parsed: Json = serde_json::from_str(&values.json_text(&columns)).expect("JSON");
        assert_eq!(parsed, values.to_json(&columns));
    }
}
