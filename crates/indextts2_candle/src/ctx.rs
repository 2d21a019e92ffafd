//! Per-forward context: activation taps, input injection and the test-only fault switch.
//!
//! A tap name is the PyTorch module path of the block, which is also the checkpoint key prefix and
//! the report row. In *injected* mode the caller supplies the reference's input to a block and
//! the block runs on that instead of the upstream Candle value.
use crate::error::{input_err, Result};
use candle_core::Tensor;
use std::collections::{BTreeSet, HashMap};

/// The faults a model accepts, checked at construction so a typo can never be a silent no-op.
/// Test-only: without the crate's `faults` feature every switch is off at compile time (`on` is a
/// constant `false`, so the faulty branches are dead code the optimiser removes) and asking for one
/// is an error.
#[derive(Clone, Debug, Default)]
pub struct Faults(BTreeSet<String>);

impl Faults {
    pub fn new(names: &[String], known: &[&str], model: &str) -> Result<Faults> {
        if names.is_empty() {
            return Ok(Faults::default());
        }
        if !cfg!(feature = "faults") {
            return input_err(format!(
                "fault switches {names:?} for {model}: this build has no fault switches (they are test-only: build with the `faults` feature)"
            ));
        }
        for n in names {
            if !known.contains(&n.as_str()) {
                return input_err(format!("unknown fault `{n}` for {model}; known faults: {known:?}"));
            }
        }
        Ok(Faults(names.iter().cloned().collect()))
    }
    pub fn none() -> Faults {
        Faults::default()
    }
    #[inline(always)]
    pub fn on(&self, name: &str) -> bool {
        cfg!(feature = "faults") && self.0.contains(name)
    }
}

#[derive(Default)]
pub struct Ctx {
    record: bool,
    taps: Vec<(String, Tensor)>,
    inject: HashMap<String, Tensor>,
}

impl Ctx {
    pub fn new(record: bool, inject: HashMap<String, Tensor>) -> Ctx {
        Ctx { record, taps: Vec::new(), inject }
    }
    pub fn plain() -> Ctx {
        Ctx::default()
    }
    /// Whether taps are kept: lets a model skip building a tap that only a parity run reads.
    pub fn records(&self) -> bool {
        self.record
    }
    /// Neither records nor injects: a model may then fuse tapped leaves into one kernel.
    pub fn is_plain(&self) -> bool {
        !self.record && self.inject.is_empty()
    }
    pub fn tap(&mut self, name: &str, t: &Tensor) {
        if self.record {
            self.taps.push((name.to_string(), t.clone()));
        }
    }
    /// Runs one tapped block: its input is replaced by the injected tensor if one was given.
    pub fn block<F>(&mut self, name: &str, x: &Tensor, f: F) -> Result<Tensor>
    where
        F: FnOnce(&Tensor) -> Result<Tensor>,
    {
        let y = match self.injected(name, x)? {
            Some(inj) => f(&inj)?,
            None => f(x)?,
        };
        self.tap(name, &y);
        Ok(y)
    }
    /// A tapped block whose body taps its own children (they complete, and are recorded, first):
    /// `f` gets the context back with the (possibly injected) input.
    pub fn nest<F>(&mut self, name: &str, x: &Tensor, f: F) -> Result<Tensor>
    where
        F: FnOnce(&mut Ctx, &Tensor) -> Result<Tensor>,
    {
        let y = match self.injected(name, x)? {
            Some(inj) => f(self, &inj)?,
            None => f(self, x)?,
        };
        self.tap(name, &y);
        Ok(y)
    }
    /// The input of a parent block whose children are tapped too, for code that cannot run its
    /// children inside a closure: the injected tensor if one was given, else `x`. Tap its output
    /// with [`Ctx::tap`] after the children, so the order stays children before parents.
    pub fn input(&mut self, name: &str, x: &Tensor) -> Result<Tensor> {
        Ok(self.injected(name, x)?.unwrap_or_else(|| x.clone()))
    }
    fn injected(&mut self, name: &str, x: &Tensor) -> Result<Option<Tensor>> {
        if self.inject.is_empty() {
            return Ok(None);
        }
        match self.inject.remove(name) {
            Some(inj) => {
                if inj.dims() != x.dims() {
                    return input_err(format!(
                        "injected input for `{name}` has shape {:?}, the block expects {:?}",
                        inj.dims(),
                        x.dims()
                    ));
                }
                Ok(Some(inj.to_dtype(x.dtype())?.to_device(x.device())?))
            }
            None => Ok(None),
        }
    }
    /// Fails if an injected input named a block that the forward never ran.
    pub fn finish(self) -> Result<Vec<(String, Tensor)>> {
        if !self.inject.is_empty() {
            let mut names: Vec<_> = self.inject.keys().cloned().collect();
            names.sort();
            return input_err(format!("injected inputs name unknown taps: {names:?}"));
        }
        Ok(self.taps)
    }
}
