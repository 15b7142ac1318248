//! Hand-computed blocks: for each format a block with chosen fields, the values ggml's
//! dequantizer gives for it worked out by hand from the layout in docs/KERNELS.md, plus a few
//! hand-checked quantizations and the type-erased helpers' error handling.

use bytemuck::Zeroable;
use grist_gguf::GgmlType;
use grist_kernels::blocks::*;
use grist_kernels::formats::{
    activation_type, dequantize_row, is_supported, nearest_int, quantize_row, vec_dot_row,
    BlockFormat, FormatError,
};

fn deq<T: BlockFormat>(b: T) -> Vec<f32> {
    let mut y = vec![0.0; T::BLOCK_ELEMS];
    T::dequantize(&[b], &mut y);
    y
}

#[test]
fn q4_0_hand_block() {
    let mut b = BlockQ4_0::zeroed();
    b.d = f32_to_f16(0.5);
    b.qs[0] = 0x1F; // value 0 = 15, value 16 = 1
    let y = deq(b);
    assert_eq!(y[0], 0.5 * (15.0 - 8.0));
    assert_eq!(y[16], 0.5 * (1.0 - 8.0));
    assert_eq!(y[1], 0.5 * -8.0);
}

#[test]
fn q4_1_hand_block() {
    let mut b = BlockQ4_1::zeroed();
    b.d = f32_to_f16(0.25);
    b.m = f32_to_f16(-1.0);
    b.qs[3] = 0xA2;
    let y = deq(b);
    assert_eq!(y[3], 0.25 * 2.0 - 1.0);
    assert_eq!(y[19], 0.25 * 10.0 - 1.0);
    assert_eq!(y[0], -1.0);
}

#[test]
fn q5_0_and_q5_1_hand_blocks() {
    // qh bit 17 set: value 17 gets +16. qs[1] = 0x50: value 1 low = 0, value 17 low = 5.
    let qh = (1u32 << 17).to_le_bytes();
    let mut b = BlockQ5_0::zeroed();
    b.d = f32_to_f16(1.0);
    b.qh = qh;
    b.qs[1] = 0x50;
    let y = deq(b);
    assert_eq!(y[1], -16.0);
    assert_eq!(y[17], (5.0 + 16.0) - 16.0);

    let mut c = BlockQ5_1::zeroed();
    c.d = f32_to_f16(0.5);
    c.m = f32_to_f16(2.0);
    c.qh = qh;
    c.qs[1] = 0x50;
    let y = deq(c);
    assert_eq!(y[1], 2.0);
    assert_eq!(y[17], 0.5 * 21.0 + 2.0);
}

#[test]
fn q8_hand_blocks() {
    let mut b = BlockQ8_0::zeroed();
    b.d = f32_to_f16(0.125);
    b.qs[5] = -8;
    assert_eq!(deq(b)[5], -1.0);

    let mut c = BlockQ8_1::zeroed();
    c.d = f32_to_f16(2.0);
    c.qs[0] = 3;
    assert_eq!(deq(c)[0], 6.0);

    let mut k = BlockQ8_K::zeroed();
    k.d = 0.25;
    k.qs[10] = 4;
    assert_eq!(deq(k)[10], 1.0);
}

#[test]
fn iq4_nl_and_iq4_xs_hand_blocks() {
    let mut b = BlockIQ4_NL::zeroed();
    b.d = f32_to_f16(0.5);
    b.qs[0] = 0xF0; // value 0 → index 0 (-127), value 16 → index 15 (113)
    let y = deq(b);
    assert_eq!(y[0], 0.5 * -127.0);
    assert_eq!(y[16], 0.5 * 113.0);

    let mut x = BlockIQ4_XS::zeroed();
    x.d = f32_to_f16(1.0);
    x.scales_l[0] = 0x01; // group 0 low 4 bits = 1, group 1 low = 0
    x.scales_h = 0b10; // group 0 high bits = 2 → ls = 33 → scale +1; group 1 ls = 0 → -32
    x.qs[0] = 0x0F;
    x.qs[16] = 0x08; // group 1, value 32 → index 8 (1)
    let y = deq(x);
    assert_eq!(y[0], 113.0);
    assert_eq!(y[16], -127.0);
    assert_eq!(y[32], -32.0);
}

