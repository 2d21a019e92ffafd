//! CAM++ speaker encoder (3D-Speaker `DTDNN.py` / `layers.py`, vendored by IndexTTS2 s2mel) and the
//! Kaldi fbank front end (`fbank.rs`: `torchaudio.compliance.kaldi.fbank` with IndexTTS2's options).
//!
//! `forward(feat[B,T,F])` → embedding `[B, embedding_size]`: FCM 2-D ResNet head (frequency strides
//! of 2), stride-2 TDNN, three dense CAM blocks (context-aware masking with the utterance mean plus
//! `seg_len`-frame segment means) each followed by a transit layer, the `config_str` nonlinearity,
//! mean ‖ unbiased std pooling, 1×1 dense + affine-free BN. Every BatchNorm runs in eval mode on its
//! running statistics. Taps are the PyTorch module paths, children before parents (see `forward`).
mod fbank;
mod fused;

pub use fbank::{kaldi_fbank, FbankFaults};

use crate::ctx::{Ctx, Faults};
use crate::error::{input_err, Result};
use crate::nn::Conv1d;
use crate::store::Weights;
use candle_core::{DType, Tensor, D};
use serde::Deserialize;

/// `CAMPPlus(...)` constructor arguments with the official class defaults, plus the structure the
/// official code hard-codes (FCM `m_channels`, the three dense blocks, CAM `seg_len`) and the fbank
/// rate, which this port reads so that a small fixture can shrink them. IndexTTS2 builds
/// `CAMPPlus(feat_dim=80, embedding_size=192)`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CampPlusConfig {
    pub feat_dim: usize,
    pub embedding_size: usize,
    pub growth_rate: usize,
    pub bn_size: usize,
    pub init_channels: usize,
    /// `get_nonlinear` parts, '-'-separated, in order: relu, prelu, batchnorm, batchnorm_.
    pub config_str: String,
    /// Gradient checkpointing in training: no effect on an eval forward, so every value is accepted.
    pub memory_efficient: bool,
    pub m_channels: usize,
    pub block_layers: Vec<usize>,
    pub kernel_sizes: Vec<usize>,
    pub dilations: Vec<usize>,
    pub seg_len: usize,
    pub sample_rate: usize,
}

impl Default for CampPlusConfig {
    fn default() -> Self {
        CampPlusConfig {
            feat_dim: 80,
            embedding_size: 512,
            growth_rate: 32,
            bn_size: 4,
            init_channels: 128,
            config_str: "batchnorm-relu".into(),
            memory_efficient: true,
            m_channels: 32,
            block_layers: vec![12, 24, 16],
            kernel_sizes: vec![3, 3, 3],
            dilations: vec![1, 2, 2],
            seg_len: 100,
            sample_rate: 16000,
        }
    }
}

pub const FAULTS: &[&str] = &[
    "bn_running_stats_ignored", // BatchNorm normalises with mean 0 / var 1 instead of the stored stats
    "bn_eps_dropped",           // BatchNorm divides by √var instead of √(var + 1e-5)
    "fbank_hanning_window",     // fbank: plain Hann window instead of Povey's (Hann^0.85)
    "fbank_no_preemphasis",     // fbank: pre-emphasis 0.97 skipped
    "fbank_no_remove_dc",       // fbank: per-frame DC offset kept
];

const BN_EPS: f64 = 1e-5;

/// Eval-mode BatchNorm folded (in f64) to one scale and shift per channel (channel = dim 1).
struct BatchNorm {
    scale: Tensor,
    shift: Tensor,
    scale_v: Vec<f32>,
    shift_v: Vec<f32>,
}

