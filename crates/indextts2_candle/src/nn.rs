//! Small layers shared by the models. Each is built from tensors fetched through a strict
//! [`Weights`] view; none has a default or random initialiser.
use crate::error::Result;
use crate::store::Weights;
use crate::transforms::load_weight_norm;
use candle_core::{DType, Tensor, D};

/// Half-precision tensors widened to f32 for a reduction (what torch's CPU and CUDA kernels do:
/// their "opmath" type); f32 and f64 pass through unchanged.
pub fn widen(x: &Tensor) -> Result<Tensor> {
    Ok(match x.dtype() {
        DType::F16 | DType::BF16 => x.to_dtype(DType::F32)?,
        _ => x.clone(),
    })
}

/// Softmax over the last dim, accumulated in f32 for half-precision inputs, returned in x's dtype.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::softmax_last_dim(&widen(x)?)?.to_dtype(x.dtype())?)
}

/// `conv2d`; Candle's CPU conv2d has no bf16 matmul, so a bf16 CPU conv runs widened to f32 and is
/// rounded once (what torch's bf16 CPU conv computes: f32 accumulation).
pub fn conv2d(x: &Tensor, w: &Tensor, padding: usize, stride: usize, dilation: usize, groups: usize) -> Result<Tensor> {
    if x.dtype() == DType::BF16 && x.device().is_cpu() {
        return Ok(widen(x)?.conv2d(&widen(w)?, padding, stride, dilation, groups)?.to_dtype(DType::BF16)?);
    }
    Ok(x.conv2d(w, padding, stride, dilation, groups)?)
}

/// `nn.Linear`: weight `[out, in]`, optional bias.
#[derive(Clone)]
pub struct Linear {
    pub w: Tensor,
    pub b: Option<Tensor>,
}

impl Linear {
    pub fn load(w: &Weights, in_dim: usize, out_dim: usize, bias: bool) -> Result<Linear> {
        let weight = w.get((out_dim, in_dim), "weight")?;
        let b = if bias { Some(w.get(out_dim, "bias")?) } else { None };
        Ok(Linear { w: weight, b })
    }
    pub fn from_tensors(w: Tensor, b: Option<Tensor>) -> Linear {
        Linear { w, b }
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.broadcast_matmul(&self.w.t()?)?;
        Ok(match &self.b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// `nn.Conv1d` with zero padding. The weight may come from a weight-normed site.
#[derive(Clone)]
pub struct Conv1d {
    pub w: Tensor,
    pub b: Option<Tensor>,
    pub padding: usize,
    pub stride: usize,
    pub dilation: usize,
    pub groups: usize,
}

impl Conv1d {
    pub fn new(w: Tensor, b: Option<Tensor>, padding: usize, stride: usize, dilation: usize) -> Conv1d {
        Conv1d { w, b, padding, stride, dilation, groups: 1 }
    }
    /// A plain conv: `weight` `[out, in/groups, k]` and optional `bias`.
    pub fn load(w: &Weights, shape: (usize, usize, usize), bias: bool, padding: usize, stride: usize, dilation: usize) -> Result<Conv1d> {
        let weight = w.get(shape, "weight")?;
        let b = if bias { Some(w.get(shape.0, "bias")?) } else { None };
        Ok(Conv1d::new(weight, b, padding, stride, dilation))
    }
    /// A weight-normed conv (`weight_g`/`weight_v`, or a fused `weight`).
    pub fn load_wn(w: &Weights, shape: (usize, usize, usize), bias: bool, padding: usize, dilation: usize, skip_fold: bool) -> Result<Conv1d> {
        let weight = load_weight_norm(w, shape, skip_fold)?;
        let b = if bias { Some(w.get(shape.0, "bias")?) } else { None };
        Ok(Conv1d::new(weight, b, padding, 1, dilation))
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.conv1d(&self.w, self.padding, self.stride, self.dilation, self.groups)?;
        Ok(match &self.b {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1))?)?,
            None => y,
        })
    }
}

/// LayerNorm over the last dim; `weight`/`bias` optional (elementwise_affine=False). Half-precision
/// inputs are normalised (and scaled) in f32 and rounded once at the end, as torch's kernel does.
pub fn layer_norm(x: &Tensor, w: Option<&Tensor>, b: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let dt = x.dtype();
    if matches!(dt, DType::F16 | DType::BF16) {
        let (w, b) = (w.map(widen).transpose()?, b.map(widen).transpose()?);
        return Ok(layer_norm(&widen(x)?, w.as_ref(), b.as_ref(), eps)?.to_dtype(dt)?);
    }
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let mut y = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    if let Some(w) = w {
        y = y.broadcast_mul(w)?;
    }
    if let Some(b) = b {
        y = y.broadcast_add(b)?;
    }
    Ok(y)
}

/// `nn.LayerNorm` with affine parameters.
#[derive(Clone)]
pub struct LayerNorm {
    pub w: Tensor,
    pub b: Option<Tensor>,
    pub eps: f64,
}

impl LayerNorm {
    pub fn load(w: &Weights, dim: usize, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm { w: w.get(dim, "weight")?, b: Some(w.get(dim, "bias")?), eps })
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        layer_norm(x, Some(&self.w), self.b.as_ref(), self.eps)
    }
}
