//! CAM++ speaker encoder (3D-Speaker `DTDNN.py` / `layers.py`, vendored by IndexTTS2 s2mel) and the
//! Kaldi fbank front end (`torchaudio.compliance.kaldi.fbank` with IndexTTS2's options).
//!
//! `forward(feat[B,T,F])` → embedding `[B, embedding_size]`: FCM 2-D ResNet head (frequency strides
//! of 2), stride-2 TDNN, three dense CAM blocks (context-aware masking with the utterance mean plus
//! 100-frame segment means) each followed by a transit layer, BN-ReLU, mean ‖ unbiased std pooling,
//! 1×1 dense + affine-free BN. Every BatchNorm runs in eval mode on its running statistics.
//! `fbank(wav[1,N])` → `[frames, F]` log mel energies minus their time mean (infer_v2 step 6).
use crate::ctx::{Ctx, Faults};
use crate::error::{input_err, Result};
use crate::mel::Rfft;
use crate::nn::Conv1d;
use crate::store::Weights;
use candle_core::{Tensor, D};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct CampPlusConfig {
    pub feat_dim: usize,
    pub embedding_size: usize,
    pub growth_rate: usize,
    pub bn_size: usize,
    pub init_channels: usize,
    pub m_channels: usize,
    pub block_layers: Vec<usize>,
    pub kernel_sizes: Vec<usize>,
    pub dilations: Vec<usize>,
    pub seg_len: usize,
    pub sample_rate: usize,
}

pub const FAULTS: &[&str] = &[
    "bn_running_stats_ignored", // BatchNorm normalises with mean 0 / var 1 instead of the stored stats
];

const BN_EPS: f64 = 1e-5;

/// Eval-mode BatchNorm folded to one scale and shift per channel (channel = dim 1).
struct BatchNorm {
    scale: Tensor,
    shift: Tensor,
}

impl BatchNorm {
    fn load(w: &Weights, ch: usize, affine: bool, faults: &Faults) -> Result<BatchNorm> {
        let mut mean = w.get(ch, "running_mean")?;
        let mut var = w.get(ch, "running_var")?;
        if faults.on("bn_running_stats_ignored") {
            mean = mean.zeros_like()?;
            var = var.ones_like()?;
        }
        let inv = (var + BN_EPS)?.sqrt()?.recip()?;
        let (scale, shift) = if affine {
            let g = w.get(ch, "weight")?;
            let b = w.get(ch, "bias")?;
            let scale = (g * inv)?;
            let shift = (b - (&mean * &scale)?)?;
            (scale, shift)
        } else {
            let shift = (mean.neg()? * &inv)?;
            (inv, shift)
        };
        Ok(BatchNorm { scale, shift })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut shape = vec![1usize; x.rank()];
        shape[1] = self.scale.dim(0)?;
        Ok(x.broadcast_mul(&self.scale.reshape(shape.clone())?)?.broadcast_add(&self.shift.reshape(shape)?)?)
    }
}

/// Bias-free Conv2d (3×3 pad 1 or 1×1 pad 0) with stride (s, 1), as one im2col matmul: the k·k
/// shifted (and, for s > 1, row-subsampled) views of the zero-padded input are stacked along
/// channels and multiplied by the weight laid out as [cout, (kh, kw, cin)]. Candle's conv2d has one
/// stride for both axes, and its tiled CPU kernel is several times slower on these shapes.
struct Conv2d {
    w: Tensor, // [cout, k·k·cin]
    k: usize,
    pad: usize,
    freq_stride: usize,
}

