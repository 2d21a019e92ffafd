//! WeNet Conformer encoder of the GPT conditioning paths (`conditioning_encoder`,
//! `emo_conditioning_encoder`): conv2d2 subsampling + flatten Linear, x·√d with the absolute `pe`
//! table fed to a rel-pos attention that has no rel_shift, GLU conv module, pre-norm blocks.
use crate::ctx::{Ctx, Faults};
use crate::error::{input_err, Result};
use crate::nn::{LayerNorm, Linear};
use crate::store::Weights;
use candle_core::{DType, Tensor, D};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct ConformerCfg {
    pub output_size: usize,
    pub linear_units: usize,
    pub attention_heads: usize,
    pub num_blocks: usize,
    pub perceiver_mult: usize,
}

/// A `[out, in, 1]` conv weight used as a Linear over the last dim.
fn pointwise(w: &Weights, out: usize, inp: usize) -> Result<Linear> {
    let weight = w.get((out, inp, 1), "weight")?.reshape((out, inp))?;
    Ok(Linear::from_tensors(weight, Some(w.get(out, "bias")?)))
}

/// `masked_fill(~mask, value)` with a `[.., T]` u8 mask broadcast over `x`.
pub(crate) fn fill_masked(x: &Tensor, keep: &Tensor, value: f32) -> Result<Tensor> {
    let keep = keep.broadcast_as(x.shape())?;
    let fill = Tensor::full(value, x.shape(), x.device())?;
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
}

impl RelAttention {
    fn load(w: &Weights, d: usize, h: usize, faults: &Faults) -> Result<Self> {
        let dk = d / h;
        let bias_v = w.get((h, dk), "pos_bias_v")?;
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
        })
    }

    /// x [B, T, d], keep [B, 1, 1, T] u8, pos [1, T, d].
    fn forward(&self, x: &Tensor, keep: &Tensor, pos: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let heads = |z: Tensor, n: usize| -> Result<Tensor> { Ok(z.reshape((n, t, self.h, self.dk))?.transpose(1, 2)?.contiguous()?) };
        let q = self.q.forward(x)?.reshape((b, t, self.h, self.dk))?;
        let k = heads(self.k.forward(x)?, b)?;
        let v = heads(self.v.forward(x)?, b)?;
        let p = heads(self.pos.forward(pos)?, 1)?;
        let qu = q.broadcast_add(&self.bias_u)?.transpose(1, 2)?.contiguous()?;
        let qv = match &self.bias_v {
            Some(bv) => q.broadcast_add(bv)?,
            None => q,
        }
        .transpose(1, 2)?
        .contiguous()?;
        let ac = qu.matmul(&k.t()?)?;
        let bd = qv.broadcast_matmul(&p.t()?)?;
        let scores = ((ac + bd)? / (self.dk as f64).sqrt())?;
        let scores = fill_masked(&scores, keep, f32::NEG_INFINITY)?;
        let attn = candle_nn::ops::softmax_last_dim(&scores)?;
        let attn = fill_masked(&attn, keep, 0.0)?;
        let o = attn.matmul(&v)?.transpose(1, 2)?.reshape((b, t, self.h * self.dk))?;
        self.out.forward(&o)
    }
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
    fn load(w: &Weights, c: usize, k: usize) -> Result<Self> {
        let dw = w.pp("depthwise_conv");
        Ok(ConvModule {
            pw1: pointwise(&w.pp("pointwise_conv1"), 2 * c, c)?,
            dw_w: dw.get((c, 1, k), "weight")?,
            dw_b: dw.get(c, "bias")?,
            norm: LayerNorm::load(&w.pp("norm"), c, 1e-5)?,
            pw2: pointwise(&w.pp("pointwise_conv2"), c, c)?,
            c,
            k,
        })
    }
    /// x [B, T, C], keep_t [B, T, 1] u8.
    fn forward(&self, x: &Tensor, keep_t: &Tensor) -> Result<Tensor> {
        let x = fill_masked(x, keep_t, 0.0)?;
        let h = self.pw1.forward(&x)?;
        // GLU: value = first half, gate = second half.
        let a = h.narrow(D::Minus1, 0, self.c)?;
        let g = h.narrow(D::Minus1, self.c, self.c)?;
        let h = (a * candle_nn::ops::sigmoid(&g)?)?;
        let h = h.transpose(1, 2)?.contiguous()?;
        let h = h.conv1d(&self.dw_w, (self.k - 1) / 2, 1, 1, self.c)?;
        let h = h.broadcast_add(&self.dw_b.reshape((1, self.c, 1))?)?.transpose(1, 2)?;
        let h = self.norm.forward(&h)?.silu()?;
        let h = self.pw2.forward(&h)?;
        fill_masked(&h, keep_t, 0.0)
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
}

