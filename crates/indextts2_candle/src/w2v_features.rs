//! The Wav2Vec-BERT front end: transformers' `SeamlessM4TFeatureExtractor` in plain Rust.
//!
//! 16 kHz audio `[N]` → Kaldi-style 80-bin log-mel fbank (×2¹⁵, 400/160 frames, DC removal,
//! pre-emphasis 0.97, povey window, 512-point FFT, kaldi mel triangles 20 Hz–8 kHz built in mel
//! space, natural log with floor 2⁻²³) → per-bin mean / unbiased-variance normalisation → pad to
//! an even frame count with `padding_value` → drop `count % stride` frames → stack `stride` frames
//! → `[T, 80·stride]` + the attention mask of sub-frame 1 of each stack (transformers' rule).
//!
//! The spectrum is computed in f64 like numpy, then rounded through complex64 as the reference
//! stores it; the per-bin statistics reproduce numpy's float32 pairwise summation bit for bit so
//! that constant bins (silence) normalise to the same values.
use crate::mel::Rfft;
use crate::error::{input_err, Result};
use serde::Deserialize;

const FRAME: usize = 400;
const HOP: usize = 160;
const NFFT: usize = 512;
const NBINS: usize = NFFT / 2 + 1;
const PREEMPH: f64 = 0.97;
const MEL_FLOOR: f64 = 1.192092955078125e-07;
const FMIN: f64 = 20.0;

/// `SeamlessM4TFeatureExtractor(...)` arguments as w2v-bert-2.0's preprocessor config has them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureConfig {
    #[serde(default = "d_mels")]
    pub num_mel_bins: usize,
    /// Frames stacked per output frame (≥ 2; transformers' stride 1 yields an empty mask).
    #[serde(default = "d_stride")]
    pub stride: usize,
    /// The published w2v-bert-2.0 preprocessor config sets 1 (transformers' default is 0).
    #[serde(default = "d_pad")]
    pub padding_value: f32,
    #[serde(default = "d_sr")]
    pub sampling_rate: usize,
}

fn d_mels() -> usize {
    80
}
fn d_stride() -> usize {
    2
}
fn d_pad() -> f32 {
    1.0
}
fn d_sr() -> usize {
    16000
}

impl Default for FeatureConfig {
    fn default() -> Self {
        FeatureConfig { num_mel_bins: d_mels(), stride: d_stride(), padding_value: d_pad(), sampling_rate: d_sr() }
    }
}

pub struct FeatureExtractor {
    cfg: FeatureConfig,
    window: Vec<f64>,
    /// Per mel bin: first FFT bin and its non-zero weights.
    mel: Vec<(usize, Vec<f64>)>,
    fft: Rfft,
}

/// Output of the extractor: row-major `[frames, num_mel_bins·stride]` and a 0/1 mask `[frames]`.
pub struct Features {
    pub data: Vec<f32>,
    pub frames: usize,
    pub dim: usize,
    pub mask: Vec<i64>,
}

fn kaldi_mel(f: f64) -> f64 {
    1127.0 * (1.0 + f / 700.0).ln()
}

