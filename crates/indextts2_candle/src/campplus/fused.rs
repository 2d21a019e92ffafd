//! One-pass CPU kernels for CAM++: the per-channel affine of an eval BatchNorm (optionally plus a
//! residual, then ReLU), the 2-D head convs (blocked im2col + gemm) and the dilated CAM conv's im2col.
//! Candle runs each of `x·s`, `+b`, `+r`, `relu` as its own allocating pass, and those over 64 K
//! elements go through its spin-barrier pool, which on a loaded 2-core machine waited most of the
//! time (profile: 390 of 980 ms in the dense layers' BN + ReLU). The affine computes `x·s + b` in
//! f32 with the same two roundings as the mul-then-add it replaces (no FMA), so taps are unchanged.
use crate::nn::{par_for, par_for_init, SendPtr};
use crate::error::Result;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};

fn msg(s: &str) -> candle_core::Error {
    candle_core::Error::Msg(s.to_string())
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let (a, b) = l.contiguous_offsets().ok_or_else(|| msg("campplus fused op: contiguous input needed"))?;
    match s {
        CpuStorage::F32(v) => Ok(&v[a..b]),
        _ => Err(msg("campplus fused op: f32 only")),
    }
}

/// `y[b, c, …] = x·scale[c] + shift[c] (+ r) (then max(·, 0))` on `[B, C, …]`.
struct Affine<'a> {
    scale: &'a [f32],
    shift: &'a [f32],
    relu: bool,
}

impl Affine<'_> {
    fn run(&self, x: &[f32], r: Option<&[f32]>, shape: &Shape) -> candle_core::Result<Vec<f32>> {
        let dims = shape.dims();
        let c = self.scale.len();
        if dims.len() < 2 || dims[1] != c || self.shift.len() != c {
            return Err(msg("campplus affine: channel count mismatch"));
        }
        let inner: usize = dims[2..].iter().product();
        let mut out = vec![0f32; x.len()];
        for (i, (o, xv)) in out.chunks_mut(inner.max(1)).zip(x.chunks(inner.max(1))).enumerate() {
            let (s, b) = (self.scale[i % c], self.shift[i % c]);
            match r {
                None => o.iter_mut().zip(xv).for_each(|(o, &v)| *o = v * s + b),
                Some(r) => {
                    let rv = &r[i * inner..(i + 1) * inner];
                    o.iter_mut().zip(xv).zip(rv).for_each(|((o, &v), &r)| *o = (v * s + b) + r)
                }
            }
            if self.relu {
                o.iter_mut().for_each(|v| *v = v.max(0.0));
            }
        }
        Ok(out)
    }
}

impl CustomOp1 for Affine<'_> {
    fn name(&self) -> &'static str {
        "campplus-affine"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((CpuStorage::F32(self.run(f32_slice(s, l)?, None, l.shape())?), l.shape().clone()))
    }
}

impl CustomOp2 for Affine<'_> {
    fn name(&self) -> &'static str {
        "campplus-affine-residual"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            return Err(msg("campplus affine: residual shape mismatch"));
        }
        Ok((CpuStorage::F32(self.run(f32_slice(s1, l1)?, Some(f32_slice(s2, l2)?), l1.shape())?), l1.shape().clone()))
    }
}

