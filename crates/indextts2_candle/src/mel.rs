//! s2mel mel spectrogram (`indextts/s2mel/modules/audio.py:mel_spectrogram`, center=False) and the
//! real FFT shared with the Kaldi fbank.
//!
//! wav `[B, N]` → reflect pad (n_fft − hop)/2 → frames of n_fft every hop (after torch.stft's own
//! reflect padding of n_fft/2 when `center`) → periodic Hann → |X| = √(re² + im² + 1e-9) → librosa
//! Slaney mel filterbank → ln(max(·, 1e-5)) → `[B, mels, frames]`. One tap per operation (`pad`,
//! `stft`, `magnitude`, `mel_basis`, `log`); each stage reads its f32 input, the spectra are
//! computed in f64 on the host and rounded to f32; the filterbank is rounded to f32 as librosa
//! returns it. The model reads no weights: its checkpoint may hold no tensors at all.
use crate::ctx::{Ctx, Faults};
use crate::error::{input_err, Result};
use crate::store::Weights;
use candle_core::{DType, Tensor};
use serde::Deserialize;
use std::f64::consts::PI;

/// `mel_spectrogram(y, n_fft, num_mels, sampling_rate, hop_size, win_size, fmin, fmax, center)`;
/// the defaults are s2mel's `config.yaml` values as infer_v2 passes them (and the function's
/// `center=False`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MelConfig {
    pub sampling_rate: usize,
    pub n_fft: usize,
    pub win_size: usize,
    pub hop_size: usize,
    pub num_mels: usize,
    pub fmin: f64,
    /// None = sampling_rate / 2 (librosa's default)
    pub fmax: Option<f64>,
    /// torch.stft's own centring (reflect-pads n_fft/2 more each side)
    pub center: bool,
}

impl Default for MelConfig {
    fn default() -> Self {
        MelConfig { sampling_rate: 22050, n_fft: 1024, win_size: 1024, hop_size: 256, num_mels: 80, fmin: 0.0, fmax: None, center: false }
    }
}

pub const FAULTS: &[&str] = &[
    "htk_mel_scale",    // HTK mel scale (2595·log10(1+f/700)) instead of librosa's default Slaney scale
    "zero_padding",     // the (n_fft − hop)/2 edge padding with zeros instead of reflect
    "symmetric_window", // Hann window symmetric (periodic=False) instead of torch's periodic default
];

/// Real-input DFT of size n with its twiddles precomputed: bins 0..=n/2 as (re, im). Radix-2 when
/// n is a power of two, a direct O(n²) sum otherwise.
pub struct Rfft {
    n: usize,
    cos: Vec<f64>, // cos(2πk/n), k < n
    sin: Vec<f64>,
}

impl Rfft {
    pub fn new(n: usize) -> Rfft {
        let (cos, sin) = (0..n).map(|k| (2.0 * PI * k as f64 / n as f64).sin_cos()).map(|(s, c)| (c, s)).unzip();
        Rfft { n, cos, sin }
    }

    pub fn run(&self, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let n = self.n.min(x.len());
        let nb = n / 2 + 1;
        if n == 0 {
            return (vec![0.0], vec![0.0]);
        }
        if !n.is_power_of_two() || n != self.n {
            let mut re = vec![0.0; nb];
            let mut im = vec![0.0; nb];
            for k in 0..nb {
                for (t, v) in x.iter().take(n).enumerate() {
                    let a = -2.0 * PI * ((k * t) % n) as f64 / n as f64;
                    re[k] += v * a.cos();
                    im[k] += v * a.sin();
                }
            }
            return (re, im);
        }
        let bits = n.ilog2(); // n is a power of two
        let mut re = vec![0.0; n];
        let mut im = vec![0.0; n];
        for (i, v) in x.iter().take(n).enumerate() {
            let j = if bits == 0 { 0 } else { i.reverse_bits() >> (usize::BITS - bits) };
            re[j] = *v;
        }
        let mut len = 2;
        while len <= n {
            let half = len / 2;
            let step = n / len;
            for k in 0..half {
                let (wr, wi) = (self.cos[k * step], -self.sin[k * step]);
                let mut s = 0;
                while s < n {
                    let (i, j) = (s + k, s + k + half);
                    let tr = re[j] * wr - im[j] * wi;
                    let ti = re[j] * wi + im[j] * wr;
                    re[j] = re[i] - tr;
                    im[j] = im[i] - ti;
                    re[i] += tr;
                    im[i] += ti;
                    s += len;
                }
            }
            len <<= 1;
        }
        re.truncate(nb);
        im.truncate(nb);
        (re, im)
    }
}

