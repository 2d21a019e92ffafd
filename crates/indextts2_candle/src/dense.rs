//! Dense layers on the CPU as direct gemm calls: `nn.Linear` and conv1d (`groups = 1`), f32/f64.
//!
//! **Linear** `y = x·Wᵀ + b`: the output starts as the bias rows and gemm accumulates into it (no
//! separate bias pass); the output columns (rows of W) are split across threads, so each thread
//! packs only its share of the weight. Candle's matmul splits inside gemm and ran 77–127 GFLOP/s
//! on the models' shapes against 122–144 for torch; this form 121–154 (`examples/linear_speed.rs`).
//!
//! **Conv1d** (`groups = 1`) on the CPU as one gemm per kernel tap over shifted views of the
//! padded input: `y[:, t] = b + Σ_j W[:, :, j] · x[:, s·t + d·j]`, accumulated in the output.
//!
//! Candle's CPU conv1d builds an im2col matrix `[L, C_in·k]` with a gather, multiplies, then copies
//! the `[L, C_out]` product into `[C_out, L]`. On BigVGAN's shapes that ran at 12–80 GFLOP/s against
//! torch's 60–125 (`examples/bv_convs.rs`); here the only copy is the zero-padded input, the output
//! lands in place with its bias, and the time axis is split across threads (each split runs gemm
//! single-threaded over all of C_out, so thin channel counts still fill both cores).
//!
//! A weight stored tap-major (`[k, C_out, C_in]` memory, seen as `[C_out, C_in, k]` through
//! strides: [`tap_major`]) gives each tap a contiguous `[C_out, C_in]` matrix; any other layout
//! works through its strides, slower at large C_in (gemm repacks a strided matrix).
use crate::error::Result;
use crate::nn::SendPtr;
use candle_core::{CpuStorage, DType, Layout, Shape, Tensor};

/// The same weight, its memory reordered tap-major (`[k, C_out, C_in]`) and viewed back as
/// `[C_out, C_in, k]`: equal values, equal shape, so every other use of the weight is unchanged.
pub fn tap_major(w: &Tensor) -> Result<Tensor> {
    if !w.device().is_cpu() || w.rank() != 3 || w.dim(2)? == 1 {
        return Ok(w.clone());
    }
    let (co, ci, k) = w.dims3()?;
    if w.layout().stride() == [ci, 1, co * ci] {
        return Ok(w.clone()); // already tap-major
    }
    if w.dtype() != DType::F32 {
        return Ok(w.permute((2, 0, 1))?.contiguous()?.permute((1, 2, 0))?);
    }
    // f32: one parallel gather, row (j, o) of the result = w[o, :, j] (a load-time pass over the weight)
    let src = w.contiguous()?.flatten_all()?;
    let (st, l) = src.storage_and_layout();
    let candle_core::Storage::Cpu(CpuStorage::F32(v)) = &*st else { return Ok(w.permute((2, 0, 1))?.contiguous()?.permute((1, 2, 0))?) };
    let v = &v[l.start_offset()..l.start_offset() + co * ci * k];
    gather_tap_major(v, co, ci, k, w.device())
}

/// An f32 `[co, ci, k]` buffer written tap-major and viewed as `[co, ci, k]`: one parallel pass
/// per output channel o (contiguous reads, k rows (j, o) written).
fn gather_tap_major(v: &[f32], co: usize, ci: usize, k: usize, dev: &candle_core::Device) -> Result<Tensor> {
    use rayon::prelude::*;
    let mut out = vec![0f32; co * ci * k];
    let dst = SendPtr(out.as_mut_ptr());
    (0..co).into_par_iter().for_each(|o| {
        let src = &v[o * ci * k..(o + 1) * ci * k];
        for j in 0..k {
            // SAFETY: channel o alone writes rows (j, o), j < k, of the k·co·ci buffer
            let row = unsafe { std::slice::from_raw_parts_mut(dst.get().add((j * co + o) * ci), ci) };
            for (i, x) in row.iter_mut().enumerate() {
                *x = src[i * k + j];
            }
        }
    });
    Ok(Tensor::from_vec(out, (k, co, ci), dev)?.permute((1, 2, 0))?)
}

/// `conv1d(x, w) + b` (zero padding, `groups = 1`) for f32/f64 CPU tensors; `None` elsewhere (the
/// caller keeps Candle's conv).
pub fn conv1d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    padding: usize,
    stride: usize,
    dilation: usize,
) -> Result<Option<Tensor>> {
    let dt = x.dtype();
    if !x.device().is_cpu()
        || !matches!(dt, DType::F32 | DType::F64)
        || w.dtype() != dt
        || b.is_some_and(|b| b.dtype() != dt)
    {
        return Ok(None);
    }
    let (_, cin, l) = x.dims3()?;
    let (cout, wcin, k) = w.dims3()?;
    let span = dilation * (k.max(1) - 1) + 1;
    if wcin != cin
        || k == 0
        || stride == 0
        || dilation == 0
        || l + 2 * padding < span
        || b.is_some_and(|b| b.dims() != [cout])
    {
        return crate::error::input_err(format!(
            "conv1d: input {:?}, weight {:?} and bias {:?} do not fit",
            x.dims(),
            w.dims(),
            b.map(|b| b.dims().to_vec())
        ));
    }
    let op = GemmConv {
        padding,
        stride,
        dilation,
    };
    let x = x.contiguous()?;
    Ok(Some(match b {
        Some(b) => x.apply_op3_no_bwd(w, &b.contiguous()?, &op)?,
        None => x.apply_op2_no_bwd(w, &op)?,
    }))
}

/// A ConvTranspose1d (`groups = 1`, dilation 1) whose kernel `k` is a multiple of its stride `u`,
/// on the CPU as one gemm conv over its `u` polyphase branches. Output `n·u + r` of the unpadded
/// transposed conv is `Σ_i Σ_s x[i, n − s] · W[i, o, s·u + r]` (s < k/u), a plain conv with
/// `k/u` taps over the input padded by `k/u − 1`: the weight is regrouped once at load into
/// `[u·C_out, C_in, k/u]` (row `r·C_out + o`, taps reversed), the branches are interleaved, the
/// `padding` outputs per side cropped and the bias added after the sum, as torch does. Candle's
/// CPU conv_transpose1d (a matmul + col2im on its own pool) took 65–120 ms of BigVGAN's ≈1.5 s.
pub struct PolyphaseTranspose {
    w: Tensor,
    cout: usize,
    stride: usize,
}

impl PolyphaseTranspose {
    /// `w` `[C_in, C_out, k]`; `None` where this form does not apply (not CPU f32/f64, or `k` not
    /// a multiple of `stride`): the caller keeps Candle's conv_transpose1d.
    pub fn new(w: &Tensor, stride: usize) -> Result<Option<PolyphaseTranspose>> {
        let (cin, cout, k) = w.dims3()?;
        if !w.device().is_cpu() || !matches!(w.dtype(), DType::F32 | DType::F64) || stride == 0 || k == 0 || k % stride != 0 {
            return Ok(None);
        }
        let q = k / stride;
        if w.dtype() == DType::F32 {
            return Ok(Some(PolyphaseTranspose { w: regroup_f32(w, stride)?, cout, stride }));
        }
        let rev = Tensor::new((0..q as u32).rev().collect::<Vec<_>>(), w.device())?;
        // [Cin, Cout, q, u] → taps reversed → [u, Cout, Cin, q]
        let w = w.reshape((cin, cout, q, stride))?.index_select(&rev, 2)?.permute((3, 1, 0, 2))?.contiguous()?;
        let w = tap_major(&w.reshape((stride * cout, cin, q))?)?;
        Ok(Some(PolyphaseTranspose { w, cout, stride }))
    }

