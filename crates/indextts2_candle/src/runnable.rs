//! The low layer every runnable kind shares: the [`Runnable`] trait (one entry point by name, named
//! tensors in and out, as the bindings carry them) and the input checks every adapter uses.
//! It depends on nothing but [`crate::ctx`] and [`crate::error`], so models, the pipeline and the
//! dispatch table above them can all use it without importing each other.
use crate::ctx::Ctx;
use crate::error::{input_err, Error, Result};
use candle_core::Tensor;
use std::collections::BTreeMap;

/// Named outputs, in the order the kind produces them.
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

/// Float inputs must arrive as float32 on the wire (token ids as int64; a model loaded in another
/// dtype sees them converted to it): a clear error instead of a Candle dtype panic.
pub fn expect_float(t: &Tensor, name: &str) -> Result<()> {
    if !t.dtype().is_float() {
        return input_err(format!("input `{name}` must be float32, got {:?}", t.dtype()));
    }
    Ok(())
}
