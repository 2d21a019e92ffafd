//! The GPT as a [`Decoder`] for the official decode loop (`crate::sampling`): the prefix once,
//! then one token per beam row through the KV cache, reordered to the chosen beams. A child
//! module of `gpt` (declared there), so it reads the model's private parts.
use super::{ids, LayerCache, UnifiedVoice};
use crate::ctx::Ctx;
use crate::error::{input_err, Result};
use crate::registry::Named;
use crate::sampling::{self, rng::Draws, DecodeConfig, Decoder};
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;

/// `_reorder_cache`: every layer's K and V rows `index_select`ed to `idx`.
pub fn reorder_kv_cache(caches: &mut [LayerCache], idx: &[usize], dev: &Device) -> Result<()> {
    let n = idx.len();
    let i = Tensor::from_vec(idx.iter().map(|&x| x as u32).collect::<Vec<_>>(), n, dev)?;
    for c in caches.iter_mut() {
        if let (Some(k), Some(v)) = (&c.k, &c.v) {
            c.k = Some(k.index_select(&i, 0)?);
            c.v = Some(v.index_select(&i, 0)?);
        }
    }
    Ok(())
}

pub struct GptDecoder<'a> {
    m: &'a UnifiedVoice,
    prefix: Tensor,
    caches: Vec<LayerCache>,
    /// called with the decode step (≥ 1) before each step's forward: progress for the CLI
    on_step: Option<&'a mut dyn FnMut(usize)>,
}

impl<'a> GptDecoder<'a> {
    pub fn new(m: &'a UnifiedVoice, spk_latent: &Tensor, emovec: &Tensor, text: &Tensor) -> Result<Self> {
        let (conds, text_emb) = m.prefix(spk_latent, emovec, text, &mut Ctx::plain())?;
        let prefix = Tensor::cat(&[&conds, &text_emb], 1)?;
        Ok(GptDecoder { m, prefix, caches: vec![LayerCache::default(); m.blocks.len()], on_step: None })
    }
    /// Length of `generate`'s input ids: conditioning + text + the start token.
    pub fn prompt_len(&self) -> Result<usize> {
        Ok(self.prefix.dim(1)? + 1)
    }
    /// GPT-2 over `x` through the caches, then `final_norm` and `mel_head` at the last position.
    fn run(&mut self, x: &Tensor) -> Result<Vec<Vec<f32>>> {
        let mut plain = Ctx::plain();
        let h = self.m.stack(x, Some(&mut self.caches), &mut plain)?;
        let last = self.m.final_norm(&h.narrow(1, h.dim(1)? - 1, 1)?, &mut plain)?;
        Ok(self.m.mel_head.forward(&last)?.squeeze(1)?.to_dtype(DType::F32)?.to_vec2::<f32>()?)
    }
}

impl Decoder for GptDecoder<'_> {
    fn vocab(&self) -> usize {
        self.m.cfg.number_mel_codes
    }
    fn start(&mut self, n: usize) -> Result<Vec<Vec<f32>>> {
        let dev = self.prefix.device().clone();
        let start = self.m.mel_emb(&[self.m.cfg.start_mel_token], 1, &UnifiedVoice::mel_positions(0, 1), &mut Ctx::plain(), &dev)?;
        let x = Tensor::cat(&[&self.prefix, &start], 1)?;
        let row = self.run(&x)?.swap_remove(0);
        // Every beam row holds the same prefix: run it once, copy the cache rows.
        reorder_kv_cache(&mut self.caches, &vec![0; n], &dev)?;
        Ok(vec![row; n])
    }
    fn step(&mut self, tokens: &[i64], step: usize) -> Result<Vec<Vec<f32>>> {
        if let Some(f) = self.on_step.as_mut() {
            f(step);
        }
        let dev = self.prefix.device().clone();
        // one token per beam row, at the position greedy decoding feeds step `step` (≥ 1) at
        let x = self.m.mel_emb(tokens, tokens.len(), &UnifiedVoice::mel_positions(step, 1), &mut Ctx::plain(), &dev)?;
        self.run(&x)
    }
    fn reorder(&mut self, idx: &[usize]) -> Result<()> {
        let dev = self.prefix.device().clone();
        reorder_kv_cache(&mut self.caches, idx, &dev)
    }
}

