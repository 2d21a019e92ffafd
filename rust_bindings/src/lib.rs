//! Thin PyO3 bindings: convert tensors (dtype, shape, bytes) and errors, nothing more.
//! All model logic lives in `indextts2_candle`; all comparison logic in the Python harness.
use candle_core::{DType, Device, Tensor};
use indextts2_candle::ctx::Ctx;
use indextts2_candle::dispatch;
use indextts2_candle::runnable::Runnable;
use indextts2_candle::store::{Store, Weights};
use indextts2_candle::text::{self, TextTokenizer};
use indextts2_candle::{transforms, Error};
use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;
use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

create_exception!(indextts_candle, CheckpointError, PyValueError, "Missing, mis-shaped, mis-typed or corrupt checkpoint content.");
create_exception!(indextts_candle, InputError, PyValueError, "Bad input: tensor shape, config, fault name, injected tap.");
create_exception!(indextts_candle, CandleError, PyRuntimeError, "A Candle operation failed.");
create_exception!(indextts_candle, InternalError, PyRuntimeError, "A Rust panic, caught before it reached Python (a bug).");

fn to_py(e: Error) -> PyErr {
    match e {
        Error::Checkpoint(m) => CheckpointError::new_err(m),
        Error::Input(m) => InputError::new_err(m),
        Error::Candle(c) => CandleError::new_err(c.to_string()),
    }
}

/// Runs `f` and turns both errors and panics into Python exceptions.
fn guarded<T>(f: impl FnOnce() -> indextts2_candle::Result<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(to_py),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(InternalError::new_err(format!("Rust panic: {msg}")))
        }
    }
}

fn device(name: &str) -> PyResult<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        d if d == "cuda" || d.starts_with("cuda:") => {
            let ordinal = d.strip_prefix("cuda:").map(|n| n.parse::<usize>()).transpose()
                .map_err(|_| InputError::new_err(format!("bad device `{d}`")))?
                .unwrap_or(0);
            if !candle_core::utils::cuda_is_available() {
                return Err(InputError::new_err("this build has no CUDA support (rebuild with the `cuda` feature)"));
            }
            Device::new_cuda(ordinal).map_err(|e| CandleError::new_err(e.to_string()))
        }
        d => Err(InputError::new_err(format!("unknown device `{d}` (cpu, cuda, cuda:N)"))),
    }
}

type Wire = (String, Vec<usize>, Vec<u8>);
/// Inputs borrow Python's bytes (no element-by-element extraction, no copy until the tensor).
type WireIn = (String, Vec<usize>, PyBackedBytes);

fn from_wire(t: WireIn, dev: &Device) -> indextts2_candle::Result<Tensor> {
    let (dtype, shape, bytes) = t;
    let bytes: &[u8] = &bytes;
    let n: usize = shape.iter().product();
    let (dt, size) = match dtype.as_str() {
        "float32" => (DType::F32, 4),
        "int64" => (DType::I64, 8),
        d => return Err(Error::Input(format!("unsupported input dtype `{d}` (float32, int64)"))),
    };
    if bytes.len() != n * size {
        return Err(Error::Input(format!("input of shape {shape:?} needs {} bytes, got {}", n * size, bytes.len())));
    }
    let t = match dt {
        DType::F32 => {
            let v: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            if v.iter().any(|x| !x.is_finite()) {
                return Err(Error::Input("input holds NaN or Inf".into()));
            }
            Tensor::from_vec(v, shape, dev)?
        }
        _ => {
            let v: Vec<i64> = bytes.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
            Tensor::from_vec(v, shape, dev)?
        }
    };
    Ok(t)
}

fn to_wire(t: &Tensor) -> indextts2_candle::Result<Wire> {
    let shape = t.dims().to_vec();
    let flat = t.flatten_all()?.to_device(&Device::Cpu)?;
    Ok(match t.dtype() {
        DType::I64 | DType::U32 | DType::U8 => {
            let v = flat.to_dtype(DType::I64)?.to_vec1::<i64>()?;
            ("int64".into(), shape, v.iter().flat_map(|x| x.to_le_bytes()).collect())
        }
        _ => {
            let v = flat.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            ("float32".into(), shape, v.iter().flat_map(|x| x.to_le_bytes()).collect())
        }
    })
}

fn wire_py(py: Python<'_>, named: Vec<(String, Wire)>) -> PyResult<Vec<(String, (String, Vec<usize>, Py<PyBytes>))>> {
    Ok(named.into_iter().map(|(n, (d, s, b))| (n, (d, s, PyBytes::new(py, &b).unbind()))).collect())
}

