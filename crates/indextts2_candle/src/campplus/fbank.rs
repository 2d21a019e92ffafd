//! `torchaudio.compliance.kaldi.fbank(wav, num_mel_bins, dither=0, sample_frequency)` with the
//! options IndexTTS2 keeps: 25 ms povey window, 10 ms shift, snip_edges, DC removal, pre-emphasis
//! 0.97, FFT size rounded up to a power of two, power spectrum, log(max(·, f32::EPSILON)).
//! One tap per stage, named `fbank.<torchaudio's variable>`; each stage reads its f32 input,
//! computes in f64 and rounds its output to f32 (torch computes each stage in f32).
use crate::ctx::{Ctx, Faults};
use crate::error::{input_err, Result};
use crate::mel::Rfft;
use candle_core::{DType, Tensor};

/// The fbank fault switches (see `FAULTS` in `mod.rs`).
#[derive(Clone, Copy, Default)]
pub struct FbankFaults {
    hanning: bool,
    no_preemphasis: bool,
    no_remove_dc: bool,
}

impl FbankFaults {
    pub fn from(f: &Faults) -> FbankFaults {
        FbankFaults {
            hanning: f.on("fbank_hanning_window"),
            no_preemphasis: f.on("fbank_no_preemphasis"),
            no_remove_dc: f.on("fbank_no_remove_dc"),
        }
    }
}

const PREEMPHASIS: f64 = 0.97;

fn kaldi_mel(f: f64) -> f64 {
    1127.0 * (1.0 + f / 700.0).ln()
}

/// Kaldi mel triangles `[bins][padded/2 + 1]` (the Nyquist column is zero), low 20 Hz, high Nyquist.
fn kaldi_mel_banks(bins: usize, padded: usize, sr: f64) -> Vec<Vec<f64>> {
    let nfft = padded / 2;
    let width = sr / padded as f64;
    let (lo, hi) = (kaldi_mel(20.0), kaldi_mel(0.5 * sr));
    let delta = (hi - lo) / (bins + 1) as f64;
    (0..bins)
        .map(|b| {
            let left = lo + b as f64 * delta;
            let center = lo + (b as f64 + 1.0) * delta;
            let right = lo + (b as f64 + 2.0) * delta;
            let mut row: Vec<f64> = (0..nfft)
                .map(|i| {
                    let m = kaldi_mel(width * i as f64);
                    let up = (m - left) / (center - left);
                    let down = (right - m) / (right - center);
                    up.min(down).max(0.0)
                })
                .collect();
            row.push(0.0);
            row
        })
        .collect()
}

/// Row-wise map over a `[rows, cols]` tensor: each row read as f64, `f` writes `out_cols` values.
fn map_rows(x: &Tensor, out_cols: usize, mut f: impl FnMut(&[f64], &mut [f64])) -> Result<Tensor> {
    let (r, _) = x.dims2()?;
    let data = x.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let mut out = Vec::with_capacity(r * out_cols);
    let mut buf = vec![0f64; out_cols];
    for row in &data {
        f(row, &mut buf);
        out.extend(buf.iter().map(|v| *v as f32));
    }
    Ok(Tensor::from_vec(out, (r, out_cols), x.device())?)
}

/// Plain fbank (no taps, no faults): what `CampPlus::fbank` computes before the mean removal.
pub fn kaldi_fbank(wav: &Tensor, bins: usize, sr: f64) -> Result<Tensor> {
    kaldi_fbank_taps(wav, bins, sr, &FbankFaults::default(), &mut Ctx::plain())
}

