//! A vectorisable f32 sine for BigVGAN's Snake activations (libm's `sinf` is scalar: it was 17.5% of
//! BigVGAN's CPU time; torch runs Sleef's vectorised 1-ulp `sinf`).
//!
//! Each lane: x → f64 (exact), j = nearest integer to x·2/π, r = x − j·π/2 by Cody-Waite with a
//! two-part f64 π/2, then a minimax polynomial for sin r or cos r on |r| ≤ π/4 chosen by j mod 4,
//! rounded to f32 once. Max error 0.50104 ulp (against f64 `sin`, at x = 61451.34) over every f32
//! with |x| ≤ 2^17 (the ignored exhaustive test). Why f64 and not an f32 reduction: f32 Cody-Waite with a 3-part π/2 (no FMA) is 425 ulp
//! off at x = 252.8982 (x − 161·π/2 ≈ 4.2e-9, where the f32 parts' rounding is 5e-5 of r).
//!
//! Only IEEE mul / add / sub, conversions and bit operations: no FMA (Rust never contracts
//! `a * b + c`), so the scalar [`sinf`], the baseline loop and the AVX2 / AVX-512 builds of it give
//! the same bits.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use std::sync::OnceLock;

/// Above this |x| (and for inf / NaN) the lane takes libm's `f32::sin`: the reduction is exact only
/// while j·P1 fits 53 bits (j < 2^18) and the ulp bound was measured up to here.
pub const FAST_MAX: f32 = 131072.0; // 2^17

const TWO_OVER_PI: f64 = f64::from_bits(0x3fe4_5f30_6dc9_c883);
// π/2 = P1 + P2 + O(2^-93); P1 has 35 significant bits, so j·P1 and x − j·P1 are exact for j < 2^18
const P1: f64 = f64::from_bits(0x3ff9_21fb_5444_0000);
const P2: f64 = f64::from_bits(0x3d86_8c23_4c4c_6629);
// 1.5·2^52: adding it rounds to an integer (ties to even) and leaves j mod 2^51 in the low bits
const ROUND: f64 = 6_755_399_441_055_744.0;
// sin r = r·(1 + z·S(z)), cos r = 1 + z·C(z), z = r², |r| ≤ 0.7854: Remez fits (mpmath) of the
// relative error, max 2^-37.5 (sin) and 2^-33.9 (cos) with these f64 coefficients
const S: [f64; 4] = [
    f64::from_bits(0xbfc5_5555_54c7_1c64),
    f64::from_bits(0x3f81_1110_86a5_9680),
    f64::from_bits(0xbf2a_00f7_f224_f61f),
    f64::from_bits(0x3ec6_cd1f_1240_0323),
];
const C: [f64; 4] = [
    f64::from_bits(0xbfdf_ffff_fcb8_2a4b),
    f64::from_bits(0x3fa5_5553_c788_15e8),
    f64::from_bits(0xbf56_c07f_15fd_4a25),
    f64::from_bits(0x3ef9_9169_d926_712b),
];

/// One lane, branch-free; valid for |x| ≤ [`FAST_MAX`].
#[inline(always)]
fn kernel(x: f32) -> f32 {
    let xd = x as f64;
    let t = xd * TWO_OVER_PI + ROUND;
    let q = t.to_bits(); // j mod 4 in the low bits (also for negative j: 2^51 ≡ 0 mod 4)
    let j = t - ROUND;
    let r = (xd - j * P1) - j * P2;
    let z = r * r;
    // r·(1 + …) rather than r + r·z·…: keeps the sign of −0
    let s = r * (1.0 + z * (S[0] + z * (S[1] + z * (S[2] + z * S[3]))));
    let c = 1.0 + z * (C[0] + z * (C[1] + z * (C[2] + z * C[3])));
    let v = if q & 1 == 0 { s } else { c };
    // quadrants 2 and 3 negate; done in f64 (rounding to f32 is symmetric) to stay in 64-bit lanes
    (f64::from_bits(v.to_bits() ^ ((q & 2) << 62))) as f32
}

/// sin(x) for one f32; the same bits as [`sin_slice`] gives for that element.
#[inline]
pub fn sinf(x: f32) -> f32 {
    if x.abs() <= FAST_MAX {
        kernel(x)
    } else {
        x.sin()
    }
}

