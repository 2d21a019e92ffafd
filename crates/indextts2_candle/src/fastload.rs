//! Load-time copies on all cores: checkpoint bytes straight into a tensor's own buffer, converted
//! (f32 ↔ f16/bf16 exactly as Candle's `to_dtype` does: `half`'s round-to-nearest-even) and, for
//! GPT-2's `Conv1D`, transposed on the way, with the finiteness scan fused into the copy while the
//! chunk is in cache. One pass over the bytes instead of copy + convert + transpose + scan.
//!
//! The bytes come from memory or are read from the file with `pread` ([`Src`]): a read lets the
//! kernel copy from its page cache into the new buffer, where a copy out of a mapping first maps
//! every 4 KB page of the file into this process (GPT's 3.5 GB: 0.2 s of page-table work).
use crate::error::{Error, Result};
use crate::vsin::Isa;
use candle_core::{Device, Tensor, WithDType};
use half::{bf16, f16};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// (stored dtype → model dtype) pairs of the fast path.
#[derive(Clone, Copy, Debug)]
pub enum Conv {
    F32ToF32,
    F32ToF16,
    F32ToBf16,
    F16ToF16,
    F16ToF32,
    Bf16ToBf16,
    Bf16ToF32,
}

/// A tensor's bytes: in memory, or `len` bytes at `offset` of a file, read on demand.
#[derive(Clone, Copy)]
pub enum Src<'a> {
    Mem(&'a [u8]),
    File { file: &'a std::fs::File, offset: u64, len: usize },
}

impl<'a> From<&'a [u8]> for Src<'a> {
    fn from(b: &'a [u8]) -> Self {
        Src::Mem(b)
    }
}

impl Src<'_> {
    pub fn len(&self) -> usize {
        match self {
            Src::Mem(b) => b.len(),
            Src::File { len, .. } => *len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes `at..at + dst.len()` into `dst`.
    fn read(&self, at: usize, dst: &mut [u8]) -> Result<()> {
        debug_assert!(at + dst.len() <= self.len());
        match self {
            Src::Mem(b) => dst.copy_from_slice(&b[at..at + dst.len()]),
            #[cfg(unix)]
            Src::File { file, offset, .. } => {
                use std::os::unix::fs::FileExt;
                file.read_exact_at(dst, offset + at as u64)
                    .map_err(|e| Error::Checkpoint(format!("cannot read {} bytes at {}: {e}", dst.len(), offset + at as u64)))?
            }
            // the store hands out mapped bytes where there is no positional read
            #[cfg(not(unix))]
            Src::File { .. } => return Err(Error::Checkpoint("positional file reads are unix-only".into())),
        }
        Ok(())
    }
    /// `dst` (uninitialised) filled with bytes `at..`.
    fn read_uninit<T>(&self, at: usize, dst: &mut [MaybeUninit<T>]) -> Result<()> {
        // SAFETY: viewed as bytes only to be written over; u8 has no invalid values and `read`
        // writes every byte or fails (the buffer is then never read).
        let d = unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut u8, std::mem::size_of_val(dst)) };
        self.read(at, d)
    }
}

/// Elements per task: 1 MB of f32. Large enough that a read's fixed cost is small, small enough
/// that the scan reads what the copy just wrote from L2.
const CHUNK: usize = 1 << 18;
/// Elements per task for an `n`-element tensor: [`CHUNK`], or less so that a tensor of a few MB
/// (most of DiT's) still makes two tasks per thread instead of leaving a core idle; never under
/// 64 KB a read.
fn chunk_for(n: usize) -> usize {
    const MIN: usize = 1 << 14;
    let per = n.div_ceil(2 * rayon::current_num_threads()).next_multiple_of(MIN);
    per.clamp(MIN, CHUNK)
}

/// Input rows per transpose task: a band of GPT-2's widest weight (5120 columns) is 640 KB of
/// scratch, which stays in L2.
const RB: usize = 32;

