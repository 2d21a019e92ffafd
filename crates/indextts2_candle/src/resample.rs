//! The IndexTTS2 audio front end: torchaudio's band-limited resampling, the 15 s prompt cut and
//! the joining of synthesised segments (`indextts/infer_v2.py`).
//!
//! Resampling follows `torchaudio.transforms.Resample(orig, new)` with its defaults (the class the
//! speaker branch uses): rates reduced by their gcd, a windowed-sinc kernel `[new, orig + 2·width]`
//! (Hann, 6 zero crossings, roll-off 0.99) evaluated in f64 and rounded to f32, the signal padded by
//! `width` left and `width + orig` right, a strided correlation, and `ceil(new·N/orig)` samples
//! kept. Equal rates are the identity. Most of each kernel row is exactly zero (the window is
//! clamped to ±6 crossings), so every output sample is a dot product over that row's non-zero run
//! only: the result is the same sum as torch's dense conv without its zero terms.
use crate::ctx::{Ctx, Faults};
use crate::error::{input_err, Result};
use crate::store::Weights;
use candle_core::{DType, Tensor};
use serde::Deserialize;
use std::f64::consts::PI;

/// `Resample`'s defaults, as infer_v2 uses them.
pub const LOWPASS_FILTER_WIDTH: usize = 6;
pub const ROLLOFF: f64 = 0.99;
/// torchaudio's Kaiser beta when `beta` is None.
pub const KAISER_BETA: f64 = 14.769656459379492;
/// `_load_and_cut_audio(…, 15)`: speaker and emotion prompts keep their first 15 s.
pub const MAX_PROMPT_SECONDS: f64 = 15.0;
/// `infer(…, interval_silence=200)`: milliseconds of silence between segments.
pub const INTERVAL_SILENCE_MS: i64 = 200;
/// The rates the speaker branch resamples its prompt to (s2mel mel / BigVGAN, and the w2v-bert /
/// CAMPPlus front ends).
pub const SR_22K: u32 = 22050;
pub const SR_16K: u32 = 16000;

pub const FAULTS: &[&str] = &[
    "rectangular_window", // plain truncated sinc: the window forgotten
    "no_cut",             // the speaker prompt is not cut to 15 s
];

/// `resampling_method` (the deprecated names torchaudio still accepts are aliases).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum ResamplingMethod {
    #[default]
    SincInterpHann,
    SincInterpKaiser,
}

impl<'de> Deserialize<'de> for ResamplingMethod {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "sinc_interp_hann" | "sinc_interpolation" => Ok(ResamplingMethod::SincInterpHann),
            "sinc_interp_kaiser" | "kaiser_window" => Ok(ResamplingMethod::SincInterpKaiser),
            _ => Err(serde::de::Error::custom(format!(
                "resampling_method `{s}` is not supported (supported: sinc_interp_hann, sinc_interp_kaiser; \
                 the deprecated sinc_interpolation, kaiser_window)"
            ))),
        }
    }
}

/// The kernel settings of `torchaudio.transforms.Resample`.
#[derive(Debug, Clone, Copy)]
pub struct KernelParams {
    pub method: ResamplingMethod,
    pub lowpass_filter_width: usize,
    pub rolloff: f64,
    /// Kaiser only (torchaudio ignores it for Hann); None = `KAISER_BETA`.
    pub beta: Option<f64>,
    /// Fault switch: no window at all.
    pub rectangular: bool,
}