impl Conv2d {
    fn load(w: &Weights, cout: usize, cin: usize, k: usize, freq_stride: usize) -> Result<Conv2d> {
        let wt = w.get((cout, cin, k, k), "weight")?.permute((0, 2, 3, 1))?.reshape((cout, k * k * cin))?;
        Ok(Conv2d { w: wt, k, pad: (k - 1) / 2, freq_stride })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, wd) = x.dims4()?;
        let (k, p, s) = (self.k, self.pad, self.freq_stride);
        let hout = (h + 2 * p - k) / s + 1;
        let wout = wd + 2 * p - k + 1;
        let xp = x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?;
        let mut cols = Vec::with_capacity(k * k);
        for kh in 0..k {
            let rows = if s == 1 {
                xp.narrow(2, kh, hout)?
            } else {
                let idx: Vec<u32> = (0..hout).map(|i| (i * s + kh) as u32).collect();
                xp.index_select(&Tensor::new(idx.as_slice(), x.device())?, 2)?
            };
            for kw in 0..k {
                cols.push(rows.narrow(3, kw, wout)?);
            }
        }
        let cols = Tensor::cat(&cols, 1)?.reshape((b, k * k * c, hout * wout))?;
        let outs = (0..b).map(|i| Ok(self.w.matmul(&cols.get(i)?)?)).collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&outs, 0)?.reshape((b, (), hout, wout))?)
    }
}

struct BasicResBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    shortcut: Option<(Conv2d, BatchNorm)>,
}

