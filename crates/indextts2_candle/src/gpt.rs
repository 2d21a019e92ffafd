//! IndexTTS2 GPT "UnifiedVoice v2" (official `indextts/gpt/model_v2.py`).
//!
//! Conditioning: Conformer → Perceiver (speaker, 32 latents) and Conformer → Perceiver (emotion,
//! 1 latent) → `emovec_layer` → `emo_layer`. Decoder: GPT-2 blocks without internal positions
//! (`wpe` is a zero function officially), Conv1D weights transposed at load, `c_attn` split into
//! q/k/v, `final_norm` + `mel_head`. Decoding uses a KV cache and reproduces the official position
//! quirk: the start token is at mel position 0 and the k-th generated token (k ≥ 1) at k + 1.
use crate::ctx::{Ctx, Faults};
use crate::error::{input_err, Result};
use crate::gpt_conformer::ConformerEncoder;
use crate::gpt_perceiver::Perceiver;
use crate::nn::{LayerNorm, Linear};
use crate::store::Weights;
use candle_core::{DType, Device, Tensor, D};

#[path = "gpt_decode.rs"]
pub mod decode;

pub use crate::gpt_config::GptConfig;
pub use decode::{decode_inputs, Decoded};

pub const FAULTS: &[&str] = &[
    "c_attn_untransposed",     // Conv1D [in,out] memory reinterpreted as [out,in] (reshape, not transpose)
    "to_kv_swapped",           // perceiver to_kv halves used as V‖K
    "final_norm_skipped",      // latent / logits taken before final_norm
    "pos_bias_v_dropped",      // conformer positional term without pos_bias_v
    "geglu_swapped",           // GEGLU gate taken from the first half
    "after_norm_skipped",      // conformer output without after_norm
    "gelu_erf",                // GPT-2 MLP with exact erf GELU instead of gelu_new (tanh)
    "gpt2_ln_eps",             // GPT-2 LayerNorms (ln_1, ln_2, ln_f) with BERT's eps 1e-12 instead of 1e-5
    "conv_norm_eps",           // Conformer conv_module.norm with upstream WeNet's eps 1e-12 instead of 1e-5
    "conformer_scale_d_model", // conformer attention scores / √d_model instead of / √d_k
    "perceiver_scale_dim",     // perceiver attention scale dim^-0.5 (model width) instead of dim_head^-0.5
    "ff_swish_beta",           // conformer feed-forward Swish-β (β = 1.702) instead of SiLU
];

/// GPT-2's LayerNorm eps (`layer_norm_epsilon`) and the `gpt2_ln_eps` fault's value.
const GPT2_LN_EPS: f64 = 1e-5;
const GPT2_LN_EPS_FAULT: f64 = 1e-12;

/// GPT-2 `Conv1D` loaded as a Linear: `[in, out]` → `[out, in]`.
fn conv1d(w: &Weights, inp: usize, out: usize, reinterpret: bool) -> Result<Linear> {
    // Conv1D stores [in, out]; a Linear wants [out, in] (the fault reads the memory as is)
    let weight = if reinterpret { w.get((inp, out), "weight")?.reshape((out, inp))? } else { w.get_t(inp, out, "weight")? };
    Ok(Linear::from_tensors(weight, Some(w.get(out, "bias")?)))
}

#[derive(Default, Clone)]
pub struct LayerCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
}

struct Block {
    ln_1: LayerNorm,
    c_attn: Linear, // fused q‖k‖v
    c_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    mlp_proj: Linear,
    heads: usize,
    gelu_erf: bool,
}

impl Block {
    fn load(w: &Weights, d: usize, heads: usize, faults: &Faults) -> Result<Self> {
        let eps = if faults.on("gpt2_ln_eps") { GPT2_LN_EPS_FAULT } else { GPT2_LN_EPS };
        Ok(Block {
            ln_1: LayerNorm::load(&w.pp("ln_1"), d, eps)?,
            c_attn: conv1d(&w.pp("attn.c_attn"), d, 3 * d, faults.on("c_attn_untransposed"))?,
            c_proj: conv1d(&w.pp("attn.c_proj"), d, d, false)?,
            ln_2: LayerNorm::load(&w.pp("ln_2"), d, eps)?,
            c_fc: conv1d(&w.pp("mlp.c_fc"), d, 4 * d, false)?,
            mlp_proj: conv1d(&w.pp("mlp.c_proj"), 4 * d, d, false)?,
            heads,
            gelu_erf: faults.on("gelu_erf"),
        })
    }