/// Whether the one-pass kernels apply (CPU f32); otherwise callers use the tensor ops.
pub fn usable(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// `relu?(x·scale + shift (+ residual))` per channel (dim 1), one pass.
pub fn affine(x: &Tensor, scale: &[f32], shift: &[f32], residual: Option<&Tensor>, relu: bool) -> Result<Tensor> {
    let op = Affine { scale, shift, relu };
    let x = x.contiguous()?;
    Ok(match residual {
        None => x.apply_op1_no_bwd(&op)?,
        Some(r) => x.apply_op2_no_bwd(&r.contiguous()?, &op)?,
    })
}

/// The CAM layer's context on `[B, C, T]`: per row, the mean over T plus the mean of the row's
/// segment of `seg` frames (the last one shorter: avg_pool1d with ceil_mode), each mean summed in
/// f64 and rounded to f32 once, then added in f32 (the tensor form: two f32 means, one add).
/// `per_segment`: one column per segment, `[B, C, ⌈T/seg⌉]` (the values the full form repeats).
struct Context {
    seg: usize,
    per_segment: bool,
}

impl CustomOp1 for Context {
    fn name(&self) -> &'static str {
        "cam-context"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l)?;
        let t = *l.dims().last().ok_or_else(|| msg("cam context: scalar input"))?;
        let seg = self.seg.max(1);
        let rows = if t == 0 { 0 } else { x.len() / t };
        // output columns per row, and frames per output column
        let (cols, rep) = if self.per_segment { (t.div_ceil(seg), 1) } else { (t, seg) };
        let mut out: Vec<f32> = Vec::with_capacity(rows * cols);
        let dst = SendPtr(out.as_mut_ptr());
        let row = |r: usize| {
            let xr = &x[r * t..(r + 1) * t];
            // SAFETY: row r of `out`'s capacity, written by this call only
            let y = unsafe { std::slice::from_raw_parts_mut(dst.get().add(r * cols), cols) };
            let mean = (xr.iter().map(|&v| v as f64).sum::<f64>() / t as f64) as f32;
            for (xs, ys) in xr.chunks(seg).zip(y.chunks_mut(rep)) {
                let m = (xs.iter().map(|&v| v as f64).sum::<f64>() / xs.len() as f64) as f32;
                ys.iter_mut().for_each(|v| *v = mean + m);
            }
        };
        par_for(rows, row);
        // SAFETY: every row was written in full
        unsafe { out.set_len(rows * cols) };
        let mut dims = l.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = cols;
        }
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

/// `x.mean(-1) + seg_pooling(x)` of CAM++ on f32 `[B, C, T]`, one pass per row.
pub fn context(x: &Tensor, seg: usize) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1_no_bwd(&Context { seg, per_segment: false })?)
}

/// [`context`] with one column per segment, `[B, C, ⌈T/seg⌉]`: the CAM layer's 1×1 convs and
/// sigmoid then run on ⌈T/seg⌉ columns instead of T identical ones.
pub fn context_per_segment(x: &Tensor, seg: usize) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1_no_bwd(&Context { seg, per_segment: true })?)
}

/// `y · m` with `m` `[B, C, ⌈T/seg⌉]` repeated over each segment of `y` `[B, C, T]` (the same
/// f32 products as `y * m_full`).
struct SegmentMul(usize);

impl CustomOp2 for SegmentMul {
    fn name(&self) -> &'static str {
        "cam-segment-mul"
    }
    fn cpu_fwd(&self, ys: &CpuStorage, yl: &Layout, ms: &CpuStorage, ml: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (y, m) = (f32_slice(ys, yl)?, f32_slice(ms, ml)?);
        let (b, c, t) = yl.shape().dims3()?;
        let seg = self.0.max(1);
        let cols = t.div_ceil(seg);
        if ml.dims() != [b, c, cols] {
            return Err(msg(&format!("cam segment mul: gate {:?} for input {:?} (segments of {seg})", ml.dims(), yl.dims())));
        }
        let mut out: Vec<f32> = Vec::with_capacity(y.len());
        let dst = SendPtr(out.as_mut_ptr());
        par_for(b * c, |r| {
            // SAFETY: row r of `out`'s capacity, written by this call only
            let o = unsafe { std::slice::from_raw_parts_mut(dst.get().add(r * t), t) };
            let mr = &m[r * cols..(r + 1) * cols];
            for ((os, xs), &g) in o.chunks_mut(seg).zip(y[r * t..(r + 1) * t].chunks(seg)).zip(mr) {
                os.iter_mut().zip(xs).for_each(|(o, &x)| *o = x * g);
            }
        });
        // SAFETY: every row was written in full
        unsafe { out.set_len(y.len()) };
        Ok((CpuStorage::F32(out), yl.shape().clone()))
    }
}

pub fn segment_mul(y: &Tensor, m: &Tensor, seg: usize) -> Result<Tensor> {
    Ok(y.contiguous()?.apply_op2_no_bwd(&m.contiguous()?, &SegmentMul(seg))?)
}

/// A 1×1 conv with bias on f32 `[B, cin, N]`, each output formed in f64 over cin in order and
/// rounded once: a column's bits depend on that column alone (gemm's do not: its blocking follows
/// N), so the CAM gate run on one column per segment equals the gate run on every frame.
struct ColumnConv<'a> {
    w: &'a [f32], // [cout, cin]
    b: &'a [f32],
}

