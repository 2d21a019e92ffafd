//! `dense::attention` on the DiT's shape (CFM batch 2, 430 frames, 8 heads of 64):
//! `cargo run --release -p indextts2_candle --example attn_speed -- ROUNDS [B T H D]`, against
//! `python scripts/attn_speed_torch.py` (torch's SDPA, flash kernel on CPU) on the same shape.
use candle_core::{Device, Tensor};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|s| s.parse().ok()).collect();
    let rounds = args.first().copied().unwrap_or(10);
    let (b, t, h, d) = if args.len() >= 5 { (args[1], args[2], args[3], args[4]) } else { (2, 430, 8, 64) };
    let dev = Device::Cpu;
    let qkv = Tensor::randn(0f32, 1.0, (b, t, 3 * h * d), &dev)?;
    let q = qkv.narrow(2, 0, h * d)?.reshape((b, t, h, d))?;
    let k = qkv.narrow(2, h * d, h * d)?.reshape((b, t, h, d))?;
    let v = qkv.narrow(2, 2 * h * d, h * d)?.reshape((b, t, h, d))?;
    let keys: Vec<f32> = (0..b * t).map(|i| if i % t < t - 7 * (i / t) { 0.0 } else { f32::NEG_INFINITY }).collect();
    let mask = Tensor::from_vec(keys, (b, 1, 1, t), &dev)?;
    let scale = 1.0 / (d as f64).sqrt();
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let t0 = Instant::now();
        indextts2_candle::dense::attention(&q, &k, &v, Some(&mask), scale)?.unwrap();
        best = best.min(t0.elapsed().as_secs_f64());
    }
    let flops = 4.0 * (b * h * t * t * d) as f64;
    println!("attention b {b} t {t} h {h} d {d}: {:.3} ms, {:.1} GFLOP/s", best * 1e3, flops / best / 1e9);
    Ok(())
}
