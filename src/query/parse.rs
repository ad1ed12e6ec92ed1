//! The parser: query text → [`ast::Query`](super::ast::Query), syntax only.
//!
//! One small function per rule of `grammar/query.ebnf`, built on nom 8.
//! Rules skip the whitespace *before* their tokens, so the input left after
//! a rule starts right after its last token and spans end there.
//!
//! Robustness: the text is refused above [`MAX_QUERY_BYTES`]; every rule
//! that can recurse (`expr` through parentheses, calls and lists) goes
//! through [`Parser::nested`], which counts depth and fails with `TooDeep`
//! past [`MAX_DEPTH`]; runs of `not` and of unary `-` are read in loops
//! (no level of nesting: `not x` and `not (x)` nest alike, so a printed
//! query nests no deeper than its text) and bounded by the syntax tree's
//! limit, [`MAX_TREE_DEPTH`]; repetitions are explicit loops that stop as
//! soon as their separator is missing, so no rule loops on empty input.

use std::cell::Cell;

use chrono::NaiveDate;
use nom::bytes::complete::{tag, tag_no_case, take_while, take_while1};
use nom::character::complete::multispace0;
use nom::error::{ErrorKind, ParseError};
use nom::{Err, IResult, Parser as _};

use super::ast::*;
use super::error::QueryError;
use super::{MAX_DEPTH, MAX_QUERY_BYTES, MAX_TREE_DEPTH};
use crate::model::Timestamp;

/// Words that cannot start a path: they mean something in an expression.
pub(crate) const RESERVED: [&str; 8] = ["and", "or", "not", "in", "true", "false", "null", "now"];

/// The stage keywords, for error messages.
const STAGES: &str =
    "a stage (where, since, until, between, overlaps, latest, sort, limit, extend, select, stats, window)";

/// A parse failure, positioned by the length of the input left at it.
#[derive(Debug)]
pub(crate) struct PErr {
    rest_len: usize,
    kind: PErrKind,
}

#[derive(Debug)]
enum PErrKind {
    /// `expected WHAT, found <the token there>`.
    Expected(String),
    /// A complete message for a token of `len` bytes.
    Invalid { message: String, len: usize },
    /// Nesting past [`MAX_DEPTH`].
    TooDeep,
    /// An expression tree deeper than [`MAX_TREE_DEPTH`].
    TooDeepTree,
    /// A nom primitive failed (normally turned into `Expected` by the rule).
    Nom,
}

impl<'a> ParseError<&'a str> for PErr {
    fn from_error_kind(input: &'a str, _kind: ErrorKind) -> Self {
        PErr {
            rest_len: input.len(),
            kind: PErrKind::Nom,
        }
    }

    fn append(_input: &'a str, _kind: ErrorKind, other: Self) -> Self {
        other
    }

    fn or(self, other: Self) -> Self {
        // Keep the error that got further.
        if other.rest_len <= self.rest_len {
            other
        } else {
            self
        }
    }
}

type R<'a, T> = IResult<&'a str, T, PErr>;

/// Parses a whole query.
pub(crate) fn parse_query(text: &str) -> Result<Query, QueryError> {
    with_stack_for(text, || parse_on_this_thread(text))
}

/// Runs `work` (parsing `text`, and whatever walks the tree recursively
/// right after) on this thread, or on a thread with a large stack of its
/// own when `text` could nest deeply: a debug build needs about 18 KiB a
/// level to parse, and the planner some 8 KiB a level of the tree, more
/// than a 2 MiB thread has for the deepest trees the limits allow.
/// Text over [`MAX_QUERY_BYTES`] is refused first.
pub(crate) fn with_stack_for<T: Send>(
    text: &str,
    work: impl FnOnce() -> Result<T, QueryError> + Send,
) -> Result<T, QueryError> {
    if text.len() > MAX_QUERY_BYTES {
        return Err(QueryError::TooLong {
            len: text.len(),
            max: MAX_QUERY_BYTES,
        });
    }
    with_stack_if(might_nest_deeply(text), work)
}

/// Runs `work` on a thread with a large stack of its own when `deep`, else
/// on this one. A panic in `work` goes on unwinding in the caller.
pub(crate) fn with_stack_if<T: Send>(
    deep: bool,
    work: impl FnOnce() -> Result<T, QueryError> + Send,
) -> Result<T, QueryError> {
    if !deep {
        return work();
    }
    std::thread::scope(|scope| {
        match std::thread::Builder::new()
            .stack_size(PARSER_STACK_BYTES)
            .spawn_scoped(scope, work)
        {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            // No thread to be had: refused rather than risk the stack.
            Err(_) => Err(QueryError::TooDeep {
                max: MAX_DEPTH,
                span: Span::new(0, 0),
            }),
        }
    })
}

/// Stack for parsing deeply nested queries.
const PARSER_STACK_BYTES: usize = 64 * 1024 * 1024;

/// True when the text has enough tokens that open a nesting level (`(`,
/// `[`) or deepen the tree (`-`, `not`) for parsing it, or walking its
/// tree, to recurse deeply.
pub(crate) fn might_nest_deeply(text: &str) -> bool {
    let openers = text
        .bytes()
        .filter(|b| matches!(b, b'(' | b'-' | b'['))
        .count();
    let nots = text
        .as_bytes()
        .windows(3)
        .filter(|w| w.eq_ignore_ascii_case(b"not"))
        .count();
    openers + nots > 24
}

/// Parses on the calling thread: call it inside [`with_stack_for`], which
/// refuses text over [`MAX_QUERY_BYTES`] and picks the thread.
pub(crate) fn parse_on_this_thread(text: &str) -> Result<Query, QueryError> {
    let parser = Parser::new(text);
    match parser.query(text) {
        Ok((_, query)) => Ok(query),
        Err(Err::Error(e) | Err::Failure(e)) => Err(parser.to_query_error(e)),
        Err(Err::Incomplete(_)) => Err(parser.to_query_error(PErr {
            rest_len: 0,
            kind: PErrKind::Nom,
        })),
    }
}

/// Parses `text` as exactly one literal of the language (for `--param`
/// values); `None` when it is anything else.
pub(crate) fn parse_literal(text: &str) -> Option<Literal> {
    // A literal never nests: anything that might is not one (and must not
    // recurse deeply on the caller's stack).
    if text.len() > MAX_QUERY_BYTES || might_nest_deeply(text) {
        return None;
    }
    let parser = Parser::new(text);
    let (rest, expr) = parser.unary(text).ok()?;
    let (rest, _) = ws(rest).ok()?;
    if !rest.is_empty() {
        return None;
    }
    match expr.kind {
        ExprKind::Literal(lit) => Some(lit),
        _ => None,
    }
}

/// The parser's state: the whole text (for offsets) and the current depth.
struct Parser<'t> {
    text: &'t str,
    /// Open recursive rules (parentheses, calls, lists).
    depth: Cell<usize>,
    /// The tree depth of the expression the last expression rule returned.
    tree_depth: Cell<usize>,
}

/// Whitespace (spaces, tabs, newlines): free between tokens.
fn ws(i: &str) -> R<'_, &str> {
    multispace0(i)
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

/// Is `name` a parameter name, `[a-z_][a-z0-9_]*` (without the `$`)?
pub(crate) fn is_param_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// True when `i` starts with a character that would continue an identifier.
fn continues_ident(i: &str) -> bool {
    i.chars().next().is_some_and(is_ident_char)
}

impl<'t> Parser<'t> {
    fn new(text: &'t str) -> Self {
        Parser {
            text,
            depth: Cell::new(0),
            tree_depth: Cell::new(0),
        }
    }

    /// The byte offset of `rest` in the text.
    fn pos(&self, rest: &str) -> usize {
        self.text.len().saturating_sub(rest.len())
    }

    fn span(&self, start: &str, end: &str) -> Span {
        Span::new(self.pos(start), self.pos(end))
    }