    /// `x` `[B, C_in, L]` → `[B, C_out, (L + k/u − 1)·u − 2·padding]`, plus `b` `[C_out]`.
    pub fn forward(&self, x: &Tensor, b: &Tensor, padding: usize) -> Result<Tensor> {
        let q = self.w.dim(2)?;
        let Some(z) = conv1d(x, &self.w, None, q - 1, 1, 1)? else {
            return crate::error::input_err("polyphase conv_transpose1d: a CPU f32/f64 input of the weight's dtype expected");
        };
        let (bsz, _, n) = z.dims3()?;
        let full = n * self.stride;
        if full < 2 * padding + 1 {
            return crate::error::input_err(format!("conv_transpose1d: {} input frames give no output", x.dim(2)?));
        }
        let y = z.reshape((bsz, self.stride, self.cout, n))?.permute((0, 2, 3, 1))?.contiguous()?.reshape((bsz, self.cout, full))?;
        Ok(y.narrow(2, padding, full - 2 * padding)?.broadcast_add(&b.reshape((1, self.cout, 1))?)?)
    }
}

/// [`PolyphaseTranspose::new`]'s regrouping of an f32 `[C_in, C_out, k]` weight in one parallel
/// pass (the tensor form's index_select, 4-D permute copy and tap-major copy, with the same
/// result): tap-major row `(t, r·C_out + o)` holds `w[i, o, (q − 1 − t)·u + r]` over i.
fn regroup_f32(w: &Tensor, u: usize) -> Result<Tensor> {
    let (cin, cout, k) = w.dims3()?;
    let q = k / u;
    let src = w.contiguous()?.flatten_all()?;
    let (st, l) = src.storage_and_layout();
    let candle_core::Storage::Cpu(CpuStorage::F32(v)) = &*st else {
        return crate::error::input_err("polyphase conv_transpose1d: an f32 CPU weight expected");
    };
    let v = &v[l.start_offset()..l.start_offset() + cin * cout * k];
    let mut out = vec![0f32; cin * cout * k];
    let dst = SendPtr(out.as_mut_ptr());
    // tap kk of (i, o) lands at row[kk] + o·C_in + i: the division by u once per tap, not per value
    let row: Vec<usize> = (0..k).map(|kk| ((q - 1 - kk / u) * u + kk % u) * cout * cin).collect();
    // tiles of OB output × IB input channels gathered in L1 (tap, channel, IB inputs), then each
    // run of IB inputs streamed out: scattered stores straight into the fresh buffer waited on its
    // lines being read in first
    const OB: usize = 16;
    const IB: usize = 32;
    crate::nn::par_for(cout.div_ceil(OB), |ob| {
        let os = ob * OB..((ob + 1) * OB).min(cout);
        let mut tile = vec![0f32; k * OB * IB];
        for i0 in (0..cin).step_by(IB) {
            let ib = IB.min(cin - i0);
            for (ol, o) in os.clone().enumerate() {
                for il in 0..ib {
                    let i = i0 + il;
                    for (kk, &x) in v[(i * cout + o) * k..(i * cout + o + 1) * k].iter().enumerate() {
                        tile[(kk * OB + ol) * IB + il] = x;
                    }
                }
            }
            for (kk, &r) in row.iter().enumerate() {
                for (ol, o) in os.clone().enumerate() {
                    let t = &tile[(kk * OB + ol) * IB..][..ib];
                    // SAFETY: output channels `os` alone write rows (t, r·C_out + o), o ∈ os
                    unsafe { crate::fastload::stream_out(t, dst.get().add(r + o * cin + i0)) };
                }
            }
        }
        crate::fastload::stream_fence();
    });
    Ok(Tensor::from_vec(out, (q, u * cout, cin), w.device())?.permute((1, 2, 0))?)
}

/// `x·Wᵀ + b` for a contiguous f32/f64 CPU `x` `[.., k]` and `w` `[n, k]`; `None` elsewhere (the
/// caller keeps Candle's matmul).
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Option<Tensor>> {
    let dt = x.dtype();
    if !x.device().is_cpu() || !matches!(dt, DType::F32 | DType::F64) || w.dtype() != dt || b.is_some_and(|b| b.dtype() != dt) || x.rank() == 0 {
        return Ok(None);
    }
    let (n, k) = w.dims2()?;
    if x.dim(x.rank() - 1)? != k || b.is_some_and(|b| b.dims() != [n]) {
        return crate::error::input_err(format!("linear: input {:?}, weight {:?} and bias {:?} do not fit", x.dims(), w.dims(), b.map(|b| b.dims().to_vec())));
    }
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    Ok(Some(match b {
        Some(b) => x.apply_op3_no_bwd(&w, &b.contiguous()?, &GemmLinear)?,
        None => x.apply_op2_no_bwd(&w, &GemmLinear)?,
    }))
}

struct GemmLinear;

impl GemmLinear {
    fn run<T>(x: &[T], xl: &Layout, w: &[T], wl: &Layout, bias: Option<&[T]>) -> candle_core::Result<(Vec<T>, Shape)>
    where
        T: Copy + Default + Send + Sync + 'static + num_like::One + FewRows,
    {
        let (n, k) = wl.shape().dims2()?;
        let m = xl.shape().elem_count() / k.max(1);
        let x = &x[xl.start_offset()..xl.start_offset() + m * k];
        let w = &w[wl.start_offset()..wl.start_offset() + n * k];
        let mut out = vec![T::default(); m * n];
        let mut dims = xl.shape().dims().to_vec();
        *dims.last_mut().expect("rank ≥ 1") = n;
        if m == 0 || n == 0 {
            return Ok((out, Shape::from(dims)));
        }
        // output-column splits, a multiple of 16 wide, one per thread
        let nt = candle_core::utils::get_num_threads().max(1);
        let chunk = n.div_ceil(nt).div_ceil(16) * 16;
        let dst = SendPtr(out.as_mut_ptr());
        let few = T::few_rows(m);
        let split = |i: usize| {
            let (c0, cols) = (i * chunk, chunk.min(n - i * chunk));
            if few {
                // SAFETY: split i owns columns c0..c0+cols of every output row
                unsafe { T::rows_dot(x, m, k, &w[c0 * k..(c0 + cols) * k], cols, dst.get().add(c0), n, bias.map(|b| &b[c0..c0 + cols])) };
                return;
            }
            if let Some(bias) = bias {
                for r in 0..m {
                    // SAFETY: split i owns columns c0..c0+cols of every output row
                    unsafe { std::slice::from_raw_parts_mut(dst.get().add(r * n + c0), cols) }.copy_from_slice(&bias[c0..c0 + cols]);
                }
            }
            // SAFETY: rows c0..c0+cols of W (columns of Wᵀ) and the split's output columns are in bounds
            unsafe {
                gemm::gemm(
                    m, cols, k, dst.get().add(c0), 1, n as isize, bias.is_some(),
                    x.as_ptr(), 1, k as isize,
                    w.as_ptr().add(c0 * k), k as isize, 1,
                    T::one(), T::one(), false, false, false, gemm::Parallelism::None,
                );
            }
        };
        crate::nn::par_for(n.div_ceil(chunk), split);
        Ok((out, Shape::from(dims)))
    }
}

