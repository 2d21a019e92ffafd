//! LayerNorm and RMSNorm over the last dim as one op per row, for f32/f64 CPU tensors.
//!
//! The tensor form (`nn::layer_norm`'s fallback) is nine passes over the data, each allocating,
//! on strided views where the caller transposed: the w2v-bert conformer's norms took 160-260 ms of
//! its 4.2 s (10 s of audio, 2 threads, AVX2 EPYC) against torch's 28 ms. Here each row's mean and
//! variance (or mean square) are accumulated in f64 over eight independent lanes (so they
//! vectorise and do not depend on the thread split), and every output is formed in f64 from them
//! and rounded once: closer to the float64 truth than torch's float32 kernel, which the parity
//! rule measures against. Rows are split across Candle's elementwise pool (as `vsin` does).
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};

trait Elem: Copy + Send + Sync + 'static {
    fn f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
}
impl Elem for f32 {
    fn f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> f32 {
        v as f32
    }
}
impl Elem for f64 {
    fn f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> f64 {
        v
    }
}

/// Σ f(x) over a row, in eight f64 lanes summed pairwise at the end.
#[inline(always)]
fn lanes_sum<T: Elem>(xs: &[T], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0f64; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            acc[i] += f(c[i].f64());
        }
    }
    for (i, &v) in chunks.remainder().iter().enumerate() {
        acc[i] += f(v.f64());
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// (x − mean)/√(var + eps), var biased (torch's LayerNorm)
    Layer,
    /// x/√(mean(x²) + eps)
    Rms,
}

struct RowNorm {
    kind: Kind,
    w: Option<Vec<f64>>,
    b: Option<Vec<f64>>,
    eps: f64,
}

impl RowNorm {
    fn row<T: Elem>(&self, x: &[T], y: &mut [T]) {
        let n = x.len() as f64;
        let (mean, var) = match self.kind {
            Kind::Layer => {
                let mean = lanes_sum(x, |v| v) / n;
                (mean, lanes_sum(x, |v| (v - mean) * (v - mean)) / n)
            }
            Kind::Rms => (0.0, lanes_sum(x, |v| v * v) / n),
        };
        let r = 1.0 / (var + self.eps).sqrt();
        match (&self.w, &self.b) {
            (Some(w), Some(b)) => y.iter_mut().zip(x).zip(w.iter().zip(b)).for_each(|((y, &x), (&w, &b))| *y = T::from_f64((x.f64() - mean) * r * w + b)),
            (Some(w), None) => y.iter_mut().zip(x).zip(w).for_each(|((y, &x), &w)| *y = T::from_f64((x.f64() - mean) * r * w)),
            (None, Some(b)) => y.iter_mut().zip(x).zip(b).for_each(|((y, &x), &b)| *y = T::from_f64((x.f64() - mean) * r + b)),
            (None, None) => y.iter_mut().zip(x).for_each(|(y, &x)| *y = T::from_f64((x.f64() - mean) * r)),
        }
    }

    fn run<T: Elem>(&self, xs: &[T], shape: &Shape) -> Vec<T> {
        let d = shape.dims().last().copied().unwrap_or(1).max(1);
        let rows = xs.len() / d;
        let mut out: Vec<T> = Vec::with_capacity(xs.len());
        let dst = crate::nn::SendPtr(out.as_mut_ptr());
        // about 16k elements a unit: small tensors stay on this thread
        let per = (16_384 / d).max(1);
        let work = |range: std::ops::Range<usize>| {
            for u in range {
                for r in u * per..((u + 1) * per).min(rows) {
                    // SAFETY: row r of `out`'s capacity, written by this unit only; read back by no one
                    // until every unit is done
                    let y = unsafe { std::slice::from_raw_parts_mut(dst.get().add(r * d), d) };
                    self.row(&xs[r * d..(r + 1) * d], y);
                }
            }
        };
        let units = rows.div_ceil(per);
        if units > 1 {
            candle_core::utils::barrier_pool().execute_chunked(units, work);
        } else {
            work(0..units);
        }
        // SAFETY: the units cover every row, and each row writes all d of its elements
        unsafe { out.set_len(rows * d) };
        out
    }
}

impl CustomOp1 for RowNorm {
    fn name(&self) -> &'static str {
        "row-norm"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (a, z) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("row-norm needs a contiguous input".into()))?;
        Ok(match s {
            CpuStorage::F32(v) => (CpuStorage::F32(self.run(&v[a..z], l.shape())), l.shape().clone()),
            CpuStorage::F64(v) => (CpuStorage::F64(self.run(&v[a..z], l.shape())), l.shape().clone()),
            _ => return Err(candle_core::Error::Msg("row-norm: f32/f64 only".into())),
        })
    }
}

