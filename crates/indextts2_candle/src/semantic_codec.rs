//! RepCodec semantic codec (MaskGCT `repcodec_model.py`, vendored by IndexTTS2) — encoder + quantizer.
//!
//! `quantize(x[B,T,hidden])` → codes `[B,T]` (i64) and emb `[B,T,hidden]`: Vocos encoder, Linear,
//! weight-normed 1×1 `in_project` to `codebook_dim`, argmax cosine similarity against the codebook
//! (both sides L2-normalised), then `out_project` of the RAW codebook row. `vq2emb(codes[B,T])` →
//! `[B,hidden,T]`. The decoder is stored in the official file but never used by IndexTTS2.
use crate::ctx::{Ctx, Faults};
use crate::error::{input_err, Result};
use crate::nn::{Conv1d, LayerNorm, Linear};
use crate::store::Weights;
use crate::transforms::load_weight_norm;
use candle_core::{DType, Tensor, D};
use serde::Deserialize;

/// The official `RepCodec(...)` constructor arguments; absent keys take the official defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SemanticCodecConfig {
    pub codebook_size: usize,
    pub hidden_size: usize,
    pub codebook_dim: usize,
    pub vocos_dim: usize,
    pub vocos_intermediate_dim: usize,
    pub vocos_num_layers: usize,
    /// Residual quantizer stages (each quantizes what the earlier ones left).
    pub num_quantizers: usize,
    /// `None`/1: no downsampling; any value > 1: the official stride-2 `down` conv + exact GELU.
    pub downsample_scale: Option<usize>,
}

impl Default for SemanticCodecConfig {
    fn default() -> Self {
        SemanticCodecConfig {
            codebook_size: 8192,
            hidden_size: 1024,
            codebook_dim: 8,
            vocos_dim: 384,
            vocos_intermediate_dim: 2048,
            vocos_num_layers: 12,
            num_quantizers: 1,
            downsample_scale: Some(1),
        }
    }
}

pub const FAULTS: &[&str] = &[
    "codebook_unnormalised", // nearest code by raw euclidean distance, no L2 normalisation
    "layer_norm_eps",        // every Vocos LayerNorm with eps 1e-5 (the torch default) instead of 1e-6
    "gelu_tanh",             // ConvNeXt GELU with the tanh approximation instead of the exact erf form
];

struct ConvNeXt {
    dw_w: Tensor,         // dwconv.weight [dim, 1, 7]
    dw_taps: Vec<Tensor>, // dwconv.weight[:, 0, k] as [1, dim, 1]
    dw_bias: Tensor,      // [1, dim, 1]
    norm: LayerNorm,
    pwconv1: Linear,
    pwconv2: Linear,
    gamma: Tensor,
    /// CPU f32 weights: the block then runs channels-last (`[B, T, C]`, the layout of everything
    /// from the norm on), with no transposing copies
    host: Option<ConvNeXtHost>,
}

struct ConvNeXtHost {
    dw_w: Vec<f32>, // [7, dim]
    dw_b: Vec<f32>,
    gamma: Vec<f32>,
}

/// ConvNeXt's depthwise conv (pad (k − 1)/2) plus bias on a channels-last f32 `[B, T, C]` input:
/// per output `(Σ_j x[t + j − p]·w[j]) + b`, j ascending over the zero-padded input (the sums of
/// the `[B, C, T]` form, bit for bit), vectorised over channels.
struct DwConvTc<'a>(&'a ConvNeXtHost);

