//! BigVGAN v2 vocoder (NVIDIA `bigvgan.py`, as vendored by IndexTTS in `s2mel/modules/bigvgan`).
//!
//! mel `[B, num_mels, T]` → wav `[B, 1, T·∏upsample_rates]`, clamped to [-1, 1].
//! Anti-aliased activations: ×2 upsample (replicate pad, depthwise conv_transpose with the stored
//! kaiser-sinc filter), Snake/SnakeBeta, lowpass + ×2 downsample.
use crate::ctx::{Ctx, Faults};
use crate::error::{input_err, Result};
use crate::nn::Conv1d;
use crate::store::Weights;
use crate::transforms::{load_weight_norm, snake_param};
use candle_core::Tensor;
use serde::Deserialize;

/// The architecture keys of BigVGAN's `config.json` (training keys are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct BigVganConfig {
    pub num_mels: usize,
    pub upsample_rates: Vec<usize>,
    pub upsample_kernel_sizes: Vec<usize>,
    pub upsample_initial_channel: usize,
    pub resblock: String,
    pub resblock_kernel_sizes: Vec<usize>,
    pub resblock_dilation_sizes: Vec<Vec<usize>>,
    pub activation: String,
    #[serde(default)]
    pub snake_logscale: bool,
    #[serde(default = "yes")]
    pub use_tanh_at_final: bool,
    #[serde(default = "yes")]
    pub use_bias_at_final: bool,
}

fn yes() -> bool {
    true
}

pub const FAULTS: &[&str] = &[
    "skip_weight_norm",   // use weight_v as the weight: weight norm not folded
    "ups_kernel_flipped", // ups.0 kernel reversed in time (the "conv on zero-stuffed input" bug)
    "swap_resblocks",     // resblocks 0 and 1 exchanged
    "no_final_clamp",     // output not clamped to [-1, 1]
    "snake_no_exp",       // log-scale α/β used without exp
];

struct Snake {
    alpha: Tensor, // [1, C, 1], already exp'd when log-scale
    inv_beta: Tensor,
}

impl Snake {
    fn load(w: &Weights, ch: usize, beta: bool, logscale: bool) -> Result<Snake> {
        let alpha = snake_param(&w.get(ch, "alpha")?, logscale)?;
        let b = if beta { snake_param(&w.get(ch, "beta")?, logscale)? } else { alpha.clone() };
        let inv_beta = (b + 1e-9)?.recip()?;
        Ok(Snake { alpha: alpha.reshape((1, ch, 1))?, inv_beta: inv_beta.reshape((1, ch, 1))? })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = x.broadcast_mul(&self.alpha)?.sin()?.sqr()?;
        Ok((x + s.broadcast_mul(&self.inv_beta)?)?)
    }
}

/// Alias-free activation: upsample ×2, act, downsample ×2, with the filters from the checkpoint.
///
/// Both filters are one 12-tap kernel shared by every channel. They are applied per output phase
/// (polyphase): exactly the sums torch's depthwise conv_transpose1d / conv1d compute, as 12 shifted
/// multiply-adds on whole [B, C, T] tensors. Candle's CPU convs on B·C single-channel rows ran at
/// 0.5–2.6 GFLOP/s and were most of BigVGAN's time (`benches/conv_speed.rs`).
struct Activation1d {
    act: Snake,
    up_taps: Vec<f32>,   // UpSample1d.filter, stored [1, 1, K]
    down_taps: Vec<f32>, // LowPassFilter1d.filter, stored [1, 1, K]
}

const RATIO: usize = 2;
const K: usize = 12; // int(6 * ratio // 2) * 2

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

impl Activation1d {
    fn load(w: &Weights, ch: usize, beta: bool, logscale: bool) -> Result<Activation1d> {
        let taps = |t: Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
        Ok(Activation1d {
            act: Snake::load(&w.pp("act"), ch, beta, logscale)?,
            up_taps: taps(w.pp("upsample").get((1, 1, K), "filter")?)?,
            down_taps: taps(w.pp("downsample.lowpass").get((1, 1, K), "filter")?)?,
        })
    }

