//! The GGUF parser: header, metadata, tensor infos, data section.
//!
//! File layout (all little-endian):
//! ```text
//! "GGUF" | version:u32 | n_tensors:u64 | n_kv:u64
//! n_kv × (key:string | type:u32 | value)
//! n_tensors × (name:string | n_dims:u32 | dims:n_dims×u64 | type:u32 | offset:u64)
//! padding to `general.alignment` (default 32)
//! data section: each tensor at data_start + offset (a multiple of the alignment)
//! ```
//! Hardening: every count and length read from the file is checked against the bytes that
//! remain *before* anything is allocated for it, all arithmetic on file-supplied numbers is
//! checked, and every tensor must lie inside the file, aligned. Parsing never panics.
//! Arrays of strings or arrays are walked once without allocating before they are parsed, so
//! a forged or truncated array costs nothing; see `docs/FUZZING.md` for the proof (tests and
//! fuzzing) and the exact allocation bound.

use std::collections::HashMap;

use crate::error::GgufError;
use crate::value::{Array, Value, ValueType};
use crate::GgmlType;

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section and of every tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Maximum number of dimensions of a ggml tensor.
pub const MAX_DIMS: usize = 4;
/// Deepest nesting of arrays inside arrays accepted (guards the recursion).
pub const MAX_ARRAY_DEPTH: usize = 8;

/// Description of one tensor, from the tensor-info table.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Shape in ggml order: `dims[0]` is the row length (contiguous), `dims[1]` the number of
    /// rows, and so on.
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Offset of the tensor's bytes from the start of the data section.
    pub offset: u64,
    /// Size of the tensor's bytes.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Number of values (product of the dims).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Length of one row (`dims[0]`).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows (product of `dims[1..]`).
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }
}

/// The parsed header region of a GGUF file: everything but the tensor bytes.
#[derive(Clone, Debug)]
pub struct Header {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    /// Alignment of the data section and tensors.
    pub alignment: u64,
    /// Absolute file offset where the data section starts.
    pub data_offset: u64,
    pub(crate) key_index: HashMap<String, usize>,
    pub(crate) tensor_index: HashMap<String, usize>,
}

/// A `Vec` for `n` items claimed by the file, pre-allocating no more than `remaining` bytes.
///
/// Counts are already bounded by the bytes left, but one item in memory can be larger than
/// its encoding (a `String` is 24 bytes, its empty encoding 8): capping the preallocation
/// keeps every allocation made from a file-supplied count no larger than the file itself.
/// The vector still grows if the items really are there.
fn bounded_vec<T>(n: usize, remaining: usize) -> Vec<T> {
    let cap = n.min(remaining / std::mem::size_of::<T>().max(1));
    Vec::with_capacity(cap)
}

