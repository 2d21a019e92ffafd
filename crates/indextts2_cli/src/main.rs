//! `indextts2`: IndexTTS2 text-to-speech on Candle, from an official model directory and a WAV file.
//!
//! As infer_v2's `IndexTTS2(cfg, model_dir).infer(spk_audio_prompt, text, output_path, …)`: the
//! speaker clip mixed to mono and brought to 22.05 kHz (librosa.load's rate), cut to 15 s; an
//! optional emotion clip at 16 kHz (with emo_alpha) or 8 emotion weights; the text through
//! `bpe.model` and `split_segments`; each segment decoded, turned into a mel by the CFM and vocoded;
//! the segments joined with `--interval-ms` of silence; a 22.05 kHz WAV written.
mod modeldir;
mod wav;

use candle_core::{Device, Tensor};
use clap::Parser;
use indextts2_candle::pipeline::{DecodeMode, Decoding, EmotionInput, Noise, Pipeline, Progress};
use indextts2_candle::sampling::{rng::Draws, DecodeConfig};
use indextts2_candle::resample::{join_segments, resample, SR_16K, SR_22K};
use indextts2_candle::sampling::rng::TorchCpuGenerator;
use indextts2_candle::store::{Store, Weights};
use indextts2_candle::text::TextTokenizer;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// infer_v2: `diffusion_steps=25` (t_span = linspace(0, 1, 26)), `max_mel_tokens=1500`.
const DIFFUSION_STEPS: usize = 25;
const MAX_MEL_TOKENS: usize = 1500;
/// infer_v2: target mel frames = int(codes · 1.72).
const LENGTH_RATIO: f64 = 1.72;

#[derive(Parser)]
#[command(name = "indextts2", version, about = "IndexTTS2 text-to-speech (Candle): an official model directory + a speaker WAV → a 22.05 kHz WAV",
          after_help = "The model directory is the official IndexTTS-2 checkpoint directory (config.yaml, gpt.pth, s2mel.pth, …) plus one\n\
sub-directory per external model; convert its .pth files once with `indextts-convert DIR` (writes DIR/candle/).")]
#[command(group(clap::ArgGroup::new("input").required(true).args(["text", "text_file"])))]
struct Args {
    /// The official IndexTTS-2 model directory (converted once with `indextts-convert DIR`)
    #[arg(long, value_name = "DIR")]
    model_dir: PathBuf,
    /// Speaker reference clip (WAV: any rate, 8/16/24/32-bit integer or 32-bit float, any channels)
    #[arg(long, value_name = "WAV")]
    speaker: PathBuf,
    /// The text to speak (normalised text: the official TextNormalizer is not ported)
    #[arg(long)]
    text: Option<String>,
    /// Read the text from a UTF-8 file
    #[arg(long, value_name = "FILE")]
    text_file: Option<PathBuf>,
    /// Output WAV (22.05 kHz mono)
    #[arg(short = 'o', long = "output", value_name = "WAV")]
    output: PathBuf,
    /// Emotion reference clip (default: the speaker clip, as infer_v2)
    #[arg(long, value_name = "WAV", conflicts_with = "emotion_vector")]
    emotion: Option<PathBuf>,
    /// Emotion strength in [0, 1] (infer_v2's emo_alpha): blends the emotion clip, scales the vector
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    emo_alpha: f32,
    /// 8 emotion weights: happy angry sad afraid disgusted melancholic surprised calm
    #[arg(long, value_name = "W", num_args = 1.., value_delimiter = ',', allow_negative_numbers = true)]
    emotion_vector: Option<Vec<f32>>,
    /// Seed: the sampler draws from torch's CPU stream after manual_seed(seed), the CFM noise is
    /// torch.randn after manual_seed(seed + 1); default: from the clock, printed
    #[arg(long)]
    seed: Option<u64>,
    /// Greedy decoding (plain argmax, no repetition penalty: the parity suite's deterministic mode)
    /// instead of infer_v2's beam sampling (do_sample, 3 beams, top_k 30, top_p 0.8, temperature 0.8,
    /// repetition_penalty 10)
    #[arg(long)]
    greedy: bool,
    /// Most codes per segment (infer_v2's max_mel_tokens) [default: 1500, or the model's
    /// `gpt.max_mel_tokens` when smaller]
    #[arg(long)]
    max_mel_tokens: Option<usize>,
    /// Most text tokens per segment (infer_v2's max_text_tokens_per_segment)
    #[arg(long, default_value_t = 120)]
    segment_tokens: usize,
    /// Silence between segments in ms (infer_v2's interval_silence)
    #[arg(long, default_value_t = 200)]
    interval_ms: i64,
    /// cpu, or cuda / cuda:N (needs a build with `--features cuda`)
    #[arg(long, default_value = "cpu")]
    device: String,
    /// The GPT's precision: float32, or float16 (infer_v2's `use_fp16`) / bfloat16; the other
    /// models stay float32, as in infer_v2
    #[arg(long, default_value = "float32", value_parser = ["float32", "float16", "bfloat16"])]
    dtype: String,
    /// Write 16-bit PCM
    #[arg(long, conflicts_with = "float")]
    pcm16: bool,
    /// Write 32-bit float (the default; infer_v2 saves float32)
    #[arg(long)]
    float: bool,
    /// Also write the pipeline's inputs as .npy into DIR (speaker_22k, emo_16k, z_pool [1, C, F]),
    /// to reproduce the run elsewhere
    #[arg(long, value_name = "DIR", hide = true)]
    dump: Option<PathBuf>,
}

