//! One-pass CPU kernels for CAM++: the per-channel affine of an eval BatchNorm (optionally plus a
//! residual, then ReLU) and the im2col gathers of the 2-D head convs and the dilated CAM conv.
//! Candle runs each of `x·s`, `+b`, `+r`, `relu` as its own allocating pass, and those over 64 K
//! elements go through its spin-barrier pool, which on a loaded 2-core machine waited most of the
//! time (profile: 390 of 980 ms in the dense layers' BN + ReLU). The affine computes `x·s + b` in
//! f32 with the same two roundings as the mul-then-add it replaces (no FMA), so taps are unchanged.
use crate::error::Result;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Below this many output values a gather runs on the calling thread (no pool hand-off).
const PAR_MIN: usize = 1 << 18;

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

/// im2col of a `[B, C, H, W]` input for a k×k conv, zero pad `p` both axes, stride `s` on H only:
/// `[B, k·k·C, Hout·Wout]`, rows ordered (kh, kw, c) like the weight laid out `[cout, (kh, kw, cin)]`.
struct Cols2d {
    k: usize,
    p: usize,
    s: usize,
}

impl Cols2d {
    fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        ((h + 2 * self.p - self.k) / self.s + 1, w + 2 * self.p - self.k + 1)
    }
}

impl CustomOp1 for Cols2d {
    fn name(&self) -> &'static str {
        "campplus-im2col2d"
    }
    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(st, l)?;
        let (b, c, h, w) = l.shape().dims4()?;
        let (k, p, s) = (self.k, self.p, self.s);
        let (ho, wo) = self.out_hw(h, w);
        let row = ho * wo;
        let rows = k * k * c;
        let mut out = vec![0f32; b * rows * row];
        // one output row (bi, kh, kw, ci): Hout lines of Wout values, zeros outside the input
        let fill = |idx: usize, o: &mut [f32]| {
            let (bi, r) = (idx / rows, idx % rows);
            let (kh, kw, ci) = (r / (k * c), (r / c) % k, r % c);
            let src = &x[(bi * c + ci) * h * w..(bi * c + ci + 1) * h * w];
            // output column j reads input column j + kw − p
            let lo = p.saturating_sub(kw);
            let hi = (w + p).saturating_sub(kw).min(wo);
            for i in 0..ho {
                let hh = (i * s + kh) as isize - p as isize;
                if hh < 0 || hh >= h as isize || lo >= hi {
                    continue;
                }
                let line = &src[hh as usize * w..(hh as usize + 1) * w];
                o[i * wo + lo..i * wo + hi].copy_from_slice(&line[lo + kw - p..hi + kw - p]);
            }
        };
        if out.len() >= PAR_MIN {
            out.par_chunks_mut(row).enumerate().for_each(|(i, o)| fill(i, o));
        } else {
            out.chunks_mut(row).enumerate().for_each(|(i, o)| fill(i, o));
        }
        Ok((CpuStorage::F32(out), Shape::from((b, rows, row))))
    }
}

pub fn im2col2d(x: &Tensor, k: usize, p: usize, s: usize) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1_no_bwd(&Cols2d { k, p, s })?)
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

#[cfg(test)]
mod tests {
    use super::*;
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
    fn im2col2d_equals_padded_views() {
        let x = data(&[2, 3, 9, 6], 3);
        for (k, p, s) in [(3usize, 1usize, 1usize), (3, 1, 2), (1, 0, 2), (1, 0, 1)] {
            let (h, w) = (9, 6);
            let (ho, wo) = ((h + 2 * p - k) / s + 1, w + 2 * p - k + 1);
            let xp = x.pad_with_zeros(2, p, p).unwrap().pad_with_zeros(3, p, p).unwrap();
            let mut cols = Vec::new();
            for kh in 0..k {
                let idx: Vec<u32> = (0..ho).map(|i| (i * s + kh) as u32).collect();
                let rows = xp.index_select(&Tensor::new(idx.as_slice(), &Device::Cpu).unwrap(), 2).unwrap();
                for kw in 0..k {
                    cols.push(rows.narrow(3, kw, wo).unwrap());
                }
            }
            let want = Tensor::cat(&cols, 1).unwrap().reshape((2, k * k * 3, ho * wo)).unwrap();
            same32(&im2col2d(&x, k, p, s).unwrap(), &want);
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