impl FeatureExtractor {
    pub fn new(cfg: FeatureConfig) -> Result<FeatureExtractor> {
        if cfg.num_mel_bins == 0 || cfg.sampling_rate < 2 * FMIN as usize + 2 {
            return input_err(format!("invalid feature extractor config {cfg:?}"));
        }
        if cfg.stride < 2 {
            return input_err(format!(
                "feature extractor stride {} is not supported: transformers then returns an empty attention mask \
                 (mask frames at index % stride == 1); supported: stride >= 2",
                cfg.stride
            ));
        }
        // np.power(np.hanning(400), 0.85), symmetric.
        let window = (0..FRAME)
            .map(|i| {
                let h = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / (FRAME - 1) as f64).cos();
                h.powf(0.85)
            })
            .collect();
        // Triangles in mel space (transformers `mel_filter_bank(..., mel_scale="kaldi",
        // triangularize_in_mel_space=True)`), centres from np.linspace(mel(20), mel(sr//2), n+2).
        let n = cfg.num_mel_bins;
        let (lo, hi) = (kaldi_mel(FMIN), kaldi_mel((cfg.sampling_rate / 2) as f64));
        let step = (hi - lo) / (n + 1) as f64;
        let mut centres: Vec<f64> = (0..n + 2).map(|i| i as f64 * step + lo).collect();
        centres[n + 1] = hi;
        let bin_width = cfg.sampling_rate as f64 / ((NBINS - 1) * 2) as f64;
        let fft_mel: Vec<f64> = (0..NBINS).map(|k| kaldi_mel(bin_width * k as f64)).collect();
        let mut mel = Vec::with_capacity(n);
        for m in 0..n {
            let (a, b, c) = (centres[m], centres[m + 1], centres[m + 2]);
            let w: Vec<f64> = fft_mel
                .iter()
                .map(|&x| {
                    let down = -(a - x) / (b - a);
                    let up = (c - x) / (c - b);
                    down.min(up).max(0.0)
                })
                .collect();
            let first = w.iter().position(|&v| v > 0.0).unwrap_or(0);
            let last = w.iter().rposition(|&v| v > 0.0).map(|p| p + 1).unwrap_or(first);
            mel.push((first, w[first..last].to_vec()));
        }
        Ok(FeatureExtractor { cfg, window, mel, fft: Rfft::new(NFFT) })
    }

    pub fn config(&self) -> &FeatureConfig {
        &self.cfg
    }

    /// Fewest samples that give two fbank frames (the unbiased variance needs two).
    pub fn min_samples(&self) -> usize {
        FRAME + HOP * (self.cfg.stride.max(2) - 1)
    }

    /// Log-mel fbank `[frames][num_mel_bins]` as float32 (what the reference stores).
    pub fn fbank(&self, audio: &[f32]) -> Result<Vec<Vec<f32>>> {
        if audio.len() < FRAME {
            return input_err(format!("audio has {} samples; the fbank needs at least {FRAME}", audio.len()));
        }
        if audio.iter().any(|x| !x.is_finite()) {
            return input_err("audio holds NaN or Inf");
        }
        let frames = 1 + (audio.len() - FRAME) / HOP;
        let mut out = Vec::with_capacity(frames);
        let mut fft = self.fft.buffers();
        let mut power = vec![0f64; NBINS];
        for f in 0..frames {
            // ×2¹⁵ in float32 (exact), then f64 as numpy does.
            let x = audio.get(f * HOP..f * HOP + FRAME).ok_or_else(|| crate::Error::Input("frame past the end".into()))?;
            let mut buf: Vec<f64> = x.iter().map(|&v| (v * 32768.0f32) as f64).collect();
            let mean = buf.iter().sum::<f64>() / FRAME as f64;
            buf.iter_mut().for_each(|v| *v -= mean);
            // Pre-emphasis on the DC-free frame; sample 0 is scaled, not differenced.
            for i in (1..FRAME).rev() {
                buf[i] -= PREEMPH * buf[i - 1];
            }
            buf[0] *= 1.0 - PREEMPH;
            // the FFT overwrites its input: re-zero the padding every frame
            fft.input[FRAME..].iter_mut().for_each(|v| *v = 0.0);
            for i in 0..FRAME {
                fft.input[i] = buf[i] * self.window[i];
            }
            self.fft.spectrum(&mut fft);
            for (k, c) in fft.bins.iter().enumerate() {
                // The reference keeps the spectrum as complex64 before |·|².
                let (r, i) = (c.re as f32 as f64, c.im as f32 as f64);
                let a = r.hypot(i);
                power[k] = a * a;
            }
            let row: Vec<f32> = self
                .mel
                .iter()
                .map(|(first, w)| {
                    let e: f64 = w.iter().zip(&power[*first..]).map(|(a, b)| a * b).sum();
                    e.max(MEL_FLOOR).ln() as f32
                })
                .collect();
            out.push(row);
        }
        Ok(out)
    }

    /// Full extractor: normalised, padded and stacked features plus the attention mask.
    pub fn extract(&self, audio: &[f32]) -> Result<Features> {
        if audio.len() < self.min_samples() {
            return input_err(format!(
                "audio has {} samples; Wav2Vec-BERT features need at least {} (two fbank frames)",
                audio.len(),
                self.min_samples()
            ));
        }
        let fb = self.fbank(audio)?;
        let (n, m) = (fb.len(), self.cfg.num_mel_bins);
        // Per-bin statistics in float32 with numpy's summation order (bins are contiguous there).
        let mut normed = vec![vec![0f32; m]; n];
        let mut col = vec![0f32; n];
        for j in 0..m {
            for t in 0..n {
                col[t] = fb[t][j];
            }
            let mean = np_pairwise_sum(&col) / n as f32;
            let sq: Vec<f32> = col.iter().map(|&x| (x - mean) * (x - mean)).collect();
            let var = np_pairwise_sum(&sq) / (n - 1) as f32;
            let denom = (var + 1e-7f32).sqrt();
            for t in 0..n {
                normed[t][j] = (col[t] - mean) / denom;
            }
        }
        // transformers pads to an even count (pad_to_multiple_of=2, whatever the stride), drops the
        // n % stride frames left over, stacks `stride` frames and takes the mask of sub-frame 1.
        let s = self.cfg.stride;
        let padded = n.div_ceil(2) * 2;
        let frames = (padded - padded % s) / s;
        if frames == 0 {
            return input_err(format!("audio gives {n} fbank frames, fewer than the feature stride {s}: no samples for a frame"));
        }
        let dim = m * s;
        let mut data = Vec::with_capacity(frames * dim);
        let mut mask = Vec::with_capacity(frames);
        for t in 0..frames {
            for k in 0..s {
                match normed.get(t * s + k) {
                    Some(row) => data.extend_from_slice(row),
                    None => data.extend(std::iter::repeat_n(self.cfg.padding_value, m)),
                }
            }
            mask.push(if t * s + 1 < n { 1 } else { 0 });
        }
        Ok(Features { data, frames, dim, mask })
    }
}

/// numpy's float32 `pairwise_sum` (blocks of 128, 8 accumulators, halves rounded to 8).
pub fn np_pairwise_sum(a: &[f32]) -> f32 {
    let n = a.len();
    if n < 8 {
        let mut r = 0f32;
        for &x in a {
            r += x;
        }
        r
    } else if n <= 128 {
        let mut r = [0f32; 8];
        r.copy_from_slice(&a[..8]);
        let full = n - n % 8;
        let mut i = 8;
        while i < full {
            for j in 0..8 {
                r[j] += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        while i < n {
            res += a[i];
            i += 1;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        np_pairwise_sum(&a[..n2]) + np_pairwise_sum(&a[n2..])
    }
}

