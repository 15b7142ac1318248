//! Writer ↔ reader round trips: every value type, nested arrays, every ggml type's sizes,
//! alignment variants, version 2, re-writing the fixture models, and the fuzzer's regression
//! inputs.

use std::path::PathBuf;

use grist_gguf::{Array, GgmlType, GgufError, GgufFile, GgufWriter, Value, ValueType};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read_back(w: &GgufWriter) -> GgufFile {
    let bytes = w.to_bytes().expect("write");
    GgufFile::from_bytes(bytes).unwrap_or_else(|e| panic!("written file does not parse: {e}"))
}

/// Deterministic filler bytes.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn every_value_type_round_trips() {
    let scalars: Vec<(&str, Value)> = vec![
        ("u8", Value::U8(255)),
        ("i8", Value::I8(-128)),
        ("u16", Value::U16(65535)),
        ("i16", Value::I16(-32768)),
        ("u32", Value::U32(u32::MAX)),
        ("i32", Value::I32(i32::MIN)),
        ("f32", Value::F32(-1.25e-3)),
        ("bool.t", Value::Bool(true)),
        ("bool.f", Value::Bool(false)),
        ("string", Value::String("grüß 🦀 \0 nul".into())),
        ("string.empty", Value::String(String::new())),
        ("u64", Value::U64(u64::MAX)),
        ("i64", Value::I64(i64::MIN)),
        ("f64", Value::F64(std::f64::consts::PI)),
    ];
    let arrays: Vec<(&str, Array)> = vec![
        ("a.u8", Array::U8(vec![0, 1, 255])),
        ("a.i8", Array::I8(vec![-1, 0, 127])),
        ("a.u16", Array::U16(vec![1, 65535])),
        ("a.i16", Array::I16(vec![-2, 2])),
        ("a.u32", Array::U32(vec![7; 100])),
        ("a.i32", Array::I32(vec![-7, 7])),
        ("a.f32", Array::F32(vec![0.5, -0.0, f32::INFINITY])),
        ("a.bool", Array::Bool(vec![true, false, true])),
        (
            "a.string",
            Array::String(vec!["".into(), "x".into(), "ÿ".into()]),
        ),
        ("a.u64", Array::U64(vec![u64::MAX, 0])),
        ("a.i64", Array::I64(vec![i64::MIN, i64::MAX])),
        ("a.f64", Array::F64(vec![1e300, -1e-300])),
        ("a.empty", Array::U32(vec![])),
        ("a.empty_strings", Array::String(vec![])),
        (
            "a.nested",
            Array::Array(vec![
                Array::U8(vec![1, 2, 3]),
                Array::String(vec!["in".into()]),
                Array::Array(vec![Array::F64(vec![2.0]), Array::Array(vec![])]),
                Array::Bool(vec![]),
            ]),
        ),
        ("a.nested.empty", Array::Array(vec![])),
    ];
    let mut w = GgufWriter::new();
    for (k, v) in &scalars {
        w.add(k, v.clone()).unwrap();
    }
    for (k, a) in &arrays {
        w.add(k, a.clone()).unwrap();
    }
    // The deepest nesting the reader accepts.
    let mut deep = Array::I16(vec![-1]);
    for _ in 1..grist_gguf::MAX_ARRAY_DEPTH {
        deep = Array::Array(vec![deep]);
    }
    w.add("a.deepest", deep.clone()).unwrap();
    // Special float bit patterns survive exactly.
    w.add("nan32", Value::F32(f32::from_bits(0x7fc0_1234)))
        .unwrap();
    w.add("nan64", Value::F64(f64::from_bits(0x7ff8_0000_dead_beef)))
        .unwrap();

    let f = read_back(&w);
    assert_eq!(f.version(), 3);
    assert!(f.tensors().is_empty());
    let n_expected = scalars.len() + arrays.len() + 3;
    assert_eq!(f.metadata().len(), n_expected);
    for (i, (k, v)) in scalars.iter().enumerate() {
        assert_eq!(f.metadata()[i].0, *k, "order is preserved");
        assert_eq!(f.get(k), Some(v), "{k}");
    }
    for (k, a) in &arrays {
        assert_eq!(f.get(k).and_then(Value::as_array), Some(a), "{k}");
    }
    assert_eq!(f.get("a.deepest").and_then(Value::as_array), Some(&deep));
    match f.get("nan32") {
        Some(Value::F32(x)) => assert_eq!(x.to_bits(), 0x7fc0_1234),
        v => panic!("{v:?}"),
    }
    match f.get("nan64") {
        Some(Value::F64(x)) => assert_eq!(x.to_bits(), 0x7ff8_0000_dead_beef),
        v => panic!("{v:?}"),
    }
    // Typed accessors over the written values.
    assert_eq!(f.get_u32("u32").unwrap(), u32::MAX);
    assert_eq!(f.get_u64("u8").unwrap(), 255);
    assert_eq!(f.get_i64("i8").unwrap(), -128);
    assert_eq!(f.get_f32("f64").unwrap(), std::f32::consts::PI);
    assert!(f.get_bool("bool.t").unwrap());
    assert_eq!(f.get_str("string.empty").unwrap(), "");
    assert_eq!(f.get_array::<u64>("a.u16").unwrap(), vec![1, 65535]);
    assert_eq!(f.get_str_array("a.string").unwrap(), vec!["", "x", "ÿ"]);
    assert_eq!(
        f.get_array::<bool>("a.bool").unwrap(),
        vec![true, false, true]
    );
    // Errors name the key and the types.
    let e = f.get_u32("i8").unwrap_err().to_string();
    assert_eq!(e, "metadata key 'i8' has type i8, expected u32");
    let e = f.get_array::<u32>("a.string").unwrap_err().to_string();
    assert_eq!(
        e,
        "metadata key 'a.string' has type string, expected array of u32"
    );
    assert!(matches!(
        f.get_str("nope"),
        Err(GgufError::MissingKey { .. })
    ));
    assert_eq!(f.get("a.nested").unwrap().value_type(), ValueType::Array);
}

