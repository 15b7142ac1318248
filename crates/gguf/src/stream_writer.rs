//! [`GgufStreamWriter`]: writes a GGUF file whose tensors are produced one after another,
//! without ever holding them all in memory.
//!
//! [`crate::GgufWriter`] keeps every tensor until the file is written, which is right for
//! small files and for copying views of another file. A generator of multi-gigabyte models
//! (`grist synth`) instead declares every tensor's name, type and shape up front — that is all
//! the header needs, since each offset is the sum of the padded sizes before it — then streams
//! the bytes of each tensor, in declaration order, in as many pieces as it likes.
//!
//! The layout written is the same as [`crate::GgufWriter`]'s (and llama.cpp's):
//! ```text
//! header | metadata | tensor infos | zero padding to the alignment
//! tensor 0 bytes | zero padding to the alignment | tensor 1 bytes | padding | ...
//! ```

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::GgufError;
use crate::reader::{DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_DEPTH, MAX_DIMS};
use crate::value::Value;
use crate::writer::{padding, CountingWriter};
use crate::GgmlType;

/// The metadata key holding the alignment of the data section and of every tensor.
const ALIGNMENT_KEY: &str = "general.alignment";

/// A tensor declared before its data is written: name, type and shape (ggml order:
/// `dims[0]` is the row length).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorDecl {
    /// Tensor name, unique in the file.
    pub name: String,
    /// Storage type.
    pub ty: GgmlType,
    /// Shape, row length first (1 to [`MAX_DIMS`] dimensions).
    pub dims: Vec<u64>,
}

impl TensorDecl {
    /// A declaration of tensor `name` of type `ty` and shape `dims`.
    pub fn new(name: impl Into<String>, ty: GgmlType, dims: &[u64]) -> Self {
        TensorDecl {
            name: name.into(),
            ty,
            dims: dims.to_vec(),
        }
    }
}

fn invalid(message: impl Into<String>) -> GgufError {
    GgufError::InvalidInput {
        message: message.into(),
    }
}

/// Writes a GGUF v3 file: the header at construction, then tensor data streamed in the
/// declared order with [`GgufStreamWriter::write_data`], then [`GgufStreamWriter::finish`].
///
/// ```
/// use grist_gguf::{GgmlType, GgufFile, GgufStreamWriter, TensorDecl, Value};
/// let meta = vec![("general.architecture".to_string(), Value::from("llama"))];
/// let decls = vec![TensorDecl::new("a", GgmlType::F32, &[2, 3])];
/// let mut w = GgufStreamWriter::new(Vec::new(), &meta, decls)?;
/// w.write_data(&[0u8; 8])?; // the first row of `a`
/// w.write_data(&[1u8; 16])?; // the other two rows
/// let (bytes, _size) = w.finish()?;
/// let file = GgufFile::from_bytes(bytes)?;
/// assert_eq!(file.tensor("a").unwrap().data[8..], [1u8; 16]);
/// # Ok::<(), grist_gguf::GgufError>(())
/// ```
pub struct GgufStreamWriter<W: Write> {
    out: W,
    /// The file being written, for error messages (empty for other streams).
    path: PathBuf,
    alignment: u64,
    /// Declared tensors with their data sizes in bytes.
    tensors: Vec<(TensorDecl, u64)>,
    /// Index of the tensor whose bytes are being written.
    current: usize,
    /// Bytes of the current tensor written so far.
    current_written: u64,
    /// Bytes written to `out` so far.
    written: u64,
}

impl<W: Write> std::fmt::Debug for GgufStreamWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufStreamWriter")
            .field("path", &self.path)
            .field("n_tensors", &self.tensors.len())
            .field("current", &self.current)
            .field("written", &self.written)
            .finish()
    }
}