/// A product with few rows (`m` ≤ [`FEW_ROWS`]: a decode step over beams, a short clip's frames):
/// every weight row read once from memory and dotted with the `m` input rows from L1. gemm packs
/// the whole weight for each such call, which made infer_v2's 3-beam decode step 3.5× as slow as
/// the 1-row one.
trait FewRows: Sized {
    fn few_rows(_m: usize) -> bool {
        false
    }
    /// `out[r·n + j] = (bias[j] +) x[r]·w[j]`, r < m, j < cols (`w`: `cols` rows of `k`).
    /// SAFETY: `out` must be valid for writes at r·n + j for every such r, j.
    unsafe fn rows_dot(_x: &[Self], _m: usize, _k: usize, _w: &[Self], _cols: usize, _out: *mut Self, _n: usize, _bias: Option<&[Self]>) {
        unreachable!("few_rows is false")
    }
}

impl FewRows for f64 {}

/// The most input rows [`FewRows`] takes. First measured on streamed f32 weights with one weight
/// row per pass (2 threads, AVX-512, ms for gemm → these dots) at 24 rows: [4096, 1024] 3.73 →
/// 2.15, [1024, 4096] 3.68 → 1.89, [1280, 5120] 5.87 → 3.10, but [3840, 1280] 1.78 → 2.57. With
/// four weight rows per pass (candle only, min of 3; gemm → dots): w2v-bert 406 → 196 ms at 32
/// frames, 438 → 288 at 48, 482 → 375 at 64; the codec's quantize 14.5 → 11.7 ms at 32, but
/// 19.2 → 20.6 at 64; GPT's teacher-forced pass (about 54 rows) 0.34 → 0.36 s. Hence 32.
pub const FEW_ROWS: usize = 32;
/// Accumulator lanes per row: one AVX-512 register, two AVX2 registers, or 16 scalar sums.
const LANES: usize = 16;

impl FewRows for f32 {
    fn few_rows(m: usize) -> bool {
        (2..=FEW_ROWS).contains(&m)
    }
    unsafe fn rows_dot(x: &[f32], m: usize, k: usize, w: &[f32], cols: usize, out: *mut f32, n: usize, bias: Option<&[f32]>) {
        // WR weight rows per pass over an input row: each load of x serves WR products (x of a
        // wide layer at 24 rows is L2-resident, not L1). Every output keeps its own lanes and
        // order, so the bits are those of one row at a time. Measured at 24 rows (2 threads,
        // AVX-512): codec quantize 11.9 → 8.6 ms, w2v-bert 208 → 151 ms, the 3-beam decode 1.60
        // → 1.39 s. The pass is written with intrinsics: the compiler's vectorisation of the
        // portable form came and went with unrelated edits (one build ran 2.4× slower).
        let pass: fn(&[f32], [&[f32]; WR], usize) -> [[f32; LANES]; WR] = match crate::vsin::Isa::best() {
            // SAFETY (both): builds `Isa::best()` found on this CPU
            #[cfg(target_arch = "x86_64")]
            crate::vsin::Isa::Avx512 => |x, w, c| unsafe { pass_avx512(x, w, c) },
            #[cfg(target_arch = "x86_64")]
            crate::vsin::Isa::Avx2 => |x, w, c| unsafe { pass_avx2(x, w, c) },
            _ => pass_base,
        };
        let out = SendPtr(out);
        let (chunks, tail) = (k / LANES, k / LANES * LANES);
        // pairwise: 16 → 8 → 4 → 2 → 1
        let reduce = |acc: &mut [f32; LANES]| {
            let mut h = LANES;
            while h > 1 {
                h /= 2;
                for l in 0..h {
                    acc[l] += acc[l + h];
                }
            }
            acc[0]
        };
        let mut j = 0;
        while j < cols {
            let jn = WR.min(cols - j);
            // a short last group repeats its last row (computed, not written)
            let wr: [&[f32]; WR] = std::array::from_fn(|q| &w[(j + q.min(jn - 1)) * k..(j + q.min(jn - 1) + 1) * k]);
            for (r, xr) in x.chunks_exact(k).take(m).enumerate() {
                let mut acc = pass(xr, wr, chunks);
                for q in 0..jn {
                    for (l, (a, b)) in xr[tail..].iter().zip(&wr[q][tail..]).enumerate() {
                        acc[q][l] += a * b;
                    }
                    let y = bias.map_or(0.0, |b| b[j + q]) + reduce(&mut acc[q]);
                    // SAFETY: the caller's contract (row r, column j + q of its split)
                    unsafe { *out.get().add(r * n + j + q) = y };
                }
            }
            j += jn;
        }
    }
}

/// Weight rows per pass of [`FewRows`] for f32.
const WR: usize = 4;
// the AVX2 pass holds a row's LANES in two registers of 8
const _: () = assert!(LANES == 16);

/// `acc[q][l] = Σ_c x[c·LANES + l] · w[q][c·LANES + l]` over the first `chunks` chunks, each lane
/// summed in order, the product rounded before the add (no FMA): what every build computes.
fn pass_base(x: &[f32], w: [&[f32]; WR], chunks: usize) -> [[f32; LANES]; WR] {
    let mut acc = [[0f32; LANES]; WR];
    for c in 0..chunks {
        for (q, wq) in w.iter().enumerate() {
            for l in 0..LANES {
                acc[q][l] += x[c * LANES + l] * wq[c * LANES + l];
            }
        }
    }
    acc
}

/// [`pass_base`] in AVX-512: one register of 16 lanes per weight row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pass_avx512(x: &[f32], w: [&[f32]; WR], chunks: usize) -> [[f32; LANES]; WR] {
    use std::arch::x86_64::*;
    debug_assert!(x.len() >= chunks * LANES && w.iter().all(|r| r.len() >= chunks * LANES));
    let mut acc = [_mm512_setzero_ps(); WR];
    for c in 0..chunks {
        let a = _mm512_loadu_ps(x.as_ptr().add(c * LANES));
        for q in 0..WR {
            acc[q] = _mm512_add_ps(acc[q], _mm512_mul_ps(a, _mm512_loadu_ps(w[q].as_ptr().add(c * LANES))));
        }
    }
    let mut out = [[0f32; LANES]; WR];
    for q in 0..WR {
        _mm512_storeu_ps(out[q].as_mut_ptr(), acc[q]);
    }
    out
}

/// [`pass_base`] in AVX2: two registers of 8 lanes per weight row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pass_avx2(x: &[f32], w: [&[f32]; WR], chunks: usize) -> [[f32; LANES]; WR] {
    use std::arch::x86_64::*;
    debug_assert!(x.len() >= chunks * LANES && w.iter().all(|r| r.len() >= chunks * LANES));
    let mut acc = [[_mm256_setzero_ps(); 2]; WR];
    for c in 0..chunks {
        let (a0, a1) = (_mm256_loadu_ps(x.as_ptr().add(c * LANES)), _mm256_loadu_ps(x.as_ptr().add(c * LANES + 8)));
        for q in 0..WR {
            let p = w[q].as_ptr().add(c * LANES);
            acc[q][0] = _mm256_add_ps(acc[q][0], _mm256_mul_ps(a0, _mm256_loadu_ps(p)));
            acc[q][1] = _mm256_add_ps(acc[q][1], _mm256_mul_ps(a1, _mm256_loadu_ps(p.add(8))));
        }
    }
    let mut out = [[0f32; LANES]; WR];
    for q in 0..WR {
        _mm256_storeu_ps(out[q].as_mut_ptr(), acc[q][0]);
        _mm256_storeu_ps(out[q].as_mut_ptr().add(8), acc[q][1]);
    }
    out
}

