//! The DiT backbone: gpt_fast's `Transformer` with AdaLN (`s2mel/modules/gpt_fast/model.py`).
//!
//! Leaf taps, in forward completion order (children before their parent), per layer `L` =
//! `estimator.transformer.layers.i`: `L.skip_in_linear` (U-ViT receivers), `L.attention_norm.
//! {project_layer, norm}`, `L.attention_norm`, `L.attention.{wqkv, apply_rotary_emb,
//! scaled_dot_product_attention, wo}`, `L.attention`, `L.ffn_norm.…`, `L.feed_forward.{w1, silu,
//! w3, w2}`, `L.feed_forward`, `L`; then `….transformer.norm.{project_layer, norm}`, `….norm`.
use crate::ctx::{Ctx, Faults};
use crate::error::Result;
use crate::nn::{softmax_last_dim, widen, Linear};
use crate::store::Weights;
use crate::transforms::split_fused;
use candle_core::{DType, Device, Tensor, D};

/// gpt_fast ModelArgs default FFN width: 2/3 of 4·dim rounded up to a multiple of 256.
pub fn intermediate_size(dim: usize) -> usize {
    let n = 2 * 4 * dim / 3;
    n.div_ceil(256) * 256
}

/// `AdaptiveLayerNorm(d, RMSNorm(d, eps))`: scale·RMSNorm(x) + bias, (scale, bias) = project_layer(c).
pub struct AdaLn {
    project: Linear,
    norm_w: Tensor,
    dim: usize,
    eps: f64,
    swapped: bool,
}

impl AdaLn {
    pub fn load(w: &Weights, dim: usize, eps: f64, swapped: bool) -> Result<AdaLn> {
        Ok(AdaLn { project: Linear::load(&w.pp("project_layer"), dim, 2 * dim, true)?, norm_w: w.pp("norm").get(dim, "weight")?, dim, eps, swapped })
    }
    /// x `[B, T, D]`, c `[B, 1, D]`; taps `{p}.project_layer` (input c) and `{p}.norm` (input x).
    pub fn forward(&self, x: &Tensor, c: &Tensor, ctx: &mut Ctx, p: &str) -> Result<Tensor> {
        let sb = ctx.block(&format!("{p}.project_layer"), c, |c| self.project.forward(c))?;
        let normed = ctx.block(&format!("{p}.norm"), x, |x| {
            if x.dtype() == DType::F32 {
                if let Some(y) = crate::norm::rms_norm(x, Some(&self.norm_w), self.eps)? {
                    return Ok(y); // CPU: one op per row, in f64, rounded once
                }
            }
            // normalised in f32 (gpt_fast's `x.float()`), rounded to x's dtype, then scaled
            let xf = widen(x)?;
            let ms = xf.sqr()?.mean_keepdim(D::Minus1)?;
            Ok(xf.broadcast_div(&(ms + self.eps)?.sqrt()?)?.to_dtype(x.dtype())?.broadcast_mul(&self.norm_w)?)
        })?;
        let (mut scale, mut bias) = (sb.narrow(D::Minus1, 0, self.dim)?, sb.narrow(D::Minus1, self.dim, self.dim)?);
        if self.swapped {
            std::mem::swap(&mut scale, &mut bias);
        }
        Ok(normed.broadcast_mul(&scale)?.broadcast_add(&bias)?)
    }
}

/// RoPE cos/sin `[1, T, 1, head_dim/2]` for the given positions, in f32 as gpt_fast computes them,
/// rounded to the model's dtype as gpt_fast casts its table, and applied in f32.
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
    halves: bool,
    /// the f32 CPU kernel (same products and sums as the tensor form, so the same bits)
    fused: Option<RopeOp>,
}

/// The rotation as one pass over `[B, T, H, D]` (strided views with a unit last stride read in
/// place, e.g. q/k of the fused wqkv output): per pair (x0, x1) and angle (c, s),
/// (x0·c − x1·s, x1·c + x0·s), each product rounded, as the tensor form's broadcast ops do.
struct RopeOp {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
    halves: bool,
}

