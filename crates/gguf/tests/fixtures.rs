//! Every fixture GGUF parses, and its tensors match the manifest's `tensor_types.json`.

use std::path::PathBuf;

use grist_gguf::GgufFile;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The fixture files: the copies in the repo, plus the large F32/F16/BF16 ones when
/// `../shared` is present.
fn fixture_paths() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in [
        workspace().join("tests/fixtures/models"),
        workspace().join("../shared/fixtures/models"),
    ] {
        match std::fs::read_dir(&dir) {
            Ok(rd) => {
                for e in rd.flatten() {
                    let p = e.path();
                    if p.extension().is_some_and(|x| x == "gguf")
                        && !out.iter().any(|q: &PathBuf| q.file_name() == p.file_name())
                    {
                        out.push(p);
                    }
                }
            }
            Err(_) => eprintln!("SKIPPED: fixture directory {} not found", dir.display()),
        }
    }
    out.sort();
    out
}

#[test]
fn every_fixture_matches_the_manifest() {
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(workspace().join("tests/fixtures/tensor_types.json"))
            .expect("tests/fixtures/tensor_types.json"),
    )
    .expect("valid JSON");
    let paths = fixture_paths();
    assert!(
        paths.len() >= 16,
        "expected the fixture models, found {}",
        paths.len()
    );
    for path in paths {
        let f = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let stem = path.file_name().unwrap().to_str().unwrap();
        assert!(f.version() == 3 || f.version() == 2);
        assert!(f.get_str("general.architecture").is_ok());
        // The tensor table equals the manifest's: same names, types and shapes, in order.
        // tiny-qwen2-f32 and tiny-llama-tied-f32 were added after tensor_types.json was
        // written; they are checked by parsing and by their quantized siblings' tests.
        let Some(expected) = manifest[stem].as_array() else {
            eprintln!("note: {stem} is not in tensor_types.json; parsed only");
            continue;
        };
        assert_eq!(f.tensors().len(), expected.len(), "{stem}: tensor count");
        for (t, e) in f.tensors().iter().zip(expected) {
            assert_eq!(t.name, e[0].as_str().unwrap(), "{stem}");
            assert_eq!(t.ty.name(), e[1].as_str().unwrap(), "{stem}: {}", t.name);
            let dims: Vec<u64> = e[2]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .collect();
            assert_eq!(t.dims, dims, "{stem}: {}", t.name);
            assert_eq!(f.tensor_data(t).len() as u64, t.n_bytes);
        }
    }
}