/// A user error (exit 2) or a failure inside the models (exit 1).
enum Fail {
    User(String),
    Internal(String),
}

impl From<indextts2_candle::Error> for Fail {
    fn from(e: indextts2_candle::Error) -> Self {
        match e {
            indextts2_candle::Error::Input(m) | indextts2_candle::Error::Checkpoint(m) => Fail::User(m),
            e => Fail::Internal(e.to_string()),
        }
    }
}
impl From<candle_core::Error> for Fail {
    fn from(e: candle_core::Error) -> Self {
        Fail::Internal(e.to_string())
    }
}
impl From<String> for Fail {
    fn from(m: String) -> Self {
        Fail::User(m)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match std::panic::catch_unwind(|| run(&args)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(Fail::User(m))) => {
            eprintln!("indextts2: error: {m}");
            ExitCode::from(2)
        }
        Ok(Err(Fail::Internal(m))) => {
            eprintln!("indextts2: internal error: {m}");
            ExitCode::from(1)
        }
        Err(_) => {
            eprintln!("indextts2: internal error (a bug: please report it with the command line)");
            ExitCode::from(1)
        }
    }
}

fn device(name: &str) -> Result<Device, Fail> {
    match name {
        "cpu" => Ok(Device::Cpu),
        d if d == "cuda" || d.starts_with("cuda:") => {
            let idx: usize = d.strip_prefix("cuda:").map_or(Ok(0), |i| i.parse()).map_err(|_| format!("--device {d}: expected cuda or cuda:N"))?;
            if !cfg!(feature = "cuda") {
                return Err(Fail::User(format!("--device {d}: this binary was built without CUDA (rebuild with `cargo build --release --bin indextts2 --features cuda`)")));
            }
            Device::new_cuda(idx).map_err(|e| Fail::User(format!("--device {d}: {e}")))
        }
        d => Err(Fail::User(format!("--device {d}: expected cpu, cuda or cuda:N"))),
    }
}

/// torch.linspace(0, 1, steps + 1) in float32 (its two-sided formula).
fn linspace01(steps: usize) -> Vec<f32> {
    let n = steps + 1;
    let step = 1.0f32 / steps as f32;
    let half = (n / 2) as i64;
    (0..n as i64).map(|i| if i < half { step * i as f32 } else { 1.0 - step * (n as i64 - i - 1) as f32 }).collect()
}

fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn write_npy(path: &Path, data: &[f32], shape: &[usize]) -> Result<(), String> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}", dims.join(", "));
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).map_err(|e| format!("--dump {}: {e}", path.display()))
}

