//! The canonical text of a query: `Display` for the syntax tree.
//!
//! Canonical form: keywords and function names lowercase, one space around
//! binary operators and after commas, ` | ` between stages, strings in double
//! quotes, instants in UTC, `asc` omitted, and only the parentheses the
//! precedence needs. Parsing the printed text gives back an equal tree
//! (`parse(print(q)) == q`); the printed text of an expression is also the
//! name of a column written without `as`.

use std::fmt::{self, Display, Formatter, Write};

use super::ast::*;

impl Display for Query {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        for stage in &self.stages {
            write!(f, " | {stage}")?;
        }
        Ok(())
    }
}

impl Display for Source {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if self.kinds.is_empty() {
            f.write_char('*')?;
        } else {
            write_list(f, self.kinds.iter().map(|k| &k.name))?;
        }
        if !self.matchers.is_empty() {
            f.write_char('{')?;
            write_list(f, &self.matchers)?;
            f.write_char('}')?;
        }
        Ok(())
    }
}

impl Display for Matcher {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}{}",
            self.label.as_str(),
            self.op.as_str(),
            self.value
        )
    }
}

impl Display for MatchValue {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            MatchValue::String(s) => write_string(f, s),
            MatchValue::Param(name) => write!(f, "${name}"),
        }
    }
}

impl Display for Stage {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        self.kind.fmt(f)
    }
}

impl Display for StageKind {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            StageKind::Where(e) => write!(f, "where {e}"),
            StageKind::Since(e) => write!(f, "since {e}"),
            StageKind::Until(e) => write!(f, "until {e}"),
            StageKind::Between(a, b) => write!(f, "between {a} .. {b}"),
            StageKind::Overlaps(a, b) => write!(f, "overlaps {a} .. {b}"),
            StageKind::Latest(by) => {
                f.write_str("latest")?;
                if !by.is_empty() {
                    f.write_str(" by ")?;
                    write_list(f, by)?;
                }
                Ok(())
            }
            StageKind::Sort(keys) => {
                f.write_str("sort ")?;
                write_list(f, keys)
            }
            StageKind::Limit(e) => write!(f, "limit {e}"),
            StageKind::Extend(assignments) => {
                f.write_str("extend ")?;
                write_list(f, assignments)
            }
            StageKind::Select(items) => {
                f.write_str("select ")?;
                write_list(f, items)
            }
            StageKind::Stats { aggregates, by } => {
                f.write_str("stats ")?;
                write_list(f, aggregates)?;
                if !by.is_empty() {
                    f.write_str(" by ")?;
                    write_list(f, by)?;
                }
                Ok(())
            }
            StageKind::Window {
                aggregates,
                by,
                rows,
            } => {
                f.write_str("window ")?;
                write_list(f, aggregates)?;
                if !by.is_empty() {
                    f.write_str(" by ")?;
                    write_list(f, by)?;
                }
                write!(f, " rows {} .. {}", rows.start, rows.end)
            }
        }
    }
}

impl Display for SortKey {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.expr)?;
        if self.descending {
            f.write_str(" desc")?;
        }
        Ok(())
    }
}

impl Display for Assignment {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {}", self.name.name, self.expr)
    }
}

impl Display for Item {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.expr)?;
        if let Some(alias) = &self.alias {
            write!(f, " as {}", alias.name)?;
        }
        Ok(())
    }
}

fn write_list<T: Display>(
    f: &mut Formatter<'_>,
    items: impl IntoIterator<Item = T>,
) -> fmt::Result {
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

/// Precedence levels of the expression grammar, loosest first.
const PREC_NOT: u8 = 3;
const PREC_CMP: u8 = 4;
const PREC_SUM: u8 = 5;
const PREC_PRODUCT: u8 = 6;
const PREC_UNARY: u8 = 7;
const PREC_PRIMARY: u8 = 8;

fn precedence(e: &Expr) -> u8 {
    match &e.kind {
        ExprKind::Binary { op, .. } => op.precedence(),
        ExprKind::Arith { rest, .. } => {
            rest.first().map_or(PREC_PRIMARY, |(op, _)| op.precedence())
        }
        ExprKind::Logic { op, .. } => op.precedence(),
        ExprKind::In { .. } => PREC_CMP,
        ExprKind::Not(_) => PREC_NOT,
        ExprKind::Neg(_) => PREC_UNARY,
        _ => PREC_PRIMARY,
    }
}

impl Display for Expr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write_expr(f, self, 0, false)
    }
}