impl BasicResBlock {
    fn load(w: &Weights, cin: usize, cout: usize, stride: usize, f: &Faults) -> Result<BasicResBlock> {
        let shortcut = if stride != 1 || cin != cout {
            Some((Conv2d::load(&w.pp("shortcut.0"), cout, cin, 1, stride)?, BatchNorm::load(&w.pp("shortcut.1"), cout, true, f)?))
        } else {
            None
        };
        Ok(BasicResBlock {
            conv1: Conv2d::load(&w.pp("conv1"), cout, cin, 3, stride)?,
            bn1: BatchNorm::load(&w.pp("bn1"), cout, true, f)?,
            conv2: Conv2d::load(&w.pp("conv2"), cout, cout, 3, 1)?,
            bn2: BatchNorm::load(&w.pp("bn2"), cout, true, f)?,
            shortcut,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let out = self.bn1.forward(&self.conv1.forward(x)?)?.relu()?;
        let out = self.bn2.forward(&self.conv2.forward(&out)?)?;
        let sc = match &self.shortcut {
            Some((c, b)) => b.forward(&c.forward(x)?)?,
            None => x.clone(),
        };
        Ok((out + sc)?.relu()?)
    }
}

struct Cam {
    linear_local: Conv1d,
    linear1: Conv1d,
    linear2: Conv1d,
    seg_len: usize,
}

impl Cam {
    /// Mean of each `seg_len` segment (the last one over the frames it has), repeated over it.
    fn seg_pooling(&self, x: &Tensor) -> Result<Tensor> {
        let t = x.dim(D::Minus1)?;
        let mut parts = Vec::new();
        let mut s = 0;
        while s < t {
            let n = self.seg_len.min(t - s);
            let m = x.narrow(D::Minus1, s, n)?.mean_keepdim(D::Minus1)?;
            let mut shape = m.dims().to_vec();
            if let Some(last) = shape.last_mut() {
                *last = n;
            }
            parts.push(m.broadcast_as(shape)?);
            s += n;
        }
        Ok(Tensor::cat(&parts, D::Minus1)?)
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.linear_local.forward(x)?;
        let context = x.mean_keepdim(D::Minus1)?.broadcast_add(&self.seg_pooling(x)?)?;
        let m = candle_nn::ops::sigmoid(&self.linear2.forward(&self.linear1.forward(&context)?.relu()?)?)?;
        Ok((y * m)?)
    }
}

struct DenseTdnnLayer {
    bn1: BatchNorm,
    linear1: Conv1d,
    bn2: BatchNorm,
    cam: Cam,
}

impl DenseTdnnLayer {
    fn load(w: &Weights, cfg: &CampPlusConfig, cin: usize, k: usize, dil: usize, f: &Faults) -> Result<Self> {
        let (cout, bn_ch, seg_len) = (cfg.growth_rate, cfg.bn_size * cfg.growth_rate, cfg.seg_len);
        let c = w.pp("cam_layer");
        Ok(DenseTdnnLayer {
            bn1: BatchNorm::load(&w.pp("nonlinear1.batchnorm"), cin, true, f)?,
            linear1: Conv1d::load(&w.pp("linear1"), (bn_ch, cin, 1), false, 0, 1, 1)?,
            bn2: BatchNorm::load(&w.pp("nonlinear2.batchnorm"), bn_ch, true, f)?,
            cam: Cam {
                linear_local: Conv1d::load(&c.pp("linear_local"), (cout, bn_ch, k), false, (k - 1) / 2 * dil, 1, dil)?,
                linear1: Conv1d::load(&c.pp("linear1"), (bn_ch / 2, bn_ch, 1), true, 0, 1, 1)?,
                linear2: Conv1d::load(&c.pp("linear2"), (cout, bn_ch / 2, 1), true, 0, 1, 1)?,
                seg_len,
            },
        })
    }
    /// Dense connectivity: returns `[x, layer(x)]` along channels.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.linear1.forward(&self.bn1.forward(x)?.relu()?)?;
        let h = self.cam.forward(&self.bn2.forward(&h)?.relu()?)?;
        Ok(Tensor::cat(&[x, &h], 1)?)
    }
}

/// BN-ReLU then a bias-free 1×1 conv.
struct Transit {
    bn: BatchNorm,
    linear: Conv1d,
}

pub struct CampPlus {
    cfg: CampPlusConfig,
    head_conv1: Conv2d,
    head_bn1: BatchNorm,
    head_layers: Vec<(String, BasicResBlock)>,
    head_conv2: Conv2d,
    head_bn2: BatchNorm,
    tdnn: Conv1d,
    tdnn_bn: BatchNorm,
    blocks: Vec<(Vec<DenseTdnnLayer>, Transit)>,
    out_bn: BatchNorm,
    dense: Conv1d,
    dense_bn: BatchNorm,
}

impl CampPlus {
    pub fn load(w: &Weights, cfg: CampPlusConfig, f: Faults) -> Result<CampPlus> {
        let nb = cfg.block_layers.len();
        if cfg.feat_dim == 0 || !cfg.feat_dim.is_multiple_of(8) {
            return input_err(format!("CAMPPlus feat_dim must be a positive multiple of 8, got {}", cfg.feat_dim));
        }
        if nb == 0 || cfg.kernel_sizes.len() != nb || cfg.dilations.len() != nb {
            return input_err("CAMPPlus config: block_layers / kernel_sizes / dilations must have the same non-zero length");
        }
        if cfg.kernel_sizes.iter().any(|k| k.is_multiple_of(2)) || cfg.seg_len == 0 || cfg.sample_rate < 100 {
            return input_err("CAMPPlus config: kernel sizes must be odd, seg_len > 0, sample_rate ≥ 100");
        }
        let h = w.pp("head");
        let m = cfg.m_channels;
        let mut head_layers = Vec::new();
        for l in ["layer1", "layer2"] {
            for (i, s) in [2usize, 1].iter().enumerate() {
                let name = format!("{l}.{i}");
                head_layers.push((name.clone(), BasicResBlock::load(&h.pp(&name), m, m, *s, &f)?));
            }
        }
        let x = w.pp("xvector");
        let mut ch = m * (cfg.feat_dim / 8);
        let init = cfg.init_channels;
        let tdnn = Conv1d::load(&x.pp("tdnn.linear"), (init, ch, 5), false, 2, 2, 1)?;
        let tdnn_bn = BatchNorm::load(&x.pp("tdnn.nonlinear.batchnorm"), init, true, &f)?;
        ch = init;
        let g = cfg.growth_rate;
        let mut blocks = Vec::new();
        for (i, ((&n, &k), &d)) in cfg.block_layers.iter().zip(&cfg.kernel_sizes).zip(&cfg.dilations).enumerate() {
            let bw = x.pp(format!("block{}", i + 1));
            let layers = (0..n)
                .map(|j| DenseTdnnLayer::load(&bw.pp(format!("tdnnd{}", j + 1)), &cfg, ch + j * g, k, d, &f))
                .collect::<Result<Vec<_>>>()?;
            ch += n * g;
            let tw = x.pp(format!("transit{}", i + 1));
            let transit = Transit {
                bn: BatchNorm::load(&tw.pp("nonlinear.batchnorm"), ch, true, &f)?,
                linear: Conv1d::load(&tw.pp("linear"), (ch / 2, ch, 1), false, 0, 1, 1)?,
            };
            ch /= 2;
            blocks.push((layers, transit));
        }
        let out_bn = BatchNorm::load(&x.pp("out_nonlinear.batchnorm"), ch, true, &f)?;
        let dense = Conv1d::load(&x.pp("dense.linear"), (cfg.embedding_size, ch * 2, 1), false, 0, 1, 1)?;
        let dense_bn = BatchNorm::load(&x.pp("dense.nonlinear.batchnorm"), cfg.embedding_size, false, &f)?;
        Ok(CampPlus {
            head_conv1: Conv2d::load(&h.pp("conv1"), m, 1, 3, 1)?,
            head_bn1: BatchNorm::load(&h.pp("bn1"), m, true, &f)?,
            head_layers,
            head_conv2: Conv2d::load(&h.pp("conv2"), m, m, 3, 2)?,
            head_bn2: BatchNorm::load(&h.pp("bn2"), m, true, &f)?,
            tdnn,
            tdnn_bn,
            blocks,
            out_bn,
            dense,
            dense_bn,
            cfg,
        })
    }