    /// Eager causal attention, heads split / merged inside (tap `attn.attention_interface`, input q).
    fn attention(&self, q: &Tensor, k: &Tensor, v: &Tensor, cache: Option<&mut LayerCache>) -> Result<Tensor> {
        let (b, t, d) = q.dims3()?;
        let hd = d / self.heads;
        let split = |z: &Tensor| -> Result<Tensor> { Ok(z.reshape((b, t, self.heads, hd))?.transpose(1, 2)?.contiguous()?) };
        let (q, mut k, mut v) = (split(q)?, split(k)?, split(v)?);
        if let Some(c) = cache {
            if let (Some(pk), Some(pv)) = (&c.k, &c.v) {
                k = Tensor::cat(&[pk, &k], 2)?;
                v = Tensor::cat(&[pv, &v], 2)?;
            }
            c.k = Some(k.clone());
            c.v = Some(v.clone());
        }
        let tk = k.dim(2)?;
        let mut w = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
        if t > 1 {
            // Query i (absolute tk - t + i) sees keys j ≤ tk - t + i.
            let past = tk - t;
            let keep: Vec<u8> = (0..t).flat_map(|i| (0..tk).map(move |j| u8::from(j <= past + i))).collect();
            let keep = Tensor::from_vec(keep, (1, 1, t, tk), q.device())?;
            w = crate::gpt_conformer::fill_masked(&w, &keep, f32::MIN)?;
        }
        let a = crate::nn::softmax_last_dim(&w)?.matmul(&v)?;
        Ok(a.transpose(1, 2)?.reshape((b, t, d))?)
    }

    /// x [B, T, d]; with a cache the T new positions follow the cached ones. `n` = `gpt.h.{i}`.
    fn forward(&self, x: &Tensor, cache: Option<&mut LayerCache>, ctx: &mut Ctx, n: &str) -> Result<Tensor> {
        let d = x.dim(2)?;
        let h = ctx.block(&format!("{n}.ln_1"), x, |x| self.ln_1.forward(x))?;
        let qkv = ctx.block(&format!("{n}.attn.c_attn"), &h, |h| self.c_attn.forward(h))?;
        let (k, v) = (qkv.narrow(2, d, d)?, qkv.narrow(2, 2 * d, d)?);
        let a = ctx.block(&format!("{n}.attn.attention_interface"), &qkv.narrow(2, 0, d)?, |q| self.attention(q, &k, &v, cache))?;
        let a = ctx.block(&format!("{n}.attn.c_proj"), &a, |a| self.c_proj.forward(a))?;
        let x = (x + a)?;
        let h = ctx.block(&format!("{n}.ln_2"), &x, |x| self.ln_2.forward(x))?;
        let h = ctx.block(&format!("{n}.mlp.c_fc"), &h, |h| self.c_fc.forward(h))?;
        let h = ctx.block(&format!("{n}.mlp.act"), &h, |h| Ok(if self.gelu_erf { crate::vact::gelu_erf(h)? } else { crate::vact::gelu_tanh(h)? }))?; // gelu_new (tanh)
        let m = ctx.block(&format!("{n}.mlp.c_proj"), &h, |h| self.mlp_proj.forward(h))?;
        Ok((x + m)?)
    }
}

pub struct UnifiedVoice {
    cfg: GptConfig,
    cond_enc: ConformerEncoder,
    perceiver: Perceiver,
    emo_enc: ConformerEncoder,
    emo_perceiver: Perceiver,
    text_embedding: Tensor,
    emo_layer: Linear,
    emovec_layer: Linear,
    mel_embedding: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    mel_pos: Tensor,
    text_pos: Tensor,
    final_norm: LayerNorm,
    mel_head: Linear,
    speed_emb: Tensor,
    skip_final_norm: bool,
    decode_faults: crate::sampling::DecodeFaults,
}

fn ids(t: &Tensor, what: &str, rank: usize) -> Result<(Vec<usize>, Vec<i64>)> {
    if t.dtype() != DType::I64 || t.rank() != rank {
        return input_err(format!("`{what}` must be an int64 tensor of rank {rank}, got {:?} {:?}", t.dtype(), t.dims()));
    }
    Ok((t.dims().to_vec(), t.flatten_all()?.to_vec1::<i64>()?))
}

