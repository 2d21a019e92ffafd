//! Snake / SnakeBeta and the alias-free `Activation1d` (×2 upsample, activation, lowpass ×2 down).
//!
//! Taps (= module paths): `<name>.upsample`, `<name>.act`, `<name>.downsample.lowpass`.
use crate::nn::widen;
use crate::ctx::Ctx;
use crate::error::Result;
use crate::store::Weights;
use crate::transforms::snake_param;
use crate::vsin::{sin_slice, sin_tensor};
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

/// `x + 1/(β + 1e-9) · sin²(αx)`; Snake has no β and uses α for both.
pub struct Snake {
    alpha: Tensor,    // [1, C, 1], already exp'd when log-scale
    inv_beta: Tensor, // [1, C, 1], 1/(β + 1e-9)
}

impl Snake {
    pub fn load(w: &Weights, ch: usize, beta: bool, logscale: bool) -> Result<Snake> {
        let alpha = snake_param(&w.get(ch, "alpha")?, logscale)?;
        let b = if beta { snake_param(&w.get(ch, "beta")?, logscale)? } else { alpha.clone() };
        let inv_beta = (b + 1e-9)?.recip()?;
        Ok(Snake { alpha: alpha.reshape((1, ch, 1))?, inv_beta: inv_beta.reshape((1, ch, 1))? })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // f32 CPU: the fused path's vectorised sine, so both give the same bits
        let s = sin_tensor(&x.broadcast_mul(&self.alpha)?)?.sqr()?;
        Ok((x + s.broadcast_mul(&self.inv_beta)?)?)
    }
}

const RATIO: usize = 2;
const K: usize = 12; // int(6 * ratio // 2) * 2
const TAPS: usize = K / RATIO; // terms per polyphase branch (upsample phase, lowpass even / odd)

/// Fault switches of the anti-alias filters (all false = the official behaviour).
#[derive(Clone, Copy, Default)]
pub struct FilterFaults {
    pub up_zero_pad: bool,      // UpSample1d pads with zeros instead of replicate
    pub down_zero_pad: bool,    // LowPassFilter1d pads with zeros instead of replicate
    pub periodic_window: bool,  // filters rebuilt with torch.kaiser_window's default periodic=True
}

/// Alias-free activation with the filters from the checkpoint.
///
/// Both filters are one 12-tap kernel shared by every channel. They are applied per output phase
/// (polyphase): exactly the sums torch's depthwise conv_transpose1d / conv1d compute, as 12 shifted
/// multiply-adds on whole [B, C, T] tensors. Candle's CPU convs on B·C single-channel rows ran at
/// 0.5–2.6 GFLOP/s and were most of BigVGAN's time (`benches/conv_speed.rs`).
pub struct Activation1d {
    act: Snake,
    up_taps: Vec<f32>,   // UpSample1d.filter, stored [1, 1, K]
    down_taps: Vec<f32>, // LowPassFilter1d.filter, stored [1, 1, K]
    faults: FilterFaults,
}

/// Σ_i coef_i · x[..., start_i : start_i + len], the building block of both filters.
fn shifted_sum(x: &Tensor, terms: &[(usize, f32)], len: usize) -> Result<Tensor> {
    let mut acc: Option<Tensor> = None;
    for &(start, coef) in terms {
        let term = x.narrow(2, start, len)?.affine(coef as f64, 0.0)?;
        acc = Some(match acc {
            Some(a) => (a + term)?,
            None => term,
        });
    }
    acc.ok_or_else(|| crate::Error::Input("empty filter".into()))
}

fn pad(x: &Tensor, left: usize, right: usize, zeros: bool) -> Result<Tensor> {
    Ok(if zeros { x.pad_with_zeros(2, left, right)? } else { x.pad_with_same(2, left, right)? })
}