/// `src` (little-endian, `n` elements) as a 1-D tensor in the target dtype of `conv`, or the
/// transposed `[cols·rows]` buffer of a stored `[rows, cols]` matrix when `transpose` is given.
/// `None` if a value is not finite after the conversion (the caller words the error).
pub fn fill<'a>(src: impl Into<Src<'a>>, conv: Conv, transpose: Option<(usize, usize)>, n: usize) -> Result<Option<Tensor>> {
    let src = src.into();
    let le32 = |b: &[u8]| f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let le16 = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]);
    match conv {
        Conv::F32ToF32 => run::<f32>(src, 4, n, transpose, true, le32, |x| x.is_finite()),
        Conv::F32ToF16 => run::<f16>(src, 4, n, transpose, false, move |b| f16::from_f32(le32(b)), |x| x.is_finite()),
        Conv::F32ToBf16 => run::<bf16>(src, 4, n, transpose, false, move |b| bf16::from_f32(le32(b)), |x| x.is_finite()),
        Conv::F16ToF16 => run::<f16>(src, 2, n, transpose, true, move |b| f16::from_bits(le16(b)), |x| x.is_finite()),
        Conv::F16ToF32 => run::<f32>(src, 2, n, transpose, false, move |b| f16::from_bits(le16(b)).to_f32(), |x| x.is_finite()),
        Conv::Bf16ToBf16 => run::<bf16>(src, 2, n, transpose, true, move |b| bf16::from_bits(le16(b)), |x| x.is_finite()),
        Conv::Bf16ToF32 => run::<f32>(src, 2, n, transpose, false, move |b| bf16::from_bits(le16(b)).to_f32(), |x| x.is_finite()),
    }
}