fn check_range(v: &[i64], n: usize, what: &str) -> Result<()> {
    if let Some(bad) = v.iter().find(|&&x| x < 0 || x as usize >= n) {
        return input_err(format!("`{what}` holds {bad}, outside [0, {n})"));
    }
    Ok(())
}

/// `table[ids]` for int64 ids of any shape → [..., D]; out-of-range ids are an input error.
fn lookup(table: &Tensor, ids: &Tensor, what: &str) -> Result<Tensor> {
    let v = ids.flatten_all()?.to_vec1::<i64>()?;
    check_range(&v, table.dim(0)?, what)?;
    let idx: Vec<u32> = v.iter().map(|&i| i as u32).collect();
    let n = idx.len();
    let rows = table.index_select(&Tensor::from_vec(idx, n, ids.device())?, 0)?;
    let mut shape = ids.dims().to_vec();
    shape.push(table.dim(1)?);
    Ok(rows.reshape(shape)?)
}

impl UnifiedVoice {
    pub fn load(w: &Weights, cfg: GptConfig, faults: Faults) -> Result<Self> {
        cfg.check()?;
        let d = cfg.model_dim;
        let (cm, em) = (&cfg.condition_module, &cfg.emo_condition_module);
        let cond_enc = ConformerEncoder::load(&w.pp("conditioning_encoder"), cfg.cond_input_size, cm, cfg.cnn_module_kernel, cfg.pos_enc_max_len, &faults)?;
        let perceiver = Perceiver::load(&w.pp("perceiver_encoder"), d, cfg.perceiver_depth, cm.output_size, cfg.condition_num_latent, cfg.perceiver_dim_head, cm.attention_heads, cm.perceiver_mult, &faults)?;
        let emo_enc = ConformerEncoder::load(&w.pp("emo_conditioning_encoder"), cfg.cond_input_size, em, cfg.cnn_module_kernel, cfg.pos_enc_max_len, &faults)?;
        let emo_perceiver = Perceiver::load(&w.pp("emo_perceiver_encoder"), cfg.emo_dim, cfg.perceiver_depth, em.output_size, 1, cfg.perceiver_dim_head, em.attention_heads, em.perceiver_mult, &faults)?;
        let n_text = cfg.number_text_tokens * cfg.types + 1;
        let blocks = (0..cfg.layers)
            .map(|i| Block::load(&w.pp(format!("gpt.h.{i}")), d, cfg.heads, &faults))
            .collect::<Result<Vec<_>>>()?;
        Ok(UnifiedVoice {
            text_embedding: w.pp("text_embedding").get((n_text, d), "weight")?,
            emo_layer: Linear::load(&w.pp("emo_layer"), d, d, true)?,
            emovec_layer: Linear::load(&w.pp("emovec_layer"), cfg.emo_dim, d, true)?,
            mel_embedding: w.pp("mel_embedding").get((cfg.number_mel_codes, d), "weight")?,
            blocks,
            ln_f: LayerNorm::load(&w.pp("gpt.ln_f"), d, 1e-5)?,
            mel_pos: w.pp("mel_pos_embedding.emb").get((cfg.max_mel_tokens + 2 + cfg.max_conditioning_inputs, d), "weight")?,
            text_pos: w.pp("text_pos_embedding.emb").get((cfg.max_text_tokens + 2, d), "weight")?,
            final_norm: LayerNorm::load(&w.pp("final_norm"), d, 1e-5)?,
            mel_head: Linear::load(&w.pp("mel_head"), d, cfg.number_mel_codes, true)?,
            speed_emb: w.pp("speed_emb").get((2, d), "weight")?,
            skip_final_norm: faults.on("final_norm_skipped"),
            decode_faults: crate::sampling::DecodeFaults::from(&faults),
            cond_enc,
            perceiver,
            emo_enc,
            emo_perceiver,
            cfg,
        })
    }

    fn features(&self, x: &Tensor, lens: &Tensor) -> Result<(Tensor, Vec<i64>)> {
        let (b, c, _) = x.dims3().or_else(|_| input_err(format!("features must be [B, {}, T], got {:?}", self.cfg.cond_input_size, x.dims())))?;
        let (ld, l) = ids(lens, "lens", 1)?;
        if b == 0 || c != self.cfg.cond_input_size || ld[0] != b || !x.dtype().is_float() {
            return input_err(format!("features [B, {}, T] float32 with B lengths expected; got {:?} and {:?}", self.cfg.cond_input_size, x.dims(), ld));
        }
        Ok((x.transpose(1, 2)?.contiguous()?, l))
    }