/// One-off real DFT (plans its twiddles each call).
pub fn rfft(x: &[f64]) -> (Vec<f64>, Vec<f64>) {
    Rfft::new(x.len()).run(x)
}

const F_SP: f64 = 200.0 / 3.0;
const MIN_LOG_HZ: f64 = 1000.0;

fn hz_to_mel(f: f64, htk: bool) -> f64 {
    if htk {
        return 2595.0 * (1.0 + f / 700.0).log10();
    }
    if f >= MIN_LOG_HZ {
        MIN_LOG_HZ / F_SP + (f / MIN_LOG_HZ).ln() / (6.4f64.ln() / 27.0)
    } else {
        f / F_SP
    }
}

fn mel_to_hz(m: f64, htk: bool) -> f64 {
    if htk {
        return 700.0 * (10f64.powf(m / 2595.0) - 1.0);
    }
    let min_log_mel = MIN_LOG_HZ / F_SP;
    if m >= min_log_mel {
        MIN_LOG_HZ * ((6.4f64.ln() / 27.0) * (m - min_log_mel)).exp()
    } else {
        F_SP * m
    }
}

/// `librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax)` (Slaney area normalisation), `[n_mels][n_fft/2+1]`,
/// each value rounded to f32 as librosa returns it.
pub fn mel_filters(sr: f64, n_fft: usize, n_mels: usize, fmin: f64, fmax: Option<f64>, htk: bool) -> Vec<Vec<f64>> {
    let fmax = fmax.unwrap_or(sr / 2.0);
    let nb = n_fft / 2 + 1;
    let fft_f: Vec<f64> = (0..nb).map(|i| (sr / 2.0) * i as f64 / (nb - 1).max(1) as f64).collect();
    let (mlo, mhi) = (hz_to_mel(fmin, htk), hz_to_mel(fmax, htk));
    let edges: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(mlo + (mhi - mlo) * i as f64 / (n_mels + 1) as f64, htk))
        .collect();
    (0..n_mels)
        .map(|m| {
            let (l, c, r) = (edges[m], edges[m + 1], edges[m + 2]);
            let enorm = 2.0 / (r - l);
            fft_f
                .iter()
                .map(|&f| {
                    let rise = (f - l) / (c - l);
                    let fall = (r - f) / (r - c);
                    ((rise.min(fall).max(0.0) * enorm) as f32) as f64
                })
                .collect()
        })
        .collect()
}

pub struct MelSpectrogram {
    cfg: MelConfig,
    basis: Tensor, // [mels, n_fft/2 + 1] f32, as librosa returns it
    fft: Rfft,
    window: Vec<f64>, // periodic Hann of win_size, centred in n_fft (torch.stft's window padding)
    zero_padding: bool,
}

/// Reflect padding without edge repeat (index −k → k, n−1+k → n−1−k), as F.pad(mode="reflect").
fn reflect(row: &[f64], pad: usize) -> Vec<f64> {
    let n = row.len() as isize;
    (0..row.len() + 2 * pad)
        .map(|i| {
            let j = i as isize - pad as isize;
            let j = if j < 0 { -j } else if j >= n { 2 * (n - 1) - j } else { j };
            row[j as usize]
        })
        .collect()
}

fn rows_f64(x: &Tensor) -> Result<Vec<Vec<f64>>> {
    Ok(x.to_dtype(DType::F64)?.to_vec2::<f64>()?)
}

fn from_rows(rows: Vec<Vec<f64>>, like: &Tensor) -> Result<Tensor> {
    let (b, n) = (rows.len(), rows.first().map_or(0, |r| r.len()));
    let flat: Vec<f32> = rows.into_iter().flatten().map(|v| v as f32).collect();
    Ok(Tensor::from_vec(flat, (b, n), like.device())?)
}

