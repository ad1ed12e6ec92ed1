//! The syntax tree of a query (spec `query-language.md`), exactly as written:
//! names are not resolved here (that is the planner's job).
//!
//! Every node a user can get wrong carries a byte [`Span`] into the query
//! text. Spans never take part in equality: two trees are equal when they say
//! the same thing, wherever it was written, which is what the round trip
//! `parse(print(q)) == q` compares.

use std::fmt;

use crate::model::Timestamp;

/// A byte range `[start, end)` in the query text.
#[derive(Clone, Copy, Debug, Default, Eq)]
pub struct Span {
    /// Offset of the first byte.
    pub start: usize,
    /// Offset one past the last byte.
    pub end: usize,
}

impl Span {
    /// The span `[start, end)`.
    pub const fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    /// The smallest span holding both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// Spans are positions, not content: they always compare equal.
impl PartialEq for Span {
    fn eq(&self, _other: &Span) -> bool {
        true
    }
}

/// A whole query: a source and the stages after it, joined by `|`.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    /// Which kinds and target labels to read.
    pub source: Source,
    /// The stages, left to right.
    pub stages: Vec<Stage>,
}

/// `( "*" | kind { "," kind } ) [ "{" matcher { "," matcher } "}" ]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    /// The kinds; an empty list is `*` (every kind).
    pub kinds: Vec<Name>,
    /// The label matchers inside `{ }`.
    pub matchers: Vec<Matcher>,
    /// The whole source.
    pub span: Span,
}

/// An identifier as written (kind, field segment, computed name).
#[derive(Clone, Debug, PartialEq)]
pub struct Name {
    /// The text, case preserved.
    pub name: String,
    /// Where it was written.
    pub span: Span,
}

/// `label op value` inside a source's braces.
#[derive(Clone, Debug, PartialEq)]
pub struct Matcher {
    /// The label.
    pub label: Label,
    /// The operator.
    pub op: MatchOp,
    /// A string literal or a parameter.
    pub value: MatchValue,
    /// The whole matcher.
    pub span: Span,
    /// The value alone (for regex and type errors).
    pub value_span: Span,
}

/// The value of a matcher: a string or a parameter.
#[derive(Clone, Debug, PartialEq)]
pub enum MatchValue {
    /// `"..."`
    String(String),
    /// `$name`
    Param(String),
}

/// The labels a source may match on (case-sensitive).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Label {
    /// `target.source_id`.
    Source,
    /// `target.schema`.
    Schema,
    /// `target.table`.
    Table,
    /// The canonical target name.
    Target,
    /// `producer_id`.
    Producer,
    /// `context.run_id`.
    RunId,
    /// `context.job_id`.
    JobId,
    /// `context.namespace`.
    Namespace,
    /// `context.extras.tenant`.
    Tenant,
}

impl Label {
    /// Every label, in the spec's order.
    pub const ALL: [Label; 9] = [
        Label::Source,
        Label::Schema,
        Label::Table,
        Label::Target,
        Label::Producer,
        Label::RunId,
        Label::JobId,
        Label::Namespace,
        Label::Tenant,
    ];

    /// The label as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Source => "source",
            Label::Schema => "schema",
            Label::Table => "table",
            Label::Target => "target",
            Label::Producer => "producer",
            Label::RunId => "run_id",
            Label::JobId => "job_id",
            Label::Namespace => "namespace",
            Label::Tenant => "tenant",
        }
    }

    /// The label named `text` (case-sensitive).
    pub fn from_name(text: &str) -> Option<Label> {
        Label::ALL.into_iter().find(|l| l.as_str() == text)
    }

    /// True for the labels that are parts of the target (answered by the target index).
    pub fn is_target_part(self) -> bool {
        matches!(
            self,
            Label::Source | Label::Schema | Label::Table | Label::Target
        )
    }
}

/// A matcher's operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatchOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `=~` (the regex matches the whole value)
    Re,
    /// `!~`
    NotRe,
}

impl MatchOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Eq => "=",
            MatchOp::Ne => "!=",
            MatchOp::Re => "=~",
            MatchOp::NotRe => "!~",
        }
    }
}

/// One stage after a `|`.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    /// What the stage does.
    pub kind: StageKind,
    /// The whole stage.
    pub span: Span,
}

