//! Official decoding of IndexTTS2's GPT: the vendored `transformers_generation_utils.generate`
//! as `infer_v2.py` calls `inference_speech` (beam sampling, `do_sample=True`, 3 beams, top-k 30,
//! top-p 0.8, temperature 0.8, repetition penalty 10, length penalty 0, stop token 8193), plus
//! plain sampling (1 beam), greedy and beam search without sampling, and infer_v2's trimming.
//! Randomness is an input ([`rng::Draws`]): the caller's Exp(1) draws, or torch's CPU stream.
pub mod beam;
pub mod processors;
pub mod rng;
pub mod stl;

use crate::ctx::Faults;
use crate::error::{input_err, Error, Result};
use candle_core::{Device, Tensor};
use serde::Deserialize;
use std::sync::OnceLock;

pub use beam::{generate, Decoder, Generated};

/// Decoding faults (switched through the gpt kind's fault list).
pub const FAULTS: &[&str] = &[
    "penalty_on_logits",      // repetition penalty before log_softmax instead of on the log-probs
    "top_p_one_too_few",      // top-p drops the smallest token it should keep
    "beam_scores_not_added",  // candidates ranked by this step's scores only
    "kv_cache_not_reordered", // KV cache left in the previous beam order
    "length_penalty_one",     // hypotheses scored sum / len instead of the plain sum
    "eos_beam_not_finalised", // a top-ranked stop candidate never becomes a hypothesis
];

/// The gpt kind's faults followed by the decoding faults.
pub fn with_decode_faults(model: &'static [&'static str]) -> &'static [&'static str] {
    static ALL: OnceLock<Vec<&'static str>> = OnceLock::new();
    ALL.get_or_init(|| model.iter().chain(FAULTS).copied().collect())
}

#[derive(Clone, Copy, Debug, Default)]
pub struct DecodeFaults {
    pub penalty_on_logits: bool,
    pub top_p_one_too_few: bool,
    pub beam_scores_not_added: bool,
    pub kv_cache_not_reordered: bool,
    pub length_penalty_one: bool,
    pub eos_beam_not_finalised: bool,
}

impl DecodeFaults {
    pub fn from(f: &Faults) -> Self {
        DecodeFaults {
            penalty_on_logits: f.on("penalty_on_logits"),
            top_p_one_too_few: f.on("top_p_one_too_few"),
            beam_scores_not_added: f.on("beam_scores_not_added"),
            kv_cache_not_reordered: f.on("kv_cache_not_reordered"),
            length_penalty_one: f.on("length_penalty_one"),
            eos_beam_not_finalised: f.on("eos_beam_not_finalised"),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum EarlyStopping {
    Bool(bool),
    Never(Never),
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
pub enum Never {
    #[serde(rename = "never")]
    Never,
}

/// Decoding options; `Default` = what infer_v2 passes to `inference_speech`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeConfig {
    pub do_sample: bool,
    pub num_beams: usize,
    pub top_k: usize,
    pub top_p: f64,
    pub temperature: f64,
    pub repetition_penalty: f64,
    pub length_penalty: f64,
    /// `max_generate_length` (infer_v2's `max_mel_tokens`): new tokens at most.
    pub max_mel_tokens: usize,
    pub num_return_sequences: usize,
    /// GenerationConfig's default (the official call does not set it).
    pub early_stopping: EarlyStopping,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            do_sample: true,
            num_beams: 3,
            top_k: 30,
            top_p: 0.8,
            temperature: 0.8,
            repetition_penalty: 10.0,
            length_penalty: 0.0,
            max_mel_tokens: 1500,
            num_return_sequences: 1,
            early_stopping: EarlyStopping::Bool(false),
        }
    }
}

impl DecodeConfig {
    pub fn from_json(s: &str) -> Result<Self> {
        let c: DecodeConfig = serde_json::from_str(s).map_err(|e| Error::Input(format!("invalid decoding options: {e}")))?;
        c.validate()?;
        Ok(c)
    }

