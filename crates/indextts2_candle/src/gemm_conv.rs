//! Dense conv1d (`groups = 1`) on the CPU as one gemm per kernel tap over shifted views of the
//! padded input: `y[:, t] = b + Σ_j W[:, :, j] · x[:, s·t + d·j]`, accumulated in the output.
//!
//! Candle's CPU conv1d builds an im2col matrix `[L, C_in·k]` with a gather, multiplies, then copies
//! the `[L, C_out]` product into `[C_out, L]`. On BigVGAN's shapes that ran at 12–80 GFLOP/s against
//! torch's 60–125 (`examples/bv_convs.rs`); here the only copy is the zero-padded input, the output
//! lands in place with its bias, and the time axis is split across threads (each split runs gemm
//! single-threaded over all of C_out, so thin channel counts still fill both cores).
//!
//! A weight stored tap-major (`[k, C_out, C_in]` memory, seen as `[C_out, C_in, k]` through
//! strides: [`tap_major`]) gives each tap a contiguous `[C_out, C_in]` matrix; any other layout
//! works through its strides, slower at large C_in (gemm repacks a strided matrix).
use crate::error::Result;
use candle_core::{CpuStorage, DType, Layout, Shape, Tensor};

/// The same weight, its memory reordered tap-major (`[k, C_out, C_in]`) and viewed back as
/// `[C_out, C_in, k]`: equal values, equal shape, so every other use of the weight is unchanged.
pub fn tap_major(w: &Tensor) -> Result<Tensor> {
    if !w.device().is_cpu() || w.rank() != 3 || w.dim(2)? == 1 {
        return Ok(w.clone());
    }
    Ok(w.permute((2, 0, 1))?.contiguous()?.permute((1, 2, 0))?)
}

/// `conv1d(x, w) + b` (zero padding, `groups = 1`) for f32/f64 CPU tensors; `None` elsewhere (the
/// caller keeps Candle's conv).
pub fn conv1d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    padding: usize,
    stride: usize,
    dilation: usize,
) -> Result<Option<Tensor>> {
    let dt = x.dtype();
    if !x.device().is_cpu()
        || !matches!(dt, DType::F32 | DType::F64)
        || w.dtype() != dt
        || b.is_some_and(|b| b.dtype() != dt)
    {
        return Ok(None);
    }
    let (_, cin, l) = x.dims3()?;
    let (cout, wcin, k) = w.dims3()?;
    let span = dilation * (k.max(1) - 1) + 1;
    if wcin != cin
        || k == 0
        || stride == 0
        || dilation == 0
        || l + 2 * padding < span
        || b.is_some_and(|b| b.dims() != [cout])
    {
        return crate::error::input_err(format!(
            "conv1d: input {:?}, weight {:?} and bias {:?} do not fit",
            x.dims(),
            w.dims(),
            b.map(|b| b.dims().to_vec())
        ));
    }
    let op = GemmConv {
        padding,
        stride,
        dilation,
    };
    let x = x.contiguous()?;
    Ok(Some(match b {
        Some(b) => x.apply_op3_no_bwd(w, &b.contiguous()?, &op)?,
        None => x.apply_op2_no_bwd(w, &op)?,
    }))
}

struct GemmConv {
    padding: usize,
    stride: usize,
    dilation: usize,
}

/// A raw pointer handed to the threads; each writes its own disjoint output columns.
#[derive(Clone, Copy)]
struct Ptr<T>(*mut T);
// SAFETY: units write disjoint ranges of one buffer that outlives the parallel loop.
unsafe impl<T> Send for Ptr<T> {}
unsafe impl<T> Sync for Ptr<T> {}

impl GemmConv {
    fn out_len(&self, l: usize, k: usize) -> usize {
        (l + 2 * self.padding - self.dilation * (k - 1) - 1) / self.stride + 1
    }