impl candle_core::CustomOp1 for RopeOp {
    fn name(&self) -> &'static str {
        "rope"
    }
    fn cpu_fwd(&self, s: &candle_core::CpuStorage, l: &candle_core::Layout) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let candle_core::CpuStorage::F32(x) = s else { candle_core::bail!("rope: f32 only") };
        let (b, t, h, d) = l.shape().dims4()?;
        let st = l.stride();
        if d != 2 * self.half || st[3] != 1 || t * self.half > self.cos.len() {
            candle_core::bail!("rope: x {:?} (strides {st:?}) does not fit a table of {} x {}", l.dims(), self.cos.len() / self.half, self.half)
        }
        let x0 = l.start_offset();
        let mut out: Vec<f32> = Vec::with_capacity(b * t * h * d);
        let dst = crate::nn::SendPtr(out.as_mut_ptr());
        let (half, halves) = (self.half, self.halves);
        let work = |rows: std::ops::Range<usize>| {
            for r in rows {
                let (bi, ti) = (r / t, r % t);
                let (c, sn) = (&self.cos[ti * half..][..half], &self.sin[ti * half..][..half]);
                for hi in 0..h {
                    let xr = &x[x0 + bi * st[0] + ti * st[1] + hi * st[2]..][..d];
                    // SAFETY: row (bi, ti, hi) of `out`'s capacity, written by this unit only
                    let y = unsafe { std::slice::from_raw_parts_mut(dst.get().add(((bi * t + ti) * h + hi) * d), d) };
                    for i in 0..half {
                        let (a, bb) = if halves { (xr[i], xr[i + half]) } else { (xr[2 * i], xr[2 * i + 1]) };
                        let (o0, o1) = (a * c[i] - bb * sn[i], bb * c[i] + a * sn[i]);
                        if halves {
                            (y[i], y[i + half]) = (o0, o1);
                        } else {
                            (y[2 * i], y[2 * i + 1]) = (o0, o1);
                        }
                    }
                }
            }
        };
        if b * t * h * d > 1 << 15 {
            candle_core::utils::barrier_pool().execute_chunked(b * t, work);
        } else {
            work(0..b * t);
        }
        // SAFETY: every (b, t, h) row was written in full above
        unsafe { out.set_len(b * t * h * d) };
        Ok((candle_core::CpuStorage::F32(out), candle_core::Shape::from((b, t, h, d))))
    }
}

impl Rope {
    pub fn new(positions: &[i64], head_dim: usize, base: f64, halves: bool, dtype: DType, dev: &Device) -> Result<Rope> {
        let half = head_dim / 2;
        let freqs: Vec<f32> = (0..half).map(|i| 1.0f32 / (base as f32).powf((2 * i) as f32 / head_dim as f32)).collect();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            for &f in &freqs {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        let t = positions.len();
        let shape = (1, t, 1, half);
        let table = |v: Vec<f32>| -> Result<Tensor> { widen(&Tensor::from_vec(v, shape, dev)?.to_dtype(dtype)?) };
        let fused = (dtype == DType::F32 && dev.is_cpu()).then(|| RopeOp { cos: cos.clone(), sin: sin.clone(), half, halves });
        Ok(Rope { cos: table(cos)?, sin: table(sin)?, halves, fused })
    }
    /// x `[B, T, H, D]`: rotates the interleaved pairs (2i, 2i+1); in f32 for a half-precision x
    /// (gpt_fast's `x.float()`), returned in x's dtype.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        if let (Some(op), DType::F32, true) = (&self.fused, x.dtype(), x.device().is_cpu()) {
            let x = if x.layout().stride()[3] == 1 { x.clone() } else { x.contiguous()? };
            return Ok(x.apply_op1_no_bwd(op)?);
        }
        Ok(self.apply_wide(&widen(x)?)?.to_dtype(x.dtype())?)
    }
    fn apply_wide(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, h, d) = x.dims4()?;
        if self.halves {
            let x0 = x.narrow(3, 0, d / 2)?;
            let x1 = x.narrow(3, d / 2, d / 2)?;
            let o0 = (x0.broadcast_mul(&self.cos)? - x1.broadcast_mul(&self.sin)?)?;
            let o1 = (x1.broadcast_mul(&self.cos)? + x0.broadcast_mul(&self.sin)?)?;
            return Ok(Tensor::cat(&[o0, o1], 3)?);
        }
        let xs = x.reshape((b, t, h, d / 2, 2))?;
        let x0 = xs.narrow(4, 0, 1)?.squeeze(4)?;
        let x1 = xs.narrow(4, 1, 1)?.squeeze(4)?;
        let o0 = (x0.broadcast_mul(&self.cos)? - x1.broadcast_mul(&self.sin)?)?;
        let o1 = (x1.broadcast_mul(&self.cos)? + x0.broadcast_mul(&self.sin)?)?;
        Ok(Tensor::stack(&[o0, o1], 4)?.reshape((b, t, h, d))?)
    }
}