    fn expected<T>(&self, at: &str, what: &str) -> R<'t, T> {
        Err(Err::Error(PErr {
            rest_len: at.len(),
            kind: PErrKind::Expected(what.to_owned()),
        }))
    }

    fn invalid<T>(&self, at: &str, len: usize, message: String) -> R<'t, T> {
        Err(Err::Failure(PErr {
            rest_len: at.len(),
            kind: PErrKind::Invalid { message, len },
        }))
    }

    fn to_query_error(&self, e: PErr) -> QueryError {
        let offset = self.text.len().saturating_sub(e.rest_len);
        let rest = self.text.get(offset..).unwrap_or("");
        match e.kind {
            PErrKind::TooDeep => QueryError::TooDeep {
                max: MAX_DEPTH,
                span: Span::new(offset, offset + 1),
            },
            PErrKind::TooDeepTree => QueryError::TooDeep {
                max: MAX_TREE_DEPTH,
                span: Span::new(offset, offset + 1),
            },
            PErrKind::Invalid { message, len } => QueryError::Syntax {
                message,
                span: Span::new(offset, offset + len),
            },
            PErrKind::Expected(what) => {
                let (found, len) = describe_token(rest);
                QueryError::Syntax {
                    message: format!("expected {what}, found {found}"),
                    span: Span::new(offset, offset + len),
                }
            }
            PErrKind::Nom => {
                let (found, len) = describe_token(rest);
                QueryError::Syntax {
                    message: format!("unexpected {found}"),
                    span: Span::new(offset, offset + len),
                }
            }
        }
    }

    /// Records that the expression just built is `depth` deep; fails past
    /// [`MAX_TREE_DEPTH`] (long operator chains build deep trees without
    /// any parentheses, and every later pass walks them recursively).
    fn grow(&self, at: &str, depth: usize) -> Result<usize, Err<PErr>> {
        if depth > MAX_TREE_DEPTH {
            return Err(Err::Failure(PErr {
                rest_len: at.len(),
                kind: PErrKind::TooDeepTree,
            }));
        }
        self.tree_depth.set(depth);
        Ok(depth)
    }

    /// Runs a rule one nesting level deeper; fails past [`MAX_DEPTH`]
    /// levels. The top-level expression of a stage is not a level of
    /// nesting: `x`, `(x)` and `((x))` nest 0, 1 and 2 levels deep, so the
    /// stage's expression plus [`MAX_DEPTH`] levels are allowed.
    fn nested<T>(&self, i: &'t str, rule: impl FnOnce(&'t str) -> R<'t, T>) -> R<'t, T> {
        let depth = self.depth.get();
        if depth > MAX_DEPTH {
            return Err(Err::Failure(PErr {
                rest_len: i.len(),
                kind: PErrKind::TooDeep,
            }));
        }
        self.depth.set(depth + 1);
        let result = rule(i);
        self.depth.set(depth);
        result
    }

    // ---------------------------------------------------------------- tokens

    /// A punctuation token such as `|`, `(`, `..`.
    fn symbol(&self, i: &'t str, sym: &'static str) -> R<'t, &'t str> {
        let (i, _) = ws(i)?;
        match tag::<_, _, PErr>(sym).parse(i) {
            Ok(ok) => Ok(ok),
            Err(_) => self.expected(i, &format!("`{sym}`")),
        }
    }

    /// True when the next token is `sym`.
    fn at_symbol(&self, i: &'t str, sym: &'static str) -> bool {
        self.symbol(i, sym).is_ok()
    }

    /// A keyword, case-insensitive, not followed by an identifier character.
    fn keyword(&self, i: &'t str, word: &'static str) -> R<'t, &'t str> {
        let (i, _) = ws(i)?;
        match tag_no_case::<_, _, PErr>(word).parse(i) {
            Ok((rest, matched)) if !continues_ident(rest) => Ok((rest, matched)),
            _ => self.expected(i, &format!("`{word}`")),
        }
    }

    /// `ident = [A-Za-z_] [A-Za-z0-9_]*`, with its span.
    fn ident(&self, i: &'t str) -> R<'t, Name> {
        let (i, _) = ws(i)?;
        let start = i;
        if !i.chars().next().is_some_and(is_ident_start) {
            return self.expected(i, "a name");
        }
        let (rest, name) = take_while1(is_ident_char).parse(i)?;
        Ok((
            rest,
            Name {
                name: name.to_owned(),
                span: self.span(start, rest),
            },
        ))
    }

    /// `name = ident` that is not a reserved word (an `extend` name or an alias).
    fn name(&self, i: &'t str) -> R<'t, Name> {
        let (rest, name) = self.ident(i)?;
        if is_reserved(&name.name) {
            let (i, _) = ws(i)?;
            return self.invalid(
                i,
                name.name.len(),
                format!("expected a name, found keyword `{}`", name.name),
            );
        }
        Ok((rest, name))
    }

    // ---------------------------------------------------------------- query

    /// `query = source { "|" stage } EOF`
    fn query(&self, i: &'t str) -> R<'t, Query> {
        let (mut i, source) = self.source(i)?;
        let mut stages = Vec::new();
        loop {
            if let Ok((rest, _)) = self.symbol(i, "|") {
                let (rest, stage) = self.stage(rest)?;
                stages.push(stage);
                i = rest;
                continue;
            }
            let (rest, _) = ws(i)?;
            if rest.is_empty() {
                return Ok((rest, Query { source, stages }));
            }
            return Err(Err::Failure(PErr {
                rest_len: rest.len(),
                kind: PErrKind::Expected("`|` or end of query".into()),
            }));
        }
    }

    /// `source = ( "*" | kind { "," kind } ) [ "{" matcher { "," matcher } "}" ]`
    fn source(&self, i: &'t str) -> R<'t, Source> {
        let (i, _) = ws(i)?;
        let start = i;
        let (i, kinds) = if let Ok((rest, _)) = self.symbol(i, "*") {
            (rest, Vec::new())
        } else {
            self.kind_list(i).map_err(|e| match e {
                Err::Error(_) => fail_expected(i, "a kind or `*`"),
                other => other,
            })?
        };
        let (i, matchers) = if self.at_symbol(i, "{") {
            self.matchers(i)?
        } else {
            (i, Vec::new())
        };
        Ok((
            i,
            Source {
                kinds,
                matchers,
                span: self.span(start, i),
            },
        ))
    }

    /// `kind { "," kind }`, kinds being identifiers (case-sensitive).
    fn kind_list(&self, i: &'t str) -> R<'t, Vec<Name>> {
        let (mut i, first) = self.ident(i)?;
        let mut kinds = vec![first];
        while let Ok((rest, _)) = self.symbol(i, ",") {
            let (rest, kind) = self
                .ident(rest)
                .map_err(|_| fail_expected_ws(rest, "a kind"))?;
            kinds.push(kind);
            i = rest;
        }
        Ok((i, kinds))
    }

    /// `"{" matcher { "," matcher } "}"`
    fn matchers(&self, i: &'t str) -> R<'t, Vec<Matcher>> {
        let (mut i, _) = self.symbol(i, "{")?;
        let mut matchers = Vec::new();
        loop {
            let (rest, matcher) = self.matcher(i)?;
            matchers.push(matcher);
            if let Ok((rest, _)) = self.symbol(rest, ",") {
                i = rest;
                continue;
            }
            let (rest, _) = self
                .symbol(rest, "}")
                .map_err(|_| fail_expected_ws(rest, "`,` or `}`"))?;
            return Ok((rest, matchers));
        }
    }

    /// `matcher = label ( "=" | "!=" | "=~" | "!~" ) ( string | parameter )`
    fn matcher(&self, i: &'t str) -> R<'t, Matcher> {
        let (i, _) = ws(i)?;
        let start = i;
        let (rest, name) = self.ident(i).map_err(|_| fail_expected(i, "a label"))?;
        let Some(label) = Label::from_name(&name.name) else {
            let names: Vec<&str> = Label::ALL.iter().map(|l| l.as_str()).collect();
            let hint = super::suggest::closest(&name.name, names.iter().copied())
                .map(|s| format!("did you mean `{s}`? "))
                .unwrap_or_default();
            return self.invalid(
                i,
                name.name.len(),
                format!(
                    "unknown label `{}`; {hint}labels are {}",
                    name.name,
                    names.join(", ")
                ),
            );
        };
        let (rest, op) = self.match_op(rest)?;
        let (rest, _) = ws(rest)?;
        let value_start = rest;
        let (rest, value) = if rest.starts_with('$') {
            let (rest, name) = self.param(rest)?;
            (rest, MatchValue::Param(name))
        } else if rest.starts_with(['"', '\'']) {
            let (rest, s) = self.string(rest)?;
            (rest, MatchValue::String(s))
        } else {
            return Err(fail_expected(rest, "a string or a parameter"));
        };
        Ok((
            rest,
            Matcher {
                label,
                op,
                value,
                span: self.span(start, rest),
                value_span: self.span(value_start, rest),
            },
        ))
    }

    /// `"=" | "!=" | "=~" | "!~"` in a matcher.
    fn match_op(&self, i: &'t str) -> R<'t, MatchOp> {
        for (sym, op) in [
            ("=~", MatchOp::Re),
            ("!~", MatchOp::NotRe),
            ("!=", MatchOp::Ne),
            ("=", MatchOp::Eq),
        ] {
            if let Ok((rest, _)) = self.symbol(i, sym) {
                return Ok((rest, op));
            }
        }
        let (i, _) = ws(i)?;
        Err(fail_expected(i, "`=`, `!=`, `=~` or `!~`"))
    }

    // ---------------------------------------------------------------- stages

    /// `stage = where | since | until | between | overlaps | latest | sort
    ///        | limit | extend | select | stats | window`, by its keyword.
    fn stage(&self, i: &'t str) -> R<'t, Stage> {
        let (i, _) = ws(i)?;
        let start = i;
        let Ok((rest, word)) = self.ident(i) else {
            return Err(fail_expected(i, STAGES));
        };
        let (rest, kind) = match word.name.to_ascii_lowercase().as_str() {
            "where" => self.where_stage(rest)?,
            "since" => {
                let (rest, e) = self.expr(rest)?;
                (rest, StageKind::Since(e))
            }
            "until" => {
                let (rest, e) = self.expr(rest)?;
                (rest, StageKind::Until(e))
            }
            "between" => {
                let (rest, (a, b)) = self.range(rest)?;
                (rest, StageKind::Between(a, b))
            }
            "overlaps" => {
                let (rest, (a, b)) = self.range(rest)?;
                (rest, StageKind::Overlaps(a, b))
            }
            "latest" => self.latest_stage(rest)?,
            "sort" => self.sort_stage(rest)?,
            "limit" => {
                let (rest, e) = self.expr(rest)?;
                (rest, StageKind::Limit(e))
            }
            "extend" => self.extend_stage(rest)?,
            "select" => {
                let (rest, items) = self.items(rest)?;
                (rest, StageKind::Select(items))
            }
            "stats" => self.stats_stage(rest)?,
            "window" => self.window_stage(rest)?,
            _ => return Err(fail_expected(i, STAGES)),
        };
        Ok((
            rest,
            Stage {
                kind,
                span: self.span(start, rest),
            },
        ))
    }

    /// `where = "where" expr`
    fn where_stage(&self, i: &'t str) -> R<'t, StageKind> {
        let (rest, e) = self.expr(i)?;
        Ok((rest, StageKind::Where(e)))
    }

    /// `range = expr ".." expr` (for `between` and `overlaps`).
    fn range(&self, i: &'t str) -> R<'t, (Expr, Expr)> {
        let (i, a) = self.expr(i)?;
        let (i, _) = self.symbol(i, "..").map_err(cut_err)?;
        let (i, b) = self.expr(i)?;
        Ok((i, (a, b)))
    }

    /// `latest = "latest" [ "by" expr { "," expr } ]`
    fn latest_stage(&self, i: &'t str) -> R<'t, StageKind> {
        if let Ok((rest, _)) = self.keyword(i, "by") {
            let (rest, by) = self.expr_list(rest)?;
            return Ok((rest, StageKind::Latest(by)));
        }
        Ok((i, StageKind::Latest(Vec::new())))
    }

    /// `sort = "sort" sort_key { "," sort_key }`, `sort_key = expr [ "asc" | "desc" ]`
    fn sort_stage(&self, i: &'t str) -> R<'t, StageKind> {
        let mut keys = Vec::new();
        let mut i = i;
        loop {
            let (rest, expr) = self.expr(i)?;
            let (rest, descending) = if let Ok((rest, _)) = self.keyword(rest, "desc") {
                (rest, true)
            } else if let Ok((rest, _)) = self.keyword(rest, "asc") {
                (rest, false)
            } else {
                (rest, false)
            };
            keys.push(SortKey { expr, descending });
            match self.symbol(rest, ",") {
                Ok((rest, _)) => i = rest,
                Err(_) => return Ok((rest, StageKind::Sort(keys))),
            }
        }
    }

    /// `extend = "extend" name "=" expr { "," name "=" expr }`
    fn extend_stage(&self, i: &'t str) -> R<'t, StageKind> {
        let mut assignments = Vec::new();
        let mut i = i;
        loop {
            let (rest, name) = self.name(i).map_err(cut_err)?;
            let (rest, _) = self.assign_eq(rest)?;
            let (rest, expr) = self.expr(rest)?;
            assignments.push(Assignment { name, expr });
            match self.symbol(rest, ",") {
                Ok((rest, _)) => i = rest,
                Err(_) => return Ok((rest, StageKind::Extend(assignments))),
            }
        }
    }

    /// The `=` of an assignment (not `=~`).
    fn assign_eq(&self, i: &'t str) -> R<'t, ()> {
        let (i, _) = ws(i)?;
        if i.starts_with('=') && !i.starts_with("=~") {
            return Ok((&i[1..], ()));
        }
        Err(fail_expected(i, "`=`"))
    }

    /// `stats = "stats" item { "," item } [ "by" item { "," item } ]`
    fn stats_stage(&self, i: &'t str) -> R<'t, StageKind> {
        let (i, aggregates) = self.items(i)?;
        let (i, by) = match self.keyword(i, "by") {
            Ok((rest, _)) => self.items(rest)?,
            Err(_) => (i, Vec::new()),
        };
        Ok((i, StageKind::Stats { aggregates, by }))
    }

    /// `window = "window" item { "," item } [ "by" expr { "," expr } ] "rows" frame`
    fn window_stage(&self, i: &'t str) -> R<'t, StageKind> {
        let (i, aggregates) = self.items(i)?;
        let (i, by) = match self.keyword(i, "by") {
            Ok((rest, _)) => self.expr_list(rest)?,
            Err(_) => (i, Vec::new()),
        };
        let (i, _) = match self.keyword(i, "rows") {
            Ok(ok) => ok,
            Err(_) => {
                let (i, _) = ws(i)?;
                let what = if by.is_empty() {
                    "`by` or `rows`"
                } else {
                    "`,` or `rows`"
                };
                return Err(fail_expected(i, what));
            }
        };
        let (i, rows) = self.frame(i)?;
        Ok((
            i,
            StageKind::Window {
                aggregates,
                by,
                rows,
            },
        ))
    }

    /// `frame = offset ".." offset`
    fn frame(&self, i: &'t str) -> R<'t, Frame> {
        let (i, _) = ws(i)?;
        let start_at = i;
        let (i, start) = self.offset(i)?;
        let (i, _) = self.symbol(i, "..").map_err(cut_err)?;
        let (i, end) = self.offset(i)?;
        Ok((
            i,
            Frame {
                start,
                end,
                span: self.span(start_at, i),
            },
        ))
    }

    /// `offset = signed_int | parameter`
    fn offset(&self, i: &'t str) -> R<'t, Offset> {
        let (i, _) = ws(i)?;
        if i.starts_with('$') {
            let (rest, name) = self.param(i).map_err(cut_err)?;
            let span = self.span(i, rest);
            return Ok((rest, Offset::Param(name, span)));
        }
        let (rest, n) = self.signed_int(i)?;
        Ok((rest, Offset::Int(n)))
    }

    /// `signed_int = [ "-" ] digits`, an i64.
    fn signed_int(&self, i: &'t str) -> R<'t, i64> {
        let (i, _) = ws(i)?;
        let start = i;
        let (i, minus) = match self.symbol(i, "-") {
            Ok((rest, _)) => (ws(rest)?.0, true),
            Err(_) => (i, false),
        };
        let (rest, digits) = take_while::<_, _, PErr>(|c: char| c.is_ascii_digit()).parse(i)?;
        if digits.is_empty() {
            return Err(fail_expected(i, "an integer"));
        }
        if continues_ident(rest) || rest.starts_with('.') && !rest.starts_with("..") {
            let tail: usize = rest
                .char_indices()
                .take_while(|(k, c)| {
                    is_ident_char(*c) || *c == '.' && !rest[*k..].starts_with("..")
                })
                .map(|(_, c)| c.len_utf8())
                .sum();
            let shown = &start[..self.pos(rest) - self.pos(start) + tail];
            return self.invalid(
                start,
                shown.len(),
                format!("expected an integer, found `{shown}`"),
            );
        }
        match parse_int(digits, minus) {
            Some(n) => Ok((rest, n)),
            None => self.invalid(
                start,
                self.pos(rest) - self.pos(start),
                "integer out of range".into(),
            ),
        }
    }

    /// `items = item { "," item }`, `item = expr [ "as" name ]`
    fn items(&self, i: &'t str) -> R<'t, Vec<Item>> {
        let mut items = Vec::new();
        let mut i = i;
        loop {
            let (rest, expr) = self.expr(i)?;
            let (rest, alias) = match self.keyword(rest, "as") {
                Ok((rest, _)) => {
                    let (rest, name) = self.name(rest).map_err(cut_err)?;
                    (rest, Some(name))
                }
                Err(_) => (rest, None),
            };
            items.push(Item { expr, alias });
            match self.symbol(rest, ",") {
                Ok((rest, _)) => i = rest,
                Err(_) => return Ok((rest, items)),
            }
        }
    }

    /// `expr { "," expr }`; leaves the deepest item's depth in `tree_depth`.
    fn expr_list(&self, i: &'t str) -> R<'t, Vec<Expr>> {
        let mut list = Vec::new();
        let mut i = i;
        let mut depth = 0;
        loop {
            let (rest, expr) = self.expr(i)?;
            depth = depth.max(self.tree_depth.get());
            list.push(expr);
            match self.symbol(rest, ",") {
                Ok((rest, _)) => i = rest,
                Err(_) => {
                    self.tree_depth.set(depth);
                    return Ok((rest, list));
                }
            }
        }
    }

    // ---------------------------------------------------------------- expressions

    /// `expr = or`, one nesting level deeper; failures are final.
    fn expr(&self, i: &'t str) -> R<'t, Expr> {
        self.nested(i, |i| self.or_expr(i)).map_err(cut_err)
    }

    /// `or = and { "or" and }`
    fn or_expr(&self, i: &'t str) -> R<'t, Expr> {
        self.logic_chain(i, LogicOp::Or, |i| self.and_expr(i))
    }

    /// `and = not { "and" not }`
    fn and_expr(&self, i: &'t str) -> R<'t, Expr> {
        self.logic_chain(i, LogicOp::And, |i| self.not_expr(i))
    }

    /// `operand { op operand }`, as one flat [`ExprKind::Logic`] node when
    /// there are two operands or more: a chain adds one level to the tree
    /// however long it is.
    fn logic_chain(
        &self,
        i: &'t str,
        op: LogicOp,
        operand: impl Fn(&'t str) -> R<'t, Expr>,
    ) -> R<'t, Expr> {
        let (mut i, first) = operand(i)?;
        let mut depth = self.tree_depth.get();
        let mut operands = vec![first];
        while let Ok((rest, _)) = self.keyword(i, op.as_str()) {
            let (rest, next) = operand(rest).map_err(cut_err)?;
            depth = depth.max(self.tree_depth.get());
            operands.push(next);
            i = rest;
        }
        if operands.len() == 1 {
            if let Some(only) = operands.pop() {
                return Ok((i, only));
            }
        }
        self.grow(i, depth + 1)?;
        let span = operands[0].span.to(operands[operands.len() - 1].span);
        Ok((
            i,
            Expr {
                kind: ExprKind::Logic { op, operands },
                span,
            },
        ))
    }

    /// `not = "not" not | cmp`
    fn not_expr(&self, i: &'t str) -> R<'t, Expr> {
        let (i, _) = ws(i)?;
        // A run of `not`s is read in a loop, not by recursion, so it is no
        // level of nesting (the tree limit bounds it): `not (x)` and `not x`
        // nest alike, and a printed query nests no deeper than its text.
        let mut starts = Vec::new();
        let mut rest = i;
        while let Ok((after, _)) = self.keyword(rest, "not") {
            starts.push(rest);
            rest = ws(after)?.0;
        }
        if starts.is_empty() {
            return self.cmp_expr(i);
        }
        let (end, operand) = self.cmp_expr(rest).map_err(cut_err)?;
        self.prefixed(&starts, end, operand, ExprKind::Not)
    }

    /// `operand` (ending at `end`) under one prefix operator (`make`) for
    /// each of `starts`, the operators' positions, the last innermost.
    fn prefixed(
        &self,
        starts: &[&'t str],
        end: &'t str,
        operand: Expr,
        make: fn(Box<Expr>) -> ExprKind,
    ) -> R<'t, Expr> {
        let (mut expr, mut depth) = (operand, self.tree_depth.get());
        for start in starts.iter().rev() {
            depth = self.grow(end, depth + 1)?;
            expr = Expr {
                kind: make(Box::new(expr)),
                span: self.span(start, end),
            };
        }
        Ok((end, expr))
    }

    /// `cmp = sum [ cmp_op sum | "in" "(" expr { "," expr } ")" ]`
    fn cmp_expr(&self, i: &'t str) -> R<'t, Expr> {
        let (i, _) = ws(i)?;
        let start = i;
        let (i, left) = self.sum_expr(i)?;
        let left_depth = self.tree_depth.get();
        if let Some((rest, op)) = self.cmp_op(i) {
            let (rest, right) = self.sum_expr(rest).map_err(cut_err)?;
            self.grow(rest, left_depth.max(self.tree_depth.get()) + 1)?;
            return Ok((rest, binary(op, left, right)));
        }
        if let Ok((rest, _)) = self.keyword(i, "in") {
            let (rest, _) = self.symbol(rest, "(").map_err(cut_err)?;
            let (rest, list) = self.expr_list(rest)?;
            self.grow(rest, left_depth.max(self.tree_depth.get()) + 1)?;
            let (rest, _) = self
                .symbol(rest, ")")
                .map_err(|_| fail_expected_ws(rest, "`,` or `)`"))?;
            return Ok((
                rest,
                Expr {
                    kind: ExprKind::In {
                        expr: Box::new(left),
                        list,
                    },
                    span: self.span(start, rest),
                },
            ));
        }
        Ok((i, left))
    }

    /// `cmp_op = "=" | "!=" | "<" | "<=" | ">" | ">=" | "=~" | "!~"`
    fn cmp_op(&self, i: &'t str) -> Option<(&'t str, BinOp)> {
        [
            ("<=", BinOp::Le),
            (">=", BinOp::Ge),
            ("!=", BinOp::Ne),
            ("=~", BinOp::Match),
            ("!~", BinOp::NotMatch),
            ("=", BinOp::Eq),
            ("<", BinOp::Lt),
            (">", BinOp::Gt),
        ]
        .into_iter()
        .find_map(|(sym, op)| self.symbol(i, sym).ok().map(|(rest, _)| (rest, op)))
    }

    /// `sum = product { ( "+" | "-" ) product }`
    fn sum_expr(&self, i: &'t str) -> R<'t, Expr> {
        self.arith_chain(i, &[BinOp::Add, BinOp::Sub], |i| self.product_expr(i))
    }

    /// `product = unary { ( "*" | "/" | "%" ) unary }`
    fn product_expr(&self, i: &'t str) -> R<'t, Expr> {
        self.arith_chain(i, &[BinOp::Mul, BinOp::Div, BinOp::Rem], |i| self.unary(i))
    }

    /// `operand { op operand }` for the operators `ops` of one precedence
    /// level, as one flat [`ExprKind::Arith`] node when there are two
    /// operands or more: like [`Self::logic_chain`], a chain adds one level
    /// to the tree however long it is.
    fn arith_chain(
        &self,
        i: &'t str,
        ops: &[BinOp],
        operand: impl Fn(&'t str) -> R<'t, Expr>,
    ) -> R<'t, Expr> {
        let (mut i, first) = operand(i)?;
        let first_depth = self.tree_depth.get();
        let mut depth = 0; // of the operands after the first
        let mut rest = Vec::new();
        while let Some(&op) = ops.iter().find(|op| self.at_symbol(i, op.as_str())) {
            let (after, _) = self.symbol(i, op.as_str())?;
            let (after, next) = operand(after).map_err(cut_err)?;
            depth = depth.max(self.tree_depth.get());
            rest.push((op, next));
            i = after;
        }
        let Some((_, last)) = rest.last() else {
            return Ok((i, first));
        };
        let span = first.span.to(last.span);
        let kind = match first.kind {
            // `(a - b) - c` is `a - b - c`, operation for operation: a
            // parenthesised chain of this level on the left joins the chain
            // (the canonical form drops those parentheses). On the right it
            // keeps its grouping: `a - (b - c)`.
            ExprKind::Arith {
                first: inner_first,
                rest: mut inner_rest,
            } if inner_rest.first().is_some_and(|(op, _)| ops.contains(op)) => {
                self.grow(i, first_depth.max(depth + 1))?;
                inner_rest.append(&mut rest);
                ExprKind::Arith {
                    first: inner_first,
                    rest: inner_rest,
                }
            }
            kind => {
                self.grow(i, first_depth.max(depth) + 1)?;
                ExprKind::Arith {
                    first: Box::new(Expr {
                        kind,
                        span: first.span,
                    }),
                    rest,
                }
            }
        };
        Ok((i, Expr { kind, span }))
    }

    /// `unary = "-" unary | primary`; `-` before a number literal folds into
    /// the literal (`-3.5`, and `-9223372036854775808` fits).
    fn unary(&self, i: &'t str) -> R<'t, Expr> {
        let (i, _) = ws(i)?;
        // A run of minuses is read in a loop, like `not`s (see `not_expr`).
        let mut starts = Vec::new();
        let mut rest = i;
        let mut operand = None;
        while let Ok((after, _)) = self.symbol(rest, "-") {
            let (after, _) = ws(after)?;
            if after.starts_with(|c: char| c.is_ascii_digit()) {
                let (end, token) = self.number_like(after)?;
                let literal = match token {
                    NumberToken::Int(digits) => match parse_int(digits, true) {
                        Some(n) => Some(Literal::Int(n)),
                        None => {
                            return self.invalid(
                                rest,
                                self.pos(end) - self.pos(rest),
                                "integer out of range".into(),
                            )
                        }
                    },
                    NumberToken::Float(x) => Some(Literal::Float(-x)),
                    NumberToken::Literal(_) => None,
                };
                if let Some(literal) = literal {
                    self.tree_depth.set(1);
                    operand = Some((
                        end,
                        Expr {
                            kind: ExprKind::Literal(literal),
                            span: self.span(rest, end),
                        },
                    ));
                    break;
                }
            }
            starts.push(rest);
            rest = after;
        }
        if starts.is_empty() && operand.is_none() {
            return self.primary(i);
        }
        let (end, operand) = match operand {
            Some(folded) => folded,
            None => self.primary(rest).map_err(cut_err)?,
        };
        self.prefixed(&starts, end, operand, ExprKind::Neg)
    }

    /// `primary = literal | parameter | call | path | "(" expr ")"`
    fn primary(&self, i: &'t str) -> R<'t, Expr> {
        let (i, _) = ws(i)?;
        let start = i;
        let Some(c) = i.chars().next() else {
            return self.expected(i, "an expression");
        };
        let (rest, kind) = if c == '(' {
            if let Some((rest, now_at)) = bare_now_in_parens(&i[1..]) {
                // `(now)` is how a bare `now` prints before `+` or `-`: no
                // level of nesting, so a printed query nests as its text.
                self.tree_depth.set(1);
                let span = self.span(now_at, &now_at[3..]);
                let kind = ExprKind::Literal(Literal::Instant(Instant::Now(None)));
                return Ok((rest, Expr { kind, span }));
            }
            let (rest, inner) = self.expr(&i[1..])?;
            let (rest, _) = self.symbol(rest, ")").map_err(cut_err)?;
            // Parentheses only group: the inner node keeps its own span.
            return Ok((rest, inner));
        } else if c == '"' || c == '\'' {
            let (rest, s) = self.string(i)?;
            (rest, ExprKind::Literal(Literal::String(s)))
        } else if c == '$' {
            let (rest, name) = self.param(i)?;
            (rest, ExprKind::Param(name))
        } else if c.is_ascii_digit() {
            let (rest, token) = self.number_like(i)?;
            let literal = match token {
                NumberToken::Int(digits) => match parse_int(digits, false) {
                    Some(n) => Literal::Int(n),
                    None => {
                        return self.invalid(
                            i,
                            digits.len(),
                            format!("integer `{digits}` is out of range"),
                        )
                    }
                },
                NumberToken::Float(x) => Literal::Float(x),
                NumberToken::Literal(lit) => lit,
            };
            (rest, ExprKind::Literal(literal))
        } else if is_ident_start(c) {
            return self.word_primary(i);
        } else {
            return self.expected(i, "an expression");
        };
        self.tree_depth.set(1);
        Ok((
            rest,
            Expr {
                kind,
                span: self.span(start, rest),
            },
        ))
    }

    /// A primary that starts with a word: `true`, `false`, `null`, `now`
    /// (with its optional `± duration`), a call `name(...)` or a path.
    fn word_primary(&self, i: &'t str) -> R<'t, Expr> {
        let (after_word, word) = self.ident(i)?;
        let lower = word.name.to_ascii_lowercase();
        let literal = match lower.as_str() {
            "true" => Some(Literal::Bool(true)),
            "false" => Some(Literal::Bool(false)),
            "null" => Some(Literal::Null),
            "now" => {
                let (rest, offset) = self.now_offset(after_word);
                self.tree_depth.set(1);
                let lit = Literal::Instant(Instant::Now(offset));
                return Ok((
                    rest,
                    Expr {
                        kind: ExprKind::Literal(lit),
                        span: self.span(i, rest),
                    },
                ));
            }
            "and" | "or" | "not" | "in" => return self.expected(i, "an expression"),
            _ => None,
        };
        self.tree_depth.set(1);
        if let Some(lit) = literal {
            return Ok((
                after_word,
                Expr {
                    kind: ExprKind::Literal(lit),
                    span: word.span,
                },
            ));
        }
        if self.at_symbol(after_word, "(") {
            return self.call(i, word);
        }
        let (rest, path) = self.path(after_word, word)?;
        Ok((
            rest,
            Expr {
                kind: ExprKind::Path(path),
                span: self.span(i, rest),
            },
        ))
    }

    /// The optional `( "+" | "-" ) duration` after `now`.
    fn now_offset(&self, i: &'t str) -> (&'t str, Option<(Sign, Duration)>) {
        let (sign, rest) = if let Ok((rest, _)) = self.symbol(i, "+") {
            (Sign::Plus, rest)
        } else if let Ok((rest, _)) = self.symbol(i, "-") {
            (Sign::Minus, rest)
        } else {
            return (i, None);
        };
        let Ok((rest, _)) = ws(rest) else {
            return (i, None);
        };
        if !rest.starts_with(|c: char| c.is_ascii_digit()) {
            return (i, None);
        }
        match self.number_like(rest) {
            Ok((after, NumberToken::Literal(Literal::Duration(d)))) => (after, Some((sign, d))),
            _ => (i, None),
        }
    }

    /// `call = name "(" [ expr { "," expr } ] ")"`; the name is lowercased.
    fn call(&self, i: &'t str, name: Name) -> R<'t, Expr> {
        let (rest, _) = self.symbol(&i[name.name.len()..], "(")?;
        let (rest, args) = if let Ok((rest, _)) = self.symbol(rest, ")") {
            self.tree_depth.set(0);
            (rest, Vec::new())
        } else {
            let (rest, args) = self.expr_list(rest)?;
            let (rest, _) = self
                .symbol(rest, ")")
                .map_err(|_| fail_expected_ws(rest, "`,` or `)`"))?;
            (rest, args)
        };
        self.grow(rest, self.tree_depth.get() + 1)?;
        Ok((
            rest,
            Expr {
                kind: ExprKind::Call {
                    name: name.name.to_ascii_lowercase(),
                    name_span: name.span,
                    args,
                },
                span: self.span(i, rest),
            },
        ))
    }

    /// `path = ident { "." ( ident | string ) | "[" digits "]" }`, no
    /// whitespace inside; a `.` followed by another `.` is left alone (`..`).
    fn path(&self, i: &'t str, head: Name) -> R<'t, Path> {
        let head_span = head.span;
        let mut segments = vec![Segment::Field(head.name)];
        let mut i = i;
        loop {
            // Whitespace is free (spec), also around `.` and `[`: `payload
            // . rows` is `payload.rows`. `..` after a path is a range.
            let (at, _) = ws(i)?;
            if let Some(after_dot) = at.strip_prefix('.').filter(|r| !r.starts_with('.')) {
                let (rest, _) = ws(after_dot)?;
                if rest.starts_with(['"', '\'']) {
                    let (rest, s) = self.string(rest)?;
                    segments.push(Segment::Field(s));
                    i = rest;
                } else if rest.starts_with(is_ident_start) {
                    let (rest, name) = take_while1(is_ident_char).parse(rest)?;
                    segments.push(Segment::Field(name.to_owned()));
                    i = rest;
                } else {
                    return Err(fail_expected(rest, "a field name after `.`"));
                }
            } else if let Some(after_bracket) = at.strip_prefix('[') {
                let (rest, _) = ws(after_bracket)?;
                let (after, digits) =
                    take_while::<_, _, PErr>(|c: char| c.is_ascii_digit()).parse(rest)?;
                if digits.is_empty() {
                    return Err(fail_expected(rest, "an array index"));
                }
                let Ok(index) = digits.parse::<u64>() else {
                    return self.invalid(rest, digits.len(), "array index out of range".into());
                };
                let (after, _) = self
                    .symbol(after, "]")
                    .map_err(|_| fail_expected_ws(after, "`]`"))?;
                segments.push(Segment::Index(index));
                i = after;
            } else {
                return Ok((
                    i,
                    Path {
                        segments,
                        head_span,
                    },
                ));
            }
        }
    }

    // ---------------------------------------------------------------- literals

    /// `parameter = "$" [a-z_] [a-z0-9_]*`
    fn param(&self, i: &'t str) -> R<'t, String> {
        let (rest, _) = tag("$").parse(i)?;
        let (rest, name) = take_while::<_, _, PErr>(is_ident_char).parse(rest)?;
        if !is_param_name(name) {
            return self.invalid(
                i,
                name.len() + 1,
                format!("invalid parameter name `${name}`: use [a-z_][a-z0-9_]*"),
            );
        }
        Ok((rest, name.to_owned()))
    }

    /// `string = '"' { char | escape } '"' | "'" { char | escape } "'"`,
    /// `escape = "\\" ( "\\" | '"' | "'" | "n" | "t" | "u{" hex "}" )`.
    fn string(&self, i: &'t str) -> R<'t, String> {
        let (i, _) = ws(i)?;
        let Some(quote) = i.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            return self.expected(i, "a string");
        };
        let mut out = String::new();
        let mut chars = i.char_indices().skip(1);
        while let Some((at, c)) = chars.next() {
            if c == quote {
                return Ok((&i[at + 1..], out));
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let escape_at = &i[at..];
            match chars.next() {
                Some((_, '\\')) => out.push('\\'),
                Some((_, '"')) => out.push('"'),
                Some((_, '\'')) => out.push('\''),
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((u_at, 'u')) => {
                    let body = &i[u_at + 1..];
                    let hex_len = body
                        .strip_prefix('{')
                        .map(|b| b.chars().take_while(char::is_ascii_hexdigit).count())
                        .unwrap_or(0);
                    let closed = body.get(1 + hex_len..).is_some_and(|b| b.starts_with('}'));
                    let scalar = (closed && (1..=6).contains(&hex_len))
                        .then(|| u32::from_str_radix(&body[1..1 + hex_len], 16).ok())
                        .flatten()
                        .and_then(char::from_u32);
                    let Some(ch) = scalar else {
                        let len = 2 + if closed { hex_len + 2 } else { 0 };
                        return self.invalid(
                            escape_at,
                            len,
                            "invalid unicode escape: use \\u{HEX} with 1 to 6 hex digits naming a character".into(),
                        );
                    };
                    out.push(ch);
                    // Skip `{hex}`.
                    for _ in 0..hex_len + 2 {
                        chars.next();
                    }
                }
                Some((_, other)) => {
                    return self.invalid(
                        escape_at,
                        1 + other.len_utf8(),
                        format!("invalid escape `\\{other}` in string"),
                    )
                }
                None => break,
            }
        }
        self.invalid(i, 1, "unterminated string".into())
    }

    /// `number_like = date_time | date | duration | number` at a digit.
    ///
    /// `2024-01-10` is a date (never `2024 - 1 - 10`), `90d` a duration,
    /// `1e6` and `3.5` decimals; a `.` is part of a number only when a digit
    /// follows it, so `1..2` is `1`, `..`, `2`.
    fn number_like(&self, i: &'t str) -> R<'t, NumberToken<'t>> {
        if let Some(date_len) = date_prefix_len(i) {
            return self.instant_literal(i, date_len);
        }
        let (rest, digits) = take_while1(|c: char| c.is_ascii_digit()).parse(i)?;
        // A duration: digits and a unit, nothing after.
        for (unit_text, unit) in [
            ("ms", DurationUnit::Millisecond),
            ("s", DurationUnit::Second),
            ("m", DurationUnit::Minute),
            ("h", DurationUnit::Hour),
            ("d", DurationUnit::Day),
            ("w", DurationUnit::Week),
        ] {
            if let Some(after) = rest.strip_prefix(unit_text) {
                if continues_ident(after) {
                    continue;
                }
                let len = digits.len() + unit_text.len();
                let duration = digits
                    .parse::<u64>()
                    .ok()
                    .map(|amount| Duration { amount, unit });
                return match duration.filter(|d| d.micros().is_some()) {
                    Some(d) => Ok((after, NumberToken::Literal(Literal::Duration(d)))),
                    None => {
                        self.invalid(i, len, format!("duration `{}` is out of range", &i[..len]))
                    }
                };
            }
        }
        let mut end = digits.len();
        let mut is_float = false;
        let bytes = i.as_bytes();
        if bytes.get(end) == Some(&b'.') && bytes.get(end + 1).is_some_and(u8::is_ascii_digit) {
            end += 1;
            while bytes.get(end).is_some_and(u8::is_ascii_digit) {
                end += 1;
            }
            is_float = true;
        }
        if matches!(bytes.get(end), Some(b'e' | b'E')) {
            let mut exp_end = end + 1;
            if matches!(bytes.get(exp_end), Some(b'+' | b'-')) {
                exp_end += 1;
            }
            if bytes.get(exp_end).is_some_and(u8::is_ascii_digit) {
                while bytes.get(exp_end).is_some_and(u8::is_ascii_digit) {
                    exp_end += 1;
                }
                end = exp_end;
                is_float = true;
            }
        }
        let text = &i[..end];
        let rest = &i[end..];
        if continues_ident(rest) {
            let bad_len = end + rest.chars().take_while(|c| is_ident_char(*c)).count();
            return self.invalid(
                i,
                bad_len,
                format!(
                    "invalid number `{}`: a duration is an integer and one of ms, s, m, h, d, w",
                    &i[..bad_len]
                ),
            );
        }
        if !is_float {
            return Ok((rest, NumberToken::Int(text)));
        }
        match text.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok((rest, NumberToken::Float(x))),
            _ => self.invalid(i, end, format!("number `{text}` is out of range")),
        }
    }

    /// A date (`2024-01-10`, midnight UTC) or an RFC 3339 instant
    /// (`2024-01-10T05:00:00Z`, `2024-01-10T07:00:00+02:00`).
    fn instant_literal(&self, i: &'t str, date_len: usize) -> R<'t, NumberToken<'t>> {
        let date_text = &i[..date_len];
        let rest = &i[date_len..];
        if rest.starts_with(['T', 't']) {
            let body_len = 1 + rest[1..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == ':' || *c == '.')
                .count();
            let after_body = &rest[body_len..];
            let zone_len = if after_body.starts_with(['Z', 'z']) {
                1
            } else if after_body.starts_with(['+', '-'])
                && after_body.len() >= 6
                && after_body.as_bytes()[1..6]
                    .iter()
                    .enumerate()
                    .all(|(k, b)| {
                        if k == 2 {
                            *b == b':'
                        } else {
                            b.is_ascii_digit()
                        }
                    })
            {
                6
            } else {
                0
            };
            let len = date_len + body_len + zone_len;
            let text = &i[..len];
            let after = &i[len..];
            if zone_len == 0 {
                return self.invalid(
                    i,
                    len,
                    format!("timestamp `{text}` needs an offset (`Z` or `+HH:MM`)"),
                );
            }
            if continues_ident(after) {
                return self.invalid(i, len + 1, format!("invalid timestamp `{text}`"));
            }
            return match Timestamp::parse_rfc3339(text) {
                Some(ts) => Ok((
                    after,
                    NumberToken::Literal(Literal::Instant(Instant::At(ts))),
                )),
                None => self.invalid(i, len, format!("invalid timestamp `{text}`")),
            };
        }
        if continues_ident(rest) {
            return self.invalid(i, date_len + 1, format!("invalid date `{date_text}`"));
        }
        let micros = NaiveDate::parse_from_str(date_text, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|dt| dt.and_utc().timestamp_micros());
        match micros {
            Some(m) => Ok((
                rest,
                NumberToken::Literal(Literal::Instant(Instant::Date(Timestamp::from_micros(m)))),
            )),
            None => self.invalid(i, date_len, format!("invalid date `{date_text}`")),
        }
    }
}

/// What [`Parser::number_like`] read.
enum NumberToken<'a> {
    /// Unsigned digits (the sign is applied by `unary`).
    Int(&'a str),
    /// A finite decimal.
    Float(f64),
    /// A duration or an instant.
    Literal(Literal),
}

/// `YYYY-MM-DD` at the start of `i` (not followed by another digit).
fn date_prefix_len(i: &str) -> Option<usize> {
    let b = i.as_bytes();
    let shape = b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit);
    (shape && !b.get(10).is_some_and(u8::is_ascii_digit)).then_some(10)
}

/// `now` alone up to a closing parenthesis (what follows an opening one):
/// the text after the `)`, and the text at `now`.
fn bare_now_in_parens(i: &str) -> Option<(&str, &str)> {
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\r' | '\n');
    let now_at = i.trim_start_matches(is_space);
    let (head, after) = (now_at.get(..3)?, now_at.get(3..)?);
    if !head.eq_ignore_ascii_case("now") || continues_ident(after) {
        return None;
    }
    let rest = after.trim_start_matches(is_space).strip_prefix(')')?;
    Some((rest, now_at))
}

/// Digits as an i64, negated when `negative` (so `i64::MIN` fits).
fn parse_int(digits: &str, negative: bool) -> Option<i64> {
    let magnitude: i128 = digits.parse().ok()?;
    let value = if negative { -magnitude } else { magnitude };
    i64::try_from(value).ok()
}

pub(crate) fn is_reserved(word: &str) -> bool {
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(word))
}

fn binary(op: BinOp, left: Expr, right: Expr) -> Expr {
    let span = left.span.to(right.span);
    Expr {
        kind: ExprKind::Binary {
            op,
            left: Box::new(left),
            right: Box::new(right),
        },
        span,
    }
}

/// Makes a recoverable error final (nom's `cut`).
fn cut_err(e: Err<PErr>) -> Err<PErr> {
    match e {
        Err::Error(e) => Err::Failure(e),
        other => other,
    }
}

fn fail_expected(at: &str, what: &str) -> Err<PErr> {
    Err::Failure(PErr {
        rest_len: at.len(),
        kind: PErrKind::Expected(what.to_owned()),
    })
}

/// Like [`fail_expected`], positioned after the whitespace at `at`.
fn fail_expected_ws(at: &str, what: &str) -> Err<PErr> {
    let trimmed = at.trim_start();
    fail_expected(trimmed, what)
}

/// The token at the start of `rest` for "found ..." (and its length in bytes).
fn describe_token(rest: &str) -> (String, usize) {
    let Some(c) = rest.chars().next() else {
        return ("end of query".into(), 0);
    };
    if c.is_whitespace() {
        return ("whitespace".into(), c.len_utf8());
    }
    let len = if is_ident_char(c) {
        rest.chars()
            .take_while(|c| is_ident_char(*c))
            .map(char::len_utf8)
            .sum()
    } else if ["!=", "<=", ">=", "=~", "!~", ".."]
        .iter()
        .any(|op| rest.starts_with(op))
    {
        2
    } else {
        c.len_utf8()
    };
    let token = &rest[..len];
    let shown: String = if token.chars().count() > 30 {
        token.chars().take(30).chain("…".chars()).collect()
    } else {
        token.to_owned()
    };
    (format!("`{shown}`"), len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `input`, checks its canonical text, and that the text reads back equal.
    fn check(input: &str, expected: &str) {
        let query = parse_query(input).unwrap_or_else(|e| panic!("{input}: {}", e.render(input)));
        let printed = query.to_string();
        assert_eq!(printed, expected, "canonical form of {input}");
        let again =
            parse_query(&printed).unwrap_or_else(|e| panic!("{printed}: {}", e.render(&printed)));
        assert_eq!(again, query, "round trip of {input}");
    }

    /// Parses `input`, expecting an error with `message` at 1-based `column`.
    fn check_err(input: &str, message: &str, column: usize) {
        let err = parse_query(input).expect_err(input);
        assert_eq!(err.to_string(), message, "message for {input}");
        assert_eq!(err.column_in(input), Some(column), "column for {input}");
    }

    #[test]
    fn sources() {
        check("*", "*");
        check("a , b", "a, b");
        check("* {run_id=\"run-123\"}", "*{run_id=\"run-123\"}");
        check(
            "k{schema='s', table=~$t, target!~\"x.*\"}",
            "k{schema=\"s\", table=~$t, target!~\"x.*\"}",
        );
    }

    #[test]
    fn keywords_are_case_insensitive() {
        check(
            "k | WHERE A AND NOT b | Latest BY target | SORT x DESC, y ASC",
            "k | where A and not b | latest by target | sort x desc, y",
        );
        check("k | stats COUNT() As n", "k | stats count() as n");
    }

    #[test]
    fn numbers_durations_and_instants() {
        check(
            "k | where x = -3.5 or x = 1e6 or x = 42",
            "k | where x = -3.5 or x = 1000000.0 or x = 42",
        );
        check(
            "k | since 90d | until 2024-01-10 | between 2024-01-10T07:00:00+02:00 .. now - 7d",
            "k | since 90d | until 2024-01-10 | between 2024-01-10T05:00:00Z .. now - 7d",
        );
        check("k | between 1..2", "k | between 1 .. 2");
        check(
            "k | where x = -9223372036854775808",
            "k | where x = -9223372036854775808",
        );
        check("k | where x = 5ms + 1s", "k | where x = 5ms + 1s");
        check("k | where x = (now) - 7d", "k | where x = (now) - 7d");
        check("k | where x = -(3)", "k | where x = -(3)");
    }

    #[test]
    fn precedence_prints_minimal_parentheses() {
        check("k | where (a or b) and c", "k | where (a or b) and c");
        check("k | where a or (b and c)", "k | where a or b and c");
        check(
            "k | where a - (b - c) = (a - b) - c",
            "k | where a - (b - c) = a - b - c",
        );
        check("k | where (a = b) = c", "k | where (a = b) = c");
        check(
            "k | where -(a + b) * 2 in (1, 2)",
            "k | where -(a + b) * 2 in (1, 2)",
        );
    }

    #[test]
    fn paths_and_strings() {
        check(
            "k | where payload.\"row count\" > 0 and payload.columns[0].name = 'a\\'b\\u{e9}'",
            "k | where payload.\"row count\" > 0 and payload.columns[0].name = \"a'bé\"",
        );
        check(
            "k | where payload.\"rows\" = \"\\t\"",
            "k | where payload.rows = \"\\t\"",
        );
        // Whitespace is free, also inside a path; `..` after one is a range.
        check(
            "k | where payload . rows > 0 and payload.arr [ 0 ]\n  . name = 1",
            "k | where payload.rows > 0 and payload.arr[0].name = 1",
        );
        check("k | between a .. b", "k | between a .. b");
        check("k | between a..b", "k | between a .. b");
    }

    #[test]
    fn stages() {
        check(
            "k | window avg(x) as m, count() by target rows -7 .. -1",
            "k | window avg(x) as m, count() by target rows -7 .. -1",
        );
        check(
            "k | stats count() by bin(produced_at, 1d) as day | limit 5",
            "k | stats count() by bin(produced_at, 1d) as day | limit 5",
        );
        check(
            "k | extend a = 1, b = a = 2 | select a, b as c",
            "k | extend a = 1, b = a = 2 | select a, b as c",
        );
        check("k\n| where\n  x > 1", "k | where x > 1");
    }

    #[test]
    fn errors() {
        check_err(
            "k | where",
            "expected an expression, found end of query",
            10,
        );
        check_err("k | frobnicate", "expected a stage (where, since, until, between, overlaps, latest, sort, limit, extend, select, stats, window), found `frobnicate`", 5);
        check_err(
            "k | where x = 1 y",
            "expected `|` or end of query, found `y`",
            17,
        );
        check_err("k | where x = 'abc", "unterminated string", 15);
        check_err(
            "k | where x = 12abc",
            "invalid number `12abc`: a duration is an integer and one of ms, s, m, h, d, w",
            15,
        );
        check_err(
            "k | since 2024-01-10T05:00:00",
            "timestamp `2024-01-10T05:00:00` needs an offset (`Z` or `+HH:MM`)",
            11,
        );
        check_err(
            "k | where x = $Name",
            "invalid parameter name `$Name`: use [a-z_][a-z0-9_]*",
            15,
        );
        check_err("k{tabel=\"x\"}", "unknown label `tabel`; did you mean `table`? labels are source, schema, table, target, producer, run_id, job_id, namespace, tenant", 3);
        check_err("k | where (x", "expected `)`, found end of query", 13);
        check_err(
            "k | extend null = 1",
            "expected a name, found keyword `null`",
            12,
        );
        check_err(
            "k | where x = 99999999999999999999",
            "integer `99999999999999999999` is out of range",
            15,
        );
        check_err(
            "k | where a = b = c",
            "expected `|` or end of query, found `=`",
            17,
        );
    }

    #[test]
    fn limits() {
        let deep = format!("k | where {}x{}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(matches!(
            parse_query(&deep),
            Err(QueryError::TooLong { .. })
        ));
        let deep = format!("k | where {}x{}", "(".repeat(20_000), ")".repeat(20_000));
        assert!(matches!(
            parse_query(&deep),
            Err(QueryError::TooDeep { .. })
        ));
        let nots = format!("k | where {}x", "not ".repeat(10_000));
        assert!(matches!(
            parse_query(&nots),
            Err(QueryError::TooDeep { .. })
        ));
        let negs = format!("k | where {}x", "-".repeat(10_000));
        assert!(matches!(
            parse_query(&negs),
            Err(QueryError::TooDeep { .. })
        ));
        // Spec: nesting *deeper than* 128 levels is rejected.
        let nest = |n: usize| format!("k | where {}x{}", "(".repeat(n), ")".repeat(n));
        assert!(parse_query(&nest(MAX_DEPTH)).is_ok());
        assert!(matches!(
            parse_query(&nest(MAX_DEPTH + 1)),
            Err(QueryError::TooDeep { .. })
        ));
        // Runs of `not` and of `-` are read in a loop: no nesting, only
        // tree levels.
        for op in ["not ", "-", "- "] {
            let run = |n: usize| format!("k | where {}x", op.repeat(n));
            assert!(parse_query(&run(MAX_DEPTH + 1)).is_ok(), "{op}");
            assert!(matches!(
                parse_query(&run(MAX_TREE_DEPTH)),
                Err(QueryError::TooDeep {
                    max: MAX_TREE_DEPTH,
                    ..
                })
            ));
        }
        // `(now)`, as a bare `now` prints before `+`, is no level either:
        // the printed form of a query at the nesting limit parses back.
        let now_in_calls = format!(
            "k | where {}now + x{}",
            "abs(".repeat(MAX_DEPTH),
            ")".repeat(MAX_DEPTH)
        );
        let query = parse_query(&now_in_calls).expect("at the limit");
        assert!(query.to_string().contains("(now) + x"));
        assert_eq!(parse_query(&query.to_string()), Ok(query));
        // `-(` and `not (` are one level each: the parentheses.
        for prefix in ["-(", "not ("] {
            let nest = |n: usize| format!("k | where {}x{}", prefix.repeat(n), ")".repeat(n));
            assert!(parse_query(&nest(MAX_DEPTH)).is_ok(), "{prefix}");
            assert!(matches!(
                parse_query(&nest(MAX_DEPTH + 1)),
                Err(QueryError::TooDeep { max: MAX_DEPTH, .. })
            ));
        }
        let calls = |n: usize| format!("k | where {}x{}", "abs(".repeat(n), ")".repeat(n));
        assert!(parse_query(&calls(MAX_DEPTH)).is_ok());
        assert!(parse_query(&calls(MAX_DEPTH + 1)).is_err());
        // Seven tree levels (`or`, `and`, `not`, `=`, `+`, `*`, `-`) for each
        // level of nesting: the tree limit is never what refuses a query
        // within the nesting limit.
        let widest = |n: usize| {
            let level = "a or b and not (c) = d + e * -(";
            format!("k | where {}x{}", level.repeat(n), ")".repeat(n))
        };
        let query = parse_query(&widest(MAX_DEPTH)).expect("within the nesting limit");
        assert_eq!(parse_query(&query.to_string()), Ok(query));
        assert!(matches!(
            parse_query(&widest(MAX_DEPTH + 1)),
            Err(QueryError::TooDeep { max: MAX_DEPTH, .. })
        ));
        // 128 nested calls (or `not`s, or minuses) in a comparison fit.
        let calls_in = format!(
            "k | where x = 1 + {}x{}",
            "abs(".repeat(MAX_DEPTH),
            ")".repeat(MAX_DEPTH)
        );
        assert!(parse_query(&calls_in).is_ok());
        // Operator chains are flat: any length within 64 KiB parses (a
        // generated filter over thousands of tables, a generated sum), and
        // prints back.
        for op in ["or", "and", "+", "-", "*", "/", "%"] {
            let chain = format!("k | where x = 1{}", format!(" {op} x").repeat(10_000));
            assert!(chain.len() < MAX_QUERY_BYTES);
            let query = parse_query(&chain).expect("a long chain parses");
            assert_eq!(query.to_string(), chain);
        }
        let mixed = format!("k | where x{}", " or y and z".repeat(5_000));
        let query = parse_query(&mixed).expect("a long mixed chain parses");
        assert_eq!(query.to_string(), mixed);
    }

    #[test]
    fn logic_chains_are_flat_and_parentheses_group() {
        let where_expr = |text: &str| -> Expr {
            let query = parse_query(&format!("k | where {text}")).expect("parses");
            match query.stages.into_iter().next().map(|stage| stage.kind) {
                Some(StageKind::Where(e)) => e,
                other => panic!("not a where stage: {other:?}"),
            }
        };
        let ExprKind::Logic { op, operands } = where_expr("a or b and c or d").kind else {
            panic!("not a chain");
        };
        assert_eq!(op, LogicOp::Or);
        assert_eq!(operands.len(), 3);
        assert!(matches!(
            &operands[1].kind,
            ExprKind::Logic { op: LogicOp::And, operands } if operands.len() == 2
        ));
        // A parenthesised chain of the same operator keeps its grouping,
        // and prints with its parentheses.
        let grouped = where_expr("(a or b) or c");
        let ExprKind::Logic { operands, .. } = &grouped.kind else {
            panic!("not a chain");
        };
        assert_eq!(operands.len(), 2);
        assert_eq!(grouped.to_string(), "(a or b) or c");
        assert_ne!(grouped, where_expr("a or b or c"));
        assert_eq!(where_expr("a or (b or c)").to_string(), "a or (b or c)");
        assert_eq!(where_expr("(a)").to_string(), "a");
    }
}