    /// `get_conditioning`: x `[B, 1024, T]`, lens `[B]` → `[B, 32, D]`.
    pub fn spk_cond(&self, x: &Tensor, lens: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let (xs, l) = self.features(x, lens)?;
        let (h, keep) = self.cond_enc.forward(&xs, &l, ctx)?;
        self.perceiver.forward(&h, &keep, ctx)
    }

    /// The speaker / emotion Conformer alone → (out [B, T', d], subsampled mask [B, T'] int64).
    pub fn conformer(&self, emo: bool, x: &Tensor, lens: &Tensor, ctx: &mut Ctx) -> Result<(Tensor, Tensor)> {
        let (xs, l) = self.features(x, lens)?;
        let enc = if emo { &self.emo_enc } else { &self.cond_enc };
        let (h, keep) = enc.forward(&xs, &l, ctx)?;
        Ok((h, keep.to_dtype(DType::I64)?))
    }

    /// The speaker / emotion Perceiver alone: context [B, T, d_ctx], mask [B, T] int64 (1 = valid).
    pub fn perceiver(&self, emo: bool, context: &Tensor, mask: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let (md, mv) = ids(mask, "mask", 2)?;
        let (cfgm, p) = if emo { (&self.cfg.emo_condition_module, &self.emo_perceiver) } else { (&self.cfg.condition_module, &self.perceiver) };
        if context.rank() != 3 || context.dims()[0] == 0 || !context.dtype().is_float() || context.dim(2)? != cfgm.output_size || md != context.dims()[..2] {
            return input_err(format!("context [B, T, {}] float32 and mask [B, T] expected; got {:?} and {md:?}", cfgm.output_size, context.dims()));
        }
        let keep: Vec<u8> = mv.iter().map(|&v| u8::from(v != 0)).collect();
        let keep = Tensor::from_vec(keep, (md[0], md[1]), context.device())?;
        p.forward(context, &keep, ctx)
    }

    /// `get_emo_conditioning` → [B, emo_dim].
    pub fn emo_cond(&self, x: &Tensor, lens: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let (xs, l) = self.features(x, lens)?;
        let (h, keep) = self.emo_enc.forward(&xs, &l, ctx)?;
        Ok(self.emo_perceiver.forward(&h, &keep, ctx)?.squeeze(1)?)
    }

    /// `get_emovec` = emo_layer(emovec_layer(emo_cond)) → [B, D]. Like the official method it
    /// takes channels-last features x [B, T, 1024] (w2v-bert output as is).
    pub fn emovec(&self, x: &Tensor, lens: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        if x.rank() != 3 || x.dim(2)? != self.cfg.cond_input_size {
            return input_err(format!("emovec features must be [B, T, {}] (channels last), got {:?}", self.cfg.cond_input_size, x.dims()));
        }
        let e = self.emo_cond(&x.transpose(1, 2)?, lens, ctx)?;
        let e = ctx.block("emovec_layer", &e, |e| self.emovec_layer.forward(e))?;
        ctx.block("emo_layer", &e, |e| self.emo_layer.forward(e))
    }

    /// `merge_emovec`: base + α·(emo − base); taps follow the emotion pass only.
    pub fn merge_emovec(&self, spk_x: &Tensor, spk_lens: &Tensor, emo_x: &Tensor, emo_lens: &Tensor, alpha: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let a = alpha.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>().ok().filter(|v| v.len() == 1);
        let Some(a) = a else { return input_err("`alpha` must be one float32 value") };
        let emo = self.emovec(emo_x, emo_lens, ctx)?;
        let base = self.emovec(spk_x, spk_lens, &mut Ctx::plain())?;
        if emo.dims() != base.dims() {
            return input_err("speaker and emotion features must have the same batch size");
        }
        ctx.block("merge_emovec", &emo, |emo| Ok((&base + ((emo - &base)? * a[0] as f64)?)?))
    }

