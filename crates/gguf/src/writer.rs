//! [`GgufWriter`]: builds a GGUF v3 file (metadata of every type, aligned tensors) and writes
//! it to any [`Write`] or to a path.
//!
//! The writer validates its input as strictly as the reader validates files, so everything it
//! writes reads back: keys and tensor names are unique, nested arrays are no deeper than
//! [`MAX_ARRAY_DEPTH`], `general.alignment` is a `u32` power of two, and each tensor's bytes
//! have exactly the size its type and shape require.
//!
//! Layout written (the same as llama.cpp's `gguf_write` and gguf-py):
//! ```text
//! header | metadata | tensor infos | zero padding to the alignment
//! tensor 0 bytes | zero padding to the alignment | tensor 1 bytes | padding | ...
//! ```
//! Every tensor's offset is the sum of the padded sizes of the tensors before it, which is
//! what llama.cpp requires when it reads the file.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::GgufError;
use crate::reader::{DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_DEPTH, MAX_DIMS};
use crate::value::{Array, Value};
use crate::GgmlType;

/// The metadata key holding the alignment of the data section and of every tensor.
const ALIGNMENT_KEY: &str = "general.alignment";

/// One tensor waiting to be written.
struct PendingTensor<'a> {
    name: String,
    ty: GgmlType,
    dims: Vec<u64>,
    data: Cow<'a, [u8]>,
}

/// Builds a GGUF file in memory, then writes it out.
///
/// Tensor bytes may be borrowed (`&[u8]`, e.g. views of another [`crate::GgufFile`]) or owned
/// (`Vec<u8>`); nothing is copied until the file is written.
///
/// ```
/// use grist_gguf::{GgmlType, GgufFile, GgufWriter};
/// let mut w = GgufWriter::new();
/// w.add("general.architecture", "llama")?;
/// w.add("llama.block_count", 2u32)?;
/// w.add_tensor("output_norm.weight", GgmlType::F32, &[4], vec![0u8; 16])?;
/// let file = GgufFile::from_bytes(w.to_bytes()?)?;
/// assert_eq!(file.get_u32("llama.block_count")?, 2);
/// # Ok::<(), grist_gguf::GgufError>(())
/// ```
pub struct GgufWriter<'a> {
    version: u32,
    alignment: u64,
    metadata: Vec<(String, Value)>,
    keys: HashSet<String>,
    tensors: Vec<PendingTensor<'a>>,
    tensor_names: HashSet<String>,
}

impl Default for GgufWriter<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for GgufWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufWriter")
            .field("version", &self.version)
            .field("alignment", &self.alignment)
            .field("n_kv", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .finish()
    }
}

fn invalid(message: impl Into<String>) -> GgufError {
    GgufError::InvalidInput {
        message: message.into(),
    }
}

/// Bytes needed to pad `n` up to a multiple of `align` (a power of two).
pub(crate) fn padding(n: u64, align: u64) -> u64 {
    n.next_multiple_of(align) - n
}

impl<'a> GgufWriter<'a> {
    /// An empty GGUF v3 file with the default alignment (32).
    pub fn new() -> Self {
        GgufWriter {
            version: 3,
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            keys: HashSet::new(),
            tensors: Vec::new(),
            tensor_names: HashSet::new(),
        }
    }

    /// Sets the format version written in the header: 3 (the default) or 2. The two share
    /// one little-endian layout; version 2 exists to test readers of older files.
    pub fn set_version(&mut self, version: u32) -> Result<&mut Self, GgufError> {
        if version != 2 && version != 3 {
            return Err(invalid(format!(
                "cannot write GGUF version {version} (supported: 2, 3)"
            )));
        }
        self.version = version;
        Ok(self)
    }

    /// Sets the alignment of the data section and tensors by adding the `general.alignment`
    /// metadata key (a `u32` power of two). Equivalent to `add("general.alignment", a)`.
    pub fn set_alignment(&mut self, alignment: u32) -> Result<&mut Self, GgufError> {
        self.add(ALIGNMENT_KEY, alignment)
    }