impl Activation1d {
    pub fn load(w: &Weights, ch: usize, beta: bool, logscale: bool, faults: FilterFaults) -> Result<Activation1d> {
        // the filters as stored in the model's dtype (rounded like torch's half buffers), read as f32
        let taps = |t: Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?) };
        let mut up_taps = taps(w.pp("upsample").get((1, 1, K), "filter")?)?;
        let mut down_taps = taps(w.pp("downsample.lowpass").get((1, 1, K), "filter")?)?;
        if faults.periodic_window {
            // both are kaiser_sinc_filter1d(0.5 / ratio, 0.6 / ratio, 12)
            up_taps = kaiser_sinc_filter(0.5 / RATIO as f64, 0.6 / RATIO as f64, K, true);
            down_taps = up_taps.clone();
        }
        Ok(Activation1d { act: Snake::load(&w.pp("act"), ch, beta, logscale)?, up_taps, down_taps, faults })
    }

    /// UpSample1d: replicate pad `K/2 − 1`, conv_transpose stride 2, ×2, crop `pad·2 + (K−2)/2` per
    /// side. Output sample 2r+t = 2·Σ_j f[2j+p]·xp[r + m0 − j] with p = (t+crop) mod 2, m0 = (t+crop) div 2.
    fn upsample(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, t) = x.dims3()?;
        let p_len = K / RATIO - 1;
        let crop = p_len * RATIO + (K - RATIO) / 2;
        // the 6-term sums accumulate in f32 and round once, as torch's half conv_transpose1d does
        let xp = widen(&pad(x, p_len, p_len, self.faults.up_zero_pad)?)?;
        let mut phases = Vec::with_capacity(RATIO);
        for ph in 0..RATIO {
            let (p, m0) = ((ph + crop) % RATIO, (ph + crop) / RATIO);
            let terms: Vec<(usize, f32)> = (0..)
                .take_while(|j| j * RATIO + p < K)
                .map(|j| (m0 - j, RATIO as f32 * self.up_taps[j * RATIO + p]))
                .collect();
            phases.push(shifted_sum(&xp, &terms, t)?);
        }
        Ok(Tensor::stack(&phases, 3)?.reshape((b, c, t * RATIO))?.to_dtype(x.dtype())?)
    }

    /// LowPassFilter1d: replicate pad (K/2 − 1, K/2), conv stride 2: out[r] = Σ_k f[k]·yp[2r + k],
    /// read from the even / odd phases of yp (one extra sample on the right makes the length even;
    /// no output reads it).
    fn lowpass(&self, y: &Tensor) -> Result<Tensor> {
        let (b, c, t2) = y.dims3()?;
        let yp = widen(&pad(y, K / 2 - 1, K / 2 + 1, self.faults.down_zero_pad)?)?; // f32 sums, as upsample
        let half = yp.dim(2)? / 2;
        let pairs = yp.reshape((b, c, half, 2))?;
        let even = pairs.narrow(3, 0, 1)?.squeeze(3)?.contiguous()?;
        let odd = pairs.narrow(3, 1, 1)?.squeeze(3)?.contiguous()?;
        let out_len = t2 / RATIO;
        let ev: Vec<(usize, f32)> = (0..K).step_by(2).map(|k| (k / 2, self.down_taps[k])).collect();
        let od: Vec<(usize, f32)> = (1..K).step_by(2).map(|k| (k / 2, self.down_taps[k])).collect();
        Ok((shifted_sum(&even, &ev, out_len)? + shifted_sum(&odd, &od, out_len)?)?.to_dtype(y.dtype())?)
    }

    pub fn forward(&self, x: &Tensor, ctx: &mut Ctx, name: &str) -> Result<Tensor> {
        // No tap is kept and none injected: the three leaves in one pass (same sums, same order).
        if ctx.is_plain() && x.device().is_cpu() && x.dims().len() == 3 && x.dim(2)? > 0
            && matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
        {
            let op = FusedActivation { up: &self.up_taps, down: &self.down_taps, act: &self.act, faults: self.faults };
            return Ok(x.contiguous()?.apply_op1_no_bwd(&op)?);
        }
        let y = ctx.block(&format!("{name}.upsample"), x, |x| self.upsample(x))?;
        let y = ctx.block(&format!("{name}.act"), &y, |y| self.act.forward(y))?;
        ctx.block(&format!("{name}.downsample.lowpass"), &y, |y| self.lowpass(y))
    }
}

