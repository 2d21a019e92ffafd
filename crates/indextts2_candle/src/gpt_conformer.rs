//! WeNet Conformer encoder of the GPT conditioning paths (`conditioning_encoder`,
//! `emo_conditioning_encoder`): conv2d2 subsampling + flatten Linear, x·√d with the absolute `pe`
//! table fed to a rel-pos attention that has no rel_shift, GLU conv module, pre-norm blocks.
//!
//! Taps are the reference's (reference/gpt_conformer.py), same names, same layouts, same order.
use crate::ctx::{Ctx, Faults};
use crate::error::{input_err, Result};
use crate::nn::{LayerNorm, Linear};
use crate::store::Weights;
use candle_core::{DType, Tensor};

pub use crate::gpt_config::ConformerCfg;

/// Every Conformer LayerNorm (norm_*, conv_module.norm, after_norm) uses eps 1e-5 officially.
const LN_EPS: f64 = 1e-5;
/// The `conv_norm_eps` fault on `conv_module.norm` (built without an explicit eps officially, so
/// nn.LayerNorm's 1e-5): upstream WeNet's 1e-12.
const LN_EPS_FAULT: f64 = 1e-12;
/// The `ff_swish_beta` fault: Swish-β x·σ(βx) with β = 1.702 instead of SiLU (β = 1).
const SWISH_BETA_FAULT: f64 = 1.702;

/// A `[out, in, 1]` conv weight used as a Linear over the last dim.
fn pointwise(w: &Weights, out: usize, inp: usize) -> Result<Linear> {
    let weight = w.get((out, inp, 1), "weight")?.reshape((out, inp))?;
    Ok(Linear::from_tensors(weight, Some(w.get(out, "bias")?)))
}

/// `masked_fill(~mask, value)` with a u8 keep-mask broadcast over `x`.
pub(crate) fn fill_masked(x: &Tensor, keep: &Tensor, value: f32) -> Result<Tensor> {
    let keep = keep.broadcast_as(x.shape())?;
    let fill = Tensor::full(value, x.shape(), x.device())?.to_dtype(x.dtype())?;
    Ok(keep.where_cond(x, &fill)?)
}

struct RelAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    pos: Linear,
    bias_u: Tensor, // [H, dk]
    bias_v: Option<Tensor>,
    h: usize,
    dk: usize,
    scale: f64,
}

impl RelAttention {
    fn load(w: &Weights, d: usize, h: usize, faults: &Faults) -> Result<Self> {
        let dk = d / h;
        let bias_v = w.get((h, dk), "pos_bias_v")?;
        // scores / √d_k; the fault divides by √d_model
        let scale = if faults.on("conformer_scale_d_model") { (d as f64).sqrt() } else { (dk as f64).sqrt() };
        Ok(RelAttention {
            q: Linear::load(&w.pp("linear_q"), d, d, true)?,
            k: Linear::load(&w.pp("linear_k"), d, d, true)?,
            v: Linear::load(&w.pp("linear_v"), d, d, true)?,
            out: Linear::load(&w.pp("linear_out"), d, d, true)?,
            pos: Linear::load(&w.pp("linear_pos"), d, d, false)?,
            bias_u: w.get((h, dk), "pos_bias_u")?,
            bias_v: if faults.on("pos_bias_v_dropped") { None } else { Some(bias_v) },
            h,
            dk,
            scale,
        })
    }