/// `same`: the stored and the target representation are one (a byte copy on little-endian).
fn run<T: WithDType + Send + Sync>(
    src: Src<'_>,
    width: usize,
    n: usize,
    transpose: Option<(usize, usize)>,
    same: bool,
    dec: impl Fn(&[u8]) -> T + Sync,
    finite: impl Fn(T) -> bool + Sync,
) -> Result<Option<Tensor>> {
    debug_assert_eq!(src.len(), n * width);
    let same = same && cfg!(target_endian = "little");
    debug_assert!(!same || std::mem::size_of::<T>() == width);
    let mut v: Vec<T> = Vec::with_capacity(n);
    advise_huge(&mut v);
    let dst = &mut v.spare_capacity_mut()[..n];
    // A task's bytes into `d` as values: straight in when `same`, else through the byte scratch.
    let load = |at: usize, d: &mut [MaybeUninit<T>], bytes: &mut Vec<u8>| -> Result<()> {
        if same {
            return src.read_uninit(at * width, d);
        }
        bytes.resize(d.len() * width, 0);
        src.read(at * width, bytes)?;
        for (o, b) in d.iter_mut().zip(bytes.chunks_exact(width)) {
            o.write(dec(b));
        }
        Ok(())
    };
    // the finiteness scan; f32 with the widest vector build (f16/bf16 are the rarer loads)
    let scan = |d: &[T]| -> bool {
        if T::DTYPE == candle_core::DType::F32 {
            // SAFETY: T is f32 (its DTYPE says so)
            return all_finite_f32(unsafe { &*(d as *const [T] as *const [f32]) });
        }
        d.iter().fold(true, |a, &x| a & finite(x))
    };
    let ok = match transpose {
        None => dst
            .par_chunks_mut(chunk_for(n))
            .enumerate()
            .map_init(Vec::new, |bytes, (i, d)| -> Result<bool> {
                load(i * chunk_for(n), d, bytes)?;
                // SAFETY: every element of `d` was written just above.
                let d = unsafe { &*(d as *const [MaybeUninit<T>] as *const [T]) };
                Ok(scan(d))
            })
            .try_reduce(|| true, |a, b| Ok(a && b))?,
        Some((rows, cols)) => {
            // A band of RB input rows (= RB output columns) per task: the band's bytes read once,
            // sequentially, into an L2 scratch (decoded, the scan there), then written out as RB
            // contiguous values per output row. Reading the file tile by tile instead (strided
            // across its rows' pages) ran at half this speed.
            let out = crate::nn::SendPtr(dst.as_mut_ptr() as *mut T);
            (0..rows.div_ceil(RB))
                .into_par_iter()
                .map_init(
                    || (Vec::<T>::with_capacity(RB * cols), Vec::new()),
                    |(scratch, bytes), band| -> Result<bool> {
                        let (r0, rn) = (band * RB, RB.min(rows - band * RB));
                        scratch.clear();
                        load(r0 * cols, &mut scratch.spare_capacity_mut()[..rn * cols], bytes)?;
                        // SAFETY: `load` wrote rn·cols elements (it fails otherwise)
                        unsafe { scratch.set_len(rn * cols) };
                        let ok = scan(scratch);
                        #[cfg(target_arch = "x86_64")]
                        if std::mem::size_of::<T>() == 4 && Isa::best() != Isa::Base {
                            // SAFETY: AVX is present (every non-base build has it); 4-byte values
                            // are moved as f32 bits; output rows c, columns r0..r0+rn: this band's.
                            unsafe { transpose_band_avx(scratch.as_ptr() as *const f32, rn, cols, out.get() as *mut f32, rows, r0) };
                            return Ok(ok);
                        }
                        for c in 0..cols {
                            // SAFETY: output row c, columns r0..r0+rn: this band's alone
                            let o = unsafe { std::slice::from_raw_parts_mut(out.get().add(c * rows + r0), rn) };
                            for (r, x) in o.iter_mut().enumerate() {
                                *x = scratch[r * cols + c];
                            }
                        }
                        Ok(ok)
                    },
                )
                .try_reduce(|| true, |a, b| Ok(a && b))?
        }
    };
    // SAFETY: both branches wrote every one of the n elements (the chunks tile the buffer); a
    // failed read returned above.
    unsafe { v.set_len(n) };
    if !ok {
        return Ok(None);
    }
    Ok(Some(Tensor::from_vec(v, n, &Device::Cpu)?))
}