impl candle_core::CustomOp2 for GemmLinear {
    fn name(&self) -> &'static str {
        "gemm-linear"
    }
    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout, w: &CpuStorage, wl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        match (x, w) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => GemmLinear::run(x, xl, w, wl, None).map(|(o, s)| (CpuStorage::F32(o), s)),
            (CpuStorage::F64(x), CpuStorage::F64(w)) => GemmLinear::run(x, xl, w, wl, None).map(|(o, s)| (CpuStorage::F64(o), s)),
            _ => Err(candle_core::Error::Msg("linear: f32/f64 operands of one dtype expected".into())),
        }
    }
}

impl candle_core::CustomOp3 for GemmLinear {
    fn name(&self) -> &'static str {
        "gemm-linear-bias"
    }
    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout, w: &CpuStorage, wl: &Layout, b: &CpuStorage, bl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let err = || candle_core::Error::Msg("linear: f32/f64 operands of one dtype expected".into());
        let (b0, b1) = bl.contiguous_offsets().ok_or_else(err)?;
        match (x, w, b) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) => GemmLinear::run(x, xl, w, wl, Some(&b[b0..b1])).map(|(o, s)| (CpuStorage::F32(o), s)),
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(b)) => GemmLinear::run(x, xl, w, wl, Some(&b[b0..b1])).map(|(o, s)| (CpuStorage::F64(o), s)),
            _ => Err(err()),
        }
    }
}

/// Scaled dot-product attention, one fused pass per (batch, head) on the CPU:
/// `softmax(q·kᵀ · scale + mask) · v`, with q, k, v `[B, T, H, D]` (any strides with a unit last
/// stride: the heads are read in place, no transposes) and the output `[B, Tq, H·D]`. The score
/// row is scaled, masked and normalised (product, × scale, plus the mask, max, exp(s − max), Σ,
/// ÷ Σ): in f64 in the tensor form's order with libm's `exp`, in f32 vectorised (`Real`). `mask`: `[Bm, 1, Tm, Tk]`,
/// Bm ∈ {1, B}, Tm ∈ {1, Tq}, added to the scores. `None` where it does not apply (not CPU
/// f32/f64): the caller keeps its tensor form.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, scale: f64) -> Result<Option<Tensor>> {
    attention_rel(q, k, v, None, mask, scale)
}

/// `attention` with a relative-key term (w2v-bert's `relative_key`): `rel = (per_dist, left,
/// right)`, per_dist `[B, H, Tq, left + right + 1]` the scores of each query against every
/// distance embedding; query i and key j add `per_dist[…, i, clamp(j − i, −left, right) + left]`.
/// The scores are formed as the tensor form does, `qk·scale + rel·scale (+ mask)`, each step
/// rounded.
pub fn attention_rel(q: &Tensor, k: &Tensor, v: &Tensor, rel: Option<(&Tensor, usize, usize)>, mask: Option<&Tensor>, scale: f64) -> Result<Option<Tensor>> {
    let dt = q.dtype();
    if rel.is_some_and(|(p, _, _)| p.dtype() != dt) {
        return Ok(None);
    }
    if !q.device().is_cpu() || !matches!(dt, DType::F32 | DType::F64) || k.dtype() != dt || v.dtype() != dt || mask.is_some_and(|m| m.dtype() != dt) {
        return Ok(None);
    }
    let (b, tq, h, d) = q.dims4()?;
    let (kb, tk, kh, kd) = k.dims4()?;
    if (kb, kh, kd) != (b, h, d) || v.dims() != k.dims() {
        return crate::error::input_err(format!("attention: q {:?}, k {:?}, v {:?} do not fit", q.dims(), k.dims(), v.dims()));
    }
    let unit_last = |t: &Tensor| -> Result<Tensor> { Ok(if t.layout().stride()[3] == 1 { t.clone() } else { t.contiguous()? }) };
    let (q, k, v) = (unit_last(q)?, unit_last(k)?, unit_last(v)?);
    let mask = match mask {
        None => None,
        Some(m) => {
            let (mb, one, mt, mk) = m.dims4()?;
            if !(mb == 1 || mb == b) || one != 1 || !(mt == 1 || mt == tq) || mk != tk {
                return crate::error::input_err(format!("attention: mask {:?} does not fit scores [{b}, {h}, {tq}, {tk}]", m.dims()));
            }
            Some(m.contiguous()?)
        }
    };
    let rel = match rel {
        None => None,
        Some((p, left, right)) => {
            if p.dims() != [b, h, tq, left + right + 1] {
                return crate::error::input_err(format!("attention: relative scores {:?} do not fit [{b}, {h}, {tq}, {}]", p.dims(), left + right + 1));
            }
            Some((p.contiguous()?, left, right))
        }
    };
    let op = Sdpa { scale, mask, rel };
    Ok(Some(q.apply_op3_no_bwd(&k, &v, &op)?))
}

/// The mask rides in the op (contiguous, read through its storage in `cpu_fwd`): a CustomOp takes
/// at most three tensor arguments.
struct Sdpa {
    scale: f64,
    mask: Option<Tensor>,
    /// (per_dist `[B, H, Tq, P]` contiguous, left, right)
    rel: Option<(Tensor, usize, usize)>,
}

trait Real: Copy + Default + Send + Sync + 'static + num_like::One + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self> {
    fn from_f64(v: f64) -> Self;
    /// One score row in place: × scale, + mask, then softmax.
    fn softmax_row(row: &mut [Self], scale: Self, mask: Option<&[Self]>);
}
impl Real for f32 {
    fn from_f64(v: f64) -> f32 {
        v as f32
    }
    fn softmax_row(row: &mut [f32], scale: f32, mask: Option<&[f32]>) {
        crate::vact::softmax_row(row, scale, mask)
    }
}
impl Real for f64 {
    fn from_f64(v: f64) -> f64 {
        v
    }
    /// In the tensor form's order (product, × scale, plus the mask, max, exp(s − max), Σ, ÷ Σ),
    /// with libm's `exp`: the f64 reference the tests hold the f32 path to.
    fn softmax_row(row: &mut [f64], scale: f64, mask: Option<&[f64]>) {
        let mut max = f64::NEG_INFINITY;
        for (j, x) in row.iter_mut().enumerate() {
            *x *= scale;
            if let Some(m) = mask {
                *x += m[j];
            }
            if *x > max {
                max = *x;
            }
        }
        let mut sum = 0.0;
        for x in row.iter_mut() {
            *x = (*x - max).exp();
            sum += *x;
        }
        row.iter_mut().for_each(|x| *x /= sum);
    }
}

/// Query rows per unit: a block's scores (ROWS × Tk) stay in L2, and (batch, head, block) units
/// keep both cores busy.
const ROWS: usize = 64;

