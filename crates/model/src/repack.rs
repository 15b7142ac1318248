//! Offline repacking: rewrite a GGUF's Q4_K, Q6_K, Q8_0, Q4_1 and Q5_0 matrices in grist's
//! interleaved layouts, [`GgmlType::Q4_K_R16`], [`GgmlType::Q6_K_R16`],
//! [`GgmlType::Q8_0_R16`], [`GgmlType::Q4_1_R16`] and [`GgmlType::Q5_0_R16`], so grist
//! memory-maps the faster layouts as they are.
//!
//! In these layouts the blocks of 16 consecutive rows are stored column by column, so one
//! 512-bit register holds the same bytes of 16 rows and token generation needs no horizontal
//! reductions (`grist_kernels::formats::interleaved`, docs/PERFORMANCE.md round 12).
//! Interleaving at load time would cost a second copy of the weights in RAM and start-up
//! time; [`repack_file`] does it once, offline, and writes a file whose bytes are used
//! directly. A layout holds as many bytes as its base type: Q4_K_R16 the same bytes
//! (and Q6_K_R16, Q4_1_R16) reordered, Q8_0_R16 reordered with every code stored `+ 128`,
//! Q5_0_R16 reordered with the bits of each block's `qh` permuted. The file keeps its size
//! (give or take alignment padding) and [`deinterleave`] restores the original exactly.
//!
//! ```text
//! input GGUF (mmap)
//!   → metadata: every key copied in order, general.alignment = 64, + grist.repack = the
//!     interleaved types the output holds ("Q4_K_R16", "Q8_0_R16,Q4_K_R16", …)
//!   → tensor infos: same names, order and shapes; each repackable matrix ([`repacked_type`]:
//!     2-D Q4_K or Q6_K with a multiple of 16 rows, 2-D Q8_0, Q4_1 or Q5_0 with a multiple
//!     of 16 rows of a multiple of 64 values) declared in its interleaved type, every other tensor
//!     keeps its type
//!   → GgufStreamWriter, tensor after tensor:
//!       interleaved: chunks of whole 16-row groups interleaved in parallel (rayon) into one
//!                    reused buffer, then written
//!       others:      the mapped bytes written as they are
//!   → a temporary file next to the output, renamed over it once complete
//! ```
//!
//! Every tensor starts on a 64-byte cache line (alignment 64, or the input's if larger).
//! Besides the mapped input, memory is one chunk ([`RepackOptions::chunk_bytes`]), whatever
//! the model size. Writing to a temporary file and renaming it means a failed run never
//! leaves a half-written model behind, and never truncates a file another process has
//! memory-mapped (a killed run can leave the hidden temporary file).
//!
//! [`deinterleave`]: grist_kernels::formats::interleaved::deinterleave

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use grist_gguf::{GgmlType, GgufError, GgufFile, GgufStreamWriter, TensorDecl, TensorInfo, Value};
use grist_kernels::formats::interleaved::interleave;
use rayon::prelude::*;

use crate::error::ModelError;

/// The metadata key naming the layouts a repacked file holds (`"Q4_K_R16"`, or e.g.
/// `"Q8_0_R16,Q4_K_R16"`: its interleaved types in id order, comma-separated), so `grist
/// inspect` shows where the file came from.
pub const REPACK_KEY: &str = "grist.repack";

/// The alignment of the repacked file's data section and tensors: one cache line. A
/// Q4_K_R16 column is 36 whole lines, a Q8_0_R16 column 17, a Q4_1_R16 column 10 and a
/// Q5_0_R16 column 11, so each 64-byte load of the interleaved kernels then touches exactly
/// one line (a Q6_K_R16 column is 52.5 lines: every other column starts on a line).
pub const REPACK_ALIGNMENT: u32 = 64;

/// Default bytes interleaved per parallel batch ([`RepackOptions::chunk_bytes`]).
pub const DEFAULT_CHUNK_BYTES: usize = 16 << 20;

/// The GGUF key holding the alignment (read by every GGUF reader, written by the writer).
const ALIGNMENT_KEY: &str = "general.alignment";

