//! WAV in (any rate, 8/16/24/32-bit integer or 32-bit float, any channel count) and out (22.05 kHz,
//! float32 or 16-bit PCM).
use std::path::Path;

/// Mono float32 samples and their rate. Integers are scaled as soundfile/librosa do (x / 2^(bits−1);
/// 8-bit WAV is unsigned, hound centres it); channels are averaged (librosa.to_mono).
pub fn read_mono(path: &Path, what: &str) -> Result<(Vec<f32>, u32), String> {
    let mut r = hound::WavReader::open(path).map_err(|e| format!("{what} {}: not a readable WAV file ({e})", path.display()))?;
    let spec = r.spec();
    let ch = spec.channels as usize;
    if ch == 0 || spec.sample_rate == 0 {
        return Err(format!("{what} {}: invalid header ({} channels, {} Hz)", path.display(), spec.channels, spec.sample_rate));
    }
    let bad = |e: hound::Error| format!("{what} {}: cannot read the samples ({e})", path.display());
    let inter: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => r.samples::<f32>().collect::<Result<_, _>>().map_err(bad)?,
        (hound::SampleFormat::Int, b @ (8 | 16 | 24 | 32)) => {
            let scale = 1.0 / (1u64 << (b - 1)) as f64;
            r.samples::<i32>().map(|s| s.map(|v| (v as f64 * scale) as f32)).collect::<Result<_, _>>().map_err(bad)?
        }
        (f, b) => return Err(format!("{what} {}: {b}-bit {f:?} samples are not supported (8/16/24/32-bit integer or 32-bit float)", path.display())),
    };
    let n = inter.len() / ch;
    if n == 0 {
        return Err(format!("{what} {}: the file holds no samples", path.display()));
    }
    let mono: Vec<f32> = if ch == 1 {
        inter
    } else {
        (0..n).map(|i| inter[i * ch..(i + 1) * ch].iter().sum::<f32>() / ch as f32).collect()
    };
    if mono.iter().any(|x| !x.is_finite()) {
        return Err(format!("{what} {}: holds NaN or infinite samples", path.display()));
    }
    Ok((mono, spec.sample_rate))
}

pub fn write(path: &Path, samples: &[f32], sr: u32, pcm16: bool) -> Result<(), String> {
    let spec = if pcm16 {
        hound::WavSpec { channels: 1, sample_rate: sr, bits_per_sample: 16, sample_format: hound::SampleFormat::Int }
    } else {
        hound::WavSpec { channels: 1, sample_rate: sr, bits_per_sample: 32, sample_format: hound::SampleFormat::Float }
    };
    let err = |e: hound::Error| format!("-o {}: cannot write ({e})", path.display());
    let mut w = hound::WavWriter::create(path, spec).map_err(err)?;
    for &s in samples {
        if pcm16 {
            w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16).map_err(err)?; // = resample::to_pcm16
        } else {
            w.write_sample(s).map_err(err)?;
        }
    }
    w.finalize().map_err(err)
}