impl Sdpa {
    #[allow(clippy::too_many_arguments)]
    fn run<T: Real>(&self, q: &[T], ql: &Layout, k: &[T], kl: &Layout, v: &[T], vl: &Layout, mask: Option<(&[T], &Layout)>, rel: Option<(&[T], usize)>) -> candle_core::Result<(Vec<T>, Shape)> {
        let (b, tq, h, d) = ql.shape().dims4()?;
        let tk = kl.shape().dims4()?.1;
        let (qs, ks, vs) = (ql.stride(), kl.stride(), vl.stride());
        let (q0, k0, v0) = (ql.start_offset(), kl.start_offset(), vl.start_offset());
        let (mb, mt, mask0) = match mask {
            Some((_, l)) => (l.shape().dims4()?.0, l.shape().dims4()?.2, l.start_offset()),
            None => (1, 1, 0),
        };
        let mask = mask.map(|m| m.0);
        let scale = T::from_f64(self.scale);
        let mut out = vec![T::default(); b * tq * h * d];
        let dst = SendPtr(out.as_mut_ptr());
        let blocks = tq.div_ceil(ROWS);
        let (left, right) = self.rel.as_ref().map_or((0, 0), |r| (r.1, r.2));
        // on Candle's pool, not rayon's: its workers spin after the previous op, and a rayon job
        // started then shares the cores with them
        candle_core::utils::barrier_pool().execute_chunked(b * h * blocks, |units| {
            let mut scratch = vec![T::default(); ROWS * tk];
            for u in units {
                let (bi, hi, r0) = (u / (h * blocks), (u / blocks) % h, (u % blocks) * ROWS);
                let rows = ROWS.min(tq - r0);
                let s = &mut scratch[..rows * tk];
                // SAFETY: the offsets and strides come from the operands' layouts; the unit writes
                // only rows r0.. of head hi of batch bi of the output
                unsafe {
                    gemm::gemm(
                        rows, tk, d, s.as_mut_ptr(), 1, tk as isize, false,
                        q.as_ptr().add(q0 + bi * qs[0] + r0 * qs[1] + hi * qs[2]), 1, qs[1] as isize,
                        k.as_ptr().add(k0 + bi * ks[0] + hi * ks[2]), ks[1] as isize, 1,
                        T::one(), T::one(), false, false, false, gemm::Parallelism::None,
                    );
                }
                for (i, row) in s.chunks_mut(tk).enumerate() {
                    let mrow = mask.map(|m| &m[mask0 + ((if mb == 1 { 0 } else { bi }) * mt + if mt == 1 { 0 } else { r0 + i }) * tk..][..tk]);
                    match rel {
                        None => T::softmax_row(row, scale, mrow),
                        Some((pd, p0)) => {
                            let np = left + right + 1;
                            let qi = r0 + i;
                            let prow = &pd[p0 + ((bi * h + hi) * tq + qi) * np..][..np];
                            for (j, x) in row.iter_mut().enumerate() {
                                let dist = (j as isize - qi as isize).clamp(-(left as isize), right as isize) + left as isize;
                                *x = *x * scale + prow[dist as usize] * scale;
                            }
                            // ×1 is exact: the mask is then added as the tensor form's broadcast_add
                            T::softmax_row(row, T::one(), mrow)
                        }
                    }
                }
                unsafe {
                    gemm::gemm(
                        rows, d, tk, dst.get().add((bi * tq + r0) * h * d + hi * d), 1, (h * d) as isize, false,
                        s.as_ptr(), 1, tk as isize,
                        v.as_ptr().add(v0 + bi * vs[0] + hi * vs[2]), 1, vs[1] as isize,
                        T::one(), T::one(), false, false, false, gemm::Parallelism::None,
                    );
                }
            }
        });
        Ok((out, Shape::from((b, tq, h * d))))
    }
}

impl candle_core::CustomOp3 for Sdpa {
    fn name(&self) -> &'static str {
        "sdpa"
    }
    fn cpu_fwd(&self, q: &CpuStorage, ql: &Layout, k: &CpuStorage, kl: &Layout, v: &CpuStorage, vl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let err = || candle_core::Error::Msg("attention: f32/f64 operands of one dtype expected".into());
        let mask_guard = self.mask.as_ref().map(|m| m.storage_and_layout());
        let rel_guard = self.rel.as_ref().map(|r| r.0.storage_and_layout());
        macro_rules! go {
            ($var:ident) => {{
                let (CpuStorage::$var(q), CpuStorage::$var(k), CpuStorage::$var(v)) = (q, k, v) else { return Err(err()) };
                let mask = match &mask_guard {
                    None => None,
                    Some((s, l)) => match &**s {
                        candle_core::Storage::Cpu(CpuStorage::$var(m)) => Some((m.as_slice(), *l)),
                        _ => return Err(err()),
                    },
                };
                let rel = match &rel_guard {
                    None => None,
                    Some((s, l)) => match &**s {
                        candle_core::Storage::Cpu(CpuStorage::$var(p)) => Some((p.as_slice(), l.start_offset())),
                        _ => return Err(err()),
                    },
                };
                self.run(q, ql, k, kl, v, vl, mask, rel).map(|(o, s)| (CpuStorage::$var(o), s))?
            }};
        }
        Ok(match q {
            CpuStorage::F32(_) => go!(F32),
            CpuStorage::F64(_) => go!(F64),
            _ => return Err(err()),
        })
    }
}

struct GemmConv {
    padding: usize,
    stride: usize,
    dilation: usize,
}

impl GemmConv {
    fn out_len(&self, l: usize, k: usize) -> usize {
        (l + 2 * self.padding - self.dilation * (k - 1) - 1) / self.stride + 1
    }

    fn run<T>(
        &self,
        x: &[T],
        xl: &Layout,
        w: &[T],
        wl: &Layout,
        bias: Option<&[T]>,
    ) -> candle_core::Result<(Vec<T>, Shape)>
    where
        T: Copy + Default + Send + Sync + 'static + num_like::One,
    {
        let (b, cin, l) = xl.shape().dims3()?;
        let (cout, _, k) = wl.shape().dims3()?;
        let ws = wl.stride();
        let w0 = wl.start_offset();
        let x = &x[xl.start_offset()..xl.start_offset() + b * cin * l];
        let lo = self.out_len(l, k);
        let lp = l + 2 * self.padding;
        // the zero-padded input (the input itself when there is no padding)
        let padded;
        let xp: &[T] = if self.padding == 0 {
            x
        } else {
            let mut v = vec![T::default(); b * cin * lp];
            let (dst, pad) = (SendPtr(v.as_mut_ptr()), self.padding);
            crate::nn::par_for(b * cin, |r| {
                // SAFETY: row r of `v`, written by this task only
                unsafe { std::slice::from_raw_parts_mut(dst.get().add(r * lp + pad), l) }.copy_from_slice(&x[r * l..(r + 1) * l]);
            });
            padded = v;
            &padded
        };
        let mut out = vec![T::default(); b * cout * lo];
        // column splits: a multiple of 16 outputs (gemm's row block), enough of them for every thread
        let nt = candle_core::utils::get_num_threads().max(1);
        let per_batch = if b >= nt { 1 } else { nt.div_ceil(b) };
        let chunk = lo.div_ceil(per_batch).div_ceil(16) * 16;
        let splits = lo.div_ceil(chunk);
        let dst = SendPtr(out.as_mut_ptr());
        crate::nn::par_for(b * splits, |u| {
            let (bi, t0) = (u / splits, (u % splits) * chunk);
            let n = chunk.min(lo - t0);
            // SAFETY: unit u owns columns t0..t0+n of every output row of batch bi
            let d = unsafe { dst.get().add(bi * cout * lo + t0) };
            if let Some(bias) = bias {
                for (co, &bv) in bias.iter().enumerate() {
                    unsafe { std::slice::from_raw_parts_mut(d.add(co * lo), n) }.fill(bv);
                }
            }
            let xb = &xp[bi * cin * lp..];
            for j in 0..k {
                // SAFETY: tap j's weight matrix and the shifted input view stay inside their buffers
                // (strides from the layouts; the last column read is s·(t0+n−1) + d·j < lp)
                unsafe {
                    gemm::gemm(
                        cout,
                        n,
                        cin,
                        d,
                        1,
                        lo as isize,
                        bias.is_some() || j > 0,
                        w.as_ptr().add(w0 + j * ws[2]),
                        ws[1] as isize,
                        ws[0] as isize,
                        xb.as_ptr().add(self.stride * t0 + self.dilation * j),
                        self.stride as isize,
                        lp as isize,
                        T::one(),
                        T::one(),
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }
        });
        Ok((out, Shape::from((b, cout, lo))))
    }

    fn dispatch(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        b: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let err = || candle_core::Error::Msg("conv1d: f32/f64 operands of one dtype expected".into());
        let bias = |bl: &Layout| bl.contiguous_offsets().ok_or_else(err);
        Ok(match (x, w, b) {
            (CpuStorage::F32(x), CpuStorage::F32(w), None) => self.run(x, xl, w, wl, None).map(|(o, s)| (CpuStorage::F32(o), s))?,
            (CpuStorage::F32(x), CpuStorage::F32(w), Some((CpuStorage::F32(v), bl))) => {
                let (b0, b1) = bias(bl)?;
                self.run(x, xl, w, wl, Some(&v[b0..b1])).map(|(o, s)| (CpuStorage::F32(o), s))?
            }
            (CpuStorage::F64(x), CpuStorage::F64(w), None) => self.run(x, xl, w, wl, None).map(|(o, s)| (CpuStorage::F64(o), s))?,
            (CpuStorage::F64(x), CpuStorage::F64(w), Some((CpuStorage::F64(v), bl))) => {
                let (b0, b1) = bias(bl)?;
                self.run(x, xl, w, wl, Some(&v[b0..b1])).map(|(o, s)| (CpuStorage::F64(o), s))?
            }
            _ => return Err(err()),
        })
    }
}

mod num_like {
    pub trait One {
        fn one() -> Self;
    }
    impl One for f32 {
        fn one() -> f32 {
            1.0
        }
    }
    impl One for f64 {
        fn one() -> f64 {
            1.0
        }
    }
}

impl candle_core::CustomOp2 for GemmConv {
    fn name(&self) -> &'static str {
        "gemm-conv1d"
    }
    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout, w: &CpuStorage, wl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.dispatch(x, xl, w, wl, None)
    }
}