impl BatchNorm {
    fn load(w: &Weights, ch: usize, affine: bool, faults: &Faults) -> Result<BatchNorm> {
        let f64v = |t: Tensor| -> Result<Vec<f64>> { Ok(t.to_dtype(DType::F64)?.to_vec1::<f64>()?) };
        let mut mean = f64v(w.get(ch, "running_mean")?)?;
        let mut var = f64v(w.get(ch, "running_var")?)?;
        if faults.on("bn_running_stats_ignored") {
            mean.iter_mut().for_each(|m| *m = 0.0);
            var.iter_mut().for_each(|v| *v = 1.0);
        }
        let eps = if faults.on("bn_eps_dropped") { 0.0 } else { BN_EPS };
        let (g, b) = if affine {
            (f64v(w.get(ch, "weight")?)?, f64v(w.get(ch, "bias")?)?)
        } else {
            (vec![1.0; ch], vec![0.0; ch])
        };
        let scale: Vec<f32> = (0..ch).map(|c| (g[c] / (var[c] + eps).sqrt()) as f32).collect();
        let shift: Vec<f32> = (0..ch).map(|c| (b[c] - mean[c] * g[c] / (var[c] + eps).sqrt()) as f32).collect();
        let dev = w.device();
        Ok(BatchNorm {
            scale: Tensor::from_vec(scale.clone(), ch, dev)?,
            shift: Tensor::from_vec(shift.clone(), ch, dev)?,
            scale_v: scale,
            shift_v: shift,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, None, false)
    }
    /// `relu?(bn(x) + residual)`: one pass on CPU f32 (same roundings as the tensor ops).
    fn forward_act(&self, x: &Tensor, residual: Option<&Tensor>, relu: bool) -> Result<Tensor> {
        if fused::usable(x) {
            return fused::affine(x, &self.scale_v, &self.shift_v, residual, relu);
        }
        let mut shape = vec![1usize; x.rank()];
        shape[1] = self.scale.dim(0)?;
        let mut y = x.broadcast_mul(&self.scale.reshape(shape.clone())?)?.broadcast_add(&self.shift.reshape(shape)?)?;
        if let Some(r) = residual {
            y = (y + r)?;
        }
        Ok(if relu { y.relu()? } else { y })
    }
}

/// Per-channel slope on dim 1: max(x, 0) + a·min(x, 0).
fn prelu(x: &Tensor, a: &Tensor) -> Result<Tensor> {
    let mut shape = vec![1usize; x.rank()];
    shape[1] = a.dim(0)?;
    let neg = x.minimum(0f32)?.broadcast_mul(&a.reshape(shape)?)?;
    Ok((x.relu()? + neg)?)
}

enum Part {
    Relu,
    Prelu(Tensor),
    BatchNorm(BatchNorm),
}

/// `get_nonlinear(config_str, channels)`: an `nn.Sequential` of named parts, each tapped.
struct Nonlinear(Vec<(&'static str, Part)>);

#[derive(Clone, Copy, PartialEq)]
enum PartKind {
    Relu,
    Prelu,
    BatchNorm,
    BatchNormNoAffine,
}

fn parse_config_str(s: &str) -> Result<Vec<PartKind>> {
    let mut out = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for p in s.split('-') {
        let (k, name) = match p {
            "relu" => (PartKind::Relu, "relu"),
            "prelu" => (PartKind::Prelu, "prelu"),
            "batchnorm" => (PartKind::BatchNorm, "batchnorm"),
            "batchnorm_" => (PartKind::BatchNormNoAffine, "batchnorm"),
            _ => {
                return input_err(format!(
                    "CAMPPlus config_str `{s}`: unknown part `{p}` (supported: '-'-separated relu, prelu, batchnorm, batchnorm_)"
                ))
            }
        };
        if names.contains(&name) {
            // nn.Sequential.add_module would silently replace the earlier part in place
            return input_err(format!("CAMPPlus config_str `{s}` names `{name}` twice; each part may appear once"));
        }
        names.push(name);
        out.push(k);
    }
    Ok(out)
}

impl Nonlinear {
    fn load(w: &Weights, kinds: &[PartKind], ch: usize, f: &Faults) -> Result<Nonlinear> {
        let parts = kinds
            .iter()
            .map(|k| {
                Ok(match k {
                    PartKind::Relu => ("relu", Part::Relu),
                    PartKind::Prelu => ("prelu", Part::Prelu(w.get(ch, "prelu.weight")?)),
                    PartKind::BatchNorm => ("batchnorm", Part::BatchNorm(BatchNorm::load(&w.pp("batchnorm"), ch, true, f)?)),
                    PartKind::BatchNormNoAffine => {
                        ("batchnorm", Part::BatchNorm(BatchNorm::load(&w.pp("batchnorm"), ch, false, f)?))
                    }
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Nonlinear(parts))
    }
    fn forward(&self, path: &str, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        if ctx.is_plain() {
            return self.forward_plain(x);
        }
        let mut x = x.clone();
        for (name, p) in &self.0 {
            x = ctx.block(&format!("{path}.{name}"), &x, |x| match p {
                Part::Relu => Ok(x.relu()?),
                Part::Prelu(a) => prelu(x, a),
                Part::BatchNorm(bn) => bn.forward(x),
            })?;
        }
        Ok(x)
    }
    /// Nothing tapped: a BatchNorm directly followed by ReLU runs as one pass.
    fn forward_plain(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        let mut i = 0;
        while i < self.0.len() {
            x = match (&self.0[i].1, self.0.get(i + 1).map(|p| &p.1)) {
                (Part::BatchNorm(bn), Some(Part::Relu)) => {
                    i += 1;
                    bn.forward_act(&x, None, true)?
                }
                (Part::BatchNorm(bn), _) => bn.forward(&x)?,
                (Part::Relu, _) => x.relu()?,
                (Part::Prelu(a), _) => prelu(&x, a)?,
            };
            i += 1;
        }
        Ok(x)
    }
}

/// Bias-free 1×1 Conv1d (plus optional bias) as one matmul `[cout, cin] · [B, cin, T]`: Candle's
/// conv1d adds an im2col copy and a transposing copy of the output. On CPU f32/f64,
/// `dense::conv1d` (gemm into the bias rows on Candle's pool; Candle's matmul runs on rayon's).
fn pointwise(c: &Conv1d, x: &Tensor) -> Result<Tensor> {
    let (cout, _, k) = c.w.dims3()?;
    if k != 1 || c.stride != 1 || c.padding != 0 || c.groups != 1 {
        return c.forward(x);
    }
    if let Some(y) = crate::dense::conv1d(x, &c.w, c.b.as_ref(), 0, 1, 1)? {
        return Ok(y);
    }
    let b = x.dim(0)?;
    let y = c.w.squeeze(2)?.broadcast_left(b)?.matmul(&x.contiguous()?)?;
    Ok(match &c.b {
        Some(bias) => y.broadcast_add(&bias.reshape((1, cout, 1))?)?,
        None => y,
    })
}

/// Bias-free Conv2d (3×3 pad 1 or 1×1 pad 0) with stride (s, 1), as one im2col matmul: the k·k
/// shifted (and, for s > 1, row-subsampled) views of the zero-padded input are stacked along
/// channels and multiplied by the weight laid out as [cout, (kh, kw, cin)]. Candle's conv2d has one
/// stride for both axes, and its tiled CPU kernel is several times slower on these shapes. On CPU
/// f32 the same product runs blocked ([`fused::conv2d`]: no 46 MB column matrix per conv).
struct Conv2d {
    w: Tensor, // [cout, k·k·cin]
    w_host: Option<Vec<f32>>, // the same, for the one-pass CPU f32 kernel
    k: usize,
    pad: usize,
    freq_stride: usize,
}

impl Conv2d {
    fn load(w: &Weights, cout: usize, cin: usize, k: usize, freq_stride: usize) -> Result<Conv2d> {
        let wt = w.get((cout, cin, k, k), "weight")?.permute((0, 2, 3, 1))?.reshape((cout, k * k * cin))?;
        let w_host = if wt.device().is_cpu() && wt.dtype() == DType::F32 { Some(wt.flatten_all()?.to_vec1::<f32>()?) } else { None };
        Ok(Conv2d { w: wt, w_host, k, pad: (k - 1) / 2, freq_stride })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_bn(x, None)
    }
    /// `relu?(bn(conv(x)))` with the BatchNorm (and ReLU) applied in the conv's output blocks:
    /// the same values as the conv tap followed by [`BatchNorm::forward_act`].
    fn forward_bn(&self, x: &Tensor, bn: Option<(&BatchNorm, bool)>) -> Result<Tensor> {
        if let (Some(w), true) = (&self.w_host, fused::usable(x)) {
            let epi = bn.map(|(b, relu)| fused::Epilogue { scale: &b.scale_v, shift: &b.shift_v, relu });
            return fused::conv2d(x, w, self.w.dim(0)?, self.k, self.pad, self.freq_stride, epi);
        }
        let y = self.forward_tensor(x)?;
        match bn {
            Some((b, relu)) => b.forward_act(&y, None, relu),
            None => Ok(y),
        }
    }
    fn forward_tensor(&self, x: &Tensor) -> Result<Tensor> {
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
    /// Taps `{p}.conv1`, `{p}.bn1` (with its ReLU), `{p}.conv2`, `{p}.bn2`, `{p}.shortcut.{0,1}`,
    /// then `{p}` (the residual sum and its ReLU).
    fn forward(&self, p: &str, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        if ctx.is_plain() {
            // nothing tapped: each BatchNorm (and ReLU) runs inside its conv's output blocks, bn2
            // with the residual sum and its ReLU as one pass; the same values as the taps below
            let out = self.conv1.forward_bn(x, Some((&self.bn1, true)))?;
            let out = self.conv2.forward(&out)?;
            let sc = match &self.shortcut {
                Some((c, b)) => c.forward_bn(x, Some((b, false)))?,
                None => x.clone(),
            };
            return self.bn2.forward_act(&out, Some(&sc), true);
        }
        ctx.nest(p, x, |ctx, x| {
            let out = ctx.block(&format!("{p}.conv1"), x, |v| self.conv1.forward(v))?;
            let out = ctx.block(&format!("{p}.bn1"), &out, |v| self.bn1.forward_act(v, None, true))?;
            let out = ctx.block(&format!("{p}.conv2"), &out, |v| self.conv2.forward(v))?;
            let out = ctx.block(&format!("{p}.bn2"), &out, |v| self.bn2.forward(v))?;
            let sc = match &self.shortcut {
                Some((c, b)) => {
                    let s = ctx.block(&format!("{p}.shortcut.0"), x, |v| c.forward(v))?;
                    ctx.block(&format!("{p}.shortcut.1"), &s, |v| b.forward(v))?
                }
                None => x.clone(),
            };
            Ok((out + sc)?.relu()?)
        })
    }
}

/// Bias-free Conv1d (stride 1, "same" padding, dilation d) as one im2col matmul in f64: the k
/// dilated shifts of the zero-padded input stacked along channels times the weight as
/// [cout, (k, cin)]. In f32 (Candle's conv1d, or an f32 matmul) the k·cin = 384 products at
/// official size accumulate past torch's own rounding (injected walk: ratio max 6.2, rms 2.5).
struct DilatedConv {
    w: Tensor, // [cout, k·cin]
    k: usize,
    dilation: usize,
}

impl DilatedConv {
    fn load(w: &Weights, cout: usize, cin: usize, k: usize, dilation: usize) -> Result<DilatedConv> {
        let wt = w.get((cout, cin, k), "weight")?.permute((0, 2, 1))?.reshape((cout, k * cin))?.to_dtype(DType::F64)?.contiguous()?;
        Ok(DilatedConv { w: wt, k, dilation })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, t) = x.dims3()?;
        let cols = if fused::usable(x) {
            fused::im2col1d_f64(x, self.k, self.dilation)?
        } else {
            let p = (self.k - 1) / 2 * self.dilation;
            let xp = x.to_dtype(DType::F64)?.pad_with_zeros(2, p, p)?;
            let cols = (0..self.k).map(|j| xp.narrow(2, j * self.dilation, t)).collect::<candle_core::Result<Vec<_>>>()?;
            Tensor::cat(&cols, 1)?.reshape((b, self.k * c, t))?.contiguous()?
        };
        // on the CPU `dense::conv1d` with one tap: the product as gemm on Candle's pool
        if let Some(y) = crate::dense::conv1d(&cols, &self.w.unsqueeze(2)?, None, 0, 1, 1)? {
            return Ok(y.to_dtype(x.dtype())?);
        }
        Ok(self.w.broadcast_left(b)?.matmul(&cols)?.to_dtype(x.dtype())?)
    }
}

struct Cam {
    linear_local: DilatedConv,
    linear1: Conv1d,
    linear2: Conv1d,
    /// linear1's and linear2's weight ([cout, cin]) and bias on the host, for the CPU f32 gate
    gate_host: Option<[(Vec<f32>, Vec<f32>); 2]>,
    seg_len: usize,
}

impl Cam {
    fn load(c: &Weights, cout: usize, bn_ch: usize, k: usize, dil: usize, seg_len: usize) -> Result<Cam> {
        let linear1 = Conv1d::load(&c.pp("linear1"), (bn_ch / 2, bn_ch, 1), true, 0, 1, 1)?;
        let linear2 = Conv1d::load(&c.pp("linear2"), (cout, bn_ch / 2, 1), true, 0, 1, 1)?;
        let host = |l: &Conv1d| -> Result<Option<(Vec<f32>, Vec<f32>)>> {
            let Some(b) = &l.b else { return Ok(None) };
            if !l.w.device().is_cpu() || l.w.dtype() != DType::F32 {
                return Ok(None);
            }
            Ok(Some((l.w.flatten_all()?.to_vec1::<f32>()?, b.to_vec1::<f32>()?)))
        };
        let gate_host = match (host(&linear1)?, host(&linear2)?) {
            (Some(a), Some(b)) => Some([a, b]),
            _ => None,
        };
        Ok(Cam { linear_local: DilatedConv::load(&c.pp("linear_local"), cout, bn_ch, k, dil)?, linear1, linear2, gate_host, seg_len })
    }
    /// linear1 (`i` = 0) or linear2 (1) of the gate; on CPU f32 each column formed on its own
    /// ([`fused::column_conv`]), so the per-segment and per-frame gates give the same bits.
    fn gate_conv(&self, i: usize, v: &Tensor) -> Result<Tensor> {
        match (&self.gate_host, fused::usable(v)) {
            (Some(h), true) => fused::column_conv(v, &h[i].0, &h[i].1),
            _ => pointwise(if i == 0 { &self.linear1 } else { &self.linear2 }, v),
        }
    }
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
    /// Taps `{p}.linear_local`, `{p}.context` (utterance mean + segment means), `{p}.linear1`,
    /// `{p}.relu`, `{p}.linear2`, `{p}.sigmoid`; the caller's `{p}` tap holds y · m.
    fn forward(&self, p: &str, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let y = ctx.block(&format!("{p}.linear_local"), x, |v| self.linear_local.forward(v))?;
        // Nothing tapped: the context is constant over each segment, so the gate's 1×1 convs and
        // sigmoid run on one column per segment (the blocks then only profile: nothing records
        // or injects a per-segment tensor).
        let per_segment = ctx.is_plain() && fused::usable(x);
        let c = ctx.block(&format!("{p}.context"), x, |v| {
            if per_segment {
                return fused::context_per_segment(v, self.seg_len);
            }
            if fused::usable(v) {
                return fused::context(v, self.seg_len);
            }
            Ok(v.mean_keepdim(D::Minus1)?.broadcast_add(&self.seg_pooling(v)?)?)
        })?;
        let c = ctx.block(&format!("{p}.linear1"), &c, |v| self.gate_conv(0, v))?;
        let c = ctx.block(&format!("{p}.relu"), &c, |v| Ok(v.relu()?))?;
        let c = ctx.block(&format!("{p}.linear2"), &c, |v| self.gate_conv(1, v))?;
        let m = ctx.block(&format!("{p}.sigmoid"), &c, |v| Ok(crate::vact::sigmoid(v)?))?;
        if per_segment {
            return fused::segment_mul(&y, &m, self.seg_len);
        }
        Ok((y * m)?)
    }
}

struct DenseTdnnLayer {
    nonlinear1: Nonlinear,
    linear1: Conv1d,
    nonlinear2: Nonlinear,
    cam: Cam,
}

impl DenseTdnnLayer {
    fn load(w: &Weights, cfg: &CampPlusConfig, kinds: &[PartKind], cin: usize, k: usize, dil: usize, f: &Faults) -> Result<Self> {
        let (cout, bn_ch, seg_len) = (cfg.growth_rate, cfg.bn_size * cfg.growth_rate, cfg.seg_len);
        let c = w.pp("cam_layer");
        Ok(DenseTdnnLayer {
            nonlinear1: Nonlinear::load(&w.pp("nonlinear1"), kinds, cin, f)?,
            linear1: Conv1d::load(&w.pp("linear1"), (bn_ch, cin, 1), false, 0, 1, 1)?,
            nonlinear2: Nonlinear::load(&w.pp("nonlinear2"), kinds, bn_ch, f)?,
            cam: Cam::load(&c, cout, bn_ch, k, dil, seg_len)?,
        })
    }
    /// Dense connectivity: the `{p}` tap is `[x, layer(x)]` along channels.
    fn forward(&self, p: &str, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        ctx.nest(p, x, |ctx, x| {
            let h = self.nonlinear1.forward(&format!("{p}.nonlinear1"), x, ctx)?;
            let h = ctx.block(&format!("{p}.linear1"), &h, |v| pointwise(&self.linear1, v))?;
            let h = self.nonlinear2.forward(&format!("{p}.nonlinear2"), &h, ctx)?;
            let cp = format!("{p}.cam_layer");
            let h = ctx.nest(&cp, &h, |ctx, v| self.cam.forward(&cp, v, ctx))?;
            Ok(Tensor::cat(&[x, &h], 1)?)
        })
    }
}

/// The nonlinearity then a bias-free 1×1 conv.
struct Transit {
    nonlinear: Nonlinear,
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
    tdnn_nl: Nonlinear,
    blocks: Vec<(Vec<DenseTdnnLayer>, Transit)>,
    out_nl: Nonlinear,
    dense: Conv1d,
    dense_bn: BatchNorm,
    fbank_faults: FbankFaults,
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
        if cfg.growth_rate == 0 || cfg.bn_size * cfg.growth_rate < 2 || cfg.init_channels == 0 || cfg.m_channels == 0 || cfg.embedding_size == 0 {
            return input_err(format!("CAMPPlus config: growth_rate, bn_size·growth_rate ≥ 2, init_channels, m_channels and embedding_size must be positive, got {cfg:?}"));
        }
        let kinds = parse_config_str(&cfg.config_str)?;
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
        let tdnn_nl = Nonlinear::load(&x.pp("tdnn.nonlinear"), &kinds, init, &f)?;
        ch = init;
        let g = cfg.growth_rate;
        let mut blocks = Vec::new();
        for (i, ((&n, &k), &d)) in cfg.block_layers.iter().zip(&cfg.kernel_sizes).zip(&cfg.dilations).enumerate() {
            let bw = x.pp(format!("block{}", i + 1));
            let layers = (0..n)
                .map(|j| DenseTdnnLayer::load(&bw.pp(format!("tdnnd{}", j + 1)), &cfg, &kinds, ch + j * g, k, d, &f))
                .collect::<Result<Vec<_>>>()?;
            ch += n * g;
            let tw = x.pp(format!("transit{}", i + 1));
            let transit = Transit {
                nonlinear: Nonlinear::load(&tw.pp("nonlinear"), &kinds, ch, &f)?,
                linear: Conv1d::load(&tw.pp("linear"), (ch / 2, ch, 1), false, 0, 1, 1)?,
            };
            ch /= 2;
            blocks.push((layers, transit));
        }
        let out_nl = Nonlinear::load(&x.pp("out_nonlinear"), &kinds, ch, &f)?;
        let dense = Conv1d::load(&x.pp("dense.linear"), (cfg.embedding_size, ch * 2, 1), false, 0, 1, 1)?;
        let dense_bn = BatchNorm::load(&x.pp("dense.nonlinear.batchnorm"), cfg.embedding_size, false, &f)?;
        Ok(CampPlus {
            head_conv1: Conv2d::load(&h.pp("conv1"), m, 1, 3, 1)?,
            head_bn1: BatchNorm::load(&h.pp("bn1"), m, true, &f)?,
            head_layers,
            head_conv2: Conv2d::load(&h.pp("conv2"), m, m, 3, 2)?,
            head_bn2: BatchNorm::load(&h.pp("bn2"), m, true, &f)?,
            tdnn,
            tdnn_nl,
            blocks,
            out_nl,
            dense,
            dense_bn,
            fbank_faults: FbankFaults::from(&f),
            cfg,
        })
    }

    /// feat `[B, T, F]` → `[B, embedding_size]`. Taps (module paths): `head.conv1`, `head.bn1`
    /// (+ReLU), `head.layer{1,2}.{0,1}[.conv1|.bn1|.conv2|.bn2|.shortcut.{0,1}]`, `head.conv2`,
    /// `head.bn2` (+ReLU, reshape), `xvector.tdnn[.linear|.nonlinear.*]`,
    /// `xvector.blockN.tdnndJ[.nonlinear1.*|.linear1|.nonlinear2.*|.cam_layer[.*]]`,
    /// `xvector.transitN[.nonlinear.*|.linear]`, `xvector.out_nonlinear.*`, `xvector.stats`,
    /// `xvector.dense[.linear|.nonlinear.batchnorm]`.
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
        let plain = ctx.is_plain();
        let mut x = if plain {
            self.head_conv1.forward_bn(&x, Some((&self.head_bn1, true)))?
        } else {
            let x = ctx.block("head.conv1", &x, |x| self.head_conv1.forward(x))?;
            ctx.block("head.bn1", &x, |x| self.head_bn1.forward_act(x, None, true))?
        };
        for (name, blk) in &self.head_layers {
            x = blk.forward(&format!("head.{name}"), &x, ctx)?;
        }
        let flat = |y: Tensor| -> Result<Tensor> {
            let (b, c, f, t) = y.dims4()?;
            Ok(y.reshape((b, c * f, t))?)
        };
        let mut x = if plain {
            flat(self.head_conv2.forward_bn(&x, Some((&self.head_bn2, true)))?)?
        } else {
            let x = ctx.block("head.conv2", &x, |x| self.head_conv2.forward(x))?;
            ctx.block("head.bn2", &x, |x| flat(self.head_bn2.forward_act(x, None, true)?))?
        };
        x = ctx.nest("xvector.tdnn", &x, |ctx, x| {
            let y = ctx.block("xvector.tdnn.linear", x, |x| self.tdnn.forward(x))?;
            self.tdnn_nl.forward("xvector.tdnn.nonlinear", &y, ctx)
        })?;
        for (i, (layers, transit)) in self.blocks.iter().enumerate() {
            for (j, l) in layers.iter().enumerate() {
                x = l.forward(&format!("xvector.block{}.tdnnd{}", i + 1, j + 1), &x, ctx)?;
            }
            let p = format!("xvector.transit{}", i + 1);
            x = ctx.nest(&p, &x, |ctx, x| {
                let y = transit.nonlinear.forward(&format!("{p}.nonlinear"), x, ctx)?;
                ctx.block(&format!("{p}.linear"), &y, |v| pointwise(&transit.linear, v))
            })?;
        }
        let x = self.out_nl.forward("xvector.out_nonlinear", &x, ctx)?;
        let x = ctx.block("xvector.stats", &x, |x| {
            let n = x.dim(D::Minus1)?;
            let mean = x.mean_keepdim(D::Minus1)?;
            let var = (x.broadcast_sub(&mean)?.sqr()?.sum_keepdim(D::Minus1)? / (n as f64 - 1.0))?;
            Ok(Tensor::cat(&[mean.squeeze(D::Minus1)?, var.sqrt()?.squeeze(D::Minus1)?], 1)?)
        })?;
        ctx.nest("xvector.dense", &x, |ctx, x| {
            // [B, 2C] · [E, 2C]ᵀ in f64: a single short dot product per output, whose f32 rounding
            // otherwise sits at the noise threshold over only E values (tiny rms ratio 2.05)
            let y = ctx.block("xvector.dense.linear", x, |x| {
                let w = self.dense.w.squeeze(2)?.to_dtype(DType::F64)?;
                Ok(x.to_dtype(DType::F64)?.matmul(&w.t()?)?.to_dtype(x.dtype())?)
            })?;
            ctx.block("xvector.dense.nonlinear.batchnorm", &y, |y| self.dense_bn.forward(y))
        })
    }

    /// wav `[1, N]` (float in [-1, 1]) → `[frames, feat_dim]` fbank minus its time mean.
    /// Taps: `fbank.*` (the stages, see `fbank.rs`), `fbank`, `feat` (infer_v2's mean removal).
    pub fn fbank(&self, wav: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let (bins, sr) = (self.cfg.feat_dim, self.cfg.sample_rate as f64);
        let f = ctx.nest("fbank", wav, |ctx, w| fbank::kaldi_fbank_taps(w, bins, sr, &self.fbank_faults, ctx))?;
        // the time mean in f64 (an f32 running sum over hundreds of frames drifts past torch's)
        ctx.block("feat", &f, |f| {
            let d = f.to_dtype(DType::F64)?;
            Ok(d.broadcast_sub(&d.mean_keepdim(0)?)?.to_dtype(DType::F32)?)
        })
    }
}
