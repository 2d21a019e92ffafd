//! The IndexTTS2 inference pipeline (spec §5) composed from the Candle models, deterministic mode:
//! token ids given, greedy decoding, CFM noise given. Mirrors `reference/pipeline.py` stage by
//! stage; nothing here re-implements a model.
//!
//! One safetensors holds every model under a fixed prefix (`w2v_bert.`, `gpt.`, `s2mel.net.…`,
//! `bigvgan.`); the config JSON holds each model's own config under its kind name. Faults are the
//! components' own switches, named `<kind>:<fault>`.
//!
//! Emotion: the speaker clip (default), an emotion clip with emo_alpha, or an 8-weight vector.
use crate::bigvgan::{BigVgan, BigVganConfig};
use crate::campplus::{CampPlus, CampPlusConfig};
use crate::mel::{MelConfig, MelSpectrogram};
use crate::semantic_codec::{SemanticCodec, SemanticCodecConfig};
use crate::ctx::{Ctx, Faults};
use crate::dit::{Dit, DitConfig};
use crate::emotion::{scale_weights, EmotionConfig, EmotionMatrices};
use crate::error::{input_err, Result};
use crate::gpt::{GptConfig, UnifiedVoice};
use crate::length_regulator::{Regulator, RegulatorConfig};
use crate::runnable::Named;
use crate::sampling::{rng::{Draws, TorchCpuGenerator}, DecodeConfig};
use crate::resample::{cut, join_segments, ResampleConfig, Resampler, MAX_PROMPT_SECONDS, SR_16K, SR_22K};
use crate::text::TextTokenizer;
use crate::store::Weights;
use crate::w2v_bert::{W2vBert, W2vBertConfig};
use candle_core::{DType, Tensor};
use serde::Deserialize;
use std::sync::OnceLock;

/// infer_v2: target mel frames = int(codes · 1.72).
const LENGTH_RATIO: f64 = 1.72;

/// How the GPT's codes are made.
pub enum DecodeMode {
    /// Deterministic mode: greedy codes, at most `max_tokens` (the parity suite's default walk).
    Greedy { max_tokens: usize },
    /// The official beam sampler (`DecodeConfig::default()` = what infer_v2 passes), drawing from
    /// `draws` (given Exp(1) draws, or torch's CPU stream from a seed); consumed in segment order.
    Sampled { cfg: DecodeConfig, draws: Draws },
}

/// What a long synthesis reports as it goes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Progress {
    /// segment `index` (0-based) of `count` starts
    Segment { index: usize, count: usize },
    /// decoding step `step` (≥ 1) of at most `max` (sampled mode only)
    Step { step: usize, max: usize },
}

/// The decoding options of one request, and where its progress goes.
pub struct Decoding<'a> {
    pub mode: DecodeMode,
    pub progress: Option<&'a mut dyn FnMut(Progress)>,
}

/// Where each segment's CFM noise comes from.
#[derive(Clone, Copy)]
pub enum Noise<'a> {
    /// The first frames of this pool [1, C, F], for every segment (the parity walks' input).
    Pool(&'a Tensor),
    /// `torch.randn([1, C, T])` from the seeded decode's own generator, drawn right after the
    /// segment's decode: what infer_v2 draws after `torch.manual_seed(seed)` (the decode's
    /// multinomials, then the CFM's randn, segment after segment).
    Stream,
}

impl Decoding<'_> {
    /// The generator the seeded decode draws from (and `Noise::Stream` after it).
    fn generator(&mut self) -> Result<&mut TorchCpuGenerator> {
        match &mut self.mode {
            DecodeMode::Sampled { draws: Draws::Seeded(g), .. } => Ok(g),
            _ => input_err("pipeline: CFM noise from the stream (no `z_pool`) needs the sampled decoding from a `seed`"),
        }
    }
    pub fn greedy(max_tokens: usize) -> Self {
        Decoding { mode: DecodeMode::Greedy { max_tokens }, progress: None }
    }
    /// The official decoding (infer_v2's options) from torch's CPU stream after `manual_seed(seed)`.
    pub fn official(seed: u64) -> Self {
        Decoding { mode: DecodeMode::Sampled { cfg: DecodeConfig::default(), draws: Draws::seeded(seed) }, progress: None }
    }
    /// Seeded sampling: advance the stream past `n` float32 `torch.rand` draws that the official
    /// code takes outside the decode (w2v-bert's layerdrop checks); no-op otherwise.
    fn skip_official_draws(&mut self, n: usize) {
        if let DecodeMode::Sampled { draws: Draws::Seeded(g), .. } = &mut self.mode {
            for _ in 0..n {
                g.uniform_f32();
            }
        }
    }
    fn report(&mut self, p: Progress) {
        if let Some(f) = self.progress.as_mut() {
            f(p);
        }
    }
}