/// A bounds-checked little-endian reader over the file's bytes.
#[derive(Clone)]
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn err(&self, message: impl Into<String>) -> GgufError {
        GgufError::malformed(self.pos as u64, message)
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "unexpected end of file reading {what}: need {n} bytes, {} left",
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, what: &str) -> Result<u8, GgufError> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, GgufError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Reads a count of items that each take at least `min_item_bytes` in the file, and
    /// rejects it unless that many items could fit in the bytes left.
    fn count(&mut self, what: &str, min_item_bytes: usize) -> Result<usize, GgufError> {
        let at = self.pos as u64;
        let n = self.u64(what)?;
        let fits = (self.remaining() / min_item_bytes.max(1)) as u64;
        if n > fits {
            return Err(GgufError::malformed(
                at,
                format!(
                    "{what} is {n}, but only {} bytes remain (at most {fits} items fit)",
                    self.remaining()
                ),
            ));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.count(&format!("length of {what}"), 1)?;
        let at = self.pos;
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_string()),
            Err(e) => Err(GgufError::malformed(
                (at + e.valid_up_to()) as u64,
                format!("{what} is not valid UTF-8: {e}"),
            )),
        }
    }

    /// [`Cursor::string`] for hot loops (vocabularies): names the string only on error.
    fn string_with(&mut self, what: impl Fn() -> String) -> Result<String, GgufError> {
        let before = self.pos;
        self.string("").or_else(|_| {
            self.pos = before;
            self.string(&what())
        })
    }

    /// Moves past a string without allocating; names it only on error.
    fn skip_string_with(&mut self, what: impl Fn() -> String) -> Result<(), GgufError> {
        let before = self.pos;
        let mut fast = || -> Result<(), GgufError> {
            let len = self.count("", 1)?;
            self.take(len, "").map(|_| ())
        };
        fast().or_else(|_| {
            self.pos = before;
            let what = what();
            let len = self.count(&format!("length of {what}"), 1)?;
            self.take(len, &what).map(|_| ())
        })
    }

    fn bool(&mut self, what: &str) -> Result<bool, GgufError> {
        let at = self.pos as u64;
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(GgufError::malformed(
                at,
                format!("{what}: bool byte is {b}, expected 0 or 1"),
            )),
        }
    }

    fn value_type(&mut self, what: &str) -> Result<ValueType, GgufError> {
        let at = self.pos as u64;
        let tag = self.u32(what)?;
        ValueType::from_tag(tag).ok_or_else(|| {
            GgufError::malformed(at, format!("{what}: unknown value type tag {tag}"))
        })
    }

    fn value(&mut self, ty: ValueType, key: &str, depth: usize) -> Result<Value, GgufError> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.u8(key)?),
            ValueType::I8 => Value::I8(self.u8(key)? as i8),
            ValueType::U16 => Value::U16(self.u16(key)?),
            ValueType::I16 => Value::I16(self.u16(key)? as i16),
            ValueType::U32 => Value::U32(self.u32(key)?),
            ValueType::I32 => Value::I32(self.u32(key)? as i32),
            ValueType::F32 => Value::F32(f32::from_bits(self.u32(key)?)),
            ValueType::U64 => Value::U64(self.u64(key)?),
            ValueType::I64 => Value::I64(self.u64(key)? as i64),
            ValueType::F64 => Value::F64(f64::from_bits(self.u64(key)?)),
            ValueType::Bool => Value::Bool(self.bool(&format!("value of '{key}'"))?),
            ValueType::String => Value::String(self.string(&format!("value of '{key}'"))?),
            ValueType::Array => Value::Array(self.array_value(key, depth)?),
        })
    }

    fn array_value(&mut self, key: &str, depth: usize) -> Result<Array, GgufError> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(self.err(format!(
                "value of '{key}': arrays nested deeper than {MAX_ARRAY_DEPTH}"
            )));
        }
        let elem = self.value_type(&format!("element type of array '{key}'"))?;
        let n = self.count(
            &format!("element count of array '{key}'"),
            elem.min_encoded_size(),
        )?;
        macro_rules! prim {
            ($variant:ident, $read:ident, $conv:expr) => {{
                // `count` checked that n elements of this size fit in the bytes left, and an
                // element takes as many bytes in memory as in the file.
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push($conv(self.$read(key)?));
                }
                Array::$variant(v)
            }};
        }
        if matches!(elem, ValueType::String | ValueType::Array) {
            // A `String` or `Array` is larger in memory (24–32 bytes) than its shortest
            // encoding (8–12 bytes): before allocating for n of them, check on a copy of the
            // cursor that all n are really there, so a forged or truncated array costs nothing.
            self.clone().skip_elements(elem, n, key, depth)?;
        }
        Ok(match elem {
            ValueType::U8 => Array::U8(self.take(n, key)?.to_vec()),
            ValueType::I8 => Array::I8(self.take(n, key)?.iter().map(|&b| b as i8).collect()),
            ValueType::U16 => prim!(U16, u16, |x| x),
            ValueType::I16 => prim!(I16, u16, |x: u16| x as i16),
            ValueType::U32 => prim!(U32, u32, |x| x),
            ValueType::I32 => prim!(I32, u32, |x: u32| x as i32),
            ValueType::F32 => prim!(F32, u32, f32::from_bits),
            ValueType::U64 => prim!(U64, u64, |x| x),
            ValueType::I64 => prim!(I64, u64, |x: u64| x as i64),
            ValueType::F64 => prim!(F64, u64, f64::from_bits),
            ValueType::Bool => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.bool(key)?);
                }
                Array::Bool(v)
            }
            ValueType::String => {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(self.string_with(|| format!("element {i} of array '{key}'"))?);
                }
                Array::String(v)
            }
            ValueType::Array => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.array_value(key, depth + 1)?);
                }
                Array::Array(v)
            }
        })
    }

    /// Moves past `n` array elements of type `elem` without allocating, with the same checks
    /// and error messages as parsing them (except UTF-8 and bool validity).
    fn skip_elements(
        &mut self,
        elem: ValueType,
        n: usize,
        key: &str,
        depth: usize,
    ) -> Result<(), GgufError> {
        match elem {
            ValueType::String => {
                for i in 0..n {
                    self.skip_string_with(|| format!("element {i} of array '{key}'"))?;
                }
            }
            ValueType::Array => {
                for _ in 0..n {
                    self.skip_array(key, depth + 1)?;
                }
            }
            // Fixed-size elements: `count` already checked they fit.
            fixed => {
                self.take(n * fixed.min_encoded_size(), key)?;
            }
        }
        Ok(())
    }

    /// Moves past one array (type, count, elements) without allocating.
    fn skip_array(&mut self, key: &str, depth: usize) -> Result<(), GgufError> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(self.err(format!(
                "value of '{key}': arrays nested deeper than {MAX_ARRAY_DEPTH}"
            )));
        }
        let elem = self.value_type(&format!("element type of array '{key}'"))?;
        let n = self.count(
            &format!("element count of array '{key}'"),
            elem.min_encoded_size(),
        )?;
        self.skip_elements(elem, n, key, depth)
    }
}