impl candle_core::CustomOp1 for DwConvTc<'_> {
    fn name(&self) -> &'static str {
        "convnext-dwconv-channels-last"
    }
    fn cpu_fwd(&self, s: &candle_core::CpuStorage, l: &candle_core::Layout) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (candle_core::CpuStorage::F32(v), Some((o0, o1))) = (s, l.contiguous_offsets()) else { candle_core::bail!("convnext dwconv: contiguous f32 expected") };
        let x = &v[o0..o1];
        let (b, t, c) = l.shape().dims3()?;
        let (w, bias) = (&self.0.dw_w, &self.0.dw_b);
        if bias.len() != c || w.len() % c != 0 || w.len() / c % 2 == 0 {
            candle_core::bail!("convnext dwconv: input {:?} against {} channels", l.dims(), bias.len())
        }
        let (k, p) = (w.len() / c, w.len() / c / 2);
        let mut out: Vec<f32> = Vec::with_capacity(b * t * c);
        let dst = crate::nn::SendPtr(out.as_mut_ptr());
        crate::nn::par_for(b * t, |r| {
            let (bi, ti) = (r / t, r % t);
            // SAFETY: row r of `out`'s capacity, written by this task only
            let o = unsafe { std::slice::from_raw_parts_mut(dst.get().add(r * c), c) };
            for j in 0..k {
                let wj = &w[j * c..][..c];
                match ((ti + j).checked_sub(p).filter(|&s| s < t), j) {
                    (Some(s), 0) => o.iter_mut().zip(&x[(bi * t + s) * c..][..c]).zip(wj).for_each(|((o, &x), &w)| *o = x * w),
                    (None, 0) => o.iter_mut().zip(wj).for_each(|(o, &w)| *o = 0.0 * w),
                    (Some(s), _) => o.iter_mut().zip(&x[(bi * t + s) * c..][..c]).zip(wj).for_each(|((o, &x), &w)| *o = *o + x * w),
                    (None, _) => o.iter_mut().zip(wj).for_each(|(o, &w)| *o = *o + 0.0 * w),
                }
            }
            o.iter_mut().zip(bias).for_each(|(o, &b)| *o = *o + b);
        });
        // SAFETY: every row was written in full
        unsafe { out.set_len(b * t * c) };
        Ok((candle_core::CpuStorage::F32(out), l.shape().clone()))
    }
}

/// `x + h·γ` on channels-last f32 `[B, T, C]` (γ per channel), one pass: the residual sum of the
/// layer-scaled branch with the two roundings of the tensor form.
struct ScaledResidual<'a>(&'a [f32]);

impl candle_core::CustomOp2 for ScaledResidual<'_> {
    fn name(&self) -> &'static str {
        "convnext-scaled-residual"
    }
    fn cpu_fwd(&self, xs: &candle_core::CpuStorage, xl: &candle_core::Layout, hs: &candle_core::CpuStorage, hl: &candle_core::Layout) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (candle_core::CpuStorage::F32(xv), candle_core::CpuStorage::F32(hv)) = (xs, hs) else { candle_core::bail!("convnext residual: f32 expected") };
        let (Some((x0, x1)), Some((h0, h1))) = (xl.contiguous_offsets(), hl.contiguous_offsets()) else { candle_core::bail!("convnext residual: contiguous operands expected") };
        let (x, h, g) = (&xv[x0..x1], &hv[h0..h1], self.0);
        let c = g.len();
        if xl.dims() != hl.dims() || xl.dims().last() != Some(&c) {
            candle_core::bail!("convnext residual: x {:?}, h {:?}, γ of {c}", xl.dims(), hl.dims())
        }
        let rows = x.len() / c.max(1);
        let mut out: Vec<f32> = Vec::with_capacity(x.len());
        let dst = crate::nn::SendPtr(out.as_mut_ptr());
        crate::nn::par_for(rows, |r| {
            // SAFETY: row r of `out`'s capacity, written by this task only
            let o = unsafe { std::slice::from_raw_parts_mut(dst.get().add(r * c), c) };
            let (xr, hr) = (&x[r * c..][..c], &h[r * c..][..c]);
            o.iter_mut().zip(xr).zip(hr.iter().zip(g)).for_each(|((o, &x), (&h, &g))| *o = x + h * g);
        });
        // SAFETY: every row was written in full
        unsafe { out.set_len(x.len()) };
        Ok((candle_core::CpuStorage::F32(out), xl.shape().clone()))
    }
}