fn run(a: &Args) -> Result<(), Fail> {
    let t0 = Instant::now();
    // cheap checks first, every missing file at once
    if !(0.0..=1.0).contains(&a.emo_alpha) {
        return Err(Fail::User(format!("--emo-alpha {}: must be in [0, 1]", a.emo_alpha)));
    }
    if let Some(w) = &a.emotion_vector {
        if let Some(x) = w.iter().find(|x| !x.is_finite() || **x < 0.0) {
            return Err(Fail::User(format!("--emotion-vector: weights must be finite and ≥ 0, got {x}")));
        }
    }
    if a.segment_tokens == 0 {
        return Err(Fail::User("--segment-tokens must be ≥ 1".into()));
    }
    if a.interval_ms < 0 {
        return Err(Fail::User(format!("--interval-ms {}: must be ≥ 0", a.interval_ms)));
    }
    let dev = device(&a.device)?;
    let mut missing: Vec<String> = Vec::new();
    for (flag, p) in [("--speaker", Some(&a.speaker)), ("--emotion", a.emotion.as_ref()), ("--text-file", a.text_file.as_ref())] {
        if let Some(p) = p {
            if !p.is_file() {
                missing.push(format!("  {flag} {}", p.display()));
            }
        }
    }
    let md = modeldir::ModelDir::open(&a.model_dir);
    match (&md, missing.is_empty()) {
        (Ok(_), true) => {}
        (Ok(_), false) => return Err(Fail::User(format!("missing file(s):\n{}", missing.join("\n")))),
        (Err(e), true) => return Err(Fail::User(e.clone())),
        (Err(e), false) => return Err(Fail::User(format!("missing file(s):\n{}\n{e}", missing.join("\n")))),
    }
    let md = md.map_err(Fail::User)?;
    let text = match (&a.text, &a.text_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => std::fs::read_to_string(f).map_err(|e| format!("--text-file {}: cannot be read as UTF-8 text ({e})", f.display()))?,
        (None, None) => unreachable!("clap requires one of them"),
    };
    if text.trim().is_empty() {
        return Err(Fail::User("the text is empty".into()));
    }
    let tok = TextTokenizer::load(&md.bpe_model)?;
    let segments = tok.segments(&text, a.segment_tokens)?;
    if segments.iter().all(|s| s.is_empty()) {
        return Err(Fail::User(format!("the text {:?} gives no tokens with {}", text, md.bpe_model.display())));
    }
    let (spk, spk_sr) = wav::read_mono(&a.speaker, "--speaker")?;
    let emo = a.emotion.as_ref().map(|p| wav::read_mono(p, "--emotion")).transpose()?;

    // the models
    let mut cfg = md.pipeline_config()?;
    if a.dtype != "float32" {
        cfg.gpt_dtype = Some(a.dtype.clone()); // the official mixed mode: the GPT in half precision
    }
    let groups = cfg.emotion.emo_num.len();
    if let Some(w) = &a.emotion_vector {
        if w.len() != groups {
            return Err(Fail::User(format!("--emotion-vector: {groups} weights expected (happy angry sad afraid disgusted melancholic surprised calm), got {}", w.len())));
        }
    }
    let limit = cfg.gpt.max_mel_tokens;
    let max_tokens = match a.max_mel_tokens {
        None => MAX_MEL_TOKENS.min(limit),
        Some(n) if n == 0 || n > limit => {
            return Err(Fail::User(format!("--max-mel-tokens {n}: must be in [1, {limit}] (the model's gpt.max_mel_tokens)")))
        }
        Some(n) => n,
    };
    let store = Store::open(&md.weights, &dev)?;
    let pipe = Pipeline::load(&Weights::new(store), cfg)?;
    let t_load = t0.elapsed().as_secs_f64();

    // audio front: mono → 22.05 kHz speaker (librosa.load's default rate), 16 kHz emotion clip
    let t1 = Instant::now();
    let n = spk.len();
    let spk = resample(&Tensor::from_vec(spk, n, &dev)?, spk_sr, SR_22K)?;
    let emo_16k = match emo {
        Some((e, sr)) => {
            let n = e.len();
            Some(resample(&Tensor::from_vec(e, n, &dev)?, sr, SR_16K)?)
        }
        None => None,
    };
    let emotion = EmotionInput { clip_16k: emo_16k.as_ref(), alpha: a.emo_alpha, weights: a.emotion_vector.clone() };
    let seed = a.seed.unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64 & 0xffff_ffff));
    let bar = indicatif::ProgressBar::new(segments.len() as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("{spinner} segment {pos}/{len} [{elapsed_precise}] {wide_bar} {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
    let step_bar = bar.clone();
    let mut on_step = move |p: Progress| {
        if let Progress::Step { step, max } = p {
            step_bar.set_message(format!("decoding step {step} (≤ {max})"));
        }
    };
    // sampled (default): infer_v2 after torch.manual_seed(seed): one stream for w2v-bert's
    // layerdrop draws, each segment's decode and then its CFM noise (Noise::Stream)
    let mode = if a.greedy {
        DecodeMode::Greedy { max_tokens }
    } else {
        DecodeMode::Sampled { cfg: DecodeConfig { max_mel_tokens: max_tokens, ..DecodeConfig::default() }, draws: Draws::seeded(seed) }
    };
    let mut decoding = Decoding { mode, progress: Some(&mut on_step) };
    let front = pipe.front(&spk)?;
    let prepared = pipe.prepare(&front.audio_16k, &front.audio_22k, &emotion, &mut decoding)?;

    // greedy: CFM noise torch.randn(1, C, F) after torch.manual_seed(seed + 1), every segment its
    // first frames (the parity suite's deterministic mode)
    let pool = if a.greedy {
        let (c, tm) = (prepared.ref_mel.dim(1)?, prepared.ref_mel.dim(2)?);
        let frames = tm + (max_tokens as f64 * LENGTH_RATIO) as usize + 1;
        Some((TorchCpuGenerator::new(seed.wrapping_add(1)).normal_f32(c * frames), c, frames))
    } else {
        None
    };
    if let Some(d) = &a.dump {
        std::fs::create_dir_all(d).map_err(|e| format!("--dump {}: {e}", d.display()))?;
        if let Some((noise, c, frames)) = &pool {
            write_npy(&d.join("z_pool.npy"), noise, &[1, *c, *frames])?;
        }
        write_npy(&d.join("speaker_22k.npy"), &spk.to_vec1::<f32>()?, &[spk.dim(0)?])?;
        if let Some(e) = &emo_16k {
            write_npy(&d.join("emo_16k.npy"), &e.to_vec1::<f32>()?, &[e.dim(0)?])?;
        }
    }
    let z_pool = match pool {
        Some((noise, c, frames)) => Some(Tensor::from_vec(noise, (1, c, frames), &dev)?),
        None => None,
    };
    let noise = z_pool.as_ref().map_or(Noise::Stream, Noise::Pool);
    let t_span = Tensor::new(linspace01(DIFFUSION_STEPS).as_slice(), &dev)?;

    let mut wavs = Vec::with_capacity(segments.len());
    for ids in &segments {
        bar.set_message(format!("{} text tokens", ids.len()));
        let ids: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        let len = ids.len();
        let seg = pipe.segment(&prepared, &Tensor::from_vec(ids, (1, len), &dev)?, &mut decoding, noise, &t_span, false)?;
        wavs.push(seg.wav.flatten_all()?.unsqueeze(0)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let out = join_segments(&wavs, SR_22K, a.interval_ms)?.flatten_all()?.to_vec1::<f32>()?;
    let t_synth = t1.elapsed().as_secs_f64();
    wav::write(&a.output, &out, SR_22K, a.pcm16)?;
    let secs = out.len() as f64 / SR_22K as f64;
    eprintln!(
        "wrote {}: {secs:.2} s of audio ({} Hz, {}), {} segment(s), {} decoding, seed {seed}; load {t_load:.2} s, synthesis {t_synth:.2} s, RTF {:.3}; peak RSS {}",
        a.output.display(),
        SR_22K,
        if a.pcm16 { "16-bit PCM" } else { "float32" },
        segments.len(),
        if a.greedy { "greedy" } else { "sampled" },
        t_synth / secs.max(1e-9),
        peak_rss_mib().map_or("unknown".into(), |m| format!("{m:.0} MiB")),
    );
    Ok(())
}