    /// feat `[B, T, F]` → `[B, embedding_size]`. Taps: `head.conv1`, `head.layer{1,2}.{0,1}`,
    /// `head.conv2`, `xvector.tdnn`, `xvector.blockN.tdnndJ`, `xvector.transitN`,
    /// `xvector.out_nonlinear`, `xvector.stats`, `xvector.dense`.
    pub fn forward(&self, feat: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        if feat.rank() != 3 {
            return input_err(format!("CAMPPlus expects feat [B, T≥3, {}], got {:?}", self.cfg.feat_dim, feat.dims()));
        }
        let (_, t, fd) = feat.dims3()?;
        // The stride-2 TDNN keeps ⌈T/2⌉ frames; the unbiased std needs at least 2.
        if fd != self.cfg.feat_dim || t < 3 {
            return input_err(format!("CAMPPlus expects feat [B, T≥3, {}], got {:?}", self.cfg.feat_dim, feat.dims()));
        }
        let x = feat.permute((0, 2, 1))?.unsqueeze(1)?.contiguous()?;
        let mut x = ctx.block("head.conv1", &x, |x| Ok(self.head_bn1.forward(&self.head_conv1.forward(x)?)?.relu()?))?;
        for (name, blk) in &self.head_layers {
            x = ctx.block(&format!("head.{name}"), &x, |x| blk.forward(x))?;
        }
        let mut x = ctx.block("head.conv2", &x, |x| {
            let y = self.head_bn2.forward(&self.head_conv2.forward(x)?)?.relu()?;
            let (b, c, f, t) = y.dims4()?;
            Ok(y.reshape((b, c * f, t))?)
        })?;
        x = ctx.block("xvector.tdnn", &x, |x| Ok(self.tdnn_bn.forward(&self.tdnn.forward(x)?)?.relu()?))?;
        for (i, (layers, transit)) in self.blocks.iter().enumerate() {
            for (j, l) in layers.iter().enumerate() {
                x = ctx.block(&format!("xvector.block{}.tdnnd{}", i + 1, j + 1), &x, |x| l.forward(x))?;
            }
            x = ctx.block(&format!("xvector.transit{}", i + 1), &x, |x| {
                transit.linear.forward(&transit.bn.forward(x)?.relu()?)
            })?;
        }
        let x = ctx.block("xvector.out_nonlinear", &x, |x| Ok(self.out_bn.forward(x)?.relu()?))?;
        let x = ctx.block("xvector.stats", &x, |x| {
            let n = x.dim(D::Minus1)?;
            let mean = x.mean_keepdim(D::Minus1)?;
            let var = (x.broadcast_sub(&mean)?.sqr()?.sum_keepdim(D::Minus1)? / (n as f64 - 1.0))?;
            Ok(Tensor::cat(&[mean.squeeze(D::Minus1)?, var.sqrt()?.squeeze(D::Minus1)?], 1)?)
        })?;
        ctx.block("xvector.dense", &x, |x| self.dense_bn.forward(&self.dense.forward(&x.unsqueeze(2)?)?.squeeze(2)?))
    }