#[test]
fn every_ggml_type_round_trips_with_its_size() {
    let mut w = GgufWriter::new();
    let mut expected = Vec::new();
    for (i, ty) in GgmlType::all().enumerate() {
        let dims = [2 * ty.block_elems() as u64, 3];
        let n_bytes = 6 * ty.block_bytes();
        let data = pattern(n_bytes, i as u8);
        w.add_tensor(&format!("t.{ty}"), ty, &dims, data.clone())
            .unwrap();
        expected.push((ty, dims, data));
        // The wrong size is refused, naming the right one.
        let e = w
            .add_tensor("bad", ty, &dims, vec![0u8; n_bytes + 1])
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("needs {n_bytes} bytes")), "{e}");
    }
    let f = read_back(&w);
    assert_eq!(f.tensors().len(), expected.len());
    for (t, (ty, dims, data)) in f.tensors().iter().zip(&expected) {
        assert_eq!(t.ty, *ty);
        assert_eq!(t.dims, dims);
        assert_eq!(t.n_bytes, data.len() as u64);
        assert_eq!(t.n_elements(), dims[0] * dims[1]);
        assert_eq!(t.offset % 32, 0);
        assert_eq!(f.tensor_data(t), &data[..], "{ty}");
    }
}

#[test]
fn alignment_variants() {
    for align in [
        None,
        Some(1u32),
        Some(2),
        Some(8),
        Some(32),
        Some(64),
        Some(4096),
    ] {
        let mut w = GgufWriter::new();
        w.add("general.architecture", "test").unwrap();
        if let Some(a) = align {
            w.set_alignment(a).unwrap();
        }
        let a = align.unwrap_or(32) as u64;
        assert_eq!(w.alignment(), a);
        // Odd sizes so that padding matters.
        w.add_tensor("a", GgmlType::I8, &[7], pattern(7, 1))
            .unwrap();
        w.add_tensor("b", GgmlType::F16, &[3, 3], pattern(18, 2))
            .unwrap();
        w.add_tensor("c", GgmlType::Q4_0, &[64], pattern(36, 3))
            .unwrap();
        let f = read_back(&w);
        assert_eq!(f.alignment(), a);
        assert_eq!(f.data_offset() % a, 0);
        let mut next = 0;
        for t in f.tensors() {
            assert_eq!(
                t.offset, next,
                "tensors are contiguous (llama.cpp requires it)"
            );
            next = (t.offset + t.n_bytes).next_multiple_of(a);
        }
        assert_eq!(f.file_size(), f.data_offset() + next);
        assert_eq!(f.tensor("c").unwrap().data, &pattern(36, 3)[..]);
    }
}