const CHUNK: usize = 1024;

#[inline(always)]
fn slice_body(xs: &mut [f32]) {
    for ch in xs.chunks_mut(CHUNK) {
        // |x| as bits orders like |x| (inf and NaN above every finite value): one max per chunk keeps
        // the check out of the lane loop; a chunk with an out-of-range lane goes element by element
        let max = ch.iter().fold(0u32, |m, v| m.max(v.to_bits() & 0x7fff_ffff));
        if max <= FAST_MAX.to_bits() {
            for v in ch.iter_mut() {
                *v = kernel(*v);
            }
        } else {
            for v in ch.iter_mut() {
                *v = sinf(*v);
            }
        }
    }
}

fn sin_base(xs: &mut [f32]) {
    slice_body(xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sin_avx2(xs: &mut [f32]) {
    slice_body(xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn sin_avx512(xs: &mut [f32]) {
    slice_body(xs)
}

/// The builds of the slice loop (the same arithmetic, only the vector width differs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Base,
    Avx2,
    Avx512,
}

impl Isa {
    /// The builds this CPU can run, widest last.
    pub fn available() -> Vec<Isa> {
        let mut v = vec![Isa::Base];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                v.push(Isa::Avx2);
            }
            if is_x86_feature_detected!("avx512f") {
                v.push(Isa::Avx512);
            }
        }
        v
    }

    /// [`sin_slice`] with this build; panics if the CPU lacks it.
    pub fn sin_slice(self, xs: &mut [f32]) {
        assert!(Isa::available().contains(&self), "{self:?} is not available on this CPU");
        self.run(xs)
    }

    fn run(self, xs: &mut [f32]) {
        match self {
            Isa::Base => sin_base(xs),
            // SAFETY: only reached for builds `available()` found on this CPU
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { sin_avx2(xs) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { sin_avx512(xs) },
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!(),
        }
    }
}

impl Isa {
    /// The widest build this CPU runs (found once).
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| *Isa::available().last().unwrap_or(&Isa::Base))
    }
}

/// In place: each element x → sin(x), as [`sinf`] computes it, with the widest build the CPU runs.
pub fn sin_slice(xs: &mut [f32]) {
    Isa::best().run(xs)
}

/// `t.sin()`, with [`sin_slice`] for f32 CPU tensors (other dtypes and devices: candle's `sin`).
pub fn sin_tensor(t: &Tensor) -> candle_core::Result<Tensor> {
    if t.dtype() == DType::F32 && t.device().is_cpu() {
        t.contiguous()?.apply_op1_no_bwd(&SinOp)
    } else {
        t.sin()
    }
}

struct SinOp;

impl CustomOp1 for SinOp {
    fn name(&self) -> &'static str {
        "vsin"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        map_f32_in_place("vsin", s, l, sin_slice)
    }
}

