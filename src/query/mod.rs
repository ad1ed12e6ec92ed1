//! The query language (spec `query-language.md`): parse → plan → execute.
//!
//! ```
//! let query = almanac::query::parse("recon_result | since 7d | stats count() by target").unwrap();
//! assert_eq!(query.to_string(), "recon_result | since 7d | stats count() by target");
//! ```

pub mod ast;
mod error;
mod parse;
mod print;
mod source;
mod suggest;

pub use error::{line_column, QueryError};
pub use source::{RecordIter, RecordSource, ScanDescription, ScanRequest, TargetInfo};

/// The longest query text accepted, in bytes (64 KiB).
pub const MAX_QUERY_BYTES: usize = 64 * 1024;

/// The deepest nesting of expressions accepted (parentheses, calls, `not`, `-`).
pub const MAX_DEPTH: usize = 128;

/// The deepest expression tree accepted: long operator chains such as
/// `a or b or c ...` nest without parentheses; use `in (...)` for long lists.
pub const MAX_TREE_DEPTH: usize = 512;

/// Parses a query's text into its syntax tree (syntax only: names are
/// resolved when the query is prepared).
pub fn parse(text: &str) -> Result<ast::Query, QueryError> {
    parse::parse_query(text)
}