    /// UpSample1d: replicate pad `K/2 − 1`, conv_transpose stride 2, ×2, crop `pad·2 + (K−2)/2` per
    /// side. Output sample 2r+t = 2·Σ_j f[2j+p]·xp[r + m0 − j] with p = (t+crop) mod 2, m0 = (t+crop) div 2.
    fn upsample(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, t) = x.dims3()?;
        let pad = K / RATIO - 1;
        let crop = pad * RATIO + (K - RATIO) / 2;
        let xp = x.pad_with_same(2, pad, pad)?;
        let mut phases = Vec::with_capacity(RATIO);
        for ph in 0..RATIO {
            let (p, m0) = ((ph + crop) % RATIO, (ph + crop) / RATIO);
            let terms: Vec<(usize, f32)> = (0..)
                .take_while(|j| j * RATIO + p < K)
                .map(|j| (m0 - j, RATIO as f32 * self.up_taps[j * RATIO + p]))
                .collect();
            phases.push(shifted_sum(&xp, &terms, t)?);
        }
        Ok(Tensor::stack(&phases, 3)?.reshape((b, c, t * RATIO))?)
    }

    /// LowPassFilter1d: replicate pad (K/2 − 1, K/2), conv stride 2: out[r] = Σ_k f[k]·yp[2r + k],
    /// read from the even / odd phases of yp (one extra replicate sample makes the length even).
    fn downsample(&self, y: &Tensor) -> Result<Tensor> {
        let (b, c, t2) = y.dims3()?;
        let yp = y.pad_with_same(2, K / 2 - 1, K / 2 + 1)?;
        let half = yp.dim(2)? / 2;
        let pairs = yp.reshape((b, c, half, 2))?;
        let even = pairs.narrow(3, 0, 1)?.squeeze(3)?.contiguous()?;
        let odd = pairs.narrow(3, 1, 1)?.squeeze(3)?.contiguous()?;
        let out_len = t2 / RATIO;
        let ev: Vec<(usize, f32)> = (0..K).step_by(2).map(|k| (k / 2, self.down_taps[k])).collect();
        let od: Vec<(usize, f32)> = (1..K).step_by(2).map(|k| (k / 2, self.down_taps[k])).collect();
        Ok((shifted_sum(&even, &ev, out_len)? + shifted_sum(&odd, &od, out_len)?)?)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.downsample(&self.act.forward(&self.upsample(x)?)?)
    }
}

struct AmpBlock1 {
    convs1: Vec<Conv1d>,
    convs2: Vec<Conv1d>,
    acts: Vec<Activation1d>,
}

impl AmpBlock1 {
    fn load(w: &Weights, cfg: &BigVganConfig, ch: usize, k: usize, dil: &[usize], faults: &Faults) -> Result<AmpBlock1> {
        let beta = cfg.activation == "snakebeta";
        let skip = faults.on("skip_weight_norm");
        let mut convs1 = Vec::new();
        let mut convs2 = Vec::new();
        for (j, &d) in dil.iter().enumerate() {
            convs1.push(Conv1d::load_wn(&w.pp(format!("convs1.{j}")), (ch, ch, k), true, d * (k - 1) / 2, d, skip)?);
            convs2.push(Conv1d::load_wn(&w.pp(format!("convs2.{j}")), (ch, ch, k), true, (k - 1) / 2, 1, skip)?);
        }
        let logscale = cfg.snake_logscale && !faults.on("snake_no_exp");
        let acts = (0..2 * dil.len())
            .map(|a| Activation1d::load(&w.pp(format!("activations.{a}")), ch, beta, logscale))
            .collect::<Result<Vec<_>>>()?;
        Ok(AmpBlock1 { convs1, convs2, acts })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for j in 0..self.convs1.len() {
            let xt = self.acts[2 * j].forward(&x)?;
            let xt = self.convs1[j].forward(&xt)?;
            let xt = self.acts[2 * j + 1].forward(&xt)?;
            let xt = self.convs2[j].forward(&xt)?;
            x = (xt + x)?;
        }
        Ok(x)
    }
}

struct ConvTranspose1d {
    w: Tensor, // [Cin, Cout, k]
    b: Tensor,
    stride: usize,
    padding: usize,
}

impl ConvTranspose1d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.conv_transpose1d(&self.w, self.padding, 0, self.stride, 1, 1)?;
        Ok(y.broadcast_add(&self.b.reshape((1, (), 1))?)?)
    }
}

pub struct BigVgan {
    cfg: BigVganConfig,
    conv_pre: Conv1d,
    ups: Vec<ConvTranspose1d>,
    resblocks: Vec<AmpBlock1>,
    activation_post: Activation1d,
    conv_post: Conv1d,
    faults: Faults,
}