impl ConvNeXt {
    fn load(w: &Weights, dim: usize, inter: usize, eps: f64) -> Result<ConvNeXt> {
        let dw = Conv1d::load(&w.pp("dwconv"), (dim, 1, 7), true, 3, 1, 1)?;
        let dw_taps = (0..7).map(|k| Ok(dw.w.narrow(2, k, 1)?.reshape((1, dim, 1))?)).collect::<Result<Vec<_>>>()?;
        let dw_bias = match &dw.b {
            Some(b) => b.reshape((1, dim, 1))?,
            None => return input_err("dwconv without bias"),
        };
        let gamma = w.get(dim, "gamma")?;
        let host = if dw.w.device().is_cpu() && dw.w.dtype() == DType::F32 {
            Some(ConvNeXtHost {
                dw_w: dw.w.squeeze(1)?.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?,
                dw_b: dw_bias.flatten_all()?.to_vec1::<f32>()?,
                gamma: gamma.to_vec1::<f32>()?,
            })
        } else {
            None
        };
        Ok(ConvNeXt {
            dw_w: dw.w.clone(),
            dw_taps,
            dw_bias,
            norm: LayerNorm::load(&w.pp("norm"), dim, eps)?,
            pwconv1: Linear::load(&w.pp("pwconv1"), dim, inter, true)?,
            pwconv2: Linear::load(&w.pp("pwconv2"), inter, dim, true)?,
            gamma,
            host,
        })
    }
    /// Depthwise k=7 conv (pad 3): `nn::depthwise_conv1d` (one pass per row) on f32/f64 CPU
    /// tensors, else seven shifted scalings (the same sums in the same order, so the two agree bit
    /// for bit); candle runs grouped convs one group at a time, ~dim× slower for 1-channel groups.
    fn dwconv(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(y) = crate::nn::depthwise_conv1d(x, &self.dw_w, 3, 3)? {
            return Ok(y.broadcast_add(&self.dw_bias)?);
        }
        let t = x.dim(2)?;
        let xp = x.pad_with_zeros(2, 3, 3)?;
        let mut y = xp.narrow(2, 0, t)?.broadcast_mul(&self.dw_taps[0])?;
        for (k, wk) in self.dw_taps.iter().enumerate().skip(1) {
            y = (y + xp.narrow(2, k, t)?.broadcast_mul(wk)?)?;
        }
        Ok(y.broadcast_add(&self.dw_bias)?)
    }
    /// Leaf taps `<n>.{dwconv, norm, pwconv1, act, pwconv2, gamma}`, then `<n>` (the residual add).
    /// `x` and the result are `[B, C, T]`; on CPU f32 they are transposed views of channels-last
    /// memory, and taps too (the reference's shapes, the same values).
    fn forward(&self, x: &Tensor, ctx: &mut Ctx, n: &str, faults: &Faults) -> Result<Tensor> {
        let x = ctx.input(n, x)?;
        let host = self.host.as_ref().filter(|_| x.device().is_cpu() && x.dtype() == DType::F32);
        let h = ctx.block(&format!("{n}.dwconv"), &x, |x| match host {
            Some(hw) => Ok(x.transpose(1, 2)?.contiguous()?.apply_op1_no_bwd(&DwConvTc(hw))?.transpose(1, 2)?),
            None => self.dwconv(x),
        })?;
        let h = ctx.block(&format!("{n}.norm"), &h.transpose(1, 2)?, |h| self.norm.forward(h))?;
        let h = ctx.block(&format!("{n}.pwconv1"), &h, |h| self.pwconv1.forward(h))?;
        let h = ctx.block(&format!("{n}.act"), &h, |h| {
            Ok(if faults.on("gelu_tanh") { crate::vact::gelu_tanh(h)? } else { crate::vact::gelu_erf(h)? })
        })?;
        let h = ctx.block(&format!("{n}.pwconv2"), &h, |h| self.pwconv2.forward(h))?;
        let y = match host {
            // nothing records or injects: the block only profiles the fused x + h·γ
            Some(hw) if ctx.is_plain() => ctx.block(&format!("{n}.gamma"), &h, |h| {
                let x_tc = x.transpose(1, 2)?.contiguous()?;
                Ok(x_tc.apply_op2_no_bwd(&h.contiguous()?, &ScaledResidual(&hw.gamma))?.transpose(1, 2)?)
            })?,
            _ => {
                let h = ctx.block(&format!("{n}.gamma"), &h, |h| Ok(h.broadcast_mul(&self.gamma)?))?;
                (x + h.transpose(1, 2)?)?
            }
        };
        ctx.tap(n, &y);
        Ok(y)
    }
}

