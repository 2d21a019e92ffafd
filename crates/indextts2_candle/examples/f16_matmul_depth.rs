//! Why `nn::Linear` widens deep f16 CPU products: rms error of Candle's f16/bf16 matmul against f64,
//! next to the same product widened to f32 and rounded once (what torch computes).
//! `cargo run --release -p indextts2_candle --example f16_matmul_depth`
use candle_core::{DType, Device, Tensor};
fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    for &k in &[512usize, 1024, 1280, 2048, 4096, 5120, 8192, 16384, 65536, 261632] {
        for &(m, dt) in &[(64usize, DType::F16), (64, DType::BF16), (1, DType::F16)] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?.to_dtype(dt)?;
            let w = Tensor::randn(0f32, 1.0 / (k as f32).sqrt(), (512, k), &dev)?.to_dtype(dt)?;
            let r = x.to_dtype(DType::F64)?.matmul(&w.to_dtype(DType::F64)?.t()?)?;
            let h = x.matmul(&w.t()?)?.to_dtype(DType::F64)?;
            let wd = x.to_dtype(DType::F32)?.matmul(&w.to_dtype(DType::F32)?.t()?)?.to_dtype(dt)?.to_dtype(DType::F64)?;
            let e = |a: &Tensor| -> candle_core::Result<f64> { (a - &r)?.sqr()?.mean_all()?.sqrt()?.to_scalar::<f64>() };
            let (eh, ew) = (e(&h)?, e(&wd)?);
            println!("k={k:7} m={m:3} {dt:?}: half {eh:.3e} widened {ew:.3e} ratio {:.2}", eh / ew);
        }
    }
    Ok(())
}