impl GgufStreamWriter<BufWriter<File>> {
    /// Creates (or truncates) `path` and writes the header; see [`GgufStreamWriter::new`].
    pub fn create(
        path: impl AsRef<Path>,
        metadata: &[(String, Value)],
        tensors: Vec<TensorDecl>,
    ) -> Result<Self, GgufError> {
        let path = path.as_ref();
        let file = File::create(path).map_err(|source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let out = BufWriter::with_capacity(1 << 20, file);
        Self::with_path(out, path.to_path_buf(), metadata, tensors)
    }

    /// Completes the file like [`GgufStreamWriter::finish`], then flushes it to disk.
    /// Returns the file size.
    pub fn finish_file(self) -> Result<u64, GgufError> {
        let path = self.path.clone();
        let io = |source| GgufError::Io {
            path: path.clone(),
            source,
        };
        let (out, size) = self.finish()?;
        out.into_inner()
            .map_err(|e| io(e.into_error()))?
            .sync_all()
            .map_err(io)?;
        Ok(size)
    }
}

impl<W: Write> GgufStreamWriter<W> {
    /// Validates `metadata` and `tensors` as strictly as [`crate::GgufWriter`] does (unique
    /// keys and names, array depth, `general.alignment` a `u32` power of two, 1 to
    /// [`MAX_DIMS`] dimensions, row lengths whole blocks) and writes the header, metadata and
    /// tensor infos to `out`.
    pub fn new(
        out: W,
        metadata: &[(String, Value)],
        tensors: Vec<TensorDecl>,
    ) -> Result<Self, GgufError> {
        Self::with_path(out, PathBuf::new(), metadata, tensors)
    }

    fn with_path(
        out: W,
        path: PathBuf,
        metadata: &[(String, Value)],
        tensors: Vec<TensorDecl>,
    ) -> Result<Self, GgufError> {
        let alignment = validate_metadata(metadata)?;
        let mut names = HashSet::new();
        let mut sized = Vec::with_capacity(tensors.len());
        for t in tensors {
            if !names.insert(t.name.clone()) {
                return Err(invalid(format!("duplicate tensor name '{}'", t.name)));
            }
            let size = tensor_size(&t)?;
            sized.push((t, size));
        }
        let mut w = GgufStreamWriter {
            out,
            path,
            alignment,
            tensors: sized,
            current: 0,
            current_written: 0,
            written: 0,
        };
        w.write_header(metadata).map_err(|e| w.io(e))?;
        w.skip_empty_tensors().map_err(|e| w.io(e))?;
        Ok(w)
    }

    /// The alignment of the data section and of every tensor.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// The name of the tensor the next bytes belong to, or `None` when every declared tensor
    /// is complete.
    pub fn current_tensor(&self) -> Option<&str> {
        self.tensors.get(self.current).map(|(t, _)| t.name.as_str())
    }

    /// Appends `bytes` to the current tensor. A tensor is complete once it has received
    /// exactly its size in bytes; the writer then pads and moves to the next one. `bytes`
    /// may not run past the end of the current tensor.
    pub fn write_data(&mut self, bytes: &[u8]) -> Result<(), GgufError> {
        let Some((decl, size)) = self.tensors.get(self.current) else {
            return Err(invalid(format!(
                "{} bytes written after the last declared tensor",
                bytes.len()
            )));
        };
        let left = size - self.current_written;
        if bytes.len() as u64 > left {
            return Err(invalid(format!(
                "tensor '{}' ({}, shape {:?}) needs {size} bytes, got at least {}",
                decl.name,
                decl.ty,
                decl.dims,
                self.current_written + bytes.len() as u64
            )));
        }
        self.out.write_all(bytes).map_err(|e| self.io(e))?;
        self.written += bytes.len() as u64;
        self.current_written += bytes.len() as u64;
        self.skip_empty_tensors().map_err(|e| self.io(e))
    }

    /// Checks that every declared tensor is complete, flushes, and returns the output stream
    /// and the number of bytes written.
    pub fn finish(mut self) -> Result<(W, u64), GgufError> {
        if let Some((decl, size)) = self.tensors.get(self.current) {
            return Err(invalid(format!(
                "tensor '{}' is incomplete: {} of {size} bytes written",
                decl.name, self.current_written
            )));
        }
        self.out.flush().map_err(|e| self.io(e))?;
        Ok((self.out, self.written))
    }