struct Vocos {
    embed: Conv1d,
    norm: LayerNorm,
    convnext: Vec<ConvNeXt>,
    final_layer_norm: LayerNorm,
}

impl Vocos {
    fn load(w: &Weights, cfg: &SemanticCodecConfig, eps: f64) -> Result<Vocos> {
        let d = cfg.vocos_dim;
        Ok(Vocos {
            embed: Conv1d::load(&w.pp("embed"), (d, cfg.hidden_size, 7), true, 3, 1, 1)?,
            norm: LayerNorm::load(&w.pp("norm"), d, eps)?,
            convnext: (0..cfg.vocos_num_layers)
                .map(|i| ConvNeXt::load(&w.pp(format!("convnext.{i}")), d, cfg.vocos_intermediate_dim, eps))
                .collect::<Result<_>>()?,
            final_layer_norm: LayerNorm::load(&w.pp("final_layer_norm"), d, eps)?,
        })
    }
    /// `[B, Cin, T]` → `[B, T, dim]`.
    fn forward(&self, x: &Tensor, ctx: &mut Ctx, p: &str, faults: &Faults) -> Result<Tensor> {
        let x = ctx.block(&format!("{p}.embed"), x, |x| self.embed.forward(x))?;
        let mut x = ctx.block(&format!("{p}.norm"), &x, |x| {
            Ok(self.norm.forward(&x.transpose(1, 2)?)?.transpose(1, 2)?)
        })?;
        for (i, blk) in self.convnext.iter().enumerate() {
            x = blk.forward(&x, ctx, &format!("{p}.convnext.{i}"), faults)?;
        }
        ctx.block(&format!("{p}.final_layer_norm"), &x, |x| self.final_layer_norm.forward(&x.transpose(1, 2)?))
    }
}

/// One `FactorizedVectorQuantize` stage (`quantizer.quantizers.i`).
struct Quantizer {
    name: String,
    in_project: Linear,  // weight-normed Conv1d k=1 folded to [codebook_dim, hidden]
    out_project: Linear, // [hidden, codebook_dim]
    codebook: Tensor,    // [K, codebook_dim], raw
    codebook_unit: Tensor,
    codebook_sq: Tensor, // [1, K]: Σ c², kept as the official distance expression has it
    unnormalised: bool,
    size: usize,
    /// the f32 CPU search as one pass per row
    fused: NearestCode,
}

/// The nearest code of each row of enc `[N, d]` (with its Σe² `[N, 1]`) in one pass per row: the
/// official expression (Σe² − 2·e·c) + Σc² for every code, its negation's first maximum, as the
/// tensor form (`dist.neg().argmax(1)`) takes it. The codebook is held transposed `[d, K]` so the K
/// dot products of a row accumulate as whole-row passes (k ascending, products rounded; gemm fuses
/// them, which can move a near tie by one rounding).
struct NearestCode {
    unit_t: Vec<f32>, // [d, K]
    sq: Vec<f32>,     // [K]
    d: usize,
}