impl CustomOp1 for ColumnConv<'_> {
    fn name(&self) -> &'static str {
        "cam-column-conv"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l)?;
        let (b, cin, n) = l.shape().dims3()?;
        let cout = self.b.len();
        if self.w.len() != cout * cin {
            return Err(msg(&format!("cam column conv: weight of {} values for {cout} × {cin}", self.w.len())));
        }
        let mut out: Vec<f32> = Vec::with_capacity(b * cout * n);
        let dst = SendPtr(out.as_mut_ptr());
        par_for_init(b * cout, Vec::new, |acc: &mut Vec<f64>, r| {
            let (bi, o) = (r / cout, r % cout);
            acc.clear();
            acc.resize(n, self.b[o] as f64);
            for (k, &w) in self.w[o * cin..(o + 1) * cin].iter().enumerate() {
                let w = w as f64;
                let xr = &x[(bi * cin + k) * n..(bi * cin + k + 1) * n];
                acc.iter_mut().zip(xr).for_each(|(a, &v)| *a += w * v as f64);
            }
            // SAFETY: row r of `out`'s capacity, written by this call only
            let row = unsafe { std::slice::from_raw_parts_mut(dst.get().add(r * n), n) };
            row.iter_mut().zip(acc.iter()).for_each(|(y, &a)| *y = a as f32);
        });
        // SAFETY: every row was written in full
        unsafe { out.set_len(b * cout * n) };
        Ok((CpuStorage::F32(out), Shape::from((b, cout, n))))
    }
}

/// `w · x + b` per column of f32 `[B, cin, N]` (`w` `[cout, cin]` row-major, `b` `[cout]`).
pub fn column_conv(x: &Tensor, w: &[f32], b: &[f32]) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1_no_bwd(&ColumnConv { w, b })?)
}

/// im2col of a `[B, C, T]` f32 input for a "same" k-tap conv of dilation d, as f64:
/// `[B, k·C, T]`, rows ordered (j, c) like the weight laid out `[cout, (k, cin)]`.
struct Cols1d {
    k: usize,
    d: usize,
}

impl CustomOp1 for Cols1d {
    fn name(&self) -> &'static str {
        "campplus-im2col1d-f64"
    }
    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(st, l)?;
        let (b, c, t) = l.shape().dims3()?;
        let (k, d) = (self.k, self.d);
        let p = (k - 1) / 2 * d;
        let mut out = vec![0f64; b * k * c * t];
        for (idx, o) in out.chunks_mut(t.max(1)).enumerate() {
            let (bi, r) = (idx / (k * c), idx % (k * c));
            let (j, ci) = (r / c, r % c);
            let src = &x[(bi * c + ci) * t..(bi * c + ci + 1) * t];
            // output frame i reads input frame i + j·d − p
            let off = j * d;
            let lo = p.saturating_sub(off).min(t);
            let hi = (t + p).saturating_sub(off).min(t);
            for i in lo..hi {
                o[i] = src[i + off - p] as f64;
            }
        }
        Ok((CpuStorage::F64(out), Shape::from((b, k * c, t))))
    }
}

pub fn im2col1d_f64(x: &Tensor, k: usize, d: usize) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1_no_bwd(&Cols1d { k, d })?)
}

/// Per-channel `relu?(v·scale + shift)` applied to a conv's output while it is in cache.
#[derive(Clone, Copy)]
pub struct Epilogue<'a> {
    pub scale: &'a [f32],
    pub shift: &'a [f32],
    pub relu: bool,
}

/// Output columns per work unit of [`conv2d`]: the unit's column block (k·k·C × this) stays in
/// L2/L3, where the gemm runs at ~100 GFLOP/s instead of ~60 on the whole 288 × 40 K matrix.
const CONV_COLS: usize = 2048;

/// Bias-free k×k conv, zero pad p, stride (s, 1), on `[B, C, H, W]` f32: per block of output rows,
/// gather its im2col columns into a reused buffer and multiply by the weight `[cout, (kh, kw, c)]`
/// straight into the output (single-threaded gemm per block; blocks run on Candle's pool). The
/// values do not depend on the blocking (each output is one k·k·C dot product in gemm's order).
struct Conv2dOp<'a> {
    w: &'a [f32],
    cout: usize,
    k: usize,
    p: usize,
    s: usize,
    epi: Option<Epilogue<'a>>,
}


