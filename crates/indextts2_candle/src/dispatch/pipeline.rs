//! The pipeline kind's `impl Runnable`: `synthesize` (token ids; every stage output, named as the
//! Python walk names them, doubling as taps) and `tts` (text as code points; the joined wav).
use crate::ctx::Ctx;
use crate::error::{input_err, Result};
use crate::gpt::decode_inputs;
use crate::pipeline::{DecodeMode, Decoding, EmotionInput, Noise, Pipeline};
use crate::resample::INTERVAL_SILENCE_MS;
use crate::runnable::{expect_float, take, Named, Runnable};
use crate::text::DEFAULT_MAX_SEGMENT_TOKENS;
use candle_core::{DType, Tensor};
use std::collections::BTreeMap;

impl Runnable for Pipeline {
    fn run(&self, method: &str, inputs: &BTreeMap<String, Tensor>, ctx: &mut Ctx) -> Result<Named> {
        match method {
            "synthesize" => {
                let mut rest = inputs.clone();
                let (clip, weights) = take_emotion(&mut rest)?;
                let mut decoding = take_decoding(&mut rest)?;
                let z_pool = rest.remove("z_pool");
                let i = take(&rest, method, &["speaker", "text", "t_span", "emo_alpha"])?;
                expect_float(i[0], "speaker")?;
                let emotion = EmotionInput { clip_16k: clip.as_ref(), alpha: scalar_f32(i[3], "emo_alpha")?, weights };
                let mut out = self.synthesize(i[0], &emotion, i[1], &mut decoding, noise(&z_pool), i[2])?.named();
                for (n, t) in &out {
                    ctx.tap(n, t); // stage outputs double as taps, in pipeline order
                }
                out.extend(draws_used(&decoding, i[0].device())?);
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
                let mut decoding = take_decoding(&mut rest)?;
                let z_pool = rest.remove("z_pool");
                let i = take(&rest, method, &["speaker", "text_codepoints", "t_span", "emo_alpha"])?;
                expect_float(i[0], "speaker")?;
                let text = codepoints(i[1])?;
                let emotion = EmotionInput { clip_16k: clip.as_ref(), alpha: scalar_f32(i[3], "emo_alpha")?, weights };
                let o = self.tts(&text, i[0], &emotion, &mut decoding, noise(&z_pool), i[2], max_seg, interval)?;
                let dev = i[0].device();
                let ids: Vec<i64> = o.segments.iter().flatten().map(|&x| x as i64).collect();
                let lens: Vec<i64> = o.segments.iter().map(|s| s.len() as i64).collect();
                let samples: Vec<i64> = o.segment_samples.iter().map(|&n| n as i64).collect();
                let mut out: Named = vec![
                    ("wav".into(), o.wav),
                    ("ids".into(), Tensor::from_vec(ids.clone(), ids.len(), dev)?),
                    ("segment_lens".into(), Tensor::from_vec(lens.clone(), lens.len(), dev)?),
                    ("segment_samples".into(), Tensor::from_vec(samples.clone(), samples.len(), dev)?),
                ];
                out.extend(draws_used(&decoding, dev)?);
                Ok(out)
            }
            _ => input_err(format!("pipeline has no method `{method}` (methods: [\"synthesize\", \"tts\"])")),
        }
    }
}

/// The decoding inputs, taken out before the strict input check: `max_tokens` (int64) = greedy
/// (deterministic mode); otherwise the official beam sampler with `decode_options` (JSON bytes as
/// int64; absent = infer_v2's) and its `draws` (f32 Exp(1) draws) or `seed`.
fn take_decoding(rest: &mut BTreeMap<String, Tensor>) -> Result<Decoding<'static>> {
    if let Some(m) = rest.remove("max_tokens") {
        if let Some(k) = ["decode_options", "draws", "seed"].iter().find(|k| rest.contains_key(**k)) {
            return input_err(format!("`max_tokens` (greedy decoding) and `{k}` (sampled decoding) exclude each other"));
        }
        let n = scalar_i64(&m, "max_tokens")?;
        if n < 0 {
            return input_err(format!("max_tokens: {n} is negative"));
        }
        return Ok(Decoding::greedy(n as usize));
    }
    let mut d = BTreeMap::new();
    for k in ["decode_options", "draws", "seed"] {
        if let Some(t) = rest.remove(k) {
            d.insert(k.to_string(), t);
        }
    }
    if !d.contains_key("draws") && !d.contains_key("seed") && !d.contains_key("decode_options") {
        return input_err("decoding: give `max_tokens` (greedy) or `draws` / `seed` (the official beam sampling, options in `decode_options`)");
    }
    let (cfg, draws) = decode_inputs(&d, "decode_options")?;
    Ok(Decoding { mode: DecodeMode::Sampled { cfg, draws }, progress: None })
}

/// `z_pool` given: its first frames; absent: torch.randn from the seeded decode's stream.
fn noise(z_pool: &Option<Tensor>) -> Noise<'_> {
    z_pool.as_ref().map_or(Noise::Stream, Noise::Pool)
}

/// How many given draws the sampled decode consumed (an output only in that mode).
fn draws_used(d: &Decoding, dev: &candle_core::Device) -> Result<Named> {
    Ok(match &d.mode {
        DecodeMode::Sampled { draws, .. } => match draws.used() {
            Some(u) => vec![("draws_used".into(), Tensor::from_vec(vec![u as i64], 1, dev)?)],
            None => vec![],
        },
        DecodeMode::Greedy { .. } => vec![],
    })
}

/// The two optional emotion inputs, taken out before the strict input check.
fn take_emotion(rest: &mut BTreeMap<String, Tensor>) -> Result<(Option<Tensor>, Option<Vec<f32>>)> {
    let clip = rest.remove("emo_16k");
    if let Some(c) = &clip {
        expect_float(c, "emo_16k")?;
        if c.rank() != 1 {
            return input_err(format!("emo_16k: [N] expected, got {:?}", c.dims()));
        }
    }
    let weights = match rest.remove("emo_weights") {
        Some(w) => {
            expect_float(&w, "emo_weights")?;
            Some(w.flatten_all()?.to_vec1::<f32>()?)
        }
        None => None,
    };
    Ok((clip, weights))
}

fn scalar_f32(t: &Tensor, name: &str) -> Result<f32> {
    expect_float(t, name)?;
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