impl candle_core::CustomOp2 for NearestCode {
    fn name(&self) -> &'static str {
        "nearest-code"
    }
    fn cpu_fwd(&self, e: &candle_core::CpuStorage, el: &candle_core::Layout, q: &candle_core::CpuStorage, ql: &candle_core::Layout) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (candle_core::CpuStorage::F32(e), candle_core::CpuStorage::F32(q)) = (e, q) else { candle_core::bail!("nearest-code: f32 only") };
        let (n, d) = el.shape().dims2()?;
        let k = self.sq.len();
        let (Some((e0, _)), Some((q0, _))) = (el.contiguous_offsets(), ql.contiguous_offsets()) else { candle_core::bail!("nearest-code: contiguous operands expected") };
        if d != self.d || ql.shape().elem_count() != n {
            candle_core::bail!("nearest-code: enc {:?} / Σe² {:?} against a codebook of dim {}", el.dims(), ql.dims(), self.d)
        }
        let mut out = vec![0i64; n];
        let dst = crate::nn::SendPtr(out.as_mut_ptr());
        let work = |rows: std::ops::Range<usize>| {
            let mut dots = vec![0f32; k];
            for r in rows {
                let er = &e[e0 + r * d..][..d];
                dots.iter_mut().for_each(|v| *v = 0.0);
                for (kk, &ek) in er.iter().enumerate() {
                    let col = &self.unit_t[kk * k..][..k];
                    dots.iter_mut().zip(col).for_each(|(acc, &c)| *acc += ek * c);
                }
                let sq_e = q[q0 + r];
                let neg = |j: usize| -((sq_e - dots[j] * 2.0) + self.sq[j]);
                let (mut best, mut at) = (neg(0), 0usize);
                for j in 1..k {
                    let v = neg(j);
                    if v > best {
                        (best, at) = (v, j);
                    }
                }
                // SAFETY: entry r of `out`, written by this unit only
                unsafe { *dst.get().add(r) = at as i64 };
            }
        };
        if n * k > 1 << 16 {
            candle_core::utils::barrier_pool().execute_chunked(n, work);
        } else {
            work(0..n);
        }
        Ok((candle_core::CpuStorage::I64(out), candle_core::Shape::from(n)))
    }
}

/// `F.normalize(x, dim=1)`: x / max(‖x‖, 1e-12).
fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let n = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
    Ok(x.broadcast_div(&n)?)
}

impl Quantizer {
    fn load(w: &Weights, name: String, cfg: &SemanticCodecConfig, faults: &Faults) -> Result<Quantizer> {
        let (h, d) = (cfg.hidden_size, cfg.codebook_dim);
        let q = w.pp(&name);
        let inw = load_weight_norm(&q.pp("in_project"), (d, h, 1), false)?.reshape((d, h))?;
        let in_project = Linear::from_tensors(inw, Some(q.pp("in_project").get(d, "bias")?));
        let outw = load_weight_norm(&q.pp("out_project"), (h, d, 1), false)?.reshape((h, d))?;
        let out_project = Linear::from_tensors(outw, Some(q.pp("out_project").get(h, "bias")?));
        let codebook = q.pp("codebook").get((cfg.codebook_size, d), "weight")?;
        let unnormalised = faults.on("codebook_unnormalised");
        let codebook_unit = if unnormalised { codebook.clone() } else { l2_normalize(&codebook)? };
        let codebook_sq = codebook_unit.sqr()?.sum_keepdim(1)?.t()?.contiguous()?;
        let fused = NearestCode {
            unit_t: codebook_unit.to_dtype(DType::F32)?.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?,
            sq: codebook_sq.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
            d,
        };
        Ok(Quantizer { name, in_project, out_project, codebook, codebook_unit, codebook_sq, unnormalised, size: cfg.codebook_size, fused })
    }

    /// z_e `[B, d, T]` → codes `[B, T]` (i64): argmin of the squared distance between unit vectors.
    fn search(&self, z_e: &Tensor) -> Result<Tensor> {
        let (b, d, t) = z_e.dims3()?;
        let enc = z_e.transpose(1, 2)?.reshape((b * t, d))?;
        let enc = if self.unnormalised { enc } else { l2_normalize(&enc)? };
        if enc.dtype() == DType::F32 && enc.device().is_cpu() {
            let sq = enc.sqr()?.sum_keepdim(1)?;
            return Ok(enc.contiguous()?.apply_op2_no_bwd(&sq, &self.fused)?.reshape((b, t))?);
        }
        let dist = enc
            .sqr()?
            .sum_keepdim(1)?
            .broadcast_sub(&(enc.matmul(&self.codebook_unit.t()?)? * 2.0)?)?
            .broadcast_add(&self.codebook_sq)?;
        Ok(dist.neg()?.argmax(1)?.to_dtype(DType::I64)?.reshape((b, t))?)
    }