/// Writes `e`, in parentheses when it binds looser than `min_prec`.
///
/// `before_additive` is true when the text written next is ` + ` or ` - `:
/// a bare `now` there must be parenthesised, or `now - 7d` would read back
/// as one instant literal.
fn write_expr(f: &mut Formatter<'_>, e: &Expr, min_prec: u8, before_additive: bool) -> fmt::Result {
    if precedence(e) < min_prec {
        f.write_char('(')?;
        write_expr(f, e, 0, false)?;
        return f.write_char(')');
    }
    match &e.kind {
        ExprKind::Literal(Literal::Instant(Instant::Now(None))) if before_additive => {
            f.write_str("(now)")
        }
        ExprKind::Literal(lit) => write!(f, "{lit}"),
        ExprKind::Param(name) => write!(f, "${name}"),
        ExprKind::Path(path) => write!(f, "{path}"),
        ExprKind::Call { name, args, .. } => {
            write!(f, "{name}(")?;
            write_list(f, args)?;
            f.write_char(')')
        }
        ExprKind::Neg(inner) => {
            f.write_char('-')?;
            // A number right after `-` would fold into a negative literal.
            if matches!(
                inner.kind,
                ExprKind::Literal(Literal::Int(_) | Literal::Float(_))
            ) {
                write!(f, "({inner})")
            } else {
                write_expr(f, inner, PREC_UNARY, before_additive)
            }
        }
        ExprKind::Not(inner) => {
            f.write_str("not ")?;
            write_expr(f, inner, PREC_NOT, before_additive)
        }
        ExprKind::Logic { op, operands } => {
            // An operand chained by the same operator was parenthesised
            // (the parser makes one chain of `a or b or c`), so operands
            // must bind tighter than the operator.
            let p = op.precedence();
            for (i, operand) in operands.iter().enumerate() {
                if i > 0 {
                    write!(f, " {} ", op.as_str())?;
                }
                let last = i + 1 == operands.len();
                write_expr(f, operand, p + 1, last && before_additive)?;
            }
            Ok(())
        }
        ExprKind::Arith { first, rest } => {
            // The parser makes one chain of `a - b + c`, and joins a chain
            // of the same level written in parentheses on the left, so
            // only the right operands must bind tighter than the operators.
            let p = precedence(e);
            let additive = p == PREC_SUM;
            write_expr(
                f,
                first,
                p,
                additive || (rest.is_empty() && before_additive),
            )?;
            for (i, (op, operand)) in rest.iter().enumerate() {
                write!(f, " {} ", op.as_str())?;
                let last = i + 1 == rest.len();
                write_expr(
                    f,
                    operand,
                    p + 1,
                    if last { before_additive } else { additive },
                )?;
            }
            Ok(())
        }
        ExprKind::Binary { op, left, right } => {
            let p = op.precedence();
            // Comparisons do not chain: both sides are sums.
            let left_min = if op.is_comparison() { PREC_SUM } else { p };
            let additive = matches!(op, BinOp::Add | BinOp::Sub);
            write_expr(f, left, left_min, additive)?;
            write!(f, " {} ", op.as_str())?;
            let right_min = if op.is_comparison() {
                PREC_SUM
            } else if p == PREC_PRODUCT {
                PREC_UNARY
            } else {
                p + 1
            };
            write_expr(f, right, right_min, before_additive)
        }
        ExprKind::In { expr, list } => {
            write_expr(f, expr, PREC_SUM, false)?;
            f.write_str(" in (")?;
            write_list(f, list)?;
            f.write_char(')')
        }
    }
}

impl Display for Path {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Field(name) if i == 0 => f.write_str(name)?,
                Segment::Field(name) if is_identifier(name) => write!(f, ".{name}")?,
                Segment::Field(name) => {
                    f.write_char('.')?;
                    write_string(f, name)?;
                }
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`: a segment that needs no quotes.
pub(crate) fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Display for Literal {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Null => f.write_str("null"),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Int(i) => write!(f, "{i}"),
            // `{:?}` is the shortest text that reads back to the same f64 and
            // always has a `.` or an exponent, so it reads back as a decimal.
            Literal::Float(x) => write!(f, "{x:?}"),
            Literal::String(s) => write_string(f, s),
            Literal::Instant(instant) => write!(f, "{instant}"),
            Literal::Duration(d) => write!(f, "{d}"),
        }
    }
}

impl Display for Instant {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Instant::At(ts) => write!(f, "{ts}"),
            Instant::Date(ts) => match ts.to_datetime() {
                Some(dt) => write!(f, "{}", dt.format("%Y-%m-%d")),
                None => write!(f, "{ts}"),
            },
            Instant::Now(None) => f.write_str("now"),
            Instant::Now(Some((Sign::Plus, d))) => write!(f, "now + {d}"),
            Instant::Now(Some((Sign::Minus, d))) => write!(f, "now - {d}"),
        }
    }
}

/// A string literal in double quotes with the language's escapes.
pub(crate) fn write_string(f: &mut impl Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '\\' => f.write_str("\\\\")?,
            '"' => f.write_str("\\\"")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            c if c.is_control() => write!(f, "\\u{{{:x}}}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}
