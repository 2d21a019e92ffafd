//! s2mel `InterpolateRegulator` (continuous input) and `gpt_layer` (`s2mel/modules/
//! length_regulator.py`, `commons.py:MyModel`). Loaded with prefix `net`; weights and taps are
//! `length_regulator.…` and `gpt_layer.…`.
use crate::ctx::{Ctx, Faults};
use crate::error::{input_err, Result};
use crate::nn::{Conv1d, Linear};
use crate::store::Weights;
use candle_core::{DType, Tensor, D};
use serde::Deserialize;

/// `InterpolateRegulator`'s constructor arguments (config.yaml `s2mel.length_regulator`, with
/// `content_codebook_size` as `codebook_size`) and the `gpt_layer` widths. `Default` = official.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegulatorConfig {
    pub channels: usize,
    pub in_channels: usize,
    /// One (conv, GroupNorm, Mish) block per entry; only the count is read (as officially). Empty:
    /// no interpolation, the output keeps the input length.
    pub sampling_ratios: Vec<usize>,
    pub is_discrete: bool,
    pub vector_quantize: bool,
    /// Rows of the never-called token `embedding` (only its stored shape).
    pub codebook_size: usize,
    /// Output width of the last 1×1 conv (None = channels).
    pub out_channels: Option<usize>,
    /// GroupNorm groups.
    pub groups: usize,
    pub n_codebooks: usize,
    /// Training-only codebook dropout: no effect at inference.
    pub quantizer_dropout: f64,
    /// Adds the learned `f0_mask` (IndexTTS2 never passes f0).
    pub f0_condition: bool,
    /// Rows of the never-called `f0_embedding`.
    pub n_f0_bins: usize,
    /// gpt_layer: latent_dim → latent_hidden… → in_channels, no activations.
    pub latent_dim: usize,
    pub latent_hidden: Vec<usize>,
}

impl Default for RegulatorConfig {
    fn default() -> RegulatorConfig {
        RegulatorConfig {
            channels: 512,
            in_channels: 1024,
            sampling_ratios: vec![1, 1, 1, 1],
            is_discrete: false,
            vector_quantize: false,
            codebook_size: 2048,
            out_channels: None,
            groups: 1,
            n_codebooks: 1,
            quantizer_dropout: 0.0,
            f0_condition: false,
            n_f0_bins: 512,
            latent_dim: 1280,
            latent_hidden: vec![256, 128],
        }
    }
}

impl RegulatorConfig {
    fn check(&self) -> Result<()> {
        let refuse = |field: &str, value: &dyn std::fmt::Debug, supported: &str| {
            input_err(format!("length regulator config: `{field}` = {value:?} is not supported (supported: {supported})"))
        };
        if self.is_discrete {
            return refuse("is_discrete", &true, "false: continuous semantic features through content_in_proj");
        }
        if self.vector_quantize {
            return refuse("vector_quantize", &true, "false");
        }
        if self.n_codebooks != 1 {
            return refuse("n_codebooks", &self.n_codebooks, "1 (more codebooks only matter for discrete input)");
        }
        if self.groups == 0 || !self.channels.is_multiple_of(self.groups) {
            return input_err(format!("length regulator config: groups {} must divide channels {}", self.groups, self.channels));
        }
        Ok(())
    }
}

pub const FAULTS: &[&str] = &[
    "interp_round",          // nearest interpolation rounds the source index instead of flooring it
    "groupnorm_per_channel", // GroupNorm(1) normalised per channel instead of over (C, T)
    "nearest_exact",         // mode="nearest-exact" (floor((j + 0.5)·scale)) instead of torch's legacy "nearest"
    "groupnorm_eps",         // GroupNorm eps 1e-6 instead of torch's 1e-5
    "mish_as_swish",         // Mish x·tanh(softplus x) replaced by Swish x·σ(x)
];