/// The stages of the spec.
#[derive(Clone, Debug, PartialEq)]
pub enum StageKind {
    /// `where EXPR`
    Where(Expr),
    /// `since T` (a bare duration `D` means `now - D`)
    Since(Expr),
    /// `until T`
    Until(Expr),
    /// `between T1 .. T2`
    Between(Expr, Expr),
    /// `overlaps T1 .. T2`
    Overlaps(Expr, Expr),
    /// `latest [by P, ...]`; an empty list is the default grouping (`kind, target`).
    Latest(Vec<Expr>),
    /// `sort P [asc|desc], ...`
    Sort(Vec<SortKey>),
    /// `limit N`
    Limit(Expr),
    /// `extend NAME = EXPR, ...`
    Extend(Vec<Assignment>),
    /// `select EXPR [as NAME], ...`
    Select(Vec<Item>),
    /// `stats AGG [as NAME], ... [by KEY [as NAME], ...]`
    Stats {
        /// The aggregates.
        aggregates: Vec<Item>,
        /// The group keys; empty is one group for all rows.
        by: Vec<Item>,
    },
    /// `window AGG [as NAME], ... [by P, ...] rows A .. B`
    Window {
        /// The aggregates.
        aggregates: Vec<Item>,
        /// The partitioning keys.
        by: Vec<Expr>,
        /// The frame, offsets from the current row (inclusive).
        rows: Frame,
    },
}

/// `rows A .. B` of a window.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// The first offset (negative = earlier rows).
    pub start: Offset,
    /// The last offset, inclusive.
    pub end: Offset,
    /// Where the frame was written.
    pub span: Span,
}

/// One offset of a window frame: an integer, or a parameter bound to one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Offset {
    /// An integer literal (`-7`).
    Int(i64),
    /// `$name`, bound at execution time, and where it was written.
    Param(String, Span),
}

impl std::fmt::Display for Offset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Offset::Int(n) => write!(f, "{n}"),
            Offset::Param(name, _) => write!(f, "${name}"),
        }
    }
}

/// `P [asc|desc]`.
#[derive(Clone, Debug, PartialEq)]
pub struct SortKey {
    /// What to sort by.
    pub expr: Expr,
    /// `desc`; `asc` is the default and is not printed.
    pub descending: bool,
}

/// `NAME = EXPR` in `extend`.
#[derive(Clone, Debug, PartialEq)]
pub struct Assignment {
    /// The new field's name.
    pub name: Name,
    /// Its value.
    pub expr: Expr,
}

/// `EXPR [as NAME]` in `select`, `stats` and `window`.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// The value.
    pub expr: Expr,
    /// The column name given with `as`.
    pub alias: Option<Name>,
}

impl Item {
    /// The column name: the alias, else the expression's canonical text.
    pub fn column_name(&self) -> String {
        match &self.alias {
            Some(alias) => alias.name.clone(),
            None => self.expr.to_string(),
        }
    }
}

/// An expression with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    /// What it is.
    pub kind: ExprKind,
    /// Where it was written.
    pub span: Span,
}

/// The expression forms of the grammar.
#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// A literal value.
    Literal(Literal),
    /// `$name`, bound at execution time.
    Param(String),
    /// A field path.
    Path(Path),
    /// `name(args)`; the name is stored lowercase (function names are case-insensitive).
    Call {
        /// The function, lowercase.
        name: String,
        /// Where the name was written.
        name_span: Span,
        /// The arguments.
        args: Vec<Expr>,
    },
    /// `-x` (on anything but a number literal, which folds into the literal).
    Neg(Box<Expr>),
    /// `not x`
    Not(Box<Expr>),
    /// `a and b and ...` or `a or b or ...`: one logical operator over two
    /// or more operands, flat, so that a generated filter of thousands of
    /// alternatives is one node rather than a tree thousands deep. An
    /// operand that is itself a chain of the same operator was written in
    /// parentheses: `(a or b) or c` keeps its grouping.
    Logic {
        /// The operator.
        op: LogicOp,
        /// The operands, in the order written; at least two.
        operands: Vec<Expr>,
    },
    /// `a + b - c ...` or `a * b / c % d ...`: the operators of one
    /// precedence level (`+ -`, or `* / %`) over two or more operands, flat
    /// and applied left to right, so that a long generated sum is one node
    /// rather than a tree thousands deep. A chain of the same level written
    /// in parentheses joins the chain on the left (`(a + b) + c` is
    /// `a + b + c`) and stays one operand on the right (`a - (b - c)`).
    Arith {
        /// The first operand.
        first: Box<Expr>,
        /// Each further operator with its right operand, in the order
        /// written; at least one, all of `first`'s precedence level.
        rest: Vec<(BinOp, Expr)>,
    },
    /// A comparison (`=`, `<`, `=~`, ...). The parser writes arithmetic as
    /// [`ExprKind::Arith`]; a hand-built `Binary` of an arithmetic operator
    /// means the same as a two-operand chain.
    Binary {
        /// The operator.
        op: BinOp,
        /// Left operand.
        left: Box<Expr>,
        /// Right operand.
        right: Box<Expr>,
    },
    /// `x in (a, b, ...)`
    In {
        /// The value tested.
        expr: Box<Expr>,
        /// The candidates.
        list: Vec<Expr>,
    },
}

