use candle_core::{Device, Tensor};
use std::time::Instant;
use rayon::prelude::*;

fn lin_split(x: &[f32], w: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    let nt = candle_core::utils::get_num_threads();
    let chunk = m.div_ceil(nt).div_ceil(8) * 8;
    out.par_chunks_mut(chunk * n).enumerate().for_each(|(i, o)| {
        let r0 = i * chunk;
        let rows = o.len() / n;
        for r in 0..rows { o[r * n..(r + 1) * n].copy_from_slice(b); }
        unsafe {
            gemm::gemm(rows, n, k, o.as_mut_ptr(), 1, n as isize, true, x.as_ptr().add(r0 * k), 1, k as isize,
                w.as_ptr(), k as isize, 1, 1.0, 1.0, false, false, false, gemm::Parallelism::None);
        }
    });
    out
}

fn lin_cols(x: &[f32], w: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    let nt = candle_core::utils::get_num_threads();
    let chunk = n.div_ceil(nt).div_ceil(16) * 16;
    let op = out.as_mut_ptr() as usize;
    (0..n.div_ceil(chunk)).into_par_iter().for_each(|i| {
        let c0 = i * chunk;
        let cols = chunk.min(n - c0);
        let o = op as *mut f32;
        for r in 0..m { unsafe { std::slice::from_raw_parts_mut(o.add(r * n + c0), cols) }.copy_from_slice(&b[c0..c0 + cols]); }
        unsafe {
            gemm::gemm(m, cols, k, o.add(c0), 1, n as isize, true, x.as_ptr(), 1, k as isize,
                w.as_ptr().add(c0 * k), k as isize, 1, 1.0, 1.0, false, false, false, gemm::Parallelism::None);
        }
    });
    out
}

fn main() -> candle_core::Result<()> {
    let d = Device::Cpu;
    for (m, k, n) in [(500usize, 384usize, 2048usize), (500, 2048, 384), (175, 1280, 3840), (175, 1280, 5120), (175, 5120, 1280), (430, 512, 2048)] {
        let x = Tensor::randn(0f32, 1.0, (1, m, k), &d)?;
        let w = Tensor::randn(0f32, 0.02, (n, k), &d)?;
        let b = Tensor::randn(0f32, 0.02, n, &d)?;
        let (xv, wv, bv): (Vec<f32>, Vec<f32>, Vec<f32>) = (x.flatten_all()?.to_vec1()?, w.flatten_all()?.to_vec1()?, b.to_vec1()?);
        let reps = 20;
        let f = || -> candle_core::Result<Tensor> { x.broadcast_matmul(&w.t()?)?.broadcast_add(&b) };
        f()?;
        let t0 = Instant::now();
        for _ in 0..reps { f()?; }
        let sc = t0.elapsed().as_secs_f64() / reps as f64;
        lin_split(&xv, &wv, &bv, m, k, n);
        let t0 = Instant::now();
        for _ in 0..reps { lin_split(&xv, &wv, &bv, m, k, n); }
        let ss = t0.elapsed().as_secs_f64() / reps as f64;
        lin_cols(&xv, &wv, &bv, m, k, n);
        let t0 = Instant::now();
        for _ in 0..reps { lin_cols(&xv, &wv, &bv, m, k, n); }
        let sn = t0.elapsed().as_secs_f64() / reps as f64;
        let gf = 2.0 * (m * k * n) as f64 / 1e9;
        println!("{m}x{k}x{n}: candle {:.2} ms ({:.0} GF/s) rows {:.2} ms ({:.0} GF/s) cols {:.2} ms ({:.0} GF/s)", sc * 1e3, gf / sc, ss * 1e3, gf / ss, sn * 1e3, gf / sn);
    }
    Ok(())
}
