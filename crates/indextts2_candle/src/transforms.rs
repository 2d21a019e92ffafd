//! Load-time transforms as small pure functions. Each one is unit-tested against values produced
//! by PyTorch (see `tests/test_transforms.py`, which drives them through the bindings, and the
//! Rust unit tests below for the algebra).
use crate::error::Result;
use crate::store::Weights;
use candle_core::{Shape, Tensor, D};

/// `torch.nn.utils.weight_norm` with dim 0: `w = g · v / ‖v‖`, the norm taken over every dim but 0.
/// For a ConvTranspose1d weight `[Cin, Cout, k]` dim 0 is in_channels, so `g` is `[Cin, 1, 1]`.
pub fn weight_norm_fold(g: &Tensor, v: &Tensor) -> Result<Tensor> {
    let rows = v.dim(0)?;
    let flat = v.reshape((rows, ()))?;
    let norm = flat.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?; // [rows, 1]
    let g = g.reshape((rows, 1))?;
    Ok(flat.broadcast_mul(&g.broadcast_div(&norm)?)?.reshape(v.shape())?)
}

/// `weight_norm_fold` computed in f64 and rounded once to `v`'s dtype. On CPU f32 it is the load's
/// one-pass fold ([`crate::fastload::fold_weight_norm`]) over the tensors' memory, instead of
/// widening both tensors and five tensor passes.
pub fn weight_norm_fold_f64(g: &Tensor, v: &Tensor) -> Result<Tensor> {
    fold_f64(g, v, false)
}

/// [`weight_norm_fold_f64`] of a conv weight `[C_out, C_in, k]`, written tap-major in the same pass
/// (the layout of [`crate::dense::tap_major`]: the values and shape are the same; the load makes
/// one pass over the weight, not two).
pub fn weight_norm_fold_f64_tap_major(g: &Tensor, v: &Tensor) -> Result<Tensor> {
    fold_f64(g, v, true)
}

fn fold_f64(g: &Tensor, v: &Tensor, tap_major: bool) -> Result<Tensor> {
    use candle_core::DType;
    let tap_major = tap_major && v.rank() == 3 && v.dim(2)? > 1;
    let f32_cpu = v.device().is_cpu() && v.dtype() == DType::F32 && g.dtype() == DType::F32 && cfg!(target_endian = "little");
    if f32_cpu && v.rank() > 0 {
        let rows = v.dim(0)?;
        let gs = g.flatten_all()?.to_vec1::<f32>()?;
        if gs.len() != rows || rows == 0 {
            return crate::error::input_err(format!("weight norm: g has {} values for {rows} rows", gs.len()));
        }
        let src = v.contiguous()?.flatten_all()?;
        let (st, l) = src.storage_and_layout();
        let candle_core::Storage::Cpu(candle_core::CpuStorage::F32(vs)) = &*st else {
            return crate::error::input_err("weight norm: f32 CPU storage expected");
        };
        let vs = &vs[l.start_offset()..l.start_offset() + v.elem_count()];
        // SAFETY: f32 buffers viewed as their little-endian bytes (same memory, 4 bytes per value)
        let (gb, vb) = unsafe {
            (std::slice::from_raw_parts(gs.as_ptr() as *const u8, gs.len() * 4), std::slice::from_raw_parts(vs.as_ptr() as *const u8, vs.len() * 4))
        };
        // the load's own fold (straight from the file's bytes there); `None`: a non-finite value,
        // which the tensor form below carries through as torch does
        let (ci, k) = if tap_major { (v.dim(1)?, v.dim(2)?) } else { (vs.len() / rows, 1) };
        if let Some(w) = crate::fastload::fold_weight_norm(gb, vb, rows, ci, k, tap_major)? {
            return if tap_major { Ok(w) } else { Ok(w.reshape(v.shape())?) };
        }
    }
    let w = weight_norm_fold(&g.to_dtype(DType::F64)?, &v.to_dtype(DType::F64)?)?.to_dtype(v.dtype())?;
    if tap_major { crate::dense::tap_major(&w) } else { Ok(w) }
}

/// Loads a weight-normed parameter: `weight_g` + `weight_v` folded in f64 and rounded once
/// ([`weight_norm_fold_f64`]; on CPU f32 straight from the file's bytes, one pass into new memory),
/// or an already fused `weight` (BigVGAN's `from_pretrained` accepts both). `skip_fold` is the
/// fault switch that uses `v` as is.
pub fn load_weight_norm<S: Into<Shape>>(w: &Weights, v_shape: S, skip_fold: bool) -> Result<Tensor> {
    let v_shape: Shape = v_shape.into();
    if w.contains("weight_v") || !w.contains("weight") {
        if !skip_fold {
            if let Some(t) = w.fold_weight_norm(v_shape.clone(), false)? {
                return Ok(t);
            }
        }
        let mut g_dims = vec![1usize; v_shape.rank()];
        g_dims[0] = v_shape.dims()[0];
        let g = w.get(g_dims, "weight_g")?;
        let v = w.get(v_shape, "weight_v")?;
        if skip_fold {
            return Ok(v);
        }
        weight_norm_fold_f64(&g, &v)
    } else {
        w.get(v_shape, "weight")
    }
}