    /// Raw codebook rows for codes `[B, T]` → `[B, T, d]`; rejects out-of-range codes.
    fn lookup(&self, codes: &Tensor) -> Result<Tensor> {
        let (b, t) = codes.dims2()?;
        let flat = codes.to_dtype(DType::I64)?.flatten_all()?;
        let v = flat.to_vec1::<i64>()?;
        if let Some(bad) = v.iter().find(|&&c| c < 0 || c as usize >= self.size) {
            return input_err(format!("code {bad} outside the codebook [0, {})", self.size));
        }
        Ok(self.codebook.index_select(&flat, 0)?.reshape((b, t, self.codebook.dim(1)?))?)
    }

    /// residual `[B, T, hidden]` → (codes `[B, T]`, z_q `[B, T, hidden]`); taps
    /// `<name>.{in_project, codebook, out_project}`.
    fn quantize(&self, residual: &Tensor, ctx: &mut Ctx) -> Result<(Tensor, Tensor)> {
        let n = &self.name;
        let z_e = ctx.block(&format!("{n}.in_project"), residual, |y| Ok(self.in_project.forward(y)?.transpose(1, 2)?))?;
        let codes = ctx.block(&format!("{n}.codebook"), &z_e, |z| self.search(z))?;
        let z_q = ctx.block(&format!("{n}.out_project"), &codes, |c| {
            let z_q = self.lookup(c)?.transpose(1, 2)?;
            if z_q.dims() != z_e.dims() {
                return input_err(format!("codes {:?} do not match z_e {:?}", c.dims(), z_e.dims()));
            }
            // Straight-through form z_e + (z_q − z_e), as upstream computes it.
            let st = (&z_e + (z_q - &z_e)?)?;
            self.out_project.forward(&st.transpose(1, 2)?)
        })?;
        Ok((codes, z_q))
    }

    /// codes `[B, T]` → `[B, hidden, T]` (raw codebook rows); tap `<name>.out_project`.
    fn vq2emb(&self, codes: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        ctx.block(&format!("{}.out_project", self.name), codes, |c| Ok(self.out_project.forward(&self.lookup(c)?)?.transpose(1, 2)?))
    }
}

pub struct SemanticCodec {
    cfg: SemanticCodecConfig,
    down: Option<Conv1d>, // k3, stride 2, pad 1 (downsample_scale > 1)
    encoder: Vocos,
    encoder_proj: Linear,
    quantizers: Vec<Quantizer>,
    faults: Faults,
}

impl SemanticCodec {
    pub fn load(w: &Weights, cfg: SemanticCodecConfig, faults: Faults) -> Result<SemanticCodec> {
        if cfg.codebook_size == 0 || cfg.codebook_dim == 0 || cfg.hidden_size == 0 || cfg.vocos_dim == 0 {
            return input_err("semantic codec config: sizes must be positive");
        }
        if cfg.num_quantizers == 0 {
            return input_err("semantic codec config: num_quantizers 0 is not supported (at least one quantizer)");
        }
        if cfg.codebook_dim == cfg.hidden_size {
            return input_err(format!(
                "semantic codec config: codebook_dim {} equal to hidden_size: the official quantizer then uses identity \
                 in/out projections, which this port does not implement (supported: codebook_dim != hidden_size)",
                cfg.codebook_dim
            ));
        }
        let h = cfg.hidden_size;
        let down = match cfg.downsample_scale {
            Some(s) if s > 1 => {
                let c = Conv1d::load(&w.pp("down"), (h, h, 3), true, 1, 2, 1)?;
                Some(c)
            }
            _ => None,
        };
        // Vocos LayerNorms: eps 1e-6 (the official code passes it explicitly).
        let eps = if faults.on("layer_norm_eps") { 1e-5 } else { 1e-6 };
        let encoder = Vocos::load(&w.pp("encoder.0"), &cfg, eps)?;
        let encoder_proj = Linear::load(&w.pp("encoder.1"), cfg.vocos_dim, h, true)?;
        let quantizers = (0..cfg.num_quantizers)
            .map(|i| Quantizer::load(w, format!("quantizer.quantizers.{i}"), &cfg, &faults))
            .collect::<Result<Vec<_>>>()?;
        Ok(SemanticCodec { cfg, down, encoder, encoder_proj, quantizers, faults })
    }

