//! `grist inspect MODEL.gguf`: what is in a GGUF file.
//!
//! Prints the header (version, counts, alignment, data offset, file size), a one-paragraph
//! summary of the architecture, the metadata (long arrays and strings shortened, the tokenizer
//! vocabulary summarized unless `--full`), the tensor table, totals per tensor type and the
//! parameter count. `--json` prints the same as one JSON object for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use grist_gguf::{Array, GgmlType, GgufError, GgufFile, Value};
use serde_json::{json, Map, Value as Json};

use crate::CliError;

/// Flags of `grist inspect`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The GGUF file to inspect.
    #[arg(value_name = "MODEL.gguf")]
    pub model: PathBuf,

    /// Show everything: the tokenizer vocabulary, every array element and long strings.
    #[arg(long)]
    pub full: bool,

    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Metadata arrays holding the tokenizer vocabulary: summarized unless `--full`.
const VOCAB_KEYS: [&str; 4] = [
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.scores",
    "tokenizer.ggml.token_type",
];
/// Array elements shown without `--full` (vocabulary arrays show fewer).
const SHOWN_ELEMENTS: usize = 16;
const SHOWN_VOCAB_ELEMENTS: usize = 5;
/// Strings longer than this (in characters) are shortened without `--full`.
const LONG_STRING: usize = 120;

/// Runs `grist inspect`.
pub fn run(args: Args) -> Result<(), CliError> {
    let file = GgufFile::open(&args.model).map_err(|e| match e {
        // I/O errors already name the file.
        GgufError::Io { .. } => CliError::msg(e),
        e => CliError(format!("{}: {e}", args.model.display())),
    })?;
    let report = Report::new(&file);
    let out = if args.json {
        let mut s =
            serde_json::to_string_pretty(&report.json(&file, args.full)).map_err(CliError::msg)?;
        s.push('\n');
        s
    } else {
        report.text(&file, args.full)
    };
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(out.as_bytes()) {
        // `grist inspect m.gguf | head` closes the pipe early: not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.map_err(CliError::msg),
    }
}

/// Count and bytes of the tensors of one type.
#[derive(Default, Clone, Copy)]
struct TypeTotal {
    count: usize,
    bytes: u64,
}

/// Figures derived from the file, shared by the text and JSON outputs.
struct Report {
    arch: Option<String>,
    n_params: u64,
    tensor_bytes: u64,
    /// Per type, in ggml id order.
    types: BTreeMap<GgmlType, TypeTotal>,
    /// (label, value) pairs of the architecture summary, in display order.
    summary: Vec<(&'static str, String)>,
}

impl Report {
    fn new(f: &GgufFile) -> Report {
        let mut types: BTreeMap<GgmlType, TypeTotal> = BTreeMap::new();
        let (mut n_params, mut tensor_bytes) = (0u64, 0u64);
        for t in f.tensors() {
            let e = types.entry(t.ty).or_default();
            e.count += 1;
            e.bytes += t.n_bytes;
            n_params += t.n_elements();
            tensor_bytes += t.n_bytes;
        }
        let arch = f.get_str("general.architecture").ok().map(str::to_string);
        let summary = arch.as_deref().map(|a| summary(f, a)).unwrap_or_default();
        Report {
            arch,
            n_params,
            tensor_bytes,
            types,
            summary,
        }
    }

    fn text(&self, f: &GgufFile, full: bool) -> String {
        let mut o = String::new();
        let _ = self.write_text(&mut o, f, full);
        o
    }