/// A Candle model loaded from a safetensors checkpoint through the strict store.
#[pyclass(module = "indextts_candle")]
struct Model {
    kind: String,
    store: Arc<Store>,
    model: Box<dyn Runnable>,
    device: Device,
}

#[pymethods]
impl Model {
    #[new]
    /// `dtype`: the precision the model runs in (float32; float16 / bfloat16 for gpt, dit, bigvgan); float
    /// weights are converted to it at load, float inputs on entry, outputs widened to float32.
    #[pyo3(signature = (kind, checkpoint, config_json, device="cpu", faults=None, prefix="", dtype="float32"))]
    #[allow(clippy::too_many_arguments)]
    fn new(py: Python<'_>, kind: &str, checkpoint: &str, config_json: &str, device: &str, faults: Option<Vec<String>>, prefix: &str, dtype: &str) -> PyResult<Self> {
        let dev = self::device(device)?;
        let dtype = guarded(|| indextts2_candle::store::parse_dtype(dtype))?;
        let faults = faults.unwrap_or_default();
        let (store, model) = py.allow_threads(|| {
            guarded(|| {
                let store = Store::open(checkpoint, &dev)?;
                let mut w = Weights::new(store.clone()).with_dtype(dtype)?;
                if !prefix.is_empty() {
                    w = w.pp(prefix);
                }
                let model = dispatch::load(kind, &w, config_json, &faults)?;
                Ok((store, model))
            })
        })?;
        Ok(Model { kind: kind.to_string(), store, model, device: dev })
    }

    /// Runs `method` on inputs `{name: (dtype, shape, bytes)}`; returns (outputs, taps) as lists of
    /// `(name, (dtype, shape, bytes))`, taps in forward order.
    #[pyo3(signature = (method, inputs, taps=false, inject=None))]
    fn run(&self, py: Python<'_>, method: &str, inputs: HashMap<String, WireIn>, taps: bool, inject: Option<HashMap<String, WireIn>>) -> PyResult<(Vec<(String, (String, Vec<usize>, Py<PyBytes>))>, Vec<(String, (String, Vec<usize>, Py<PyBytes>))>)> {
        let dev = self.device.clone();
        let (outs, tapped) = py.allow_threads(|| {
            guarded(|| {
                let inputs: BTreeMap<String, Tensor> =
                    inputs.into_iter().map(|(k, v)| Ok((k, from_wire(v, &dev)?))).collect::<indextts2_candle::Result<_>>()?;
                let inject: HashMap<String, Tensor> = inject
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| Ok((k, from_wire(v, &dev)?)))
                    .collect::<indextts2_candle::Result<_>>()?;
                let mut ctx = Ctx::new(taps, inject);
                let outs = self.model.run(method, &inputs, &mut ctx)?;
                let tapped = ctx.finish()?;
                let outs = outs.iter().map(|(n, t)| Ok((n.clone(), to_wire(t)?))).collect::<indextts2_candle::Result<Vec<_>>>()?;
                let tapped = tapped.iter().map(|(n, t)| Ok((n.clone(), to_wire(t)?))).collect::<indextts2_candle::Result<Vec<_>>>()?;
                Ok((outs, tapped))
            })
        })?;
        Ok((wire_py(py, outs)?, wire_py(py, tapped)?))
    }

    /// Keys the model read, with the dtype each had in the file.
    fn requested_keys(&self) -> BTreeMap<String, String> {
        self.store.requested_keys()
    }
    /// Every key in the file: `{key: (dtype, shape)}`.
    fn file_keys(&self) -> BTreeMap<String, (String, Vec<usize>)> {
        self.store.file_keys()
    }
    fn unused_keys(&self) -> Vec<String> {
        self.store.unused_keys()
    }
    #[getter]
    fn kind(&self) -> String {
        self.kind.clone()
    }
    #[getter]
    fn checkpoint(&self) -> String {
        self.store.path().to_string()
    }
}

/// The IndexTTS2 text tokenizer over an official-format SentencePiece `bpe.model`.
#[pyclass(module = "indextts_candle")]
struct Tokenizer {
    inner: TextTokenizer,
    path: String,
}

