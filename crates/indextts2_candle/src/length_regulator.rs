//! s2mel `InterpolateRegulator` (continuous input) and `gpt_layer` (`s2mel/modules/
//! length_regulator.py`, `commons.py:MyModel`). Loaded with prefix `net`; weights and taps are
//! `length_regulator.…` and `gpt_layer.…`.
use crate::ctx::{Ctx, Faults};
use crate::error::{input_err, Result};
use crate::nn::{Conv1d, Linear};
use crate::store::Weights;
use candle_core::{Tensor, D};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct RegulatorConfig {
    pub channels: usize,
    pub in_channels: usize,
    pub sampling_ratios: Vec<usize>,
    /// gpt_layer: latent_dim → latent_hidden… → in_channels, no activations.
    pub latent_dim: usize,
    pub latent_hidden: Vec<usize>,
}

pub const FAULTS: &[&str] = &[
    "interp_round", // nearest interpolation rounds the source index instead of flooring it
    "groupnorm_per_channel", // GroupNorm(1) normalised per channel instead of over (C, T)
];

/// torch's `F.interpolate(mode="nearest", size=out)` source index: floor(j · (in/out)) in f32.
pub fn nearest_indices(t_in: usize, t_out: usize, round: bool) -> Vec<u32> {
    let scale = t_in as f32 / t_out as f32;
    (0..t_out)
        .map(|j| {
            let s = j as f32 * scale;
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
    model: Vec<Layer>,
    latent: Vec<Linear>,
    faults: Faults,
}

fn mish(x: &Tensor) -> Result<Tensor> {
    // softplus = max(x, 0) + ln(1 + e^{-|x|}) stays finite for large |x|.
    let sp = (x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    Ok((x * sp.tanh()?)?)
}

impl Regulator {
    pub fn load(w: &Weights, cfg: RegulatorConfig, faults: Faults) -> Result<Regulator> {
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
        model.push(Layer::Conv(Conv1d::load(&lr.pp(format!("model.{i}")), (c, c, 1), true, 0, 1, 1)?));
        let dims: Vec<usize> = std::iter::once(cfg.latent_dim).chain(cfg.latent_hidden.iter().copied()).chain(std::iter::once(cfg.in_channels)).collect();
        let latent = dims
            .windows(2)
            .enumerate()
            .map(|(k, p)| Linear::load(&w.pp(format!("gpt_layer.{k}")), p[0], p[1], true))
            .collect::<Result<Vec<_>>>()?;
        Ok(Regulator { content_in_proj: Linear::load(&lr.pp("content_in_proj"), cfg.in_channels, c, true)?, model, latent, cfg, faults })
    }

    fn group_norm(&self, x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
        let (bs, c, t) = x.dims3()?;
        let flat = if self.faults.on("groupnorm_per_channel") { x.clone() } else { x.reshape((bs, 1, c * t))? };
        let mean = flat.mean_keepdim(D::Minus1)?;
        let xc = flat.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let y = xc.broadcast_div(&(var + 1e-5)?.sqrt()?)?.reshape((bs, c, t))?;
        Ok(y.broadcast_mul(&w.reshape((1, c, 1))?)?.broadcast_add(&b.reshape((1, c, 1))?)?)
    }

    /// x `[B, T, in_channels]`, ylens `[B]` → `[B, max(ylens), channels]`, frames past each
    /// length zeroed. Taps `length_regulator.content_in_proj`, `length_regulator.model.i`.
    pub fn forward(&self, x: &Tensor, ylens: &[i64], ctx: &mut Ctx) -> Result<Tensor> {
        let (b, t, cin) = x.dims3().or_else(|_| input_err(format!("regulator x must be [B, T, {}], got {:?}", self.cfg.in_channels, x.dims())))?;
        if cin != self.cfg.in_channels || t == 0 || b == 0 {
            return input_err(format!("regulator x must be [B, T>0, {}], got {:?}", self.cfg.in_channels, x.dims()));
        }
        if ylens.len() != b || ylens.iter().any(|l| !(1..=1 << 20).contains(l)) {
            return input_err(format!("ylens must hold {b} lengths in 1..=2^20, got {ylens:?}"));
        }
        let t_out = ylens.iter().copied().max().unwrap_or(1) as usize;
        let h = ctx.block("length_regulator.content_in_proj", x, |x| self.content_in_proj.forward(x))?;
        let idx = Tensor::from_vec(nearest_indices(t, t_out, self.faults.on("interp_round")), t_out, x.device())?;
        let mut h = h.index_select(&idx, 1)?.transpose(1, 2)?.contiguous()?;
        for (i, layer) in self.model.iter().enumerate() {
            h = ctx.block(&format!("length_regulator.model.{i}"), &h, |x| match layer {
                Layer::Conv(c) => c.forward(x),
                Layer::GroupNorm { w, b } => self.group_norm(x, w, b),
                Layer::Mish => mish(x),
            })?;
        }
        let mask: Vec<f32> = ylens.iter().flat_map(|&l| (0..t_out).map(move |j| if (j as i64) < l { 1.0 } else { 0.0 })).collect();
        let mask = Tensor::from_vec(mask, (b, t_out, 1), x.device())?;
        Ok(h.transpose(1, 2)?.broadcast_mul(&mask)?)
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