/// `out[c·rows + r0 + r] = band[r·cols + c]` for `r < rn`, `c < cols`: 8×8 blocks transposed in
/// registers (8 loads, 24 shuffles) into an L1 tile of 8 output rows, the edges one value at a
/// time; each output row's run then goes out with non-temporal stores where it is 16-byte
/// aligned. The scalar form stored one value per instruction and was the GPT load's largest
/// user-space cost.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose_band_avx(band: *const f32, rn: usize, cols: usize, out: *mut f32, rows: usize, r0: usize) {
    use std::arch::x86_64::*;
    let (rb, cb) = (rn / 8 * 8, cols / 8 * 8);
    // 8 output rows' runs of this band, transposed here first, then streamed out row by row
    let mut tile = [[0f32; RB]; 8];
    for c in (0..cb).step_by(8) {
        for r in (0..rb).step_by(8) {
            let l = |i: usize| _mm256_loadu_ps(band.add((r + i) * cols + c));
            let (a0, a1) = (_mm256_unpacklo_ps(l(0), l(1)), _mm256_unpackhi_ps(l(0), l(1)));
            let (a2, a3) = (_mm256_unpacklo_ps(l(2), l(3)), _mm256_unpackhi_ps(l(2), l(3)));
            let (a4, a5) = (_mm256_unpacklo_ps(l(4), l(5)), _mm256_unpackhi_ps(l(4), l(5)));
            let (a6, a7) = (_mm256_unpacklo_ps(l(6), l(7)), _mm256_unpackhi_ps(l(6), l(7)));
            let (b0, b1) = (_mm256_shuffle_ps::<0x44>(a0, a2), _mm256_shuffle_ps::<0xEE>(a0, a2));
            let (b2, b3) = (_mm256_shuffle_ps::<0x44>(a1, a3), _mm256_shuffle_ps::<0xEE>(a1, a3));
            let (b4, b5) = (_mm256_shuffle_ps::<0x44>(a4, a6), _mm256_shuffle_ps::<0xEE>(a4, a6));
            let (b6, b7) = (_mm256_shuffle_ps::<0x44>(a5, a7), _mm256_shuffle_ps::<0xEE>(a5, a7));
            let mut s = |j: usize, v| _mm256_storeu_ps(tile[j].as_mut_ptr().add(r), v);
            s(0, _mm256_permute2f128_ps::<0x20>(b0, b4));
            s(1, _mm256_permute2f128_ps::<0x20>(b1, b5));
            s(2, _mm256_permute2f128_ps::<0x20>(b2, b6));
            s(3, _mm256_permute2f128_ps::<0x20>(b3, b7));
            s(4, _mm256_permute2f128_ps::<0x31>(b0, b4));
            s(5, _mm256_permute2f128_ps::<0x31>(b1, b5));
            s(6, _mm256_permute2f128_ps::<0x31>(b2, b6));
            s(7, _mm256_permute2f128_ps::<0x31>(b3, b7));
        }
        for (j, t) in tile.iter_mut().enumerate() {
            for (r, x) in t.iter_mut().enumerate().take(rn).skip(rb) {
                *x = *band.add(r * cols + c + j);
            }
            stream_out(&t[..rn], out.add((c + j) * rows + r0));
        }
    }
    for j in cb..cols {
        for r in 0..rn {
            *out.add(j * rows + r0 + r) = *band.add(r * cols + j);
        }
    }
    // the streamed stores ordered before this task's completion is published
    stream_fence();
}

/// `src` copied to `o`, streamed past the caches where `o` is 16-byte aligned: the lines of a
/// fresh buffer are then not read in first only to be overwritten. The caller fences
/// (`_mm_sfence`) before its work is published.
///
/// # Safety
/// `o..o + src.len()` is writable and is not read or written by anyone else meanwhile.
#[inline(always)]
pub(crate) unsafe fn stream_out(src: &[f32], o: *mut f32) {
    let n = src.len();
    #[cfg(target_arch = "x86_64")]
    if o as usize % 16 == 0 && n % 4 == 0 {
        use std::arch::x86_64::*;
        for q in (0..n).step_by(4) {
            _mm_stream_ps(o.add(q), _mm_loadu_ps(src.as_ptr().add(q)));
        }
        return;
    }
    std::ptr::copy_nonoverlapping(src.as_ptr(), o, n);
}

/// Orders this thread's streamed stores ([`stream_out`]) before whatever it does next (the end
/// of its task, which publishes them).
#[inline(always)]
pub(crate) fn stream_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of x86_64
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

/// `out[j·stride + c] = row[c·k + j]` for `c < ci`, `j < k`: one channel's `[ci, k]` weight
/// written as its k tap-major rows. Columns go through an L1 tile, 64 at a time, and each tile
/// row is streamed out. A strided scalar scatter straight into the fresh buffer, one store per
/// value, was the largest cost of BigVGAN's load (30 % of its CPU time).
///
/// # Safety
/// Rows `out + j·stride .. + ci` (j < k) are writable and are this caller's alone.
unsafe fn scatter_taps(row: &[f32], ci: usize, k: usize, out: *mut f32, stride: usize) {
    const CB: usize = 64;
    const KMAX: usize = 16;
    debug_assert_eq!(row.len(), ci * k);
    #[cfg(target_arch = "x86_64")]
    if k <= KMAX {
        let mut tile = [[0f32; CB]; KMAX];
        for c0 in (0..ci).step_by(CB) {
            let cb = CB.min(ci - c0);
            for (cc, taps) in row[c0 * k..(c0 + cb) * k].chunks_exact(k).enumerate() {
                for (t, &x) in tile.iter_mut().zip(taps) {
                    t[cc] = x;
                }
            }
            for (j, t) in tile.iter().take(k).enumerate() {
                stream_out(&t[..cb], out.add(j * stride + c0));
            }
        }
        stream_fence();
        return;
    }
    for (c, taps) in row.chunks_exact(k).enumerate() {
        for (j, &x) in taps.iter().enumerate() {
            *out.add(j * stride + c) = x;
        }
    }
}

