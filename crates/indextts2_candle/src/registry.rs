//! The one place that maps a model kind to its Candle implementation. Adding a model = its file,
//! one arm in `load`, one arm in `faults`. The bindings dispatch through here and never change.
use crate::ctx::{Ctx, Faults};
use crate::error::{input_err, Error, Result};
use crate::store::Weights;
use candle_core::Tensor;
use std::collections::BTreeMap;

pub type Named = Vec<(String, Tensor)>;

pub trait Runnable: Send + Sync {
    /// Runs one entry point (`forward`, `get_conditioning`, …) on named inputs; returns named outputs.
    fn run(&self, method: &str, inputs: &BTreeMap<String, Tensor>, ctx: &mut Ctx) -> Result<Named>;
}

/// Fetches a required input and rejects the call if inputs were passed that the method ignores.
pub fn take<'a>(inputs: &'a BTreeMap<String, Tensor>, method: &str, names: &[&str]) -> Result<Vec<&'a Tensor>> {
    for k in inputs.keys() {
        if !names.contains(&k.as_str()) {
            return input_err(format!("`{method}` takes inputs {names:?}; got unexpected `{k}`"));
        }
    }
    names
        .iter()
        .map(|n| inputs.get(*n).ok_or_else(|| Error::Input(format!("`{method}` needs input `{n}`"))))
        .collect()
}

/// Float inputs must arrive as float32 (token ids as int64): a clear error instead of a Candle dtype panic.
pub fn expect_float(t: &Tensor, name: &str) -> Result<()> {
    if t.dtype() != candle_core::DType::F32 {
        return input_err(format!("input `{name}` must be float32, got {:?}", t.dtype()));
    }
    Ok(())
}

fn parse<T: serde::de::DeserializeOwned>(kind: &str, json: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|e| Error::Input(format!("invalid {kind} config: {e}")))
}

pub fn faults(kind: &str) -> Result<&'static [&'static str]> {
    Ok(match kind {
        "bigvgan" => crate::bigvgan::FAULTS,
        "semantic_codec" => crate::semantic_codec::FAULTS,
        "campplus" => crate::campplus::FAULTS,
        "mel_spectrogram" => crate::mel::FAULTS,
        _ => return input_err(format!("unknown model kind `{kind}`; known: {KINDS:?}")),
    })
}

pub const KINDS: &[&str] = &["bigvgan", "semantic_codec", "campplus", "mel_spectrogram"];

pub fn load(kind: &str, w: &Weights, config_json: &str, fault_names: &[String]) -> Result<Box<dyn Runnable>> {
    let f = Faults::new(fault_names, faults(kind)?, kind)?;
    Ok(match kind {
        "bigvgan" => Box::new(crate::bigvgan::BigVgan::load(w, parse(kind, config_json)?, f)?),
        "semantic_codec" => Box::new(crate::semantic_codec::SemanticCodec::load(w, parse(kind, config_json)?, f)?),
        "campplus" => Box::new(crate::campplus::CampPlus::load(w, parse(kind, config_json)?, f)?),
        "mel_spectrogram" => Box::new(crate::mel::MelSpectrogram::load(w, parse(kind, config_json)?, f)?),
        _ => return input_err(format!("unknown model kind `{kind}`")),
    })
}

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
