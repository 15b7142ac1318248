//! The one error type every subcommand returns: a message for the user, printed as
//! `error: …` with a non-zero exit status.

use std::fmt;

/// A user-facing error: what went wrong, in one line.
#[derive(Debug)]
pub struct CliError(pub String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl CliError {
    /// Builds an error from anything printable.
    pub fn msg(m: impl fmt::Display) -> Self {
        CliError(m.to_string())
    }
}

impl<E: std::error::Error> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError(e.to_string())
    }
}