/// torch's weight norm (dim 0), `w = g · v / ‖v‖`, straight from the file's little-endian f32 bytes
/// of `g` `[co]` and `v` `[co, ci, k]`: the rows read once into scratch (≈ 256 KB of channels a
/// read), then per output channel the f64 sum of squares, then `(v · g/‖v‖)` in f64 rounded once to f32 (the same arithmetic as
/// [`crate::transforms::weight_norm_fold_f64`]), written into one fresh buffer: `[co, ci·k]`
/// rows, or with `tap_major` the layout of
/// [`crate::dense::tap_major`] (returned as its `[co, ci, k]` view). The load makes one pass into new
/// memory instead of a copy of `v` and then a folded copy. `None` if `g` or `v` holds a non-finite
/// value (the caller's general path words the error).
pub fn fold_weight_norm<'a>(
    g: impl Into<Src<'a>>,
    v: impl Into<Src<'a>>,
    co: usize,
    ci: usize,
    k: usize,
    tap_major: bool,
) -> Result<Option<Tensor>> {
    let (g, v) = (g.into(), v.into());
    let row = ci * k;
    debug_assert!(g.len() == co * 4 && v.len() == co * row * 4);
    let le32 = |b: &[u8]| f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let mut gb = vec![0u8; co * 4];
    g.read(0, &mut gb)?;
    let n = co * row;
    let mut out: Vec<f32> = Vec::with_capacity(n);
    advise_huge(&mut out);
    let dst = crate::nn::SendPtr(out.as_mut_ptr());
    // channels per task: one read of ≈ 256 KB (a read per channel of BigVGAN's narrow layers
    // cost more in calls than in bytes); the block stays in L2 while it is folded and written
    let per = ((256 << 10) / (row * 4)).clamp(1, co);
    let ok = (0..co.div_ceil(per))
        .into_par_iter()
        .map_init(
            || vec![0f32; per * row],
            |block, b| -> Result<bool> {
                let (o0, o1) = (b * per, ((b + 1) * per).min(co));
                let vb = &mut block[..(o1 - o0) * row];
                // SAFETY: the f32 scratch viewed as its bytes, to be overwritten by the read
                v.read(o0 * row * 4, unsafe { std::slice::from_raw_parts_mut(vb.as_mut_ptr() as *mut u8, vb.len() * 4) })?;
                if cfg!(target_endian = "big") {
                    vb.iter_mut().for_each(|x| *x = f32::from_bits(u32::from_le(x.to_bits())));
                }
                let mut ok = true;
                for (o, vr) in (o0..o1).zip(vb.chunks_exact_mut(row)) {
                    ok &= fold_row(vr, le32(&gb[o * 4..o * 4 + 4]));
                    if tap_major {
                        // SAFETY: channel o alone writes rows (j, o), j < k, of the k·co·ci buffer
                        unsafe { scatter_taps(vr, ci, k, dst.get().add(o * ci), co * ci) };
                    } else {
                        // SAFETY: channel o alone writes its row o of the co·row buffer
                        unsafe { std::slice::from_raw_parts_mut(dst.get().add(o * row), row) }.copy_from_slice(vr);
                    }
                }
                Ok(ok)
            },
        )
        .try_reduce(|| true, |a, b| Ok(a && b))?;
    // SAFETY: the channels' rows tile the buffer; every element was written above (a failed read
    // returned).
    unsafe { out.set_len(n) };
    if !ok {
        return Ok(None);
    }
    Ok(Some(if tap_major && k > 1 {
        Tensor::from_vec(out, (k, co, ci), &Device::Cpu)?.permute((1, 2, 0))?
    } else {
        Tensor::from_vec(out, (co, ci, k), &Device::Cpu)?
    }))
}