    fn check_cond(&self, spk_latent: &Tensor, emovec: &Tensor) -> Result<usize> {
        let d = self.cfg.model_dim;
        let n = self.cfg.condition_num_latent;
        let ok = spk_latent.rank() == 3
            && spk_latent.dim(0)? > 0
            && spk_latent.dim(1)? == n
            && spk_latent.dim(2)? == d
            && emovec.dims() == [spk_latent.dim(0)?, d]
            && spk_latent.dtype().is_float()
            && emovec.dtype() == spk_latent.dtype();
        if !ok {
            return input_err(format!("spk_latent [B, {n}, {d}] and emovec [B, {d}] float32 expected; got {:?} and {:?}", spk_latent.dims(), emovec.dims()));
        }
        Ok(spk_latent.dim(0)?)
    }

    /// `conds` = [spk_latent + emovec, speed_emb(1), speed_emb(0)] → [B, N+2, D].
    fn conds(&self, spk_latent: &Tensor, emovec: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let b = spk_latent.dim(0)?;
        let dev = spk_latent.device();
        let sid = Tensor::from_vec([1i64, 0].repeat(b), (b, 2), dev)?;
        let speed = ctx.block("speed_emb", &sid, |i| lookup(&self.speed_emb, i, "speed id"))?;
        ctx.block("conds", spk_latent, |s| Ok(Tensor::cat(&[&s.broadcast_add(&emovec.unsqueeze(1)?)?, &speed], 1)?))
    }

    /// `text_emb` = text_embedding(ids) + text positions 0..L-1; ids [B, L] already framed.
    fn text_emb(&self, ids: &[i64], b: usize, ctx: &mut Ctx, dev: &Device) -> Result<Tensor> {
        let l = ids.len() / b.max(1);
        if l > self.text_pos.dim(0)? {
            return input_err(format!("text of {l} tokens exceeds the position table ({})", self.text_pos.dim(0)?));
        }
        let ids = Tensor::from_vec(ids.to_vec(), (b, l), dev)?;
        let tok = ctx.block("text_embedding", &ids, |i| lookup(&self.text_embedding, i, "text"))?;
        let pos = Tensor::arange(0i64, l as i64, dev)?;
        let pos = ctx.block("text_pos_embedding.emb", &pos, |p| lookup(&self.text_pos, p, "text position"))?;
        ctx.block("text_emb", &tok, |t| Ok(t.broadcast_add(&pos)?))
    }

    /// `mel_emb` = mel_embedding(tokens) + mel_pos_embedding(positions); tokens [B, K].
    fn mel_emb(&self, toks: &[i64], b: usize, positions: &[i64], ctx: &mut Ctx, dev: &Device) -> Result<Tensor> {
        let toks = Tensor::from_vec(toks.to_vec(), (b, positions.len()), dev)?;
        let tok = ctx.block("mel_embedding", &toks, |i| lookup(&self.mel_embedding, i, "codes"))?;
        let pos = Tensor::from_vec(positions.to_vec(), positions.len(), dev)?;
        let pos = ctx.block("mel_pos_embedding.emb", &pos, |p| lookup(&self.mel_pos, p, "mel position (sequence too long)"))?;
        ctx.block("mel_emb", &tok, |t| Ok(t.broadcast_add(&pos)?))
    }

    /// `get_logits`: GPT-2 over `emb` = cat(conds, text_emb, mel_emb) (taps `gpt.h.N.*`, `gpt.ln_f`),
    /// then `final_norm` over the positions after the conds.
    fn lm(&self, conds: &Tensor, rest: &[&Tensor], ctx: &mut Ctx) -> Result<Tensor> {
        let x = ctx.block("emb", conds, |c| {
            let mut all = vec![c];
            all.extend_from_slice(rest);
            Ok(Tensor::cat(&all, 1)?)
        })?;
        let x = self.stack(&x, None, ctx)?;
        let off = conds.dim(1)?;
        let enc = x.narrow(1, off, x.dim(1)? - off)?;
        self.final_norm(&enc, ctx)
    }