impl MelSpectrogram {
    pub fn load(w: &Weights, cfg: MelConfig, faults: Faults) -> Result<MelSpectrogram> {
        if cfg.n_fft < 2 || cfg.hop_size == 0 || cfg.hop_size > cfg.n_fft || cfg.win_size == 0 || cfg.win_size > cfg.n_fft || cfg.num_mels == 0 {
            return input_err(format!("mel config: need 0 < hop ≤ n_fft, 0 < win ≤ n_fft, mels > 0; got {cfg:?}"));
        }
        let nyq = cfg.sampling_rate as f64 / 2.0;
        let fmax = cfg.fmax.unwrap_or(nyq);
        if cfg.sampling_rate == 0 || !(cfg.fmin >= 0.0 && cfg.fmin < fmax && fmax.is_finite()) {
            return input_err(format!("mel config: need sampling_rate > 0 and 0 ≤ fmin < fmax; got fmin {:?}, fmax {:?}", cfg.fmin, cfg.fmax));
        }
        let basis = mel_filters(cfg.sampling_rate as f64, cfg.n_fft, cfg.num_mels, cfg.fmin, cfg.fmax, faults.on("htk_mel_scale"));
        let left = (cfg.n_fft - cfg.win_size) / 2;
        // periodic Hann: cos(2πi/N); symmetric (the fault): cos(2πi/(N−1))
        let denom = if faults.on("symmetric_window") { cfg.win_size.saturating_sub(1).max(1) } else { cfg.win_size };
        let mut window = vec![0.0; cfg.n_fft];
        for i in 0..cfg.win_size {
            window[left + i] = 0.5 - 0.5 * (2.0 * PI * i as f64 / denom as f64).cos();
        }
        let nb = cfg.n_fft / 2 + 1;
        let flat: Vec<f32> = basis.iter().flatten().map(|v| *v as f32).collect();
        let basis = Tensor::from_vec(flat, (cfg.num_mels, nb), w.device())?;
        let fft = Rfft::new(cfg.n_fft);
        Ok(MelSpectrogram { cfg, basis, fft, window, zero_padding: faults.on("zero_padding") })
    }

    /// `F.pad(y.unsqueeze(1), ((n_fft − hop)/2,)·2, mode="reflect")`.
    fn pad(&self, y: &Tensor) -> Result<Tensor> {
        let pad = (self.cfg.n_fft - self.cfg.hop_size) / 2;
        let rows = rows_f64(y)?
            .into_iter()
            .map(|r| {
                if self.zero_padding {
                    let mut o = vec![0.0; pad];
                    o.extend(&r);
                    o.extend(std::iter::repeat_n(0.0, pad));
                    o
                } else {
                    reflect(&r, pad)
                }
            })
            .collect();
        from_rows(rows, y)
    }

    /// `view_as_real(torch.stft(y, n_fft, hop, win, window, center, pad_mode="reflect", onesided))`:
    /// `[B, n_fft/2 + 1, frames, 2]`.
    fn stft(&self, y: &Tensor) -> Result<Tensor> {
        let (n_fft, hop) = (self.cfg.n_fft, self.cfg.hop_size);
        let (b, n) = y.dims2()?;
        if self.cfg.center && n <= n_fft / 2 {
            return input_err(format!("mel spectrogram (center) needs more than {} padded samples, got {n}", n_fft / 2));
        }
        let np = if self.cfg.center { n + 2 * (n_fft / 2) } else { n };
        if np < n_fft {
            return input_err(format!("mel spectrogram: {np} padded samples, fewer than n_fft {n_fft}"));
        }
        let frames = 1 + (np - n_fft) / hop;
        let nb = n_fft / 2 + 1;
        let mut out = vec![0f32; b * nb * frames * 2];
        let mut buf = vec![0f64; n_fft];
        for (bi, row) in rows_f64(y)?.iter().enumerate() {
            let row = if self.cfg.center { reflect(row, n_fft / 2) } else { row.clone() };
            for f in 0..frames {
                for (k, v) in buf.iter_mut().enumerate() {
                    *v = row[f * hop + k] * self.window[k];
                }
                let (re, im) = self.fft.run(&buf);
                for k in 0..nb {
                    let o = ((bi * nb + k) * frames + f) * 2;
                    out[o] = re[k] as f32;
                    out[o + 1] = im[k] as f32;
                }
            }
        }
        Ok(Tensor::from_vec(out, (b, nb, frames, 2), y.device())?)
    }

