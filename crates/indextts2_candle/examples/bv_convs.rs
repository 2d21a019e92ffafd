//! BigVGAN's dense convs (official size, ≈1 s of audio: every resblock conv of every stage) through
//! Candle's conv1d and through `dense::conv1d` (tap-major weights), f32, the crate's thread count.
//! `cargo run --release -p indextts2_candle --example bv_convs`; torch on the same shapes:
//! `python scripts/bv_convs_torch.py` (numbers in the README).
use candle_core::{Device, Tensor};
use indextts2_candle::dense;
use std::time::Instant;

fn timed(f: impl Fn() -> candle_core::Result<Tensor>) -> candle_core::Result<f64> {
    f()?;
    let t0 = Instant::now();
    f()?;
    Ok(t0.elapsed().as_secs_f64())
}

fn main() -> indextts2_candle::error::Result<()> {
    let d = Device::Cpu;
    let (mut all_c, mut all_g) = (0.0, 0.0);
    for (c, l) in [
        (768usize, 344usize),
        (384, 1376),
        (192, 2752),
        (96, 5504),
        (48, 11008),
        (24, 22016),
    ] {
        let x = Tensor::randn(0f32, 1.0, (1, c, l), &d)?;
        let (mut sc, mut sg) = (0.0, 0.0);
        for k in [3usize, 7, 11] {
            for dil in [1usize, 3, 5, 1, 1, 1] {
                let w = Tensor::randn(0f32, 0.01, (c, c, k), &d)?;
                let wt = dense::tap_major(&w)?;
                let p = dil * (k - 1) / 2;
                sc += timed(|| x.conv1d(&w, p, 1, dil, 1))?;
                sg += timed(|| {
                    Ok(dense::conv1d(&x, &wt, None, p, 1, dil)
                        .map_err(|e| candle_core::Error::Msg(e.to_string()))?
                        .unwrap())
                })?;
            }
        }
        let gf = 2.0 * (c * c * l) as f64 * 6.0 * 21.0 / 1e9;
        println!("C={c:<4} L={l:<6} candle {:7.1} ms ({:5.1} GFLOP/s)   dense {:7.1} ms ({:5.1} GFLOP/s)", sc * 1e3, gf / sc, sg * 1e3, gf / sg);
        all_c += sc;
        all_g += sg;
    }
    println!("all {:.1} ms → {:.1} ms", all_c * 1e3, all_g * 1e3);
    Ok(())
}
