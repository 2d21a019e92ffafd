//! libm's scalar `f32::sin` against `vsin::sin_slice` (each SIMD build) on 1M values, and BigVGAN's
//! anti-aliased activation on `[1, 512, 8192]` (fused and tapped paths). Median of 9 runs, one thread
//! for the slices; compare ratios from one run (the numbers move with the machine's load).
//! `cargo bench -p indextts2_candle --bench sin_speed`
use candle_core::{Device, Tensor};
use indextts2_candle::bigvgan::{Activation1d, FilterFaults};
use indextts2_candle::ctx::Ctx;
use indextts2_candle::store::{Store, Weights};
use indextts2_candle::vsin::{sin_slice, Isa};
use std::time::Instant;

fn median_s<F: FnMut()>(mut f: F) -> f64 {
    f();
    let mut t: Vec<f64> = (0..9)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // BigVGAN's α·x mostly lies within ±100
    let n = 1 << 20;
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let xs: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 100.0
        })
        .collect();
    let mut ys = xs.clone();
    let libm = median_s(|| {
        ys.copy_from_slice(&xs);
        for v in ys.iter_mut() {
            *v = std::hint::black_box(*v).sin();
        }
    });
    println!("{:<36} {:7.3} ms  {:6.2} ns/value", "libm f32::sin, 1M", libm * 1e3, libm * 1e9 / n as f64);
    let mut run = |label: &str, f: &dyn Fn(&mut [f32])| {
        let t = median_s(|| {
            ys.copy_from_slice(&xs);
            f(std::hint::black_box(&mut ys));
        });
        println!("{label:<36} {:7.3} ms  {:6.2} ns/value  {:5.1}x libm", t * 1e3, t * 1e9 / n as f64, libm / t);
    };
    run("sin_slice (dispatched), 1M", &|v| sin_slice(v));
    for isa in Isa::available() {
        run(&format!("sin_slice {isa:?}, 1M"), &|v| isa.sin_slice(v));
    }

    // one SnakeBeta Activation1d with 512 channels, weights in a temporary safetensors file
    let d = Device::Cpu;
    let (c, t) = (512, 8192);
    let taps = indextts2_candle::bigvgan::kaiser_sinc_filter(0.25, 0.3, 12, false);
    let filt = Tensor::from_vec(taps, (1, 1, 12), &d)?;
    let path = std::env::temp_dir().join(format!("sin_speed_{}.safetensors", std::process::id()));
    candle_core::safetensors::save(
        &[
            ("act.alpha".to_string(), Tensor::randn(0f32, 0.3, c, &d)?),
            ("act.beta".to_string(), Tensor::randn(0f32, 0.3, c, &d)?),
            ("upsample.filter".to_string(), filt.clone()),
            ("downsample.lowpass.filter".to_string(), filt),
        ]
        .into_iter()
        .collect(),
        &path,
    )?;
    let w = Weights::new(Store::open(&path, &d)?);
    let act = Activation1d::load(&w, c, true, true, FilterFaults::default())?;
    std::fs::remove_file(&path)?;
    let x = Tensor::randn(0f32, 1.0, (1, c, t), &d)?;
    let fused = median_s(|| {
        act.forward(&x, &mut Ctx::plain(), "a").unwrap();
    });
    println!("{:<36} {:7.3} ms", "Activation1d fused [1,512,8192]", fused * 1e3);
    let tapped = median_s(|| {
        let mut rec = Ctx::new(true, Default::default());
        act.forward(&x, &mut rec, "a").unwrap();
    });
    println!("{:<36} {:7.3} ms", "Activation1d tapped [1,512,8192]", tapped * 1e3);
    Ok(())
}