    /// The alignment tensors will be written with.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Adds the metadata entry `key = value`. Keys are written in the order they are added.
    ///
    /// Errors on a duplicate key, arrays nested deeper than [`MAX_ARRAY_DEPTH`], and a
    /// `general.alignment` that is not a `u32` power of two.
    pub fn add(&mut self, key: &str, value: impl Into<Value>) -> Result<&mut Self, GgufError> {
        let value = value.into();
        if self.keys.contains(key) {
            return Err(invalid(format!("duplicate metadata key '{key}'")));
        }
        if let Value::Array(a) = &value {
            if a.depth() > MAX_ARRAY_DEPTH {
                return Err(invalid(format!(
                    "metadata key '{key}': arrays nested {} deep (at most {MAX_ARRAY_DEPTH})",
                    a.depth()
                )));
            }
        }
        if key == ALIGNMENT_KEY {
            match value {
                Value::U32(a) if a.is_power_of_two() => self.alignment = a as u64,
                ref v => {
                    return Err(invalid(format!(
                        "{ALIGNMENT_KEY} must be a u32 power of two, got {} {v}",
                        v.value_type()
                    )))
                }
            }
        }
        self.keys.insert(key.to_string());
        self.metadata.push((key.to_string(), value));
        Ok(self)
    }

    /// Adds a tensor called `name` of type `ty` and shape `dims` (ggml order: `dims[0]` is
    /// the row length) whose raw bytes, in the type's block layout, are `data`.
    ///
    /// Errors on a duplicate name, 0 or more than [`MAX_DIMS`] dimensions, a row length that
    /// is not a multiple of the type's block size, and `data` of the wrong length.
    pub fn add_tensor(
        &mut self,
        name: &str,
        ty: GgmlType,
        dims: &[u64],
        data: impl Into<Cow<'a, [u8]>>,
    ) -> Result<&mut Self, GgufError> {
        let data = data.into();
        if self.tensor_names.contains(name) {
            return Err(invalid(format!("duplicate tensor name '{name}'")));
        }
        if dims.is_empty() || dims.len() > MAX_DIMS {
            return Err(invalid(format!(
                "tensor '{name}' has {} dimensions (allowed: 1 to {MAX_DIMS})",
                dims.len()
            )));
        }
        let n_elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d.max(1)))
            .filter(|&p| p <= i64::MAX as u64)
            .map(|_| dims.iter().product::<u64>())
            .ok_or_else(|| {
                invalid(format!(
                    "tensor '{name}' shape {dims:?} has more than 2^63 elements"
                ))
            })?;
        if !dims[0].is_multiple_of(ty.block_elems() as u64) {
            return Err(invalid(format!(
                "tensor '{name}' row length {} is not a multiple of the {ty} block size {}",
                dims[0],
                ty.block_elems()
            )));
        }
        let expected = ty.bytes_for(n_elements);
        if expected != Some(data.len() as u64) {
            return Err(invalid(format!(
                "tensor '{name}' ({ty}, shape {dims:?}) needs {} bytes, got {}",
                expected.map_or("an overflowing number of".to_string(), |n| n.to_string()),
                data.len()
            )));
        }
        self.tensor_names.insert(name.to_string());
        self.tensors.push(PendingTensor {
            name: name.to_string(),
            ty,
            dims: dims.to_vec(),
            data,
        });
        Ok(self)
    }

    /// Writes the file to `out` and returns the number of bytes written.
    ///
    /// `out` is written sequentially in many small pieces: wrap files and sockets in a
    /// [`BufWriter`] (as [`GgufWriter::write_to_path`] does).
    pub fn write_to(&self, mut out: impl Write) -> Result<u64, GgufError> {
        let io = |source| GgufError::Io {
            path: Default::default(),
            source,
        };
        let mut w = CountingWriter {
            inner: &mut out,
            written: 0,
        };
        self.write_inner(&mut w).map_err(io)?;
        w.flush().map_err(io)?;
        Ok(w.written)
    }

    /// Writes the file to `path` (created or truncated) and returns its size.
    pub fn write_to_path(&self, path: impl AsRef<Path>) -> Result<u64, GgufError> {
        let path = path.as_ref();
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::create(path).map_err(io)?;
        let mut out = BufWriter::new(file);
        let n = match self.write_to(&mut out) {
            Ok(n) => n,
            Err(GgufError::Io { source, .. }) => return Err(io(source)),
            Err(e) => return Err(e),
        };
        out.into_inner()
            .map_err(|e| io(e.into_error()))?
            .sync_all()
            .map_err(io)?;
        Ok(n)
    }

    /// The whole file as bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, GgufError> {
        let mut v = Vec::new();
        self.write_to(&mut v)?;
        Ok(v)
    }

    fn write_inner(&self, w: &mut CountingWriter<'_>) -> std::io::Result<()> {
        w.write_all(&GGUF_MAGIC)?;
        w.u32(self.version)?;
        w.u64(self.tensors.len() as u64)?;
        w.u64(self.metadata.len() as u64)?;
        for (key, value) in &self.metadata {
            w.string(key)?;
            w.u32(value.value_type() as u32)?;
            w.value(value)?;
        }
        // Offsets: each tensor starts where the previous one's padded bytes end.
        let mut offset = 0u64;
        for t in &self.tensors {
            w.string(&t.name)?;
            w.u32(t.dims.len() as u32)?;
            for &d in &t.dims {
                w.u64(d)?;
            }
            w.u32(t.ty.id())?;
            w.u64(offset)?;
            let n = t.data.len() as u64;
            offset += n + padding(n, self.alignment);
        }
        w.zeros(padding(w.written, self.alignment))?;
        for t in &self.tensors {
            w.write_all(&t.data)?;
            w.zeros(padding(t.data.len() as u64, self.alignment))?;
        }
        Ok(())
    }
}

