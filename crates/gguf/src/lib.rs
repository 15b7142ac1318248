//! grist-gguf: reads and writes GGUF, the file format of llama.cpp models.
//!
//! A GGUF file is a header (magic, version, counts), typed key/value metadata, a table of
//! tensor infos (name, shape, ggml type, offset), then an aligned data section holding the
//! tensors' bytes. [`GgufFile::open`] memory-maps the file, validates every count, length and
//! offset against the file size, and hands out tensors as zero-copy byte views.
//!
//! ```no_run
//! let file = grist_gguf::GgufFile::open("model.gguf")?;
//! let arch = file.get_str("general.architecture")?;
//! let embd = file.require_tensor("token_embd.weight")?;
//! println!("{arch}: token_embd is {} {:?}", embd.ty(), embd.dims());
//! # Ok::<(), grist_gguf::GgufError>(())
//! ```

#![warn(missing_docs)]

mod error;
mod file;
mod ggml_type;
mod reader;
mod stream_writer;
mod value;
mod writer;

pub use error::GgufError;
pub use file::{GgufFile, TensorView};
pub use ggml_type::{GgmlType, GRIST_PRIVATE_IDS};
pub use reader::{
    parse_header, Header, TensorInfo, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_DEPTH, MAX_DIMS,
};
pub use stream_writer::{GgufStreamWriter, TensorDecl};
pub use value::{Array, FromArray, Value, ValueType};
pub use writer::GgufWriter;