    fn write_text(&self, o: &mut String, f: &GgufFile, full: bool) -> std::fmt::Result {
        writeln!(o, "file        {}", f.path().display())?;
        writeln!(
            o,
            "size        {} ({} bytes)",
            human_bytes(f.file_size()),
            f.file_size()
        )?;
        writeln!(
            o,
            "{:<12}{} tensors, {} metadata keys, alignment {}, data section at byte {}",
            format!("GGUF v{}", f.version()),
            f.tensors().len(),
            f.metadata().len(),
            f.alignment(),
            f.data_offset()
        )?;
        writeln!(
            o,
            "parameters  {} ({}), {} of tensor data ({:.2} bits per parameter)",
            human_count(self.n_params),
            self.n_params,
            human_bytes(self.tensor_bytes),
            self.tensor_bytes as f64 * 8.0 / self.n_params.max(1) as f64
        )?;

        writeln!(o, "\nArchitecture")?;
        match &self.arch {
            None => writeln!(o, "  (no general.architecture key)")?,
            Some(arch) => {
                let mut para = format!("{arch}:");
                for (i, (label, value)) in self.summary.iter().enumerate() {
                    let sep = if i == 0 { " " } else { ", " };
                    let _ = write!(para, "{sep}{label} {value}");
                }
                para.push('.');
                for line in wrap(&para, 92) {
                    writeln!(o, "  {line}")?;
                }
            }
        }

        writeln!(o, "\nMetadata ({} keys)", f.metadata().len())?;
        let width = f.metadata().iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (key, value) in f.metadata() {
            let ty = match value {
                Value::Array(a) => format!("[{}; {}]", a.element_type(), a.len()),
                v => v.value_type().to_string(),
            };
            writeln!(
                o,
                "  {key:width$}  {ty:<14} {}",
                show_value(key, value, full)
            )?;
        }

        writeln!(
            o,
            "\nTensors ({}; offsets from the data section at byte {})",
            f.tensors().len(),
            f.data_offset()
        )?;
        let name_w = f
            .tensors()
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        // The type column fits the longest name present (ggml's reach 7 characters,
        // grist's interleaved ones 8).
        let type_w = f
            .tensors()
            .iter()
            .map(|t| t.ty.name().len())
            .max()
            .unwrap_or(4)
            .max(7);
        writeln!(
            o,
            "  {:name_w$}  {:<type_w$}  {:<22}  {:>12}  {:>12}",
            "name", "type", "shape", "offset", "bytes"
        )?;
        for t in f.tensors() {
            let shape = format!("{:?}", t.dims);
            writeln!(
                o,
                "  {:name_w$}  {:<type_w$}  {:<22}  {:>12}  {:>12}",
                t.name,
                t.ty.name(),
                shape,
                t.offset,
                t.n_bytes
            )?;
        }

        writeln!(o, "\nTotals by tensor type")?;
        writeln!(
            o,
            "  {:<8} {:>6}  {:>12}  {:>6}",
            "type", "count", "bytes", "share"
        )?;
        for (ty, tot) in &self.types {
            writeln!(
                o,
                "  {:<8} {:>6}  {:>12}  {:>5.1}%",
                ty.name(),
                tot.count,
                human_bytes(tot.bytes),
                100.0 * tot.bytes as f64 / self.tensor_bytes.max(1) as f64
            )?;
        }
        writeln!(
            o,
            "  {:<8} {:>6}  {:>12}  {:>5.1}%",
            "total",
            f.tensors().len(),
            human_bytes(self.tensor_bytes),
            100.0
        )?;
        Ok(())
    }