    /// Taps: [`down`, `gelu`], `encoder.0.{embed, norm, convnext.i.*, final_layer_norm}`,
    /// `encoder.1`, per stage `quantizer.quantizers.i.{in_project, codebook, out_project}`, then
    /// `quantizer` (the sum of the stages). Codes `[B, T]` with one quantizer, else `[N, B, T]`.
    pub fn quantize(&self, x: &Tensor, ctx: &mut Ctx) -> Result<(Tensor, Tensor)> {
        if x.rank() != 3 {
            return input_err(format!("semantic codec expects x [B, T>0, {}], got {:?}", self.cfg.hidden_size, x.dims()));
        }
        let (_, t, h) = x.dims3()?;
        if h != self.cfg.hidden_size || t == 0 {
            return input_err(format!("semantic codec expects x [B, T>0, {}], got {:?}", self.cfg.hidden_size, x.dims()));
        }
        let mut x = x.transpose(1, 2)?;
        if let Some(down) = &self.down {
            let y = ctx.block("down", &x, |x| down.forward(x))?;
            x = ctx.block("gelu", &y, |y| Ok(crate::vact::gelu_erf(y)?))?;
        }
        let y = self.encoder.forward(&x, ctx, "encoder.0", &self.faults)?;
        let y = ctx.block("encoder.1", &y, |y| self.encoder_proj.forward(y))?;
        // ResidualVQ: each stage quantizes what the earlier ones left; emb = the sum of the stages.
        let y = ctx.input("quantizer", &y)?;
        let (mut residual, mut sum, mut all) = (y.clone(), None::<Tensor>, Vec::new());
        for q in &self.quantizers {
            let (codes, z_q) = q.quantize(&residual, ctx)?;
            residual = (residual - &z_q)?;
            sum = Some(match sum {
                Some(s) => (s + z_q)?,
                None => z_q,
            });
            all.push(codes);
        }
        let Some(emb) = sum else { return input_err("semantic codec has no quantizer") };
        ctx.tap("quantizer", &emb);
        let codes = if all.len() == 1 { all.remove(0) } else { Tensor::stack(&all, 0)? };
        Ok((codes, emb))
    }

