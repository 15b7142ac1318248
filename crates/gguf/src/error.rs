//! Errors of the GGUF reader and writer. Each says what is wrong and, for malformed files,
//! at which byte offset.

use std::fmt;
use std::path::PathBuf;

use crate::value::ValueType;

/// Everything that can go wrong reading or writing a GGUF file.
#[derive(Debug)]
pub enum GgufError {
    /// The file could not be opened, mapped or written.
    Io {
        /// The file involved (empty when writing to an arbitrary stream).
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The bytes are not a valid GGUF file.
    Malformed {
        /// Byte offset in the file where the problem was found.
        offset: u64,
        /// What is wrong.
        message: String,
    },
    /// A metadata key the caller asked for is absent.
    MissingKey {
        /// The key.
        key: String,
    },
    /// A metadata key holds a value of another type than the caller asked for.
    WrongType {
        /// The key.
        key: String,
        /// The type the caller asked for.
        expected: String,
        /// The type found in the file.
        found: ValueType,
    },
    /// A tensor the caller asked for is absent.
    MissingTensor {
        /// The tensor name.
        name: String,
    },
    /// The writer was given inconsistent input (duplicate name, wrong data size, …).
    InvalidInput {
        /// What is wrong.
        message: String,
    },
}

impl GgufError {
    pub(crate) fn malformed(offset: u64, message: impl Into<String>) -> Self {
        GgufError::Malformed {
            offset,
            message: message.into(),
        }
    }
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgufError::Io { path, source } => {
                if path.as_os_str().is_empty() {
                    write!(f, "{source}")
                } else {
                    write!(f, "{}: {source}", path.display())
                }
            }
            GgufError::Malformed { offset, message } => {
                write!(f, "malformed GGUF at byte {offset}: {message}")
            }
            GgufError::MissingKey { key } => write!(f, "metadata key '{key}' is missing"),
            GgufError::WrongType {
                key,
                expected,
                found,
            } => write!(
                f,
                "metadata key '{key}' has type {found}, expected {expected}"
            ),
            GgufError::MissingTensor { name } => write!(f, "tensor '{name}' is missing"),
            GgufError::InvalidInput { message } => write!(f, "{message}"),
        }
    }
}

impl std::error::Error for GgufError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GgufError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
