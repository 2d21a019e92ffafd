//! Times the ops that dominate BigVGAN on CPU (a 768-channel k=11 conv1d and the anti-alias
//! depthwise filters), to compare with torch on the same shapes (numbers in the closing note / README).
//! `cargo bench -p indextts2_candle --bench conv_speed`
use candle_core::{Device, Tensor};
use std::time::Instant;

fn time<F: FnMut() -> candle_core::Result<Tensor>>(label: &str, flops: f64, mut f: F) -> candle_core::Result<()> {
    f()?;
    let n = 5;
    let t0 = Instant::now();
    for _ in 0..n {
        f()?;
    }
    let s = t0.elapsed().as_secs_f64() / n as f64;
    println!("{label:<40} {:8.2} ms  {:6.1} GFLOP/s", s * 1e3, flops / s / 1e9);
    Ok(())
}

fn main() -> candle_core::Result<()> {
    let d = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (1, 768, 344), &d)?;
    let w = Tensor::randn(0f32, 0.01, (768, 768, 11), &d)?;
    time("conv1d 768x768 k11 L344", 2.0 * 768.0 * 768.0 * 11.0 * 344.0, || x.conv1d(&w, 5, 1, 1, 1))?;
    let rows = Tensor::randn(0f32, 1.0, (768, 1, 700), &d)?;
    let f = Tensor::randn(0f32, 1.0, (1, 1, 12), &d)?;
    let fl = 2.0 * 768.0 * 350.0 * 12.0;
    time("depthwise lowpass (conv1d s2)", fl, || rows.conv1d(&f, 0, 2, 1, 1))?;
    time("depthwise upsample (convtr pad 15)", fl, || rows.narrow(2, 0, 354)?.conv_transpose1d(&f, 15, 0, 2, 1, 1))?;
    time("depthwise upsample (convtr pad 0 + crop)", fl, || {
        let y = rows.narrow(2, 0, 354)?.conv_transpose1d(&f, 0, 0, 2, 1, 1)?;
        let n = y.dim(2)?;
        y.narrow(2, 15, n - 30)
    })?;
    Ok(())
}
