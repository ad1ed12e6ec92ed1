//! Errors of the query layer: parse, plan, bind and run, each with the byte
//! span of the problem where there is one.

use super::ast::Span;
use unicode_width::UnicodeWidthChar;

/// A query that did not parse, plan or run.
///
/// Messages start lowercase and name what was expected and what was found.
/// [`QueryError::render`] adds the query line and a caret under the column.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The text does not follow the grammar.
    #[error("{message}")]
    Syntax {
        /// `expected ..., found ...`.
        message: String,
        /// Where.
        span: Span,
    },
    /// The query text is longer than [`MAX_QUERY_BYTES`](super::MAX_QUERY_BYTES).
    #[error("query is too long: {len} bytes, at most {max} are allowed")]
    TooLong {
        /// The text's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The query nests deeper than [`MAX_DEPTH`](super::MAX_DEPTH) levels.
    #[error("query nests too deeply: more than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
        /// Where the limit was crossed.
        span: Span,
    },
    /// A path whose first segment is neither a record field nor a computed name.
    #[error("unknown field `{name}`{}", suggestion_text(suggestion))]
    UnknownField {
        /// The first segment.
        name: String,
        /// A likely intended path.
        suggestion: Option<String>,
        /// Where.
        span: Span,
    },
    /// A call to a function the language does not have.
    #[error("unknown function `{name}`{}", suggestion_text(suggestion))]
    UnknownFunction {
        /// The name, lowercase.
        name: String,
        /// A likely intended function.
        suggestion: Option<String>,
        /// Where.
        span: Span,
    },
    /// A function called with the wrong number of arguments.
    #[error("function `{name}` takes {expected}, found {found}")]
    WrongArity {
        /// The function.
        name: String,
        /// `1 argument`, `1 or more arguments`.
        expected: String,
        /// How many were given.
        found: usize,
        /// Where.
        span: Span,
    },
    /// A query ran with a parameter left unbound.
    #[error("parameter `${name}` is not bound")]
    UnboundParameter {
        /// The name without `$`.
        name: String,
        /// Where it is used (the first use).
        span: Span,
    },
    /// A regular expression that does not compile.
    #[error("invalid regular expression: {message}")]
    BadRegex {
        /// The regex engine's message, on one line.
        message: String,
        /// Where the pattern was written.
        span: Span,
    },
    /// A value the query cannot use where it is (a wrong literal, a wrong
    /// type for a stage, an aggregate outside `stats`/`window`, ...).
    #[error("{message}")]
    Invalid {
        /// What is wrong.
        message: String,
        /// Where.
        span: Span,
    },
    /// A `--param name=value` binding that cannot be read.
    #[error("invalid parameter binding `{text}`: {message}")]
    BadBinding {
        /// The binding as given.
        text: String,
        /// What is wrong.
        message: String,
    },
}

fn suggestion_text(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!("; did you mean `{s}`?"),
        None => String::new(),
    }
}

impl QueryError {
    /// True when the query text or its parameters are at fault (exit 2).
    /// Every variant today is; storage failures come as `crate::Error`.
    pub fn is_invalid_input(&self) -> bool {
        true
    }

    /// The byte span of the problem in the query text, when there is one.
    pub fn span(&self) -> Option<Span> {
        match self {
            QueryError::Syntax { span, .. }
            | QueryError::TooDeep { span, .. }
            | QueryError::UnknownField { span, .. }
            | QueryError::UnknownFunction { span, .. }
            | QueryError::WrongArity { span, .. }
            | QueryError::UnboundParameter { span, .. }
            | QueryError::BadRegex { span, .. }
            | QueryError::Invalid { span, .. } => Some(*span),
            QueryError::TooLong { .. } | QueryError::BadBinding { .. } => None,
        }
    }

    /// The 1-based (line, column) of the problem in `text`; columns count
    /// characters, not bytes.
    pub fn line_column_in(&self, text: &str) -> Option<(usize, usize)> {
        self.span().map(|span| line_column(text, span.start))
    }

    /// The 1-based column of the problem in `text` (on its line).
    pub fn column_in(&self, text: &str) -> Option<usize> {
        self.line_column_in(text).map(|(_, column)| column)
    }

    /// The message, then the query line at fault and a caret under the
    /// column, ready for a terminal:
    ///
    /// ```text
    /// error: unknown field `rows`; did you mean `payload.rows`?
    ///   --> line 1, column 25
    ///   | ingestion_volume | where rows > 0
    ///   |                          ^^^^
    /// ```
    pub fn render(&self, text: &str) -> String {
        let mut out = format!("error: {self}");
        let Some(span) = self.span() else {
            return out;
        };
        let (line_no, column) = line_column(text, span.start);
        let line = text.lines().nth(line_no - 1).unwrap_or("");
        let line_chars = line.chars().count();
        let width = {
            let start = floor_char_boundary(text, span.start);
            let end = floor_char_boundary(text, span.end.max(span.start));
            text.get(start..end).map_or(1, |s| {
                s.split('\n').next().unwrap_or("").chars().count().max(1)
            })
        };
        let width = width.min(line_chars.saturating_sub(column - 1).max(1));
        out.push_str(&format!("\n  --> line {line_no}, column {column}\n"));
        // A long line (a generated query) is shown as a window around the
        // column, so the caret still points at the mistake.
        let caret = column - 1;
        let (start, end) = if line_chars <= SHOWN_CHARS {
            (0, line_chars)
        } else {
            let end = (caret.saturating_sub(SHOWN_BEFORE) + SHOWN_CHARS).min(line_chars);
            (end - SHOWN_CHARS, end)
        };
        let prefix = if start > 0 { "..." } else { "" };
        let suffix = if end < line_chars { "..." } else { "" };
        let excerpt: String = line.chars().skip(start).take(end - start).collect();
        let width = width.min(end.saturating_sub(caret)).max(1);
        out.push_str(&format!("  | {prefix}{excerpt}{suffix}\n"));
        // Under each character before the column as many spaces as the
        // columns a terminal gives it (two for a wide character such as
        // `漢` or an emoji, none for a combining mark), or a tab under a
        // tab, so the caret lines up whatever width a terminal gives tabs.
        let mut pad = String::new();
        for c in excerpt.chars().take(caret - start) {
            match c {
                '\t' => pad.push('\t'),
                c => pad.extend(std::iter::repeat_n(' ', c.width().unwrap_or(0))),
            }
        }
        // As many carets as the columns the marked characters take.
        let marked: usize = excerpt
            .chars()
            .skip(caret - start)
            .take(width)
            .map(|c| c.width().unwrap_or(0))
            .sum();
        out.push_str(&format!(
            "  | {}{pad}{}",
            " ".repeat(prefix.len()),
            "^".repeat(marked.max(1))
        ));
        out
    }
}

