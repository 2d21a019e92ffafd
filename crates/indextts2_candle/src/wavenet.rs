//! The DiT's WaveNet post-net (`s2mel/modules/wavenet.py:WN`) built from encodec `SConv1d`s.
//!
//! Every conv is weight-normed (`conv.conv.weight_g/_v`) and pads **reflect** to keep the length
//! (SConv1d ignores the `padding=` its caller passes). Gated units `tanh(a[:H])·σ(a[H:])` with the
//! timestep condition added per layer from one wide `cond_layer` output.
use crate::ctx::Ctx;
use crate::error::Result;
use crate::nn::Conv1d;
use crate::store::Weights;
use candle_core::{Tensor, D};

/// encodec `pad1d(mode="reflect")`: inputs not longer than the pad are zero-extended on the right
/// first (so the reflection is defined) and that extension is cropped off afterwards.
pub fn reflect_pad(x: &Tensor, left: usize, right: usize) -> Result<Tensor> {
    if left == 0 && right == 0 {
        return Ok(x.clone());
    }
    let t = x.dim(D::Minus1)?;
    let m = left.max(right);
    let (x, extra) = if t <= m {
        let e = m - t + 1;
        let mut dims = x.dims().to_vec();
        let last = dims.len() - 1;
        dims[last] = e;
        let ext = x.narrow(D::Minus1, 0, 1)?.zeros_like()?.broadcast_as(dims)?;
        (Tensor::cat(&[x, &ext], last)?, e)
    } else {
        (x.clone(), 0)
    };
    let len = t + extra;
    let keep = left + len + right - extra;
    let idx: Vec<u32> = (0..keep)
        .map(|j| {
            let p = j as i64 - left as i64;
            let r = if p < 0 { -p } else if p >= len as i64 { 2 * (len as i64 - 1) - p } else { p };
            r as u32
        })
        .collect();
    let idx = Tensor::from_vec(idx, keep, x.device())?;
    Ok(x.contiguous()?.index_select(&idx, x.rank() - 1)?)
}

/// `SConv1d(norm="weight_norm")`, stride 1: pad (total - total/2, total/2) then a valid conv.
pub struct SConv1d {
    conv: Conv1d,
    left: usize,
    right: usize,
    zero_pad: bool,
}

impl SConv1d {
    pub fn load(w: &Weights, cin: usize, cout: usize, k: usize, dilation: usize, skip_fold: bool, zero_pad: bool) -> Result<SConv1d> {
        let total = (k - 1) * dilation;
        // The fault trusts the `padding=` WN passes, i.e. the conv's own zero padding.
        let conv_pad = if zero_pad { total / 2 } else { 0 };
        let conv = Conv1d::load_wn(&w.pp("conv.conv"), (cout, cin, k), true, conv_pad, dilation, skip_fold)?;
        Ok(SConv1d { conv, left: total - total / 2, right: total / 2, zero_pad })
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.zero_pad {
            return self.conv.forward(x);
        }
        self.conv.forward(&reflect_pad(x, self.left, self.right)?)
    }
}

pub struct WaveNet {
    hidden: usize,
    cond_layer: SConv1d,
    in_layers: Vec<SConv1d>,
    res_skip_layers: Vec<SConv1d>,
}

impl WaveNet {
    pub fn load(w: &Weights, hidden: usize, k: usize, dilation_rate: usize, n_layers: usize, skip_fold: bool, zero_pad: bool) -> Result<WaveNet> {
        let cond_layer = SConv1d::load(&w.pp("cond_layer"), hidden, 2 * hidden * n_layers, 1, 1, skip_fold, zero_pad)?;
        let mut in_layers = Vec::new();
        let mut res_skip_layers = Vec::new();
        for i in 0..n_layers {
            let dil = dilation_rate.pow(i as u32);
            in_layers.push(SConv1d::load(&w.pp(format!("in_layers.{i}")), hidden, 2 * hidden, k, dil, skip_fold, zero_pad)?);
            let out = if i + 1 < n_layers { 2 * hidden } else { hidden };
            res_skip_layers.push(SConv1d::load(&w.pp(format!("res_skip_layers.{i}")), hidden, out, 1, 1, skip_fold, zero_pad)?);
        }
        Ok(WaveNet { hidden, cond_layer, in_layers, res_skip_layers })
    }

    /// x `[B, H, T]`, mask `[B, 1, T]` (0/1), g `[B, H, 1]`. Taps `{prefix}.cond_layer`, then per
    /// layer i: `{prefix}.in_layers.i`, `{prefix}.acts.i` (the gated unit tanh·σ of in_layer + the
    /// cond slice), `{prefix}.res_skip_layers.i`, `{prefix}.x.i` (the residual update (x + res)·mask,
    /// all layers but the last). The skip sum and its mask belong to the caller's `{prefix}` tap.
    pub fn forward(&self, x: &Tensor, mask: &Tensor, g: &Tensor, ctx: &mut Ctx, prefix: &str) -> Result<Tensor> {
        let h = self.hidden;
        let n = self.in_layers.len();
        let g = ctx.block(&format!("{prefix}.cond_layer"), g, |g| self.cond_layer.forward(g))?;
        let mut x = x.clone();
        let mut output: Option<Tensor> = None;
        for i in 0..n {
            let a = ctx.block(&format!("{prefix}.in_layers.{i}"), &x, |x| self.in_layers[i].forward(x))?;
            let acts = ctx.block(&format!("{prefix}.acts.{i}"), &a, |a| {
                let a = a.broadcast_add(&g.narrow(1, 2 * h * i, 2 * h)?)?;
                Ok((crate::vact::tanh(&a.narrow(1, 0, h)?)? * crate::vact::sigmoid(&a.narrow(1, h, h)?)?)?)
            })?;
            let rs = ctx.block(&format!("{prefix}.res_skip_layers.{i}"), &acts, |a| self.res_skip_layers[i].forward(a))?;
            let skip = if i + 1 < n {
                x = ctx.block(&format!("{prefix}.x.{i}"), &x, |x| Ok((x + rs.narrow(1, 0, h)?)?.broadcast_mul(mask)?))?;
                rs.narrow(1, h, h)?
            } else {
                rs
            };
            output = Some(match output {
                Some(o) => (o + skip)?,
                None => skip,
            });
        }
        match output {
            Some(o) => Ok(o.broadcast_mul(mask)?),
            None => Ok(x.zeros_like()?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn reflect_matches_torch() {
        let d = Device::Cpu;
        let x = Tensor::new(&[[[1f32, 2., 3., 4.]]], &d).unwrap();
        let y = reflect_pad(&x, 2, 2).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(y, vec![3., 2., 1., 2., 3., 4., 3., 2.]);
        // T=2 ≤ pad: zero-extend to [1,2,0], reflect, crop the extension.
        let x = Tensor::new(&[[[1f32, 2.]]], &d).unwrap();
        let y = reflect_pad(&x, 2, 2).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(y, vec![0., 2., 1., 2., 0., 2.]);
    }
}