impl BigVgan {
    pub fn load(w: &Weights, cfg: BigVganConfig, faults: Faults) -> Result<BigVgan> {
        if cfg.resblock != "1" {
            return input_err(format!("BigVGAN resblock type {:?} is not supported (IndexTTS2 uses \"1\")", cfg.resblock));
        }
        if cfg.activation != "snakebeta" && cfg.activation != "snake" {
            return input_err(format!("BigVGAN activation {:?} is not supported", cfg.activation));
        }
        if cfg.upsample_rates.len() != cfg.upsample_kernel_sizes.len()
            || cfg.resblock_kernel_sizes.len() != cfg.resblock_dilation_sizes.len()
        {
            return input_err("BigVGAN config: upsample/resblock lists have different lengths");
        }
        if cfg.resblock_kernel_sizes.is_empty() || cfg.upsample_rates.is_empty() || cfg.upsample_initial_channel >> cfg.upsample_rates.len() == 0 {
            return input_err("BigVGAN config: needs at least one upsample stage and one resblock kernel, and enough channels to halve per stage");
        }
        let skip = faults.on("skip_weight_norm");
        let c0 = cfg.upsample_initial_channel;
        let conv_pre = Conv1d::load_wn(&w.pp("conv_pre"), (c0, cfg.num_mels, 7), true, 3, 1, skip)?;
        let mut ups = Vec::new();
        let mut resblocks = Vec::new();
        for (i, (&u, &k)) in cfg.upsample_rates.iter().zip(&cfg.upsample_kernel_sizes).enumerate() {
            let (cin, cout) = (c0 >> i, c0 >> (i + 1));
            let uw = w.pp(format!("ups.{i}.0"));
            let mut weight = load_weight_norm(&uw, (cin, cout, k), skip)?;
            if i == 0 && faults.on("ups_kernel_flipped") {
                let idx = Tensor::arange(0u32, k as u32, w.device())?.affine(-1.0, (k - 1) as f64)?;
                weight = weight.index_select(&idx, 2)?;
            }
            ups.push(ConvTranspose1d { w: weight, b: uw.get(cout, "bias")?, stride: u, padding: (k - u) / 2 });
            for (j, (&rk, d)) in cfg.resblock_kernel_sizes.iter().zip(&cfg.resblock_dilation_sizes).enumerate() {
                let idx = i * cfg.resblock_kernel_sizes.len() + j;
                resblocks.push(AmpBlock1::load(&w.pp(format!("resblocks.{idx}")), &cfg, cout, rk, d, &faults)?);
            }
        }
        if faults.on("swap_resblocks") && resblocks.len() > 1 {
            resblocks.swap(0, 1);
        }
        let ch = c0 >> cfg.upsample_rates.len();
        let logscale = cfg.snake_logscale && !faults.on("snake_no_exp");
        let activation_post = Activation1d::load(&w.pp("activation_post"), ch, cfg.activation == "snakebeta", logscale)?;
        let conv_post = Conv1d::load_wn(&w.pp("conv_post"), (1, ch, 7), cfg.use_bias_at_final, 3, 1, skip)?;
        Ok(BigVgan { cfg, conv_pre, ups, resblocks, activation_post, conv_post, faults })
    }

    /// Taps: `conv_pre`, `ups.i`, `resblocks.k`, `activation_post`, `conv_post`, `output`.
    pub fn forward(&self, mel: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let (_, m, t) = mel.dims3()?;
        if m != self.cfg.num_mels || t == 0 {
            return input_err(format!("BigVGAN expects mel [B, {}, T>0], got {:?}", self.cfg.num_mels, mel.dims()));
        }
        let mut x = ctx.block("conv_pre", mel, |x| self.conv_pre.forward(x))?;
        let nk = self.cfg.resblock_kernel_sizes.len();
        for (i, up) in self.ups.iter().enumerate() {
            x = ctx.block(&format!("ups.{i}"), &x, |x| up.forward(x))?;
            let mut xs: Option<Tensor> = None;
            for j in 0..nk {
                let k = i * nk + j;
                let y = ctx.block(&format!("resblocks.{k}"), &x, |x| self.resblocks[k].forward(x))?;
                xs = Some(match xs {
                    Some(s) => (s + y)?,
                    None => y,
                });
            }
            x = match xs {
                Some(s) => (s / nk as f64)?,
                None => return input_err("BigVGAN has no resblocks"),
            };
        }
        let x = ctx.block("activation_post", &x, |x| self.activation_post.forward(x))?;
        let x = ctx.block("conv_post", &x, |x| self.conv_post.forward(x))?;
        ctx.block("output", &x, |x| {
            Ok(if self.cfg.use_tanh_at_final {
                x.tanh()?
            } else if self.faults.on("no_final_clamp") {
                x.clone()
            } else {
                x.clamp(-1f32, 1f32)?
            })
        })
    }
}