    /// `sqrt(spec.pow(2).sum(-1) + 1e-9)`, in f64 from the f32 spectrum.
    fn magnitude(&self, s: &Tensor) -> Result<Tensor> {
        let (b, nb, t, _) = s.dims4()?;
        let v = s.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        let out: Vec<f32> = v.chunks_exact(2).map(|c| (c[0] * c[0] + c[1] * c[1] + 1e-9).sqrt() as f32).collect();
        Ok(Tensor::from_vec(out, (b, nb, t), s.device())?)
    }

    fn apply_basis(&self, mag: &Tensor) -> Result<Tensor> {
        let (b, nb, _) = mag.dims3()?;
        if nb != self.cfg.n_fft / 2 + 1 {
            return input_err(format!("mel_basis expects [B, {}, T], got {:?}", self.cfg.n_fft / 2 + 1, mag.dims()));
        }
        // f32 matmul, as torch.matmul(mel_basis, spec) upstream.
        let basis = self.basis.to_device(mag.device())?.unsqueeze(0)?.broadcast_as((b, self.cfg.num_mels, nb))?.contiguous()?;
        Ok(basis.matmul(&mag.to_dtype(DType::F32)?.contiguous()?)?)
    }

    /// Taps: `pad` (`[B, N + n_fft − hop]`), `stft` (`[B, n_fft/2+1, T, 2]`), `magnitude`
    /// (`[B, n_fft/2+1, T]`), `mel_basis` (`[B, mels, T]`), `log`.
    pub fn forward(&self, y: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        if y.rank() != 2 {
            return input_err(format!("mel spectrogram expects wav [B, N], got {:?}", y.dims()));
        }
        let pad = (self.cfg.n_fft - self.cfg.hop_size) / 2;
        let n = y.dim(1)?;
        if n <= pad || n + 2 * pad < self.cfg.n_fft {
            return input_err(format!("mel spectrogram needs more than {pad} samples (reflect padding), got {n}"));
        }
        let y = ctx.block("pad", y, |y| self.pad(y))?;
        let spec = ctx.block("stft", &y, |y| self.stft(y))?;
        let mag = ctx.block("magnitude", &spec, |s| self.magnitude(s))?;
        let mel = ctx.block("mel_basis", &mag, |m| self.apply_basis(m))?;
        ctx.block("log", &mel, |m| Ok(m.maximum(1e-5)?.log()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let n = x.len();
        (0..=n / 2)
            .map(|k| {
                x.iter().enumerate().fold((0.0, 0.0), |(r, i), (t, v)| {
                    let a = -2.0 * PI * (k * t) as f64 / n as f64;
                    (r + v * a.cos(), i + v * a.sin())
                })
            })
            .unzip()
    }

    #[test]
    fn radix2_equals_direct_dft() {
        for n in [1usize, 2, 8, 64, 512] {
            let x: Vec<f64> = (0..n).map(|i| ((i * 7919) % 13) as f64 - 6.0 + 0.25 * (i as f64).sin()).collect();
            let (r1, i1) = rfft(&x);
            let (r2, i2) = naive(&x);
            for k in 0..=n / 2 {
                assert!((r1[k] - r2[k]).abs() < 1e-9 && (i1[k] - i2[k]).abs() < 1e-9, "n={n} k={k}");
            }
        }
        let (r, i) = rfft(&[1.0, 2.0, 3.0]); // non power of two: direct sum
        assert!((r[0] - 6.0).abs() < 1e-12 && (r[1] + 1.5).abs() < 1e-12 && (i[1] - 0.866_025_403_784_438_6).abs() < 1e-12);
    }

    #[test]
    fn slaney_filters_known_values() {
        // Below 1 kHz the Slaney scale is linear (f / (200/3)); band edges of 80 bands up to 11025 Hz.
        assert!((hz_to_mel(1000.0, false) - 15.0).abs() < 1e-12);
        assert!((mel_to_hz(hz_to_mel(4321.0, false), false) - 4321.0).abs() < 1e-9);
        let f = mel_filters(22050.0, 1024, 80, 0.0, None, false);
        assert_eq!((f.len(), f[0].len()), (80, 513));
        assert_eq!(f[0][0], 0.0);
        assert!(f.iter().all(|row| row.iter().all(|v| *v >= 0.0)) && f[79][512] == 0.0);
        let htk = mel_filters(22050.0, 1024, 80, 0.0, None, true);
        assert!(f.iter().zip(&htk).any(|(a, b)| a != b));
    }
}