impl candle_core::CustomOp3 for GemmConv {
    fn name(&self) -> &'static str {
        "gemm-conv1d-bias"
    }
    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout, w: &CpuStorage, wl: &Layout, b: &CpuStorage, bl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.dispatch(x, xl, w, wl, Some((b, bl)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Against Candle's conv_transpose1d (unpadded, cropped) + bias in f64, one batch element at a
    /// time (its CPU col2im path is wrong for batch > 1: up to 20 off on these inputs), for
    /// BigVGAN's (stride, kernel) pairs and others, batch 1 and 2; f32 within rounding of f64.
    #[test]
    fn polyphase_transpose_matches_candle_conv_transpose1d() -> Result<()> {
        let d = Device::Cpu;
        // (1, 70, 20, 5, 8, 4): the f32 regroup's tiles, 32 + 32 + 6 inputs × 16 + 4 outputs
        for (b, cin, cout, l, k, u) in [(1, 6, 3, 9, 8, 4), (2, 6, 3, 9, 8, 4), (2, 4, 5, 17, 4, 2), (1, 3, 2, 1, 6, 3), (2, 5, 4, 12, 3, 1), (1, 2, 3, 7, 10, 5), (1, 70, 20, 5, 8, 4)] {
            let x = Tensor::randn(0f64, 1.0, (b, cin, l), &d)?;
            let w = Tensor::randn(0f64, 1.0, (cin, cout, k), &d)?;
            let bias = Tensor::randn(0f64, 1.0, cout, &d)?;
            let p = (k - u) / 2;
            let mut want = Vec::new();
            for i in 0..b {
                let full = x.narrow(0, i, 1)?.conv_transpose1d(&w, 0, 0, u, 1, 1)?;
                let n = full.dim(2)?;
                want.push(full.narrow(2, p, n - 2 * p)?.broadcast_add(&bias.reshape((1, cout, 1))?)?);
            }
            let want = Tensor::cat(&want, 0)?;
            let got = PolyphaseTranspose::new(&w, u)?.unwrap().forward(&x, &bias, p)?;
            assert_eq!(got.dims(), want.dims());
            let diff = (&got - &want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
            assert!(diff < 1e-12, "f64 ({b}, {cin}, {cout}, {l}, {k}, {u}): {diff}");
            let (x32, w32, b32) = (x.to_dtype(DType::F32)?, w.to_dtype(DType::F32)?, bias.to_dtype(DType::F32)?);
            // the f32 regroup moves values only: the f64 tensor form's weight, exactly
            let (p64, p32) = (PolyphaseTranspose::new(&w, u)?.unwrap(), PolyphaseTranspose::new(&w32, u)?.unwrap());
            assert_eq!(p32.w.layout().stride(), p64.w.layout().stride());
            let flat = |t: &Tensor| t.contiguous().unwrap().flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(flat(&p32.w), flat(&p64.w), "regroup ({cin}, {cout}, {k}, {u})");
            // f32 against the f64 result: within the summation bound (n + 2)·ε·Σ|x·w| + ε·|b| of
            // its n = C_in·k/u products (two more ε for rounding x and w to f32). A fixed 1e-5
            // did not scale with C_in: the 70-input case drew 1.09e-5 on one unseeded run.
            let got32 = p32.forward(&x32, &b32, p)?.to_dtype(DType::F64)?;
            let mag = PolyphaseTranspose::new(&w.abs()?, u)?.unwrap().forward(&x.abs()?, &bias.abs()?, p)?;
            let bound = (mag * ((cin * (k / u) + 2) as f64 * f32::EPSILON as f64))?;
            let excess = ((&got32 - &want)?.abs()? - bound)?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
            assert!(excess <= 0.0, "f32 ({b}, {cin}, {cout}, {l}, {k}, {u}): past the bound by {excess}");
        }
        // not a multiple of the stride, or not CPU f32/f64: the caller keeps Candle's op
        assert!(PolyphaseTranspose::new(&Tensor::zeros((2, 3, 5), DType::F32, &d)?, 2)?.is_none());
        assert!(PolyphaseTranspose::new(&Tensor::zeros((2, 3, 4), DType::F16, &d)?, 2)?.is_none());
        // too short for its crop: an error, not a panic
        let pt = PolyphaseTranspose::new(&Tensor::ones((1, 1, 4), DType::F32, &d)?, 2)?.unwrap();
        assert!(pt.forward(&Tensor::ones((1, 1, 1), DType::F32, &d)?, &Tensor::zeros(1, DType::F32, &d)?, 3).is_err());
        Ok(())
    }

    /// Against Candle's conv1d + bias in f64 (equal to rounding), for every stride / dilation /
    /// padding mix the models use, batch > threads and batch < threads, and both weight layouts.
    #[test]
    fn matches_candle_conv1d() -> Result<()> {
        let d = Device::Cpu;
        for (b, cin, cout, l, k, p, s, dil) in [
            (1, 3, 5, 40, 3, 1, 1, 1),
            (2, 4, 6, 37, 5, 2, 2, 1),
            (3, 8, 2, 50, 7, 15, 1, 5),
            (1, 2, 3, 5, 1, 0, 1, 1),
            (1, 6, 4, 9, 11, 5, 1, 1),
            (2, 5, 7, 300, 3, 1, 2, 1),
        ] {
            let x = Tensor::randn(0f64, 1.0, (b, cin, l), &d)?;
            let w = Tensor::randn(0f64, 1.0, (cout, cin, k), &d)?;
            let bias = Tensor::randn(0f64, 1.0, cout, &d)?;
            let want = x
                .conv1d(&w, p, s, dil, 1)?
                .broadcast_add(&bias.reshape((1, cout, 1))?)?;
            for w in [w.clone(), tap_major(&w)?] {
                let got = conv1d(&x, &w, Some(&bias), p, s, dil)?.unwrap();
                assert_eq!(got.dims(), want.dims());
                let diff = (&got - &want)?
                    .abs()?
                    .flatten_all()?
                    .max(0)?
                    .to_scalar::<f64>()?;
                assert!(
                    diff < 1e-12,
                    "{b}x{cin}→{cout} L{l} k{k} p{p} s{s} d{dil}: {diff}"
                );
                let nobias = conv1d(&x, &w, None, p, s, dil)?.unwrap();
                let diff = (nobias - x.conv1d(&w.contiguous()?, p, s, dil, 1)?)?
                    .abs()?
                    .flatten_all()?
                    .max(0)?
                    .to_scalar::<f64>()?;
                assert!(diff < 1e-12);
            }
        }
        Ok(())
    }

    /// Against Candle's matmul + bias in f64 (the same gemm accumulation, the bias added to the
    /// finished sum): equal to rounding, ranks 1–3, widths that do not split evenly.
    #[test]
    fn linear_matches_candle_matmul() -> Result<()> {
        let d = Device::Cpu;
        for (lead, k, n) in [(vec![], 5usize, 7usize), (vec![3], 16, 33), (vec![2, 9], 40, 17), (vec![1, 1], 64, 300), (vec![4, 50], 3, 1)] {
            let mut xs = lead.clone();
            xs.push(k);
            let x = Tensor::randn(0f64, 1.0, xs, &d)?;
            let w = Tensor::randn(0f64, 1.0, (n, k), &d)?;
            let b = Tensor::randn(0f64, 1.0, n, &d)?;
            let x2 = if x.rank() == 1 { x.unsqueeze(0)? } else { x.clone() }; // Candle's matmul wants rank ≥ 2
            let want = x2.broadcast_matmul(&w.t()?)?.broadcast_add(&b)?.reshape(x.dims()[..x.rank() - 1].iter().copied().chain([n]).collect::<Vec<_>>())?;
            let got = linear(&x, &w, Some(&b))?.unwrap();
            assert_eq!(got.dims(), want.dims());
            let diff = (&got - &want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
            assert!(diff < 1e-12, "{lead:?} {k} {n}: {diff}");
            let nb = (linear(&x2, &w, None)?.unwrap() - x2.broadcast_matmul(&w.t()?)?)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
            assert!(nb < 1e-12);
        }
        Ok(())
    }

    /// The few-rows f32 product (2–24 rows: a beam decode step) against the f64 product: every
    /// output within the error bound of its summation order, (k/LANES + 5)·ε·Σ|xᵢwᵢ| + ε·|y| (the
    /// lanes' sequential sums, four pairwise levels, the bias). Widths with a tail (k % 16 ≠ 0),
    /// splits that do not divide evenly, with and without bias; 25 rows take gemm.
    #[test]
    fn few_rows_linear_within_its_summation_bound() -> Result<()> {
        let d = Device::Cpu;
        for (m, k, n) in [(2usize, 16usize, 33usize), (3, 1280, 70), (5, 37, 129), (8, 300, 17), (24, 64, 40), (32, 300, 7), (33, 64, 9)] {
            let x = Tensor::randn(0f32, 1.0, (1, m, k), &d)?;
            let w = Tensor::randn(0f32, 1.0, (n, k), &d)?;
            let b = Tensor::randn(0f32, 1.0, n, &d)?;
            let (x64, w64, b64) = (x.to_dtype(DType::F64)?, w.to_dtype(DType::F64)?, b.to_dtype(DType::F64)?);
            let exact = x64.broadcast_matmul(&w64.t()?)?;
            let mag = x64.abs()?.broadcast_matmul(&w64.abs()?.t()?)?;
            let eps = f32::EPSILON as f64;
            for bias in [None, Some(&b)] {
                let got = linear(&x, &w, bias)?.unwrap().to_dtype(DType::F64)?;
                let want = match bias {
                    Some(_) => exact.broadcast_add(&b64)?,
                    None => exact.clone(),
                };
                let bound = ((mag.clone() * ((k / LANES + 5) as f64 * eps))? + (want.abs()? * eps)?)?;
                let over = ((&got - &want)?.abs()? - bound)?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
                assert!(over <= 0.0, "m {m} k {k} n {n} bias {}: {over:e} over the bound", bias.is_some());
                if m <= FEW_ROWS {
                    // and exactly the documented order, one output at a time: LANES sums, pairwise
                    let (xv, wv) = (x.flatten_all()?.to_vec1::<f32>()?, w.flatten_all()?.to_vec1::<f32>()?);
                    let bv = bias.map(|b| b.to_vec1::<f32>()).transpose()?;
                    let got = got.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                    for (i, g) in got.iter().enumerate() {
                        let (r, j) = (i / n, i % n);
                        let mut acc = [0f32; LANES];
                        for c in 0..k {
                            acc[c % LANES] += xv[r * k + c] * wv[j * k + c];
                        }
                        let mut h = LANES;
                        while h > 1 {
                            h /= 2;
                            for l in 0..h {
                                acc[l] += acc[l + h];
                            }
                        }
                        let y = bv.as_ref().map_or(0.0, |b| b[j]) + acc[0];
                        assert_eq!(g.to_bits(), y.to_bits(), "m {m} k {k} n {n}: output ({r}, {j})");
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn few_rows_pass_has_the_same_bits_on_every_build() {
        let k = 37 * LANES;
        let v = |s: usize| (0..k).map(|i| (((i * 7919 + s * 104729) % 2003) as f32 - 1001.0) * 1.7e-3).collect::<Vec<f32>>();
        let (x, rows) = (v(0), [v(1), v(2), v(3), v(4)]);
        let w: [&[f32]; WR] = std::array::from_fn(|q| &rows[q][..]);
        let want = pass_base(&x, w, k / LANES);
        let bits = |a: [[f32; LANES]; WR]| a.iter().flatten().map(|x| x.to_bits()).collect::<Vec<_>>();
        for isa in crate::vsin::Isa::available() {
            // SAFETY: builds `available()` found on this CPU
            let got = match isa {
                #[cfg(target_arch = "x86_64")]
                crate::vsin::Isa::Avx512 => unsafe { pass_avx512(&x, w, k / LANES) },
                #[cfg(target_arch = "x86_64")]
                crate::vsin::Isa::Avx2 => unsafe { pass_avx2(&x, w, k / LANES) },
                _ => pass_base(&x, w, k / LANES),
            };
            assert_eq!(bits(got), bits(want), "{isa:?}");
        }
    }

    /// Against the tensor form (transpose, matmul, scale, mask, softmax, matmul) in f64: no mask, a
    /// key mask per batch row, a causal mask; v read in place from a fused projection; one block of
    /// query rows and several (t > ROWS). The f32 op against the same f64 result: within 3e-6 of
    /// outputs of size about 1 (a few f32 ulps: its exp is about 1 ulp).
    #[test]
    fn attention_matches_tensor_form() -> Result<()> {
        let d = Device::Cpu;
        for (b, t, h, hd) in [(2, 9, 3, 4), (2, 150, 2, 8)] {
            let qkv = Tensor::randn(0f64, 1.0, (b, t, 3 * h * hd), &d)?;
            let q = qkv.narrow(2, 0, h * hd)?.reshape((b, t, h, hd))?;
            let k = qkv.narrow(2, h * hd, h * hd)?.reshape((b, t, h, hd))?;
            let v = qkv.narrow(2, 2 * h * hd, h * hd)?.reshape((b, t, h, hd))?;
            let keys: Vec<f64> = (0..b * t).map(|i| if i % t < t - 2 * (i / t) { 0.0 } else { f64::NEG_INFINITY }).collect();
            let causal: Vec<f64> = (0..t * t).map(|i| if i % t <= i / t { 0.0 } else { f64::NEG_INFINITY }).collect();
            for mask in [None, Some(Tensor::from_vec(keys, (b, 1, 1, t), &d)?), Some(Tensor::from_vec(causal, (1, 1, t, t), &d)?)] {
                let got = attention(&q, &k, &v, mask.as_ref(), 0.3)?.unwrap();
                let (qt, kt, vt) = (q.transpose(1, 2)?.contiguous()?, k.transpose(1, 2)?.contiguous()?, v.transpose(1, 2)?.contiguous()?);
                let mut s = (qt.matmul(&kt.t()?)? * 0.3)?;
                if let Some(m) = &mask {
                    s = s.broadcast_add(m)?;
                }
                let want = candle_nn::ops::softmax_last_dim(&s)?.matmul(&vt)?.transpose(1, 2)?.reshape((b, t, h * hd))?;
                let diff = (&got - &want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
                assert!(diff < 1e-12, "t {t} {:?}: {diff}", mask.as_ref().map(|m| m.dims().to_vec()));
                let f32s = |x: &Tensor| x.to_dtype(DType::F32);
                let got32 = attention(&f32s(&q)?, &f32s(&k)?, &f32s(&v)?, mask.as_ref().map(f32s).transpose()?.as_ref(), 0.3)?.unwrap();
                let want32 = {
                    // the same f64 computation from the f32-rounded operands
                    let (q, k, v) = (f32s(&q)?.to_dtype(DType::F64)?, f32s(&k)?.to_dtype(DType::F64)?, f32s(&v)?.to_dtype(DType::F64)?);
                    attention(&q, &k, &v, mask.as_ref(), 0.3)?.unwrap()
                };
                let diff = (got32.to_dtype(DType::F64)? - &want32)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
                assert!(diff < 3e-6, "f32 t {t} {:?}: {diff}", mask.as_ref().map(|m| m.dims().to_vec()));
            }
            assert!(attention(&q, &k, &v, Some(&Tensor::zeros((1, 1, 2, t), DType::F64, &d)?), 1.0).is_err());
        }
        Ok(())
    }

    /// The relative-key term against the tensor form (w2v-bert's: per-distance scores gathered at
    /// clamp(j − i) + left, scaled and added, then the key mask), f64 to rounding, f32 within 3e-6.
    #[test]
    fn attention_rel_matches_tensor_form() -> Result<()> {
        let d = Device::Cpu;
        let (b, t, h, hd, left, right) = (2, 90, 2, 8, 5, 3);
        let q = Tensor::randn(0f64, 1.0, (b, t, h, hd), &d)?;
        let k = Tensor::randn(0f64, 1.0, (b, t, h, hd), &d)?;
        let v = Tensor::randn(0f64, 1.0, (b, t, h, hd), &d)?;
        let pd = Tensor::randn(0f64, 1.0, (b, h, t, left + right + 1), &d)?;
        let keys: Vec<f64> = (0..b * t).map(|i| if i % t < t - 9 * (i / t) { 0.0 } else { f32::MIN as f64 }).collect();
        let mask = Tensor::from_vec(keys, (b, 1, 1, t), &d)?;
        let idx: Vec<u32> = (0..t as i64).flat_map(|i| (0..t as i64).map(move |j| ((j - i).clamp(-(left as i64), right as i64) + left as i64) as u32)).collect();
        let idx = Tensor::from_vec(idx, (1, 1, t, t), &d)?.broadcast_as((b, h, t, t))?.contiguous()?;
        let (qt, kt, vt) = (q.transpose(1, 2)?.contiguous()?, k.transpose(1, 2)?.contiguous()?, v.transpose(1, 2)?.contiguous()?);
        let s = ((qt.matmul(&kt.t()?)? * 0.25)? + (pd.gather(&idx, 3)? * 0.25)?)?.broadcast_add(&mask)?;
        let want = candle_nn::ops::softmax_last_dim(&s)?.matmul(&vt)?.transpose(1, 2)?.reshape((b, t, h * hd))?;
        let got = attention_rel(&q, &k, &v, Some((&pd, left, right)), Some(&mask), 0.25)?.unwrap();
        let diff = (&got - &want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
        assert!(diff < 1e-12, "{diff}");
        let f32s = |x: &Tensor| x.to_dtype(DType::F32);
        let got32 = attention_rel(&f32s(&q)?, &f32s(&k)?, &f32s(&v)?, Some((&f32s(&pd)?, left, right)), Some(&f32s(&mask)?), 0.25)?.unwrap();
        let r64 = |x: &Tensor| x.to_dtype(DType::F32)?.to_dtype(DType::F64);
        let want32 = attention_rel(&r64(&q)?, &r64(&k)?, &r64(&v)?, Some((&r64(&pd)?, left, right)), Some(&mask), 0.25)?.unwrap();
        let diff = (got32.to_dtype(DType::F64)? - &want32)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
        assert!(diff < 3e-6, "f32: {diff}");
        assert!(attention_rel(&q, &k, &v, Some((&pd.narrow(3, 0, 4)?, left, right)), None, 0.25).is_err());
        Ok(())
    }

    /// The tap-major copy holds the same values under the same shape (f32: the parallel gather).
    #[test]
    fn tap_major_keeps_values_and_shape() -> Result<()> {
        let w = Tensor::randn(0f32, 1.0, (5, 3, 4), &Device::Cpu)?;
        let t = tap_major(&w)?;
        assert_eq!(t.dims(), w.dims());
        assert_eq!(t.layout().stride(), &[3, 1, 15]);
        assert_eq!(t.contiguous()?.flatten_all()?.to_vec1::<f32>()?, w.flatten_all()?.to_vec1::<f32>()?);
        Ok(())
    }

    #[test]
    fn refuses_mismatched_shapes() -> Result<()> {
        let d = Device::Cpu;
        let x = Tensor::zeros((1, 3, 10), DType::F32, &d)?;
        assert!(conv1d(
            &x,
            &Tensor::zeros((2, 4, 3), DType::F32, &d)?,
            None,
            1,
            1,
            1
        )
        .is_err());
        assert!(conv1d(
            &x,
            &Tensor::zeros((2, 3, 13), DType::F32, &d)?,
            None,
            1,
            1,
            1
        )
        .is_err());
        assert!(conv1d(
            &x,
            &Tensor::zeros((2, 3, 3), DType::F32, &d)?,
            Some(&Tensor::zeros(3, DType::F32, &d)?),
            1,
            1,
            1
        )
        .is_err());
        Ok(())
    }
}
