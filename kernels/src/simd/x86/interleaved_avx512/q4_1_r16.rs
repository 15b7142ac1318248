//! AVX-512 VNNI token generation with Q4_1_R16 weights (16 Q4_1 rows per 640-byte column of
//! two blocks, layout in [`crate::formats::interleaved`]) against Q8_1 activations.

use std::arch::x86_64::*;

use crate::blocks::{f16_to_f32, BlockQ8_1};
use crate::formats::interleaved::{
    Q4_1_R16_COLUMN, Q4_1_R16_OFF_CODES, Q4_1_R16_OFF_M, Q4_1_R16_ROWS,
};

/// Activation blocks of 32 values whose scales and sums [`gemv_q4_1_r16`] converts to `f32`
/// per pass (2 KiB of stack; an even number, whole columns); longer rows run in several
/// passes that add into the outputs.
const PASS_BLOCKS: usize = 256;

/// The typed Q4_1_R16 kernel: `out[i] = row i · a`, `w` holding `out.len() / 16` groups of
/// `a.len() / 2` columns.
///
/// Per activation block `y`, its 4 code registers (lane `r` = row `r`, 4 code bytes each)
/// give two `vpdpbusd` each, the nibbles being the unsigned operand as they are:
///
/// ```text
/// low  += (register & 0x0F) · broadcast y.qs[4t .. 4t + 4]         values 4t ..
/// high += (register & 0xF0) · broadcast y.qs[16 + 4t .. 16 + 4t + 4]  values 16 + 4t ..
/// sumi  = low + high >> 4
/// ```
///
/// `high` keeps the high nibbles in place (16× the codes, one `and` instead of a shift and
/// an `and` per register), so its sum is a multiple of 16 and the shift is exact; the
/// integer sum of the block is exact (|sumi| ≤ 32·15·128). Then the reference's float
/// operations in its order (`formats::q4_1`): `acc + ((d_w · d_a) · sumi + m_w · s_a)`, block
/// after block, so each output is the scalar reference `vec_dot`'s bits (the Q4_1 `vec_dot`
/// of this table sums in another order). The activation's `d` and `s` are converted to `f32`
/// once per pass for all the groups. One 16-lane store per group.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C. Panics unless `a.len()` is
/// even, `out.len()` a multiple of 16 and `w.len()` `out.len() / 16 × a.len() / 2 × 640`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn gemv_q4_1_r16(w: &[u8], a: &[BlockQ8_1], out: &mut [f32]) {
    let blocks = a.len();
    assert!(blocks.is_multiple_of(2) && out.len().is_multiple_of(Q4_1_R16_ROWS));
    let columns = blocks / 2;
    assert_eq!(
        w.len(),
        out.len() / Q4_1_R16_ROWS * columns * Q4_1_R16_COLUMN
    );
    if blocks == 0 {
        out.fill(0.0);
        return;
    }
    let base = w.as_ptr();
    let low4 = _mm512_set1_epi8(0x0F);
    let high4 = _mm512_set1_epi8(0xF0u8 as i8);
    // Per block of the pass: d and s as f32.
    let mut da = [0.0f32; PASS_BLOCKS];
    let mut sa = [0.0f32; PASS_BLOCKS];
    for pass in (0..blocks).step_by(PASS_BLOCKS) {
        let a_pass = &a[pass..blocks.min(pass + PASS_BLOCKS)];
        for ((da, sa), y) in da.iter_mut().zip(sa.iter_mut()).zip(a_pass) {
            (*da, *sa) = (f16_to_f32(y.d), f16_to_f32(y.s));
        }
        for (g, out) in out.chunks_exact_mut(Q4_1_R16_ROWS).enumerate() {
            // SAFETY: every weight load reads inside `w`: column `pass / 2 + c` of group `g`
            // is the 640 bytes at `(g × columns + pass / 2 + c) × 640` (length asserted
            // above), and its loads end at offset ≤ 128 + 8 × 64 = 640; the activation loads
            // read `qs[4t .. 4t + 4]` and `qs[16 + 4t .. 16 + 4t + 4]`, `t < 4`, of a 32-byte
            // array; `out` is 16 floats; every load and store is unaligned-tolerant; the
            // features are enabled on this function.
            unsafe {
                let mut acc = if pass == 0 {
                    _mm512_setzero_ps()
                } else {
                    _mm512_loadu_ps(out.as_ptr())
                }; // [16] one lane per row
                let first = (g * columns + pass / 2) * Q4_1_R16_COLUMN;
                for (c, pair) in a_pass.chunks_exact(2).enumerate() {
                    let p = base.add(first + c * Q4_1_R16_COLUMN);
                    for (h, y) in pair.iter().enumerate() {
                        let i = 2 * c + h;
                        let codes = p.add(Q4_1_R16_OFF_CODES + 256 * h);
                        let yq = y.qs.as_ptr();
                        let (mut low, mut high) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                        for t in 0..4 {
                            let q = _mm512_loadu_si512(codes.add(64 * t).cast());
                            let y_low =
                                _mm512_set1_epi32(yq.add(4 * t).cast::<i32>().read_unaligned());
                            let y_high = _mm512_set1_epi32(
                                yq.add(16 + 4 * t).cast::<i32>().read_unaligned(),
                            );
                            low = _mm512_dpbusd_epi32(low, _mm512_and_si512(q, low4), y_low);
                            high = _mm512_dpbusd_epi32(high, _mm512_and_si512(q, high4), y_high);
                        }
                        let sumi = _mm512_add_epi32(low, _mm512_srai_epi32::<4>(high));
                        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(p.add(32 * h).cast()));
                        let mw = _mm512_cvtph_ps(_mm256_loadu_si256(
                            p.add(Q4_1_R16_OFF_M + 32 * h).cast(),
                        ));
                        let scaled = _mm512_mul_ps(
                            _mm512_mul_ps(dw, _mm512_set1_ps(da[i])),
                            _mm512_cvtepi32_ps(sumi),
                        );
                        let mins = _mm512_mul_ps(mw, _mm512_set1_ps(sa[i]));
                        acc = _mm512_add_ps(acc, _mm512_add_ps(scaled, mins));
                    }
                }
                _mm512_storeu_ps(out.as_mut_ptr(), acc);
            }
        }
    }
}