#[test]
fn q2_k_hand_block() {
    let mut b = BlockQ2_K::zeroed();
    b.d = f32_to_f16(1.0);
    b.dmin = f32_to_f16(0.5);
    b.scales = [0x32; 16]; // scale 2, min 3
    b.qs[0] = 0b11_10_01_00; // values 0, 32, 64, 96 get codes 0, 1, 2, 3
    let y = deq(b);
    assert_eq!(y[0], -1.5);
    assert_eq!(y[32], 2.0 - 1.5);
    assert_eq!(y[64], 4.0 - 1.5);
    assert_eq!(y[96], 6.0 - 1.5);
}

#[test]
fn q3_k_hand_block() {
    let mut b = BlockQ3_K::zeroed();
    b.d = f32_to_f16(1.0);
    b.scales[0] = 1; // group 0 low 4 bits
    b.scales[8] = 2; // group 0 high 2 bits → raw 33 → scale +1
    b.qs[0] = 3;
    b.hmask[0] = 1; // value 0 has its high bit: code 3
    let y = deq(b);
    assert_eq!(y[0], 3.0);
    assert_eq!(y[1], -4.0); // code 0 without high bit = -4
    assert_eq!(y[16], -32.0 * -4.0); // group 1 raw scale 0 → -32
}

#[test]
fn q4_k_and_q5_k_hand_blocks() {
    let mut scales = [0u8; 12];
    scales[0] = 2; // group 0 scale
    scales[4] = 1; // group 0 min
    scales[1] = 3; // group 1 scale, min 0
    scales[8] = 0x21; // group 4: scale 1, min 2
    let mut b = BlockQ4_K::zeroed();
    b.d = f32_to_f16(1.0);
    b.dmin = f32_to_f16(1.0);
    b.scales = scales;
    b.qs[0] = 0x05;
    b.qs[64] = 0x07;
    let y = deq(b);
    assert_eq!(y[0], 2.0 * 5.0 - 1.0);
    assert_eq!(y[32], 0.0);
    assert_eq!(y[128], 7.0 - 2.0);

    let mut c = BlockQ5_K::zeroed();
    c.d = f32_to_f16(1.0);
    c.dmin = f32_to_f16(1.0);
    c.scales = scales;
    c.scales[9] = 0x01; // group 5: scale 1, min 0
    c.qs[0] = 0x05;
    c.qh[0] = 0b10_0001; // value 0 +16, value 128+32 = 160 (bit 5) +16
    let y = deq(c);
    assert_eq!(y[0], 2.0 * 21.0 - 1.0);
    assert_eq!(y[160], 16.0); // group 5, code 0 + 16
}

#[test]
fn q6_k_hand_block() {
    let mut b = BlockQ6_K::zeroed();
    b.d = f32_to_f16(0.5);
    b.scales[0] = 2;
    b.scales[4] = -1;
    b.ql[0] = 0x0F;
    b.qh[0] = 0b11;
    let y = deq(b);
    assert_eq!(y[0], 0.5 * 2.0 * 31.0); // code 15 | 3<<4 = 63 → 31
    assert_eq!(y[64], 16.0); // d · scale(-1) · (code 0 - 32)
}

#[test]
fn float_hand_values() {
    assert_eq!(deq(1.5f32), vec![1.5]);
    assert_eq!(deq(half::f16::from_f32(-2.25)), vec![-2.25]);
    assert_eq!(deq(half::bf16::from_bits(0x3FC0)), vec![1.5]);
    let mut out = [half::bf16::ZERO; 2];
    // 1 + 2^-8 is exactly between two bf16 values: ties to even → 1.0.
    half::bf16::quantize(&[1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0], &mut out);
    assert_eq!(out[0].to_bits(), 0x3F80);
    assert_eq!(out[1].to_bits(), 0x3F82);
}