/// Whether every value is finite, with the widest vector build (the same answer on each).
fn all_finite_f32(x: &[f32]) -> bool {
    #[inline(always)]
    fn body(x: &[f32]) -> bool {
        x.iter().fold(true, |a, v| a & v.is_finite())
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512(x: &[f32]) -> bool {
            body(x)
        }
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(x: &[f32]) -> bool {
            body(x)
        }
        match Isa::best() {
            // SAFETY: builds `Isa::best()` found on this CPU
            Isa::Avx512 => return unsafe { avx512(x) },
            Isa::Avx2 => return unsafe { avx2(x) },
            Isa::Base => {}
        }
    }
    body(x)
}

/// One channel of the fold, in place: `v · g/‖v‖` (f64, rounded once); whether `g` and the row
/// are finite. Built for the widest vector unit at hand: every build does the same operations in
/// the same order (no FMA), so the bits do not depend on the CPU.
fn fold_row(vr: &mut [f32], g: f32) -> bool {
    fold_row_with(Isa::best(), vr, g)
}

/// [`fold_row`] with the given build (one the CPU runs).
fn fold_row_with(isa: Isa, vr: &mut [f32], g: f32) -> bool {
    #[inline(always)]
    fn body(vr: &mut [f32], g: f32) -> bool {
        // a non-finite value makes the f64 sum non-finite, and finite f32 squares cannot
        // overflow it (≤ 1.2e77 each): the finiteness check costs no pass of its own
        let ss = sum_sq_f64(vr);
        let ok = g.is_finite() && ss.is_finite();
        let scale = g as f64 / ss.sqrt();
        vr.iter_mut().for_each(|x| *x = (*x as f64 * scale) as f32);
        ok
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512(vr: &mut [f32], g: f32) -> bool {
            body(vr, g)
        }
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(vr: &mut [f32], g: f32) -> bool {
            body(vr, g)
        }
        debug_assert!(Isa::available().contains(&isa));
        match isa {
            // SAFETY: builds `Isa::available()` found on this CPU (the callers' contract)
            Isa::Avx512 => return unsafe { avx512(vr, g) },
            Isa::Avx2 => return unsafe { avx2(vr, g) },
            Isa::Base => {}
        }
    }
    body(vr, g)
}

/// Σ x² in f64 over eight interleaved partial sums (lane l takes every eighth value from l, the
/// lanes added in order at the end): independent chains the compiler vectorises, where one
/// sequential f64 chain is bound by the adder's latency (the weight-norm fold of BigVGAN's 450 MB
/// spent most of its load there).
#[inline(always)]
pub(crate) fn sum_sq_f64(x: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let mut it = x.chunks_exact(8);
    for c in &mut it {
        for l in 0..8 {
            acc[l] += c[l] as f64 * c[l] as f64;
        }
    }
    for (l, &y) in it.remainder().iter().enumerate() {
        acc[l] += y as f64 * y as f64;
    }
    acc.iter().sum()
}

