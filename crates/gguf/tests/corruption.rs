//! Hardening proof, part 1 (part 2 is the fuzzer, see docs/FUZZING.md): malformed files give
//! a clean `Malformed` error that says what is wrong and at which byte, never a panic and
//! never an allocation sized from a count the file cannot back.
//!
//! - every truncation of the header region of real fixture files;
//! - thousands of seeded random byte flips (when the result still parses, every tensor view
//!   lies inside the file, aligned, with the size its type and shape imply);
//! - forged fields: huge counts, lengths, dims, offsets, unknown type ids, deep nesting, bad
//!   alignment, duplicate keys and tensors, bad magic/version/bool/UTF-8.
//!
//! A counting global allocator records the largest single allocation made while parsing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;

use grist_gguf::{parse_header, GgmlType, GgufError, GgufFile, GgufWriter, Header};

// ---------------------------------------------------------------------------------------------
// Allocation tracking

/// The system allocator, recording the largest allocation of the current thread while
/// tracking is on (tests run in parallel threads; each tracks its own).
struct Tracking;

thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // try_with: the thread-locals may be gone while a thread is torn down.
    let _ = TRACK.try_with(|t| {
        if t.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

// SAFETY: forwards every call unchanged to the system allocator; the bookkeeping touches only
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// Parses `buf`, returning the result and the largest single allocation made meanwhile.
fn parse_tracked(buf: &[u8]) -> (Result<Header, GgufError>, usize) {
    LARGEST.with(|l| l.set(0));
    TRACK.with(|t| t.set(true));
    let r = parse_header(buf);
    TRACK.with(|t| t.set(false));
    (r, LARGEST.with(|l| l.get()))
}

/// Slack for error messages and small fixed-size tables, which may exceed a tiny input.
const ALLOC_SLACK: usize = 4096;

/// Largest allocation allowed, as a multiple of the input size. Pre-allocations from counts
/// never exceed the input; only items actually present can take more memory than their
/// encoding (a parsed vocabulary: 24 bytes per `String`, its encoding as little as 8).
const ALLOC_FACTOR: usize = 3;

// ---------------------------------------------------------------------------------------------
// Helpers

/// SplitMix64: a tiny seeded PRNG (no `rand` dependency).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models")
}

fn fixture(name: &str) -> Vec<u8> {
    let p = fixtures_dir().join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn all_fixtures() -> Vec<(String, Vec<u8>)> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures/models")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".gguf"))
        .collect();
    names.sort();
    assert!(names.len() >= 16, "expected the 16 fixture models");
    names
        .into_iter()
        .map(|n| (n.clone(), fixture(&n)))
        .collect()
}

/// Asserts a `Malformed` error whose message mentions `needle`, and returns its offset.
#[track_caller]
fn expect_malformed(r: Result<Header, GgufError>, needle: &str) -> u64 {
    match r {
        Ok(_) => panic!("expected an error mentioning {needle:?}, the file parsed"),
        Err(e @ GgufError::Malformed { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(needle),
                "error {text:?} does not mention {needle:?}"
            );
            assert!(text.contains("at byte "), "error {text:?} names no offset");
            match e {
                GgufError::Malformed { offset, .. } => offset,
                _ => unreachable!(),
            }
        }
        Err(e) => panic!("expected Malformed, got {e}"),
    }
}

/// A parsed file's tensors all lie inside `buf`, aligned, with consistent sizes.
fn check_tensors_in_bounds(h: &Header, buf: &[u8]) {
    assert!(h.alignment.is_power_of_two());
    assert_eq!(h.data_offset % h.alignment, 0);
    for t in &h.tensors {
        assert_eq!(t.offset % h.alignment, 0, "{}", t.name);
        assert_eq!(
            Some(t.n_bytes),
            t.ty.bytes_for(t.n_elements()),
            "{}",
            t.name
        );
        let end = h.data_offset + t.offset + t.n_bytes;
        assert!(end <= buf.len() as u64, "{} ends at {end}", t.name);
    }
}

/// Byte positions of the fields of a valid GGUF file, found by walking it.
#[derive(Debug, Default)]
struct Fields {
    /// (key, position of the key's length field, position of the value type, of the value)
    kvs: Vec<(String, usize, usize, usize)>,
    /// per tensor: name, name length field, n_dims field, dims, type field, offset field
    tensors: Vec<TensorFields>,
}

#[derive(Debug, Default)]
struct TensorFields {
    name: String,
    name_at: usize,
    n_dims_at: usize,
    dims_at: Vec<usize>,
    type_at: usize,
    offset_at: usize,
}

fn rd_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn rd_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
fn wr_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn wr_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Skips one value of type `tag` at `pos`, returning the position after it.
fn skip_value(b: &[u8], tag: u32, pos: usize) -> usize {
    match tag {
        0 | 1 | 7 => pos + 1,
        2 | 3 => pos + 2,
        4..=6 => pos + 4,
        10..=12 => pos + 8,
        8 => pos + 8 + rd_u64(b, pos) as usize,
        9 => {
            let elem = rd_u32(b, pos);
            let n = rd_u64(b, pos + 4);
            let mut p = pos + 12;
            for _ in 0..n {
                p = skip_value(b, elem, p);
            }
            p
        }
        _ => panic!("bad tag {tag} in a valid file"),
    }
}

fn walk(b: &[u8]) -> Fields {
    let n_tensors = rd_u64(b, 8) as usize;
    let n_kv = rd_u64(b, 16) as usize;
    let mut pos = 24;
    let mut f = Fields::default();
    for _ in 0..n_kv {
        let key_at = pos;
        let len = rd_u64(b, pos) as usize;
        let key = String::from_utf8(b[pos + 8..pos + 8 + len].to_vec()).unwrap();
        pos += 8 + len;
        let type_at = pos;
        let tag = rd_u32(b, pos);
        pos += 4;
        f.kvs.push((key, key_at, type_at, pos));
        pos = skip_value(b, tag, pos);
    }
    for _ in 0..n_tensors {
        let mut t = TensorFields {
            name_at: pos,
            ..Default::default()
        };
        let len = rd_u64(b, pos) as usize;
        t.name = String::from_utf8(b[pos + 8..pos + 8 + len].to_vec()).unwrap();
        pos += 8 + len;
        t.n_dims_at = pos;
        let n_dims = rd_u32(b, pos) as usize;
        pos += 4;
        for _ in 0..n_dims {
            t.dims_at.push(pos);
            pos += 8;
        }
        t.type_at = pos;
        t.offset_at = pos + 4;
        pos += 12;
        f.tensors.push(t);
    }
    f
}

fn kv<'a>(f: &'a Fields, key: &str) -> &'a (String, usize, usize, usize) {
    f.kvs
        .iter()
        .find(|k| k.0 == key)
        .unwrap_or_else(|| panic!("no key {key}"))
}