fn flat_i64(t: &Tensor) -> Result<Vec<i64>> {
    if t.dtype() != DType::I64 {
        return input_err(format!("expected int64, got {:?}", t.dtype()));
    }
    Ok(t.flatten_all()?.to_vec1::<i64>()?)
}

/// The decoding options (`options_key`: UTF-8 JSON bytes in an int64 tensor; absent = the official
/// defaults) and the draws (`draws`: f32 Exp(1) draws, or `seed`: torch's CPU stream) of a
/// tensor-wire call.
pub fn decode_inputs(inputs: &BTreeMap<String, Tensor>, options_key: &str) -> Result<(DecodeConfig, Draws)> {
    let opts: Vec<u8> = match inputs.get(options_key) {
        Some(t) => flat_i64(t)?.iter().map(|&b| b as u8).collect(),
        None => b"{}".to_vec(),
    };
    let cfg = DecodeConfig::from_json(&String::from_utf8_lossy(&opts))?;
    let draws = match (inputs.get("draws"), inputs.get("seed")) {
        (Some(q), None) => Draws::given(q.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?),
        (None, Some(s)) => match flat_i64(s)?.as_slice() {
            [s] if *s >= 0 => Draws::seeded(*s as u64),
            _ => return input_err("`seed` must be one non-negative int64"),
        },
        (None, None) if !cfg.do_sample => Draws::given(Vec::new()),
        _ => return input_err("give exactly one of `draws` and `seed` when sampling"),
    };
    Ok((cfg, draws))
}

/// One decode as infer_v2 runs it: `generate`'s sequences, then infer_v2's trimming.
pub struct Decoded {
    /// rows as `generate` returns them (after the prompt), stop token and padding included
    pub sequences: Vec<Vec<i64>>,
    /// infer_v2's codes: every row cut at the last row's code length
    pub codes: Vec<Vec<i64>>,
    /// infer_v2's `code_lens` (a row without a stop token gives its length twice)
    pub code_lens: Vec<i64>,
    pub trace: sampling::beam::Trace,
}