/// A copy of a contiguous f32 CPU storage with `f` applied in place, in blocks on Candle's own
/// elementwise pool, each block copied by the thread that then applies `f` to it while it is in
/// cache (for elementwise `f`, so any split gives the same bits; small tensors stay on this
/// thread). Not rayon's pool: Candle's pool workers spin after each of Candle's ops, and a rayon
/// job started then shares the cores with them.
pub(crate) fn map_f32_in_place(name: &str, s: &CpuStorage, l: &Layout, f: impl Fn(&mut [f32]) + Sync) -> candle_core::Result<(CpuStorage, Shape)> {
    let (start, end) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg(format!("{name} needs a contiguous input")))?;
    let CpuStorage::F32(v) = s else {
        return Err(candle_core::Error::Msg(format!("{name}: f32 only")));
    };
    let src = &v[start..end];
    const PAR: usize = 1 << 14;
    let n = src.len();
    if n <= 2 * PAR {
        let mut out = src.to_vec();
        f(&mut out);
        return Ok((CpuStorage::F32(out), l.shape().clone()));
    }
    let mut out: Vec<f32> = Vec::with_capacity(n);
    let (dst, from) = (crate::nn::SendPtr(out.as_mut_ptr()), crate::nn::SendPtr(src.as_ptr() as *mut f32));
    candle_core::utils::barrier_pool().execute_chunked(n.div_ceil(PAR), |units| {
        for u in units {
            let (lo, len) = (u * PAR, PAR.min(n - u * PAR));
            // SAFETY: each unit is one disjoint block of `out`'s capacity, first written from the
            // source block of the same range, then handed to `f`; `out` and `src` outlive the call
            unsafe {
                let d = dst.get().add(lo);
                std::ptr::copy_nonoverlapping(from.get().add(lo) as *const f32, d, len);
                f(std::slice::from_raw_parts_mut(d, len));
            }
        }
    });
    // SAFETY: every element of 0..n was written above (the units cover it)
    unsafe { out.set_len(n) };
    Ok((CpuStorage::F32(out), l.shape().clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rounding to f32 (0.5 ulp) plus the cos fit's 2^-33.9 relative error (≤ 2^-9.9 ulp).
    const LIMIT: f64 = 0.5011;

    /// |y − sin x| in ulps of f32 at the true value (2^(e−23) in its binade; f64 `sin` as reference).
    fn ulp_err(x: f32, y: f32) -> f64 {
        let r = (x as f64).sin();
        let e = (((r.abs().to_bits() >> 52) & 0x7ff) as i32 - 1023).max(-126);
        (y as f64 - r).abs() / 2f64.powi(e - 23)
    }

    fn max_err(xs: &[f32]) -> (f64, f32) {
        let mut ys = xs.to_vec();
        sin_slice(&mut ys);
        xs.iter().zip(&ys).fold((0.0, 0.0), |(m, at), (&x, &y)| {
            let e = ulp_err(x, y);
            if e > m { (e, x) } else { (m, at) }
        })
    }

    /// A deterministic xorshift stream (no test may depend on a seed it cannot reproduce).
    fn randoms(n: usize, mut s: u64) -> impl Iterator<Item = f64> {
        (0..n).map(move |_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        })
    }

    #[test]
    fn within_one_ulp_on_a_grid_and_on_random_values() {
        // [-10, 10] on a 2e5-point grid, plus the f32 closest to j·π/2 (the hardest reductions)
        let mut xs: Vec<f32> = (0..200_000).map(|i| -10.0 + 20.0 * i as f32 / 200_000.0).collect();
        xs.extend((1..2000).flat_map(|j| {
            let c = (j as f64 * std::f64::consts::FRAC_PI_2) as f32;
            [c, f32::from_bits(c.to_bits() + 1), f32::from_bits(c.to_bits() - 1), -c]
        }));
        xs.push(252.898_2); // x − 161·π/2 ≈ 4.2e-9, the smallest |r| below 1e4
        let (e, at) = max_err(&xs);
        eprintln!("grid: max {e} ulp at {at}");
        assert!(e <= LIMIT, "grid: {e} ulp at {at}");
        // uniform in |x| ≤ 1e4, and log-uniform magnitudes 1e-30 … 1e4
        let xs: Vec<f32> = randoms(200_000, 0x9e37_79b9_7f4a_7c15).map(|u| ((u * 2.0 - 1.0) * 1e4) as f32).collect();
        let (e, at) = max_err(&xs);
        eprintln!("uniform: max {e} ulp at {at}");
        assert!(e <= LIMIT, "uniform: {e} ulp at {at}");
        let xs: Vec<f32> = randoms(200_000, 12345).enumerate().map(|(i, u)| {
            let v = 10f64.powf(-30.0 + 34.0 * u) as f32;
            if i % 2 == 0 { v } else { -v }
        }).collect();
        let (e, at) = max_err(&xs);
        eprintln!("log-uniform: max {e} ulp at {at}");
        assert!(e <= LIMIT, "log-uniform: {e} ulp at {at}");
    }

    /// Every f32 with |x| ≤ FAST_MAX (about 2.4e9 values; minutes in release):
    /// `cargo test --release -p indextts2_candle vsin::tests::exhaustive -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn exhaustive_within_half_ulp_plus() {
        use rayon::prelude::*;
        let top = FAST_MAX.to_bits();
        let (e, at, differ) = (0..=top / (1 << 16))
            .into_par_iter()
            .map(|blk| {
                let mut buf: Vec<f32> = Vec::with_capacity(2 << 16);
                for b in blk << 16..((blk + 1) << 16).min(top + 1) {
                    buf.push(f32::from_bits(b));
                    buf.push(-f32::from_bits(b));
                }
                let (e, at) = max_err(&buf);
                let mut ys = buf.clone();
                sin_slice(&mut ys);
                // how often libm's (glibc's) sinf rounds the other way: for the record only
                let differ = buf.iter().zip(&ys).filter(|(x, y)| x.sin().to_bits() != y.to_bits()).count();
                (e, at, differ)
            })
            .reduce(|| (0.0, 0.0, 0), |a, b| (if b.0 > a.0 { b.0 } else { a.0 }, if b.0 > a.0 { b.1 } else { a.1 }, a.2 + b.2));
        println!("max {e} ulp at {at} ({:#x}); {differ} of {} values differ from libm's sinf", at.to_bits(), 2 * (top as u64 + 1));
        assert!(e <= LIMIT, "{e} ulp at {at}");
    }

    #[test]
    fn the_tensor_op_is_sin_slice() -> candle_core::Result<()> {
        let xs: Vec<f32> = randoms(70_000, 3).map(|u| ((u * 2.0 - 1.0) * 300.0) as f32).collect();
        let mut want = xs.clone();
        sin_slice(&mut want);
        let t = Tensor::from_vec(xs, (2, 350, 100), &candle_core::Device::Cpu)?;
        // a strided view too (the op makes it contiguous); the parallel branch runs (> 2·PAR)
        let got = sin_tensor(&t.transpose(1, 2)?)?.transpose(1, 2)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        let t64 = t.to_dtype(DType::F64)?;
        assert_eq!(sin_tensor(&t64)?.to_vec3::<f64>()?, t64.sin()?.to_vec3::<f64>()?);
        Ok(())
    }

    #[test]
    fn special_values() {
        let mut v = [0.0f32, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e-45, -1e-45, 1e-39, -3e-38, 1e-20];
        sin_slice(&mut v);
        assert_eq!(v[0].to_bits(), 0);
        assert_eq!(v[1].to_bits(), (-0.0f32).to_bits());
        assert!(v[2].is_nan() && v[3].is_nan() && v[4].is_nan());
        assert_eq!(v[5..], [1e-45, -1e-45, 1e-39, -3e-38, 1e-20]);
        for x in [0.0f32, -0.0, 1e-45, -1e-39, 1e-20] {
            assert_eq!(sinf(x).to_bits(), x.to_bits());
        }
        assert!(sinf(f32::INFINITY).is_nan() && sinf(f32::NAN).is_nan());
        // past FAST_MAX: libm, element by element
        for x in [FAST_MAX * 1.5, -1e6, 3e38] {
            assert_eq!(sinf(x).to_bits(), x.sin().to_bits());
        }
    }

    #[test]
    fn scalar_slice_and_every_build_give_the_same_bits() {
        let mut xs: Vec<f32> = randoms(50_000, 7).map(|u| ((u * 2.0 - 1.0) * 200.0) as f32).collect();
        xs.extend(randoms(5000, 8).map(|u| ((u * 2.0 - 1.0) * 2e5) as f32)); // some chunks hit libm
        xs.extend([0.0, -0.0, f32::NAN, f32::INFINITY, 1e-40, 12345.678, FAST_MAX, -FAST_MAX]);
        xs.extend(randoms(3001, 9).map(|u| (u * 50.0) as f32)); // ragged tail
        let scalar: Vec<u32> = xs.iter().map(|&x| sinf(x).to_bits()).collect();
        let mut ys = xs.clone();
        sin_slice(&mut ys);
        assert_eq!(ys.iter().map(|y| y.to_bits()).collect::<Vec<_>>(), scalar, "sin_slice");
        let isas = Isa::available();
        eprintln!("builds checked: {isas:?}");
        for isa in isas {
            for len in [xs.len(), 1, 15, 17, 1023, 1025] {
                let mut ys = xs[..len].to_vec();
                isa.sin_slice(&mut ys);
                assert_eq!(ys.iter().map(|y| y.to_bits()).collect::<Vec<_>>(), scalar[..len], "{isa:?} len {len}");
            }
        }
    }
}
