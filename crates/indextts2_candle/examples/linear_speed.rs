//! `nn.Linear` on the models' shapes (codec pwconv, GPT-2 qkv / MLP, DiT FFN): Candle's
//! `broadcast_matmul` + bias against `dense::linear`, f32, the crate's thread count, mean of 20.
//! `cargo run --release -p indextts2_candle --example linear_speed`; torch: `python scripts/linear_speed_torch.py`.
use candle_core::{Device, Tensor};
use indextts2_candle::dense;
use std::time::Instant;

fn mean_ms(f: impl Fn() -> candle_core::Result<Tensor>) -> candle_core::Result<f64> {
    f()?;
    let t0 = Instant::now();
    for _ in 0..20 {
        f()?;
    }
    Ok(t0.elapsed().as_secs_f64() / 20.0 * 1e3)
}

fn main() -> candle_core::Result<()> {
    let d = Device::Cpu;
    for (m, k, n) in [(500usize, 384usize, 2048usize), (500, 2048, 384), (175, 1280, 3840), (175, 1280, 5120), (175, 5120, 1280), (430, 512, 2048)] {
        let x = Tensor::randn(0f32, 1.0, (1, m, k), &d)?;
        let w = Tensor::randn(0f32, 0.02, (n, k), &d)?;
        let b = Tensor::randn(0f32, 0.02, n, &d)?;
        let c = mean_ms(|| x.broadcast_matmul(&w.t()?)?.broadcast_add(&b))?;
        let g = mean_ms(|| Ok(dense::linear(&x, &w, Some(&b)).map_err(|e| candle_core::Error::Msg(e.to_string()))?.expect("f32 CPU")))?;
        let gf = 2.0 * (m * k * n) as f64 / 1e6;
        println!("{m}x{k}x{n}: candle {c:.2} ms ({:.0} GFLOP/s)  dense::linear {g:.2} ms ({:.0} GFLOP/s)", gf / c, gf / g);
    }
    Ok(())
}
