//! BigVGAN v2 vocoder (NVIDIA `bigvgan.py`, as vendored by IndexTTS in `s2mel/modules/bigvgan`).
//!
//! mel `[B, num_mels, T]` → wav `[B, 1, T·∏upsample_rates]`, then tanh or a clamp to [-1, 1].
//! Anti-aliased activations: ×2 upsample (replicate pad, depthwise conv_transpose with the stored
//! kaiser-sinc filter), Snake/SnakeBeta, lowpass + ×2 downsample (`activation.rs`); AMP resblocks
//! type "1" and "2" (`resblock.rs`).
mod activation;
mod resblock;

use crate::ctx::{Ctx, Faults};
use crate::error::{input_err, Result};
use crate::nn::Conv1d;
use crate::store::Weights;
use crate::transforms::{load_weight_norm, weight_norm_fold_f64, weight_norm_fold_f64_tap_major};
pub use activation::{Activation1d, FilterFaults};
use candle_core::Tensor;
use resblock::{AmpBlock, BlockOpts};
use serde::Deserialize;

pub use activation::kaiser_sinc_filter;

/// `h.resblock`: AMPBlock1 ("1", two convs per dilation) or AMPBlock2 ("2", one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Resblock {
    One,
    Two,
}

impl TryFrom<String> for Resblock {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        match s.as_str() {
            "1" => Ok(Resblock::One),
            "2" => Ok(Resblock::Two),
            _ => Err(format!("BigVGAN resblock {s:?} is not supported (supported: \"1\", \"2\")")),
        }
    }
}

/// `h.activation` of every AMP block and of `activation_post`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Activation {
    Snake,
    SnakeBeta,
}

impl TryFrom<String> for Activation {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        match s.as_str() {
            "snake" => Ok(Activation::Snake),
            "snakebeta" => Ok(Activation::SnakeBeta),
            _ => Err(format!("BigVGAN activation {s:?} is not supported (supported: \"snake\", \"snakebeta\")")),
        }
    }
}

/// The generator keys of BigVGAN's `config.json` (the `h` of the official `BigVGAN(h,
/// use_cuda_kernel)`), plus its mel-input keys. Unknown keys are an error: the official file's
/// training / discriminator / loss keys must be left out (the generator never reads them).
/// Absent keys follow the official class: it reads `use_tanh_at_final` / `use_bias_at_final` with
/// `h.get(.., True)` and indexes every other key (absent = error).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BigVganConfig {
    pub num_mels: usize,
    pub upsample_rates: Vec<usize>,
    pub upsample_kernel_sizes: Vec<usize>,
    pub upsample_initial_channel: usize,
    pub resblock: Resblock,
    pub resblock_kernel_sizes: Vec<usize>,
    pub resblock_dilation_sizes: Vec<Vec<usize>>,
    pub activation: Activation,
    pub snake_logscale: bool,
    #[serde(default = "yes")]
    pub use_tanh_at_final: bool,
    #[serde(default = "yes")]
    pub use_bias_at_final: bool,
    /// The constructor argument: the fused CUDA anti-alias kernel. Only `false` (the torch path).
    #[serde(default)]
    pub use_cuda_kernel: bool,
    // The mel input's description (meldataset); the generator does not read them.
    #[serde(default)]
    pub sampling_rate: Option<u32>,
    #[serde(default)]
    pub hop_size: Option<usize>,
    #[serde(default)]
    pub n_fft: Option<usize>,
    #[serde(default)]
    pub win_size: Option<usize>,
    #[serde(default)]
    pub fmin: Option<f64>,
    #[serde(default)]
    pub fmax: Option<f64>,
}

fn yes() -> bool {
    true
}