    /// wav `[1, N]` (float in [-1, 1]) → `[frames, feat_dim]` fbank minus its time mean. Tap: `fbank`.
    pub fn fbank(&self, wav: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let bins = self.cfg.feat_dim;
        let sr = self.cfg.sample_rate;
        let f = ctx.block("fbank", wav, |w| kaldi_fbank(w, bins, sr as f64))?;
        Ok(f.broadcast_sub(&f.mean_keepdim(0)?)?)
    }
}

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

/// `torchaudio.compliance.kaldi.fbank(wav, num_mel_bins, dither=0, sample_frequency)` with the
/// defaults IndexTTS2 keeps: 25 ms povey window, 10 ms shift, snip_edges, DC removal, pre-emphasis
/// 0.97, FFT size rounded up to a power of two, power spectrum, log(max(·, f32::EPSILON)).
/// Computed in f64 (the reference runs in f32).
pub fn kaldi_fbank(wav: &Tensor, bins: usize, sr: f64) -> Result<Tensor> {
    let win = (sr * 0.025) as usize;
    let shift = (sr * 0.010) as usize;
    let (c, n) = if wav.rank() == 2 { wav.dims2()? } else { (0, 0) };
    if c != 1 || n < win || win < 2 || shift == 0 {
        return input_err(format!("fbank expects wav [1, N ≥ {win}] (one 25 ms frame), got {:?}", wav.dims()));
    }
    let x: Vec<f64> = wav.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?;
    if x.iter().any(|v| !v.is_finite()) {
        return input_err("fbank: wav holds NaN or Inf");
    }
    let padded = win.next_power_of_two();
    let frames = 1 + (n - win) / shift;
    let window: Vec<f64> = (0..win)
        .map(|i| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / (win - 1) as f64).cos()).powf(0.85))
        .collect();
    let banks = kaldi_mel_banks(bins, padded, sr);
    let fft = Rfft::new(padded);
    let eps = f32::EPSILON as f64;
    let mut out = Vec::with_capacity(frames * bins);
    let mut buf = vec![0f64; padded];
    for fi in 0..frames {
        let fr = &x[fi * shift..fi * shift + win];
        let mean = fr.iter().sum::<f64>() / win as f64;
        for (i, b) in buf.iter_mut().enumerate().take(win) {
            let cur = fr[i] - mean;
            let prev = if i == 0 { cur } else { fr[i - 1] - mean };
            *b = (cur - 0.97 * prev) * window[i];
        }
        for b in buf.iter_mut().skip(win) {
            *b = 0.0;
        }
        let (re, im) = fft.run(&buf);
        let power: Vec<f64> = re.iter().zip(&im).map(|(r, i)| r * r + i * i).collect();
        for row in &banks {
            let e: f64 = row.iter().zip(&power).map(|(a, p)| a * p).sum();
            out.push(e.max(eps).ln() as f32);
        }
    }
    Ok(Tensor::from_vec(out, (frames, bins), wav.device())?)
}