    /// The GPT-2 blocks and `ln_f`; with caches (decoding) nothing is tapped.
    fn stack(&self, x: &Tensor, caches: Option<&mut [LayerCache]>, ctx: &mut Ctx) -> Result<Tensor> {
        let mut x = x.clone();
        match caches {
            Some(cs) => {
                let mut plain = Ctx::plain();
                for (i, (blk, c)) in self.blocks.iter().zip(cs.iter_mut()).enumerate() {
                    x = blk.forward(&x, Some(c), &mut plain, &format!("gpt.h.{i}"))?;
                }
                self.ln_f.forward(&x)
            }
            None => {
                for (i, blk) in self.blocks.iter().enumerate() {
                    let n = format!("gpt.h.{i}");
                    // the block tap holds both residual adds (its children's inputs are injected)
                    x = ctx.nest(&n, &x, |c, x| blk.forward(x, None, c, &n))?;
                }
                ctx.block("gpt.ln_f", &x, |x| self.ln_f.forward(x))
            }
        }
    }

    fn final_norm(&self, enc: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        ctx.block("final_norm", enc, |e| if self.skip_final_norm { Ok(e.clone()) } else { self.final_norm.forward(e) })
    }

    /// Teacher-forced `UnifiedVoice.forward(..., emo_vec=emovec)` → latent [B, M, D].
    #[allow(clippy::too_many_arguments)]
    pub fn forward_latent(&self, spk_latent: &Tensor, text: &Tensor, text_lens: &Tensor, codes: &Tensor, code_lens: &Tensor, emovec: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let b = self.check_cond(spk_latent, emovec)?;
        let c = &self.cfg;
        let dev = spk_latent.device();
        let (td, tv) = ids(text, "text", 2)?;
        let (md, mv) = ids(codes, "codes", 2)?;
        let (_, tl) = ids(text_lens, "text_lens", 1)?;
        let (_, ml) = ids(code_lens, "code_lens", 1)?;
        if td[0] != b || md[0] != b || tl.len() != b || ml.len() != b {
            return input_err(format!("batch mismatch: text {td:?}, codes {md:?}, lens {} / {}, latent batch {b}", tl.len(), ml.len()));
        }
        let (lt, lm) = (td[1] + 2, md[1] + 2);
        if lt > self.text_pos.dim(0)? || lm > self.mel_pos.dim(0)? {
            return input_err(format!("text of {} / codes of {} tokens exceed the position tables", td[1], md[1]));
        }
        // [start, tokens (padding → stop), stop] per row, as set_*_padding + F.pad do.
        let frame = |v: &[i64], len: usize, lens: &[i64], start: i64, stop: i64| -> Vec<i64> {
            (0..b)
                .flat_map(|r| {
                    let row = &v[r * len..(r + 1) * len];
                    std::iter::once(start)
                        .chain(row.iter().enumerate().map(move |(j, &x)| if (j as i64) < lens[r] { x } else { stop }))
                        .chain(std::iter::once(stop))
                })
                .collect()
        };
        let tt = frame(&tv, td[1], &tl, c.start_text_token, c.stop_text_token);
        let mt = frame(&mv, md[1], &ml, c.start_mel_token, c.stop_mel_token);
        let conds = self.conds(spk_latent, emovec, ctx)?;
        let text_emb = self.text_emb(&tt, b, ctx, dev)?;
        let positions: Vec<i64> = (0..lm as i64).collect();
        let mel_emb = self.mel_emb(&mt, b, &positions, ctx, dev)?;
        let enc = self.lm(&conds, &[&text_emb, &mel_emb], ctx)?;
        Ok(enc.narrow(1, lt, lm - 2)?)
    }

    /// (conds, text_emb) of `prepare_gpt_inputs`: text = start, ids without start/stop, stop; B = 1.
    fn prefix(&self, spk_latent: &Tensor, emovec: &Tensor, text: &Tensor, ctx: &mut Ctx) -> Result<(Tensor, Tensor)> {
        let b = self.check_cond(spk_latent, emovec)?;
        let (td, tv) = ids(text, "text", 2)?;
        if b != 1 || td[0] != 1 {
            return input_err(format!("decoding supports batch 1 only; got latent batch {b}, text {td:?}"));
        }
        let c = &self.cfg;
        let mut t = vec![c.start_text_token];
        t.extend(tv.iter().copied().filter(|&x| x != c.start_text_token && x != c.stop_text_token));
        t.push(c.stop_text_token);
        let dev = spk_latent.device();
        let conds = self.conds(spk_latent, emovec, ctx)?;
        Ok((conds, self.text_emb(&t, 1, ctx, dev)?))
    }

    /// Positions of mel tokens fed at decode steps `step0..`: step 0 → position 0, step s → s + 1.
    fn mel_positions(step0: usize, n: usize) -> Vec<i64> {
        (step0..step0 + n).map(|s| if s == 0 { 0 } else { s as i64 + 1 }).collect()
    }