/// One model inside the pipeline: its kind, the prefix of its keys in the pipeline file and its
/// fault switches (the model's own `FAULTS`; the pipeline accepts them as `<kind>:<fault>`).
pub struct Component {
    pub kind: &'static str,
    pub prefix: &'static str,
    pub faults: &'static [&'static str],
}

/// The pipeline's components, in the order their faults are listed.
pub const COMPONENTS: &[Component] = &[
    Component { kind: "w2v_bert", prefix: "w2v_bert", faults: crate::w2v_bert::FAULTS },
    Component { kind: "semantic_codec", prefix: "semantic_codec", faults: crate::semantic_codec::FAULTS },
    Component { kind: "mel_spectrogram", prefix: "mel_spectrogram", faults: crate::mel::FAULTS }, // weightless
    Component { kind: "campplus", prefix: "campplus", faults: crate::campplus::FAULTS },
    Component { kind: "gpt", prefix: "gpt", faults: crate::gpt::FAULTS },
    Component { kind: "length_regulator", prefix: "s2mel.net", faults: crate::length_regulator::FAULTS },
    Component { kind: "dit", prefix: "s2mel.net.cfm", faults: crate::dit::FAULTS },
    Component { kind: "bigvgan", prefix: "bigvgan", faults: crate::bigvgan::FAULTS },
    Component { kind: "resample", prefix: "resample", faults: crate::resample::FAULTS }, // weightless
    // feat1.pt / feat2.pt as `emotion.spk_matrix` / `emotion.emo_matrix`
    Component { kind: "emotion", prefix: "emotion", faults: crate::emotion::FAULTS },
];

fn component(kind: &str) -> &'static Component {
    COMPONENTS.iter().find(|c| c.kind == kind).expect("every kind the pipeline loads is in COMPONENTS")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub w2v_bert: W2vBertConfig,
    pub semantic_codec: SemanticCodecConfig,
    pub mel_spectrogram: MelConfig,
    pub campplus: CampPlusConfig,
    pub gpt: GptConfig,
    pub length_regulator: RegulatorConfig,
    pub dit: DitConfig,
    pub bigvgan: BigVganConfig,
    pub emotion: EmotionConfig,
    pub resample: ResampleConfig,
    /// the official SentencePiece `bpe.model`, for text input (`tts`); token ids need none
    #[serde(default)]
    pub bpe_model: Option<String>,
    /// the GPT's precision (`float32` default; `float16` = the official `use_fp16` mode, `bfloat16`):
    /// its weights are converted at load, its inputs on entry, its outputs widened back to f32; every
    /// other model stays f32
    #[serde(default)]
    pub gpt_dtype: Option<String>,
}

/// The emotion inputs as a user gives them (infer_v2): an optional emotion clip at 16 kHz, emo_alpha,
/// an optional 8-weight emotion vector.
pub struct EmotionInput<'a> {
    pub clip_16k: Option<&'a Tensor>,
    pub alpha: f32,
    pub weights: Option<Vec<f32>>,
}

/// infer_v2's rules (= reference/pipeline.py `emotion_plan`): a vector drops the clip and is scaled by
/// alpha; without a clip the speaker's 16 kHz clip is the reference and alpha is 1; no vector = zero
/// weights (the mix is then exactly the identity). Returns (clip cut to 15 s, merge alpha, mix weights).
pub fn emotion_plan(e: &EmotionInput, speaker_16k: &Tensor, groups: usize) -> Result<(Tensor, f32, Vec<f32>)> {
    let mut clip = e.clip_16k;
    let mut alpha = e.alpha;
    let weights = match &e.weights {
        Some(w) if w.len() != groups => return input_err(format!("emotion vector: {groups} weights expected, got {}", w.len())),
        Some(w) => {
            clip = None;
            scale_weights(w, alpha)
        }
        None => vec![0.0; groups],
    };
    let clip = match clip {
        Some(c) => cut(c, SR_16K, MAX_PROMPT_SECONDS)?, // an emotion clip is cut to 15 s
        None => {
            alpha = 1.0;
            speaker_16k.clone()
        }
    };
    Ok((clip, alpha, weights))
}