    fn run<T>(
        &self,
        x: &[T],
        xl: &Layout,
        w: &[T],
        wl: &Layout,
        bias: Option<&[T]>,
    ) -> candle_core::Result<(Vec<T>, Shape)>
    where
        T: Copy + Default + Send + Sync + 'static + num_like::One,
    {
        use rayon::prelude::*;
        let (b, cin, l) = xl.shape().dims3()?;
        let (cout, _, k) = wl.shape().dims3()?;
        let ws = wl.stride();
        let w0 = wl.start_offset();
        let x = &x[xl.start_offset()..xl.start_offset() + b * cin * l];
        let lo = self.out_len(l, k);
        let lp = l + 2 * self.padding;
        // the zero-padded input (the input itself when there is no padding)
        let padded;
        let xp: &[T] = if self.padding == 0 {
            x
        } else {
            let mut v = vec![T::default(); b * cin * lp];
            v.par_chunks_mut(lp)
                .zip(x.par_chunks(l))
                .for_each(|(d, s)| d[self.padding..self.padding + l].copy_from_slice(s));
            padded = v;
            &padded
        };
        let mut out = vec![T::default(); b * cout * lo];
        // column splits: a multiple of 16 outputs (gemm's row block), enough of them for every thread
        let nt = candle_core::utils::get_num_threads().max(1);
        let per_batch = if b >= nt { 1 } else { nt.div_ceil(b) };
        let chunk = lo.div_ceil(per_batch).div_ceil(16) * 16;
        let splits = lo.div_ceil(chunk);
        let dst = Ptr(out.as_mut_ptr());
        (0..b * splits).into_par_iter().for_each(|u| {
            let dst = dst;
            let (bi, t0) = (u / splits, (u % splits) * chunk);
            let n = chunk.min(lo - t0);
            // SAFETY: unit u owns columns t0..t0+n of every output row of batch bi
            let d = unsafe { dst.0.add(bi * cout * lo + t0) };
            if let Some(bias) = bias {
                for (co, &bv) in bias.iter().enumerate() {
                    unsafe { std::slice::from_raw_parts_mut(d.add(co * lo), n) }.fill(bv);
                }
            }
            let xb = &xp[bi * cin * lp..];
            for j in 0..k {
                // SAFETY: tap j's weight matrix and the shifted input view stay inside their buffers
                // (strides from the layouts; the last column read is s·(t0+n−1) + d·j < lp)
                unsafe {
                    gemm::gemm(
                        cout,
                        n,
                        cin,
                        d,
                        1,
                        lo as isize,
                        bias.is_some() || j > 0,
                        w.as_ptr().add(w0 + j * ws[2]),
                        ws[1] as isize,
                        ws[0] as isize,
                        xb.as_ptr().add(self.stride * t0 + self.dilation * j),
                        self.stride as isize,
                        lp as isize,
                        T::one(),
                        T::one(),
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }
        });
        Ok((out, Shape::from((b, cout, lo))))
    }

    fn dispatch(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        b: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let err =
            || candle_core::Error::Msg("conv1d: f32/f64 operands of one dtype expected".into());
        let bias = |bl: &Layout| bl.contiguous_offsets().ok_or_else(err);
        Ok(match (x, w, b) {
            (CpuStorage::F32(x), CpuStorage::F32(w), None) => {
                let (o, s) = self.run(x, xl, w, wl, None)?;
                (CpuStorage::F32(o), s)
            }
            (CpuStorage::F32(x), CpuStorage::F32(w), Some((CpuStorage::F32(bv), bl))) => {
                let (o0, o1) = bias(bl)?;
                let (o, s) = self.run(x, xl, w, wl, Some(&bv[o0..o1]))?;
                (CpuStorage::F32(o), s)
            }
            (CpuStorage::F64(x), CpuStorage::F64(w), None) => {
                let (o, s) = self.run(x, xl, w, wl, None)?;
                (CpuStorage::F64(o), s)
            }
            (CpuStorage::F64(x), CpuStorage::F64(w), Some((CpuStorage::F64(bv), bl))) => {
                let (o0, o1) = bias(bl)?;
                let (o, s) = self.run(x, xl, w, wl, Some(&bv[o0..o1]))?;
                (CpuStorage::F64(o), s)
            }
            _ => return Err(err()),
        })
    }
}

mod num_like {
    pub trait One {
        fn one() -> Self;
    }
    impl One for f32 {
        fn one() -> f32 {
            1.0
        }
    }
    impl One for f64 {
        fn one() -> f64 {
            1.0
        }
    }
}

impl candle_core::CustomOp2 for GemmConv {
    fn name(&self) -> &'static str {
        "gemm-conv1d"
    }
    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.dispatch(x, xl, w, wl, None)
    }
}