fn apply(kind: Kind, x: &Tensor, w: Option<&Tensor>, b: Option<&Tensor>, eps: f64) -> Result<Option<Tensor>> {
    if !matches!(x.dtype(), DType::F32 | DType::F64) || !x.device().is_cpu() {
        return Ok(None);
    }
    let d = x.dims().last().copied().unwrap_or(1);
    let vec = |t: Option<&Tensor>| -> Result<Option<Vec<f64>>> {
        t.map(|t| {
            if t.elem_count() != d {
                candle_core::bail!("row-norm: a parameter of {} values for rows of {d}", t.elem_count())
            }
            t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()
        })
        .transpose()
    };
    let op = RowNorm { kind, w: vec(w)?, b: vec(b)?, eps };
    Ok(Some(x.contiguous()?.apply_op1_no_bwd(&op)?))
}

/// `LayerNorm` over the last dim (biased variance, torch's), optional affine parameters; None for
/// dtypes and devices this op does not serve (the caller's tensor form runs).
pub fn layer_norm(x: &Tensor, w: Option<&Tensor>, b: Option<&Tensor>, eps: f64) -> Result<Option<Tensor>> {
    apply(Kind::Layer, x, w, b, eps)
}

/// `RMSNorm` over the last dim: x/√(mean(x²) + eps)·w; None as `layer_norm`.
pub fn rms_norm(x: &Tensor, w: Option<&Tensor>, eps: f64) -> Result<Option<Tensor>> {
    apply(Kind::Rms, x, w, None, eps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    fn tensor_layer_norm(x: &Tensor, w: Option<&Tensor>, b: Option<&Tensor>, eps: f64) -> Result<Tensor> {
        crate::nn::layer_norm_tensor_form(x, w, b, eps).map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    fn max_abs(a: &Tensor, b: &Tensor) -> Result<f64> {
        (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()
    }

    /// In f64 the op and the tensor form agree to rounding (1e-13), with and without each
    /// parameter, for rows above and below the unit size, a strided input and an offset mean (the
    /// two-pass variance keeps it). In f32 the op is the f64 result rounded once.
    #[test]
    fn matches_the_tensor_form() -> Result<()> {
        let dev = Device::Cpu;
        for (rows, d) in [(3, 5), (700, 64), (37, 1024), (2, 20_000)] {
            let x = ((Tensor::randn(0f64, 2.0, (1, rows, d), &dev)? + 40.0)?).contiguous()?;
            let w = Tensor::randn(1f64, 0.3, d, &dev)?;
            let b = Tensor::randn(0f64, 0.3, d, &dev)?;
            for (wo, bo) in [(Some(&w), Some(&b)), (Some(&w), None), (None, Some(&b)), (None, None)] {
                let want = tensor_layer_norm(&x, wo, bo, 1e-5)?;
                let got = layer_norm(&x, wo, bo, 1e-5)?.unwrap();
                assert!(max_abs(&got, &want)? < 1e-12, "rows {rows} d {d}: {}", max_abs(&got, &want)?);
                let got32 = layer_norm(&x.to_dtype(DType::F32)?, wo.map(|t| t.to_dtype(DType::F32)).transpose()?.as_ref(), bo.map(|t| t.to_dtype(DType::F32)).transpose()?.as_ref(), 1e-5)?.unwrap();
                let r32 = |t: Option<&Tensor>| t.map(|t| t.to_dtype(DType::F32)?.to_dtype(DType::F64)).transpose();
                let want64 = tensor_layer_norm(&x.to_dtype(DType::F32)?.to_dtype(DType::F64)?, r32(wo)?.as_ref(), r32(bo)?.as_ref(), 1e-5)?;
                for (g, w) in got32.flatten_all()?.to_vec1::<f32>()?.into_iter().zip(want64.flatten_all()?.to_vec1::<f64>()?) {
                    // within half an ulp of f32 at the f64 value (plus the f64 forms' 1e-12)
                    let ulp = 2f64.powi((w.abs().log2().floor() as i32).max(-126) - 23);
                    assert!((g as f64 - w).abs() <= 0.5 * ulp + 1e-12, "f32 rows {rows} d {d}: {g} vs {w}");
                }
            }
            let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
            let want = x.broadcast_div(&(ms + 1e-6)?.sqrt()?)?.broadcast_mul(&w)?;
            assert!(max_abs(&rms_norm(&x, Some(&w), 1e-6)?.unwrap(), &want)? < 1e-12);
        }
        // a transposed (strided) input: the op makes it contiguous first
        let x = Tensor::randn(0f64, 1.0, (2, 64, 30), &dev)?.transpose(1, 2)?;
        assert!(max_abs(&layer_norm(&x, None, None, 1e-5)?.unwrap(), &tensor_layer_norm(&x, None, None, 1e-5)?)? < 1e-12);
        // a parameter of the wrong length is an error, not a silent broadcast
        assert!(layer_norm(&x, Some(&Tensor::ones(63, DType::F64, &dev)?), None, 1e-5).is_err());
        // other dtypes are not served
        assert!(layer_norm(&x.to_dtype(DType::F16)?, None, None, 1e-5)?.is_none());
        Ok(())
    }
}