/// The element types the fused activation runs in; the arithmetic is written once, so f32 and f64
/// do exactly what the tensor path does in that type.
trait Elem: Copy + Send + Sync + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self> + candle_core::WithDType {
    fn of_f32(v: f32) -> Self;
    /// In place, as `Snake::forward`'s sine does it in this type.
    fn sine_slice(xs: &mut [Self]);
}
impl Elem for f32 {
    fn of_f32(v: f32) -> f32 {
        v
    }
    fn sine_slice(xs: &mut [f32]) {
        sin_slice(xs)
    }
}
impl Elem for f64 {
    fn of_f32(v: f32) -> f64 {
        v as f64
    }
    fn sine_slice(xs: &mut [f64]) {
        for v in xs {
            *v = v.sin();
        }
    }
}

/// UpSample1d → Snake(Beta) → LowPassFilter1d on contiguous `[B, C, T]`, one row per task on the
/// Candle's pool. Per output sample it computes the very expressions of the tensor path
/// (`upsample`, `Snake::forward`, `lowpass`): the same coefficients, the same summation order, the
/// `+ 0` of candle's affine, so the result is bit-identical (the unit test checks it).
struct FusedActivation<'a> {
    up: &'a [f32],
    down: &'a [f32],
    act: &'a Snake,
    faults: FilterFaults,
}

impl FusedActivation<'_> {
    fn run<T: Elem>(&self, x: &[T], c: usize, t: usize) -> Result<Vec<T>> {
        let alpha = self.act.alpha.flatten_all()?.to_vec1::<T>()?;
        let inv_beta = self.act.inv_beta.flatten_all()?.to_vec1::<T>()?;
        let zero = T::from_f64(0.0);
        // upsample: per output phase, (offset into the padded row, coefficient) in the order the
        // tensor path adds them
        let p_len = K / RATIO - 1;
        let crop = p_len * RATIO + (K - RATIO) / 2;
        let phases: Vec<Vec<(usize, T)>> = (0..RATIO)
            .map(|ph| {
                let (p, m0) = ((ph + crop) % RATIO, (ph + crop) / RATIO);
                (0..).take_while(|j| j * RATIO + p < K).map(|j| (m0 - j, T::of_f32(RATIO as f32 * self.up[j * RATIO + p]))).collect()
            })
            .collect();
        let down: Vec<T> = self.down.iter().map(|&v| T::of_f32(v)).collect();
        let (t2, dl, dr) = (t * RATIO, K / 2 - 1, K / 2 + 1);
        let pad_read = |row: &[T], i: isize, zeros: bool| -> T {
            if i >= 0 && (i as usize) < row.len() {
                row[i as usize]
            } else if zeros {
                zero
            } else {
                row[if i < 0 { 0 } else { row.len() - 1 }]
            }
        };
        let mut out = vec![zero; x.len()]; // ↑2 then ↓2: the input's length
        let half = (t2 + dl + dr) / 2; // the padded lowpass row's even / odd phases
        // Each polyphase sum runs over the row in one pass, its terms unrolled (the loops LLVM
        // vectorises); per element the terms, their order and the `+ 0` are those above.
        let dst = crate::nn::SendPtr(out.as_mut_ptr());
        crate::nn::par_for_init(
            x.len() / t.max(1),
            || (vec![zero; t + 2 * p_len], vec![zero; t2 + dl + dr], vec![zero; t2], vec![zero; half], vec![zero; half]),
            |(xp, yp, s, ev, od), row| {
                // SAFETY: output row `row`, written by this task only
                let o = unsafe { std::slice::from_raw_parts_mut(dst.get().add(row * t), t) };
                let xr = &x[row * t..(row + 1) * t];
                let ch = row % c;
                for (i, v) in xp.iter_mut().enumerate() {
                    *v = pad_read(xr, i as isize - p_len as isize, self.faults.up_zero_pad);
                }
                // ×2 upsample into the padded lowpass row: both phases' TAPS terms in one pass
                // (the sums stay in registers), each in the order above
                let (o0, c0): ([usize; TAPS], [T; TAPS]) = (std::array::from_fn(|j| phases[0][j].0), std::array::from_fn(|j| phases[0][j].1));
                let (o1, c1): ([usize; TAPS], [T; TAPS]) = (std::array::from_fn(|j| phases[1][j].0), std::array::from_fn(|j| phases[1][j].1));
                for (r, pair) in yp[dl..dl + t2].chunks_exact_mut(RATIO).enumerate() {
                    let (mut a, mut b) = (xp[r + o0[0]] * c0[0] + zero, xp[r + o1[0]] * c1[0] + zero);
                    for j in 1..TAPS {
                        a = a + (xp[r + o0[j]] * c0[j] + zero);
                    }
                    for j in 1..TAPS {
                        b = b + (xp[r + o1[j]] * c1[j] + zero);
                    }
                    (pair[0], pair[1]) = (a, b);
                }
                // the activation, with the sine over the whole row (one vectorised call in f32)
                let y = &mut yp[dl..dl + t2];
                let (a, ib) = (alpha[ch], inv_beta[ch]);
                for (sv, &acc) in s.iter_mut().zip(y.iter()) {
                    *sv = acc * a;
                }
                T::sine_slice(s);
                for (yv, &sv) in y.iter_mut().zip(s.iter()) {
                    let acc = *yv;
                    *yv = acc + (sv * sv) * ib;
                }
                for i in 0..dl {
                    yp[i] = if self.faults.down_zero_pad { zero } else { yp[dl] };
                }
                for i in dl + t2..yp.len() {
                    yp[i] = if self.faults.down_zero_pad { zero } else { yp[dl + t2 - 1] };
                }
                // lowpass ↓2: the even taps' sum over the even phase, the odd taps' over the odd
                // phase, then their sum
                for (i, pair) in yp.chunks_exact(2).enumerate() {
                    ev[i] = pair[0];
                    od[i] = pair[1];
                }
                // (both sums and their total in one pass, each sum's terms in tap order)
                let (de, dd): ([T; TAPS], [T; TAPS]) = (std::array::from_fn(|j| down[2 * j]), std::array::from_fn(|j| down[2 * j + 1]));
                for (i, v) in o.iter_mut().enumerate() {
                    let (mut e, mut d) = (ev[i] * de[0] + zero, od[i] * dd[0] + zero);
                    for j in 1..TAPS {
                        e = e + (ev[i + j] * de[j] + zero);
                    }
                    for j in 1..TAPS {
                        d = d + (od[i + j] * dd[j] + zero);
                    }
                    *v = e + d;
                }
            },
        );
        Ok(out)
    }
}