/// How [`repack_file`] works (not what it writes: the output is the same for every option).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepackOptions {
    /// Bytes of a matrix interleaved per batch, rounded down to whole 16-row groups (at least
    /// one group). Bounds the memory used besides the mapped input; a batch's groups are
    /// interleaved in parallel.
    pub chunk_bytes: usize,
}

impl Default for RepackOptions {
    /// Batches of [`DEFAULT_CHUNK_BYTES`].
    fn default() -> Self {
        RepackOptions {
            chunk_bytes: DEFAULT_CHUNK_BYTES,
        }
    }
}

/// What [`repack_file`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepackReport {
    /// Matrices rewritten in an interleaved layout (Q4_K as Q4_K_R16, Q6_K as Q6_K_R16, Q8_0
    /// as Q8_0_R16, Q4_1 as Q4_1_R16, Q5_0 as Q5_0_R16).
    pub n_repacked: usize,
    /// Of those, how many went to each interleaved type, in id order (types with none left
    /// out).
    pub repacked_types: Vec<(GgmlType, usize)>,
    /// Bytes of those matrices (the same in both layouts).
    pub bytes_repacked: u64,
    /// Tensors copied byte for byte with their type.
    pub n_copied: usize,
    /// Bytes of those tensors.
    pub bytes_copied: u64,
    /// Names of the Q4_K, Q6_K, Q8_0, Q4_1 and Q5_0 tensors among the copied ones, left as
    /// they are because they are not 2-D, their row count is not a multiple of 16 or (Q8_0,
    /// Q4_1, Q5_0) their rows not a multiple of 64 values: they run at the plain type's speed.
    pub kept: Vec<String>,
    /// Size of the output file in bytes.
    pub file_bytes: u64,
    /// Wall-clock time of the whole run.
    pub elapsed: Duration,
}

/// Progress of [`repack_file_with_progress`]: tensor `index` of `total`, called `name`, is
/// about to be written.
#[derive(Clone, Copy, Debug)]
pub struct RepackProgress<'a> {
    /// 0-based index of the tensor.
    pub index: usize,
    /// Number of tensors.
    pub total: usize,
    /// Tensor name.
    pub name: &'a str,
    /// Whether the tensor is interleaved (`true`) or copied (`false`).
    pub repacked: bool,
}

/// Whether a tensor is rewritten in an interleaved layout ([`repacked_type`]).
pub fn is_repackable(info: &TensorInfo) -> bool {
    repacked_type(info).is_some()
}

/// The interleaved type a tensor is rewritten as, if any: a 2-D matrix (`dims = [cols,
/// rows]`) of a type with an interleaved layout (Q4_K → Q4_K_R16, Q6_K → Q6_K_R16, Q8_0 →
/// Q8_0_R16, Q4_1 → Q4_1_R16, Q5_0 → Q5_0_R16) whose row count is a positive multiple of
/// the layout's group (16 rows) and whose rows are whole blocks of the layout (256 values for
/// Q4_K_R16, 64 for Q8_0_R16, Q4_1_R16 and Q5_0_R16: two blocks per column).
pub fn repacked_type(info: &TensorInfo) -> Option<GgmlType> {
    let ty = layout_of(info.ty)?;
    let (_, group_rows) = ty.interleaved()?;
    let fits = info.dims.len() == 2
        && info.dims[1] > 0
        && info.dims[1].is_multiple_of(group_rows as u64)
        && info.dims[0].is_multiple_of(ty.block_elems() as u64);
    fits.then_some(ty)
}

/// The interleaved layout [`repack_file`] writes matrices of type `ty` in, if there is one.
fn layout_of(ty: GgmlType) -> Option<GgmlType> {
    Some(match ty {
        GgmlType::Q4_K => GgmlType::Q4_K_R16,
        GgmlType::Q6_K => GgmlType::Q6_K_R16,
        GgmlType::Q8_0 => GgmlType::Q8_0_R16,
        GgmlType::Q4_1 => GgmlType::Q4_1_R16,
        GgmlType::Q5_0 => GgmlType::Q5_0_R16,
        _ => return None,
    })
}

