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
        if self.widened_on_cpu(x)? {
            // torch's CPU half addmm: f32 accumulation, bias added in f32, one rounding
            let mut y = widen(x)?.broadcast_matmul(&widen(&self.w)?.t()?)?;
            if let Some(b) = &self.b {
                y = y.broadcast_add(&widen(b)?)?;
            }
            return Ok(y.to_dtype(x.dtype())?);
        }
        if let Some(y) = crate::dense::linear(x, &self.w, self.b.as_ref())? {
            return Ok(y);
        }
        let y = x.broadcast_matmul(&self.w.t()?)?;
        Ok(match &self.b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// The depth up to which Candle's CPU f16 matmul (gemm-f16 0.19) accumulates without rounding:
/// above it, gemm stores the f16 accumulator after every K block of this size. Measured on
/// 64 × K × 512 products against f64 (`examples/f16_matmul_depth.rs`): rms error 1.00× the
/// widened product at K = 512, 1.41× at 1280, 15.9× at 261 632 (the conformer's `embed.out.0`).
/// A one-row product takes gemm's gemv path, which stays at 1.00× for every K; bf16 is 1.00×.
pub const F16_GEMM_UNROUNDED_K: usize = 512;

impl Linear {
    /// Whether this product runs widened to f32: an f16 CPU product deeper than gemm's K block
    /// with more than one row. Decoding one row per step keeps the half weights as they are.
    fn widened_on_cpu(&self, x: &Tensor) -> Result<bool> {
        let k = self.w.dim(1)?;
        Ok(x.dtype() == DType::F16 && x.device().is_cpu() && k > F16_GEMM_UNROUNDED_K && x.elem_count() / k.max(1) > 1)
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
    /// An f32/f64 CPU weight is stored tap-major (same values and shape; see
    /// [`crate::dense::tap_major`]), the layout the gemm conv reads fastest.
    pub fn new(w: Tensor, b: Option<Tensor>, padding: usize, stride: usize, dilation: usize) -> Result<Conv1d> {
        let w = if matches!(w.dtype(), DType::F32 | DType::F64) { crate::dense::tap_major(&w)? } else { w };
        Ok(Conv1d { w, b, padding, stride, dilation, groups: 1 })
    }
    /// A plain conv: `weight` `[out, in/groups, k]` and optional `bias`.
    pub fn load(w: &Weights, shape: (usize, usize, usize), bias: bool, padding: usize, stride: usize, dilation: usize) -> Result<Conv1d> {
        let weight = w.get(shape, "weight")?;
        let b = if bias { Some(w.get(shape.0, "bias")?) } else { None };
        Conv1d::new(weight, b, padding, stride, dilation)
    }
    /// A weight-normed conv (`weight_g`/`weight_v`, or a fused `weight`).
    pub fn load_wn(w: &Weights, shape: (usize, usize, usize), bias: bool, padding: usize, dilation: usize, skip_fold: bool) -> Result<Conv1d> {
        let weight = load_weight_norm(w, shape, skip_fold)?;
        let b = if bias { Some(w.get(shape.0, "bias")?) } else { None };
        Conv1d::new(weight, b, padding, 1, dilation)
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.groups == 1 {
            if let Some(y) = crate::dense::conv1d(x, &self.w, self.b.as_ref(), self.padding, self.stride, self.dilation)? {
                return Ok(y);
            }
        }
        // Candle 0.11's CPU conv1d reads a strided kernel as if it were contiguous (its copy is
        // made, then unused): hand it a contiguous one
        let y = x.conv1d(&self.w.contiguous()?, self.padding, self.stride, self.dilation, self.groups)?;
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
    if let Some(y) = crate::norm::layer_norm(x, w, b, eps)? {
        return Ok(y); // f32/f64 CPU: one op per row, in f64, rounded once
    }
    layer_norm_tensor_form(x, w, b, eps)
}

/// LayerNorm as tensor ops (mean, centre, biased variance, ÷√(var + eps), affine): devices and
/// dtypes `norm::layer_norm` does not serve, and its tests' reference.
pub(crate) fn layer_norm_tensor_form(x: &Tensor, w: Option<&Tensor>, b: Option<&Tensor>, eps: f64) -> Result<Tensor> {
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

/// Depthwise conv1d (one filter per channel, stride 1, dilation 1, zero padding) as one pass per
/// row on the rayon pool. Candle runs `groups = C` as C separate convs plus a concat, and a chain of
/// shifted tensor products costs a full pass per tap. Per output: `Σ_j x[t + j]·w[j]`, j ascending
/// (the order of the shifted-sum form, so that form and this one agree bit for bit).
/// `x` `[B, C, T]`, `w` `[C, 1, k]` → `[B, C, T + left + right − k + 1]`. `None` where it does not
/// apply (not on the CPU, or not f32/f64): the caller keeps its tensor form.
pub fn depthwise_conv1d(x: &Tensor, w: &Tensor, left: usize, right: usize) -> Result<Option<Tensor>> {
    use candle_core::DType;
    if !x.device().is_cpu() || !matches!(x.dtype(), DType::F32 | DType::F64) || x.dtype() != w.dtype() || x.dims().len() != 3 {
        return Ok(None);
    }
    let (_, c, t) = x.dims3()?;
    let (wc, one, k) = w.dims3()?;
    if wc != c || one != 1 || k == 0 || t + left + right < k {
        return crate::error::input_err(format!("depthwise conv: input {:?} and weight {:?} do not fit", x.dims(), w.dims()));
    }
    Ok(Some(x.contiguous()?.apply_op2_no_bwd(&w.contiguous()?, &Depthwise { left, right })?))
}

struct Depthwise {
    left: usize,
    right: usize,
}

impl Depthwise {
    fn run<T>(&self, x: &[T], w: &[T], c: usize, t: usize, k: usize) -> Vec<T>
    where
        T: Copy + Send + Sync + Default + std::ops::Add<Output = T> + std::ops::Mul<Output = T>,
    {
        let tp = t + self.left + self.right;
        let n = tp + 1 - k;
        let mut out = vec![T::default(); x.len() / t.max(1) * n];
        if n == 0 {
            return out;
        }
        let dst = SendPtr(out.as_mut_ptr());
        par_for_init(
            x.len() / t.max(1),
            || vec![T::default(); tp],
            |xp, row| {
                // SAFETY: output row `row`, written by this task only
                let o = unsafe { std::slice::from_raw_parts_mut(dst.get().add(row * n), n) };
                xp[self.left..self.left + t].copy_from_slice(&x[row * t..(row + 1) * t]);
                let wr = &w[(row % c) * k..(row % c + 1) * k];
                for (i, v) in o.iter_mut().enumerate() {
                    let mut acc = xp[i] * wr[0];
                    for j in 1..k {
                        acc = acc + xp[i + j] * wr[j];
                    }
                    *v = acc;
                }
            },
        );
        out
    }
}

impl candle_core::CustomOp2 for Depthwise {
    fn name(&self) -> &'static str {
        "depthwise-conv1d"
    }
    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use candle_core::CpuStorage as S;
        let (b, c, t) = l1.shape().dims3()?;
        let k = l2.shape().dims3()?.2;
        let msg = || candle_core::Error::Msg("depthwise conv: contiguous f32/f64 operands of one dtype expected".into());
        let (a0, a1) = l1.contiguous_offsets().ok_or_else(msg)?;
        let (w0, w1) = l2.contiguous_offsets().ok_or_else(msg)?;
        let out = match (s1, s2) {
            (S::F32(x), S::F32(w)) => S::F32(self.run(&x[a0..a1], &w[w0..w1], c, t, k)),
            (S::F64(x), S::F64(w)) => S::F64(self.run(&x[a0..a1], &w[w0..w1], c, t, k)),
            _ => return Err(msg()),
        };
        Ok((out, candle_core::Shape::from((b, c, t + self.left + self.right + 1 - k))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// Against candle's grouped conv (f64: equal to rounding) and bit for bit against the
    /// shifted-sum form, with padding on either side.
    #[test]
    fn depthwise_matches_grouped_conv_and_shifted_sums() -> Result<()> {
        let d = Device::Cpu;
        for (b, c, t, k, l, r) in [(1, 3, 10, 3, 1, 1), (2, 4, 17, 5, 4, 0), (1, 2, 5, 5, 0, 0), (1, 5, 3, 7, 3, 3)] {
            let x = Tensor::randn(0f64, 1.0, (b, c, t), &d)?;
            let w = Tensor::randn(0f64, 1.0, (c, 1, k), &d)?;
            let got = depthwise_conv1d(&x, &w, l, r)?.unwrap();
            let xp = x.pad_with_zeros(2, l, r)?;
            let want = xp.conv1d(&w, 0, 1, 1, c)?;
            let diff = (&got - &want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
            assert!(diff < 1e-12, "{b}x{c}x{t} k{k}: {diff}");
            let n = t + l + r + 1 - k;
            let xp32 = xp.to_dtype(DType::F32)?;
            let w32 = w.to_dtype(DType::F32)?;
            let mut acc = xp32.narrow(2, 0, n)?.broadcast_mul(&w32.narrow(2, 0, 1)?.reshape((1, c, 1))?)?;
            for j in 1..k {
                acc = (acc + xp32.narrow(2, j, n)?.broadcast_mul(&w32.narrow(2, j, 1)?.reshape((1, c, 1))?)?)?;
            }
            let got32 = depthwise_conv1d(&x.to_dtype(DType::F32)?, &w32, l, r)?.unwrap();
            assert_eq!(got32.flatten_all()?.to_vec1::<f32>()?, acc.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(())
    }
}

/// `f(i)` for every i in 0..n on Candle's CPU pool, the one its own ops run on. A kernel on rayon's
/// pool between Candle ops shared the cores with that pool's workers still spinning from the last
/// op (codec block profile: its pointwise linears 151 ms on rayon, 122–128 ms here).
pub(crate) fn par_for(n: usize, f: impl Fn(usize) + Sync) {
    candle_core::utils::barrier_pool().execute_chunked(n, |r| r.for_each(&f));
}

/// [`par_for`] with per-task scratch made by `init` (once per chunk of indices).
pub(crate) fn par_for_init<S>(n: usize, init: impl Fn() -> S + Sync, f: impl Fn(&mut S, usize) + Sync) {
    candle_core::utils::barrier_pool().execute_chunked(n, |r| {
        let mut s = init();
        r.for_each(|i| f(&mut s, i));
    });
}

/// A raw output pointer shared by parallel tasks that write disjoint ranges of one buffer (the
/// fused kernels: mel, CAMPPlus, dense, norms, activations); each user keeps its ranges disjoint.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub(crate) *mut T);
// SAFETY: only disjoint ranges are written through it, one task per range, while the buffer lives.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    // a method, so closures capture the wrapper (Sync), not its raw pointer field
    pub(crate) fn get(&self) -> *mut T {
        self.0
    }
}
