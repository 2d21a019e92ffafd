//! The `impl Runnable` of each model kind: the wire (named tensors, method names) onto the
//! model's typed API. Kinds whose model file carries its own (`dit`, `length_regulator` in
//! `s2mel.rs`) are not here.
use crate::ctx::Ctx;
use crate::error::{input_err, Error, Result};
use crate::runnable::{expect_float, take, Named, Runnable};
use candle_core::Tensor;
use std::collections::BTreeMap;

impl Runnable for crate::bigvgan::BigVgan {
    fn run(&self, method: &str, inputs: &BTreeMap<String, Tensor>, ctx: &mut Ctx) -> Result<Named> {
        match method {
            "forward" => {
                let i = take(inputs, method, &["mel"])?;
                expect_float(i[0], "mel")?;
                Ok(vec![("wav".into(), self.forward(i[0], ctx)?)])
            }
            _ => input_err(format!("bigvgan has no method `{method}` (methods: [\"forward\"])")),
        }
    }
}

impl Runnable for crate::w2v_bert::W2vBert {
    fn run(&self, method: &str, inputs: &BTreeMap<String, Tensor>, ctx: &mut Ctx) -> Result<Named> {
        let named = |o: crate::w2v_bert::Output| {
            let mut v: Named = vec![("hidden".into(), o.hidden)];
            if let Some(e) = o.emb {
                v.push(("emb".into(), e));
            }
            v
        };
        match method {
            "forward" => {
                let i = take(inputs, method, &["input_features"])?;
                Ok(named(self.forward(i[0], None, ctx)?))
            }
            "forward_masked" => {
                let i = take(inputs, method, &["input_features", "attention_mask"])?;
                Ok(named(self.forward(i[0], Some(i[1]), ctx)?))
            }
            "features" => {
                let i = take(inputs, method, &["audio"])?;
                let (f, m) = self.features(i[0])?;
                Ok(vec![("input_features".into(), f), ("attention_mask".into(), m)])
            }
            "embed_audio" => {
                let i = take(inputs, method, &["audio"])?;
                let (f, m) = self.features(i[0])?;
                Ok(named(self.forward(&f, Some(&m), ctx)?))
            }
            _ => input_err(format!(
                "w2v_bert has no method `{method}` (methods: [\"forward\", \"forward_masked\", \"features\", \"embed_audio\"])"
            )),
        }
    }
}

impl Runnable for crate::gpt::UnifiedVoice {
    fn run(&self, method: &str, inputs: &BTreeMap<String, Tensor>, ctx: &mut Ctx) -> Result<Named> {
        const LATENT: &[&str] = &["spk_latent", "emovec", "text"];
        match method {
            "spk_cond" => {
                let i = take(inputs, method, &["x", "lens"])?;
                Ok(vec![("latent".into(), self.spk_cond(i[0], i[1], ctx)?)])
            }
            "spk_conformer" | "emo_conformer" => {
                let i = take(inputs, method, &["x", "lens"])?;
                let (h, m) = self.conformer(method == "emo_conformer", i[0], i[1], ctx)?;
                Ok(vec![("out".into(), h), ("mask".into(), m)])
            }
            "spk_perceiver" | "emo_perceiver" => {
                let i = take(inputs, method, &["context", "mask"])?;
                Ok(vec![("latent".into(), self.perceiver(method == "emo_perceiver", i[0], i[1], ctx)?)])
            }
            "emo_cond" => {
                let i = take(inputs, method, &["x", "lens"])?;
                Ok(vec![("emo".into(), self.emo_cond(i[0], i[1], ctx)?)])
            }
            "emovec" => {
                let i = take(inputs, method, &["x", "lens"])?;
                Ok(vec![("emovec".into(), self.emovec(i[0], i[1], ctx)?)])
            }
            "merge_emovec" => {
                let i = take(inputs, method, &["spk_x", "spk_lens", "emo_x", "emo_lens", "alpha"])?;
                Ok(vec![("emovec".into(), self.merge_emovec(i[0], i[1], i[2], i[3], i[4], ctx)?)])
            }
            "forward_latent" => {
                let i = take(inputs, method, &["spk_latent", "text", "text_lens", "codes", "code_lens", "emovec"])?;
                Ok(vec![("latent".into(), self.forward_latent(i[0], i[1], i[2], i[3], i[4], i[5], ctx)?)])
            }
            "step_logits" | "step_logits_full" => {
                let i = take(inputs, method, &[LATENT[0], LATENT[1], LATENT[2], "codes"])?;
                let cached = method == "step_logits";
                Ok(vec![("logits".into(), self.step_logits(i[0], i[1], i[2], i[3], cached, ctx)?)])
            }
            "greedy" => {
                let i = take(inputs, method, &[LATENT[0], LATENT[1], LATENT[2], "max_tokens"])?;
                Ok(vec![("codes".into(), self.greedy(i[0], i[1], i[2], i[3])?)])
            }
            "generate_sampled" => self.run_generate(inputs),
            _ => input_err(format!(
                "gpt has no method `{method}` (methods: spk_conformer, emo_conformer, spk_perceiver, emo_perceiver, spk_cond, emo_cond, emovec, merge_emovec, forward_latent, step_logits, step_logits_full, greedy, generate_sampled)"
            )),
        }
    }
}