/// Every component fault as `<kind>:<fault>`.
pub fn faults() -> &'static [&'static str] {
    static ALL: OnceLock<Vec<&'static str>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut v = Vec::new();
        for c in COMPONENTS {
            for f in c.faults {
                v.push(&*Box::leak(format!("{}:{f}", c.kind).into_boxed_str()));
            }
        }
        v
    })
    .as_slice()
}

pub struct Pipeline {
    w2v: W2vBert,
    codec: SemanticCodec,
    mel: MelSpectrogram,
    campplus: CampPlus,
    gpt: UnifiedVoice,
    gpt_dtype: DType,
    lr: Regulator,
    dit: Dit,
    vocoder: BigVgan,
    emotion: EmotionMatrices,
    front: Resampler,
    tokenizer: Option<TextTokenizer>,
}

/// The component's share of the pipeline's faults (`<kind>:<fault>` → `<fault>`).
fn sub_faults(f: &Faults, kind: &str) -> Faults {
    let known = component(kind).faults;
    let mine: Vec<String> = known.iter().filter(|n| f.on(&format!("{kind}:{n}"))).map(|n| n.to_string()).collect();
    Faults::new(&mine, known, kind).unwrap_or_default()
}

fn pre(kind: &str) -> &'static str {
    component(kind).prefix
}

fn i64_tensor(v: &[i64], dev: &candle_core::Device) -> Result<Tensor> {
    Ok(Tensor::from_vec(v.to_vec(), v.len(), dev)?)
}