struct Attention {
    wqkv: Linear,
    wo: Linear,
    n_head: usize,
    dim: usize,
    wrong_order: bool,
    scale_by_dim: bool,
}

impl Attention {
    /// Taps `{p}.wqkv`, `{p}.apply_rotary_emb` (q), `{p}.scaled_dot_product_attention` (input: the
    /// rotated q; k is rotated inside from the wqkv output), `{p}.wo`.
    fn forward(&self, x: &Tensor, rope: &Rope, mask: Option<&Tensor>, ctx: &mut Ctx, p: &str) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let hd = self.dim / self.n_head;
        let qkv = ctx.block(&format!("{p}.wqkv"), x, |x| self.wqkv.forward(x))?;
        let parts = split_fused(&qkv, 2, &[self.dim, self.dim, self.dim])?;
        let (q, k, v) = if self.wrong_order { (&parts[2], &parts[1], &parts[0]) } else { (&parts[0], &parts[1], &parts[2]) };
        let q = ctx.block(&format!("{p}.apply_rotary_emb"), &q.reshape((b, t, self.n_head, hd))?, |q| rope.apply(q))?;
        let y = ctx.block(&format!("{p}.scaled_dot_product_attention"), &q, |q| {
            let d = if self.scale_by_dim { self.dim } else { hd };
            let (k, v) = (rope.apply(&k.reshape((b, t, self.n_head, hd))?)?, v.reshape((b, t, self.n_head, hd))?);
            if let Some(y) = crate::dense::attention(q, &k, &v, mask, 1.0 / (d as f64).sqrt())? {
                return Ok(y);
            }
            // the tensor form (devices and dtypes the fused pass does not take)
            let (q, k, v) = (q.transpose(1, 2)?.contiguous()?, k.transpose(1, 2)?.contiguous()?, v.transpose(1, 2)?.contiguous()?);
            let mut s = (q.matmul(&k.t()?)? * (1.0 / (d as f64).sqrt()))?;
            if let Some(m) = mask {
                s = s.broadcast_add(m)?;
            }
            let pr = softmax_last_dim(&s)?;
            Ok(pr.matmul(&v)?.transpose(1, 2)?.reshape((b, t, self.dim))?)
        })?;
        ctx.block(&format!("{p}.wo"), &y, |y| self.wo.forward(y))
    }
}

struct FeedForward {
    w1: Linear,
    w2: Linear,
    w3: Linear,
    swish_beta: Option<f64>,
}

impl FeedForward {
    /// w2(silu(w1 x)·w3 x); taps w1, silu, w3, w2 (whose input is the SiLU: the gate product is in it).
    fn forward(&self, x: &Tensor, ctx: &mut Ctx, p: &str) -> Result<Tensor> {
        let a = ctx.block(&format!("{p}.w1"), x, |x| self.w1.forward(x))?;
        let s = ctx.block(&format!("{p}.silu"), &a, |a| match self.swish_beta {
            Some(beta) => Ok((a * crate::vact::sigmoid(&a.affine(beta, 0.0)?)?)?),
            None => Ok(crate::vact::silu(a)?),
        })?;
        let g = ctx.block(&format!("{p}.w3"), x, |x| self.w3.forward(x))?;
        ctx.block(&format!("{p}.w2"), &s, |s| self.w2.forward(&(s * &g)?))
    }
}

pub struct Block {
    attention: Attention,
    feed_forward: FeedForward,
    attention_norm: AdaLn,
    ffn_norm: AdaLn,
    skip_in_linear: Option<Linear>,
}