    /// `quantizer.vq2emb`: codes `[B, T]` (one quantizer; infer_v2's `codes.unsqueeze(1)` → `vq[0]`)
    /// or `[N, B, T]` (Σ over the N stages, then tap `quantizer`) → `[B, hidden, T]`.
    pub fn vq2emb(&self, codes: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let n = self.quantizers.len();
        if n == 1 {
            if codes.rank() != 2 || codes.dim(1)? == 0 {
                return input_err(format!("vq2emb expects codes [B, T>0], got {:?}", codes.dims()));
            }
            return self.quantizers[0].vq2emb(codes, ctx);
        }
        if codes.rank() != 3 || codes.dim(0)? != n || codes.dim(2)? == 0 {
            return input_err(format!("vq2emb expects codes [{n}, B, T>0] ({n} quantizers), got {:?}", codes.dims()));
        }
        let codes = ctx.input("quantizer", codes)?;
        let mut sum: Option<Tensor> = None;
        for (i, q) in self.quantizers.iter().enumerate() {
            let e = q.vq2emb(&codes.get(i)?, ctx)?;
            sum = Some(match sum {
                Some(s) => (s + e)?,
                None => e,
            });
        }
        let Some(emb) = sum else { return input_err("semantic codec has no quantizer") };
        ctx.tap("quantizer", &emb);
        Ok(emb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The channels-last depthwise conv and scaled residual give the bits of the `[B, C, T]` forms
    /// (`nn::depthwise_conv1d` + bias, `x + h·γ`), edges and all-zero frames included.
    #[test]
    fn channels_last_block_ops_equal_the_tensor_forms() -> Result<()> {
        let dev = Device::Cpu;
        let (b, c, t) = (2, 12, 9);
        let w = Tensor::randn(0f32, 1.0, (c, 1, 7), &dev)?;
        let bias = Tensor::randn(0f32, 1.0, c, &dev)?;
        let gamma = Tensor::randn(0f32, 0.1, c, &dev)?;
        let x = Tensor::randn(0f32, 1.0, (b, c, t), &dev)?;
        let x = Tensor::cat(&[x.narrow(2, 0, 4)?, x.narrow(2, 4, 2)?.zeros_like()?, x.narrow(2, 6, 3)?], 2)?;
        let host = ConvNeXtHost {
            dw_w: w.squeeze(1)?.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?,
            dw_b: bias.to_vec1::<f32>()?,
            gamma: gamma.to_vec1::<f32>()?,
        };
        let want = crate::nn::depthwise_conv1d(&x, &w, 3, 3)?.expect("cpu f32").broadcast_add(&bias.reshape((1, c, 1))?)?;
        let got = x.transpose(1, 2)?.contiguous()?.apply_op1_no_bwd(&DwConvTc(&host))?;
        let bits = |v: &Tensor| -> Result<Vec<u32>> { Ok(v.flatten_all()?.to_vec1::<f32>()?.iter().map(|f| f.to_bits()).collect()) };
        assert_eq!(bits(&got.transpose(1, 2)?.contiguous()?)?, bits(&want)?);
        let h = Tensor::randn(0f32, 1.0, (b, t, c), &dev)?;
        let x_tc = x.transpose(1, 2)?.contiguous()?;
        let want = (&x_tc + h.broadcast_mul(&gamma)?)?;
        assert_eq!(bits(&x_tc.apply_op2_no_bwd(&h, &ScaledResidual(&host.gamma))?)?, bits(&want)?);
        assert!(x.contiguous()?.apply_op1_no_bwd(&DwConvTc(&host)).is_err(), "channels-first input refused");
        Ok(())
    }

    /// The fused search picks the tensor form's code on every row (deterministic inputs: no seed,
    /// no near ties by construction) in the official size's shape (d 8, K 8192).
    #[test]
    fn fused_search_equals_the_tensor_form() -> Result<()> {
        let dev = Device::Cpu;
        let (n, d, k) = (300, 8, 8192);
        let g = |i: usize, s: f64| ((i as f64 * s).sin() * 1.7 + (i as f64 * s * 0.37).cos()) as f32;
        let unit = l2_normalize(&Tensor::from_vec((0..k * d).map(|i| g(i, 0.61)).collect::<Vec<_>>(), (k, d), &dev)?)?;
        let enc = l2_normalize(&Tensor::from_vec((0..n * d).map(|i| g(i, 1.13)).collect::<Vec<_>>(), (n, d), &dev)?)?;
        let sq = unit.sqr()?.sum_keepdim(1)?.t()?.contiguous()?;
        let dist = enc.sqr()?.sum_keepdim(1)?.broadcast_sub(&(enc.matmul(&unit.t()?)? * 2.0)?)?.broadcast_add(&sq)?;
        let want = dist.neg()?.argmax(1)?.to_dtype(DType::I64)?.to_vec1::<i64>()?;
        let op = NearestCode { unit_t: unit.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?, sq: sq.flatten_all()?.to_vec1::<f32>()?, d };
        let got = enc.apply_op2_no_bwd(&enc.sqr()?.sum_keepdim(1)?, &op)?.to_vec1::<i64>()?;
        assert_eq!(got, want);
        assert!(enc.narrow(1, 0, 7)?.contiguous()?.apply_op2_no_bwd(&enc.sqr()?.sum_keepdim(1)?, &op).is_err());
        Ok(())
    }
}