impl Pipeline {
    /// A float tensor into the GPT's dtype (a no-op in the default f32 mode).
    fn to_gpt(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.to_dtype(self.gpt_dtype)?)
    }

    /// Every model of the pipeline from one store (each under its prefix), strictly.
    pub fn load(w: &Weights, cfg: PipelineConfig) -> Result<Pipeline> {
        Self::load_with_faults(w, cfg, Faults::none())
    }

    /// [`Pipeline::load`] with the components' test-only fault switches (`<kind>:<fault>`); without
    /// the `faults` feature any switch is refused.
    pub fn load_with_faults(w: &Weights, cfg: PipelineConfig, faults: Faults) -> Result<Pipeline> {
        let gpt_dtype = match cfg.gpt_dtype.as_deref() {
            None => DType::F32,
            Some(d) => crate::store::parse_dtype(d).map_err(|e| crate::Error::Input(format!("pipeline config `gpt_dtype`: {e}")))?,
        };
        Ok(Pipeline {
            gpt_dtype,
            w2v: W2vBert::load(&w.pp(pre("w2v_bert")), cfg.w2v_bert, sub_faults(&faults, "w2v_bert"))?,
            codec: SemanticCodec::load(&w.pp(pre("semantic_codec")), cfg.semantic_codec, sub_faults(&faults, "semantic_codec"))?,
            mel: MelSpectrogram::load(&w.pp(pre("mel_spectrogram")), cfg.mel_spectrogram, sub_faults(&faults, "mel_spectrogram"))?,
            campplus: CampPlus::load(&w.pp(pre("campplus")), cfg.campplus, sub_faults(&faults, "campplus"))?,
            gpt: UnifiedVoice::load(&w.pp(pre("gpt")).with_dtype(gpt_dtype)?, cfg.gpt, sub_faults(&faults, "gpt"))?,
            lr: Regulator::load(&w.pp(pre("length_regulator")), cfg.length_regulator, sub_faults(&faults, "length_regulator"))?,
            dit: Dit::load(&w.pp(pre("dit")), cfg.dit, sub_faults(&faults, "dit"))?,
            vocoder: BigVgan::load(&w.pp(pre("bigvgan")), cfg.bigvgan, sub_faults(&faults, "bigvgan"))?,
            emotion: EmotionMatrices::load(&w.pp(pre("emotion")), cfg.emotion, sub_faults(&faults, "emotion"))?,
            front: Resampler::load(&w.pp(pre("resample")), cfg.resample, sub_faults(&faults, "resample"))?,
            tokenizer: cfg.bpe_model.as_deref().map(TextTokenizer::load).transpose()?,
        })
    }

    /// Runs every stage on one text segment (token ids): the typed stage outputs, which
    /// [`Synthesis::named`] lists as the Python walk names them.
    #[allow(clippy::too_many_arguments)]
    pub fn synthesize(&self, speaker: &Tensor, emotion: &EmotionInput, text: &Tensor, decoding: &mut Decoding, noise: Noise, t_span: &Tensor) -> Result<Synthesis> {
        let front = self.front(speaker)?;
        let prepared = self.prepare(&front.audio_16k, &front.audio_22k, emotion, decoding)?;
        let segment = self.segment(&prepared, text, decoding, noise, t_span, true)?;
        Ok(Synthesis { front, prepared, segment })
    }

    /// Text to speech (spec §5 steps 1-16): the text through the `bpe.model` (infer_v2's tokenizer
    /// and `split_segments`), the speaker/emotion side once, each segment synthesised, clamped and
    /// joined with `interval_ms` of silence at 22.05 kHz. The codes as `decoding` says (its draws
    /// consumed segment after segment), each segment's CFM noise as `noise` says.
    #[allow(clippy::too_many_arguments)]
    pub fn tts(&self, text: &str, speaker: &Tensor, emotion: &EmotionInput, decoding: &mut Decoding, noise: Noise, t_span: &Tensor,
               max_segment_tokens: usize, interval_ms: i64) -> Result<TtsOutput> {
        let Some(tok) = &self.tokenizer else {
            return input_err("pipeline: text input needs `bpe_model` in the pipeline config");
        };
        let segments = tok.segments(text, max_segment_tokens)?;
        if segments.is_empty() {
            return input_err("pipeline: the text gives no tokens");
        }
        let front = self.front(speaker)?;
        let p = self.prepare(&front.audio_16k, &front.audio_22k, emotion, decoding)?;
        let dev = speaker.device();
        let mut wavs = Vec::with_capacity(segments.len());
        for (index, ids) in segments.iter().enumerate() {
            decoding.report(Progress::Segment { index, count: segments.len() });
            let ids: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
            let text = Tensor::from_vec(ids.clone(), (1, ids.len()), dev)?;
            let seg = self.segment(&p, &text, decoding, noise, t_span, false)?;
            wavs.push(seg.wav.flatten_all()?.unsqueeze(0)?); // [1, N], as infer_v2
        }
        let segment_samples = wavs.iter().map(|w| w.dim(1)).collect::<candle_core::Result<Vec<_>>>()?;
        let wav = join_segments(&wavs, SR_22K, interval_ms)?;
        Ok(TtsOutput { wav, segments, segment_samples })
    }

    /// Spec §5 step 1: the speaker clip at the config's rate (22.05 kHz, as librosa.load gives it),
    /// cut to 15 s.
    pub fn front(&self, speaker: &Tensor) -> Result<Front> {
        if speaker.rank() != 1 {
            return input_err(format!("pipeline: speaker clip [N] expected, got {:?}", speaker.dims()));
        }
        let (audio_22k, audio_16k) = self.front.front(speaker, &mut Ctx::plain())?;
        Ok(Front { audio_22k, audio_16k })
    }

    /// Speaker and emotion side (spec §5 steps 2-8, 10): computed once per request, shared by every
    /// text segment, as infer_v2 caches it. `decoding`: a seeded stream is advanced past the
    /// draws the official w2v-bert forwards take (two, speaker and emotion clip).
    pub fn prepare(&self, audio_16k: &Tensor, audio_22k: &Tensor, emotion: &EmotionInput, decoding: &mut Decoding) -> Result<Prepared> {
        let mut c = Ctx::plain();
        if audio_16k.rank() != 1 || audio_22k.rank() != 1 {
            return input_err(format!("pipeline: audio_16k [N], audio_22k [M] expected; got {:?}, {:?}", audio_16k.dims(), audio_22k.dims()));
        }
        let dev = audio_16k.device().clone();
        // prompt side: w2v-bert features → semantic embedding → codec S_ref, ref mel (22.05 kHz),
        // CAMPPlus style, prompt condition
        let (features, attention_mask) = self.w2v.features(audio_16k)?;
        let o = self.w2v.forward(&features, Some(&attention_mask), &mut c)?;
        let semantic_emb = match o.emb {
            Some(e) => e,
            None => return input_err("pipeline: the w2v-bert config has no stats (wav2vec2bert_stats.pt must be merged in as `semantic_stats`)"),
        };
        let (ref_codes, s_ref) = self.codec.quantize(&semantic_emb, &mut c)?;
        let ref_mel = self.mel.forward(&audio_22k.unsqueeze(0)?, &mut c)?;
        let spk_fbank = self.campplus.fbank(&audio_16k.unsqueeze(0)?, &mut c)?;
        let style = self.campplus.forward(&spk_fbank.unsqueeze(0)?, &mut c)?;
        let tm = ref_mel.dim(2)?;
        let prompt_cond = self.lr.forward(&s_ref, &[tm as i64], &mut c)?;
        // GPT speaker conditioning
        let lens = i64_tensor(&[semantic_emb.dim(1)? as i64], &dev)?;
        let spk = self.gpt.spk_cond(&self.to_gpt(&semantic_emb.transpose(1, 2)?.contiguous()?)?, &lens, &mut c)?.to_dtype(DType::F32)?;
        // emotion: the emotion clip's embedding, merge_emovec, the 8-weight vector
        let (emo_clip, alpha, weights) = emotion_plan(emotion, audio_16k, self.emotion.groups())?;
        let (emo_features, emo_attention_mask) = self.w2v.features(&emo_clip)?;
        let eo = self.w2v.forward(&emo_features, Some(&emo_attention_mask), &mut c)?;
        decoding.skip_official_draws(2 * self.w2v.official_rng_draws());
        let emo_emb = eo.emb.unwrap_or(eo.hidden); // has stats: checked above
        let emo_lens = i64_tensor(&[emo_emb.dim(1)? as i64], &dev)?;
        let alpha_t = Tensor::new(&[alpha], &dev)?;
        let merged_emovec = self
            .gpt
            .merge_emovec(&self.to_gpt(&semantic_emb)?, &lens, &self.to_gpt(&emo_emb)?, &emo_lens, &self.to_gpt(&alpha_t)?, &mut c)?
            .to_dtype(DType::F32)?;
        let w_t = Tensor::new(weights.as_slice(), &dev)?;
        let (emovec, emo_rows) = self.emotion.mix(&style, &merged_emovec, &w_t, &mut c)?;
        Ok(Prepared {
            features,
            attention_mask,
            semantic_emb,
            ref_codes,
            s_ref,
            ref_mel,
            spk_fbank,
            style,
            prompt_cond,
            spk,
            emo_features,
            emo_attention_mask,
            emo_emb,
            merged_emovec,
            emovec,
            emo_rows,
        })
    }

    /// The codes of one segment: greedy, or sampled and trimmed as infer_v2 does.
    fn codes(&self, p: &Prepared, text: &Tensor, decoding: &mut Decoding) -> Result<Tensor> {
        let dev = text.device().clone();
        let Decoding { mode, progress } = decoding;
        let (spk, emovec) = (self.to_gpt(&p.spk)?, self.to_gpt(&p.emovec)?); // the GPT's dtype (gpt_dtype)
        let codes = match mode {
            DecodeMode::Greedy { max_tokens } => self.gpt.greedy(&spk, &emovec, text, &i64_tensor(&[*max_tokens as i64], &dev)?)?,
            DecodeMode::Sampled { cfg, draws } => {
                if cfg.num_return_sequences != 1 {
                    return input_err(format!("decoding option `num_return_sequences` = {}: the pipeline synthesises one sequence (infer_v2 uses 1)", cfg.num_return_sequences));
                }
                let max = cfg.max_mel_tokens;
                let mut step = |s: usize| {
                    if let Some(f) = progress.as_mut() {
                        f(Progress::Step { step: s, max });
                    }
                };
                let d = self.gpt.decode(&spk, &emovec, text, cfg, draws, &[], false, Some(&mut step))?;
                if d.code_lens.len() != 1 {
                    // infer_v2 gives such a row its length twice; its length regulator then makes a
                    // batch of 2 that the CFM's concat with the prompt refuses: it fails too.
                    return input_err(format!(
                        "pipeline: no stop token within max_mel_tokens = {max} (the official infer_v2 fails on this segment as well); raise `max_mel_tokens` or use shorter segments"
                    ));
                }
                let row = d.codes.into_iter().next().unwrap_or_default();
                Tensor::from_vec(row.clone(), (1, row.len()), &dev)?
            }
        };
        Ok(codes)
    }

    /// One text segment (spec §5 steps 11-16): codes, (with `logits`: the teacher-forced logits,
    /// a parity tap), latent, S_infer, target condition, CFM (noise = the first frames of
    /// `noise`), vocoder.
    pub fn segment(&self, p: &Prepared, text: &Tensor, decoding: &mut Decoding, noise: Noise, t_span: &Tensor, logits: bool) -> Result<Segment> {
        let mut c = Ctx::plain();
        if text.rank() != 2 || matches!(noise, Noise::Pool(z) if z.rank() != 3) || t_span.rank() != 1 {
            return input_err("pipeline: text [1,L], z_pool [1,C,F], t_span [S+1] expected");
        }
        let dev = text.device().clone();
        let (spk, emovec) = (&self.to_gpt(&p.spk)?, &self.to_gpt(&p.emovec)?);
        let codes = self.codes(p, text, decoding)?;
        let lc = codes.dim(1)?;
        if lc == 0 {
            return input_err("pipeline: the decoder emitted the stop token first (no codes)");
        }
        let code_logits = if logits { Some(self.gpt.step_logits(spk, emovec, text, &codes, false, &mut c)?.to_dtype(DType::F32)?) } else { None };
        let text_lens = i64_tensor(&[text.dim(1)? as i64], &dev)?;
        let code_lens = i64_tensor(&[lc as i64], &dev)?;
        let latent = self.gpt.forward_latent(spk, text, &text_lens, &codes, &code_lens, emovec, &mut c)?.to_dtype(DType::F32)?;
        // S_infer = vq2emb(codes)ᵀ + gpt_layer(latent)
        let vq_emb = self.codec.vq2emb(&codes, &mut c)?;
        let latent_proj = self.lr.latent_proj(&latent, &mut c)?;
        let s_infer = (vq_emb.transpose(1, 2)? + &latent_proj)?;
        // target side: int(Lc · 1.72) frames, CFM over [prompt ‖ target], keep the target part, vocode
        let tt = ((lc as f64 * LENGTH_RATIO) as usize).max(1);
        let target_cond = self.lr.forward(&s_infer, &[tt as i64], &mut c)?;
        let mu = Tensor::cat(&[&p.prompt_cond, &target_cond], 1)?;
        let tm = p.ref_mel.dim(2)?;
        let total = tm + tt;
        let z = match noise {
            Noise::Pool(z_pool) => {
                if z_pool.dim(2)? < total {
                    return input_err(format!("pipeline: z_pool has {} frames, needs {total}", z_pool.dim(2)?));
                }
                z_pool.narrow(2, 0, total)?.contiguous()?
            }
            Noise::Stream => {
                let ch = p.ref_mel.dim(1)?;
                let v = decoding.generator()?.normal_f32(ch * total);
                Tensor::from_vec(v, (1, ch, total), &dev)?.to_dtype(p.ref_mel.dtype())?
            }
        };
        let ts = t_span.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let states = self.dit.solve_euler(&z, &[total as i64], &p.ref_mel, &mu, &p.style, &ts, &mut c)?;
        let cfm_mel = match states.last() {
            Some(m) => m.clone(),
            None => return input_err("pipeline: t_span needs at least two points"),
        };
        let target_mel = cfm_mel.narrow(2, tm, tt)?.contiguous()?;
        let wav = self.vocoder.forward(&target_mel, &mut c)?;
        Ok(Segment { codes, code_logits, latent, vq_emb, latent_proj, target_cond, cfm_mel, wav })
    }
}