/// The block-level switches a [`Block`] is built with.
pub struct BlockSpec {
    pub dim: usize,
    pub n_head: usize,
    pub eps: f64,
    pub uvit: bool,
}

impl Block {
    pub fn load(w: &Weights, s: &BlockSpec, faults: &Faults) -> Result<Block> {
        let d = s.dim;
        let inter = intermediate_size(d);
        let a = w.pp("attention");
        let ff = w.pp("feed_forward");
        let sw = faults.on("adaln_swapped");
        Ok(Block {
            attention: Attention {
                wqkv: Linear::load(&a.pp("wqkv"), d, 3 * d, false)?,
                wo: Linear::load(&a.pp("wo"), d, d, false)?,
                n_head: s.n_head,
                dim: d,
                wrong_order: faults.on("wqkv_split_order"),
                scale_by_dim: faults.on("softmax_scale_dim"),
            },
            feed_forward: FeedForward {
                w1: Linear::load(&ff.pp("w1"), d, inter, false)?,
                w2: Linear::load(&ff.pp("w2"), inter, d, false)?,
                w3: Linear::load(&ff.pp("w3"), d, inter, false)?,
                swish_beta: faults.on("ffn_swish_beta").then_some(1.702),
            },
            attention_norm: AdaLn::load(&w.pp("attention_norm"), d, s.eps, sw)?,
            ffn_norm: AdaLn::load(&w.pp("ffn_norm"), d, s.eps, sw)?,
            // stored for every layer when U-ViT is on (official), used by the receivers only
            skip_in_linear: if s.uvit { Some(Linear::load(&w.pp("skip_in_linear"), 2 * d, d, true)?) } else { None },
        })
    }

    /// One layer `p` (its own tap is the caller's): x `[B, T, D]`, c `[B, 1, D]`.
    pub fn forward(&self, x: &Tensor, c: &Tensor, rope: &Rope, mask: Option<&Tensor>, skip: Option<&Tensor>, ctx: &mut Ctx, p: &str) -> Result<Tensor> {
        let x = match (skip, &self.skip_in_linear) {
            (Some(s), Some(l)) => ctx.block(&format!("{p}.skip_in_linear"), x, |x| l.forward(&Tensor::cat(&[x, s], D::Minus1)?))?,
            _ => x.clone(),
        };
        let an = format!("{p}.attention_norm");
        let a = ctx.nest(&an, &x, |ctx, x| self.attention_norm.forward(x, c, ctx, &an))?;
        let at = format!("{p}.attention");
        let h = (&x + ctx.nest(&at, &a, |ctx, a| self.attention.forward(a, rope, mask, ctx, &at))?)?;
        let fnn = format!("{p}.ffn_norm");
        let n = ctx.nest(&fnn, &h, |ctx, h| self.ffn_norm.forward(h, c, ctx, &fnn))?;
        let ffp = format!("{p}.feed_forward");
        Ok((&h + ctx.nest(&ffp, &n, |ctx, n| self.feed_forward.forward(n, ctx, &ffp))?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused rotation gives the tensor form's bits, for both pair layouts, on a strided view
    /// (q of a fused projection) and on a contiguous tensor.
    #[test]
    fn fused_rope_equals_the_tensor_form() -> Result<()> {
        let dev = Device::Cpu;
        let (b, t, h, d) = (2, 37, 3, 8);
        let positions: Vec<i64> = (0..t as i64).collect();
        let fused = Tensor::randn(0f32, 1.0, (b, t, 3 * h, d), &dev)?;
        let q = fused.narrow(2, h, h)?; // strided [B, T, H, D] with a unit last stride
        assert!(!q.is_contiguous() && q.layout().stride()[3] == 1);
        for halves in [false, true] {
            let rope = Rope::new(&positions, d, 10_000.0, halves, DType::F32, &dev)?;
            assert!(rope.fused.is_some());
            for x in [q.clone(), q.contiguous()?] {
                let got = rope.apply(&x)?.flatten_all()?.to_vec1::<f32>()?;
                let want = rope.apply_wide(&x)?.flatten_all()?.to_vec1::<f32>()?;
                assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "halves {halves}");
            }
        }
        Ok(())
    }
}
