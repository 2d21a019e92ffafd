//! The 8-weight emotion vector of IndexTTS2 (`infer_v2.py`, `emo_vector` branch): `feat1.pt` =
//! speaker prototypes `spk_matrix` [Σemo_num, style_dim], `feat2.pt` = emotion prototypes
//! `emo_matrix` [Σemo_num, model_dim], both split into the 8 emotion groups by `emo_num`.
//!
//! For group i the row is the argmax of cosine(style, spk_matrixᵢ); then
//! `emovec = Σ wᵢ · emo_matrixᵢ[rowᵢ] + (1 − Σ w) · emovec`.
//! Converted keys: `spk_matrix`, `emo_matrix` (the two bare-tensor files, renamed on conversion).
use crate::ctx::{Ctx, Faults};
use crate::error::{input_err, Result};
use crate::store::Weights;
use candle_core::{DType, Tensor};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmotionConfig {
    /// rows per emotion (official `[3,17,2,8,4,5,10,24]`: happy … calm)
    pub emo_num: Vec<usize>,
    pub style_dim: usize,
    pub model_dim: usize,
}

pub const FAULTS: &[&str] = &[
    "dot_not_cosine",   // row chosen by the raw dot product instead of the cosine similarity
    "residual_dropped", // emovec = Σ wᵢ·emoᵢ only (the commented-out official line)
];

pub struct EmotionMatrices {
    cfg: EmotionConfig,
    spk: Tensor,
    emo: Tensor,
    faults: Faults,
}

/// torch `F.cosine_similarity(q [1,S], m [n,S], dim=1)`: q·m / (max(‖q‖, ε)·max(‖m‖, ε)), ε = 1e-8.
fn cosine_rows(q: &Tensor, m: &Tensor) -> Result<Vec<f32>> {
    let eps = 1e-8f64;
    let dot = m.matmul(&q.t()?)?.squeeze(1)?;
    let qn = q.sqr()?.sum_all()?.sqrt()?.maximum(eps)?;
    let mn = m.sqr()?.sum(1)?.sqrt()?.maximum(eps)?;
    Ok(dot.broadcast_div(&mn)?.broadcast_div(&qn)?.to_vec1::<f32>()?)
}

fn argmax(v: &[f32]) -> usize {
    // first maximum, as torch.argmax
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

impl EmotionMatrices {
    pub fn load(w: &Weights, cfg: EmotionConfig, faults: Faults) -> Result<EmotionMatrices> {
        let n: usize = cfg.emo_num.iter().sum();
        if cfg.emo_num.is_empty() || cfg.emo_num.contains(&0) {
            return input_err(format!("emotion config: emo_num {:?} must be non-empty with no zero group", cfg.emo_num));
        }
        let spk = w.get((n, cfg.style_dim), "spk_matrix")?;
        let emo = w.get((n, cfg.model_dim), "emo_matrix")?;
        Ok(EmotionMatrices { cfg, spk, emo, faults })
    }

    pub fn groups(&self) -> usize {
        self.cfg.emo_num.len()
    }

    /// style `[1, style_dim]`, emovec `[1, model_dim]`, weights `[groups]` → (emovec `[1, model_dim]`, rows `[groups]` i64).
    pub fn mix(&self, style: &Tensor, emovec: &Tensor, weights: &Tensor, _ctx: &mut Ctx) -> Result<(Tensor, Tensor)> {
        let g = self.groups();
        if style.dims() != [1, self.cfg.style_dim] || emovec.dims() != [1, self.cfg.model_dim] || weights.dims() != [g] {
            return input_err(format!(
                "emotion mix: style [1,{}], emovec [1,{}], weights [{g}] expected; got {:?}, {:?}, {:?}",
                self.cfg.style_dim, self.cfg.model_dim, style.dims(), emovec.dims(), weights.dims()
            ));
        }
        let dev = emovec.device();
        let style = style.to_dtype(DType::F32)?;
        let w = weights.to_dtype(DType::F32)?;
        let (mut rows, mut local) = (Vec::with_capacity(g), Vec::with_capacity(g));
        let mut start = 0;
        for &n in &self.cfg.emo_num {
            let block = self.spk.narrow(0, start, n)?;
            let score = if self.faults.on("dot_not_cosine") {
                block.matmul(&style.t()?)?.squeeze(1)?.to_vec1::<f32>()?
            } else {
                cosine_rows(&style, &block)?
            };
            let best = argmax(&score);
            rows.push((start + best) as u32);
            local.push(best as i64); // the row within its emotion group, as infer_v2's index
            start += n;
        }
        let picked = self.emo.index_select(&Tensor::new(rows.as_slice(), dev)?, 0)?; // [g, D]
        let mixed = w.unsqueeze(0)?.matmul(&picked)?; // Σ wᵢ·emoᵢ [1, D]
        let out = if self.faults.on("residual_dropped") {
            mixed
        } else {
            let rest = 1.0 - w.sum_all()?.to_scalar::<f32>()? as f64;
            (mixed + (emovec * rest)?)?
        };
        Ok((out, Tensor::new(local.as_slice(), dev)?))
    }
}

/// infer_v2: with an emotion vector, `emo_alpha` clamped to [0, 1] scales the weights, each truncated
/// to 4 decimals (`int(x·s·10000)/10000`); at exactly 1 they are used as given.
pub fn scale_weights(weights: &[f32], emo_alpha: f32) -> Vec<f32> {
    let s = (emo_alpha as f64).clamp(0.0, 1.0);
    if s == 1.0 {
        return weights.to_vec();
    }
    weights.iter().map(|&x| ((x as f64 * s * 10000.0).trunc() / 10000.0) as f32).collect()
}