    fn io(&self, source: std::io::Error) -> GgufError {
        GgufError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// While the current tensor is complete: pad it and move to the next one.
    fn skip_empty_tensors(&mut self) -> std::io::Result<()> {
        while let Some(&(_, size)) = self.tensors.get(self.current) {
            if self.current_written < size {
                break;
            }
            let mut w = CountingWriter {
                inner: &mut self.out,
                written: 0,
            };
            w.zeros(padding(size, self.alignment))?;
            self.written += w.written;
            self.current += 1;
            self.current_written = 0;
        }
        Ok(())
    }

    fn write_header(&mut self, metadata: &[(String, Value)]) -> std::io::Result<()> {
        let mut w = CountingWriter {
            inner: &mut self.out,
            written: 0,
        };
        w.write_all(&GGUF_MAGIC)?;
        w.u32(3)?;
        w.u64(self.tensors.len() as u64)?;
        w.u64(metadata.len() as u64)?;
        for (key, value) in metadata {
            w.string(key)?;
            w.u32(value.value_type() as u32)?;
            w.value(value)?;
        }
        // Offsets: each tensor starts where the previous one's padded bytes end.
        let mut offset = 0u64;
        for (t, size) in &self.tensors {
            w.string(&t.name)?;
            w.u32(t.dims.len() as u32)?;
            for &d in &t.dims {
                w.u64(d)?;
            }
            w.u32(t.ty.id())?;
            w.u64(offset)?;
            offset += size + padding(*size, self.alignment);
        }
        w.zeros(padding(w.written, self.alignment))?;
        self.written = w.written;
        Ok(())
    }
}

/// Checks keys for duplicates, arrays for depth and `general.alignment` for type; returns the
/// alignment.
fn validate_metadata(metadata: &[(String, Value)]) -> Result<u64, GgufError> {
    let mut keys = HashSet::new();
    let mut alignment = DEFAULT_ALIGNMENT;
    for (key, value) in metadata {
        if !keys.insert(key.as_str()) {
            return Err(invalid(format!("duplicate metadata key '{key}'")));
        }
        if let Value::Array(a) = value {
            if a.depth() > MAX_ARRAY_DEPTH {
                return Err(invalid(format!(
                    "metadata key '{key}': arrays nested {} deep (at most {MAX_ARRAY_DEPTH})",
                    a.depth()
                )));
            }
        }
        if key == ALIGNMENT_KEY {
            match value {
                Value::U32(a) if a.is_power_of_two() => alignment = *a as u64,
                v => {
                    return Err(invalid(format!(
                        "{ALIGNMENT_KEY} must be a u32 power of two, got {} {v}",
                        v.value_type()
                    )))
                }
            }
        }
    }
    Ok(alignment)
}

/// The data size in bytes of a declared tensor, checking its shape.
fn tensor_size(t: &TensorDecl) -> Result<u64, GgufError> {
    let name = &t.name;
    let dims = &t.dims;
    if dims.is_empty() || dims.len() > MAX_DIMS {
        return Err(invalid(format!(
            "tensor '{name}' has {} dimensions (allowed: 1 to {MAX_DIMS})",
            dims.len()
        )));
    }
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&p| p <= i64::MAX as u64)
        .ok_or_else(|| {
            invalid(format!(
                "tensor '{name}' shape {dims:?} has more than 2^63 elements"
            ))
        })?;
    if !dims[0].is_multiple_of(t.ty.block_elems() as u64) {
        return Err(invalid(format!(
            "tensor '{name}' row length {} is not a multiple of the {} block size {}",
            dims[0],
            t.ty,
            t.ty.block_elems()
        )));
    }
    t.ty.bytes_for(n_elements).ok_or_else(|| {
        invalid(format!(
            "tensor '{name}' ({}, shape {dims:?}) is too large",
            t.ty
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GgufFile, GgufWriter};

    fn meta() -> Vec<(String, Value)> {
        vec![
            ("general.architecture".to_string(), Value::from("llama")),
            ("general.alignment".to_string(), Value::U32(64)),
            ("llama.block_count".to_string(), Value::U32(2)),
        ]
    }

    /// Streaming in odd pieces gives the same bytes as the in-memory writer.
    #[test]
    fn matches_the_in_memory_writer() {
        let a: Vec<u8> = (0..12).collect();
        let b: Vec<u8> = (0..10).map(|i| 100 + i).collect();
        let q: Vec<u8> = (0..68).map(|i| i as u8 ^ 0x5a).collect();
        let mut mem = GgufWriter::new();
        for (k, v) in meta() {
            mem.add(&k, v).unwrap();
        }
        mem.add_tensor("a", GgmlType::F32, &[3], a.clone()).unwrap();
        mem.add_tensor("b", GgmlType::F16, &[5], b.clone()).unwrap();
        mem.add_tensor("q", GgmlType::Q8_0, &[32, 2], q.clone())
            .unwrap();
        let expected = mem.to_bytes().unwrap();

        let decls = vec![
            TensorDecl::new("a", GgmlType::F32, &[3]),
            TensorDecl::new("b", GgmlType::F16, &[5]),
            TensorDecl::new("q", GgmlType::Q8_0, &[32, 2]),
        ];
        let mut w = GgufStreamWriter::new(Vec::new(), &meta(), decls).unwrap();
        assert_eq!(w.alignment(), 64);
        assert_eq!(w.current_tensor(), Some("a"));
        w.write_data(&a[..5]).unwrap();
        w.write_data(&a[5..]).unwrap();
        assert_eq!(w.current_tensor(), Some("b"));
        w.write_data(&b).unwrap();
        w.write_data(&q[..34]).unwrap();
        w.write_data(&q[34..]).unwrap();
        assert_eq!(w.current_tensor(), None);
        let (bytes, n) = w.finish().unwrap();
        assert_eq!(n as usize, bytes.len());
        assert_eq!(bytes, expected);
        let f = GgufFile::from_bytes(bytes).unwrap();
        assert_eq!(f.tensor("q").unwrap().data, &q[..]);
    }

    #[test]
    fn rejects_bad_input() {
        let t = |n: &str| TensorDecl::new(n, GgmlType::F32, &[2]);
        let e = GgufStreamWriter::new(Vec::new(), &meta(), vec![t("x"), t("x")]);
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("duplicate tensor name 'x'"));
        let mut dup = meta();
        dup.push(("llama.block_count".into(), Value::U32(3)));
        let e = GgufStreamWriter::new(Vec::new(), &dup, vec![]);
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("duplicate metadata key"));
        let bad_align = vec![("general.alignment".to_string(), Value::U32(48))];
        assert!(GgufStreamWriter::new(Vec::new(), &bad_align, vec![]).is_err());
        let q = TensorDecl::new("q", GgmlType::Q8_0, &[16]);
        let e = GgufStreamWriter::new(Vec::new(), &meta(), vec![q]);
        assert!(e.unwrap_err().to_string().contains("block size"));
        let e = GgufStreamWriter::new(
            Vec::new(),
            &meta(),
            vec![TensorDecl::new("e", GgmlType::F32, &[])],
        );
        assert!(e.is_err());

        let mut w = GgufStreamWriter::new(Vec::new(), &meta(), vec![t("x")]).unwrap();
        let e = w.write_data(&[0u8; 12]).unwrap_err();
        assert!(e.to_string().contains("needs 8 bytes"), "{e}");
        w.write_data(&[0u8; 4]).unwrap();
        let e = GgufStreamWriter::finish(w).unwrap_err();
        assert!(e.to_string().contains("incomplete: 4 of 8"), "{e}");

        let mut w = GgufStreamWriter::new(Vec::new(), &meta(), vec![t("x")]).unwrap();
        w.write_data(&[0u8; 8]).unwrap();
        assert!(w
            .write_data(&[0u8; 1])
            .unwrap_err()
            .to_string()
            .contains("after the last"));
    }
}