/// Writes `input` to `output` with every repackable matrix ([`repacked_type`]) in its
/// interleaved layout and everything else unchanged (see the module documentation).
///
/// Refuses an `output` that is the input file (same canonical path, or the same file through
/// a hard link), an unreadable or malformed input and an output directory that does not
/// exist. An input that already holds interleaved tensors is fine: they are copied as they
/// are.
/// An existing `output` is replaced only once the new file is complete.
pub fn repack_file(
    input: &Path,
    output: &Path,
    opts: &RepackOptions,
) -> Result<RepackReport, ModelError> {
    repack_file_with_progress(input, output, opts, &mut |_| {})
}

/// [`repack_file`], calling `progress` before each tensor.
pub fn repack_file_with_progress(
    input: &Path,
    output: &Path,
    opts: &RepackOptions,
    progress: &mut dyn FnMut(RepackProgress<'_>),
) -> Result<RepackReport, ModelError> {
    let start = Instant::now();
    let src = GgufFile::open(input).map_err(|e| match e {
        // I/O errors already name the file.
        GgufError::Io { .. } => ModelError::Gguf(e),
        e => ModelError::InvalidArgument(format!("{}: {e}", input.display())),
    })?;
    let tmp = temporary_path(input, output)?;

    // A larger input alignment (a power of two, so a multiple of 64) is kept.
    let alignment = REPACK_ALIGNMENT.max(src.alignment() as u32);
    let decls: Vec<TensorDecl> = src
        .tensors()
        .iter()
        .map(|t| TensorDecl::new(t.name.clone(), repacked_type(t).unwrap_or(t.ty), &t.dims))
        .collect();
    let metadata = output_metadata(src.metadata(), alignment, &layouts(&decls));

    match write_file(&src, &tmp, output, &metadata, decls, opts, progress) {
        Ok(report) => Ok(RepackReport {
            elapsed: start.elapsed(),
            ..report
        }),
        Err(e) => {
            // Best effort: the error being reported matters more than a failed clean-up.
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Writes the repacked file to `tmp`, then renames it to `output`. The report's `elapsed`
/// is left for the caller.
fn write_file(
    src: &GgufFile,
    tmp: &Path,
    output: &Path,
    metadata: &[(String, Value)],
    decls: Vec<TensorDecl>,
    opts: &RepackOptions,
    progress: &mut dyn FnMut(RepackProgress<'_>),
) -> Result<RepackReport, ModelError> {
    let mut writer = GgufStreamWriter::create(tmp, metadata, decls)?;
    let report = write_tensors(src, &mut writer, opts, progress)?;
    let file_bytes = writer.finish_file()?;
    std::fs::rename(tmp, output).map_err(|source| GgufError::Io {
        path: output.to_path_buf(),
        source,
    })?;
    Ok(RepackReport {
        file_bytes,
        ..report
    })
}

/// Streams every tensor of `src` into `writer` (whose declarations came from `src`), in
/// order: repackable matrices interleaved, the others copied. The report's `file_bytes` and
/// `elapsed` are left for the caller.
fn write_tensors<W: Write>(
    src: &GgufFile,
    writer: &mut GgufStreamWriter<W>,
    opts: &RepackOptions,
    progress: &mut dyn FnMut(RepackProgress<'_>),
) -> Result<RepackReport, ModelError> {
    let mut report = RepackReport {
        n_repacked: 0,
        repacked_types: Vec::new(),
        bytes_repacked: 0,
        n_copied: 0,
        bytes_copied: 0,
        kept: Vec::new(),
        file_bytes: 0,
        elapsed: Duration::ZERO,
    };
    // [groups per chunk × 16 rows, row_bytes]: interleaved rows waiting to be written,
    // reused from matrix to matrix.
    let mut chunk_buf: Vec<u8> = Vec::new();
    let total = src.tensors().len();
    for (index, info) in src.tensors().iter().enumerate() {
        let repacked = repacked_type(info);
        progress(RepackProgress {
            index,
            total,
            name: &info.name,
            repacked: repacked.is_some(),
        });
        let data = src.tensor_data(info);
        if let Some(ty) = repacked {
            write_interleaved(writer, info, ty, data, opts.chunk_bytes, &mut chunk_buf)?;
            report.n_repacked += 1;
            report.bytes_repacked += info.n_bytes;
            match report.repacked_types.iter_mut().find(|(t, _)| *t == ty) {
                Some((_, n)) => *n += 1,
                None => report.repacked_types.push((ty, 1)),
            }
        } else {
            writer.write_data(data)?;
            report.n_copied += 1;
            report.bytes_copied += info.n_bytes;
            if layout_of(info.ty).is_some() {
                report.kept.push(info.name.clone());
            }
        }
    }
    report.repacked_types.sort();
    Ok(report)
}

/// Writes the matrix `info` (`data`: `[rows, row_bytes]`, rows whole groups) in the
/// interleaved layout `ty` ([`repacked_type`]), a chunk of whole 16-row groups at a time, the
/// groups of a chunk in parallel.
fn write_interleaved<W: Write>(
    writer: &mut GgufStreamWriter<W>,
    info: &TensorInfo,
    ty: GgmlType,
    data: &[u8],
    chunk_bytes: usize,
    chunk_buf: &mut Vec<u8>,
) -> Result<(), ModelError> {
    let rows = info.n_rows() as usize;
    let row_bytes = data.len() / rows;
    let (_, group_rows) = ty
        .interleaved()
        .expect("repacked_type returns interleaved types");
    let group_bytes = group_rows * row_bytes; // one group: row_bytes / block_bytes columns
    let chunk = (chunk_bytes / group_bytes).max(1) * group_bytes;
    chunk_buf.resize(chunk.min(data.len()), 0);
    for plain in data.chunks(chunk) {
        let out = &mut chunk_buf[..plain.len()]; // [groups × 16 rows, row_bytes]
        out.par_chunks_mut(group_bytes)
            .zip(plain.par_chunks(group_bytes))
            .try_for_each(|(o, p)| interleave(ty, p, row_bytes, o))
            .map_err(|e| {
                ModelError::InvalidArgument(format!(
                    "tensor '{}' ({}, shape {:?}): {e}",
                    info.name, info.ty, info.dims
                ))
            })?;
        writer.write_data(out)?;
    }
    Ok(())
}

/// The value of [`REPACK_KEY`] for a file of tensors `decls`: the interleaved types among
/// them in id order, comma-separated (empty if there is none).
fn layouts(decls: &[TensorDecl]) -> String {
    let mut types: Vec<GgmlType> = decls
        .iter()
        .map(|d| d.ty)
        .filter(|t| t.interleaved().is_some())
        .collect();
    types.sort();
    types.dedup();
    types.iter().map(|t| t.name()).collect::<Vec<_>>().join(",")
}

/// The output's metadata: `src` in order, with `general.alignment` set to `alignment` (in
/// place, or appended) and [`REPACK_KEY`] set to `layouts` (see [`layouts`]; in place if the
/// input was itself repacked, else appended last).
fn output_metadata(src: &[(String, Value)], alignment: u32, layouts: &str) -> Vec<(String, Value)> {
    let mut out = src.to_vec();
    for (key, value) in [
        (ALIGNMENT_KEY, Value::U32(alignment)),
        (REPACK_KEY, Value::from(layouts)),
    ] {
        match out.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => out.push((key.to_string(), value)),
        }
    }
    out
}

/// Checks that `output` is not the input file and that its directory exists; returns the
/// temporary file to write (a hidden file next to `output`, so the final rename stays on one
/// file system).
fn temporary_path(input: &Path, output: &Path) -> Result<PathBuf, ModelError> {
    let bad = |m: String| Err(ModelError::InvalidArgument(m));
    let Some(name) = output.file_name() else {
        return bad(format!("output {} is not a file name", output.display()));
    };
    if output.is_dir() {
        return bad(format!("output {} is a directory", output.display()));
    }
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir_canonical = match dir.canonicalize() {
        Ok(d) => d,
        Err(e) => {
            return bad(format!(
                "cannot write {}: directory {}: {e}",
                output.display(),
                dir.display()
            ))
        }
    };
    // The input was just opened, so it resolves; the output may not exist yet.
    let input_canonical = input.canonicalize().ok();
    let output_canonical = output
        .canonicalize()
        .unwrap_or_else(|_| dir_canonical.join(name));
    let same_path = input_canonical.as_ref() == Some(&output_canonical);
    if same_path || same_file(input, output) {
        return bad(format!(
            "output {} is the input file; write the repacked model to another path",
            output.display()
        ));
    }
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".grist-repack-{}.tmp", std::process::id()));
    Ok(dir.join(tmp_name))
}

/// Whether `a` and `b` are one file under two names (a hard link), by device and inode.
#[cfg(unix)]
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Elsewhere only the canonical paths are compared.
#[cfg(not(unix))]
fn same_file(_a: &Path, _b: &Path) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(ty: GgmlType, dims: &[u64]) -> TensorInfo {
        TensorInfo {
            name: "t".into(),
            dims: dims.to_vec(),
            ty,
            offset: 0,
            n_bytes: 0,
        }
    }

    #[test]
    fn only_2d_q4_k_and_q6_k_with_whole_groups_are_repackable() {
        for (base, layout) in [
            (GgmlType::Q4_K, GgmlType::Q4_K_R16),
            (GgmlType::Q6_K, GgmlType::Q6_K_R16),
        ] {
            assert_eq!(repacked_type(&info(base, &[256, 16])), Some(layout));
            assert_eq!(repacked_type(&info(base, &[512, 9728])), Some(layout));
            assert!(!is_repackable(&info(base, &[256, 24])));
            assert!(!is_repackable(&info(base, &[256, 0])));
            assert!(!is_repackable(&info(base, &[256, 16, 2])));
            assert!(!is_repackable(&info(base, &[4096])));
            assert!(!is_repackable(&info(layout, &[256, 16])));
            assert_eq!(layout.interleaved(), Some((base, 16)));
        }
        assert_eq!(
            repacked_type(&info(GgmlType::Q6_K, &[2560, 151936])),
            Some(GgmlType::Q6_K_R16)
        );
        for ty in [
            GgmlType::Q5_K,
            GgmlType::Q4_0,
            GgmlType::Q5_1,
            GgmlType::F32,
        ] {
            assert!(!is_repackable(&info(ty, &[256, 16])));
        }
    }

    #[test]
    fn q8_0_matrices_of_whole_groups_and_columns_are_repackable() {
        let q8 = |dims: &[u64]| repacked_type(&info(GgmlType::Q8_0, dims));
        assert_eq!(q8(&[64, 16]), Some(GgmlType::Q8_0_R16));
        assert_eq!(q8(&[640, 262144]), Some(GgmlType::Q8_0_R16));
        assert_eq!(q8(&[576, 49152]), Some(GgmlType::Q8_0_R16));
        assert_eq!(q8(&[96, 16]), None); // three Q8_0 blocks: not whole 64-value columns
        assert_eq!(q8(&[64, 24]), None);
        assert_eq!(q8(&[64, 0]), None);
        assert_eq!(q8(&[64, 16, 2]), None);
        assert_eq!(q8(&[1024]), None);
        assert_eq!(
            repacked_type(&info(GgmlType::Q4_K, &[256, 16])),
            Some(GgmlType::Q4_K_R16)
        );
        assert!(!is_repackable(&info(GgmlType::Q8_0_R16, &[64, 16])));
        assert!(!is_repackable(&info(GgmlType::Q4_0, &[64, 16])));
    }

    #[test]
    fn q4_1_matrices_of_whole_groups_and_columns_are_repackable() {
        let q4_1 = |dims: &[u64]| repacked_type(&info(GgmlType::Q4_1, dims));
        assert_eq!(q4_1(&[64, 16]), Some(GgmlType::Q4_1_R16));
        // SmolLM2-135M's ffn_down and ffn_gate, attn_k.
        assert_eq!(q4_1(&[1536, 576]), Some(GgmlType::Q4_1_R16));
        assert_eq!(q4_1(&[576, 1536]), Some(GgmlType::Q4_1_R16));
        assert_eq!(q4_1(&[576, 192]), Some(GgmlType::Q4_1_R16));
        assert_eq!(q4_1(&[96, 16]), None); // three Q4_1 blocks: not whole 64-value columns
        assert_eq!(q4_1(&[64, 24]), None);
        assert_eq!(q4_1(&[64, 0]), None);
        assert_eq!(q4_1(&[64, 16, 2]), None);
        assert_eq!(q4_1(&[1024]), None);
        assert!(!is_repackable(&info(GgmlType::Q4_1_R16, &[64, 16])));
        assert!(!is_repackable(&info(GgmlType::Q5_1, &[64, 16])));
    }

    #[test]
    fn q5_0_matrices_of_whole_groups_and_columns_are_repackable() {
        let q5 = |dims: &[u64]| repacked_type(&info(GgmlType::Q5_0, dims));
        assert_eq!(q5(&[64, 16]), Some(GgmlType::Q5_0_R16));
        assert_eq!(q5(&[896, 151936]), Some(GgmlType::Q5_0_R16)); // qwen2.5-0.5b's token_embd
        assert_eq!(q5(&[896, 4864]), Some(GgmlType::Q5_0_R16));
        assert_eq!(q5(&[96, 16]), None); // three Q5_0 blocks: not whole 64-value columns
        assert_eq!(q5(&[64, 24]), None);
        assert_eq!(q5(&[64, 16, 2]), None);
        assert_eq!(q5(&[1024]), None);
        assert!(!is_repackable(&info(GgmlType::Q5_0_R16, &[64, 16])));
        assert_eq!(GgmlType::Q5_0_R16.interleaved(), Some((GgmlType::Q5_0, 16)));
    }

    #[test]
    fn the_repack_key_lists_the_interleaved_types_in_id_order() {
        let decl = |ty| TensorDecl::new("t", ty, &[256, 16]);
        let f32 = TensorDecl::new("n", GgmlType::F32, &[256]);
        assert_eq!(layouts(std::slice::from_ref(&f32)), "");
        assert_eq!(
            layouts(&[decl(GgmlType::Q4_K_R16), f32.clone()]),
            "Q4_K_R16"
        );
        let both = [
            decl(GgmlType::Q4_K_R16),
            decl(GgmlType::Q8_0_R16),
            decl(GgmlType::Q4_K_R16),
            f32,
        ];
        assert_eq!(layouts(&both), "Q8_0_R16,Q4_K_R16");
        let with_q4_1 = [decl(GgmlType::Q8_0_R16), decl(GgmlType::Q4_1_R16)];
        assert_eq!(layouts(&with_q4_1), "Q4_1_R16,Q8_0_R16");
        let q5 = [decl(GgmlType::Q8_0_R16), decl(GgmlType::Q5_0_R16)];
        assert_eq!(layouts(&q5), "Q5_0_R16,Q8_0_R16");
    }

    #[test]
    fn metadata_keeps_its_order_and_sets_two_keys() {
        let src = vec![
            ("general.architecture".to_string(), Value::from("llama")),
            (ALIGNMENT_KEY.to_string(), Value::U32(32)),
            ("llama.block_count".to_string(), Value::U32(2)),
        ];
        let out = output_metadata(&src, 64, "Q4_K_R16");
        assert_eq!(out.len(), 4);
        assert_eq!(out[0], src[0]);
        assert_eq!(out[1], (ALIGNMENT_KEY.to_string(), Value::U32(64)));
        assert_eq!(out[2], src[2]);
        assert_eq!(out[3], (REPACK_KEY.to_string(), Value::from("Q4_K_R16")));
        // A repacked file's keys are updated in place, not duplicated.
        assert_eq!(output_metadata(&out, 64, "Q4_K_R16"), out);
        // Without the alignment key it is appended before grist.repack.
        let out = output_metadata(&src[..1], 64, "Q4_K_R16");
        assert_eq!(out[1], (ALIGNMENT_KEY.to_string(), Value::U32(64)));
        assert_eq!(out[2].0, REPACK_KEY);
    }
}