impl CustomOp1 for Conv2dOp<'_> {
    fn name(&self) -> &'static str {
        "campplus-conv2d"
    }
    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(st, l)?;
        let (b, c, h, w) = l.shape().dims4()?;
        let (k, p, s, cout) = (self.k, self.p, self.s, self.cout);
        let kk = k * k * c;
        if self.w.len() != cout * kk || h + 2 * p < k || w + 2 * p < k {
            return Err(msg("campplus conv2d: weight or input shape mismatch"));
        }
        let ho = (h + 2 * p - k) / s + 1;
        let wo = w + 2 * p - k + 1;
        let n = ho * wo;
        let rows_per = (CONV_COLS / wo).max(1);
        let blocks_per = ho.div_ceil(rows_per);
        let mut out = vec![0f32; b * cout * n];
        let dst = SendPtr(out.as_mut_ptr());
        let unit = |cols: &mut Vec<f32>, u: usize| {
            let (bi, i0) = (u / blocks_per, (u % blocks_per) * rows_per);
            let i1 = (i0 + rows_per).min(ho);
            let nc = (i1 - i0) * wo;
            cols.resize(kk * nc, 0.0);
            let xb = &x[bi * c * h * w..(bi + 1) * c * h * w];
            for r in 0..kk {
                let (kh, kw, ci) = (r / (k * c), (r / c) % k, r % c);
                let src = &xb[ci * h * w..(ci + 1) * h * w];
                let (lo, hi) = (p.saturating_sub(kw).min(wo), (w + p).saturating_sub(kw).min(wo));
                let row = &mut cols[r * nc..(r + 1) * nc];
                for i in i0..i1 {
                    let o = &mut row[(i - i0) * wo..(i - i0 + 1) * wo];
                    let hh = (i * s + kh) as isize - p as isize;
                    if hh < 0 || hh >= h as isize || lo >= hi {
                        o.iter_mut().for_each(|v| *v = 0.0);
                        continue;
                    }
                    let line = &src[hh as usize * w..(hh as usize + 1) * w];
                    o[..lo].iter_mut().for_each(|v| *v = 0.0);
                    o[lo..hi].copy_from_slice(&line[lo + kw - p..hi + kw - p]);
                    o[hi..].iter_mut().for_each(|v| *v = 0.0);
                }
            }
            // SAFETY: unit u owns output columns i0·wo..i1·wo of batch bi in every channel row
            let d = unsafe { dst.get().add(bi * cout * n + i0 * wo) };
            unsafe {
                gemm::gemm(
                    cout, nc, kk, d, 1, n as isize, false, self.w.as_ptr(), 1, kk as isize, cols.as_ptr(), 1, nc as isize,
                    0.0, 1.0, false, false, false, gemm::Parallelism::None,
                );
            }
            if let Some(e) = self.epi {
                for co in 0..cout {
                    let row = unsafe { std::slice::from_raw_parts_mut(d.add(co * n), nc) };
                    let (sc, sh) = (e.scale[co], e.shift[co]);
                    row.iter_mut().for_each(|v| *v = *v * sc + sh);
                    if e.relu {
                        row.iter_mut().for_each(|v| *v = v.max(0.0));
                    }
                }
            }
        };
        if let Some(e) = self.epi {
            if e.scale.len() != cout || e.shift.len() != cout {
                return Err(msg("campplus conv2d: epilogue channel mismatch"));
            }
        }
        par_for_init(b * blocks_per, Vec::new, unit);
        Ok((CpuStorage::F32(out), Shape::from((b, cout, ho, wo))))
    }
}

