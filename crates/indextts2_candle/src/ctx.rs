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
    /// `INDEXTTS2_PROFILE_BLOCKS=1`: wall time per leaf block, layer numbers folded (`convnext.#.act`),
    /// printed to stderr when the context is dropped (a developer's per-layer time breakdown).
    profile: Option<HashMap<String, (f64, usize)>>,
}

fn profiling() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("INDEXTTS2_PROFILE_BLOCKS").is_ok_and(|v| v == "1"))
}

impl Drop for Ctx {
    fn drop(&mut self) {
        let Some(p) = self.profile.take() else { return };
        let mut rows: Vec<_> = p.into_iter().collect();
        rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
        let total: f64 = rows.iter().map(|r| r.1 .0).sum();
        let mut out = format!("block profile: {:.1} ms in leaf blocks\n", total * 1e3);
        for (name, (s, n)) in rows.iter().take(25) {
            out += &format!("  {:8.2} ms {:5.1} %  ×{n:<4} {name}\n", s * 1e3, 100.0 * s / total.max(1e-12));
        }
        eprint!("{out}");
    }
}

impl Ctx {
    pub fn new(record: bool, inject: HashMap<String, Tensor>) -> Ctx {
        Ctx { record, taps: Vec::new(), inject, profile: profiling().then(HashMap::new) }
    }
    pub fn plain() -> Ctx {
        Ctx::new(false, HashMap::new())
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
        let t0 = self.profile.as_ref().map(|_| std::time::Instant::now());
        let y = match self.injected(name, x)? {
            Some(inj) => f(&inj)?,
            None => f(x)?,
        };
        if let (Some(t0), Some(p)) = (t0, self.profile.as_mut()) {
            let key: String = name.chars().map(|c| if c.is_ascii_digit() { '#' } else { c }).collect();
            let e = p.entry(key.replace("##", "#").replace("##", "#")).or_default();
            e.0 += t0.elapsed().as_secs_f64();
            e.1 += 1;
        }
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
    pub fn finish(mut self) -> Result<Vec<(String, Tensor)>> {
        if !self.inject.is_empty() {
            let mut names: Vec<_> = self.inject.keys().cloned().collect();
            names.sort();
            return input_err(format!("injected inputs name unknown taps: {names:?}"));
        }
        Ok(std::mem::take(&mut self.taps))
    }
}