impl UnifiedVoice {
    /// `inference_speech` with decoding options `cfg` (infer_v2's by default), the draws from
    /// `draws`, then infer_v2's trimming. `forced[s]` replaces step s's candidates (the parity
    /// walk's near-tie rule); `record` keeps the per-step trace; `on_step` sees each step.
    #[allow(clippy::too_many_arguments)]
    pub fn decode<'a>(&'a self, spk_latent: &Tensor, emovec: &Tensor, text: &Tensor, cfg: &DecodeConfig, draws: &mut Draws,
                      forced: &[Vec<i64>], record: bool, on_step: Option<&'a mut dyn FnMut(usize)>) -> Result<Decoded> {
        if cfg.max_mel_tokens >= self.mel_pos.dim(0)? {
            return input_err(format!("max_mel_tokens {} needs mel position {}, beyond the position table ({})", cfg.max_mel_tokens, cfg.max_mel_tokens, self.mel_pos.dim(0)?));
        }
        let mut dec = GptDecoder::new(self, spk_latent, emovec, text)?;
        dec.on_step = on_step;
        // generate's input ids: ones, the last one the start token (the penalty sees them all).
        let mut prompt = vec![1i64; dec.prompt_len()?];
        *prompt.last_mut().expect("non-empty prompt") = self.cfg.start_mel_token;
        let out = sampling::generate(&mut dec, &prompt, cfg, self.cfg.stop_mel_token, draws, self.decode_faults, forced, record)?;
        let (codes, code_lens) = sampling::infer_v2_trim(&out.sequences, self.cfg.stop_mel_token);
        Ok(Decoded { sequences: out.sequences, codes, code_lens, trace: out.trace })
    }

    /// `inference_speech(..., do_sample, num_beams, …)` as infer_v2 calls it, then infer_v2's
    /// trimming. Inputs: spk_latent, emovec, text; `options` (decoding options as UTF-8 JSON
    /// bytes in an int64 tensor; `{}` = the official defaults); `draws` (f32, the Exp(1) draws of
    /// all steps, beams·V per step) or `seed` (torch's CPU stream); optional `forced` [S, C]
    /// (candidates replacing the first S steps') and `trace` (any value: return the per-step record).
    pub fn run_generate(&self, inputs: &BTreeMap<String, Tensor>) -> Result<Named> {
        const KNOWN: &[&str] = &["spk_latent", "emovec", "text", "options", "draws", "seed", "forced", "trace"];
        if let Some(k) = inputs.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return input_err(format!("`generate_sampled` takes inputs {KNOWN:?}; got unexpected `{k}`"));
        }
        let get = |n: &str| inputs.get(n).ok_or_else(|| crate::Error::Input(format!("`generate_sampled` needs input `{n}`")));
        let (cfg, mut draws) = decode_inputs(inputs, "options")?;
        let forced: Vec<Vec<i64>> = match inputs.get("forced") {
            Some(f) => {
                let (d, v) = ids(f, "forced", 2)?;
                v.chunks(d[1].max(1)).take(d[0]).map(|c| c.to_vec()).collect()
            }
            None => Vec::new(),
        };
        let d = self.decode(get("spk_latent")?, get("emovec")?, get("text")?, &cfg, &mut draws, &forced, inputs.contains_key("trace"), None)?;
        let dev = Device::Cpu;
        let mat = |r: &[Vec<i64>]| -> Result<Tensor> {
            let w = r.first().map_or(0, |x| x.len());
            Ok(Tensor::from_vec(r.concat(), (r.len(), w), &dev)?)
        };
        let Decoded { sequences, codes, code_lens: lens, trace: t } = d;
        let nl = lens.len();
        let mut named: Named = vec![
            ("sequences".into(), mat(&sequences)?),
            ("codes".into(), mat(&codes)?),
            ("code_lens".into(), Tensor::from_vec(lens, nl, &dev)?),
            ("steps".into(), Tensor::from_vec(vec![t.steps as i64], 1, &dev)?),
        ];
        if let Some(u) = draws.used() {
            named.push(("draws_used".into(), Tensor::from_vec(vec![u as i64], 1, &dev)?));
        }
        if inputs.contains_key("trace") {
            let (s, b, c, v) = (t.steps, t.rows, t.cands, self.cfg.number_mel_codes);
            named.push(("logits".into(), Tensor::from_vec(t.logits.clone(), (s, b, v), &dev)?));
            named.push(("scores".into(), Tensor::from_vec(t.scores.clone(), (s, b, v), &dev)?));
            named.push(("cand".into(), Tensor::from_vec(t.cand.clone(), (s, c), &dev)?));
            named.push(("cand_scores".into(), Tensor::from_vec(t.cand_scores.clone(), (s, c), &dev)?));
            named.push(("beam_tokens".into(), Tensor::from_vec(t.beam_tokens.clone(), (s, b), &dev)?));
            named.push(("beam_idx".into(), Tensor::from_vec(t.beam_idx.clone(), (s, b), &dev)?));
            named.push(("beam_scores".into(), Tensor::from_vec(t.beam_scores.clone(), (s, b), &dev)?));
            named.push(("hyps".into(), Tensor::from_vec(t.hyps.clone(), s, &dev)?));
            named.push(("hyp_worst".into(), Tensor::from_vec(t.hyp_worst.clone(), s, &dev)?));
        }
        Ok(named)
    }
}
