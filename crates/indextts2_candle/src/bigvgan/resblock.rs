//! AMP resblocks. Taps below `resblocks.k`: the activations' leaves and each conv
//! (`convs1.j` / `convs2.j` for type "1", `convs.j` for type "2"). The residual adds are not inside
//! a leaf; they are never injected, so they show at the block's own tap.
use super::activation::{Activation1d, FilterFaults};
use super::{Activation, BigVganConfig, Resblock};
use crate::ctx::Ctx;
use crate::error::Result;
use crate::nn::Conv1d;
use crate::store::Weights;
use candle_core::Tensor;

/// What a block's loader needs besides its weights: the activation kind and the fault switches.
#[derive(Clone, Copy)]
pub struct BlockOpts {
    pub beta: bool,
    pub logscale: bool,
    pub skip_weight_norm: bool,
    pub filters: FilterFaults,
}

impl BlockOpts {
    pub fn activation(&self, w: &Weights, ch: usize) -> Result<Activation1d> {
        Activation1d::load(w, ch, self.beta, self.logscale, self.filters)
    }
    pub fn new(cfg: &BigVganConfig, skip_weight_norm: bool, snake_no_exp: bool, filters: FilterFaults) -> BlockOpts {
        BlockOpts {
            beta: cfg.activation == Activation::SnakeBeta,
            logscale: cfg.snake_logscale && !snake_no_exp,
            skip_weight_norm,
            filters,
        }
    }
}

fn wn_conv(w: &Weights, ch: usize, k: usize, d: usize, o: &BlockOpts) -> Result<Conv1d> {
    Conv1d::load_wn(w, (ch, ch, k), true, d * (k - 1) / 2, d, o.skip_weight_norm)
}

pub enum AmpBlock {
    /// AMPBlock1: per dilation d, x += convs2(act(convs1_d(act(x)))).
    One { convs1: Vec<Conv1d>, convs2: Vec<Conv1d>, acts: Vec<Activation1d> },
    /// AMPBlock2: per dilation d, x += convs_d(act(x)).
    Two { convs: Vec<Conv1d>, acts: Vec<Activation1d> },
}

impl AmpBlock {
    pub fn load(w: &Weights, kind: Resblock, ch: usize, k: usize, dil: &[usize], o: &BlockOpts) -> Result<AmpBlock> {
        let acts = |n: usize| -> Result<Vec<Activation1d>> {
            (0..n).map(|a| o.activation(&w.pp(format!("activations.{a}")), ch)).collect()
        };
        Ok(match kind {
            Resblock::One => AmpBlock::One {
                convs1: dil.iter().enumerate().map(|(j, &d)| wn_conv(&w.pp(format!("convs1.{j}")), ch, k, d, o)).collect::<Result<_>>()?,
                convs2: (0..dil.len()).map(|j| wn_conv(&w.pp(format!("convs2.{j}")), ch, k, 1, o)).collect::<Result<_>>()?,
                acts: acts(2 * dil.len())?,
            },
            Resblock::Two => AmpBlock::Two {
                convs: dil.iter().enumerate().map(|(j, &d)| wn_conv(&w.pp(format!("convs.{j}")), ch, k, d, o)).collect::<Result<_>>()?,
                acts: acts(dil.len())?,
            },
        })
    }

    /// The fault `weight_f16`: one conv's weight rounded to f16 and back at load.
    pub fn round_conv_to_f16(&mut self, list: &str, j: usize) -> Result<()> {
        let conv = match (self, list) {
            (AmpBlock::One { convs1, .. }, "convs1") => &mut convs1[j],
            (AmpBlock::One { convs2, .. }, "convs2") => &mut convs2[j],
            (AmpBlock::Two { convs, .. }, "convs") => &mut convs[j],
            _ => return crate::error::input_err(format!("no conv list `{list}` in this resblock")),
        };
        conv.w = conv.w.to_dtype(candle_core::DType::F16)?.to_dtype(conv.w.dtype())?;
        Ok(())
    }

    pub fn forward(&self, x: &Tensor, ctx: &mut Ctx, name: &str) -> Result<Tensor> {
        let mut x = x.clone();
        match self {
            AmpBlock::One { convs1, convs2, acts } => {
                for j in 0..convs1.len() {
                    let xt = acts[2 * j].forward(&x, ctx, &format!("{name}.activations.{}", 2 * j))?;
                    let xt = ctx.block(&format!("{name}.convs1.{j}"), &xt, |v| convs1[j].forward(v))?;
                    let xt = acts[2 * j + 1].forward(&xt, ctx, &format!("{name}.activations.{}", 2 * j + 1))?;
                    let xt = ctx.block(&format!("{name}.convs2.{j}"), &xt, |v| convs2[j].forward(v))?;
                    x = (xt + x)?;
                }
            }
            AmpBlock::Two { convs, acts } => {
                for j in 0..convs.len() {
                    let xt = acts[j].forward(&x, ctx, &format!("{name}.activations.{j}"))?;
                    x = (ctx.block(&format!("{name}.convs.{j}"), &xt, |v| convs[j].forward(v))? + x)?;
                }
            }
        }
        Ok(x)
    }
}