impl Default for KernelParams {
    fn default() -> Self {
        KernelParams { method: ResamplingMethod::SincInterpHann, lowpass_filter_width: LOWPASS_FILTER_WIDTH, rolloff: ROLLOFF, beta: None, rectangular: false }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Modified Bessel function I0 by its power series Σ ((x/2)^k / k!)² (converges for every x;
/// f64-accurate for the |x| ≤ ~50 a Kaiser window meets).
fn bessel_i0(x: f64) -> f64 {
    let q = x * x / 4.0;
    let (mut term, mut sum, mut k) = (1.0f64, 1.0f64, 1.0f64);
    while term > sum * 1e-18 {
        term *= q / (k * k);
        sum += term;
        k += 1.0;
    }
    sum
}

/// The polyphase filter bank for one rate pair (rates already reduced by their gcd).
pub struct SincKernel {
    pub orig: usize,
    pub new: usize,
    pub width: usize,
    /// Per output phase j: index of the first non-zero tap in the dense row, and the non-zero run.
    phases: Vec<(usize, Vec<f32>)>,
}

impl SincKernel {
    pub fn new(orig_freq: u32, new_freq: u32) -> Result<SincKernel> {
        SincKernel::build(orig_freq, new_freq, &KernelParams::default())
    }

    /// `_get_sinc_resample_kernel(orig, new, gcd, lowpass_filter_width, rolloff, method, beta)` with
    /// `dtype=None`, as the class builds it: f64 math rounded to f32.
    pub fn build(orig_freq: u32, new_freq: u32, p: &KernelParams) -> Result<SincKernel> {
        if orig_freq == 0 || new_freq == 0 {
            return input_err(format!("resample rates must be positive, got {orig_freq} → {new_freq}"));
        }
        p.check()?;
        let g = gcd(orig_freq as u64, new_freq as u64);
        let (orig, new) = ((orig_freq as u64 / g) as usize, (new_freq as u64 / g) as usize);
        let lw = p.lowpass_filter_width as f64;
        let base = orig.min(new) as f64 * p.rolloff;
        let width = ((p.lowpass_filter_width * orig) as f64 / base).ceil() as usize;
        let taps = orig + 2 * width;
        let scale = base / orig as f64;
        // torchaudio holds beta (and so i0(beta)) as a float32 tensor, whatever the kernel dtype.
        let beta = p.beta.unwrap_or(KAISER_BETA) as f32 as f64;
        let i0_beta = bessel_i0(beta) as f32 as f64;
        let value = |t: f64| {
            let window = if p.rectangular {
                1.0
            } else if p.method == ResamplingMethod::SincInterpHann {
                let c = (t * PI / lw / 2.0).cos();
                c * c
            } else {
                let r = t / lw;
                bessel_i0(beta * (1.0 - r * r).sqrt()) / i0_beta
            };
            let t = t * PI;
            let sinc = if t == 0.0 { 1.0 } else { t.sin() / t };
            (sinc * (window * scale)) as f32
        };
        // Taps clamped to ±lw crossings all take the edge value (0 in f32 with the Hann window).
        let (edge_lo, edge_hi) = (value(-lw), value(lw));
        let zero_edges = edge_lo == 0.0 && edge_hi == 0.0;
        let mut phases = Vec::with_capacity(new);
        for j in 0..new {
            // torchaudio builds the phase offset from an integer arange divided in the default
            // dtype (f32) and only then adds the f64 tap grid.
            let phase = (-(j as f64) as f32 / new as f32) as f64;
            let at = |k: usize| {
                let t = (phase + (k as f64 - width as f64) / orig as f64) * base;
                if t <= -lw {
                    edge_lo
                } else if t >= lw {
                    edge_hi
                } else {
                    value(t)
                }
            };
            // t grows with k: only taps with |t| < lw (plus a margin) can be non-zero, so coprime
            // rate pairs (rows of ~orig taps) cost O(new · 2·lw·orig/base), not O(new · orig).
            let (lo, hi) = if zero_edges {
                let edge = |c: f64| width as f64 + orig as f64 * (c / base - phase);
                ((edge(-lw).floor() - 2.0).max(0.0) as usize, ((edge(lw).ceil() + 2.0).max(0.0) as usize).min(taps - 1))
            } else {
                (0, taps - 1)
            };
            let row: Vec<f32> = (lo..=hi.max(lo)).map(at).collect();
            let first = row.iter().position(|v| *v != 0.0).unwrap_or(0);
            let last = row.iter().rposition(|v| *v != 0.0).map_or(first, |p| p + 1);
            phases.push((lo + first, row[first..last].to_vec()));
        }
        Ok(SincKernel { orig, new, width, phases })
    }

/// The dense kernel `[new, orig + 2·width]` as torchaudio holds it (`kernel[:, 0, :]`).
    pub fn dense(&self) -> Vec<f32> {
        let taps = self.orig + 2 * self.width;
        let mut out = vec![0f32; self.new * taps];
        for (j, (first, run)) in self.phases.iter().enumerate() {
            out[j * taps + first..j * taps + first + run.len()].copy_from_slice(run);
        }
        out
    }

    /// torchaudio's target length: `ceil(new·N/orig)` with the quotient held in an f32 tensor,
    /// capped (like its slice) at what the strided conv produces.
    pub fn out_len(&self, n: usize) -> usize {
        let q = (self.new as f64 * n as f64 / self.orig as f64) as f32;
        (q.ceil() as usize).min((n / self.orig + 1) * self.new)
    }

    /// One channel: `y[f·new + j] = Σ_k row_j[k] · x[f·orig + k − width]` (zero outside x).
    pub fn apply(&self, x: &[f32], y: &mut [f32]) {
        let n = x.len() as isize;
        let w = self.width as isize;
        let fill = |start: usize, chunk: &mut [f32]| {
            for (i, out) in chunk.iter_mut().enumerate() {
                let m = start + i;
                let (f, j) = (m / self.new, m % self.new);
                let (first, run) = &self.phases[j];
                let s = (f * self.orig + first) as isize - w; // x index of run[0]
                let (lo, hi) = ((-s).max(0), (n - s).min(run.len() as isize));
                let mut acc = 0f64;
                if lo < hi {
                    let xs = &x[(s + lo) as usize..(s + hi) as usize];
                    for (a, b) in run[lo as usize..hi as usize].iter().zip(xs) {
                        acc += *a as f64 * *b as f64;
                    }
                }
                *out = acc as f32;
            }
        };
        const CHUNK: usize = 16384;
        if y.len() > CHUNK {
            let (n, dst) = (y.len(), crate::nn::SendPtr(y.as_mut_ptr()));
            crate::nn::par_for(n.div_ceil(CHUNK), |c| {
                // SAFETY: chunk c of `y`, written by this task only
                fill(c * CHUNK, unsafe { std::slice::from_raw_parts_mut(dst.get().add(c * CHUNK), CHUNK.min(n - c * CHUNK)) })
            });
        } else {
            fill(0, y);
        }
    }
}

impl KernelParams {
    /// What torchaudio rejects, or cannot compute (rolloff ≤ 0 gives an infinite width).
    fn check(&self) -> Result<()> {
        if self.lowpass_filter_width == 0 {
            return input_err("resample config: lowpass_filter_width must be positive, got 0");
        }
        if !(self.rolloff.is_finite() && self.rolloff > 0.0) {
            return input_err(format!("resample config: rolloff must be a finite value > 0, got {:?}", self.rolloff));
        }
        if let Some(b) = self.beta {
            if !b.is_finite() || b < 0.0 {
                return input_err(format!("resample config: beta must be finite and ≥ 0, got {b:?}"));
            }
        }
        Ok(())
    }
}

/// `[C, N]` or `[N]` float32 → the host rows (C of them) and whether the input was rank 1.
fn rows(x: &Tensor, what: &str) -> Result<(Vec<Vec<f32>>, bool)> {
    if x.dtype() != DType::F32 {
        return input_err(format!("{what} expects float32 samples, got {:?}", x.dtype()));
    }
    match x.rank() {
        1 => Ok((vec![x.to_vec1::<f32>()?], true)),
        2 => Ok((x.to_vec2::<f32>()?, false)),
        _ => input_err(format!("{what} expects samples [N] or [C, N], got {:?}", x.dims())),
    }
}

fn from_rows(rows: Vec<Vec<f32>>, flat: bool, like: &Tensor) -> Result<Tensor> {
    let (c, n) = (rows.len(), rows.first().map_or(0, |r| r.len()));
    let data: Vec<f32> = rows.into_iter().flatten().collect();
    let t = if flat { Tensor::from_vec(data, n, like.device())? } else { Tensor::from_vec(data, (c, n), like.device())? };
    Ok(t)
}

fn resample_with(x: &Tensor, orig_freq: u32, new_freq: u32, p: &KernelParams) -> Result<Tensor> {
    if orig_freq == 0 || new_freq == 0 {
        return input_err(format!("resample rates must be positive, got {orig_freq} → {new_freq}"));
    }
    if x.dtype() != DType::F32 || (x.rank() != 1 && x.rank() != 2) {
        return input_err(format!("resample expects samples [N] or [C, N] of float32, got {:?} {:?}", x.dtype(), x.dims()));
    }
    if x.elem_count() == 0 {
        return input_err(format!("resample needs at least one sample, got shape {:?}", x.dims()));
    }
    if orig_freq == new_freq {
        return Ok(x.clone());
    }
    let (xs, flat) = rows(x, "resample")?;
    let k = SincKernel::build(orig_freq, new_freq, p)?;
    let out = xs
        .iter()
        .map(|r| {
            let mut y = vec![0f32; k.out_len(r.len())];
            k.apply(r, &mut y);
            y
        })
        .collect();
    from_rows(out, flat, x)
}

/// `torchaudio.transforms.Resample(orig_freq, new_freq)(x)` with its defaults, for x `[C, N]` or
/// `[N]` float32; the output keeps the rank and has `ceil(new·N/orig)` samples per channel.
pub fn resample(x: &Tensor, orig_freq: u32, new_freq: u32) -> Result<Tensor> {
    resample_with(x, orig_freq, new_freq, &KernelParams::default())
}

/// `_load_and_cut_audio`: the first `int(seconds·sr)` samples along the last axis (all of them
/// when the clip is shorter).
pub fn cut(x: &Tensor, sr: u32, seconds: f64) -> Result<Tensor> {
    if sr == 0 || !seconds.is_finite() || seconds < 0.0 {
        return input_err(format!("cut needs sr > 0 and finite seconds ≥ 0, got sr {sr}, seconds {seconds}"));
    }
    if x.rank() != 1 && x.rank() != 2 {
        return input_err(format!("cut expects samples [N] or [C, N], got {:?}", x.dims()));
    }
    let max = (seconds * sr as f64) as usize;
    let n = x.dim(x.rank() - 1)?;
    Ok(if n > max { x.narrow(x.rank() - 1, 0, max)? } else { x.clone() })
}

/// `insert_interval_silence` + `torch.cat`: each segment `[C, N_i]` (or `[N_i]`) clamped to ±1,
/// `int(sr·interval_ms/1000)` zeros between neighbours (none when interval_ms ≤ 0).
pub fn join_segments(wavs: &[Tensor], sr: u32, interval_ms: i64) -> Result<Tensor> {
    let Some(first) = wavs.first() else {
        return input_err("join_segments needs at least one segment");
    };
    let lead: Vec<usize> = first.dims().iter().take(first.rank().saturating_sub(1)).copied().collect();
    let mut parts = Vec::with_capacity(2 * wavs.len());
    for (i, w) in wavs.iter().enumerate() {
        if w.dtype() != DType::F32 || (w.rank() != 1 && w.rank() != 2) || w.dims()[..w.rank() - 1] != lead[..] {
            return input_err(format!(
                "join_segments: segment {i} is {:?} {:?}; all must be float32 [C, N] with the first's C ({:?})",
                w.dtype(),
                w.dims(),
                first.dims()
            ));
        }
        if i > 0 && interval_ms > 0 {
            let sil = (sr as f64 * interval_ms as f64 / 1000.0) as usize;
            if sil > 0 {
                let mut shape = lead.clone();
                shape.push(sil);
                let n = shape.iter().product();
                parts.push(Tensor::from_vec(vec![0f32; n], shape, w.device())?); // silence, not a weight
            }
        }
        parts.push(w.clamp(-1f32, 1f32)?);
    }
    Ok(Tensor::cat(&parts, first.rank() - 1)?)
}

/// 16-bit PCM as `(x·32767).type(torch.int16)` after the ±1 clamp (truncation toward zero). Note:
/// infer_v2 itself saves the float wav with `torchaudio.save`; this is for writers that want PCM.
pub fn to_pcm16(x: &Tensor) -> Result<Vec<i16>> {
    let v = x.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    Ok(v.iter().map(|s| (s.clamp(-1.0, 1.0) * 32767.0) as i16).collect())
}

/// The weightless registry kind: `torchaudio.transforms.Resample`'s constructor arguments (absent
/// keys take its defaults; infer_v2 builds `Resample(sr, 22050)` / `Resample(sr, 16000)`), used for
/// the config's rate pair, the explicit pairs of `forward_rates` and the speaker front end.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResampleConfig {
    pub orig_freq: u32,
    pub new_freq: u32,
    pub resampling_method: ResamplingMethod,
    pub lowpass_filter_width: usize,
    pub rolloff: f64,
    pub beta: Option<f64>,
}

impl Default for ResampleConfig {
    fn default() -> Self {
        ResampleConfig { orig_freq: 16000, new_freq: 16000, resampling_method: ResamplingMethod::SincInterpHann, lowpass_filter_width: LOWPASS_FILTER_WIDTH, rolloff: ROLLOFF, beta: None }
    }
}

pub struct Resampler {
    cfg: ResampleConfig,
    params: KernelParams,
    faults: Faults,
}

impl Resampler {
    pub fn load(_w: &Weights, cfg: ResampleConfig, faults: Faults) -> Result<Resampler> {
        if cfg.orig_freq == 0 || cfg.new_freq == 0 {
            return input_err(format!("resample config: rates must be positive, got {cfg:?}"));
        }
        let params = KernelParams {
            method: cfg.resampling_method,
            lowpass_filter_width: cfg.lowpass_filter_width,
            rolloff: cfg.rolloff,
            beta: cfg.beta,
            rectangular: faults.on("rectangular_window"),
        };
        params.check()?;
        Ok(Resampler { cfg, params, faults })
    }

    /// Taps: `kernel` (`[new, orig + 2·width]`, only when the rates differ), `resampled`.
    pub fn forward(&self, x: &Tensor, orig_freq: u32, new_freq: u32, ctx: &mut Ctx) -> Result<Tensor> {
        let p = &self.params;
        if ctx.records() && orig_freq != new_freq && orig_freq > 0 && new_freq > 0 {
            let k = SincKernel::build(orig_freq, new_freq, p)?;
            let taps = k.orig + 2 * k.width;
            ctx.tap("kernel", &Tensor::from_vec(k.dense(), (k.new, taps), x.device())?);
        }
        ctx.block("resampled", x, |x| resample_with(x, orig_freq, new_freq, p))
    }

    /// The speaker branch at the config's `orig_freq`: cut to 15 s, then 22.05 kHz and 16 kHz.
    /// Taps: `cut`, `resample_22k`, `resample_16k`.
    pub fn front(&self, x: &Tensor, ctx: &mut Ctx) -> Result<(Tensor, Tensor)> {
        let sr = self.cfg.orig_freq;
        let no_cut = self.faults.on("no_cut");
        let p = &self.params;
        let clip = ctx.block("cut", x, |x| if no_cut { Ok(x.clone()) } else { cut(x, sr, MAX_PROMPT_SECONDS) })?;
        let a22 = ctx.block("resample_22k", &clip, |c| resample_with(c, sr, SR_22K, p))?;
        let a16 = ctx.block("resample_16k", &clip, |c| resample_with(c, sr, SR_16K, p))?;
        Ok((a22, a16))
    }

    pub fn config(&self) -> &ResampleConfig {
        &self.cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn identity_and_lengths() {
        let x = Tensor::from_vec((0..1000).map(|i| (i as f32 * 0.01).sin()).collect::<Vec<_>>(), 1000, &Device::Cpu).unwrap();
        let same = resample(&x, 22050, 22050).unwrap();
        assert_eq!(same.to_vec1::<f32>().unwrap(), x.to_vec1::<f32>().unwrap());
        assert_eq!(resample(&x, 22050, 16000).unwrap().dims(), &[726]); // ceil(1000·320/441)
        assert_eq!(resample(&x, 16000, 22050).unwrap().dims(), &[1379]);
        let k = SincKernel::new(22050, 16000).unwrap();
        assert_eq!((k.orig, k.new, k.width), (441, 320, 9));
    }

    #[test]
    fn bad_input_is_an_error() {
        let x = Tensor::zeros(10, DType::F32, &Device::Cpu).unwrap();
        assert!(resample(&x, 0, 16000).is_err());
        assert!(resample(&Tensor::zeros(0, DType::F32, &Device::Cpu).unwrap(), 22050, 16000).is_err());
        assert!(resample(&Tensor::zeros((1, 1, 4), DType::F32, &Device::Cpu).unwrap(), 22050, 16000).is_err());
        assert!(join_segments(&[], 22050, 200).is_err());
    }

    #[test]
    fn windowed_rows_equal_full_rows() {
        // The support shortcut must give the same kernel as evaluating every tap.
        for (o, n) in [(22050, 16000), (16000, 22050), (44100, 16000), (24000, 16000), (101, 97), (8000, 44100)] {
            let k = SincKernel::new(o, n).unwrap();
            let fast = k.dense();
            let taps = k.orig + 2 * k.width;
            let (lw, base) = (LOWPASS_FILTER_WIDTH as f64, k.orig.min(k.new) as f64 * ROLLOFF);
            for j in 0..k.new {
                let phase = (-(j as f64) as f32 / k.new as f32) as f64;
                for t in 0..taps {
                    let tt = ((phase + (t as f64 - k.width as f64) / k.orig as f64) * base).clamp(-lw, lw);
                    let c = (tt * PI / lw / 2.0).cos();
                    let x = tt * PI;
                    let s = if x == 0.0 { 1.0 } else { x.sin() / x };
                    let want = (s * (c * c * (base / k.orig as f64))) as f32;
                    assert_eq!(fast[j * taps + t], want, "{o}->{n} j={j} t={t}");
                }
            }
        }
    }

    #[test]
    fn bessel_i0_known_values() {
        // numpy.i0 (Cephes): I0(1), I0(5)·e^-5, I0(10)·e^-10, I0 at torchaudio's default beta
        assert_eq!(bessel_i0(0.0), 1.0);
        assert!((bessel_i0(1.0) - 1.266_065_877_752_008_4).abs() < 1e-15);
        assert!((bessel_i0(5.0) * (-5f64).exp() - 0.183_540_812_609_328_3).abs() < 1e-15);
        assert!((bessel_i0(10.0) * (-10f64).exp() - 0.127_833_337_163_428_6).abs() < 1e-15);
        assert!((bessel_i0(KAISER_BETA) / 271_903.640_681_456_6 - 1.0).abs() < 1e-14);
    }

    #[test]
    fn join_layout() {
        let a = Tensor::from_vec(vec![2f32, -0.5], (1, 2), &Device::Cpu).unwrap();
        let b = Tensor::from_vec(vec![0.25f32], (1, 1), &Device::Cpu).unwrap();
        let j = join_segments(&[a, b], 20, 100).unwrap(); // 2 zeros between
        assert_eq!(j.to_vec2::<f32>().unwrap(), vec![vec![1.0, -0.5, 0.0, 0.0, 0.25]]);
        assert_eq!(to_pcm16(&j).unwrap(), vec![32767, -16383, 0, 0, 8191]);
    }
}

#[cfg(test)]
mod timing {
    use super::*;
    #[test]
    #[ignore]
    fn time_parts() {
        let n = 15 * 22050;
        let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.001).sin()).collect();
        let t0 = std::time::Instant::now();
        let k = SincKernel::new(22050, 16000).unwrap();
        let t1 = std::time::Instant::now();
        let mut y = vec![0f32; k.out_len(n)];
        k.apply(&x, &mut y);
        let t2 = std::time::Instant::now();
        eprintln!("kernel {:?} apply {:?}", t1 - t0, t2 - t1);
    }
}