/// What `tts` returns: the joined wav [1, N] at 22.05 kHz, each segment's token ids and samples.
pub struct TtsOutput {
    pub wav: Tensor,
    pub segments: Vec<Vec<u32>>,
    pub segment_samples: Vec<usize>,
}

/// Stage `front` (spec §5 step 1): the speaker clip at 22.05 kHz and 16 kHz.
pub struct Front {
    pub audio_22k: Tensor,
    pub audio_16k: Tensor,
}

/// The per-request state shared by every text segment: each stage output of the speaker/emotion
/// side (the doc comment names the stage as the Python walk does).
pub struct Prepared {
    /// `features.input_features`
    pub features: Tensor,
    /// `features.attention_mask`
    pub attention_mask: Tensor,
    /// `semantic_emb.emb`
    pub semantic_emb: Tensor,
    /// `s_ref.codes`
    pub ref_codes: Tensor,
    /// `s_ref.emb`
    pub s_ref: Tensor,
    /// `ref_mel.mel`
    pub ref_mel: Tensor,
    /// `spk_fbank.feat`
    pub spk_fbank: Tensor,
    /// `style.embedding`
    pub style: Tensor,
    /// `prompt_cond.out`
    pub prompt_cond: Tensor,
    /// `spk_latent.latent`
    pub spk: Tensor,
    /// `emo_features.input_features`
    pub emo_features: Tensor,
    /// `emo_features.attention_mask`
    pub emo_attention_mask: Tensor,
    /// `emo_emb.emb`
    pub emo_emb: Tensor,
    /// `emovec.emovec` (merge_emovec)
    pub merged_emovec: Tensor,
    /// `emo_mix.emovec` (after the 8-weight mix: what the GPT is conditioned on)
    pub emovec: Tensor,
    /// `emo_mix.rows`
    pub emo_rows: Tensor,
}