#[test]
fn version_2_round_trips() {
    let mut w = GgufWriter::new();
    w.set_version(2).unwrap();
    assert!(w.set_version(1).is_err());
    w.add("k", "v").unwrap();
    w.add_tensor("t", GgmlType::F32, &[1], vec![0, 0, 128, 63])
        .unwrap();
    let f = read_back(&w);
    assert_eq!(f.version(), 2);
    assert_eq!(f.get_str("k").unwrap(), "v");
}

#[test]
fn write_to_path_and_open() {
    let dir = std::env::temp_dir().join(format!("grist-roundtrip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("out.gguf");
    let mut w = GgufWriter::new();
    w.add("general.name", "on disk").unwrap();
    w.add_tensor("x", GgmlType::Q8_0, &[32, 2], pattern(68, 9))
        .unwrap();
    let n = w.write_to_path(&path).unwrap();
    assert_eq!(n, std::fs::metadata(&path).unwrap().len());
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.get_str("general.name").unwrap(), "on disk");
    assert_eq!(f.require_tensor("x").unwrap().data, &pattern(68, 9)[..]);
    drop(f);
    let bad = dir.join("missing-dir/out.gguf");
    let e = w.write_to_path(&bad).unwrap_err().to_string();
    assert!(e.contains("missing-dir/out.gguf"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Re-writing each fixture model gives a file with identical metadata and tensor bytes.
/// The fixtures were written by llama.cpp's gguf-py, whose layout the writer follows, so the
/// output is in fact byte-identical.
#[test]
fn rewriting_fixtures_is_lossless() {
    let dir = workspace().join("tests/fixtures/models");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/fixtures/models")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    names.sort();
    assert!(names.len() >= 16);
    let mut identical = 0;
    for path in &names {
        let orig = GgufFile::open(path).unwrap();
        let mut w = GgufWriter::new();
        w.set_version(orig.version()).unwrap();
        for (k, v) in orig.metadata() {
            w.add(k, v.clone()).unwrap();
        }
        for t in orig.tensors() {
            w.add_tensor(&t.name, t.ty, &t.dims, orig.tensor_data(t))
                .unwrap();
        }
        let bytes = w.to_bytes().unwrap();
        if bytes == orig.bytes() {
            identical += 1;
        }
        let copy = GgufFile::from_bytes(bytes).unwrap();
        assert_eq!(copy.metadata(), orig.metadata(), "{}", path.display());
        assert_eq!(copy.tensors().len(), orig.tensors().len());
        for (a, b) in copy.tensors().iter().zip(orig.tensors()) {
            assert_eq!((&a.name, &a.dims, a.ty), (&b.name, &b.dims, b.ty));
            assert_eq!(copy.tensor_data(a), orig.tensor_data(b), "{}", a.name);
        }
    }
    eprintln!(
        "{identical} of {} fixtures re-written byte-identical",
        names.len()
    );
    assert_eq!(
        identical,
        names.len(),
        "the writer should reproduce gguf-py's layout"
    );
}

/// Inputs the fuzzer once choked on (see docs/FUZZING.md) stay handled.
#[test]
fn fuzz_regressions() {
    let dir = workspace().join("fuzz/regressions");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        eprintln!("SKIPPED: {} not found", dir.display());
        return;
    };
    for e in rd.flatten() {
        let bytes = std::fs::read(e.path()).unwrap();
        if let Ok(f) = GgufFile::from_bytes(bytes) {
            for t in f.tensors() {
                assert_eq!(f.tensor_data(t).len() as u64, t.n_bytes);
            }
        }
    }
    // huge-alignment-no-tensors: a 458-byte file declaring general.alignment = 2^24 and no
    // tensors is valid (the data section would start past its end, but holds nothing).
    let f = GgufFile::open(dir.join("huge-alignment-no-tensors.gguf")).unwrap();
    assert_eq!(f.alignment(), 1 << 24);
    assert!(f.tensors().is_empty());
}
