//! The float formats: F32, F16 and BF16, each a "block" of one value.
//!
//! ```text
//! F32   [sign 1][exp 8][mantissa 23]      x = the value
//! F16   [sign 1][exp 5][mantissa 10]      x = the value (IEEE half)
//! BF16  [sign 1][exp 8][mantissa 7]       x = f32 from bits << 16
//! ```
//! Activations multiplied with float weights are converted to the weights' own type, as
//! ggml does (its `vec_dot_type` of F16 is F16, of BF16 is BF16), and the dot product
//! accumulates in f64 like ggml's scalar `ggml_vec_dot_f16` / `_bf16` / `_f32`.

use super::{check_dequantize_len, check_dot_len, check_quantize_len, BlockFormat};
use grist_gguf::GgmlType;

/// IEEE half, the element type of F16 tensors.
pub type F16 = half::f16;
/// bfloat16, the element type of BF16 tensors.
pub type Bf16 = half::bf16;

/// ggml's `GGML_FP32_TO_BF16`: round to nearest even, NaN kept quiet (`| 64`).
#[inline]
pub fn bf16_from_f32_ggml(x: f32) -> Bf16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return Bf16::from_bits(((u >> 16) | 64) as u16);
    }
    Bf16::from_bits((u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16)
}

/// The scalar dot product of ggml's float formats: each pair widened to f32, multiplied in f32,
/// the products summed in f64 (`ggml_vec_dot_f32` / `_f16` / `_bf16`).
fn widened_dot<T: BlockFormat<Activation = T>>(w: &[T], a: &[T], widen: impl Fn(T) -> f32) -> f32 {
    check_dot_len(w, a);
    let mut sum = 0.0f64;
    for (&x, &y) in w.iter().zip(a) {
        sum += (widen(x) * widen(y)) as f64;
    }
    sum as f32
}

impl BlockFormat for f32 {
    const TYPE: GgmlType = GgmlType::F32;
    const BLOCK_ELEMS: usize = 1;
    type Activation = f32;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        check_dequantize_len(blocks, out);
        out.copy_from_slice(blocks);
    }

    fn quantize(x: &[f32], out: &mut [Self]) {
        check_quantize_len(x, out);
        out.copy_from_slice(x);
    }

    /// `ggml_vec_dot_f32` (scalar): f32 products summed in f64.
    fn vec_dot(w: &[Self], a: &[f32]) -> f32 {
        widened_dot(w, a, |x| x)
    }
}

impl BlockFormat for F16 {
    const TYPE: GgmlType = GgmlType::F16;
    const BLOCK_ELEMS: usize = 1;
    type Activation = F16;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        check_dequantize_len(blocks, out);
        for (y, h) in out.iter_mut().zip(blocks) {
            *y = h.to_f32();
        }
    }

    /// Round to nearest even (`GGML_FP32_TO_FP16`).
    fn quantize(x: &[f32], out: &mut [Self]) {
        check_quantize_len(x, out);
        for (h, &v) in out.iter_mut().zip(x) {
            *h = F16::from_f32(v);
        }
    }

    /// `ggml_vec_dot_f16` (scalar): f32 products of the widened halves, summed in f64.
    fn vec_dot(w: &[Self], a: &[F16]) -> f32 {
        widened_dot(w, a, F16::to_f32)
    }
}

impl BlockFormat for Bf16 {
    const TYPE: GgmlType = GgmlType::BF16;
    const BLOCK_ELEMS: usize = 1;
    type Activation = Bf16;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        check_dequantize_len(blocks, out);
        for (y, h) in out.iter_mut().zip(blocks) {
            *y = f32::from_bits((h.to_bits() as u32) << 16);
        }
    }

    /// ggml's `GGML_FP32_TO_BF16` (round to nearest even).
    fn quantize(x: &[f32], out: &mut [Self]) {
        check_quantize_len(x, out);
        for (h, &v) in out.iter_mut().zip(x) {
            *h = bf16_from_f32_ggml(v);
        }
    }

    /// `ggml_vec_dot_bf16` (scalar): f32 products of the widened values, summed in f64.
    fn vec_dot(w: &[Self], a: &[Bf16]) -> f32 {
        widened_dot(w, a, Bf16::to_f32)
    }
}