    /// The checks GenerationConfig / the processors' constructors make, with the field named.
    pub fn validate(&self) -> Result<()> {
        let bad = |f: &str, v: String, why: &str| input_err(format!("decoding option `{f}` = {v}: {why}"));
        if self.num_beams == 0 {
            return bad("num_beams", "0".into(), "must be ≥ 1");
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return bad("temperature", self.temperature.to_string(), "must be a positive float");
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return bad("top_p", self.top_p.to_string(), "must be in [0, 1]");
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad("repetition_penalty", self.repetition_penalty.to_string(), "must be a positive float");
        }
        if !self.length_penalty.is_finite() {
            return bad("length_penalty", self.length_penalty.to_string(), "must be finite");
        }
        if self.num_return_sequences == 0 || (self.num_beams > 1 && self.num_return_sequences > self.num_beams) {
            return bad("num_return_sequences", self.num_return_sequences.to_string(), "must be in [1, num_beams]");
        }
        if self.num_beams == 1 && self.num_return_sequences != 1 {
            return bad("num_return_sequences", self.num_return_sequences.to_string(), "with 1 beam only 1 is supported (infer_v2 uses 1)");
        }
        if self.max_mel_tokens == 0 {
            return bad("max_mel_tokens", "0".into(), "must be ≥ 1");
        }
        Ok(())
    }
}

/// infer_v2's post-processing of `inference_speech`'s codes: each row cut at its first stop token
/// (`code_len` = its index); a row without one appends its length twice (the official loop's
/// quirk); all rows are cut to the LAST row's `code_len`. → (codes, code_lens).
pub fn infer_v2_trim(rows: &[Vec<i64>], stop: i64) -> (Vec<Vec<i64>>, Vec<i64>) {
    let mut lens = Vec::new();
    let mut code_len = 0usize;
    for r in rows {
        match r.iter().position(|&t| t == stop) {
            None => {
                lens.push(r.len() as i64);
                code_len = r.len();
                lens.push(code_len as i64);
            }
            Some(i) => {
                code_len = i;
                lens.push(i as i64);
            }
        }
    }
    (rows.iter().map(|r| r[..code_len.min(r.len())].to_vec()).collect(), lens)
}

fn row_tensor(rows: &[Vec<f32>]) -> Result<Tensor> {
    let n = rows.first().map_or(0, |r| r.len());
    Ok(Tensor::from_vec(rows.concat(), (rows.len(), n), &Device::Cpu)?)
}

/// Binding-free entry for the property tests (`indextts_candle.transform("sampling.<name>", …)`):
/// `scores` f32 [B, V], `input_ids` i64 [B, T], `options` = UTF-8 JSON in an int64 tensor.
pub fn transform(name: &str, ts: &[Tensor]) -> Result<Vec<Tensor>> {
    let arg = |i: usize| ts.get(i).ok_or_else(|| Error::Input(format!("sampling.{name} needs {} tensors", i + 1)));
    let json = |i: usize| -> Result<serde_json::Value> {
        let b: Vec<u8> = arg(i)?.to_vec1::<i64>()?.iter().map(|&x| x as u8).collect();
        serde_json::from_slice(&b).map_err(|e| Error::Input(format!("sampling.{name}: bad options: {e}")))
    };
    let num = |o: &serde_json::Value, k: &str| o[k].as_f64().ok_or_else(|| Error::Input(format!("sampling.{name}: option `{k}` missing")));
    if name == "exponential" {
        let o = json(0)?;
        let mut g = rng::TorchCpuGenerator::new(num(&o, "seed")? as u64);
        let q = g.exponential_f32(num(&o, "n")? as usize);
        let n = q.len();
        return Ok(vec![Tensor::from_vec(q, n, &Device::Cpu)?]);
    }
    if name == "normal" {
        let o = json(0)?;
        let q = rng::TorchCpuGenerator::new(num(&o, "seed")? as u64).normal_f32(num(&o, "n")? as usize);
        let n = q.len();
        return Ok(vec![Tensor::from_vec(q, n, &Device::Cpu)?]);
    }
    let scores = arg(0)?.to_vec2::<f32>()?;
    let mut out = scores.clone();
    match name {
        "log_softmax" => out.iter_mut().for_each(|r| processors::log_softmax(r)),
        "softmax" => out = scores.iter().map(|r| processors::softmax(r)).collect(),
        "repetition_penalty" => {
            let ids = arg(1)?.to_vec2::<i64>()?;
            let o = json(2)?;
            for (r, i) in out.iter_mut().zip(&ids) {
                processors::repetition_penalty(r, i, num(&o, "penalty")?);
            }
        }
        "temperature" => {
            let t = num(&json(1)?, "temperature")?;
            out.iter_mut().for_each(|r| processors::temperature(r, t));
        }
        "top_k" => {
            let o = json(1)?;
            let (k, m) = (num(&o, "top_k")? as usize, num(&o, "min_tokens_to_keep")? as usize);
            out.iter_mut().for_each(|r| processors::top_k(r, k, m));
        }
        "top_p" => {
            let o = json(1)?;
            let (p, m) = (num(&o, "top_p")?, num(&o, "min_tokens_to_keep")? as usize);
            out.iter_mut().for_each(|r| processors::top_p(r, p, m, false));
        }
        "argsort" => {
            let idx: Vec<i64> = scores.iter().flat_map(|r| stl::argsort_asc(r)).map(|i| i as i64).collect();
            return Ok(vec![Tensor::from_vec(idx, (scores.len(), scores.first().map_or(0, |r| r.len())), &Device::Cpu)?]);
        }
        "topk" => {
            let n = num(&json(1)?, "k")? as usize;
            let idx: Vec<i64> = scores.iter().flat_map(|r| stl::topk(r, n)).map(|i| i as i64).collect();
            return Ok(vec![Tensor::from_vec(idx, (scores.len(), n), &Device::Cpu)?]);
        }
        "multinomial" => {
            // scores = probs [B, V], ts[1] = q [B, V], options {"n": …} → indices [B, n]
            let q = arg(1)?.to_vec2::<f32>()?;
            let n = num(&json(2)?, "n")? as usize;
            let idx: Vec<i64> = scores.iter().zip(&q).flat_map(|(p, q)| rng::multinomial(p, q, n)).map(|i| i as i64).collect();
            return Ok(vec![Tensor::from_vec(idx, (scores.len(), n), &Device::Cpu)?]);
        }
        _ => return input_err(format!("unknown sampling transform `{name}`")),
    }
    Ok(vec![row_tensor(&out)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_infer_v2s_and_unknown_fields_refused() {
        let c = DecodeConfig::from_json("{}").unwrap();
        assert!(c.do_sample && c.num_beams == 3 && c.top_k == 30 && c.max_mel_tokens == 1500);
        assert!(DecodeConfig::from_json(r#"{"typical_p": 0.9}"#).is_err());
        assert!(DecodeConfig::from_json(r#"{"num_beams": 2, "num_return_sequences": 3}"#).is_err());
        let c = DecodeConfig::from_json(r#"{"early_stopping": "never"}"#).unwrap();
        assert_eq!(c.early_stopping, EarlyStopping::Never(Never::Never));
    }

    #[test]
    fn trim_as_infer_v2() {
        let (c, l) = infer_v2_trim(&[vec![3, 4, 9, 9]], 9);
        assert_eq!((c, l), (vec![vec![3, 4]], vec![2]));
        let (c, l) = infer_v2_trim(&[vec![3, 4, 5]], 9);
        assert_eq!((c, l), (vec![vec![3, 4, 5]], vec![3, 3]));
    }
}