impl CustomOp1 for FusedActivation<'_> {
    fn name(&self) -> &'static str {
        "bigvgan-fused-activation1d"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, c, t) = l.shape().dims3()?;
        let (start, end) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("fused activation needs a contiguous input".into()))?;
        let err = |e: crate::Error| candle_core::Error::Msg(e.to_string());
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(self.run(&v[start..end], c, t).map_err(err)?),
            CpuStorage::F64(v) => CpuStorage::F64(self.run(&v[start..end], c, t).map_err(err)?),
            _ => return Err(candle_core::Error::Msg("fused activation: f32 and f64 only".to_string())),
        };
        Ok((out, Shape::from((b, c, t))))
    }
}

/// Modified Bessel function of the first kind, order 0 (power series; converges for every x).
fn bessel_i0(x: f64) -> f64 {
    let q = x * x / 4.0;
    let (mut sum, mut term) = (1.0, 1.0);
    for k in 1..100 {
        term *= q / (k * k) as f64;
        sum += term;
        if term < 1e-17 * sum {
            break;
        }
    }
    sum
}

/// `kaiser_sinc_filter1d` of the official `alias_free_activation/torch/filter.py`, in f64, with the
/// Kaiser window symmetric (`periodic = false`, the official call) or periodic (torch's default).
/// Only the `kaiser_periodic_window` fault uses it: the official model reads its filters from the file.
pub fn kaiser_sinc_filter(cutoff: f64, half_width: f64, k: usize, periodic: bool) -> Vec<f32> {
    let half = k / 2;
    let atten = 2.285 * (half as f64 - 1.0) * std::f64::consts::PI * 4.0 * half_width + 7.95;
    let beta = if atten > 50.0 {
        0.1102 * (atten - 8.7)
    } else if atten >= 21.0 {
        0.5842 * (atten - 21.0).powf(0.4) + 0.07886 * (atten - 21.0)
    } else {
        0.0
    };
    let m = if periodic { k + 1 } else { k } as f64; // a periodic window is the symmetric one of k + 1, cut
    let window = (0..k).map(|n| {
        let r = 2.0 * n as f64 / (m - 1.0) - 1.0;
        bessel_i0(beta * (1.0 - r * r).max(0.0).sqrt()) / bessel_i0(beta)
    });
    let sinc = |x: f64| if x == 0.0 { 1.0 } else { (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x) };
    let filt: Vec<f64> = window
        .enumerate()
        .map(|(n, w)| {
            let t = if k % 2 == 0 { n as f64 - half as f64 + 0.5 } else { n as f64 - half as f64 };
            2.0 * cutoff * w * sinc(2.0 * cutoff * t)
        })
        .collect();
    let sum: f64 = filt.iter().sum();
    filt.iter().map(|v| (v / sum) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// The fused kernel (plain runs) against the three tapped leaves (parity runs): bit-identical
    /// in f32 and f64, with each pad fault, on random signals and per-channel parameters.
    #[test]
    fn fused_activation_equals_the_tapped_leaves() -> Result<()> {
        let d = Device::Cpu;
        let taps = kaiser_sinc_filter(0.25, 0.3, K, false);
        for dt in [DType::F32, DType::F64] {
            for faults in [
                FilterFaults::default(),
                FilterFaults { up_zero_pad: true, ..Default::default() },
                FilterFaults { down_zero_pad: true, ..Default::default() },
            ] {
                for (b, c, t) in [(1, 3, 1), (2, 5, 7), (1, 4, 64)] {
                    let alpha = (Tensor::rand(0.2f64, 2.0, (1, c, 1), &d)?).to_dtype(dt)?;
                    let inv_beta = (Tensor::rand(0.5f64, 3.0, (1, c, 1), &d)?).to_dtype(dt)?;
                    let act = Activation1d { act: Snake { alpha, inv_beta }, up_taps: taps.clone(), down_taps: taps.iter().rev().map(|v| v * 0.9).collect(), faults };
                    let x = (Tensor::randn(0f64, 1.0, (b, c, t), &d)?).to_dtype(dt)?;
                    let fused = act.forward(&x, &mut Ctx::plain(), "a")?;
                    let mut rec = Ctx::new(true, Default::default());
                    let leaves = act.forward(&x, &mut rec, "a")?;
                    assert_eq!(rec.finish()?.len(), 3);
                    let (f, l) = (fused.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?, leaves.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?);
                    assert_eq!(fused.dims(), leaves.dims());
                    assert!(f.iter().zip(&l).all(|(a, b)| a.to_bits() == b.to_bits()), "{dt:?} {b}x{c}x{t}: fused differs");
                }
            }
        }
        Ok(())
    }

    /// `kaiser_sinc_filter1d(0.25, 0.3, 12)` as the official code computes it (torch 2.9, float32).
    #[test]
    fn symmetric_filter_is_the_official_one() {
        let torch = [
            0.0020289646927267313f32, 0.009389465674757957, -0.0255434587597847, -0.057657383382320404,
            0.12857258319854736, 0.44320979714393616,
        ];
        let f = kaiser_sinc_filter(0.25, 0.3, 12, false);
        for i in 0..6 {
            assert!((f[i] - torch[i]).abs() < 1e-7 && (f[11 - i] - torch[i]).abs() < 1e-7, "tap {i}: {}", f[i]);
        }
        let periodic = kaiser_sinc_filter(0.25, 0.3, 12, true);
        assert!(f.iter().zip(&periodic).any(|(a, b)| (a - b).abs() > 1e-3), "the periodic window differs");
    }
}
