//! Candle's f32 CPU matmul (gemm) on the shapes that dominate the models, in GFLOP/s, and the
//! activations between them (Candle's ops and `vact`'s), to set against torch on the same shapes.
//! `cargo run --release -p indextts2_candle --example matmul_speed -- ROUNDS`
use candle_core::{Device, Tensor};
use std::time::Instant;

/// (label, m, k, n): x `[m, k]` times a Linear weight `[n, k]` transposed, as `nn::Linear` does.
pub const SHAPES: &[(&str, usize, usize, usize)] = &[
    ("codec pwconv1 500x384->2048", 500, 384, 2048),
    ("codec pwconv2 500x2048->384", 500, 2048, 384),
    ("dit w1 860x512->1536", 860, 512, 1536),
    ("gpt mlp 140x1280->5120", 140, 1280, 5120),
    ("w2v ffn 500x1024->4096", 500, 1024, 4096),
    ("conformer 250x512->2048", 250, 512, 2048),
];

fn main() -> candle_core::Result<()> {
    let rounds: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let d = Device::Cpu;
    for &(label, m, k, n) in SHAPES {
        let x = Tensor::randn(0f32, 1.0, (1, m, k), &d)?;
        let w = Tensor::randn(0f32, 0.05, (n, k), &d)?;
        x.broadcast_matmul(&w.t()?)?;
        let mut best = f64::MAX;
        for _ in 0..rounds {
            let t0 = Instant::now();
            x.broadcast_matmul(&w.t()?)?;
            best = best.min(t0.elapsed().as_secs_f64());
        }
        println!("{label:<32} {:8.3} ms {:7.1} GFLOP/s", best * 1e3, 2.0 * (m * k * n) as f64 / best / 1e9);
    }
    // the activations between the products, on a [500, 2048] activation (1 M values)
    let h = Tensor::randn(0f32, 1.0, (1, 500, 2048), &d)?;
    use indextts2_candle::vact;
    let acts: [(&str, &dyn Fn(&Tensor) -> candle_core::Result<Tensor>); 9] = [
        ("gelu_erf 500x2048", &|h| h.gelu_erf()),
        ("vact gelu_erf 500x2048", &vact::gelu_erf),
        ("gelu_tanh 500x2048", &|h| h.gelu()),
        ("vact gelu_tanh 500x2048", &vact::gelu_tanh),
        ("silu 500x2048", &|h| h.silu()),
        ("vact silu 500x2048", &vact::silu),
        ("sigmoid 500x2048", &candle_nn::ops::sigmoid),
        ("vact sigmoid 500x2048", &vact::sigmoid),
        ("bias add 500x2048", &|h| h.broadcast_add(&h.get(0)?.get(0)?)),
    ];
    for (label, f) in acts {
        f(&h)?;
        let mut best = f64::MAX;
        for _ in 0..rounds {
            let t0 = Instant::now();
            f(&h)?;
            best = best.min(t0.elapsed().as_secs_f64());
        }
        println!("{label:<32} {:8.3} ms", best * 1e3);
    }
    // one thread, per build of the slice loop
    let xs = h.flatten_all()?.to_vec1::<f32>()?;
    for act in [vact::Act::GeluErf, vact::Act::GeluTanh, vact::Act::Silu, vact::Act::Sigmoid, vact::Act::Tanh] {
        for isa in vact::Isa::available() {
            let mut best = f64::MAX;
            for _ in 0..rounds {
                let mut ys = xs.clone();
                let t0 = Instant::now();
                vact::apply_slice_with(isa, act, &mut ys);
                best = best.min(t0.elapsed().as_secs_f64());
            }
            println!("{:<32} {:8.3} ms (one thread)", format!("{act:?} {isa:?}"), best * 1e3);
        }
    }
    Ok(())
}
