//! [`GgufFile`]: an opened (memory-mapped) GGUF file with typed metadata accessors and
//! zero-copy tensor views.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::GgufError;
use crate::reader::{parse_header, Header, TensorInfo};
use crate::value::{FromArray, Value, ValueType};
use crate::GgmlType;

/// Where the file's bytes live.
enum Backing {
    /// The file mapped read-only into memory: tensors are views of the page cache.
    Mapped(Mmap),
    /// Bytes owned in memory (tests, fuzzing, files built on the fly).
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mapped(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// An opened GGUF file: parsed header plus the bytes of the tensors.
pub struct GgufFile {
    backing: Backing,
    header: Header,
    path: PathBuf,
}

/// A tensor's description and its bytes, borrowed from the file without copying.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    /// The tensor's info (name, shape, type, offset).
    pub info: &'a TensorInfo,
    /// The tensor's raw bytes in its ggml type's layout.
    pub data: &'a [u8],
}

impl<'a> TensorView<'a> {
    /// Tensor name.
    pub fn name(&self) -> &'a str {
        &self.info.name
    }
    /// Element type.
    pub fn ty(&self) -> GgmlType {
        self.info.ty
    }
    /// Shape, `dims[0]` = row length.
    pub fn dims(&self) -> &'a [u64] {
        &self.info.dims
    }
}

impl GgufFile {
    /// Opens and memory-maps `path`, then parses and validates its header.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| GgufError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let backing = if len == 0 {
            // mmap of an empty file fails on some systems; an empty buffer parses to a clean
            // "unexpected end of file" error instead.
            Backing::Owned(Vec::new())
        } else {
            // SAFETY: the map is read-only. Its contents can change only if another process
            // modifies the file while we hold it (the same caveat as every mmap-based model
            // loader); grist never writes to a file it has open for reading.
            let map = unsafe { Mmap::map(&file) }.map_err(io)?;
            Backing::Mapped(map)
        };
        let header = parse_header(backing.bytes())?;
        Ok(GgufFile {
            backing,
            header,
            path,
        })
    }

    /// Parses a GGUF file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        let header = parse_header(&bytes)?;
        Ok(GgufFile {
            backing: Backing::Owned(bytes),
            header,
            path: PathBuf::new(),
        })
    }

    /// The path the file was opened from (empty for in-memory files).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All bytes of the file.
    pub fn bytes(&self) -> &[u8] {
        self.backing.bytes()
    }

    /// Size of the file in bytes.
    pub fn file_size(&self) -> u64 {
        self.bytes().len() as u64
    }

    /// GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// Alignment of the data section and of every tensor's offset.
    pub fn alignment(&self) -> u64 {
        self.header.alignment
    }

    /// Absolute file offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.header.data_offset
    }

    /// All metadata in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.header.metadata
    }

    /// All tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    /// The value stored under `key`, if any.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.header
            .key_index
            .get(key)
            .map(|&i| &self.header.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_string(),
        })
    }

    fn wrong(key: &str, expected: &str, v: &Value) -> GgufError {
        GgufError::WrongType {
            key: key.to_string(),
            expected: expected.to_string(),
            found: v.value_type(),
        }
    }

    /// `key` as a `u32` (any integer type whose value fits is accepted).
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        let v = self.require(key)?;
        v.as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| Self::wrong(key, "u32", v))
    }

    /// `key` as a `u64` (any non-negative integer is accepted).
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.require(key)?;
        v.as_u64().ok_or_else(|| Self::wrong(key, "u64", v))
    }

    /// `key` as an `i64` (any integer that fits is accepted).
    pub fn get_i64(&self, key: &str) -> Result<i64, GgufError> {
        let v = self.require(key)?;
        v.as_i64().ok_or_else(|| Self::wrong(key, "i64", v))
    }

    /// `key` as an `f32` (f32 or f64 values are accepted).
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        let v = self.require(key)?;
        v.as_f64()
            .map(|x| x as f32)
            .ok_or_else(|| Self::wrong(key, "f32", v))
    }

    /// `key` as a `bool`.
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        match self.require(key)? {
            Value::Bool(b) => Ok(*b),
            v => Err(Self::wrong(key, "bool", v)),
        }
    }

    /// `key` as a string.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| Self::wrong(key, "string", v))
    }

    /// `key` as an array of `T` (see [`FromArray`] for the accepted conversions).
    pub fn get_array<T: FromArray>(&self, key: &str) -> Result<Vec<T>, GgufError> {
        let v = self.require(key)?;
        let expected = || format!("array of {}", T::NAME);
        let a = v
            .as_array()
            .ok_or_else(|| Self::wrong(key, &expected(), v))?;
        T::from_array(a).ok_or_else(|| GgufError::WrongType {
            key: key.to_string(),
            expected: expected(),
            found: if a.element_type() == ValueType::Array {
                ValueType::Array
            } else {
                // Report the element type: "array of u32" asked, elements are strings.
                a.element_type()
            },
        })
    }

    /// `key` as an array of string slices, without copying the strings.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        let v = self.require(key)?;
        match v.as_array() {
            Some(crate::value::Array::String(s)) => Ok(s.iter().map(|x| x.as_str()).collect()),
            _ => Err(Self::wrong(key, "array of string", v)),
        }
    }

    /// The info of the tensor called `name`, if any.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.header
            .tensor_index
            .get(name)
            .map(|&i| &self.header.tensors[i])
    }

    /// The bytes of the tensor described by `info` (an info of this file).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        // The parser checked data_offset + offset + n_bytes <= file size without overflow.
        let start = (self.header.data_offset + info.offset) as usize;
        &self.bytes()[start..start + info.n_bytes as usize]
    }

    /// The tensor called `name`, if any, as a zero-copy view.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        let info = self.tensor_info(name)?;
        Some(TensorView {
            info,
            data: self.tensor_data(info),
        })
    }

    /// Like [`GgufFile::tensor`], but a missing tensor is an error naming it.
    pub fn require_tensor(&self, name: &str) -> Result<TensorView<'_>, GgufError> {
        self.tensor(name).ok_or_else(|| GgufError::MissingTensor {
            name: name.to_string(),
        })
    }
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.header.version)
            .field("n_kv", &self.header.metadata.len())
            .field("n_tensors", &self.header.tensors.len())
            .finish()
    }
}