/// nvidia/bigvgan_v2_22khz_80band_256x `config.json` (the IndexTTS2 vocoder).
impl Default for BigVganConfig {
    fn default() -> Self {
        BigVganConfig {
            num_mels: 80,
            upsample_rates: vec![4, 4, 2, 2, 2, 2],
            upsample_kernel_sizes: vec![8, 8, 4, 4, 4, 4],
            upsample_initial_channel: 1536,
            resblock: Resblock::One,
            resblock_kernel_sizes: vec![3, 7, 11],
            resblock_dilation_sizes: vec![vec![1, 3, 5]; 3],
            activation: Activation::SnakeBeta,
            snake_logscale: true,
            use_tanh_at_final: false,
            use_bias_at_final: false,
            use_cuda_kernel: false,
            sampling_rate: Some(22050),
            hop_size: Some(256),
            n_fft: Some(1024),
            win_size: Some(1024),
            fmin: Some(0.0),
            fmax: None,
        }
    }
}

impl BigVganConfig {
    /// Refuses what the official class would reject or silently truncate (its `zip`s), and the
    /// fused CUDA kernel.
    fn check(&self) -> Result<()> {
        if self.use_cuda_kernel {
            return input_err("BigVGAN use_cuda_kernel = true is not supported: Candle computes the torch anti-alias path (use_cuda_kernel = false)");
        }
        if self.upsample_rates.len() != self.upsample_kernel_sizes.len() {
            return input_err(format!(
                "BigVGAN upsample_rates {:?} and upsample_kernel_sizes {:?} differ in length (the official zip would drop stages)",
                self.upsample_rates, self.upsample_kernel_sizes
            ));
        }
        if self.resblock_kernel_sizes.len() != self.resblock_dilation_sizes.len() {
            return input_err(format!(
                "BigVGAN resblock_kernel_sizes {:?} and resblock_dilation_sizes {:?} differ in length",
                self.resblock_kernel_sizes, self.resblock_dilation_sizes
            ));
        }
        if self.upsample_rates.is_empty() || self.resblock_kernel_sizes.is_empty() {
            return input_err("BigVGAN needs at least one upsample stage and one resblock kernel");
        }
        if self.upsample_initial_channel >> self.upsample_rates.len() == 0 {
            return input_err(format!(
                "BigVGAN upsample_initial_channel {} cannot be halved {} times",
                self.upsample_initial_channel,
                self.upsample_rates.len()
            ));
        }
        for (&u, &k) in self.upsample_rates.iter().zip(&self.upsample_kernel_sizes) {
            if u == 0 || k < u {
                return input_err(format!(
                    "BigVGAN upsample_kernel_sizes {:?} with upsample_rates {:?}: each rate must be ≥ 1 and each kernel ≥ its rate (padding (k − u)/2; torch rejects a negative one)",
                    self.upsample_kernel_sizes, self.upsample_rates
                ));
            }
        }
        if self.resblock_kernel_sizes.iter().any(|&k| k % 2 == 0) {
            return input_err(format!(
                "BigVGAN resblock_kernel_sizes {:?}: an even kernel is not supported (its padding (k·d − d)/2 shortens the signal and the official residual add fails)",
                self.resblock_kernel_sizes
            ));
        }
        if self.resblock_dilation_sizes.iter().flatten().any(|&d| d == 0) {
            return input_err(format!("BigVGAN resblock_dilation_sizes {:?}: dilation 0 is invalid", self.resblock_dilation_sizes));
        }
        Ok(())
    }
}

pub const FAULTS: &[&str] = &[
    "skip_weight_norm",       // use weight_v as the weight: weight norm not folded
    "ups_kernel_flipped",     // ups.0 kernel reversed in time (the "conv on zero-stuffed input" bug)
    "swap_resblocks",         // resblocks 0 and 1 exchanged
    "no_final_clamp",         // output not clamped to [-1, 1]
    "snake_no_exp",           // log-scale α/β used without exp
    "upsample_zero_pad",      // UpSample1d pads with zeros, not replicate
    "lowpass_zero_pad",       // LowPassFilter1d pads with zeros, not replicate
    "kaiser_periodic_window", // filters rebuilt with torch.kaiser_window's default periodic=True
    "weight_f16",             // resblocks.1.convs1.1's weight rounded to f16 at load
];

