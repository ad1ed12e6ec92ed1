//! The binary's error: a message for people and the exit status it maps to
//! (spec `records.md` §3: 2 for bad usage, query or input, 1 for the rest).

use std::fmt::Display;
use std::io;

/// Exit status for success.
pub const EXIT_OK: u8 = 0;
/// Exit status for any failure other than bad input (I/O, storage, a held lock).
pub const EXIT_FAILURE: u8 = 1;
/// Exit status for bad usage, a bad query or invalid input (nothing was written).
pub const EXIT_INVALID: u8 = 2;

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// Standard output was closed by its reader (`almanac export | head`):
    /// not an error, the command ends quietly with status 0.
    BrokenPipe,
    /// A failure to report: the first line says what is wrong.
    Message {
        /// The exit status.
        code: u8,
        /// The text printed to standard error.
        message: String,
    },
}

impl Failure {
    /// Bad usage, query or input: exit 2.
    pub fn invalid(message: impl Into<String>) -> Self {
        Failure::Message {
            code: EXIT_INVALID,
            message: message.into(),
        }
    }

    /// Any other failure: exit 1.
    pub fn other(message: impl Into<String>) -> Self {
        Failure::Message {
            code: EXIT_FAILURE,
            message: message.into(),
        }
    }

    /// A failure writing to standard output: quiet for a broken pipe.
    pub fn stdout(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Failure::BrokenPipe
        } else {
            Failure::other(format!("cannot write to standard output: {e}"))
        }
    }

    /// The same failure with `context` in front of its message.
    pub fn context(self, context: impl Display) -> Self {
        match self {
            Failure::BrokenPipe => Failure::BrokenPipe,
            Failure::Message { code, message } => Failure::Message {
                code,
                message: format!("{context}: {message}"),
            },
        }
    }

    /// The exit status.
    pub fn code(&self) -> u8 {
        match self {
            Failure::BrokenPipe => EXIT_OK,
            Failure::Message { code, .. } => *code,
        }
    }
}

impl From<almanac::Error> for Failure {
    fn from(e: almanac::Error) -> Self {
        let code = if e.is_invalid_input() {
            EXIT_INVALID
        } else {
            EXIT_FAILURE
        };
        Failure::Message {
            code,
            message: e.to_string(),
        }
    }
}

/// `Result` with [`Failure`].
pub type CliResult<T = ()> = Result<T, Failure>;

/// Adds context to library errors, keeping their exit status.
pub trait Context<T> {
    /// Prefixes the error's message with `context`.
    fn context(self, context: impl Display) -> CliResult<T>;
    /// Like [`Context::context`], computing the context only on failure.
    fn with_context<D: Display>(self, context: impl FnOnce() -> D) -> CliResult<T>;
}

impl<T, E: Into<Failure>> Context<T> for Result<T, E> {
    fn context(self, context: impl Display) -> CliResult<T> {
        self.map_err(|e| e.into().context(context))
    }

    fn with_context<D: Display>(self, context: impl FnOnce() -> D) -> CliResult<T> {
        self.map_err(|e| e.into().context(context()))
    }
}

impl From<almanac::storage::StorageError> for Failure {
    fn from(e: almanac::storage::StorageError) -> Self {
        Failure::from(almanac::Error::from(e))
    }
}

/// An I/O failure on an input (files, standard input): exit 1.
impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::other(e.to_string())
    }
}