    /// Scores + masked softmax + A·V, heads split / merged (tap `forward_attention`, input q [B, T, d]).
    fn core(&self, q: &Tensor, k: &Tensor, v: &Tensor, p: &Tensor, keep: &Tensor) -> Result<Tensor> {
        let (b, t, _) = q.dims3()?;
        let heads = |z: &Tensor, n: usize| -> Result<Tensor> { Ok(z.reshape((n, t, self.h, self.dk))?.transpose(1, 2)?.contiguous()?) };
        let q = q.reshape((b, t, self.h, self.dk))?;
        let (k, v, p) = (heads(k, b)?, heads(v, b)?, heads(p, 1)?);
        let qu = q.broadcast_add(&self.bias_u)?.transpose(1, 2)?.contiguous()?;
        let qv = match &self.bias_v {
            Some(bv) => q.broadcast_add(bv)?,
            None => q,
        }
        .transpose(1, 2)?
        .contiguous()?;
        let ac = qu.matmul(&k.t()?)?;
        let bd = qv.broadcast_matmul(&p.t()?)?;
        let scores = ((ac + bd)? / self.scale)?;
        let scores = fill_masked(&scores, keep, f32::NEG_INFINITY)?;
        let attn = fill_masked(&crate::nn::softmax_last_dim(&scores)?, keep, 0.0)?;
        Ok(attn.matmul(&v)?.transpose(1, 2)?.reshape((b, t, self.h * self.dk))?)
    }

    /// x [B, T, d], keep [B, 1, 1, T] u8, pos [1, T, d].
    fn forward(&self, x: &Tensor, keep: &Tensor, pos: &Tensor, ctx: &mut Ctx, name: &str) -> Result<Tensor> {
        let q = ctx.block(&format!("{name}.linear_q"), x, |x| self.q.forward(x))?;
        let k = ctx.block(&format!("{name}.linear_k"), x, |x| self.k.forward(x))?;
        let v = ctx.block(&format!("{name}.linear_v"), x, |x| self.v.forward(x))?;
        let p = ctx.block(&format!("{name}.linear_pos"), pos, |p| self.pos.forward(p))?;
        let o = ctx.block(&format!("{name}.forward_attention"), &q, |q| self.core(q, &k, &v, &p, keep))?;
        ctx.block(&format!("{name}.linear_out"), &o, |o| self.out.forward(o))
    }
}

/// SiLU, or the Swish-β fault.
fn swish(x: &Tensor, beta: Option<f64>) -> Result<Tensor> {
    Ok(match beta {
        None => crate::vact::silu(x)?,
        Some(b) => (x * crate::vact::sigmoid(&(x * b)?)?)?,
    })
}

struct ConvModule {
    pw1: Linear,
    dw_w: Tensor,
    dw_b: Tensor,
    norm: LayerNorm,
    pw2: Linear,
    c: usize,
    k: usize,
}

impl ConvModule {
    fn load(w: &Weights, c: usize, k: usize, eps: f64) -> Result<Self> {
        let dw = w.pp("depthwise_conv");
        Ok(ConvModule {
            pw1: pointwise(&w.pp("pointwise_conv1"), 2 * c, c)?,
            dw_w: dw.get((c, 1, k), "weight")?,
            dw_b: dw.get(c, "bias")?,
            norm: LayerNorm::load(&w.pp("norm"), c, eps)?,
            pw2: pointwise(&w.pp("pointwise_conv2"), c, c)?,
            c,
            k,
        })
    }
    /// x [B, T, C], keep_t [B, T, 1] u8. Tap layouts as the official module: [B, 2C|C, T] up to the
    /// depthwise conv, [B, T, C] from the norm on.
    fn forward(&self, x: &Tensor, keep_t: &Tensor, ctx: &mut Ctx, name: &str) -> Result<Tensor> {
        let h = ctx.block(&format!("{name}.pointwise_conv1"), x, |x| {
            Ok(self.pw1.forward(&fill_masked(x, keep_t, 0.0)?)?.transpose(1, 2)?.contiguous()?)
        })?;
        // GLU over channels: value = first half, gate = second half.
        let h = ctx.block(&format!("{name}.glu"), &h, |h| Ok(crate::vact::glu(h, 1)?))?;
        let h = ctx.block(&format!("{name}.depthwise_conv"), &h, |h| {
            let pad = (self.k - 1) / 2;
            let y = match crate::nn::depthwise_conv1d(h, &self.dw_w, pad, pad)? {
                Some(y) => y,
                None => h.contiguous()?.conv1d(&self.dw_w, pad, 1, 1, self.c)?,
            };
            Ok(y.broadcast_add(&self.dw_b.reshape((1, self.c, 1))?)?)
        })?;
        let h = ctx.block(&format!("{name}.norm"), &h, |h| self.norm.forward(&h.transpose(1, 2)?.contiguous()?))?;
        let h = ctx.block(&format!("{name}.activation"), &h, |h| Ok(crate::vact::silu(h)?))?;
        ctx.block(&format!("{name}.pointwise_conv2"), &h, |h| fill_masked(&self.pw2.forward(h)?, keep_t, 0.0))
    }
}