/// A writer that counts bytes (to compute padding) and encodes GGUF primitives.
pub(crate) struct CountingWriter<'w> {
    pub(crate) inner: &'w mut dyn Write,
    pub(crate) written: u64,
}

impl Write for CountingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl CountingWriter<'_> {
    pub(crate) fn u32(&mut self, v: u32) -> std::io::Result<()> {
        self.write_all(&v.to_le_bytes())
    }
    pub(crate) fn u64(&mut self, v: u64) -> std::io::Result<()> {
        self.write_all(&v.to_le_bytes())
    }
    pub(crate) fn string(&mut self, s: &str) -> std::io::Result<()> {
        self.u64(s.len() as u64)?;
        self.write_all(s.as_bytes())
    }
    pub(crate) fn zeros(&mut self, n: u64) -> std::io::Result<()> {
        const ZEROS: [u8; 64] = [0; 64];
        let mut left = n;
        while left > 0 {
            let k = left.min(ZEROS.len() as u64) as usize;
            self.write_all(&ZEROS[..k])?;
            left -= k as u64;
        }
        Ok(())
    }

    pub(crate) fn value(&mut self, v: &Value) -> std::io::Result<()> {
        match v {
            Value::U8(x) => self.write_all(&[*x]),
            Value::I8(x) => self.write_all(&x.to_le_bytes()),
            Value::U16(x) => self.write_all(&x.to_le_bytes()),
            Value::I16(x) => self.write_all(&x.to_le_bytes()),
            Value::U32(x) => self.write_all(&x.to_le_bytes()),
            Value::I32(x) => self.write_all(&x.to_le_bytes()),
            Value::F32(x) => self.write_all(&x.to_le_bytes()),
            Value::Bool(x) => self.write_all(&[*x as u8]),
            Value::String(s) => self.string(s),
            Value::Array(a) => self.array(a),
            Value::U64(x) => self.write_all(&x.to_le_bytes()),
            Value::I64(x) => self.write_all(&x.to_le_bytes()),
            Value::F64(x) => self.write_all(&x.to_le_bytes()),
        }
    }

    fn array(&mut self, a: &Array) -> std::io::Result<()> {
        self.u32(a.element_type() as u32)?;
        self.u64(a.len() as u64)?;
        macro_rules! le {
            ($v:expr) => {{
                for x in $v {
                    self.write_all(&x.to_le_bytes())?;
                }
                Ok(())
            }};
        }
        match a {
            Array::U8(v) => self.write_all(v),
            Array::I8(v) => le!(v),
            Array::U16(v) => le!(v),
            Array::I16(v) => le!(v),
            Array::U32(v) => le!(v),
            Array::I32(v) => le!(v),
            Array::F32(v) => le!(v),
            Array::Bool(v) => {
                for &b in v {
                    self.write_all(&[b as u8])?;
                }
                Ok(())
            }
            Array::String(v) => {
                for s in v {
                    self.string(s)?;
                }
                Ok(())
            }
            Array::Array(v) => {
                for inner in v {
                    self.array(inner)?;
                }
                Ok(())
            }
            Array::U64(v) => le!(v),
            Array::I64(v) => le!(v),
            Array::F64(v) => le!(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GgufFile;

    #[test]
    fn rejects_bad_input() {
        let mut w = GgufWriter::new();
        w.add("a", 1u32).unwrap();
        assert!(w
            .add("a", 2u32)
            .unwrap_err()
            .to_string()
            .contains("duplicate"));
        assert!(w.set_alignment(48).is_err());
        assert!(w.add("general.alignment", 64u64).is_err());
        w.add_tensor("t", GgmlType::F32, &[2], vec![0u8; 8])
            .unwrap();
        let e = w.add_tensor("t", GgmlType::F32, &[2], vec![0u8; 8]);
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("duplicate tensor name 't'"));
        let e = w.add_tensor("u", GgmlType::Q8_0, &[32], vec![0u8; 33]);
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("needs 34 bytes, got 33"));
        let e = w.add_tensor("u", GgmlType::Q8_0, &[16], vec![0u8; 17]);
        assert!(e.unwrap_err().to_string().contains("block size"));
        assert!(w.add_tensor("u", GgmlType::F32, &[], vec![]).is_err());
        assert!(w
            .add_tensor("u", GgmlType::F32, &[1; 5], vec![0; 4])
            .is_err());
        let huge = [1 << 32, 1 << 32, 2];
        assert!(w.add_tensor("u", GgmlType::I8, &huge, vec![]).is_err());
        let mut deep = Array::U8(vec![1]);
        for _ in 0..MAX_ARRAY_DEPTH {
            deep = Array::Array(vec![deep]);
        }
        assert!(w.add("deep", deep).is_err());
    }

    #[test]
    fn tensors_are_aligned_and_contiguous() {
        let mut w = GgufWriter::new();
        w.set_alignment(64).unwrap();
        w.add_tensor("a", GgmlType::F32, &[3], vec![1u8; 12])
            .unwrap();
        w.add_tensor("b", GgmlType::F16, &[5], vec![2u8; 10])
            .unwrap();
        let bytes = w.to_bytes().unwrap();
        let f = GgufFile::from_bytes(bytes).unwrap();
        assert_eq!(f.alignment(), 64);
        assert_eq!(f.data_offset() % 64, 0);
        assert_eq!(f.tensors()[0].offset, 0);
        assert_eq!(f.tensors()[1].offset, 64);
        assert_eq!(f.file_size(), f.data_offset() + 128);
        assert_eq!(f.tensor("b").unwrap().data, &[2u8; 10]);
    }
}
