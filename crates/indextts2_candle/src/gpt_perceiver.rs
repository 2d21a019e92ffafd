//! Perceiver resampler (`perceiver_encoder`, `emo_perceiver_encoder`): latents attend over
//! cat(latents, context), fused `to_kv` split into K‖V at load, GEGLU feed-forward, RMS-style norm.
use crate::ctx::{Ctx, Faults};
use crate::error::{input_err, Result};
use crate::gpt_conformer::fill_masked;
use crate::nn::Linear;
use crate::store::Weights;
use crate::transforms::split_fused;
use candle_core::{DType, Tensor, D};

struct Layer {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    ff_in: Linear,
    ff_out: Linear,
    ff_inner: usize,
}

pub struct Perceiver {
    name: String,
    dim: usize,
    heads: usize,
    dim_head: usize,
    proj_context: Linear,
    latents: Tensor, // [N, dim]
    layers: Vec<Layer>,
    gamma: Tensor,
    geglu_swapped: bool,
}

impl Perceiver {
    #[allow(clippy::too_many_arguments)]
    pub fn load(w: &Weights, dim: usize, depth: usize, dim_context: usize, num_latents: usize, dim_head: usize, heads: usize, ff_mult: usize, faults: &Faults) -> Result<Self> {
        let inner = dim_head * heads;
        let ff_inner = dim * ff_mult * 2 / 3; // int(dim·mult·2/3)
        let mut layers = Vec::new();
        for i in 0..depth {
            let a = w.pp(format!("layers.{i}.0"));
            let kv = a.pp("to_kv").get((2 * inner, dim), "weight")?;
            let mut kv = split_fused(&kv, 0, &[inner, inner])?; // rows: K then V
            if faults.on("to_kv_swapped") {
                kv.swap(0, 1);
            }
            let v = kv.pop();
            let k = kv.pop();
            let (Some(k), Some(v)) = (k, v) else { return input_err("to_kv split failed") };
            let f = w.pp(format!("layers.{i}.1"));
            layers.push(Layer {
                to_q: Linear::load(&a.pp("to_q"), dim, inner, false)?,
                to_k: Linear::from_tensors(k, None),
                to_v: Linear::from_tensors(v, None),
                to_out: Linear::load(&a.pp("to_out"), inner, dim, false)?,
                ff_in: Linear::load(&f.pp("0"), dim, 2 * ff_inner, true)?,
                ff_out: Linear::load(&f.pp("2"), ff_inner, dim, true)?,
                ff_inner,
            });
        }
        Ok(Perceiver {
            name: w.prefix().to_string(),
            dim,
            heads,
            dim_head,
            proj_context: Linear::load(&w.pp("proj_context"), dim_context, dim, true)?,
            latents: w.get((num_latents, dim), "latents")?,
            layers,
            gamma: w.pp("norm").get(dim, "gamma")?,
            geglu_swapped: faults.on("geglu_swapped"),
        })
    }

    fn layer(&self, l: &Layer, lat: &Tensor, ctxt: &Tensor, keep: &Tensor) -> Result<Tensor> {
        let (b, n, _) = lat.dims3()?;
        let all = Tensor::cat(&[lat, ctxt], 1)?;
        let s = all.dim(1)?;
        let heads = |z: Tensor, len: usize| -> Result<Tensor> {
            Ok(z.reshape((b, len, self.heads, self.dim_head))?.transpose(1, 2)?.contiguous()?)
        };
        let q = heads(l.to_q.forward(lat)?, n)?;
        let k = heads(l.to_k.forward(&all)?, s)?;
        let v = heads(l.to_v.forward(&all)?, s)?;
        let sim = (q.matmul(&k.t()?)? * (self.dim_head as f64).powf(-0.5))?;
        let sim = fill_masked(&sim, &keep.reshape((b, 1, 1, s))?, -f32::MAX)?;
        let attn = candle_nn::ops::softmax_last_dim(&sim)?;
        let o = attn.matmul(&v)?.transpose(1, 2)?.reshape((b, n, self.heads * self.dim_head))?;
        let lat = (l.to_out.forward(&o)? + lat)?;
        let h = l.ff_in.forward(&lat)?;
        let (mut x, mut gate) = (h.narrow(D::Minus1, 0, l.ff_inner)?, h.narrow(D::Minus1, l.ff_inner, l.ff_inner)?);
        if self.geglu_swapped {
            std::mem::swap(&mut x, &mut gate);
        }
        let ff = l.ff_out.forward(&(gate.gelu_erf()? * x)?)?;
        Ok((ff + lat)?)
    }

    /// context [B, T, dim_context], keep [B, T] u8 (key mask of the context) → [B, N, dim].
    pub fn forward(&self, context: &Tensor, keep: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let (b, t, _) = context.dims3()?;
        if keep.dims() != [b, t] {
            return input_err(format!("{}: mask {:?} does not match context {:?}", self.name, keep.dims(), context.dims()));
        }
        let n = self.latents.dim(0)?;
        // The latents are always attendable: pad the mask with N leading ones.
        let lead = Tensor::from_vec(vec![1u8; b * n], (b, n), keep.device())?;
        let keep = Tensor::cat(&[&lead, &keep.to_dtype(DType::U8)?], 1)?;
        let x = ctx.block(&format!("{}.proj_context", self.name), context, |x| self.proj_context.forward(x))?;
        let mut lat = self.latents.unsqueeze(0)?.broadcast_as((b, n, self.dim))?.contiguous()?;
        for (i, l) in self.layers.iter().enumerate() {
            lat = ctx.block(&format!("{}.layers.{i}", self.name), &lat, |y| self.layer(l, y, &x, &keep))?;
        }
        ctx.block(&format!("{}.norm", self.name), &lat, |y| {
            // F.normalize(x, dim=-1) = x / max(‖x‖, 1e-12)
            let norm = y.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12f32, f32::MAX)?;
            Ok(y.broadcast_div(&norm)?.affine((self.dim as f64).sqrt(), 0.0)?.broadcast_mul(&self.gamma)?)
        })
    }
}