/// One text segment's stage outputs.
pub struct Segment {
    /// `codes.codes`: greedy GPT codes [1, Lc]
    pub codes: Tensor,
    /// `code_logits.logits`: teacher-forced logits over the codes (`synthesize` only)
    pub code_logits: Option<Tensor>,
    /// `latent.latent`
    pub latent: Tensor,
    /// `vq_emb.emb`: vq2emb(codes)
    pub vq_emb: Tensor,
    /// `s_infer.out`: gpt_layer(latent); S_infer = vq_embᵀ + this
    pub latent_proj: Tensor,
    /// `target_cond.out`
    pub target_cond: Tensor,
    /// `cfm_mel.mel`: the last CFM state over [prompt ‖ target]
    pub cfm_mel: Tensor,
    /// `wav.wav`: the vocoded target part
    pub wav: Tensor,
}

/// Every stage output of one `synthesize` call.
pub struct Synthesis {
    pub front: Front,
    pub prepared: Prepared,
    pub segment: Segment,
}

fn named(v: &[(&str, &Tensor)]) -> Named {
    v.iter().map(|(n, t)| (n.to_string(), (*t).clone())).collect()
}

impl Front {
    pub fn named(&self) -> Named {
        named(&[("front.audio_22k", &self.audio_22k), ("front.audio_16k", &self.audio_16k)])
    }
}