    fn json(&self, f: &GgufFile, full: bool) -> Json {
        let mut metadata = Map::new();
        for (key, value) in f.metadata() {
            let limit = if full {
                usize::MAX
            } else if VOCAB_KEYS.contains(&key.as_str()) {
                SHOWN_VOCAB_ELEMENTS
            } else {
                SHOWN_ELEMENTS
            };
            let entry = match value {
                Value::Array(a) => json!({
                    "type": "array",
                    "element_type": a.element_type().name(),
                    "len": a.len(),
                    "truncated": a.len() > limit,
                    "values": array_json(a, limit),
                }),
                v => json!({ "type": v.value_type().name(), "value": value_json(v) }),
            };
            metadata.insert(key.clone(), entry);
        }
        let tensors: Vec<Json> = f
            .tensors()
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "type": t.ty.name(),
                    "shape": t.dims,
                    "offset": t.offset,
                    "file_offset": f.data_offset() + t.offset,
                    "n_bytes": t.n_bytes,
                    "n_elements": t.n_elements(),
                })
            })
            .collect();
        let types: Vec<Json> = self
            .types
            .iter()
            .map(|(ty, tot)| {
                json!({
                    "type": ty.name(),
                    "count": tot.count,
                    "bytes": tot.bytes,
                    "share": tot.bytes as f64 / self.tensor_bytes.max(1) as f64,
                })
            })
            .collect();
        let summary: Map<String, Json> = self
            .summary
            .iter()
            .map(|(k, v)| (k.replace(' ', "_"), Json::String(v.clone())))
            .collect();
        json!({
            "file": f.path().display().to_string(),
            "file_size": f.file_size(),
            "version": f.version(),
            "n_tensors": f.tensors().len(),
            "n_kv": f.metadata().len(),
            "alignment": f.alignment(),
            "data_offset": f.data_offset(),
            "architecture": self.arch,
            "summary": summary,
            "n_params": self.n_params,
            "tensor_bytes": self.tensor_bytes,
            "metadata": metadata,
            "tensors": tensors,
            "types": types,
        })
    }
}

/// The architecture summary: `(label, value)` for every hyperparameter present.
fn summary(f: &GgufFile, arch: &str) -> Vec<(&'static str, String)> {
    let key = |k: &str| format!("{arch}.{k}");
    let num = |k: &str| f.get(&key(k)).map(show_number);
    let mut s = Vec::new();
    let mut push = |label: &'static str, v: Option<String>| {
        if let Some(v) = v {
            s.push((label, v));
        }
    };
    push("layers", num("block_count"));
    push("embedding", num("embedding_length"));
    let heads = f.get_u64(&key("attention.head_count")).ok();
    push("heads", num("attention.head_count"));
    push("kv heads", num("attention.head_count_kv"));
    // Head dim: explicit key_length, else embedding / heads.
    let head_dim = f.get_u64(&key("attention.key_length")).ok().or_else(|| {
        let embd = f.get_u64(&key("embedding_length")).ok()?;
        embd.checked_div(heads?)
    });
    push("head dim", head_dim.map(|d| d.to_string()));
    if let (Ok(k), Ok(v)) = (
        f.get_u64(&key("attention.key_length")),
        f.get_u64(&key("attention.value_length")),
    ) {
        if k != v {
            push("value head dim", Some(v.to_string()));
        }
    }
    push("ffn", num("feed_forward_length"));
    push("context", num("context_length"));
    let vocab = f
        .get_u64(&key("vocab_size"))
        .ok()
        .or_else(|| {
            f.get("tokenizer.ggml.tokens")
                .and_then(Value::as_array)
                .map(|a| a.len() as u64)
        })
        .or_else(|| {
            f.tensor_info("token_embd.weight")
                .and_then(|t| t.dims.get(1).copied())
        });
    push("vocab", vocab.map(|v| v.to_string()));
    push("rope base", num("rope.freq_base"));
    // RoPE rotates the whole head unless the file says otherwise (partial rotary).
    push(
        "rope dims",
        num("rope.dimension_count").or_else(|| head_dim.map(|d| format!("{d} (whole head)"))),
    );
    if let Some(scaling) = f.get(&key("rope.scaling.type")).and_then(Value::as_str) {
        if scaling != "none" {
            let factor = num("rope.scaling.factor").unwrap_or_else(|| "?".into());
            push("rope scaling", Some(format!("{scaling} ×{factor}")));
        }
    }
    push(
        "norm eps",
        num("attention.layer_norm_rms_epsilon")
            .map(|e| format!("{e} (RMS)"))
            .or_else(|| num("attention.layer_norm_epsilon")),
    );
    push("sliding window", num("attention.sliding_window"));
    if let Some(n) = num("expert_count") {
        let used = num("expert_used_count").unwrap_or_else(|| "?".into());
        push("experts", Some(format!("{n} ({used} used per token)")));
    }
    let tied = f.tensor_info("output.weight").is_none();
    push(
        "output",
        Some(if tied {
            "tied to token_embd".to_string()
        } else {
            "separate (output.weight)".to_string()
        }),
    );
    s
}

