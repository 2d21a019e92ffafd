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
use crate::registry::{take, Named, Runnable};
use crate::resample::{cut, join_segments, ResampleConfig, Resampler, INTERVAL_SILENCE_MS, MAX_PROMPT_SECONDS, SR_16K, SR_22K};
use crate::text::{TextTokenizer, DEFAULT_MAX_SEGMENT_TOKENS};
use crate::store::Weights;
use crate::w2v_bert::{W2vBert, W2vBertConfig};
use candle_core::{DType, Tensor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// infer_v2: target mel frames = int(codes · 1.72).
const LENGTH_RATIO: f64 = 1.72;

/// (kind, prefix of its keys in the pipeline file)
pub const PREFIXES: &[(&str, &str)] = &[
    ("w2v_bert", "w2v_bert"),
    ("semantic_codec", "semantic_codec"),
    ("mel_spectrogram", "mel_spectrogram"), // weightless
    ("campplus", "campplus"),
    ("gpt", "gpt"),
    ("length_regulator", "s2mel.net"),
    ("dit", "s2mel.net.cfm"),
    ("bigvgan", "bigvgan"),
    ("resample", "resample"), // weightless
    ("emotion", "emotion"), // feat1.pt / feat2.pt as `emotion.spk_matrix` / `emotion.emo_matrix`
];

#[derive(Deserialize)]
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
        for (kind, _) in PREFIXES {
            if let Ok(fs) = crate::registry::faults(kind) {
                for f in fs {
                    v.push(&*Box::leak(format!("{kind}:{f}").into_boxed_str()));
                }
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
    lr: Regulator,
    dit: Dit,
    vocoder: BigVgan,
    emotion: EmotionMatrices,
    front: Resampler,
    tokenizer: Option<TextTokenizer>,
}

fn sub_faults(f: &Faults, kind: &str) -> Faults {
    let mine: Vec<String> = crate::registry::faults(kind)
        .unwrap_or(&[])
        .iter()
        .filter(|n| f.on(&format!("{kind}:{n}")))
        .map(|n| n.to_string())
        .collect();
    Faults::new(&mine, crate::registry::faults(kind).unwrap_or(&[]), kind).unwrap_or_default()
}

fn pre(kind: &str) -> &str {
    PREFIXES.iter().find(|(k, _)| *k == kind).map(|(_, p)| *p).unwrap_or(kind)
}

fn i64_tensor(v: &[i64], dev: &candle_core::Device) -> Result<Tensor> {
    Ok(Tensor::from_vec(v.to_vec(), v.len(), dev)?)
}

impl Pipeline {
    pub fn load(w: &Weights, cfg: PipelineConfig, faults: Faults) -> Result<Pipeline> {
        Ok(Pipeline {
            w2v: W2vBert::load(&w.pp(pre("w2v_bert")), cfg.w2v_bert, sub_faults(&faults, "w2v_bert"))?,
            codec: SemanticCodec::load(&w.pp(pre("semantic_codec")), cfg.semantic_codec, sub_faults(&faults, "semantic_codec"))?,
            mel: MelSpectrogram::load(&w.pp(pre("mel_spectrogram")), cfg.mel_spectrogram, sub_faults(&faults, "mel_spectrogram"))?,
            campplus: CampPlus::load(&w.pp(pre("campplus")), cfg.campplus, sub_faults(&faults, "campplus"))?,
            gpt: UnifiedVoice::load(&w.pp(pre("gpt")), cfg.gpt, sub_faults(&faults, "gpt"))?,
            lr: Regulator::load(&w.pp(pre("length_regulator")), cfg.length_regulator, sub_faults(&faults, "length_regulator"))?,
            dit: Dit::load(&w.pp(pre("dit")), cfg.dit, sub_faults(&faults, "dit"))?,
            vocoder: BigVgan::load(&w.pp(pre("bigvgan")), cfg.bigvgan, sub_faults(&faults, "bigvgan"))?,
            emotion: EmotionMatrices::load(&w.pp(pre("emotion")), cfg.emotion, sub_faults(&faults, "emotion"))?,
            front: Resampler::load(&w.pp(pre("resample")), cfg.resample, sub_faults(&faults, "resample"))?,
            tokenizer: cfg.bpe_model.as_deref().map(TextTokenizer::load).transpose()?,
        })
    }

    /// Runs every stage; returns the stage outputs named `<stage>.<output>` as the Python walk
    /// names them, in pipeline order (the last is `wav.wav`).
    #[allow(clippy::too_many_arguments)]
    pub fn synthesize(&self, speaker: &Tensor, emotion: &EmotionInput, text: &Tensor, max_tokens: &Tensor, z_pool: &Tensor, t_span: &Tensor) -> Result<Named> {
        let (a22, a16) = self.front(speaker)?;
        let mut out: Named = vec![("front.audio_22k".into(), a22.clone()), ("front.audio_16k".into(), a16.clone())];
        let p = self.prepare(&a16, &a22, emotion)?;
        out.extend(p.outputs.iter().cloned());
        out.extend(self.segment(&p, text, max_tokens, z_pool, t_span)?);
        Ok(out)
    }

    /// Text to speech (spec §5 steps 1-16): the text through the `bpe.model` (infer_v2's tokenizer
    /// and `split_segments`), the speaker/emotion side once, each segment synthesised, clamped and
    /// joined with `interval_ms` of silence at 22.05 kHz. Deterministic mode: greedy codes, every
    /// segment's CFM noise = the first frames of `z_pool`.
    #[allow(clippy::too_many_arguments)]
    pub fn tts(&self, text: &str, speaker: &Tensor, emotion: &EmotionInput, max_tokens: &Tensor, z_pool: &Tensor, t_span: &Tensor,
               max_segment_tokens: usize, interval_ms: i64) -> Result<TtsOutput> {
        let Some(tok) = &self.tokenizer else {
            return input_err("pipeline: text input needs `bpe_model` in the pipeline config");
        };
        let segments = tok.segments(text, max_segment_tokens)?;
        if segments.is_empty() {
            return input_err("pipeline: the text gives no tokens");
        }
        let (a22, a16) = self.front(speaker)?;
        let p = self.prepare(&a16, &a22, emotion)?;
        let dev = speaker.device();
        let mut wavs = Vec::with_capacity(segments.len());
        for ids in &segments {
            let ids: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
            let text = Tensor::from_vec(ids.clone(), (1, ids.len()), dev)?;
            let out = self.segment(&p, &text, max_tokens, z_pool, t_span)?;
            match out.into_iter().find(|(n, _)| n == "wav.wav") {
                Some((_, w)) => wavs.push(w.flatten_all()?.unsqueeze(0)?), // [1, N], as infer_v2
                None => return input_err("pipeline: a segment produced no wav"),
            }
        }
        let segment_samples = wavs.iter().map(|w| w.dim(1)).collect::<candle_core::Result<Vec<_>>>()?;
        let wav = join_segments(&wavs, SR_22K, interval_ms)?;
        Ok(TtsOutput { wav, segments, segment_samples })
    }

    /// Spec §5 step 1: the speaker clip at the config's rate (22.05 kHz, as librosa.load gives it),
    /// cut to 15 s → (audio_22k, audio_16k).
    pub fn front(&self, speaker: &Tensor) -> Result<(Tensor, Tensor)> {
        if speaker.rank() != 1 {
            return input_err(format!("pipeline: speaker clip [N] expected, got {:?}", speaker.dims()));
        }
        self.front.front(speaker, &mut Ctx::plain())
    }

    /// Speaker and emotion side (spec §5 steps 2-8, 10): computed once per request, shared by every
    /// text segment, as infer_v2 caches it.
    pub fn prepare(&self, audio_16k: &Tensor, audio_22k: &Tensor, emotion: &EmotionInput) -> Result<Prepared> {
        let mut out: Named = Vec::new();
        let mut c = Ctx::plain();
        if audio_16k.rank() != 1 || audio_22k.rank() != 1 {
            return input_err(format!("pipeline: audio_16k [N], audio_22k [M] expected; got {:?}, {:?}", audio_16k.dims(), audio_22k.dims()));
        }
        let dev = audio_16k.device().clone();
        // prompt side: w2v-bert features → semantic embedding → codec S_ref, ref mel (22.05 kHz),
        // CAMPPlus style, prompt condition
        let (feats, mask) = self.w2v.features(audio_16k)?;
        out.push(("features.input_features".into(), feats.clone()));
        out.push(("features.attention_mask".into(), mask.clone()));
        let o = self.w2v.forward(&feats, Some(&mask), &mut c)?;
        let emb = match o.emb {
            Some(e) => e,
            None => return input_err("pipeline: the w2v-bert config has no stats (wav2vec2bert_stats.pt must be merged in as `semantic_stats`)"),
        };
        out.push(("semantic_emb.emb".into(), emb.clone()));
        let (ref_codes, s_ref) = self.codec.quantize(&emb, &mut c)?;
        out.push(("s_ref.codes".into(), ref_codes));
        out.push(("s_ref.emb".into(), s_ref.clone()));
        let ref_mel = self.mel.forward(&audio_22k.unsqueeze(0)?, &mut c)?;
        out.push(("ref_mel.mel".into(), ref_mel.clone()));
        let feat = self.campplus.fbank(&audio_16k.unsqueeze(0)?, &mut c)?;
        out.push(("spk_fbank.feat".into(), feat.clone()));
        let style = self.campplus.forward(&feat.unsqueeze(0)?, &mut c)?;
        out.push(("style.embedding".into(), style.clone()));
        let tm = ref_mel.dim(2)?;
        let prompt_cond = self.lr.forward(&s_ref, &[tm as i64], &mut c)?;
        out.push(("prompt_cond.out".into(), prompt_cond.clone()));
        // GPT speaker conditioning
        let lens = i64_tensor(&[emb.dim(1)? as i64], &dev)?;
        let spk = self.gpt.spk_cond(&emb.transpose(1, 2)?.contiguous()?, &lens, &mut c)?;
        out.push(("spk_latent.latent".into(), spk.clone()));
        // emotion: the emotion clip's embedding, merge_emovec, the 8-weight vector
        let (emo_clip, alpha, weights) = emotion_plan(emotion, audio_16k, self.emotion.groups())?;
        let (efeats, emask) = self.w2v.features(&emo_clip)?;
        out.push(("emo_features.input_features".into(), efeats.clone()));
        out.push(("emo_features.attention_mask".into(), emask.clone()));
        let eo = self.w2v.forward(&efeats, Some(&emask), &mut c)?;
        let emo_emb = eo.emb.unwrap_or(eo.hidden); // has stats: checked above
        out.push(("emo_emb.emb".into(), emo_emb.clone()));
        let emo_lens = i64_tensor(&[emo_emb.dim(1)? as i64], &dev)?;
        let alpha_t = Tensor::new(&[alpha], &dev)?;
        let merged = self.gpt.merge_emovec(&emb, &lens, &emo_emb, &emo_lens, &alpha_t, &mut c)?;
        out.push(("emovec.emovec".into(), merged.clone()));
        let w_t = Tensor::new(weights.as_slice(), &dev)?;
        let (emovec, rows) = self.emotion.mix(&style, &merged, &w_t, &mut c)?;
        out.push(("emo_mix.emovec".into(), emovec.clone()));
        out.push(("emo_mix.rows".into(), rows));
        Ok(Prepared { outputs: out, ref_mel, style, prompt_cond, spk, emovec })
    }

    /// One text segment (spec §5 steps 11-16): greedy codes, teacher-forced logits, latent, S_infer,
    /// target condition, CFM (noise = the first frames of `z_pool`), vocoder.
    pub fn segment(&self, p: &Prepared, text: &Tensor, max_tokens: &Tensor, z_pool: &Tensor, t_span: &Tensor) -> Result<Named> {
        let mut out: Named = Vec::new();
        let mut c = Ctx::plain();
        if text.rank() != 2 || z_pool.rank() != 3 || t_span.rank() != 1 {
            return input_err("pipeline: text [1,L], z_pool [1,C,F], t_span [S+1] expected");
        }
        let dev = text.device().clone();
        let (spk, emovec) = (&p.spk, &p.emovec);
        let codes = self.gpt.greedy(spk, emovec, text, max_tokens)?;
        out.push(("codes.codes".into(), codes.clone()));
        let lc = codes.dim(1)?;
        if lc == 0 {
            return input_err("pipeline: the decoder emitted the stop token first (no codes)");
        }
        let logits = self.gpt.step_logits(spk, emovec, text, &codes, false, &mut c)?;
        out.push(("code_logits.logits".into(), logits));
        let text_lens = i64_tensor(&[text.dim(1)? as i64], &dev)?;
        let code_lens = i64_tensor(&[lc as i64], &dev)?;
        let latent = self.gpt.forward_latent(spk, text, &text_lens, &codes, &code_lens, emovec, &mut c)?;
        out.push(("latent.latent".into(), latent.clone()));
        // S_infer = vq2emb(codes)ᵀ + gpt_layer(latent)
        let vq = self.codec.vq2emb(&codes, &mut c)?;
        out.push(("vq_emb.emb".into(), vq.clone()));
        let proj = self.lr.latent_proj(&latent, &mut c)?;
        out.push(("s_infer.out".into(), proj.clone()));
        let s_infer = (vq.transpose(1, 2)? + &proj)?;
        // target side: int(Lc · 1.72) frames, CFM over [prompt ‖ target], keep the target part, vocode
        let tt = ((lc as f64 * LENGTH_RATIO) as usize).max(1);
        let target_cond = self.lr.forward(&s_infer, &[tt as i64], &mut c)?;
        out.push(("target_cond.out".into(), target_cond.clone()));
        let mu = Tensor::cat(&[&p.prompt_cond, &target_cond], 1)?;
        let tm = p.ref_mel.dim(2)?;
        let total = tm + tt;
        if z_pool.dim(2)? < total {
            return input_err(format!("pipeline: z_pool has {} frames, needs {total}", z_pool.dim(2)?));
        }
        let z = z_pool.narrow(2, 0, total)?.contiguous()?;
        let ts = t_span.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let states = self.dit.solve_euler(&z, &[total as i64], &p.ref_mel, &mu, &p.style, &ts, &mut c)?;
        let mel = match states.last() {
            Some(m) => m.clone(),
            None => return input_err("pipeline: t_span needs at least two points"),
        };
        out.push(("cfm_mel.mel".into(), mel.clone()));
        let target_mel = mel.narrow(2, tm, tt)?.contiguous()?;
        let wav = self.vocoder.forward(&target_mel, &mut c)?;
        out.push(("wav.wav".into(), wav));
        Ok(out)
    }
}

/// What `tts` returns: the joined wav [1, N] at 22.05 kHz, each segment's token ids and samples.
pub struct TtsOutput {
    pub wav: Tensor,
    pub segments: Vec<Vec<u32>>,
    pub segment_samples: Vec<usize>,
}

/// The per-request state shared by every text segment.
pub struct Prepared {
    /// stage outputs of the speaker/emotion side, named as in `synthesize`
    pub outputs: Named,
    pub ref_mel: Tensor,
    pub style: Tensor,
    pub prompt_cond: Tensor,
    pub spk: Tensor,
    pub emovec: Tensor,
}

impl Runnable for Pipeline {
    fn run(&self, method: &str, inputs: &BTreeMap<String, Tensor>, ctx: &mut Ctx) -> Result<Named> {
        match method {
            "synthesize" => {
                let mut rest = inputs.clone();
                let (clip, weights) = take_emotion(&mut rest)?;
                let i = take(&rest, method, &["speaker", "text", "max_tokens", "z_pool", "t_span", "emo_alpha"])?;
                crate::registry::expect_float(i[0], "speaker")?;
                let emotion = EmotionInput { clip_16k: clip.as_ref(), alpha: scalar_f32(i[5], "emo_alpha")?, weights };
                let out = self.synthesize(i[0], &emotion, i[1], i[2], i[3], i[4])?;
                for (n, t) in &out {
                    ctx.tap(n, t); // stage outputs double as taps, in pipeline order
                }
                Ok(out)
            }
            "tts" => {
                let mut rest = inputs.clone();
                let (clip, weights) = take_emotion(&mut rest)?;
                let max_seg = match rest.remove("max_segment_tokens") {
                    Some(t) => scalar_i64(&t, "max_segment_tokens")? as usize,
                    None => DEFAULT_MAX_SEGMENT_TOKENS,
                };
                let interval = match rest.remove("interval_ms") {
                    Some(t) => scalar_i64(&t, "interval_ms")?,
                    None => INTERVAL_SILENCE_MS,
                };
                let i = take(&rest, method, &["speaker", "text_codepoints", "max_tokens", "z_pool", "t_span", "emo_alpha"])?;
                crate::registry::expect_float(i[0], "speaker")?;
                let text = codepoints(i[1])?;
                let emotion = EmotionInput { clip_16k: clip.as_ref(), alpha: scalar_f32(i[5], "emo_alpha")?, weights };
                let o = self.tts(&text, i[0], &emotion, i[2], i[3], i[4], max_seg, interval)?;
                let dev = i[0].device();
                let ids: Vec<i64> = o.segments.iter().flatten().map(|&x| x as i64).collect();
                let lens: Vec<i64> = o.segments.iter().map(|s| s.len() as i64).collect();
                let samples: Vec<i64> = o.segment_samples.iter().map(|&n| n as i64).collect();
                Ok(vec![
                    ("wav".into(), o.wav),
                    ("ids".into(), Tensor::from_vec(ids.clone(), ids.len(), dev)?),
                    ("segment_lens".into(), Tensor::from_vec(lens.clone(), lens.len(), dev)?),
                    ("segment_samples".into(), Tensor::from_vec(samples.clone(), samples.len(), dev)?),
                ])
            }
            _ => input_err(format!("pipeline has no method `{method}` (methods: [\"synthesize\", \"tts\"])")),
        }
    }
}

/// The two optional emotion inputs, taken out before the strict input check.
fn take_emotion(rest: &mut BTreeMap<String, Tensor>) -> Result<(Option<Tensor>, Option<Vec<f32>>)> {
    let clip = rest.remove("emo_16k");
    if let Some(c) = &clip {
        crate::registry::expect_float(c, "emo_16k")?;
        if c.rank() != 1 {
            return input_err(format!("emo_16k: [N] expected, got {:?}", c.dims()));
        }
    }
    let weights = match rest.remove("emo_weights") {
        Some(w) => {
            crate::registry::expect_float(&w, "emo_weights")?;
            Some(w.flatten_all()?.to_vec1::<f32>()?)
        }
        None => None,
    };
    Ok((clip, weights))
}

fn scalar_f32(t: &Tensor, name: &str) -> Result<f32> {
    crate::registry::expect_float(t, name)?;
    match t.flatten_all()?.to_vec1::<f32>()?.as_slice() {
        [a] => Ok(*a),
        v => input_err(format!("{name}: one value expected, got {}", v.len())),
    }
}

fn scalar_i64(t: &Tensor, name: &str) -> Result<i64> {
    if t.dtype() != DType::I64 || t.elem_count() != 1 {
        return input_err(format!("{name}: one int64 value expected, got {:?} {:?}", t.dtype(), t.dims()));
    }
    Ok(t.flatten_all()?.to_vec1::<i64>()?[0])
}

/// Text on the tensor wire: Unicode code points as int64 [n].
fn codepoints(t: &Tensor) -> Result<String> {
    if t.dtype() != DType::I64 || t.rank() != 1 {
        return input_err(format!("text_codepoints: int64 [n] expected, got {:?} {:?}", t.dtype(), t.dims()));
    }
    t.to_vec1::<i64>()?
        .into_iter()
        .map(|c| u32::try_from(c).ok().and_then(char::from_u32).ok_or_else(|| crate::Error::Input(format!("text_codepoints: {c} is not a Unicode scalar value"))))
        .collect()
}