/// Large buffers in 2 MB pages where the kernel offers them (`transparent_hugepage=madvise`):
/// one page fault per 2 MB instead of per 4 KB while the copy first touches the buffer.
fn advise_huge<T>(v: &mut Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = v.capacity() * std::mem::size_of::<T>();
        if bytes < 2 * HUGE {
            return;
        }
        let start = v.as_mut_ptr() as usize;
        let lo = (start + HUGE - 1) & !(HUGE - 1);
        let hi = (start + bytes) & !(HUGE - 1);
        if hi > lo {
            // SAFETY: advice on pages inside our own (not yet touched) allocation; no data changes.
            unsafe { libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    fn bytes_f32(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn equals_candle_copy_convert_and_transpose() {
        // sizes around the chunk and band edges; values that round differently in f16/bf16
        for (r, c) in [(1, 1), (3, 130), (129, 65), (200, 64), (7, CHUNK / 7 + 3)] {
            let v: Vec<f32> = (0..r * c).map(|i| ((i % 10007) as f32 * 0.731 - 50.0) * 1.0001).collect();
            let b = bytes_f32(&v);
            let want = Tensor::from_vec(v.clone(), (r, c), &Device::Cpu).unwrap();
            for (conv, dt) in [(Conv::F32ToF32, DType::F32), (Conv::F32ToF16, DType::F16), (Conv::F32ToBf16, DType::BF16)] {
                let w = want.to_dtype(dt).unwrap();
                let got = fill(&b[..], conv, None, r * c).unwrap().unwrap().reshape((r, c)).unwrap();
                let gt = fill(&b[..], conv, Some((r, c)), r * c).unwrap().unwrap().reshape((c, r)).unwrap();
                let f = |t: &Tensor| t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(f(&got), f(&w), "{conv:?} {r}x{c}");
                assert_eq!(f(&gt), f(&w.t().unwrap().contiguous().unwrap()), "{conv:?} transposed {r}x{c}");
            }
            let h = want.to_dtype(DType::F16).unwrap().flatten_all().unwrap().to_vec1::<f16>().unwrap();
            let hb: Vec<u8> = h.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect();
            let back = fill(&hb[..], Conv::F16ToF32, None, r * c).unwrap().unwrap();
            assert_eq!(back.to_vec1::<f32>().unwrap(), h.iter().map(|x| x.to_f32()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn fold_weight_norm_equals_the_tensor_fold() {
        use crate::transforms::weight_norm_fold;
        // (9, 132, 3) and (4, 200, 7): tap-major tiles of 64 columns, streamed; k = 17: past the
        // tile; (300, 64, 7): three reads of 146, 146 and 8 channels
        for (co, ci, k) in [(1, 1, 1), (3, 5, 1), (7, 13, 3), (64, 33, 11), (5, 2, 8), (9, 132, 3), (4, 200, 7), (3, 5, 17), (300, 64, 7)] {
            let v: Vec<f32> = (0..co * ci * k).map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 1.3e-3).collect();
            let g: Vec<f32> = (0..co).map(|o| 0.5 + o as f32 * 0.37).collect();
            let vt = Tensor::from_vec(v.clone(), (co, ci, k), &Device::Cpu).unwrap();
            let gt = Tensor::from_vec(g.clone(), (co, 1, 1), &Device::Cpu).unwrap();
            // the f64 tensor form, rounded once: only the order of the row sum differs (≤ 1 f32 ulp)
            let f64_ = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
            let want = weight_norm_fold(&f64_(&gt), &f64_(&vt)).unwrap().to_dtype(DType::F32).unwrap();
            let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for tap_major in [false, true] {
                let got = fold_weight_norm(&bytes_f32(&g)[..], &bytes_f32(&v)[..], co, ci, k, tap_major).unwrap().unwrap();
                assert_eq!(got.dims(), [co, ci, k]);
                let strides: &[usize] = if tap_major && k > 1 { &[ci, 1, co * ci] } else { &[ci * k, k, 1] };
                assert_eq!(got.layout().stride(), strides, "{co}x{ci}x{k} tap_major {tap_major}");
                let got = got.contiguous().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                for (x, y) in got.iter().zip(&want) {
                    assert!((x - y).abs() <= f32::EPSILON * y.abs(), "{co}x{ci}x{k} tap_major {tap_major}: {x} vs {y}");
                }
            }
            let mut bad = v.clone();
            bad[co * ci * k - 1] = f32::INFINITY;
            assert!(fold_weight_norm(&bytes_f32(&g)[..], &bytes_f32(&bad)[..], co, ci, k, true).unwrap().is_none());
            let mut bad_g = g.clone();
            bad_g[0] = f32::NAN;
            assert!(fold_weight_norm(&bytes_f32(&bad_g)[..], &bytes_f32(&v)[..], co, ci, k, false).unwrap().is_none());
        }
    }

    #[test]
    fn file_reads_equal_memory() {
        use std::io::Write;
        // a header's worth of other bytes first, so every read is at an offset
        let (r, c, pre) = (37, 2 * RB + 5, 13usize);
        let v: Vec<f32> = (0..r * c).map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 1.3e-3).collect();
        let g: Vec<f32> = (0..r).map(|o| 0.5 + o as f32 * 0.37).collect();
        let (vb, gb) = (bytes_f32(&v), bytes_f32(&g));
        let path = std::env::temp_dir().join(format!("fastload-{}.bin", std::process::id()));
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&vec![7u8; pre]).unwrap();
        f.write_all(&vb).unwrap();
        f.write_all(&gb).unwrap();
        drop(f);
        let file = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let vf = Src::File { file: &file, offset: pre as u64, len: vb.len() };
        let gf = Src::File { file: &file, offset: (pre + vb.len()) as u64, len: gb.len() };
        let all = |t: Tensor| t.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
        for conv in [Conv::F32ToF32, Conv::F32ToF16, Conv::F32ToBf16] {
            for tr in [None, Some((r, c))] {
                let (a, b) = (fill(vf, conv, tr, r * c).unwrap().unwrap(), fill(&vb[..], conv, tr, r * c).unwrap().unwrap());
                assert_eq!(all(a), all(b), "{conv:?} {tr:?}");
            }
        }
        for tm in [false, true] {
            let a = fold_weight_norm(gf, vf, r, c / 5, 5, tm).unwrap().unwrap();
            let b = fold_weight_norm(&gb[..], &vb[..], r, c / 5, 5, tm).unwrap().unwrap();
            assert_eq!(all(a.flatten_all().unwrap()), all(b.flatten_all().unwrap()));
        }
        // a range past the end of the file is an error, not a short tensor
        let past = Src::File { file: &file, offset: (pre + gb.len() + 4) as u64, len: vb.len() };
        assert!(fill(past, Conv::F32ToF32, None, r * c).is_err());
    }

    #[test]
    fn fold_row_has_the_same_bits_on_every_build() {
        for n in [1, 7, 8, 9, 33, 1536 * 7 + 3] {
            let v: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 1.37e-3).collect();
            let mut want = v.clone();
            assert!(fold_row_with(Isa::Base, &mut want, 0.731));
            for isa in Isa::available() {
                let mut got = v.clone();
                assert!(fold_row_with(isa, &mut got, 0.731));
                assert_eq!(got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), "{isa:?} n={n}");
            }
        }
    }

    #[test]
    fn non_finite_is_reported() {
        let mut v = vec![1f32; 3 * CHUNK];
        v[2 * CHUNK + 5] = f32::NAN;
        assert!(fill(&bytes_f32(&v)[..], Conv::F32ToF32, None, v.len()).unwrap().is_none());
        assert!(fill(&bytes_f32(&v)[..], Conv::F32ToF32, Some((3, CHUNK)), v.len()).unwrap().is_none());
        let big = vec![70000f32; 4]; // finite in f32, Inf in f16
        assert!(fill(&bytes_f32(&big)[..], Conv::F32ToF16, None, 4).unwrap().is_none());
        assert!(fill(&bytes_f32(&big)[..], Conv::F32ToBf16, None, 4).unwrap().is_some());
    }
}
