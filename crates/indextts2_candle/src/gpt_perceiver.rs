//! Perceiver resampler (`perceiver_encoder`, `emo_perceiver_encoder`): latents attend over
//! cat(latents, context), fused `to_kv` chunked into K‖V, GEGLU feed-forward, RMS-style norm.
//! Taps as reference/gpt_perceiver.py: proj_context, latents, per layer `0.to_q`, `0.to_kv` (with
//! the cat), `0.attend` (input q, heads split/merged inside), `0.to_out`, `1.0`, `1.1`, `1.2`, the
//! layer (both residual adds), `norm`, and the whole resampler.
use crate::ctx::{Ctx, Faults};
use crate::error::{input_err, Result};
use crate::gpt_conformer::fill_masked;
use crate::nn::Linear;
use crate::store::Weights;
use candle_core::{DType, Tensor, D};

struct Layer {
    to_q: Linear,
    to_kv: Linear,
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
    scale: f64,
    proj_context: Option<Linear>, // nn.Identity when dim_context == dim
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
            let mut kv = a.pp("to_kv").get((2 * inner, dim), "weight")?; // rows: K then V
            if faults.on("to_kv_swapped") {
                kv = Tensor::cat(&[kv.narrow(0, inner, inner)?, kv.narrow(0, 0, inner)?], 0)?;
            }
            let f = w.pp(format!("layers.{i}.1"));
            layers.push(Layer {
                to_q: Linear::load(&a.pp("to_q"), dim, inner, false)?,
                to_kv: Linear::from_tensors(kv, None),
                to_out: Linear::load(&a.pp("to_out"), inner, dim, false)?,
                ff_in: Linear::load(&f.pp("0"), dim, 2 * ff_inner, true)?,
                ff_out: Linear::load(&f.pp("2"), ff_inner, dim, true)?,
                ff_inner,
            });
        }
        // sim · dim_head^-0.5; the fault scales by the model width instead
        let scale = if faults.on("perceiver_scale_dim") { (dim as f64).powf(-0.5) } else { (dim_head as f64).powf(-0.5) };
        Ok(Perceiver {
            name: w.prefix().to_string(),
            dim,
            heads,
            dim_head,
            scale,
            proj_context: if dim_context == dim { None } else { Some(Linear::load(&w.pp("proj_context"), dim_context, dim, true)?) },
            latents: w.get((num_latents, dim), "latents")?,
            layers,
            gamma: w.pp("norm").get(dim, "gamma")?,
            geglu_swapped: faults.on("geglu_swapped"),
        })
    }

    /// `Attend` with the head split / merge around it: q [B, N, inner], kv [B, S, 2·inner].
    fn attend(&self, q: &Tensor, kv: &Tensor, keep: &Tensor) -> Result<Tensor> {
        let (b, n, inner) = q.dims3()?;
        let s = kv.dim(1)?;
        let heads = |z: &Tensor, len: usize| -> Result<Tensor> {
            Ok(z.reshape((b, len, self.heads, self.dim_head))?.transpose(1, 2)?.contiguous()?)
        };
        let q = heads(q, n)?;
        let k = heads(&kv.narrow(D::Minus1, 0, inner)?, s)?;
        let v = heads(&kv.narrow(D::Minus1, inner, inner)?, s)?;
        let sim = (q.matmul(&k.t()?)? * self.scale)?;
        let sim = fill_masked(&sim, &keep.reshape((b, 1, 1, s))?, -f32::MAX)?;
        let attn = crate::nn::softmax_last_dim(&sim)?;
        Ok(attn.matmul(&v)?.transpose(1, 2)?.reshape((b, n, inner))?)
    }

    fn layer(&self, l: &Layer, lat: &Tensor, ctxt: &Tensor, keep: &Tensor, c: &mut Ctx, n: &str) -> Result<Tensor> {
        let q = c.block(&format!("{n}.0.to_q"), lat, |x| l.to_q.forward(x))?;
        let kv = c.block(&format!("{n}.0.to_kv"), lat, |x| l.to_kv.forward(&Tensor::cat(&[x, ctxt], 1)?))?;
        let o = c.block(&format!("{n}.0.attend"), &q, |q| self.attend(q, &kv, keep))?;
        let a = c.block(&format!("{n}.0.to_out"), &o, |o| l.to_out.forward(o))?;
        let lat = (a + lat)?;
        let h = c.block(&format!("{n}.1.0"), &lat, |x| l.ff_in.forward(x))?;
        let h = c.block(&format!("{n}.1.1"), &h, |h| {
            let (mut x, mut gate) = (h.narrow(D::Minus1, 0, l.ff_inner)?, h.narrow(D::Minus1, l.ff_inner, l.ff_inner)?);
            if self.geglu_swapped {
                std::mem::swap(&mut x, &mut gate);
            }
            Ok((crate::vact::gelu_erf(&gate)? * x)?) // GEGLU: exact gelu of the second half
        })?;
        let ff = c.block(&format!("{n}.1.2"), &h, |h| l.ff_out.forward(h))?;
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
        let name = &self.name;
        ctx.nest(name, context, |c, context| {
            let x = c.block(&format!("{name}.proj_context"), context, |x| match &self.proj_context {
                Some(p) => p.forward(x),
                None => Ok(x.clone()),
            })?;
            let mut lat = c.block(&format!("{name}.latents"), &self.latents, |p| {
                Ok(p.unsqueeze(0)?.broadcast_as((b, n, self.dim))?.contiguous()?)
            })?;
            for (i, l) in self.layers.iter().enumerate() {
                let ln = format!("{name}.layers.{i}");
                lat = c.nest(&ln, &lat, |c, y| self.layer(l, y, &x, &keep, c, &ln))?;
            }
            c.block(&format!("{name}.norm"), &lat, |y| {
                // F.normalize(x, dim=-1) = x / max(‖x‖, 1e-12); torch's norm of a half tensor
                // accumulates in f32 and rounds once (an f16 sum of 1280 squares: ratio 7.7 / 8.7)
                let norm = y.to_dtype(DType::F32)?.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.to_dtype(y.dtype())?;
                let norm = norm.clamp(1e-12f32, f32::MAX)?;
                Ok(y.broadcast_div(&norm)?.affine((self.dim as f64).sqrt(), 0.0)?.broadcast_mul(&self.gamma)?)
            })
        })
    }
}