#[test]
fn hand_quantizations() {
    // Q8_0: amax 31 → d = 31/127, q[j] = round(j·127/31).
    let x: Vec<f32> = (0..32).map(|j| j as f32).collect();
    let mut q = [BlockQ8_0::zeroed()];
    BlockQ8_0::quantize(&x, &mut q);
    assert_eq!(q[0].d, f32_to_f16(31.0 / 127.0));
    assert_eq!(q[0].qs[31], 127);
    assert_eq!(q[0].qs[1], 4); // 127/31 = 4.097
    assert_eq!(q[0].qs[0], 0);

    // Q4_0: the largest magnitude (-8) becomes code 0 with d = 1; x = 1 → trunc(9.5) = 9.
    let mut x = vec![0.0f32; 32];
    x[0] = -8.0;
    x[1] = 1.0;
    x[17] = 7.0;
    let mut q = [BlockQ4_0::zeroed()];
    BlockQ4_0::quantize(&x, &mut q);
    assert_eq!(f16_to_f32(q[0].d), 1.0);
    assert_eq!(q[0].qs[0], 0x80); // value 0 → 0, value 16 (0.0) → 8
    assert_eq!(q[0].qs[1], 0xF9); // value 1 → 9, value 17 → trunc(15.5) = 15

    // Q8_K: max -2 maps to -127 and d = -2/127 (d·q reproduces x).
    let mut x = vec![0.0f32; 256];
    x[0] = -2.0;
    x[17] = 1.0;
    let mut q = [BlockQ8_K::zeroed()];
    BlockQ8_K::quantize(&x, &mut q);
    assert_eq!(q[0].qs[0], -127);
    assert_eq!(q[0].qs[17], 64); // nearest_int(63.5) ties to even
    assert_eq!(q[0].bsums[0], -127);
    assert_eq!(q[0].bsums[1], 64);
    assert_eq!(q[0].d, 1.0 / (-127.0 / -2.0));
}

#[test]
fn nearest_int_rounds_half_to_even() {
    assert_eq!(nearest_int(0.5), 0);
    assert_eq!(nearest_int(1.5), 2);
    assert_eq!(nearest_int(-2.5), -2);
    assert_eq!(nearest_int(-2.6), -3);
    assert_eq!(nearest_int(4194303.0), 4194303);
}

#[test]
fn type_erased_helpers_validate_their_arguments() {
    assert!(is_supported(GgmlType::Q4_K));
    assert!(!is_supported(GgmlType::IQ2_XXS));
    assert_eq!(activation_type(GgmlType::Q4_1), Some(GgmlType::Q8_1));
    assert_eq!(activation_type(GgmlType::IQ4_NL), Some(GgmlType::Q8_0));
    assert_eq!(activation_type(GgmlType::IQ4_XS), Some(GgmlType::Q8_K));
    assert_eq!(activation_type(GgmlType::BF16), Some(GgmlType::BF16));
    assert_eq!(activation_type(GgmlType::TQ1_0), None);

    let mut out = vec![0.0f32; 32];
    let e = dequantize_row(GgmlType::IQ2_XXS, &[0; 66], &mut vec![0.0; 256]).unwrap_err();
    assert_eq!(e, FormatError::Unsupported(GgmlType::IQ2_XXS));
    assert!(e.to_string().contains("IQ2_XXS"));

    let e = dequantize_row(GgmlType::Q4_0, &[0; 16], &mut out[..31]).unwrap_err();
    assert!(
        matches!(e, FormatError::NotBlockMultiple { n_values: 31, .. }),
        "{e}"
    );

    let e = dequantize_row(GgmlType::Q4_0, &[0; 17], &mut out).unwrap_err();
    assert!(matches!(
        e,
        FormatError::SizeMismatch {
            expected_bytes: 18,
            actual_bytes: 17,
            ..
        }
    ));
    assert!(e.to_string().contains("18"));

    let e = quantize_row(GgmlType::Q8_0, &out, &mut [0u8; 35]).unwrap_err();
    assert!(matches!(e, FormatError::SizeMismatch { .. }));

    // Q8_K has an f32 field: a byte buffer at an odd address cannot be viewed as blocks.
    let storage = vec![0u32; 292 / 4 + 1];
    let bytes: &[u8] = bytemuck::cast_slice(&storage);
    let e = dequantize_row(GgmlType::Q8_K, &bytes[1..293], &mut vec![0.0; 256]).unwrap_err();
    assert!(matches!(e, FormatError::Misaligned { .. }), "{e}");
    assert!(dequantize_row(GgmlType::Q8_K, &bytes[..292], &mut vec![0.0; 256]).is_ok());

    let w = [0u16; 18];
    let a = [0u16; 17];
    let (w, a): (&[u8], &[u8]) = (bytemuck::cast_slice(&w), bytemuck::cast_slice(&a));
    let e = vec_dot_row(GgmlType::Q4_0, 64, &w[..36], &a[..34]).unwrap_err();
    assert!(
        matches!(
            e,
            FormatError::SizeMismatch {
                ty: GgmlType::Q8_0,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(vec_dot_row(GgmlType::Q4_0, 32, &w[..18], &a[..34]), Ok(0.0));
}