pub(super) fn kaldi_fbank_taps(wav: &Tensor, bins: usize, sr: f64, faults: &FbankFaults, ctx: &mut Ctx) -> Result<Tensor> {
    let win = (sr * 0.025) as usize;
    let shift = (sr * 0.010) as usize;
    let (c, n) = if wav.rank() == 2 { wav.dims2()? } else { (0, 0) };
    if c != 1 || n < win || win < 2 || shift == 0 {
        return input_err(format!("fbank expects wav [1, N ≥ {win}] (one 25 ms frame), got {:?}", wav.dims()));
    }
    let padded = win.next_power_of_two();
    let frames = 1 + (n - win) / shift;
    let pw = if faults.hanning { 1.0 } else { 0.85 }; // povey = symmetric Hann^0.85
    let window: Vec<f64> = (0..win)
        .map(|i| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / (win - 1) as f64).cos()).powf(pw))
        .collect();
    let fft = Rfft::new(padded);
    let nb = padded / 2 + 1;
    // each triangle as (first non-zero bin, weights up to its last): the products skipped are 0
    let banks: Vec<(usize, Vec<f64>)> = kaldi_mel_banks(bins, padded, sr)
        .into_iter()
        .map(|row| {
            let first = row.iter().position(|&v| v != 0.0).unwrap_or(0);
            let last = row.iter().rposition(|&v| v != 0.0).map_or(first, |p| p + 1);
            (first, row[first..last].to_vec())
        })
        .collect();
    let energies = |p: &dyn Fn(usize) -> f64, o: &mut [f64]| {
        for (o, (first, w)) in o.iter_mut().zip(&banks) {
            *o = w.iter().enumerate().map(|(j, a)| a * p(first + j)).sum();
        }
    };
    let eps = f32::EPSILON as f64; // torchaudio floors at float32's epsilon
    if ctx.is_plain() {
        // nothing tapped: every stage per frame in one pass (frames on Candle's pool), each
        // stage's output rounded to f32 as its tap is, so the same values
        let v = wav.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        if v.iter().any(|s| !s.is_finite()) {
            return input_err("fbank: wav holds NaN or Inf");
        }
        let r32 = |x: f64| x as f32 as f64;
        let mut out = vec![0f32; frames * bins];
        let dst = crate::nn::SendPtr(out.as_mut_ptr());
        crate::nn::par_for_init(
            frames,
            || (fft.buffers(), vec![0f64; win], vec![0f64; nb], vec![0f64; bins]),
            |(buf, a, p, m), f| {
                // SAFETY: frame f's output row, written by this task only
                let o = unsafe { std::slice::from_raw_parts_mut(dst.get().add(f * bins), bins) };
                a.iter_mut().zip(&v[f * shift..f * shift + win]).for_each(|(a, s)| *a = *s as f64);
                if !faults.no_remove_dc {
                    let mean = a.iter().sum::<f64>() / win as f64;
                    a.iter_mut().for_each(|x| *x = r32(*x - mean));
                }
                if !faults.no_preemphasis {
                    for i in (0..win).rev() {
                        a[i] = r32(a[i] - PREEMPHASIS * a[i.saturating_sub(1)]);
                    }
                }
                buf.input.iter_mut().for_each(|x| *x = 0.0);
                buf.input.iter_mut().zip(a.iter()).zip(&window).for_each(|((x, a), w)| *x = r32(a * w));
                fft.spectrum(buf);
                p.iter_mut().zip(&buf.bins).for_each(|(p, c)| *p = r32(c.re * c.re + c.im * c.im));
                energies(&|k| p[k], m);
                o.iter_mut().zip(m.iter()).for_each(|(o, e)| *o = (r32(*e).max(eps).ln()) as f32);
            },
        );
        return Ok(Tensor::from_vec(out, (frames, bins), wav.device())?);
    }
    let x = ctx.block("fbank.strided_input", wav, |w| {
        let v = w.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        if v.iter().any(|s| !s.is_finite()) {
            return input_err("fbank: wav holds NaN or Inf");
        }
        let out: Vec<f32> = (0..frames).flat_map(|f| v[f * shift..f * shift + win].iter().copied()).collect();
        Ok(Tensor::from_vec(out, (frames, win), w.device())?)
    })?;
    let x = ctx.block("fbank.remove_dc_offset", &x, |x| {
        if faults.no_remove_dc {
            return Ok(x.clone());
        }
        map_rows(x, win, |r, o| {
            let mean = r.iter().sum::<f64>() / win as f64;
            o.iter_mut().zip(r).for_each(|(o, v)| *o = v - mean);
        })
    })?;
    let x = ctx.block("fbank.preemphasis", &x, |x| {
        if faults.no_preemphasis {
            return Ok(x.clone());
        }
        map_rows(x, win, |r, o| {
            for i in 0..win {
                o[i] = r[i] - PREEMPHASIS * r[i.saturating_sub(1)]; // the first sample against itself
            }
        })
    })?;
    let x = ctx.block("fbank.window_function", &x, |x| {
        map_rows(x, padded, |r, o| {
            o.iter_mut().for_each(|v| *v = 0.0);
            for i in 0..win {
                o[i] = r[i] * window[i];
            }
        })
    })?;
    let mut buf = fft.buffers();
    let p = ctx.block("fbank.spectrum", &x, |x| {
        map_rows(x, nb, |r, o| {
            buf.input.copy_from_slice(&r[..padded]);
            fft.spectrum(&mut buf);
            o.iter_mut().zip(&buf.bins).for_each(|(o, c)| *o = c.re * c.re + c.im * c.im);
        })
    })?;
    let m = ctx.block("fbank.mel_energies", &p, |p| map_rows(p, bins, |r, o| energies(&|k| r[k], o)))?;
    ctx.block("fbank.log", &m, |m| map_rows(m, bins, |r, o| o.iter_mut().zip(r).for_each(|(o, v)| *o = v.max(eps).ln())))
}