impl candle_core::CustomOp3 for GemmConv {
    fn name(&self) -> &'static str {
        "gemm-conv1d-bias"
    }
    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.dispatch(x, xl, w, wl, Some((b, bl)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Against Candle's conv1d + bias in f64 (equal to rounding), for every stride / dilation /
    /// padding mix the models use, batch > threads and batch < threads, and both weight layouts.
    #[test]
    fn matches_candle_conv1d() -> Result<()> {
        let d = Device::Cpu;
        for (b, cin, cout, l, k, p, s, dil) in [
            (1, 3, 5, 40, 3, 1, 1, 1),
            (2, 4, 6, 37, 5, 2, 2, 1),
            (3, 8, 2, 50, 7, 15, 1, 5),
            (1, 2, 3, 5, 1, 0, 1, 1),
            (1, 6, 4, 9, 11, 5, 1, 1),
            (2, 5, 7, 300, 3, 1, 2, 1),
        ] {
            let x = Tensor::randn(0f64, 1.0, (b, cin, l), &d)?;
            let w = Tensor::randn(0f64, 1.0, (cout, cin, k), &d)?;
            let bias = Tensor::randn(0f64, 1.0, cout, &d)?;
            let want = x
                .conv1d(&w, p, s, dil, 1)?
                .broadcast_add(&bias.reshape((1, cout, 1))?)?;
            for w in [w.clone(), tap_major(&w)?] {
                let got = conv1d(&x, &w, Some(&bias), p, s, dil)?.unwrap();
                assert_eq!(got.dims(), want.dims());
                let diff = (&got - &want)?
                    .abs()?
                    .flatten_all()?
                    .max(0)?
                    .to_scalar::<f64>()?;
                assert!(
                    diff < 1e-12,
                    "{b}x{cin}→{cout} L{l} k{k} p{p} s{s} d{dil}: {diff}"
                );
                let nobias = conv1d(&x, &w, None, p, s, dil)?.unwrap();
                let diff = (nobias - x.conv1d(&w.contiguous()?, p, s, dil, 1)?)?
                    .abs()?
                    .flatten_all()?
                    .max(0)?
                    .to_scalar::<f64>()?;
                assert!(diff < 1e-12);
            }
        }
        Ok(())
    }

    #[test]
    fn refuses_mismatched_shapes() -> Result<()> {
        let d = Device::Cpu;
        let x = Tensor::zeros((1, 3, 10), DType::F32, &d)?;
        assert!(conv1d(
            &x,
            &Tensor::zeros((2, 4, 3), DType::F32, &d)?,
            None,
            1,
            1,
            1
        )
        .is_err());
        assert!(conv1d(
            &x,
            &Tensor::zeros((2, 3, 13), DType::F32, &d)?,
            None,
            1,
            1,
            1
        )
        .is_err());
        assert!(conv1d(
            &x,
            &Tensor::zeros((2, 3, 3), DType::F32, &d)?,
            Some(&Tensor::zeros(3, DType::F32, &d)?),
            1,
            1,
            1
        )
        .is_err());
        Ok(())
    }
}