impl Layer {
    fn load(w: &Weights, cfg: &ConformerCfg, kernel: usize, faults: &Faults) -> Result<Self> {
        let d = cfg.output_size;
        let ff = w.pp("feed_forward");
        Ok(Layer {
            attn: RelAttention::load(&w.pp("self_attn"), d, cfg.attention_heads, faults)?,
            ff1: Linear::load(&ff.pp("w_1"), d, cfg.linear_units, true)?,
            ff2: Linear::load(&ff.pp("w_2"), cfg.linear_units, d, true)?,
            conv: ConvModule::load(&w.pp("conv_module"), d, kernel)?,
            norm_ff: LayerNorm::load(&w.pp("norm_ff"), d, 1e-5)?,
            norm_mha: LayerNorm::load(&w.pp("norm_mha"), d, 1e-5)?,
            norm_conv: LayerNorm::load(&w.pp("norm_conv"), d, 1e-5)?,
            norm_final: LayerNorm::load(&w.pp("norm_final"), d, 1e-5)?,
        })
    }
    fn forward(&self, x: &Tensor, keep_attn: &Tensor, keep_t: &Tensor, pos: &Tensor) -> Result<Tensor> {
        let x = (x + self.attn.forward(&self.norm_mha.forward(x)?, keep_attn, pos)?)?;
        let x = (&x + self.conv.forward(&self.norm_conv.forward(&x)?, keep_t)?)?;
        let f = self.ff2.forward(&self.ff1.forward(&self.norm_ff.forward(&x)?)?.silu()?)?;
        self.norm_final.forward(&(x + f)?)
    }
}

pub struct ConformerEncoder {
    name: String,
    idim: usize,
    d: usize,
    conv_w: Tensor,
    conv_b: Tensor,
    out: Linear,
    pe: Tensor, // [1, max_len, d]
    max_len: usize,
    layers: Vec<Layer>,
    after_norm: LayerNorm,
    skip_after_norm: bool,
}

impl ConformerEncoder {
    pub fn load(w: &Weights, idim: usize, cfg: &ConformerCfg, kernel: usize, max_len: usize, faults: &Faults) -> Result<Self> {
        let d = cfg.output_size;
        if idim < 3 || d == 0 || cfg.attention_heads == 0 || !d.is_multiple_of(cfg.attention_heads) || kernel.is_multiple_of(2) {
            return input_err(format!("Conformer config: idim {idim} ≥ 3, heads {} dividing {d}, odd kernel {kernel} required", cfg.attention_heads));
        }
        let f = (idim - 1) / 2;
        let e = w.pp("embed");
        let layers = (0..cfg.num_blocks)
            .map(|i| Layer::load(&w.pp(format!("encoders.{i}")), cfg, kernel, faults))
            .collect::<Result<Vec<_>>>()?;
        Ok(ConformerEncoder {
            name: w.prefix().to_string(),
            idim,
            d,
            conv_w: e.pp("conv.0").get((d, 1, 3, 3), "weight")?,
            conv_b: e.pp("conv.0").get(d, "bias")?,
            out: Linear::load(&e.pp("out.0"), d * f, d, true)?,
            pe: e.pp("pos_enc").get((1, max_len, d), "pe")?,
            max_len,
            layers,
            after_norm: LayerNorm::load(&w.pp("after_norm"), d, 1e-5)?,
            skip_after_norm: faults.on("after_norm_skipped"),
        })
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
        let pos = self.pe.narrow(1, 0, tp)?;
        let scale = (self.d as f64).sqrt();
        let mut x = ctx.block(&format!("{}.embed", self.name), xs, |x| {
            let y = x.unsqueeze(1)?.conv2d(&self.conv_w, 0, 2, 1, 1)?;
            let y = y.broadcast_add(&self.conv_b.reshape((1, self.d, 1, 1))?)?.relu()?; // [B, d, T', F']
            let (b, c, tt, ff) = y.dims4()?;
            let y = y.transpose(1, 2)?.contiguous()?.reshape((b, tt, c * ff))?;
            Ok((self.out.forward(&y)? * scale)?)
        })?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = ctx.block(&format!("{}.encoders.{i}", self.name), &x, |x| layer.forward(x, &keep_attn, &keep_t, &pos))?;
        }
        let x = ctx.block(&format!("{}.after_norm", self.name), &x, |x| {
            if self.skip_after_norm { Ok(x.clone()) } else { self.after_norm.forward(x) }
        })?;
        Ok((x, keep.to_dtype(DType::U8)?))
    }
}