/// A small valid file with a little of everything, written by our writer.
fn small_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add("general.architecture", "llama").unwrap();
    w.add("flag", true).unwrap();
    w.add("key.a", 1u32).unwrap();
    w.add("key.b", 2u32).unwrap();
    w.add("tokens", vec!["a", "bb", "ccc"]).unwrap();
    w.add_tensor("blk.0.w", GgmlType::Q8_0, &[32, 2], vec![0u8; 68])
        .unwrap();
    w.add_tensor("blk.1.w", GgmlType::F32, &[4], vec![0u8; 16])
        .unwrap();
    w.to_bytes().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Truncation

#[test]
fn every_truncation_of_the_header_region_is_a_clean_error() {
    let mut checked = 0usize;
    let mut largest_ratio = 0f64;
    for (name, bytes) in all_fixtures() {
        let full = parse_header(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let end = (full.data_offset as usize + 256).min(bytes.len() - 1);
        // Every prefix for two architectures; for the other fixtures (same metadata layout)
        // every prefix of the tensor-info table and a stride through the metadata.
        let every = name.contains("gemma3") || name.contains("qwen3");
        let first_info = walk(&bytes).tensors[0].name_at;
        for len in 0..=end {
            if !every && len < first_info && len % 7 != 0 {
                continue;
            }
            let prefix = &bytes[..len];
            let (r, largest) = parse_tracked(prefix);
            let e = match r {
                Ok(_) => panic!("{name}: prefix of {len} bytes parsed"),
                Err(e) => e,
            };
            let text = e.to_string();
            let GgufError::Malformed { offset, message } = e else {
                panic!("{name}: prefix {len}: not Malformed: {text}");
            };
            assert!(!message.is_empty());
            // The error points inside the prefix, or (tensor past the end) says so.
            assert!(
                offset <= len as u64 || text.contains("past the end"),
                "{name}: prefix {len}: offset {offset}: {text}"
            );
            assert!(
                largest <= ALLOC_FACTOR * len + ALLOC_SLACK,
                "{name}: prefix {len}: allocated {largest} bytes at once"
            );
            largest_ratio = largest_ratio.max(largest as f64 / len.max(1) as f64);
            checked += 1;
        }
    }
    eprintln!("checked {checked} truncations; largest allocation/prefix ratio {largest_ratio:.2}");
}

// ---------------------------------------------------------------------------------------------
// Random byte flips

#[test]
fn random_byte_flips_give_ok_or_a_clean_error() {
    let mut rng = Rng(0x6772_6973_7400_0001);
    let fixtures = all_fixtures();
    let (mut ok, mut err) = (0usize, 0usize);
    for round in 0..6000 {
        let (name, orig) = &fixtures[rng.below(fixtures.len())];
        let header_len = parse_header(orig).unwrap().data_offset as usize;
        let mut buf = orig.clone();
        let n_flips = 1 + rng.below(8);
        for _ in 0..n_flips {
            // Mostly inside the header region (where the parser looks), sometimes anywhere.
            let at = if rng.below(10) == 0 {
                rng.below(buf.len())
            } else {
                rng.below(header_len)
            };
            buf[at] = match rng.below(4) {
                0 => buf[at] ^ (1 << rng.below(8)),
                1 => 0xff,
                2 => 0,
                _ => rng.next() as u8,
            };
        }
        let (r, largest) = parse_tracked(&buf);
        assert!(
            largest <= buf.len() + ALLOC_SLACK,
            "round {round} ({name}): allocated {largest} bytes at once"
        );
        match r {
            Ok(h) => {
                ok += 1;
                check_tensors_in_bounds(&h, &buf);
                if round % 16 == 0 {
                    // The full file type too: views and accessors.
                    let f = GgufFile::from_bytes(buf).unwrap();
                    for t in f.tensors() {
                        assert_eq!(f.tensor(&t.name).unwrap().data.len() as u64, t.n_bytes);
                    }
                    for (k, _) in f.metadata() {
                        let _ = (f.get_u32(k), f.get_str(k), f.get_array::<String>(k));
                    }
                }
            }
            Err(e @ GgufError::Malformed { .. }) => {
                err += 1;
                assert!(e.to_string().starts_with("malformed GGUF at byte "));
            }
            Err(e) => panic!("round {round} ({name}): not Malformed: {e}"),
        }
    }
    eprintln!("byte flips: {ok} parsed, {err} rejected");
    assert!(ok > 100 && err > 100, "flips should exercise both outcomes");
}

// ---------------------------------------------------------------------------------------------
// Forged fields

/// Parses a forged file, checks the error and the allocation bound, returns the offset.
#[track_caller]
fn forged(buf: &[u8], needle: &str) -> u64 {
    let (r, largest) = parse_tracked(buf);
    assert!(
        largest <= buf.len() + ALLOC_SLACK,
        "forged {needle:?}: allocated {largest} bytes at once for a {}-byte file",
        buf.len()
    );
    expect_malformed(r, needle)
}

#[test]
fn forged_counts_and_lengths() {
    for (name, orig) in [
        ("small", small_file()),
        ("llama", fixture("tiny-llama-q4_k_m.gguf")),
    ] {
        let f = walk(&orig);
        for huge in [u64::MAX, 1 << 62, orig.len() as u64] {
            let mut b = orig.clone();
            wr_u64(&mut b, 8, huge);
            assert_eq!(forged(&b, "tensor count"), 8, "{name}");

            let mut b = orig.clone();
            wr_u64(&mut b, 16, huge);
            assert_eq!(forged(&b, "metadata key/value count"), 16, "{name}");

            let mut b = orig.clone();
            let key = &f.kvs[1];
            wr_u64(&mut b, key.1, huge);
            assert_eq!(
                forged(&b, "length of key of metadata entry 1"),
                key.1 as u64
            );

            let mut b = orig.clone();
            let arch = kv(&f, "general.architecture");
            wr_u64(&mut b, arch.3, huge);
            let at = forged(&b, "length of value of 'general.architecture'");
            assert_eq!(at, arch.3 as u64);

            let tokens = if name == "small" {
                "tokens"
            } else {
                "tokenizer.ggml.tokens"
            };
            let mut b = orig.clone();
            let arr = kv(&f, tokens);
            wr_u64(&mut b, arr.3 + 4, huge);
            let at = forged(&b, &format!("element count of array '{tokens}'"));
            assert_eq!(at, arr.3 as u64 + 4);

            // A string element's length inside the array.
            let mut b = orig.clone();
            wr_u64(&mut b, arr.3 + 12, huge);
            assert_eq!(
                forged(&b, "length of element 0 of array"),
                arr.3 as u64 + 12
            );

            let mut b = orig.clone();
            let t = &f.tensors[0];
            wr_u64(&mut b, t.name_at, huge);
            assert_eq!(forged(&b, "length of name of tensor 0"), t.name_at as u64);
        }
    }
}

#[test]
fn forged_tensor_infos() {
    for (name, orig) in [
        ("small", small_file()),
        ("qwen3", fixture("tiny-qwen3-q4_k_m.gguf")),
    ] {
        let f = walk(&orig);
        let t = &f.tensors[0];
        let last = f.tensors.last().unwrap();

        for n_dims in [0u32, 5, u32::MAX] {
            let mut b = orig.clone();
            wr_u32(&mut b, t.n_dims_at, n_dims);
            assert_eq!(
                forged(&b, "dimensions (allowed: 1 to 4)"),
                t.n_dims_at as u64,
                "{name}"
            );
        }

        // Dims whose product overflows u64 (each alone is fine).
        if t.dims_at.len() >= 2 {
            let mut b = orig.clone();
            wr_u64(&mut b, t.dims_at[0], 1 << 40);
            wr_u64(&mut b, t.dims_at[1], 1 << 40);
            assert_eq!(forged(&b, "overflows"), t.n_dims_at as u64, "{name}");
            // A product past i64::MAX (ggml's limit) but inside u64.
            let mut b = orig.clone();
            wr_u64(&mut b, t.dims_at[0], 1 << 33);
            wr_u64(&mut b, t.dims_at[1], 1 << 31);
            assert_eq!(forged(&b, "more than 2^63 elements"), t.n_dims_at as u64);
        }
        let mut b = orig.clone();
        wr_u64(&mut b, t.dims_at[0], u64::MAX);
        assert_eq!(forged(&b, "dimension 0 is"), t.dims_at[0] as u64, "{name}");
        assert!(parse_header(&b)
            .unwrap_err()
            .to_string()
            .contains("too large"));

        // Huge but representable shape: the bytes lie past the end of the file.
        let mut b = orig.clone();
        wr_u64(&mut b, last.dims_at[0], 1 << 40);
        forged(&b, "extends past the end");

        // Row length not a whole number of blocks (quantized tensor).
        let quant = f
            .tensors
            .iter()
            .find(|t| {
                GgmlType::from_id(rd_u32(&orig, t.type_at))
                    .unwrap()
                    .is_quantized()
            })
            .unwrap();
        let mut b = orig.clone();
        let d0 = rd_u64(&b, quant.dims_at[0]);
        wr_u64(&mut b, quant.dims_at[0], d0 + 1);
        assert_eq!(forged(&b, "not a multiple of the"), quant.n_dims_at as u64);

        for bad_type in [4u32, 31, 36, 43, 1000, u32::MAX] {
            let mut b = orig.clone();
            wr_u32(&mut b, t.type_at, bad_type);
            let at = forged(&b, &format!("unknown ggml type id {bad_type}"));
            assert_eq!(at, t.type_at as u64);
        }

        let mut b = orig.clone();
        let off = rd_u64(&b, last.offset_at);
        wr_u64(&mut b, last.offset_at, off + 1);
        assert_eq!(
            forged(&b, "is not a multiple of the alignment 32"),
            last.offset_at as u64
        );

        for past in [
            (orig.len() as u64).next_multiple_of(32),
            1 << 60,
            u64::MAX - 31,
        ] {
            let mut b = orig.clone();
            wr_u64(&mut b, last.offset_at, past);
            let at = forged(&b, "extends past the end");
            assert!(at >= orig.len() as u64 / 2, "{name}: offset {at}");
        }

        // Duplicate tensor: rename a later tensor to an earlier one's name of equal length.
        let (a, c) = f
            .tensors
            .iter()
            .enumerate()
            .find_map(|(i, a)| {
                let c = f.tensors[i + 1..]
                    .iter()
                    .find(|c| c.name.len() == a.name.len())?;
                Some((a, c))
            })
            .unwrap();
        let mut b = orig.clone();
        let name_bytes = a.name.as_bytes().to_vec();
        b[c.name_at + 8..c.name_at + 8 + name_bytes.len()].copy_from_slice(&name_bytes);
        let at = forged(&b, &format!("duplicate tensor name '{}'", a.name));
        assert_eq!(at, c.name_at as u64);
    }
}

#[test]
fn forged_metadata() {
    let orig = small_file();
    let f = walk(&orig);

    // Unknown value type tag.
    let flag = kv(&f, "flag");
    for tag in [13u32, 255, u32::MAX] {
        let mut b = orig.clone();
        wr_u32(&mut b, flag.2, tag);
        assert_eq!(
            forged(&b, &format!("unknown value type tag {tag}")),
            flag.2 as u64
        );
    }
    // Unknown array element type.
    let tokens = kv(&f, "tokens");
    let mut b = orig.clone();
    wr_u32(&mut b, tokens.3, 99);
    assert_eq!(
        forged(&b, "element type of array 'tokens'"),
        tokens.3 as u64
    );

    // Bool byte other than 0/1.
    let mut b = orig.clone();
    b[flag.3] = 2;
    assert_eq!(forged(&b, "bool byte is 2"), flag.3 as u64);

    // Invalid UTF-8 in a key: reported at the bad byte.
    let mut b = orig.clone();
    b[flag.1 + 8 + 2] = 0xff;
    assert_eq!(forged(&b, "not valid UTF-8"), flag.1 as u64 + 8 + 2);

    // Duplicate key: "key.b" renamed to "key.a".
    let kb = kv(&f, "key.b");
    let mut b = orig.clone();
    b[kb.1 + 8..kb.1 + 8 + 5].copy_from_slice(b"key.a");
    assert_eq!(forged(&b, "duplicate metadata key 'key.a'"), kb.1 as u64);

    // Arrays nested too deep, each level claiming one element.
    let mut nested = Vec::new();
    for _ in 0..12 {
        nested.extend_from_slice(&9u32.to_le_bytes());
        nested.extend_from_slice(&1u64.to_le_bytes());
    }
    nested.extend_from_slice(&0u32.to_le_bytes());
    nested.extend_from_slice(&0u64.to_le_bytes());
    let b = raw_file(&[("deep", 9, &nested)]);
    forged(&b, "arrays nested deeper than 8");
    // Eight levels are fine.
    let mut ok = Vec::new();
    for _ in 0..7 {
        ok.extend_from_slice(&9u32.to_le_bytes());
        ok.extend_from_slice(&1u64.to_le_bytes());
    }
    ok.extend_from_slice(&0u32.to_le_bytes());
    ok.extend_from_slice(&0u64.to_le_bytes());
    let b = raw_file(&[("deep", 9, &ok)]);
    parse_header(&b).expect("eight levels of nesting");
}

/// A file with no tensors and the given raw (key, type tag, value bytes) entries.
fn raw_file(kvs: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (k, tag, v) in kvs {
        b.extend_from_slice(&(k.len() as u64).to_le_bytes());
        b.extend_from_slice(k.as_bytes());
        b.extend_from_slice(&tag.to_le_bytes());
        b.extend_from_slice(v);
    }
    b
}

#[test]
fn forged_alignment() {
    let value_at = 24 + 8 + "general.alignment".len() + 4;
    for a in [0u32, 3, 48, u32::MAX] {
        let b = raw_file(&[("general.alignment", 4, &a.to_le_bytes())]);
        let at = forged(&b, "general.alignment must be a u32 power of two");
        assert_eq!(at, value_at as u64);
    }
    // Right number, wrong type.
    let b = raw_file(&[("general.alignment", 10, &32u64.to_le_bytes())]);
    assert_eq!(forged(&b, "found u64 32"), value_at as u64);
    let b = raw_file(&[("general.alignment", 8, b"\x02\0\0\0\0\0\0\0ab")]);
    forged(&b, "general.alignment must be");
    // A good non-default alignment: tensor offsets must respect it.
    let mut w = GgufWriter::new();
    w.set_alignment(64).unwrap();
    w.add_tensor("a", GgmlType::F32, &[1], vec![0u8; 4])
        .unwrap();
    w.add_tensor("b", GgmlType::F32, &[1], vec![0u8; 4])
        .unwrap();
    let mut b = w.to_bytes().unwrap();
    let f = walk(&b);
    wr_u64(&mut b, f.tensors[1].offset_at, 32);
    forged(&b, "offset 32 is not a multiple of the alignment 64");
}

#[test]
fn bad_magic_and_versions() {
    let orig = small_file();
    let mut b = orig.clone();
    b[..4].copy_from_slice(b"GGML");
    assert_eq!(forged(&b, "not a GGUF file"), 0);
    for (v, needle) in [
        (1u32, "version 1 is not supported"),
        (0, "unsupported GGUF version 0"),
        (4, "unsupported GGUF version 4"),
        (3u32.swap_bytes(), "big-endian"),
        (2u32.swap_bytes(), "big-endian"),
    ] {
        let mut b = orig.clone();
        wr_u32(&mut b, 4, v);
        assert_eq!(forged(&b, needle), 4);
    }
    let mut b = orig.clone();
    wr_u32(&mut b, 4, 2);
    parse_header(&b).expect("version 2 reads like version 3");
}

#[test]
fn io_errors_name_the_file() {
    let e = GgufFile::open("/nonexistent/model.gguf").unwrap_err();
    assert!(e.to_string().contains("/nonexistent/model.gguf"), "{e}");
    let dir = std::env::temp_dir().join(format!("grist-corrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("empty.gguf");
    std::fs::write(&p, b"").unwrap();
    let e = GgufFile::open(&p).unwrap_err();
    assert!(
        e.to_string()
            .contains("unexpected end of file reading magic"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