impl Prepared {
    /// The stage outputs as `<stage>.<output>`, in pipeline order.
    pub fn named(&self) -> Named {
        named(&[
            ("features.input_features", &self.features),
            ("features.attention_mask", &self.attention_mask),
            ("semantic_emb.emb", &self.semantic_emb),
            ("s_ref.codes", &self.ref_codes),
            ("s_ref.emb", &self.s_ref),
            ("ref_mel.mel", &self.ref_mel),
            ("spk_fbank.feat", &self.spk_fbank),
            ("style.embedding", &self.style),
            ("prompt_cond.out", &self.prompt_cond),
            ("spk_latent.latent", &self.spk),
            ("emo_features.input_features", &self.emo_features),
            ("emo_features.attention_mask", &self.emo_attention_mask),
            ("emo_emb.emb", &self.emo_emb),
            ("emovec.emovec", &self.merged_emovec),
            ("emo_mix.emovec", &self.emovec),
            ("emo_mix.rows", &self.emo_rows),
        ])
    }
}

impl Segment {
    /// The stage outputs as `<stage>.<output>`, in pipeline order (the last is `wav.wav`).
    pub fn named(&self) -> Named {
        let mut v = named(&[("codes.codes", &self.codes)]);
        if let Some(l) = &self.code_logits {
            v.push(("code_logits.logits".into(), l.clone()));
        }
        v.extend(named(&[
            ("latent.latent", &self.latent),
            ("vq_emb.emb", &self.vq_emb),
            ("s_infer.out", &self.latent_proj),
            ("target_cond.out", &self.target_cond),
            ("cfm_mel.mel", &self.cfm_mel),
            ("wav.wav", &self.wav),
        ]));
        v
    }
}

impl Synthesis {
    /// Every stage output as `<stage>.<output>`, in pipeline order, as the Python walk names them.
    pub fn named(&self) -> Named {
        let mut v = self.front.named();
        v.extend(self.prepared.named());
        v.extend(self.segment.named());
        v
    }
}
