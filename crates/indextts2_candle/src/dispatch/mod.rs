//! The one table that maps a model kind to its Candle implementation: kind → load, kind → faults.
//! It sits above every model and the pipeline (nothing in the crate imports it back); the bindings
//! dispatch through here. Adding a kind = its file, its `impl Runnable` (in `models.rs` unless the model
//! file has its own; the pipeline's in `pipeline.rs`) and one row in `TABLE`.
mod models;
mod pipeline;

use crate::ctx::Faults;
use crate::error::{input_err, Error, Result};
use crate::ctx::Ctx;
use crate::runnable::{Named, Runnable};
use crate::store::Weights;
use candle_core::{DType, Tensor};
use std::collections::BTreeMap;

fn parse<T: serde::de::DeserializeOwned>(kind: &str, json: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|e| Error::Input(format!("invalid {kind} config: {e}")))
}

type Load = fn(&Weights, &str, Faults) -> Result<Box<dyn Runnable>>;

/// One row per kind: its name (the Python registry's), its fault switches, its loader.
struct Kind {
    name: &'static str,
    faults: fn() -> &'static [&'static str],
    load: Load,
}

macro_rules! kind {
    ($name:literal, $ty:ty, $faults:expr) => {
        Kind {
            name: $name,
            faults: || $faults,
            load: |w, json, f| Ok(Box::new(<$ty>::load(w, parse($name, json)?, f)?)),
        }
    };
}

const TABLE: [Kind; 11] = [
    kind!("bigvgan", crate::bigvgan::BigVgan, crate::bigvgan::FAULTS),
    kind!("dit", crate::dit::Dit, crate::dit::FAULTS),
    kind!("gpt", crate::gpt::UnifiedVoice, crate::sampling::with_decode_faults(crate::gpt::FAULTS)),
    kind!("length_regulator", crate::length_regulator::Regulator, crate::length_regulator::FAULTS),
    kind!("w2v_bert", crate::w2v_bert::W2vBert, crate::w2v_bert::FAULTS),
    kind!("semantic_codec", crate::semantic_codec::SemanticCodec, crate::semantic_codec::FAULTS),
    kind!("campplus", crate::campplus::CampPlus, crate::campplus::FAULTS),
    kind!("mel_spectrogram", crate::mel::MelSpectrogram, crate::mel::FAULTS),
    kind!("resample", crate::resample::Resampler, crate::resample::FAULTS),
    kind!("emotion", crate::emotion::EmotionMatrices, crate::emotion::FAULTS),
    Kind {
        name: "pipeline",
        faults: crate::pipeline::faults,
        load: |w, json, f| Ok(Box::new(crate::pipeline::Pipeline::load_with_faults(w, parse("pipeline", json)?, f)?)),
    },
];

/// The kinds ported to half precision (f16 / bf16; parity measured: `parity/tolerances.py`).
pub const HALF_KINDS: &[&str] = &["gpt", "dit", "bigvgan"];

/// Every kind, in the table's order.
pub const KINDS: &[&str] = &{
    let mut names = [""; TABLE.len()];
    let mut i = 0;
    while i < TABLE.len() {
        names[i] = TABLE[i].name;
        i += 1;
    }
    names
};

fn row(kind: &str) -> Option<&'static Kind> {
    TABLE.iter().find(|k| k.name == kind)
}

/// The fault switches a kind accepts (the pipeline's are `<kind>:<fault>` of its components).
pub fn faults(kind: &str) -> Result<&'static [&'static str]> {
    match row(kind) {
        Some(k) => Ok((k.faults)()),
        None => input_err(format!("unknown model kind `{kind}`; known: {KINDS:?}")),
    }
}

/// Builds a kind from its weights and JSON config; `fault_names` are checked against [`faults`].
/// The model runs in `w.dtype()`: its float inputs (f32 on the wire) are converted to it on entry.
pub fn load(kind: &str, w: &Weights, config_json: &str, fault_names: &[String]) -> Result<Box<dyn Runnable>> {
    let f = Faults::new(fault_names, faults(kind)?, kind)?;
    if w.dtype() != DType::F32 && !HALF_KINDS.contains(&kind) {
        let why = if kind == "pipeline" { " (the pipeline runs in float32; its config's `gpt_dtype` sets the GPT's)" } else { "" };
        return input_err(format!(
            "{kind} runs in float32 only{why}; {} is ported for {HALF_KINDS:?}",
            crate::store::dtype_name(w.dtype())
        ));
    }
    let m = match row(kind) {
        Some(k) => (k.load)(w, config_json, f)?,
        None => return input_err(format!("unknown model kind `{kind}`")),
    };
    Ok(match w.dtype() {
        DType::F32 => m,
        dtype => Box::new(AtDtype { inner: m, dtype }),
    })
}

/// A model loaded in another dtype than f32: float inputs are converted to it explicitly before
/// the model sees them (integer inputs and the outputs pass as they are; the bindings widen the
/// outputs back to f32, which is exact).
struct AtDtype {
    inner: Box<dyn Runnable>,
    dtype: DType,
}

impl Runnable for AtDtype {
    fn run(&self, method: &str, inputs: &BTreeMap<String, Tensor>, ctx: &mut Ctx) -> Result<Named> {
        let cast = inputs
            .iter()
            .map(|(k, t)| Ok((k.clone(), if t.dtype().is_float() { t.to_dtype(self.dtype)? } else { t.clone() })))
            .collect::<Result<BTreeMap<_, _>>>()?;
        self.inner.run(method, &cast, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pipeline's component table and this one name the same fault list for every kind.
    #[test]
    fn pipeline_components_agree_with_the_table() {
        for c in crate::pipeline::COMPONENTS {
            // the GPT kind adds the sampled decode's switches; the pipeline decodes greedily
            let extra: &[&str] = if c.kind == "gpt" { crate::sampling::FAULTS } else { &[] };
            let want: Vec<&str> = c.faults.iter().chain(extra).copied().collect();
            assert_eq!(faults(c.kind).unwrap(), want.as_slice(), "{}", c.kind);
        }
        assert!(faults("nope").is_err());
        assert_eq!(KINDS.len(), TABLE.len());
        assert_eq!(KINDS[0], "bigvgan");
        assert_eq!(KINDS[10], "pipeline");
    }
}