struct Layer {
    attn: RelAttention,
    ff1: Linear,
    ff2: Linear,
    conv: ConvModule,
    norm_ff: LayerNorm,
    norm_mha: LayerNorm,
    norm_conv: LayerNorm,
    norm_final: LayerNorm,
    swish_beta: Option<f64>,
}

impl Layer {
    fn load(w: &Weights, cfg: &ConformerCfg, kernel: usize, faults: &Faults) -> Result<Self> {
        let d = cfg.output_size;
        let ff = w.pp("feed_forward");
        let conv_eps = if faults.on("conv_norm_eps") { LN_EPS_FAULT } else { LN_EPS };
        let eps = LN_EPS;
        Ok(Layer {
            attn: RelAttention::load(&w.pp("self_attn"), d, cfg.attention_heads, faults)?,
            ff1: Linear::load(&ff.pp("w_1"), d, cfg.linear_units, true)?,
            ff2: Linear::load(&ff.pp("w_2"), cfg.linear_units, d, true)?,
            conv: ConvModule::load(&w.pp("conv_module"), d, kernel, conv_eps)?,
            norm_ff: LayerNorm::load(&w.pp("norm_ff"), d, eps)?,
            norm_mha: LayerNorm::load(&w.pp("norm_mha"), d, eps)?,
            norm_conv: LayerNorm::load(&w.pp("norm_conv"), d, eps)?,
            norm_final: LayerNorm::load(&w.pp("norm_final"), d, eps)?,
            swish_beta: faults.on("ff_swish_beta").then_some(SWISH_BETA_FAULT),
        })
    }
    fn forward(&self, x: &Tensor, keep_attn: &Tensor, keep_t: &Tensor, pos: &Tensor, ctx: &mut Ctx, name: &str) -> Result<Tensor> {
        let h = ctx.block(&format!("{name}.norm_mha"), x, |x| self.norm_mha.forward(x))?;
        let sa = format!("{name}.self_attn");
        let a = ctx.nest(&sa, &h, |c, h| self.attn.forward(h, keep_attn, pos, c, &sa))?;
        let x = (x + a)?;
        let h = ctx.block(&format!("{name}.norm_conv"), &x, |x| self.norm_conv.forward(x))?;
        let x = (&x + self.conv.forward(&h, keep_t, ctx, &format!("{name}.conv_module"))?)?;
        let h = ctx.block(&format!("{name}.norm_ff"), &x, |x| self.norm_ff.forward(x))?;
        let h = ctx.block(&format!("{name}.feed_forward.w_1"), &h, |h| self.ff1.forward(h))?;
        let h = ctx.block(&format!("{name}.feed_forward.activation"), &h, |h| swish(h, self.swish_beta))?;
        let f = ctx.block(&format!("{name}.feed_forward.w_2"), &h, |h| self.ff2.forward(h))?;
        // norm_final is never injected: its input is the residual chain of the three adds.
        ctx.block(&format!("{name}.norm_final"), &(x + f)?, |x| self.norm_final.forward(x))
    }
}

pub struct ConformerEncoder {
    name: String,
    idim: usize,
    d: usize,
    conv_w: Tensor,
    conv_b: Tensor,
    /// conv.0 as one f32 CPU pass (the weights copied out once at load)
    conv_fused: Subsample,
    out: Linear,
    pe: Tensor, // [1, max_len, d]
    max_len: usize,
    layers: Vec<Layer>,
    after_norm: LayerNorm,
    skip_after_norm: bool,
}