/// A weight-normed weight, `g · v / ‖v‖` folded in f64 and rounded once. Candle's f32 sum of squares
/// runs sequentially over Cin·k (up to 8448) terms: at official width that per-channel norm error
/// alone put the convs at ratio ≈ 2 (max 2.5, rms 1.9 at resblocks.0.convs1.0); folded in f64 they
/// sit at the conv's own rounding (≤ 1.0), as torch's f32 fold does. An already fused `weight`
/// (BigVGAN's `from_pretrained` after `remove_weight_norm`) is read as is.
/// `tap_major`: a conv1d weight, written in [`crate::dense::tap_major`]'s layout by the fold itself.
fn wn_weight(w: &Weights, shape: &[usize], skip_fold: bool, tap_major: bool) -> Result<Tensor> {
    if skip_fold || (!w.contains("weight_v") && w.contains("weight")) {
        return load_weight_norm(w, shape, skip_fold);
    }
    if let Some(t) = w.fold_weight_norm(shape, tap_major)? {
        return Ok(t); // CPU f32: folded straight from the file, one pass into new memory
    }
    let mut g_dims = vec![1usize; shape.len()];
    g_dims[0] = shape[0];
    let g = w.get(g_dims, "weight_g")?;
    let v = w.get(shape, "weight_v")?;
    if tap_major {
        weight_norm_fold_f64_tap_major(&g, &v)
    } else {
        weight_norm_fold_f64(&g, &v)
    }
}

/// A weight-normed `nn.Conv1d` (stride 1), its weight folded by `wn_weight`.
fn wn_conv1d(w: &Weights, shape: (usize, usize, usize), bias: bool, padding: usize, dilation: usize, skip: bool) -> Result<Conv1d> {
    let weight = wn_weight(w, &[shape.0, shape.1, shape.2], skip, true)?;
    let b = if bias { Some(w.get(shape.0, "bias")?) } else { None };
    Conv1d::new(weight, b, padding, 1, dilation)
}

struct ConvTranspose1d {
    kernel: TransposeKernel,
    b: Tensor,
    stride: usize,
    padding: usize,
}

enum TransposeKernel {
    /// CPU f32/f64: the gemm form (its own regrouped copy of the weight)
    Polyphase(crate::dense::PolyphaseTranspose),
    /// elsewhere: Candle's conv_transpose1d on the stored `[Cin, Cout, k]` weight
    Candle(Tensor),
}

impl ConvTranspose1d {
    fn new(w: Tensor, b: Tensor, stride: usize, padding: usize) -> Result<ConvTranspose1d> {
        let kernel = match crate::dense::PolyphaseTranspose::new(&w, stride)? {
            Some(p) => TransposeKernel::Polyphase(p),
            None => TransposeKernel::Candle(w),
        };
        Ok(ConvTranspose1d { kernel, b, stride, padding })
    }

    /// Padding of a transposed conv only drops `padding` outputs per side: run it unpadded and
    /// crop, since Candle's CPU kernel for padding ≠ 0 is a slow direct loop (its col2im path,
    /// a matmul, needs padding 0). The same products are summed, so only the rounding order differs.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = match &self.kernel {
            TransposeKernel::Polyphase(p) => return p.forward(x, &self.b, self.padding),
            TransposeKernel::Candle(w) => w,
        };
        // one batch element at a time: Candle's batched CPU conv_transpose1d (col2im) is wrong for
        // batch > 1 (`dense::tests::polyphase_transpose_matches_candle_conv_transpose1d`)
        let ys = (0..x.dim(0)?).map(|i| x.narrow(0, i, 1)?.conv_transpose1d(w, 0, 0, self.stride, 1, 1)).collect::<candle_core::Result<Vec<_>>>()?;
        let y = Tensor::cat(&ys, 0)?;
        let n = y.dim(2)?;
        if n < 2 * self.padding + 1 {
            return crate::error::input_err(format!("BigVGAN upsampler: {} input frames give no output", x.dim(2)?));
        }
        let y = y.narrow(2, self.padding, n - 2 * self.padding)?;
        Ok(y.broadcast_add(&self.b.reshape((1, (), 1))?)?)
    }
}