#[pymethods]
impl Tokenizer {
    #[new]
    fn new(path: &str) -> PyResult<Self> {
        Ok(Tokenizer { inner: guarded(|| TextTokenizer::load(path))?, path: path.to_string() })
    }
    /// Token ids of already-normalized text.
    fn encode(&self, text: &str) -> PyResult<Vec<u32>> {
        guarded(|| self.inner.encode(text))
    }
    /// Piece strings of already-normalized text.
    fn tokenize(&self, text: &str) -> PyResult<Vec<String>> {
        guarded(|| self.inner.tokenize(text))
    }
    /// Token ids per segment (the official `split_segments` + `convert_tokens_to_ids`).
    #[pyo3(signature = (text, max_tokens=text::DEFAULT_MAX_SEGMENT_TOKENS))]
    fn segments(&self, text: &str, max_tokens: usize) -> PyResult<Vec<Vec<u32>>> {
        guarded(|| self.inner.segments(text, max_tokens))
    }
    /// The official `split_segments` on given piece strings.
    #[staticmethod]
    #[pyo3(signature = (pieces, max_tokens=text::DEFAULT_MAX_SEGMENT_TOKENS))]
    fn split_segments(pieces: Vec<String>, max_tokens: usize) -> PyResult<Vec<Vec<String>>> {
        guarded(|| text::split_segments(&pieces, max_tokens))
    }
    /// SentencePiece's normalized form of `text` (what the BPE model sees).
    fn normalize(&self, text: &str) -> PyResult<String> {
        guarded(|| self.inner.sentencepiece().normalize(text))
    }
    fn piece_to_id(&self, piece: &str) -> u32 {
        self.inner.piece_to_id(piece)
    }
    fn id_to_piece(&self, id: u32) -> PyResult<String> {
        guarded(|| self.inner.id_to_piece(id).map(str::to_string))
    }
    fn piece_size(&self) -> usize {
        self.inner.piece_size()
    }
    #[getter]
    fn path(&self) -> String {
        self.path.clone()
    }
}

/// Opens a safetensors file with the strict store and returns `{key: (dtype, shape)}`.
#[pyfunction]
fn inspect_checkpoint(path: &str) -> PyResult<BTreeMap<String, (String, Vec<usize>)>> {
    guarded(|| Ok(Store::open(path, &Device::Cpu)?.file_keys()))
}

/// Fault names a model kind accepts.
#[pyfunction]
fn faults(kind: &str) -> PyResult<Vec<String>> {
    guarded(|| Ok(dispatch::faults(kind)?.iter().map(|s| s.to_string()).collect()))
}

#[pyfunction]
fn kinds() -> Vec<String> {
    dispatch::KINDS.iter().map(|s| s.to_string()).collect()
}

#[pyfunction]
fn cuda_available() -> bool {
    candle_core::utils::cuda_is_available()
}

/// Load-time transforms, exposed so tests can check them against PyTorch-made values.
#[pyfunction]
#[pyo3(signature = (name, tensors, sizes=None, dim=0, logscale=true))]
fn transform(py: Python<'_>, name: &str, tensors: Vec<WireIn>, sizes: Option<Vec<usize>>, dim: usize, logscale: bool) -> PyResult<Vec<(String, (String, Vec<usize>, Py<PyBytes>))>> {
    let out = guarded(|| {
        let ts = tensors.into_iter().map(|t| from_wire(t, &Device::Cpu)).collect::<indextts2_candle::Result<Vec<_>>>()?;
        let arg = |i: usize| ts.get(i).ok_or_else(|| Error::Input(format!("`{name}` needs {} tensors", i + 1)));
        let res: Vec<Tensor> = match name {
            "weight_norm_fold" => vec![transforms::weight_norm_fold(arg(0)?, arg(1)?)?],
            "conv1d_to_linear" => vec![transforms::conv1d_to_linear(arg(0)?)?],
            "split_fused" => transforms::split_fused(arg(0)?, dim, &sizes.clone().unwrap_or_default())?,
            "snake_param" => vec![transforms::snake_param(arg(0)?, logscale)?],
            n if n.starts_with("sampling.") => indextts2_candle::sampling::transform(&n["sampling.".len()..], &ts)?,
            _ => return Err(Error::Input(format!("unknown transform `{name}`"))),
        };
        res.iter().enumerate().map(|(i, t)| Ok((i.to_string(), to_wire(t)?))).collect::<indextts2_candle::Result<Vec<_>>>()
    })?;
    wire_py(py, out)
}

#[pymodule]
fn indextts_candle(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Model>()?;
    m.add_class::<Tokenizer>()?;
    m.add_function(wrap_pyfunction!(inspect_checkpoint, m)?)?;
    m.add_function(wrap_pyfunction!(faults, m)?)?;
    m.add_function(wrap_pyfunction!(kinds, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_available, m)?)?;
    m.add_function(wrap_pyfunction!(transform, m)?)?;
    m.add("CheckpointError", py.get_type::<CheckpointError>())?;
    m.add("InputError", py.get_type::<InputError>())?;
    m.add("CandleError", py.get_type::<CandleError>())?;
    m.add("InternalError", py.get_type::<InternalError>())?;
    Ok(())
}