/// `epi(conv2d(x, w))` with `w` laid out `[cout, (kh, kw, cin)]` (see [`Conv2dOp`]).
pub fn conv2d(x: &Tensor, w: &[f32], cout: usize, k: usize, p: usize, s: usize, epi: Option<Epilogue>) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1_no_bwd(&Conv2dOp { w, cout, k, p, s, epi })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The context against its tensor form in f64 (utterance mean + per-segment means, the last
    /// segment shorter): within 1 f32 ulp-ish (2e-7 relative to values about 1), T a multiple of the
    /// segment and not.
    #[test]
    fn context_equals_mean_plus_segment_means() -> candle_core::Result<()> {
        for t in [300, 317, 7] {
            let x = Tensor::randn(1f32, 1.0, (2, 5, t), &candle_core::Device::Cpu)?;
            let got = context(&x, 100).map_err(|e| candle_core::Error::Msg(e.to_string()))?.to_dtype(DType::F64)?;
            let x64 = x.to_dtype(DType::F64)?;
            let mut segs = Vec::new();
            let mut s0 = 0;
            while s0 < t {
                let n = 100.min(t - s0);
                segs.push(x64.narrow(2, s0, n)?.mean_keepdim(2)?.broadcast_as((2, 5, n))?);
                s0 += n;
            }
            let want = x64.mean_keepdim(2)?.broadcast_add(&Tensor::cat(&segs, 2)?)?;
            let diff = (got - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
            assert!(diff < 1e-6, "t {t}: {diff}");
        }
        Ok(())
    }

    /// The per-segment context is the full one's distinct columns, and the segment product is
    /// `y * m` with `m` repeated over each segment, bit for bit (T a multiple of the segment and not).
    #[test]
    fn per_segment_context_and_product_equal_the_full_forms() -> candle_core::Result<()> {
        let err = |e: crate::error::Error| candle_core::Error::Msg(e.to_string());
        for t in [300, 317, 7] {
            let x = Tensor::randn(1f32, 1.0, (2, 5, t), &candle_core::Device::Cpu)?;
            let full = context(&x, 100).map_err(err)?;
            let segs = context_per_segment(&x, 100).map_err(err)?;
            let n = t.div_ceil(100);
            assert_eq!(segs.dims(), [2, 5, n]);
            let idx: Vec<u32> = (0..t as u32).map(|i| i / 100).collect();
            let idx = Tensor::from_vec(idx, t, &candle_core::Device::Cpu)?;
            let repeated = segs.index_select(&idx, 2)?;
            assert_eq!(repeated.flatten_all()?.to_vec1::<f32>()?, full.flatten_all()?.to_vec1::<f32>()?, "t {t}");
            let y = Tensor::randn(0f32, 1.0, (2, 5, t), &candle_core::Device::Cpu)?;
            let got = segment_mul(&y, &segs, 100).map_err(err)?;
            assert_eq!(got.flatten_all()?.to_vec1::<f32>()?, (&y * &full)?.flatten_all()?.to_vec1::<f32>()?, "t {t}");
            assert!(segment_mul(&y, &full, 100).is_err(), "a full-length gate is refused");
        }
        Ok(())
    }
    #[test]
    fn column_conv_is_the_f64_product_and_per_column() -> candle_core::Result<()> {
        let err = |e: crate::error::Error| candle_core::Error::Msg(e.to_string());
        let dev = &candle_core::Device::Cpu;
        let (cout, cin) = (6, 40);
        let w = Tensor::randn(0f32, 0.3, (cout, cin), dev)?;
        let b = Tensor::randn(0f32, 1.0, cout, dev)?;
        let (wv, bv) = (w.flatten_all()?.to_vec1::<f32>()?, b.to_vec1::<f32>()?);
        let x = Tensor::randn(0f32, 1.0, (2, cin, 37), dev)?;
        let got = column_conv(&x, &wv, &bv).map_err(err)?;
        let x64 = x.to_dtype(DType::F64)?;
        let want = w.to_dtype(DType::F64)?.broadcast_left(2)?.matmul(&x64)?.broadcast_add(&b.to_dtype(DType::F64)?.reshape((1, cout, 1))?)?;
        let want = want.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let got_v = got.flatten_all()?.to_vec1::<f32>()?;
        // f64 sums in another order may round to the neighbouring f32
        assert!(got_v.iter().zip(&want).all(|(g, w)| (g - w).abs() <= f32::EPSILON * w.abs()));
        // any column subset gives the same bits as in the full product
        let part = column_conv(&x.narrow(2, 5, 3)?, &wv, &bv).map_err(err)?;
        assert_eq!(part.flatten_all()?.to_vec1::<f32>()?, got.narrow(2, 5, 3)?.flatten_all()?.to_vec1::<f32>()?);
        assert!(column_conv(&x, &wv[1..], &bv).is_err(), "a weight of the wrong size is refused");
        Ok(())
    }
    use candle_core::Device;

    fn data(shape: &[usize], seed: u32) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 65536.0) - 128.0).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn same(a: &Tensor, b: &Tensor) {
        assert_eq!(a.dims(), b.dims());
        let (a, b) = (a.flatten_all().unwrap().to_vec1::<f64>(), b.flatten_all().unwrap().to_vec1::<f64>());
        let (a, b) = match (a, b) {
            (Ok(a), Ok(b)) => (a, b),
            _ => panic!("f64 expected"),
        };
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    }

    fn same32(a: &Tensor, b: &Tensor) {
        same(&a.to_dtype(DType::F64).unwrap(), &b.to_dtype(DType::F64).unwrap());
    }

    #[test]
    fn affine_is_bit_identical_to_the_tensor_ops() {
        let x = data(&[2, 3, 4, 5], 1);
        let r = data(&[2, 3, 4, 5], 7);
        let (s, b) = (vec![0.37f32, -1.25, 2.0e-3], vec![-0.5f32, 3.1, 0.0]);
        let st = Tensor::from_vec(s.clone(), (1, 3, 1, 1), &Device::Cpu).unwrap();
        let bt = Tensor::from_vec(b.clone(), (1, 3, 1, 1), &Device::Cpu).unwrap();
        let bn = x.broadcast_mul(&st).unwrap().broadcast_add(&bt).unwrap();
        same32(&affine(&x, &s, &b, None, false).unwrap(), &bn);
        same32(&affine(&x, &s, &b, None, true).unwrap(), &bn.relu().unwrap());
        same32(&affine(&x, &s, &b, Some(&r), true).unwrap(), &(&bn + &r).unwrap().relu().unwrap());
    }

    #[test]
    fn conv2d_equals_direct_sum_and_epilogue_equals_affine() {
        let (bsz, c, h, w, cout) = (2usize, 3usize, 9usize, 6usize, 4usize);
        let x = data(&[bsz, c, h, w], 3);
        let xv = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (k, p, s) in [(3usize, 1usize, 1usize), (3, 1, 2), (1, 0, 2), (1, 0, 1)] {
            let kk = k * k * c;
            let wt: Vec<f32> = (0..cout * kk).map(|i| ((i * 37 % 17) as f32 - 8.0) / 16.0).collect();
            let got = conv2d(&x, &wt, cout, k, p, s, None).unwrap();
            let (ho, wo) = ((h + 2 * p - k) / s + 1, w + 2 * p - k + 1);
            assert_eq!(got.dims(), &[bsz, cout, ho, wo]);
            let g = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (idx, gv) in g.iter().enumerate() {
                let (bi, co, i, j) = (idx / (cout * ho * wo), idx / (ho * wo) % cout, idx / wo % ho, idx % wo);
                let mut want = 0f64;
                for kh in 0..k {
                    for kw in 0..k {
                        for ci in 0..c {
                            let (hh, ww) = ((i * s + kh) as isize - p as isize, (j + kw) as isize - p as isize);
                            if hh >= 0 && (hh as usize) < h && ww >= 0 && (ww as usize) < w {
                                let xv = xv[((bi * c + ci) * h + hh as usize) * w + ww as usize] as f64;
                                want += xv * wt[co * kk + (kh * k + kw) * c + ci] as f64;
                            }
                        }
                    }
                }
                assert!((*gv as f64 - want).abs() <= 1e-5 * want.abs().max(1.0), "k{k} s{s} {idx}: {gv} vs {want}");
            }
            let (sc, sh): (Vec<f32>, Vec<f32>) = (0..cout).map(|i| (0.5 + i as f32 * 0.3, i as f32 - 1.5)).unzip();
            for relu in [false, true] {
                let e = Epilogue { scale: &sc, shift: &sh, relu };
                same32(&conv2d(&x, &wt, cout, k, p, s, Some(e)).unwrap(), &affine(&got, &sc, &sh, None, relu).unwrap());
            }
        }
    }

    #[test]
    fn im2col1d_equals_padded_views() {
        for t in [1usize, 3, 11] {
            let x = data(&[2, 4, t], 5);
            for (k, d) in [(3usize, 1usize), (3, 2), (5, 2), (1, 1)] {
                let p = (k - 1) / 2 * d;
                let xp = x.to_dtype(DType::F64).unwrap().pad_with_zeros(2, p, p).unwrap();
                let cols: Vec<Tensor> = (0..k).map(|j| xp.narrow(2, j * d, t).unwrap()).collect();
                let want = Tensor::cat(&cols, 1).unwrap();
                same(&im2col1d_f64(&x, k, d).unwrap(), &want);
            }
        }
    }
}