/// A scalar as plain text; an array of numbers (per-layer values) as a short list.
fn show_number(v: &Value) -> String {
    match v {
        Value::Array(a) => show_array(a, 8),
        Value::F32(x) => format!("{x}"),
        v => v.to_string(),
    }
}

/// The text form of one metadata value, shortened unless `full`.
fn show_value(key: &str, v: &Value, full: bool) -> String {
    match v {
        Value::String(s) => show_string(s, full),
        Value::Array(a) if full => show_array(a, usize::MAX),
        Value::Array(a) if VOCAB_KEYS.contains(&key) => {
            format!(
                "{} (vocabulary: --full to show)",
                show_array(a, SHOWN_VOCAB_ELEMENTS)
            )
        }
        Value::Array(a) => show_array(a, SHOWN_ELEMENTS),
        v => v.to_string(),
    }
}

/// A string quoted and escaped, shortened to [`LONG_STRING`] characters unless `full`.
fn show_string(s: &str, full: bool) -> String {
    let n_chars = s.chars().count();
    if full || n_chars <= LONG_STRING {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(LONG_STRING).collect();
        format!("{head:?}… ({n_chars} characters: --full to show)")
    }
}

/// `[a, b, c, … (n more)]`, with at most `limit` elements.
fn show_array(a: &Array, limit: usize) -> String {
    let shown = a.len().min(limit);
    let mut parts: Vec<String> = (0..shown)
        .filter_map(|i| a.get(i))
        .map(|v| match v {
            Value::String(s) => show_string(&s, false),
            Value::Array(inner) => show_array(&inner, limit.min(SHOWN_ELEMENTS)),
            v => v.to_string(),
        })
        .collect();
    if a.len() > shown {
        parts.push(format!("… {} more", a.len() - shown));
    }
    format!("[{}]", parts.join(", "))
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        // NaN and infinities become null: JSON has no such numbers.
        Value::F32(x) => json!(x),
        Value::Bool(x) => json!(x),
        Value::String(s) => json!(s),
        Value::Array(a) => array_json(a, usize::MAX),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F64(x) => json!(x),
    }
}

fn array_json(a: &Array, limit: usize) -> Json {
    Json::Array(
        (0..a.len().min(limit))
            .filter_map(|i| a.get(i))
            .map(|v| match v {
                Value::Array(inner) => array_json(&inner, limit),
                v => value_json(&v),
            })
            .collect(),
    )
}

/// `134.5M`, `1.54B`, `12.3K`.
fn human_count(n: u64) -> String {
    let x = n as f64;
    if x >= 1e9 {
        format!("{:.2}B", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}K", x / 1e3)
    } else {
        n.to_string()
    }
}

/// `93.8 MiB`, `1.04 GiB`, `512 B`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut x = n as f64 / 1024.0;
    let mut unit = 0;
    while x >= 1024.0 && unit + 1 < UNITS.len() {
        x /= 1024.0;
        unit += 1;
    }
    let digits = if x < 10.0 { 2 } else { 1 };
    format!("{x:.digits$} {}", UNITS[unit])
}

/// Splits a paragraph into lines of at most `width` characters, at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(human_count(134_515_008), "134.5M");
        assert_eq!(human_count(1_543_714_304), "1.54B");
        assert_eq!(human_count(999), "999");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(98_362_432), "93.8 MiB");
        assert_eq!(human_bytes(1 << 30), "1.00 GiB");
    }

    #[test]
    fn shortening() {
        let a = Array::U32((0..100).collect());
        assert_eq!(show_array(&a, 3), "[0, 1, 2, … 97 more]");
        let long = "x".repeat(500);
        assert!(show_string(&long, false).contains("500 characters"));
        assert_eq!(show_string(&long, true).len(), 502);
        assert_eq!(wrap("a bb ccc dddd", 6), vec!["a bb", "ccc", "dddd"]);
    }
}