/// The logical operators, loosest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogicOp {
    /// `or`
    Or,
    /// `and`
    And,
}

impl LogicOp {
    /// The operator as written (lowercase).
    pub fn as_str(self) -> &'static str {
        match self {
            LogicOp::Or => "or",
            LogicOp::And => "and",
        }
    }

    /// Binding strength: `or` 1, `and` 2 (see [`BinOp::precedence`]).
    pub fn precedence(self) -> u8 {
        match self {
            LogicOp::Or => 1,
            LogicOp::And => 2,
        }
    }
}

/// The other binary operators, loosest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `=~`
    Match,
    /// `!~`
    NotMatch,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Rem,
}

impl BinOp {
    /// The operator as written (keywords lowercase).
    pub fn as_str(self) -> &'static str {
        match self {
            BinOp::Eq => "=",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Match => "=~",
            BinOp::NotMatch => "!~",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
        }
    }

    /// Binding strength: comparisons 4, `+ -` 5, `* / %` 6 (`or` is 1,
    /// `and` 2, `not` 3, unary minus 7).
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Eq
            | BinOp::Ne
            | BinOp::Lt
            | BinOp::Le
            | BinOp::Gt
            | BinOp::Ge
            | BinOp::Match
            | BinOp::NotMatch => 4,
            BinOp::Add | BinOp::Sub => 5,
            BinOp::Mul | BinOp::Div | BinOp::Rem => 6,
        }
    }

    /// True for the comparison operators (which do not chain).
    pub fn is_comparison(self) -> bool {
        self.precedence() == 4
    }
}

/// A field path: `payload.columns[0].name`, `payload."row count"`.
#[derive(Clone, Debug, PartialEq)]
pub struct Path {
    /// The segments; the first is always a [`Segment::Field`].
    pub segments: Vec<Segment>,
    /// The span of the first segment (what an unknown-field error points at).
    pub head_span: Span,
}

impl Path {
    /// The first segment's name.
    pub fn head(&self) -> &str {
        match self.segments.first() {
            Some(Segment::Field(name)) => name,
            _ => "",
        }
    }
}

/// One step of a path.
#[derive(Clone, Debug, PartialEq)]
pub enum Segment {
    /// `.name` or `."quoted name"`.
    Field(String),
    /// `[i]`
    Index(u64),
}

/// A literal value.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A 64-bit integer.
    Int(i64),
    /// A finite decimal.
    Float(f64),
    /// A string (escapes decoded).
    String(String),
    /// An instant.
    Instant(Instant),
    /// A duration.
    Duration(Duration),
}

/// An instant literal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Instant {
    /// `2024-01-10T07:00:00+02:00`, kept in UTC.
    At(Timestamp),
    /// `2024-01-10`: midnight UTC, printed back as a date.
    Date(Timestamp),
    /// `now`, `now - 7d`, `now + 1h`: the offset in microseconds is signed.
    Now(Option<(Sign, Duration)>),
}

/// The sign in `now - 7d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sign {
    /// `+`
    Plus,
    /// `-`
    Minus,
}

/// A duration literal: an integer amount of a unit (`90d`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Duration {
    /// How many units.
    pub amount: u64,
    /// Which unit.
    pub unit: DurationUnit,
}

impl Duration {
    /// The length in microseconds, when it fits in an `i64`.
    pub fn micros(self) -> Option<i64> {
        i64::try_from(self.amount)
            .ok()?
            .checked_mul(self.unit.micros())
    }
}

/// The units of a duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DurationUnit {
    /// `ms`
    Millisecond,
    /// `s`
    Second,
    /// `m`
    Minute,
    /// `h`
    Hour,
    /// `d`
    Day,
    /// `w`
    Week,
}

impl DurationUnit {
    /// The unit as written.
    pub fn as_str(self) -> &'static str {
        match self {
            DurationUnit::Millisecond => "ms",
            DurationUnit::Second => "s",
            DurationUnit::Minute => "m",
            DurationUnit::Hour => "h",
            DurationUnit::Day => "d",
            DurationUnit::Week => "w",
        }
    }

    /// Microseconds in one unit.
    pub fn micros(self) -> i64 {
        match self {
            DurationUnit::Millisecond => 1_000,
            DurationUnit::Second => 1_000_000,
            DurationUnit::Minute => 60_000_000,
            DurationUnit::Hour => 3_600_000_000,
            DurationUnit::Day => 86_400_000_000,
            DurationUnit::Week => 604_800_000_000,
        }
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.amount, self.unit.as_str())
    }
}
