//! Writes the seed corpus for `parse_gguf` into the directory given as the first argument
//! (default `fuzz/corpus/parse_gguf`): small synthesized GGUF files covering every value type,
//! nested arrays, every ggml type, alignments and version 2, plus a miniature of each fixture
//! model in `tests/fixtures/models` (its metadata with arrays cut to 16 elements, and every
//! tensor cut to one block, so seeds stay a few kilobytes and the fuzzer stays fast).
//!
//! Run: `cargo run --manifest-path fuzz/Cargo.toml --bin gen_corpus`

use std::path::{Path, PathBuf};

use grist_gguf::{Array, GgmlType, GgufFile, GgufWriter, Value};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("fuzz/corpus/parse_gguf"));
    std::fs::create_dir_all(&out).expect("create corpus directory");
    let mut n = 0;
    let mut save = |name: &str, w: &GgufWriter| {
        let bytes = w.to_bytes().expect("write seed");
        GgufFile::from_bytes(bytes.clone()).expect("seed parses");
        std::fs::write(out.join(format!("{name}.gguf")), bytes).expect("write seed file");
        n += 1;
    };

    save("empty", &GgufWriter::new());
    let mut v2 = GgufWriter::new();
    v2.set_version(2).unwrap();
    v2.add("general.architecture", "llama").unwrap();
    save("version2", &v2);

    let mut all = GgufWriter::new();
    all.add("u8", 1u8).unwrap();
    all.add("i8", -1i8).unwrap();
    all.add("u16", 2u16).unwrap();
    all.add("i16", -2i16).unwrap();
    all.add("u32", 3u32).unwrap();
    all.add("i32", -3i32).unwrap();
    all.add("f32", 1.5f32).unwrap();
    all.add("bool", true).unwrap();
    all.add("string", "héllo").unwrap();
    all.add("u64", 4u64).unwrap();
    all.add("i64", -4i64).unwrap();
    all.add("f64", 2.5f64).unwrap();
    all.add("a.u32", vec![1u32, 2, 3]).unwrap();
    all.add("a.f32", vec![0.5f32, -1.0]).unwrap();
    all.add("a.bool", vec![true, false]).unwrap();
    all.add("a.str", vec!["a", "", "ccc"]).unwrap();
    all.add("a.i8", vec![-1i8, 2]).unwrap();
    let nested = Array::Array(vec![
        Array::U8(vec![1, 2]),
        Array::Array(vec![Array::String(vec!["x".into()])]),
        Array::Array(vec![]),
    ]);
    all.add("a.nested", nested).unwrap();
    all.add_tensor("t.f32", GgmlType::F32, &[4, 2], vec![0u8; 32])
        .unwrap();
    save("all_value_types", &all);

    for align in [1u32, 8, 64, 256] {
        let mut w = GgufWriter::new();
        w.set_alignment(align).unwrap();
        w.add_tensor("a", GgmlType::F16, &[3], vec![1u8; 6])
            .unwrap();
        w.add_tensor("b", GgmlType::Q8_0, &[32, 2], vec![2u8; 68])
            .unwrap();
        save(&format!("align{align}"), &w);
    }

    let mut types = GgufWriter::new();
    for ty in GgmlType::all() {
        let bytes = vec![ty.id() as u8; ty.block_bytes()];
        types
            .add_tensor(&format!("t.{ty}"), ty, &[ty.block_elems() as u64], bytes)
            .unwrap();
    }
    save("every_ggml_type", &types);

    let models = root.join("tests/fixtures/models");
    let mut paths: Vec<_> = std::fs::read_dir(&models)
        .expect("tests/fixtures/models")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    paths.sort();
    for path in paths {
        let f = GgufFile::open(&path).expect("fixture parses");
        let mut w = GgufWriter::new();
        for (key, value) in f.metadata() {
            w.add(key, shorten(value)).unwrap();
        }
        for t in f.tensors() {
            let mut dims = vec![1u64; t.dims.len()];
            dims[0] = t.ty.block_elems() as u64;
            let data = &f.tensor_data(t)[..t.ty.block_bytes()];
            w.add_tensor(&t.name, t.ty, &dims, data).unwrap();
        }
        let stem = path.file_stem().unwrap().to_string_lossy();
        save(&format!("mini-{stem}"), &w);
    }
    println!("wrote {n} seeds to {}", out.display());
}

/// The value with arrays cut to their first 16 elements.
fn shorten(v: &Value) -> Value {
    match v {
        Value::Array(a) if a.len() > 16 => {
            let items: Vec<Value> = (0..16).filter_map(|i| a.get(i)).collect();
            Value::Array(match a {
                Array::String(_) => Array::String(
                    items
                        .into_iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect(),
                ),
                Array::F32(v) => Array::F32(v[..16].to_vec()),
                Array::I32(v) => Array::I32(v[..16].to_vec()),
                Array::U32(v) => Array::U32(v[..16].to_vec()),
                other => other.clone(),
            })
        }
        other => other.clone(),
    }
}