/// torch's `F.interpolate(mode="nearest", size=out)` source index: floor(j · (in/out)) in f32
/// (`exact`: mode "nearest-exact", floor((j + 0.5) · in/out)).
pub fn nearest_indices(t_in: usize, t_out: usize, round: bool, exact: bool) -> Vec<u32> {
    let scale = t_in as f32 / t_out as f32;
    (0..t_out)
        .map(|j| {
            let s = if exact { (j as f32 + 0.5) * scale } else { j as f32 * scale };
            let s = if round { s.round() } else { s.floor() };
            (s as usize).min(t_in - 1) as u32
        })
        .collect()
}

enum Layer {
    Conv(Conv1d),
    GroupNorm { w: Tensor, b: Tensor },
    Mish,
}

pub struct Regulator {
    cfg: RegulatorConfig,
    content_in_proj: Linear,
    f0_mask: Option<Tensor>,
    model: Vec<Layer>,
    latent: Vec<Linear>,
    faults: Faults,
}

fn mish(x: &Tensor, as_swish: bool) -> Result<Tensor> {
    if as_swish {
        return Ok(crate::vact::silu(x)?);
    }
    // softplus = max(x, 0) + ln(1 + e^{-|x|}) stays finite for large |x|.
    let sp = (x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    Ok((x * crate::vact::tanh(&sp)?)?)
}

impl Regulator {
    pub fn load(w: &Weights, cfg: RegulatorConfig, faults: Faults) -> Result<Regulator> {
        cfg.check()?;
        let c = cfg.channels;
        let lr = w.pp("length_regulator");
        let mut model = Vec::new();
        let mut i = 0;
        for _ in &cfg.sampling_ratios {
            model.push(Layer::Conv(Conv1d::load(&lr.pp(format!("model.{i}")), (c, c, 3), true, 1, 1, 1)?));
            let g = lr.pp(format!("model.{}", i + 1));
            model.push(Layer::GroupNorm { w: g.get(c, "weight")?, b: g.get(c, "bias")? });
            model.push(Layer::Mish);
            i += 3;
        }
        let out = cfg.out_channels.unwrap_or(c);
        model.push(Layer::Conv(Conv1d::load(&lr.pp(format!("model.{i}")), (out, c, 1), true, 0, 1, 1)?));
        let f0_mask = if cfg.f0_condition { Some(lr.get((1, c), "f0_mask")?.reshape((1, c, 1))?) } else { None };
        let dims: Vec<usize> = std::iter::once(cfg.latent_dim).chain(cfg.latent_hidden.iter().copied()).chain(std::iter::once(cfg.in_channels)).collect();
        let latent = dims
            .windows(2)
            .enumerate()
            .map(|(k, p)| Linear::load(&w.pp(format!("gpt_layer.{k}")), p[0], p[1], true))
            .collect::<Result<Vec<_>>>()?;
        Ok(Regulator { content_in_proj: Linear::load(&lr.pp("content_in_proj"), cfg.in_channels, c, true)?, f0_mask, model, latent, cfg, faults })
    }

    fn group_norm(&self, x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
        let (bs, c, t) = x.dims3()?;
        let g = self.cfg.groups;
        let flat = if self.faults.on("groupnorm_per_channel") { x.clone() } else { x.reshape((bs, g, (c / g) * t))? };
        let eps = if self.faults.on("groupnorm_eps") { 1e-6 } else { 1e-5 };
        // In f64, rounded once: GroupNorm(1, 512) takes its moments over 512·T values (≈ 1M at
        // official size), and Candle's sequential f32 sum drifts there (rms ratio 9–15 at the
        // norms, T = 1999) where torch's cascaded sums stay at their own rounding.
        let dt = flat.dtype();
        let flat = flat.to_dtype(DType::F64)?;
        let mean = flat.mean_keepdim(D::Minus1)?;
        let xc = flat.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let y = xc.broadcast_div(&(var + eps)?.sqrt()?)?.to_dtype(dt)?.reshape((bs, c, t))?;
        Ok(y.broadcast_mul(&w.reshape((1, c, 1))?)?.broadcast_add(&b.reshape((1, c, 1))?)?)
    }

    /// x `[B, T, in_channels]`, ylens `[B]` → `[B, max(ylens), out]` (no sampling ratios: `[B, T,
    /// out]`), frames past each length zeroed. Taps `length_regulator.content_in_proj`,
    /// `….interpolate`, `….f0_mask` (f0_condition), `….model.i`, and `length_regulator` itself.
    pub fn forward(&self, x: &Tensor, ylens: &[i64], ctx: &mut Ctx) -> Result<Tensor> {
        let (b, t, cin) = x.dims3().or_else(|_| input_err(format!("regulator x must be [B, T, {}], got {:?}", self.cfg.in_channels, x.dims())))?;
        if cin != self.cfg.in_channels || t == 0 || b == 0 {
            return input_err(format!("regulator x must be [B, T>0, {}], got {:?}", self.cfg.in_channels, x.dims()));
        }
        if ylens.len() != b || ylens.iter().any(|l| !(1..=1 << 20).contains(l)) {
            return input_err(format!("ylens must hold {b} lengths in 1..=2^20, got {ylens:?}"));
        }
        let max_len = ylens.iter().copied().max().unwrap_or(1) as usize;
        let interpolate = !self.cfg.sampling_ratios.is_empty();
        if !interpolate && max_len > 1 && max_len < t {
            // the official `out * mask` cannot broadcast [B, T] against a mask of max(ylens) < T frames
            return input_err(format!("without sampling_ratios the output keeps the input's {t} frames; max(ylens) = {max_len} must be 1 or ≥ {t} (the official mask multiply fails otherwise)"));
        }
        ctx.nest("length_regulator", x, |ctx, x| {
            let h = ctx.block("length_regulator.content_in_proj", x, |x| self.content_in_proj.forward(x))?;
            let (mut h, t_out) = if interpolate {
                let idx = nearest_indices(t, max_len, self.faults.on("interp_round"), self.faults.on("nearest_exact"));
                let idx = Tensor::from_vec(idx, max_len, x.device())?;
                (ctx.block("length_regulator.interpolate", &h, |h| Ok(h.index_select(&idx, 1)?.transpose(1, 2)?.contiguous()?))?, max_len)
            } else {
                (h.transpose(1, 2)?.contiguous()?, t)
            };
            if let Some(m) = &self.f0_mask {
                h = ctx.block("length_regulator.f0_mask", &h, |h| Ok(h.broadcast_add(m)?))?;
            }
            for (i, layer) in self.model.iter().enumerate() {
                h = ctx.block(&format!("length_regulator.model.{i}"), &h, |x| match layer {
                    Layer::Conv(c) => c.forward(x),
                    Layer::GroupNorm { w, b } => self.group_norm(x, w, b),
                    Layer::Mish => mish(x, self.faults.on("mish_as_swish")),
                })?;
            }
            // sequence_mask(ylens) over the output frames (a mask of one frame broadcasts: all ones)
            let keep = |l: i64, j: usize| (max_len == 1 && !interpolate) || (j as i64) < l;
            let mask: Vec<f32> = ylens.iter().flat_map(|&l| (0..t_out).map(move |j| if keep(l, j) { 1.0 } else { 0.0 })).collect();
            let mask = Tensor::from_vec(mask, (b, t_out, 1), x.device())?;
            Ok(h.transpose(1, 2)?.broadcast_mul(&mask)?)
        })
    }

    /// gpt_layer: latent `[B, T, latent_dim]` → `[B, T, in_channels]`; taps `gpt_layer.k`.
    pub fn latent_proj(&self, latent: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let ok = latent.dims().len() == 3 && latent.dim(2).ok() == Some(self.cfg.latent_dim);
        if !ok {
            return input_err(format!("latent must be [B, T, {}], got {:?}", self.cfg.latent_dim, latent.dims()));
        }
        let mut h = latent.clone();
        for (k, l) in self.latent.iter().enumerate() {
            h = ctx.block(&format!("gpt_layer.{k}"), &h, |x| l.forward(x))?;
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn config_default_is_official_and_strict() {
        let d: super::RegulatorConfig = serde_json::from_str("{}").unwrap();
        assert_eq!((d.channels, d.in_channels, d.sampling_ratios.len(), d.latent_dim), (512, 1024, 4, 1280));
        assert!(serde_json::from_str::<super::RegulatorConfig>(r#"{"chanels": 512}"#).is_err());
    }
}