impl Runnable for crate::semantic_codec::SemanticCodec {
    fn run(&self, method: &str, inputs: &BTreeMap<String, Tensor>, ctx: &mut Ctx) -> Result<Named> {
        match method {
            "quantize" => {
                let i = take(inputs, method, &["x"])?;
                let (codes, emb) = self.quantize(i[0], ctx)?;
                Ok(vec![("codes".into(), codes), ("emb".into(), emb)])
            }
            "vq2emb" => {
                let i = take(inputs, method, &["codes"])?;
                Ok(vec![("emb".into(), self.vq2emb(i[0], ctx)?)])
            }
            _ => input_err(format!("semantic_codec has no method `{method}` (methods: [\"quantize\", \"vq2emb\"])")),
        }
    }
}

impl Runnable for crate::campplus::CampPlus {
    fn run(&self, method: &str, inputs: &BTreeMap<String, Tensor>, ctx: &mut Ctx) -> Result<Named> {
        match method {
            "forward" => {
                let i = take(inputs, method, &["feat"])?;
                Ok(vec![("embedding".into(), self.forward(i[0], ctx)?)])
            }
            "fbank" => {
                let i = take(inputs, method, &["wav"])?;
                Ok(vec![("feat".into(), self.fbank(i[0], ctx)?)])
            }
            _ => input_err(format!("campplus has no method `{method}` (methods: [\"forward\", \"fbank\"])")),
        }
    }
}

impl Runnable for crate::mel::MelSpectrogram {
    fn run(&self, method: &str, inputs: &BTreeMap<String, Tensor>, ctx: &mut Ctx) -> Result<Named> {
        match method {
            "forward" => {
                let i = take(inputs, method, &["wav"])?;
                Ok(vec![("mel".into(), self.forward(i[0], ctx)?)])
            }
            _ => input_err(format!("mel_spectrogram has no method `{method}` (methods: [\"forward\"])")),
        }
    }
}

impl Runnable for crate::emotion::EmotionMatrices {
    fn run(&self, method: &str, inputs: &BTreeMap<String, Tensor>, ctx: &mut Ctx) -> Result<Named> {
        match method {
            "mix" => {
                let i = take(inputs, method, &["style", "emovec", "weights"])?;
                for (t, n) in i.iter().zip(["style", "emovec", "weights"]) {
                    expect_float(t, n)?;
                }
                let (emovec, rows) = self.mix(i[0], i[1], i[2], ctx)?;
                Ok(vec![("emovec".into(), emovec), ("rows".into(), rows)])
            }
            _ => input_err(format!("emotion has no method `{method}` (methods: [\"mix\"])")),
        }
    }
}