/// `embed.conv.0` (Conv2d(1, d, 3, stride 2), no padding) on x `[B, T, F]` as one pass writing
/// `[B, T', d, F']` (T' = (T−3)/2+1, F' = (F−3)/2+1): per output row (b, t', c) the nine taps in
/// (i, j) order, then the bias. Each input row is split into its even and odd columns first, so the
/// stride-2 reads of every tap are contiguous and the row vectorises. Candle's conv2d wrote
/// [B, d, T', F'], which out.0 then had to transpose (130 MB at official size).
struct Subsample {
    w: Vec<f32>, // [d, 9]
    b: Vec<f32>, // [d]
}

/// One output row: Σ_i (w_i0·E_i[f] + w_i1·O_i[f] + w_i2·E_i[f+1]) + bias, E/O the even/odd columns
/// of input row 2t'+i.
macro_rules! subsample_row {
    ($y:ident, $eo:ident, $w:ident, $bias:ident) => {{
        let n = $y.len();
        $y.iter_mut().for_each(|v| *v = 0.0);
        for i in 0..3 {
            let (e, o) = (&$eo[i].0, &$eo[i].1);
            let (w0, w1, w2) = ($w[3 * i], $w[3 * i + 1], $w[3 * i + 2]);
            let (e0, e1, o0) = (&e[..n], &e[1..n + 1], &o[..n]);
            for f in 0..n {
                $y[f] = (($y[f] + w0 * e0[f]) + w1 * o0[f]) + w2 * e1[f];
            }
        }
        $y.iter_mut().for_each(|v| *v += $bias);
    }};
}
fn subsample_row_base(y: &mut [f32], eo: &[(Vec<f32>, Vec<f32>)], w: &[f32], bias: f32) {
    subsample_row!(y, eo, w, bias)
}
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn subsample_row_avx2(y: &mut [f32], eo: &[(Vec<f32>, Vec<f32>)], w: &[f32], bias: f32) {
    subsample_row!(y, eo, w, bias)
}

impl candle_core::CustomOp1 for Subsample {
    fn name(&self) -> &'static str {
        "conformer-subsample"
    }
    fn cpu_fwd(&self, s: &candle_core::CpuStorage, l: &candle_core::Layout) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let candle_core::CpuStorage::F32(x) = s else { candle_core::bail!("conformer subsample: f32 only") };
        let (a, z) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("conformer subsample: contiguous input expected".into()))?;
        let x = &x[a..z];
        let (b, t, f) = l.shape().dims3()?;
        let d = self.b.len();
        if t < 3 || f < 3 {
            candle_core::bail!("conformer subsample: input [{b}, {t}, {f}] is shorter than the 3x3 kernel")
        }
        let (tp, fp) = ((t - 3) / 2 + 1, (f - 3) / 2 + 1);
        let avx2 = cfg!(target_arch = "x86_64") && crate::vsin::Isa::available().contains(&crate::vsin::Isa::Avx2);
        let mut out: Vec<f32> = Vec::with_capacity(b * tp * d * fp);
        let dst = crate::nn::SendPtr(out.as_mut_ptr());
        let work = |rows: std::ops::Range<usize>| {
            for r in rows {
                let (bi, ti) = (r / tp, r % tp);
                // even/odd columns of the three input rows (E has F' + 1 entries, O has F')
                let eo: Vec<(Vec<f32>, Vec<f32>)> = (0..3)
                    .map(|i| {
                        let row = &x[(bi * t + 2 * ti + i) * f..][..f];
                        (row.iter().step_by(2).take(fp + 1).copied().collect(), row.iter().skip(1).step_by(2).take(fp).copied().collect())
                    })
                    .collect();
                for c in 0..d {
                    // SAFETY: row (bi, ti, c) of `out`'s capacity, written by this unit only
                    let y = unsafe { std::slice::from_raw_parts_mut(dst.get().add(((bi * tp + ti) * d + c) * fp), fp) };
                    let w = &self.w[9 * c..9 * c + 9];
                    #[cfg(target_arch = "x86_64")]
                    if avx2 {
                        // SAFETY: AVX2 and FMA are present (Isa::available)
                        unsafe { subsample_row_avx2(y, &eo, w, self.b[c]) };
                        continue;
                    }
                    subsample_row_base(y, &eo, w, self.b[c]);
                }
            }
        };
        candle_core::utils::barrier_pool().execute_chunked(b * tp, work);
        // SAFETY: every (b, t', c) row was written in full above
        unsafe { out.set_len(b * tp * d * fp) };
        Ok((candle_core::CpuStorage::F32(out), candle_core::Shape::from((b, tp, d, fp))))
    }
}