/// GPT-2 `Conv1D` stores its weight as `[in, out]`; a Linear wants `[out, in]`. (The model load
/// transposes straight from the file, `Weights::get_t`; this is the same permutation on a tensor.)
pub fn conv1d_to_linear(w: &Tensor) -> Result<Tensor> {
    if w.rank() == 2 && w.dtype() == candle_core::DType::F32 && w.device().is_cpu() && cfg!(target_endian = "little") {
        let (rows, cols) = w.dims2()?;
        let v = w.flatten_all()?.to_vec1::<f32>()?;
        // SAFETY: the f32 buffer viewed as its little-endian bytes (same memory, same length in bytes)
        let bytes = unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 4) };
        if let Some(t) = crate::fastload::fill(bytes, crate::fastload::Conv::F32ToF32, Some((rows, cols)), rows * cols)? {
            return Ok(t.reshape((cols, rows))?);
        }
    }
    Ok(w.t()?.contiguous()?)
}

/// Splits a fused tensor along `dim` into consecutive pieces of the given sizes, in stored order
/// (e.g. `c_attn` q‖k‖v, Perceiver `to_kv` k‖v, DiT `wqkv`, AdaLN scale‖bias).
pub fn split_fused(t: &Tensor, dim: usize, sizes: &[usize]) -> Result<Vec<Tensor>> {
    let total: usize = sizes.iter().sum();
    if t.dim(dim)? != total {
        return crate::error::input_err(format!(
            "cannot split dim {dim} of size {} into {sizes:?}",
            t.dim(dim)?
        ));
    }
    let mut out = Vec::with_capacity(sizes.len());
    let mut start = 0;
    for &s in sizes {
        out.push(t.narrow(dim, start, s)?.contiguous()?);
        start += s;
    }
    Ok(out)
}

/// Snake/SnakeBeta store α and β on a log scale when `snake_logscale` is true.
pub fn snake_param(stored: &Tensor, logscale: bool) -> Result<Tensor> {
    Ok(if logscale { stored.exp()? } else { stored.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn blocked_transpose_equals_strided_copy() {
        for (r, c) in [(1, 1), (3, 130), (129, 65), (200, 64)] {
            let v: Vec<f32> = (0..r * c).map(|i| i as f32 * 0.5 - 7.0).collect();
            let w = Tensor::from_vec(v, (r, c), &Device::Cpu).unwrap();
            let fast = conv1d_to_linear(&w).unwrap();
            let slow = w.t().unwrap().contiguous().unwrap();
            assert_eq!(fast.dims(), &[c, r]);
            assert_eq!(fast.to_vec2::<f32>().unwrap(), slow.to_vec2::<f32>().unwrap());
        }
    }

    #[test]
    fn fused_f64_fold_equals_the_tensor_fold() {
        let d = Device::Cpu;
        let (r, c) = (37, 211);
        let v: Vec<f32> = (0..r * c).map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3).collect();
        let v = Tensor::from_vec(v, (r, c, 1), &d).unwrap();
        let g = Tensor::from_vec((0..r).map(|i| 0.5 + i as f32 * 0.1).collect::<Vec<f32>>(), (r, 1, 1), &d).unwrap();
        let want = weight_norm_fold(&g.to_dtype(candle_core::DType::F64).unwrap(), &v.to_dtype(candle_core::DType::F64).unwrap())
            .unwrap().to_dtype(candle_core::DType::F32).unwrap();
        let got = weight_norm_fold_f64(&g, &v).unwrap();
        let (a, b) = (got.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        // the same f64 formula; only the order of the row sum may differ (≤ 1 f32 ulp after rounding)
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= f32::EPSILON * y.abs(), "{x} vs {y}");
        }
        // the tap-major fold of a [37, 13, 7] conv weight: the same bits under the same shape,
        // tap-major strides
        let v: Vec<f32> = (0..r * 13 * 7).map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3).collect();
        let v = Tensor::from_vec(v, (r, 13, 7), &d).unwrap();
        let plain = weight_norm_fold_f64(&g, &v).unwrap();
        let tm = weight_norm_fold_f64_tap_major(&g, &v).unwrap();
        assert_eq!(tm.dims(), plain.dims());
        assert_eq!(tm.layout().stride(), &[13, 1, r * 13]);
        assert_eq!(tm.contiguous().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), plain.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }

    #[test]
    fn weight_norm_rows_have_norm_g() {
        let d = Device::Cpu;
        let v = Tensor::new(&[[[3f32, 4.0]], [[1.0, 0.0]]], &d).unwrap(); // [2,1,2]
        let g = Tensor::new(&[[[10f32]], [[2.0]]], &d).unwrap();
        let w = weight_norm_fold(&g, &v).unwrap();
        assert_eq!(w.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![6.0, 8.0, 2.0, 0.0]);
    }

    #[test]
    fn split_keeps_stored_order() {
        let d = Device::Cpu;
        let t = Tensor::arange(0f32, 6.0, &d).unwrap();
        let p = split_fused(&t, 0, &[2, 4]).unwrap();
        assert_eq!(p[0].to_vec1::<f32>().unwrap(), vec![0.0, 1.0]);
        assert_eq!(p[1].to_vec1::<f32>().unwrap(), vec![2.0, 3.0, 4.0, 5.0]);
        assert!(split_fused(&t, 0, &[2, 3]).is_err());
    }

    #[test]
    fn conv1d_transpose_is_t() {
        let d = Device::Cpu;
        let t = Tensor::new(&[[1f32, 2.0, 3.0]], &d).unwrap(); // [in=1, out=3]
        assert_eq!(conv1d_to_linear(&t).unwrap().dims(), &[3, 1]);
    }
}