    /// Logits of every decode step when `codes` [1, K] are fed after the start token → [1, K+1, V].
    /// `cached`: prefix once, then one token per step through the KV cache (no taps);
    /// otherwise one causal pass over the whole sequence (taps as in `forward_latent`, + `mel_head`).
    pub fn step_logits(&self, spk_latent: &Tensor, emovec: &Tensor, text: &Tensor, codes: &Tensor, cached: bool, ctx: &mut Ctx) -> Result<Tensor> {
        let (cd, cv) = ids(codes, "codes", 2)?;
        if cd[0] != 1 {
            return input_err("decoding supports batch 1 only");
        }
        let mut toks = vec![self.cfg.start_mel_token];
        toks.extend(cv);
        let dev = spk_latent.device().clone();
        if !cached {
            let (conds, text_emb) = self.prefix(spk_latent, emovec, text, ctx)?;
            let mel_emb = self.mel_emb(&toks, 1, &Self::mel_positions(0, toks.len()), ctx, &dev)?;
            let enc = self.lm(&conds, &[&text_emb, &mel_emb], ctx)?; // final_norm over text + mel positions
            let enc = enc.narrow(1, enc.dim(1)? - toks.len(), toks.len())?;
            return ctx.block("mel_head", &enc, |e| self.mel_head.forward(e));
        }
        let mut plain = Ctx::plain();
        let (conds, text_emb) = self.prefix(spk_latent, emovec, text, &mut plain)?;
        let mut caches = vec![LayerCache::default(); self.blocks.len()];
        let mut outs = Vec::with_capacity(toks.len());
        for (s, &tok) in toks.iter().enumerate() {
            let mel = self.mel_emb(&[tok], 1, &Self::mel_positions(s, 1), &mut plain, &dev)?;
            let x = if s == 0 { Tensor::cat(&[&conds, &text_emb, &mel], 1)? } else { mel };
            let h = self.stack(&x, Some(&mut caches), &mut plain)?;
            let last = self.final_norm(&h.narrow(1, h.dim(1)? - 1, 1)?, &mut plain)?;
            outs.push(self.mel_head.forward(&last)?);
        }
        Ok(Tensor::cat(&outs, 1)?)
    }

    /// Greedy decoding with the KV cache → codes [1, N] (stop token excluded), N ≤ max_tokens.
    pub fn greedy(&self, spk_latent: &Tensor, emovec: &Tensor, text: &Tensor, max_tokens: &Tensor) -> Result<Tensor> {
        let (_, mt) = ids(max_tokens, "max_tokens", 1)?;
        let max = match mt.as_slice() {
            [m] if *m >= 0 => *m as usize,
            _ => return input_err("`max_tokens` must be one non-negative int64"),
        };
        // The last token fed sits at mel position max_tokens (positions skip 1, see `mel_positions`).
        if max >= self.mel_pos.dim(0)? {
            return input_err(format!("max_tokens {max} needs mel position {max}, beyond the position table ({})", self.mel_pos.dim(0)?));
        }
        let mut plain = Ctx::plain();
        let (conds, text_emb) = self.prefix(spk_latent, emovec, text, &mut plain)?;
        let dev = conds.device().clone();
        let mut caches = vec![LayerCache::default(); self.blocks.len()];
        let start = self.mel_emb(&[self.cfg.start_mel_token], 1, &Self::mel_positions(0, 1), &mut plain, &dev)?;
        let mut x = Tensor::cat(&[&conds, &text_emb, &start], 1)?;
        let mut out: Vec<i64> = Vec::new();
        for step in 0..max {
            let h = self.stack(&x, Some(&mut caches), &mut plain)?;
            let last = self.final_norm(&h.narrow(1, h.dim(1)? - 1, 1)?, &mut plain)?;
            let tok = self.mel_head.forward(&last)?.flatten_all()?.argmax(D::Minus1)?.to_scalar::<u32>()? as i64;
            if tok == self.cfg.stop_mel_token {
                break;
            }
            out.push(tok);
            x = self.mel_emb(&[tok], 1, &Self::mel_positions(step + 1, 1), &mut plain, &dev)?;
        }
        let n = out.len();
        Ok(Tensor::from_vec(out, (1, n), &dev)?)
    }
}