impl ConformerEncoder {
    pub fn load(w: &Weights, idim: usize, cfg: &ConformerCfg, kernel: usize, max_len: usize, faults: &Faults) -> Result<Self> {
        let d = cfg.output_size;
        if idim < 3 || d == 0 || cfg.attention_heads == 0 || !d.is_multiple_of(cfg.attention_heads) || kernel.is_multiple_of(2) {
            return input_err(format!("Conformer config: idim {idim} ≥ 3, heads {} dividing {d}, odd kernel {kernel} required", cfg.attention_heads));
        }
        let f = (idim - 1) / 2;
        let e = w.pp("embed");
        let (conv_w, conv_b) = (e.pp("conv.0").get((d, 1, 3, 3), "weight")?, e.pp("conv.0").get(d, "bias")?);
        let layers = (0..cfg.num_blocks)
            .map(|i| Layer::load(&w.pp(format!("encoders.{i}")), cfg, kernel, faults))
            .collect::<Result<Vec<_>>>()?;
        Ok(ConformerEncoder {
            name: w.prefix().to_string(),
            idim,
            d,
            conv_fused: Subsample { w: conv_w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?, b: conv_b.to_dtype(DType::F32)?.to_vec1::<f32>()? },
            conv_w,
            conv_b,
            out: Linear::load(&e.pp("out.0"), d * f, d, true)?,
            pe: e.pp("pos_enc").get((1, max_len, d), "pe")?,
            max_len,
            layers,
            after_norm: LayerNorm::load(&w.pp("after_norm"), d, LN_EPS)?,
            skip_after_norm: faults.on("after_norm_skipped"),
        })
    }

    /// `embed` (conv2d2 subsampling): xs [B, T, idim] → (x·√d [B, T', d], pos_emb [1, T', d]).
    fn embed(&self, xs: &Tensor, tp: usize, ctx: &mut Ctx) -> Result<(Tensor, Tensor)> {
        let n = format!("{}.embed", self.name);
        let mut pos = None;
        let x = ctx.nest(&n, xs, |c, xs| {
            let y = c.block(&format!("{n}.conv.0"), xs, |x| {
                if x.dtype() == DType::F32 && x.device().is_cpu() {
                    // [B, T', d, F'] in memory, seen as [B, d, T', F']: the layout out.0 reads
                    return Ok(x.contiguous()?.apply_op1_no_bwd(&self.conv_fused)?.transpose(1, 2)?);
                }
                let y = crate::nn::conv2d(&x.unsqueeze(1)?, &self.conv_w, 0, 2, 1, 1)?;
                Ok(y.broadcast_add(&self.conv_b.reshape((1, self.d, 1, 1))?)?) // [B, d, T', F']
            })?;
            // ReLU over [B, T', d, F'] memory (a view of conv.0's output: no transposing copy)
            let y = c.block(&format!("{n}.conv.1"), &y, |y| Ok(y.transpose(1, 2)?.relu()?.transpose(1, 2)?))?;
            let y = c.block(&format!("{n}.out.0"), &y, |y| {
                let (b, ch, tt, ff) = y.dims4()?;
                self.out.forward(&y.transpose(1, 2)?.contiguous()?.reshape((b, tt, ch * ff))?) // flatten c*F' + f
            })?;
            let scale = (self.d as f64).sqrt();
            let y = c.block(&format!("{n}.pos_enc"), &y, |y| Ok((y * scale)?))?;
            pos = Some(c.block(&format!("{n}.pos_enc.position_encoding"), &self.pe, |pe| Ok(pe.narrow(1, 0, tp)?))?);
            Ok(y)
        })?;
        let Some(pos) = pos else { return input_err("conformer embed produced no positions") };
        Ok((x, pos))
    }