/// The longest query line [`QueryError::render`] shows whole, in characters;
/// a longer one is shown as this many characters around the column.
const SHOWN_CHARS: usize = 120;

/// How many characters of a long line are shown before the column.
const SHOWN_BEFORE: usize = 50;

/// The 1-based (line, column) of byte `offset` in `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let before = text.get(..offset).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    offset = offset.min(text.len());
    while offset > 0 && !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, offset: usize, expected: (usize, usize)) {
        assert_eq!(line_column(text, offset), expected);
    }

    #[test]
    fn columns_are_one_based_and_count_characters() {
        check("abc", 0, (1, 1));
        check("abc", 3, (1, 4));
        check("a\nbc", 3, (2, 2));
        check("é x", 3, (1, 3));
        check("é x", 1, (1, 1));
    }

    #[test]
    fn render_puts_a_caret_under_the_column() {
        let err = QueryError::Syntax {
            message: "expected an expression, found `|`".into(),
            span: Span::new(10, 11),
        };
        let text = "k | where | x";
        assert_eq!(
            err.render(text),
            "error: expected an expression, found `|`\n  --> line 1, column 11\n  | k | where | x\n  |           ^"
        );
    }

    /// A tab before the column is matched by a tab under it, so the caret
    /// lines up on a terminal whatever width it gives tabs.
    #[test]
    fn the_caret_lines_up_under_tabs() {
        let err = QueryError::Syntax {
            message: "unexpected `@`".into(),
            span: Span::new(10, 11),
        };
        let text = "k |\twhere @";
        assert_eq!(
            err.render(text),
            "error: unexpected `@`\n  --> line 1, column 11\n  | k |\twhere @\n  |    \t      ^"
        );
    }

    /// A long line is shown as a window around the column, and the caret
    /// still falls under the offending text.
    #[test]
    fn a_long_line_is_shown_around_the_column() {
        let head = format!("k | where {}", "x = 1 or ".repeat(1_000));
        let text = format!("{head}@ or x = 1 or x = 1");
        let err = QueryError::Syntax {
            message: "unexpected `@`".into(),
            span: Span::new(head.len(), head.len() + 1),
        };
        let rendered = err.render(&text);
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(lines[1], format!("  --> line 1, column {}", head.len() + 1));
        let (shown, caret) = (lines[2], lines[3]);
        assert!(
            shown.starts_with("  | ...") && shown.ends_with("= 1"),
            "{shown}"
        );
        assert!(shown.chars().count() <= SHOWN_CHARS + 10, "{shown}");
        let at = caret.find('^').expect("a caret");
        assert_eq!(shown.get(at..at + 1), Some("@"), "{shown}\n{caret}");
        // At the very end of a long line: the caret sits just after it.
        let text = "x = 1 or ".repeat(100);
        let err = QueryError::Syntax {
            message: "expected an expression, found the end".into(),
            span: Span::new(text.len(), text.len()),
        };
        let rendered = err.render(&text);
        let lines: Vec<&str> = rendered.lines().collect();
        assert!(lines[2].starts_with("  | ...") && !lines[2].ends_with("..."));
        assert_eq!(lines[3].find('^'), Some(lines[2].len()));
    }

    #[test]
    fn the_caret_counts_the_columns_of_wide_characters() {
        // `漢` and the emoji take two columns each, the combining accent
        // none: the caret sits under `x`, as wide as `名前` is.
        let text = "k | where payload.\"漢\" = \"🎉e\u{301}\" and x > 名前";
        let at = text.find("x >").unwrap();
        let err = QueryError::Syntax {
            message: "m".into(),
            span: Span::new(at, at + 1),
        };
        let rendered = err.render(text);
        let lines: Vec<&str> = rendered.lines().collect();
        let caret = lines[3];
        // Columns before `x`: `k | where payload."` (19), `漢` (2),
        // `" = "` (5), the emoji (2), `e` and its accent (1), `" and ` (6).
        let pad = 19 + 2 + 5 + 2 + 1 + 6;
        assert_eq!(caret, format!("  | {}^", " ".repeat(pad)), "{rendered}");
        let at = text.find("名前").unwrap();
        let err = QueryError::Syntax {
            message: "m".into(),
            span: Span::new(at, text.len()),
        };
        let rendered = err.render(text);
        assert!(rendered.ends_with("^^^^"), "{rendered}");
    }
}
