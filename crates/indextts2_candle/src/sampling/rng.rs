//! The draws of `torch.multinomial(p, n, replacement=False)`: one `q ~ Exp(1)` per entry of `p`
//! (flat order), then the top n of `p / q` (`aten/src/ATen/native/Distributions.cpp`,
//! `multinomial_out`: `q = at::empty_like(self).exponential_(1, gen); at::div_out(q, self, q);`
//! then `argmax` for n = 1, `topk` otherwise; checked on torch 2.9.1 CPU in tests/test_sampling.py).
//!
//! [`TorchCpuGenerator`] reproduces torch's CPU default generator for these draws: mt19937 seeded
//! with the low 32 bits of `torch.manual_seed(s)`, a double uniform from two 32-bit words
//! (`(w1 << 32 | w2) & (2^53 − 1)) · 2^-53`), and `exponential_` in float32 as
//! `float(−log1p(−u))`.
use crate::error::{input_err, Result};

pub struct Mt19937 {
    mt: [u32; 624],
    i: usize,
}

impl Mt19937 {
    pub fn new(seed: u64) -> Self {
        let mut mt = [0u32; 624];
        mt[0] = seed as u32;
        for k in 1..624 {
            mt[k] = 1_812_433_253u32.wrapping_mul(mt[k - 1] ^ (mt[k - 1] >> 30)).wrapping_add(k as u32);
        }
        Mt19937 { mt, i: 624 }
    }

    fn twist(&mut self) {
        for k in 0..624 {
            let y = (self.mt[k] & 0x8000_0000) | (self.mt[(k + 1) % 624] & 0x7fff_ffff);
            let mut v = self.mt[(k + 397) % 624] ^ (y >> 1);
            if y & 1 != 0 {
                v ^= 0x9908_b0df;
            }
            self.mt[k] = v;
        }
        self.i = 0;
    }

    pub fn next_u32(&mut self) -> u32 {
        if self.i >= 624 {
            self.twist();
        }
        let mut y = self.mt[self.i];
        self.i += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }
}

pub struct TorchCpuGenerator(Mt19937);

impl TorchCpuGenerator {
    pub fn new(seed: u64) -> Self {
        TorchCpuGenerator(Mt19937::new(seed))
    }
    /// `torch.rand(dtype=float64)`: 53 low bits of a 64-bit word made of two draws, first high.
    pub fn uniform_f64(&mut self) -> f64 {
        let hi = self.0.next_u32() as u64;
        let lo = self.0.next_u32() as u64;
        (((hi << 32) | lo) & ((1u64 << 53) - 1)) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// `torch.rand(dtype=float32)`: 24 low bits of one draw.
    pub fn uniform_f32(&mut self) -> f32 {
        (self.0.next_u32() & ((1 << 24) - 1)) as f32 * (1.0 / (1u32 << 24) as f32)
    }
    /// `torch.randn(n)` (float32, CPU, after `torch.manual_seed`) from a fresh generator. ATen's
    /// `normal_fill` for n ≥ 16: n float uniforms, Box–Muller in float on blocks of 16 (u1 = 1 − x[j],
    /// u2 = x[j+8] for j < 8: radius·cos → j, radius·sin → j+8); a tail n % 16 ≠ 0 redoes the last 16
    /// values from 16 fresh uniforms. n < 16: the scalar `normal_distribution<double>` (two 53-bit
    /// uniforms per pair, sin cached for the next value, as the generator's normal cache does).
    /// torch's AVX2 build computes log/cos/sin with SLEEF (≤ 1 ulp) where this uses libm, so values
    /// may differ in the last bits (tests/test_cli.py measures it); the uniforms are identical.
    pub fn normal_f32(&mut self, n: usize) -> Vec<f32> {
        fn fill16(d: &mut [f32]) {
            for j in 0..8 {
                let (u1, u2) = (1.0 - d[j], d[j + 8]);
                let radius = (-2.0 * u1.ln()).sqrt();
                let theta = 2.0 * std::f32::consts::PI * u2;
                d[j] = radius * theta.cos();
                d[j + 8] = radius * theta.sin();
            }
        }
        if n < 16 {
            let mut out = Vec::with_capacity(n);
            let mut cached: Option<f64> = None;
            for _ in 0..n {
                let v = match cached.take() {
                    Some(v) => v,
                    None => {
                        let u1 = self.uniform_f64();
                        let u2 = self.uniform_f64();
                        let r = (-2.0 * (-u2).ln_1p()).sqrt();
                        let theta = 2.0 * std::f64::consts::PI * u1;
                        cached = Some(r * theta.sin());
                        r * theta.cos()
                    }
                };
                out.push(v as f32);
            }
            return out;
        }
        let mut d: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        for i in (0..n - 15).step_by(16) {
            fill16(&mut d[i..i + 16]);
        }
        if n % 16 != 0 {
            let tail = &mut d[n - 16..];
            for x in tail.iter_mut() {
                *x = self.uniform_f32();
            }
            fill16(tail);
        }
        d
    }
    /// `torch.empty(n).exponential_(1)` in float32.
    pub fn exponential_f32(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| (-(-self.uniform_f64()).ln_1p()) as f32).collect()
    }
}

/// Where the Exp(1) draws of each decoding step come from.
pub enum Draws {
    /// Handed in by the caller: all steps concatenated, consumed in order.
    Given { q: Vec<f32>, at: usize },
    /// torch's CPU stream after `torch.manual_seed(seed)`.
    Seeded(TorchCpuGenerator),
}

impl Draws {
    pub fn given(q: Vec<f32>) -> Self {
        Draws::Given { q, at: 0 }
    }
    pub fn seeded(seed: u64) -> Self {
        Draws::Seeded(TorchCpuGenerator::new(seed))
    }
    pub fn take(&mut self, n: usize) -> Result<Vec<f32>> {
        match self {
            Draws::Given { q, at } => {
                if *at + n > q.len() {
                    return input_err(format!("`draws` ran out: step needs {n} more after {at}, {} given", q.len()));
                }
                let v = q[*at..*at + n].to_vec();
                *at += n;
                Ok(v)
            }
            Draws::Seeded(g) => Ok(g.exponential_f32(n)),
        }
    }
    /// Number of draws consumed so far (given mode).
    pub fn used(&self) -> Option<usize> {
        match self {
            Draws::Given { at, .. } => Some(*at),
            Draws::Seeded(_) => None,
        }
    }
}

/// `argmax(p / q)` (n = 1: first maximum) or `topk(p / q, n)` with torch's CPU tie order, which
/// decides the zero-probability entries drawn when fewer than n are positive.
pub fn multinomial(p: &[f32], q: &[f32], n: usize) -> Vec<usize> {
    let r: Vec<f32> = p.iter().zip(q).map(|(&a, &b)| a / b).collect();
    if n == 1 {
        return super::processors::top_n_desc(&r, 1);
    }
    super::stl::topk(&r, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_reference_values() {
        // The first outputs of mt19937 seeded with 5489 (C++ std::mt19937 default seed).
        let mut m = Mt19937::new(5489);
        assert_eq!(m.next_u32(), 3_499_211_612);
        assert_eq!(m.next_u32(), 581_869_302);
    }
}
