//! The IndexTTS2 inference pipeline (spec §5) composed from the Candle models, deterministic mode:
//! token ids given, greedy decoding, CFM noise given. Mirrors `reference/pipeline.py` stage by
//! stage; nothing here re-implements a model.
//!
//! One safetensors holds every model under a fixed prefix (`w2v_bert.`, `gpt.`, `s2mel.net.…`,
//! `bigvgan.`); the config JSON holds each model's own config under its kind name. Faults are the
//! components' own switches, named `<kind>:<fault>`.
//!
//! Emotion reference = the speaker clip, emo_alpha 1; token ids given (no SentencePiece yet).
use crate::bigvgan::{BigVgan, BigVganConfig};
use crate::campplus::{CampPlus, CampPlusConfig};
use crate::mel::{MelConfig, MelSpectrogram};
use crate::semantic_codec::{SemanticCodec, SemanticCodecConfig};
use crate::ctx::{Ctx, Faults};
use crate::dit::{Dit, DitConfig};
use crate::error::{input_err, Result};
use crate::gpt::{GptConfig, UnifiedVoice};
use crate::length_regulator::{Regulator, RegulatorConfig};
use crate::registry::{take, Named, Runnable};
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
        })
    }

    /// Runs every stage; returns the stage outputs named `<stage>.<output>` as the Python walk
    /// names them, in pipeline order (the last is `wav.wav`).
    pub fn synthesize(&self, audio_16k: &Tensor, audio_22k: &Tensor, text: &Tensor, max_tokens: &Tensor, z_pool: &Tensor, t_span: &Tensor) -> Result<Named> {
        let mut out: Named = Vec::new();
        let mut c = Ctx::plain();
        if audio_16k.rank() != 1 || audio_22k.rank() != 1 || text.rank() != 2 || z_pool.rank() != 3 || t_span.rank() != 1 {
            return input_err("pipeline: audio_16k [N], audio_22k [M], text [1,L], z_pool [1,C,F], t_span [S+1] expected");
        }
        let dev = audio_16k.device().clone();
        // prompt side (spec §5 steps 2-7): w2v-bert features → semantic embedding → codec S_ref,
        // ref mel (22.05 kHz), CAMPPlus style, prompt condition
        let (feats, mask) = self.w2v.features(audio_16k)?;
        out.push(("features.input_features".into(), feats.clone()));
        out.push(("features.attention_mask".into(), mask.clone()));
        let o = self.w2v.forward(&feats, Some(&mask), &mut c)?;
        let emb = o.emb.unwrap_or(o.hidden);
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
        // GPT conditioning, emotion vector, greedy codes, teacher-forced logits and latent
        let t = emb.dim(1)?;
        let lens = i64_tensor(&[t as i64], &dev)?;
        let spk = self.gpt.spk_cond(&emb.transpose(1, 2)?.contiguous()?, &lens, &mut c)?;
        out.push(("spk_latent.latent".into(), spk.clone()));
        let emovec = self.gpt.emovec(&emb, &lens, &mut c)?;
        out.push(("emovec.emovec".into(), emovec.clone()));
        let codes = self.gpt.greedy(&spk, &emovec, text, max_tokens)?;
        out.push(("codes.codes".into(), codes.clone()));
        let lc = codes.dim(1)?;
        if lc == 0 {
            return input_err("pipeline: the decoder emitted the stop token first (no codes)");
        }
        let logits = self.gpt.step_logits(&spk, &emovec, text, &codes, false, &mut c)?;
        out.push(("code_logits.logits".into(), logits));
        let text_lens = i64_tensor(&[text.dim(1)? as i64], &dev)?;
        let code_lens = i64_tensor(&[lc as i64], &dev)?;
        let latent = self.gpt.forward_latent(&spk, text, &text_lens, &codes, &code_lens, &emovec, &mut c)?;
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
        let mu = Tensor::cat(&[&prompt_cond, &target_cond], 1)?;
        let total = tm + tt;
        if z_pool.dim(2)? < total {
            return input_err(format!("pipeline: z_pool has {} frames, needs {total}", z_pool.dim(2)?));
        }
        let z = z_pool.narrow(2, 0, total)?.contiguous()?;
        let ts = t_span.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let states = self.dit.solve_euler(&z, &[total as i64], &ref_mel, &mu, &style, &ts, &mut c)?;
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

impl Runnable for Pipeline {
    fn run(&self, method: &str, inputs: &BTreeMap<String, Tensor>, ctx: &mut Ctx) -> Result<Named> {
        match method {
            "synthesize" => {
                let i = take(inputs, method, &["audio_16k", "audio_22k", "text", "max_tokens", "z_pool", "t_span"])?;
                let out = self.synthesize(i[0], i[1], i[2], i[3], i[4], i[5])?;
                for (n, t) in &out {
                    ctx.tap(n, t); // stage outputs double as taps, in pipeline order
                }
                Ok(out)
            }
            _ => input_err(format!("pipeline has no method `{method}` (methods: [\"synthesize\"])")),
        }
    }
}