/// Parses the header region of a GGUF file held in `buf` (the whole file).
///
/// Validates everything listed in the module documentation; the returned tensor infos are
/// guaranteed to describe byte ranges inside `buf`.
pub fn parse_header(buf: &[u8]) -> Result<Header, GgufError> {
    let mut c = Cursor { buf, pos: 0 };
    let magic = c.array::<4>("magic")?;
    if magic != GGUF_MAGIC {
        return Err(GgufError::malformed(
            0,
            format!("not a GGUF file: magic is {magic:02x?}, expected \"GGUF\""),
        ));
    }
    let version = c.u32("version")?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(GgufError::malformed(
                4,
                "GGUF version 1 is not supported (re-convert the model with a current llama.cpp)",
            ))
        }
        v if matches!(v.swap_bytes(), 1..=3) => {
            return Err(GgufError::malformed(
                4,
                format!(
                    "file is big-endian GGUF (version field reads {v:#x}); only little-endian is supported"
                ),
            ))
        }
        v => {
            return Err(GgufError::malformed(
                4,
                format!("unsupported GGUF version {v} (supported: 2, 3)"),
            ))
        }
    }
    // A tensor info takes at least 8 (name len) + 4 (n_dims) + 4 (type) + 8 (offset) bytes,
    // a key/value pair at least 8 (key len) + 4 (type) + 1 (smallest value).
    let n_tensors_at = c.pos;
    let n_tensors = c.u64("tensor count")?;
    let n_kv = c.count("metadata key/value count", 13)?;
    if n_tensors > (c.remaining() / 24) as u64 {
        return Err(GgufError::malformed(
            n_tensors_at as u64,
            format!(
                "tensor count is {n_tensors}, but only {} bytes remain",
                c.remaining()
            ),
        ));
    }
    let n_tensors = n_tensors as usize;

    let mut metadata = bounded_vec(n_kv, c.remaining());
    let mut key_index = HashMap::new();
    // Where each entry's value starts, to point errors found later at the right byte.
    let mut value_offsets = Vec::new();
    for i in 0..n_kv {
        let key_at = c.pos as u64;
        let key = c.string(&format!("key of metadata entry {i}"))?;
        let ty = c.value_type(&format!("type of '{key}'"))?;
        value_offsets.push(c.pos as u64);
        let value = c.value(ty, &key, 0)?;
        if key_index.insert(key.clone(), metadata.len()).is_some() {
            return Err(GgufError::malformed(
                key_at,
                format!("duplicate metadata key '{key}'"),
            ));
        }
        metadata.push((key, value));
    }

    let alignment = match key_index.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(&i) => match metadata[i].1 {
            Value::U32(a) if a != 0 && a.is_power_of_two() => a as u64,
            ref v => {
                return Err(GgufError::malformed(
                    value_offsets[i],
                    format!(
                        "general.alignment must be a u32 power of two, found {} {v}",
                        v.value_type()
                    ),
                ))
            }
        },
    };

    let mut tensors = bounded_vec(n_tensors, c.remaining());
    let mut tensor_index = HashMap::new();
    for i in 0..n_tensors {
        let info_at = c.pos as u64;
        let name = c.string(&format!("name of tensor {i}"))?;
        let n_dims_at = c.pos as u64;
        let n_dims = c.u32(&format!("dimension count of '{name}'"))? as usize;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(GgufError::malformed(
                n_dims_at,
                format!("tensor '{name}' has {n_dims} dimensions (allowed: 1 to {MAX_DIMS})"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims);
        for d in 0..n_dims {
            let dim_at = c.pos as u64;
            let v = c.u64(&format!("dimension {d} of '{name}'"))?;
            if v > i64::MAX as u64 {
                return Err(GgufError::malformed(
                    dim_at,
                    format!("tensor '{name}' dimension {d} is {v}, too large"),
                ));
            }
            dims.push(v);
        }
        let ty_at = c.pos as u64;
        let ty_id = c.u32(&format!("type of '{name}'"))?;
        let ty = GgmlType::from_id(ty_id).ok_or_else(|| {
            GgufError::malformed(
                ty_at,
                format!("tensor '{name}' has unknown ggml type id {ty_id}"),
            )
        })?;
        let offset_at = c.pos as u64;
        let offset = c.u64(&format!("offset of '{name}'"))?;
        // Like ggml, the element count must fit an i64. Zero dims count as 1 here so that
        // every partial product (rows, elements) is also guaranteed not to overflow.
        let fits = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d.max(1)))
            .is_some_and(|p| p <= i64::MAX as u64);
        if !fits {
            return Err(GgufError::malformed(
                n_dims_at,
                format!("tensor '{name}' shape {dims:?} overflows: more than 2^63 elements"),
            ));
        }
        let n_elements: u64 = dims.iter().product();
        if !dims[0].is_multiple_of(ty.block_elems() as u64) {
            return Err(GgufError::malformed(
                n_dims_at,
                format!(
                    "tensor '{name}' row length {} is not a multiple of the {ty} block size {}",
                    dims[0],
                    ty.block_elems()
                ),
            ));
        }
        let n_bytes = ty.bytes_for(n_elements).ok_or_else(|| {
            GgufError::malformed(n_dims_at, format!("tensor '{name}' byte size overflows"))
        })?;
        if offset % alignment != 0 {
            return Err(GgufError::malformed(
                offset_at,
                format!("tensor '{name}' offset {offset} is not a multiple of the alignment {alignment}"),
            ));
        }
        if tensor_index.insert(name.clone(), tensors.len()).is_some() {
            return Err(GgufError::malformed(
                info_at,
                format!("duplicate tensor name '{name}'"),
            ));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ty,
            offset,
            n_bytes,
        });
    }

    let header_end = c.pos as u64;
    let data_offset = header_end
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| GgufError::malformed(header_end, "data section offset overflows"))?;
    let file_len = buf.len() as u64;
    if data_offset > file_len && !tensors.is_empty() {
        return Err(GgufError::malformed(
            header_end,
            format!("data section would start at {data_offset}, past the end of the {file_len}-byte file"),
        ));
    }
    for t in &tensors {
        let end = data_offset
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(t.n_bytes));
        match end {
            Some(end) if end <= file_len => {}
            _ => {
                return Err(GgufError::malformed(
                    data_offset.saturating_add(t.offset),
                    format!(
                        "tensor '{}' ({} bytes at data offset {}) extends past the end of the {file_len}-byte file",
                        t.name, t.n_bytes, t.offset
                    ),
                ))
            }
        }
    }

    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
        key_index,
        tensor_index,
    })
}