/// One int64 value (a rate, a length in ms) passed as a `[]` or `[1]` tensor.
fn scalar_i64(t: &Tensor, name: &str) -> Result<i64> {
    if t.dtype() != candle_core::DType::I64 || t.elem_count() != 1 || t.rank() > 1 {
        return input_err(format!("input `{name}` must be one int64 value, got {:?} {:?}", t.dtype(), t.dims()));
    }
    Ok(t.flatten_all()?.to_vec1::<i64>()?[0])
}

fn rate(t: &Tensor, name: &str) -> Result<u32> {
    let v = scalar_i64(t, name)?;
    u32::try_from(v).ok().filter(|r| *r > 0).ok_or_else(|| Error::Input(format!("`{name}` must be a positive rate, got {v}")))
}

impl Runnable for crate::resample::Resampler {
    fn run(&self, method: &str, inputs: &BTreeMap<String, Tensor>, ctx: &mut Ctx) -> Result<Named> {
        match method {
            "forward" => {
                let i = take(inputs, method, &["wav"])?;
                let c = self.config();
                Ok(vec![("wav".into(), self.forward(i[0], c.orig_freq, c.new_freq, ctx)?)])
            }
            "forward_rates" => {
                let i = take(inputs, method, &["wav", "orig_freq", "new_freq"])?;
                let (o, n) = (rate(i[1], "orig_freq")?, rate(i[2], "new_freq")?);
                Ok(vec![("wav".into(), self.forward(i[0], o, n, ctx)?)])
            }
            "front" => {
                let i = take(inputs, method, &["wav"])?;
                let (a22, a16) = self.front(i[0], ctx)?;
                Ok(vec![("audio_22k".into(), a22), ("audio_16k".into(), a16)])
            }
            "cut" => {
                let i = take(inputs, method, &["wav", "sampling_rate", "seconds"])?;
                let sr = rate(i[1], "sampling_rate")?;
                expect_float(i[2], "seconds")?;
                if i[2].elem_count() != 1 || i[2].rank() > 1 {
                    return input_err(format!("input `seconds` must be one float32 value, got {:?}", i[2].dims()));
                }
                let s = i[2].flatten_all()?.to_vec1::<f32>()?[0] as f64;
                Ok(vec![("wav".into(), crate::resample::cut(i[0], sr, s)?)])
            }
            "join" => {
                // segments concatenated along the last axis, `lens` their lengths
                let i = take(inputs, method, &["segments", "lens", "sampling_rate", "interval_ms"])?;
                let sr = rate(i[2], "sampling_rate")?;
                let ms = scalar_i64(i[3], "interval_ms")?;
                if i[1].dtype() != candle_core::DType::I64 || i[1].rank() != 1 {
                    return input_err(format!("input `lens` must be int64 [S], got {:?} {:?}", i[1].dtype(), i[1].dims()));
                }
                let seg = i[0];
                if seg.rank() == 0 {
                    return input_err("input `segments` must be [N] or [C, N]");
                }
                let axis = seg.rank() - 1;
                let total = seg.dim(axis)?;
                let mut at = 0usize;
                let mut parts = Vec::new();
                for l in i[1].to_vec1::<i64>()? {
                    let l = usize::try_from(l).map_err(|_| Error::Input(format!("`lens` holds negative {l}")))?;
                    if at + l > total {
                        return input_err(format!("`lens` sum past the {total} samples of `segments`"));
                    }
                    parts.push(seg.narrow(axis, at, l)?);
                    at += l;
                }
                if at != total {
                    return input_err(format!("`lens` sum to {at}, `segments` has {total} samples"));
                }
                Ok(vec![("wav".into(), crate::resample::join_segments(&parts, sr, ms)?)])
            }
            _ => input_err(format!("resample has no method `{method}` (methods: [\"forward\", \"forward_rates\", \"front\", \"cut\", \"join\"])")),
        }
    }
}