pub struct BigVgan {
    cfg: BigVganConfig,
    conv_pre: Conv1d,
    ups: Vec<ConvTranspose1d>,
    resblocks: Vec<AmpBlock>,
    activation_post: Activation1d,
    conv_post: Conv1d,
    faults: Faults,
}

impl BigVgan {
    pub fn load(w: &Weights, cfg: BigVganConfig, faults: Faults) -> Result<BigVgan> {
        cfg.check()?;
        let skip = faults.on("skip_weight_norm");
        let filters = FilterFaults {
            up_zero_pad: faults.on("upsample_zero_pad"),
            down_zero_pad: faults.on("lowpass_zero_pad"),
            periodic_window: faults.on("kaiser_periodic_window"),
        };
        let opts = BlockOpts::new(&cfg, skip, faults.on("snake_no_exp"), filters);
        let c0 = cfg.upsample_initial_channel;
        let conv_pre = wn_conv1d(&w.pp("conv_pre"), (c0, cfg.num_mels, 7), true, 3, 1, skip)?;
        let mut ups = Vec::new();
        let mut resblocks = Vec::new();
        for (i, (&u, &k)) in cfg.upsample_rates.iter().zip(&cfg.upsample_kernel_sizes).enumerate() {
            let (cin, cout) = (c0 >> i, c0 >> (i + 1));
            let uw = w.pp(format!("ups.{i}.0"));
            let mut weight = wn_weight(&uw, &[cin, cout, k], skip, false)?;
            if i == 0 && faults.on("ups_kernel_flipped") {
                // (a u32 `affine(-1, k − 1)` is no flip: −1 saturates to 0 in u32, giving k − 1 everywhere)
                let idx = Tensor::new((0..k as u32).rev().collect::<Vec<_>>(), w.device())?;
                weight = weight.index_select(&idx, 2)?;
            }
            ups.push(ConvTranspose1d::new(weight, uw.get(cout, "bias")?, u, (k - u) / 2)?);
            for (j, (&rk, d)) in cfg.resblock_kernel_sizes.iter().zip(&cfg.resblock_dilation_sizes).enumerate() {
                let idx = i * cfg.resblock_kernel_sizes.len() + j;
                resblocks.push(AmpBlock::load(&w.pp(format!("resblocks.{idx}")), cfg.resblock, cout, rk, d, &opts)?);
            }
        }
        if faults.on("swap_resblocks") && resblocks.len() > 1 {
            resblocks.swap(0, 1);
        }
        if faults.on("weight_f16") {
            let list = if cfg.resblock == Resblock::One { "convs1" } else { "convs" };
            match resblocks.get_mut(1) {
                Some(b) => b.round_conv_to_f16(list, 1)?,
                None => return input_err("fault weight_f16 needs a second resblock"),
            }
        }
        let ch = c0 >> cfg.upsample_rates.len();
        let activation_post = opts.activation(&w.pp("activation_post"), ch)?;
        let conv_post = wn_conv1d(&w.pp("conv_post"), (1, ch, 7), cfg.use_bias_at_final, 3, 1, skip)?;
        Ok(BigVgan { cfg, conv_pre, ups, resblocks, activation_post, conv_post, faults })
    }