    /// xs [B, T, idim], lens (one per batch row) → (out [B, T', d], keep [B, T'] u8).
    pub fn forward(&self, xs: &Tensor, lens: &[i64], ctx: &mut Ctx) -> Result<(Tensor, Tensor)> {
        let (b, t, f) = xs.dims3()?;
        if f != self.idim || t < 3 || lens.len() != b {
            return input_err(format!(
                "{}: expects features [B, {}, T ≥ 3] with B lengths; got {:?} with {} lengths",
                self.name, self.idim, [b, f, t], lens.len()
            ));
        }
        let tp = (t - 1) / 2;
        if tp >= self.max_len {
            return input_err(format!("{}: {tp} subsampled frames exceed the positional table ({})", self.name, self.max_len));
        }
        // Subsampled key mask = full-rate mask at frames 2, 4, … (`x_mask[:, :, 2::2]`).
        let keep: Vec<u8> = lens
            .iter()
            .flat_map(|&l| (0..tp).map(move |j| u8::from(((2 + 2 * j) as i64) < l)))
            .collect();
        let keep = Tensor::from_vec(keep, (b, tp), xs.device())?;
        let keep_attn = keep.reshape((b, 1, 1, tp))?;
        let keep_t = keep.reshape((b, tp, 1))?;
        let (mut x, pos) = self.embed(xs, tp, ctx)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let n = format!("{}.encoders.{i}", self.name);
            x = ctx.nest(&n, &x, |c, x| layer.forward(x, &keep_attn, &keep_t, &pos, c, &n))?;
        }
        let x = ctx.block(&format!("{}.after_norm", self.name), &x, |x| {
            if self.skip_after_norm { Ok(x.clone()) } else { self.after_norm.forward(x) }
        })?;
        Ok((x, keep.to_dtype(DType::U8)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The fused subsampling conv against Candle's conv2d + bias in f64 (from the same f32 values):
    /// within 1e-5 of outputs of size about 1 (nine f32 products and sums), in the [B, T', d, F']
    /// layout; odd and even T and F.
    #[test]
    fn fused_subsample_equals_conv2d() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for (b, t, f, d) in [(2, 9, 12, 5), (1, 8, 11, 3)] {
            let x = Tensor::randn(0f32, 1.0, (b, t, f), &dev)?;
            let w = Tensor::randn(0f32, 0.3, (d, 1, 3, 3), &dev)?;
            let bias = Tensor::randn(0f32, 0.3, d, &dev)?;
            let op = Subsample { w: w.flatten_all()?.to_vec1::<f32>()?, b: bias.to_vec1::<f32>()? };
            let got = x.apply_op1_no_bwd(&op)?.transpose(1, 2)?.to_dtype(DType::F64)?;
            let f64s = |t: &Tensor| t.to_dtype(DType::F64);
            let want = f64s(&x)?.unsqueeze(1)?.conv2d(&f64s(&w)?, 0, 2, 1, 1)?.broadcast_add(&f64s(&bias)?.reshape((1, d, 1, 1))?)?;
            assert_eq!(got.dims(), want.dims());
            let diff = (got - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
            assert!(diff < 1e-5, "[{b}, {t}, {f}] d {d}: {diff}");
        }
        Ok(())
    }
}