    /// Taps, in completion order (= reference/bigvgan.py): `conv_pre`; per stage i `ups.i.0`, each
    /// resblock's leaves then `resblocks.k`, and `xs.i` (the stage mean `xs / num_kernels`, on the last
    /// resblock's output); `activation_post.{upsample,act,downsample.lowpass}`; `conv_post`; `tanh` or `clamp`.
    pub fn forward(&self, mel: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let (_, m, t) = mel.dims3()?;
        if m != self.cfg.num_mels || t == 0 {
            return input_err(format!("BigVGAN expects mel [B, {}, T>0], got {:?}", self.cfg.num_mels, mel.dims()));
        }
        let mut x = ctx.block("conv_pre", mel, |x| self.conv_pre.forward(x))?;
        let nk = self.cfg.resblock_kernel_sizes.len();
        for (i, up) in self.ups.iter().enumerate() {
            x = ctx.block(&format!("ups.{i}.0"), &x, |x| up.forward(x))?;
            let mut ys = Vec::with_capacity(nk);
            for j in 0..nk {
                let k = i * nk + j;
                let name = format!("resblocks.{k}");
                ys.push(ctx.nest(&name, &x, |ctx, x| self.resblocks[k].forward(x, ctx, &name))?);
            }
            let last = ys.pop().ok_or_else(|| crate::Error::Input("BigVGAN has no resblocks".into()))?;
            // official order: xs = y0; xs += y1; …; x = xs / num_kernels
            x = ctx.block(&format!("xs.{i}"), &last, |last| {
                let mut xs: Option<Tensor> = None;
                for y in ys.iter().chain(std::iter::once(last)) {
                    xs = Some(match xs {
                        Some(s) => (s + y)?,
                        None => y.clone(),
                    });
                }
                Ok((xs.expect("nk ≥ 1") / nk as f64)?)
            })?;
        }
        let x = self.activation_post.forward(&x, ctx, "activation_post")?;
        let x = ctx.block("conv_post", &x, |x| self.conv_post.forward(x))?;
        if self.cfg.use_tanh_at_final {
            return ctx.block("tanh", &x, |x| Ok(crate::vact::tanh(x)?));
        }
        ctx.block("clamp", &x, |x| Ok(if self.faults.on("no_final_clamp") { x.clone() } else { x.clamp(-1f32, 1f32)? }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFICIAL: &str = r#"{"resblock": "1", "upsample_rates": [4,4,2,2,2,2], "upsample_kernel_sizes": [8,8,4,4,4,4],
        "upsample_initial_channel": 1536, "resblock_kernel_sizes": [3,7,11],
        "resblock_dilation_sizes": [[1,3,5], [1,3,5], [1,3,5]], "use_tanh_at_final": false,
        "use_bias_at_final": false, "activation": "snakebeta", "snake_logscale": true, "num_mels": 80,
        "n_fft": 1024, "hop_size": 256, "win_size": 1024, "sampling_rate": 22050, "fmin": 0, "fmax": null}"#;

    #[test]
    fn default_is_the_official_22k_config() {
        let c: BigVganConfig = serde_json::from_str(OFFICIAL).unwrap();
        assert_eq!(c, BigVganConfig::default());
        c.check().unwrap();
    }

    #[test]
    fn absent_final_flags_default_to_true_as_in_the_official_class() {
        let v: serde_json::Value = serde_json::from_str(OFFICIAL).unwrap();
        let mut m = v.as_object().unwrap().clone();
        m.remove("use_tanh_at_final");
        m.remove("use_bias_at_final");
        let c: BigVganConfig = serde_json::from_value(serde_json::Value::Object(m)).unwrap();
        assert!(c.use_tanh_at_final && c.use_bias_at_final);
    }

    #[test]
    fn unknown_keys_and_values_are_refused() {
        let e = serde_json::from_str::<BigVganConfig>(&OFFICIAL.replace("\"snake_logscale\"", "\"snake_log_scale\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("snake_log_scale"), "{e}");
        let e = serde_json::from_str::<BigVganConfig>(&OFFICIAL.replace("\"snakebeta\"", "\"relu\"")).unwrap_err().to_string();
        assert!(e.contains("activation \"relu\""), "{e}");
        let e = serde_json::from_str::<BigVganConfig>(&OFFICIAL.replace("\"resblock\": \"1\"", "\"resblock\": \"3\"")).unwrap_err().to_string();
        assert!(e.contains("resblock \"3\""), "{e}");
    }
}
