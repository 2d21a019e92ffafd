//! s2mel CFM: the DiT estimator (gpt_fast transformer with AdaLN and U-ViT skips, WaveNet post-net)
//! and the Euler solver with classifier-free guidance (`s2mel/modules/{flow_matching,
//! diffusion_transformer}.py`, `gpt_fast/model.py`).
//!
//! Loaded with prefix `net.cfm`; weights and taps are `estimator.…`. Leaf taps: see
//! [`Dit::forward`], [`transformer`], [`crate::wavenet`] and [`Dit::solve_euler`].
pub mod transformer;

use crate::ctx::{Ctx, Faults};
use crate::error::{input_err, Result};
use crate::nn::{layer_norm, widen, Conv1d, Linear};
use crate::store::Weights;
use crate::transforms::load_weight_norm;
use crate::wavenet::WaveNet;
use candle_core::{DType, Tensor};
use serde::Deserialize;
use transformer::{AdaLn, Block, BlockSpec, Rope};

/// `content_type` (read by the official DiT, then ignored: content always goes through
/// `cond_projection`), so both values compute the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ContentType {
    #[default]
    Discrete,
    Continuous,
}

/// `final_layer_type`: the WaveNet post-net (IndexTTS2) or a plain MLP head (refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FinalLayerType {
    #[default]
    Wavenet,
    Mlp,
}

/// `dit_type`: the official CFM builds only "DiT".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum DitType {
    #[default]
    #[serde(rename = "DiT")]
    Dit,
}

/// `reg_loss_type`: the training criterion; no effect on inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RegLossType {
    #[default]
    L1,
    L2,
}

/// The official `args` of CFM/DiT (config.yaml `s2mel.DiT`, `s2mel.wavenet`, `style_encoder.dim`)
/// flattened, plus gpt_fast's constants and the solver's CFG rate. `Default` = the official values.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DitConfig {
    pub hidden_dim: usize,
    pub num_heads: usize,
    pub depth: usize,
    pub in_channels: usize,
    pub content_dim: usize,
    /// `style_encoder.dim`.
    pub style_dim: usize,
    /// Rows of the never-called `cond_embedder` (only its stored shape).
    pub content_codebook_size: usize,
    pub content_type: ContentType,
    /// Accepted and ignored, as the official DiT does (`ModelArgs(block_size=16384)`, `input_pos`
    /// of 16384): config.yaml's 8192 and any other value compute the same.
    pub block_size: usize,
    /// Causal attention (gpt_fast's causal mask) instead of the key-padding mask.
    pub is_causal: bool,
    pub long_skip_connection: bool,
    /// CFM: zero `mu[..., :prompt_len]` before solving (officially the first prompt_len channels).
    pub zero_prompt_speech_token: bool,
    pub time_as_token: bool,
    pub style_as_token: bool,
    pub uvit_skip_connection: bool,
    pub style_condition: bool,
    pub final_layer_type: FinalLayerType,
    /// Training-only content dropout (inference never drops).
    pub class_dropout_prob: f64,
    pub dit_type: DitType,
    pub reg_loss_type: RegLossType,
    /// gpt_fast ModelArgs constants.
    pub rope_base: f64,
    pub norm_eps: f64,
    /// TimestepEmbedder `frequency_embedding_size`.
    pub freq_dim: usize,
    pub wavenet_hidden_dim: usize,
    pub wavenet_num_layers: usize,
    pub wavenet_kernel_size: usize,
    pub wavenet_dilation_rate: usize,
    /// Dropout: no effect at inference.
    pub wavenet_p_dropout: f64,
    /// Must equal `style_condition` (the official constructor asserts it).
    pub wavenet_style_condition: bool,
    /// CFG strength of the solver (infer_v2 hard-codes 0.7).
    pub cfg_rate: f64,
}

impl Default for DitConfig {
    fn default() -> DitConfig {
        DitConfig {
            hidden_dim: 512,
            num_heads: 8,
            depth: 13,
            in_channels: 80,
            content_dim: 512,
            style_dim: 192,
            content_codebook_size: 1024,
            content_type: ContentType::Discrete,
            block_size: 8192,
            is_causal: false,
            long_skip_connection: true,
            zero_prompt_speech_token: false,
            time_as_token: false,
            style_as_token: false,
            uvit_skip_connection: true,
            style_condition: true,
            final_layer_type: FinalLayerType::Wavenet,
            class_dropout_prob: 0.1,
            dit_type: DitType::Dit,
            reg_loss_type: RegLossType::L1,
            rope_base: 10000.0,
            norm_eps: 1e-5,
            freq_dim: 256,
            wavenet_hidden_dim: 512,
            wavenet_num_layers: 8,
            wavenet_kernel_size: 5,
            wavenet_dilation_rate: 1,
            wavenet_p_dropout: 0.2,
            wavenet_style_condition: true,
            cfg_rate: 0.7,
        }
    }
}

impl DitConfig {
    /// Refuses what is not implemented, naming the field, its value and what is supported.
    fn check(&self) -> Result<()> {
        let refuse = |field: &str, value: &dyn std::fmt::Debug, supported: &str| {
            input_err(format!("DiT config: `{field}` = {value:?} is not supported (supported: {supported})"))
        };
        if self.time_as_token {
            return refuse("time_as_token", &true, "false");
        }
        if self.style_as_token {
            return refuse("style_as_token", &true, "false");
        }
        if self.final_layer_type != FinalLayerType::Wavenet {
            return refuse("final_layer_type", &"mlp", "\"wavenet\"");
        }
        if self.wavenet_style_condition != self.style_condition {
            return refuse("wavenet_style_condition", &self.wavenet_style_condition, "the value of `style_condition` (the official constructor asserts equality)");
        }
        if self.num_heads == 0 || !self.hidden_dim.is_multiple_of(self.num_heads) || !(self.hidden_dim / self.num_heads).is_multiple_of(2) {
            return input_err(format!("DiT config: hidden_dim {} must split into {} heads of even size", self.hidden_dim, self.num_heads));
        }
        if self.depth == 0 || self.wavenet_num_layers == 0 || self.wavenet_kernel_size.is_multiple_of(2) || !self.freq_dim.is_multiple_of(2) {
            return input_err("DiT config: needs depth ≥ 1, wavenet layers ≥ 1, an odd wavenet kernel and an even freq_dim");
        }
        if self.wavenet_hidden_dim != self.hidden_dim {
            return input_err("DiT config: the final layer is modulated by the DiT timestep embedding, so wavenet_hidden_dim must equal hidden_dim");
        }
        Ok(())
    }
}

/// The official DiT's `input_pos` (= RoPE table) length, whatever `block_size` says.
pub const INPUT_POS: usize = 16384;

pub const FAULTS: &[&str] = &[
    "adaln_swapped",      // AdaLN uses (bias, scale) instead of (scale, bias)
    "final_no_plus_one",  // FinalLayer modulates with scale instead of (1 + scale)
    "wqkv_split_order",   // fused wqkv split as (v, k, q)
    "rope_halves",        // RoPE rotates (i, i + D/2) halves instead of interleaved pairs
    "uvit_skip_shifted",  // U-ViT pushes each emitting layer's input, i.e. skips shifted by one layer
    "wavenet_zero_pad",   // SConv1d zero padding instead of reflect
    "skip_weight_norm",   // weight_v used as the weight: weight norm not folded
    "final_ln_eps",       // FinalLayer LayerNorm eps 1e-5 (the nn.LayerNorm default) instead of 1e-6
    "rope_base",          // RoPE base 1e6 (CodeLlama's) instead of 1e4
    "softmax_scale_dim",  // attention scores scaled by 1/√dim instead of 1/√head_dim
    "ffn_swish_beta",     // FFN gate x·σ(1.702x) (Swish-β) instead of SiLU x·σ(x)
];

struct TimestepEmbedder {
    freqs: Tensor, // [freq_dim/2]
    mlp0: Linear,
    mlp2: Linear,
}

impl TimestepEmbedder {
    fn load(w: &Weights, hidden: usize, freq_dim: usize) -> Result<TimestepEmbedder> {
        Ok(TimestepEmbedder {
            freqs: w.get(freq_dim / 2, "freqs")?,
            mlp0: Linear::load(&w.pp("mlp.0"), freq_dim, hidden, true)?,
            mlp2: Linear::load(&w.pp("mlp.2"), hidden, hidden, true)?,
        })
    }
    /// t `[B]` → `[B, hidden]`. Taps `{p}.timestep_embedding` (cat(cos, sin) of 1000·t·freqs),
    /// `{p}.mlp.0`, `{p}.mlp.1` (SiLU), `{p}.mlp.2`.
    fn forward(&self, t: &Tensor, ctx: &mut Ctx, p: &str) -> Result<Tensor> {
        let emb = ctx.block(&format!("{p}.timestep_embedding"), t, |t| {
            // f32 math (gpt_fast's `t.float()`), then the MLP's dtype (a no-op in f32 / f64)
            let args = widen(t)?.affine(1000.0, 0.0)?.unsqueeze(1)?.broadcast_mul(&widen(&self.freqs)?.unsqueeze(0)?)?;
            Ok(Tensor::cat(&[args.cos()?, args.sin()?], 1)?.to_dtype(self.mlp0.w.dtype())?)
        })?;
        let h = ctx.block(&format!("{p}.mlp.0"), &emb, |e| self.mlp0.forward(e))?;
        let h = ctx.block(&format!("{p}.mlp.1"), &h, |h| Ok(crate::vact::silu(h)?))?;
        ctx.block(&format!("{p}.mlp.2"), &h, |h| self.mlp2.forward(h))
    }
}

struct FinalLayer {
    linear: Linear,
    ada: Linear,
    hidden: usize,
    eps: f64,
    no_plus_one: bool,
}

impl FinalLayer {
    /// x `[B, T, H]`, c `[B, H]`: LayerNorm(x)·(1 + scale) + shift, then the weight-normed linear.
    /// Taps `{p}.adaLN_modulation.{0,1}`, `{p}.norm_final`, `{p}.modulate`, `{p}.linear`.
    fn forward(&self, x: &Tensor, c: &Tensor, ctx: &mut Ctx, p: &str) -> Result<Tensor> {
        let m = ctx.block(&format!("{p}.adaLN_modulation.0"), c, |c| Ok(crate::vact::silu(c)?))?;
        let m = ctx.block(&format!("{p}.adaLN_modulation.1"), &m, |m| self.ada.forward(m))?;
        let shift = m.narrow(1, 0, self.hidden)?.unsqueeze(1)?;
        let scale = m.narrow(1, self.hidden, self.hidden)?.unsqueeze(1)?;
        let n = ctx.block(&format!("{p}.norm_final"), x, |x| layer_norm(x, None, None, self.eps))?;
        let y = ctx.block(&format!("{p}.modulate"), &n, |n| {
            let scale = if self.no_plus_one { scale.clone() } else { (&scale + 1.0)? };
            Ok(n.broadcast_mul(&scale)?.broadcast_add(&shift)?)
        })?;
        ctx.block(&format!("{p}.linear"), &y, |y| self.linear.forward(y))
    }
}

pub struct Dit {
    cfg: DitConfig,
    layers: Vec<Block>,
    norm: AdaLn,
    input_pos: Vec<i64>,
    cond_projection: Linear,
    t_embedder: TimestepEmbedder,
    t_embedder2: TimestepEmbedder,
    cond_x_merge_linear: Linear,
    skip_linear: Linear,
    conv1: Linear,
    res_projection: Linear,
    wavenet: WaveNet,
    final_layer: FinalLayer,
    conv2: Conv1d,
    faults: Faults,
}

impl Dit {
    pub fn load(w: &Weights, cfg: DitConfig, faults: Faults) -> Result<Dit> {
        cfg.check()?;
        let (d, c, wn) = (cfg.hidden_dim, cfg.in_channels, cfg.wavenet_hidden_dim);
        let w = &w.pp("estimator");
        let tr = w.pp("transformer");
        let spec = BlockSpec { dim: d, n_head: cfg.num_heads, eps: cfg.norm_eps, uvit: cfg.uvit_skip_connection };
        let layers = (0..cfg.depth).map(|i| Block::load(&tr.pp(format!("layers.{i}")), &spec, &faults)).collect::<Result<Vec<_>>>()?;
        let norm = AdaLn::load(&tr.pp("norm"), d, cfg.norm_eps, faults.on("adaln_swapped"))?;
        let input_pos = w.get_int(INPUT_POS, "input_pos")?.to_dtype(DType::I64)?.to_vec1::<i64>()?;
        let skip = faults.on("skip_weight_norm");
        let fl = w.pp("final_layer");
        let final_layer = FinalLayer {
            linear: Linear::from_tensors(load_weight_norm(&fl.pp("linear"), (wn, wn), skip)?, Some(fl.pp("linear").get(wn, "bias")?)),
            ada: Linear::load(&fl.pp("adaLN_modulation.1"), wn, 2 * wn, true)?,
            hidden: wn,
            eps: if faults.on("final_ln_eps") { 1e-5 } else { 1e-6 },
            no_plus_one: faults.on("final_no_plus_one"),
        };
        let style_in = if cfg.style_condition { cfg.style_dim } else { 0 };
        Ok(Dit {
            layers,
            norm,
            input_pos,
            cond_projection: Linear::load(&w.pp("cond_projection"), cfg.content_dim, d, true)?,
            t_embedder: TimestepEmbedder::load(&w.pp("t_embedder"), d, cfg.freq_dim)?,
            t_embedder2: TimestepEmbedder::load(&w.pp("t_embedder2"), wn, cfg.freq_dim)?,
            cond_x_merge_linear: Linear::load(&w.pp("cond_x_merge_linear"), d + 2 * c + style_in, d, true)?,
            // stored (and read) whether or not long_skip_connection uses it
            skip_linear: Linear::load(&w.pp("skip_linear"), d + c, d, true)?,
            conv1: Linear::load(&w.pp("conv1"), d, wn, true)?,
            res_projection: Linear::load(&w.pp("res_projection"), d, wn, true)?,
            wavenet: WaveNet::load(&w.pp("wavenet"), wn, cfg.wavenet_kernel_size, cfg.wavenet_dilation_rate, cfg.wavenet_num_layers, skip, faults.on("wavenet_zero_pad"))?,
            final_layer,
            conv2: Conv1d::load(&w.pp("conv2"), (c, wn, 1), true, 0, 1, 1)?,
            cfg,
            faults,
        })
    }

    pub fn config(&self) -> &DitConfig {
        &self.cfg
    }

    /// Validates the estimator inputs; returns (B, T).
    fn check(&self, x: &Tensor, prompt_x: &Tensor, x_lens: &[i64], t: &Tensor, style: &Tensor, cond: &Tensor) -> Result<(usize, usize)> {
        let c = self.cfg.in_channels;
        let (b, xc, tt) = x.dims3().or_else(|_| input_err(format!("DiT x must be [B, {c}, T], got {:?}", x.dims())))?;
        if xc != c || tt == 0 || b == 0 {
            return input_err(format!("DiT x must be [B, {c}, T>0], got {:?}", x.dims()));
        }
        if tt > self.input_pos.len() {
            return input_err(format!("DiT supports at most {} frames (the official input_pos length), got {tt}", self.input_pos.len()));
        }
        if prompt_x.dims() != x.dims() {
            return input_err(format!("prompt_x must have the shape of x {:?}, got {:?}", x.dims(), prompt_x.dims()));
        }
        if t.dims() != [b] {
            return input_err(format!("t must be [B={b}], got {:?}", t.dims()));
        }
        if style.dims() != [b, self.cfg.style_dim] {
            return input_err(format!("style must be [{b}, {}], got {:?}", self.cfg.style_dim, style.dims()));
        }
        if cond.dims() != [b, tt, self.cfg.content_dim] {
            return input_err(format!("cond must be [{b}, {tt}, {}], got {:?}", self.cfg.content_dim, cond.dims()));
        }
        if (x_lens.len() != b && x_lens.len() != 1) || x_lens.iter().any(|&l| l < 1 || l as usize > tt) || x_lens.iter().max().map(|&m| m as usize) != Some(tt) {
            return input_err(format!("x_lens must hold B or 1 lengths in 1..={tt} with max {tt}, got {x_lens:?}"));
        }
        Ok((b, tt))
    }

    /// The estimator: x, prompt_x `[B, C, T]`, x_lens (B or 1 lengths), t `[B]`, style `[B, S]`,
    /// cond `[B, T, content]` → velocity `[B, C, T]`. Taps (module paths under `estimator`):
    /// t_embedder.…, cond_projection, x_in (the channel concat), cond_x_merge_linear, transformer.…,
    /// skip_linear, conv1, t_embedder2.…, wavenet.…, res_projection (+ the WaveNet output: the long
    /// residual), final_layer.…, conv2.
    #[allow(clippy::too_many_arguments)] // the official estimator signature
    pub fn forward(&self, x: &Tensor, prompt_x: &Tensor, x_lens: &[i64], t: &Tensor, style: &Tensor, cond: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let (b, tt) = self.check(x, prompt_x, x_lens, t, style, cond)?;
        let p = "estimator";
        let dev = x.device();
        let te = format!("{p}.t_embedder");
        let t1 = ctx.nest(&te, t, |ctx, t| self.t_embedder.forward(t, ctx, &te))?;
        let cond = ctx.block(&format!("{p}.cond_projection"), cond, |c| self.cond_projection.forward(c))?;
        let xt = x.transpose(1, 2)?;
        let px = prompt_x.transpose(1, 2)?;
        let x_in = ctx.block(&format!("{p}.x_in"), &cond, |c| {
            if self.cfg.style_condition {
                let st = style.unsqueeze(1)?.broadcast_as((b, tt, self.cfg.style_dim))?;
                Ok(Tensor::cat(&[&xt, &px, c, &st], 2)?)
            } else {
                Ok(Tensor::cat(&[&xt, &px, c], 2)?)
            }
        })?;
        let x_in = ctx.block(&format!("{p}.cond_x_merge_linear"), &x_in, |x| self.cond_x_merge_linear.forward(x))?;

        // Key mask from x_lens: 0 or -inf per (batch row, key), absent when every frame is valid;
        // causal: gpt_fast's lower-triangular mask, padding unmasked (as officially).
        let valid: Vec<f32> = x_lens.iter().flat_map(|&l| (0..tt).map(move |j| if (j as i64) < l { 1.0 } else { 0.0 })).collect();
        let dt = x.dtype();
        let keep = Tensor::from_vec(valid.clone(), (x_lens.len(), 1, tt), dev)?.to_dtype(dt)?;
        let attn_mask = if self.cfg.is_causal {
            let bias: Vec<f32> = (0..tt).flat_map(|i| (0..tt).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY })).collect();
            Some(Tensor::from_vec(bias, (1, 1, tt, tt), dev)?.to_dtype(dt)?)
        } else if valid.iter().all(|&v| v == 1.0) {
            None
        } else {
            let bias: Vec<f32> = valid.iter().map(|&v| if v == 1.0 { 0.0 } else { f32::NEG_INFINITY }).collect();
            Some(Tensor::from_vec(bias, (x_lens.len(), 1, 1, tt), dev)?.to_dtype(dt)?)
        };
        let base = if self.faults.on("rope_base") { 1e6 } else { self.cfg.rope_base };
        let rope = Rope::new(&self.input_pos[..tt], self.cfg.hidden_dim / self.cfg.num_heads, base, self.faults.on("rope_halves"), dt, dev)?;

        let c = t1.unsqueeze(1)?;
        let tp = format!("{p}.transformer");
        let h = ctx.nest(&tp, &x_in, |ctx, x| self.transformer(x, &c, &rope, attn_mask.as_ref(), ctx, &tp))?;

        let x_res = if self.cfg.long_skip_connection {
            ctx.block(&format!("{p}.skip_linear"), &h, |h| self.skip_linear.forward(&Tensor::cat(&[h, &xt], 2)?))?
        } else {
            h
        };
        let hw = ctx.block(&format!("{p}.conv1"), &x_res, |x| self.conv1.forward(x))?.transpose(1, 2)?.contiguous()?;
        let te2 = format!("{p}.t_embedder2");
        let t2 = ctx.nest(&te2, t, |ctx, t| self.t_embedder2.forward(t, ctx, &te2))?.unsqueeze(2)?;
        let wp = format!("{p}.wavenet");
        let w = ctx.nest(&wp, &hw, |ctx, h| self.wavenet.forward(h, &keep, &t2, ctx, &wp))?.transpose(1, 2)?;
        let out = ctx.block(&format!("{p}.res_projection"), &x_res, |r| Ok((&w + self.res_projection.forward(r)?)?))?;
        let fp = format!("{p}.final_layer");
        let out = ctx.nest(&fp, &out, |ctx, o| self.final_layer.forward(o, &t1, ctx, &fp))?;
        ctx.block(&format!("{p}.conv2"), &out.transpose(1, 2)?.contiguous()?, |x| self.conv2.forward(x))
    }

    /// The layers with U-ViT skips (layers below n/2 push, layers above n/2 pop, LIFO) and the
    /// final AdaLN; taps `{p}.layers.i.…`, `{p}.layers.i`, `{p}.norm.…`, `{p}.norm`.
    fn transformer(&self, x: &Tensor, c: &Tensor, rope: &Rope, mask: Option<&Tensor>, ctx: &mut Ctx, p: &str) -> Result<Tensor> {
        let n = self.layers.len();
        let uvit = self.cfg.uvit_skip_connection;
        let shifted = self.faults.on("uvit_skip_shifted");
        let mut stack: Vec<Tensor> = Vec::new();
        let mut h = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            let skip = if uvit && i > n / 2 { stack.pop() } else { None };
            let input = h.clone();
            let lp = format!("{p}.layers.{i}");
            h = ctx.nest(&lp, &h, |ctx, x| layer.forward(x, c, rope, mask, skip.as_ref(), ctx, &lp))?;
            if uvit && i < n / 2 {
                stack.push(if shifted { input } else { h.clone() });
            }
        }
        let np = format!("{p}.norm");
        ctx.nest(&np, &h, |ctx, x| self.norm.forward(x, c, ctx, &np))
    }

    /// `solve_euler` with CFG: z `[B, C, T]` (the initial noise, given), prompt `[B, C, Tp]`,
    /// mu `[B, T, content]`, style `[B, S]`, t_span `[N+1]`. Returns the N per-step states (the
    /// last is the result). Taps per step k: `solve_euler.step.k.stacked_dphi_dt` (the estimator on
    /// [cond; uncond], input x), `solve_euler.step.k.dphi_dt` (the CFG combination; without CFG the
    /// estimator itself), `solve_euler.step.k` (x + dt·v, prompt re-zeroed). The estimator's own
    /// taps are not recorded here (the `estimator` case has them).
    #[allow(clippy::too_many_arguments)] // the official solve_euler signature
    pub fn solve_euler(&self, z: &Tensor, x_lens: &[i64], prompt: &Tensor, mu: &Tensor, style: &Tensor, t_span: &[f32], ctx: &mut Ctx) -> Result<Vec<Tensor>> {
        let (b, c, tt) = z.dims3().or_else(|_| input_err(format!("z must be [B, C, T], got {:?}", z.dims())))?;
        let (pb, pc, tp) = prompt.dims3().or_else(|_| input_err(format!("prompt must be [B, C, Tp], got {:?}", prompt.dims())))?;
        if pb != b || pc != c || tp > tt {
            return input_err(format!("prompt must be [{b}, {c}, Tp ≤ {tt}], got {:?}", prompt.dims()));
        }
        if t_span.len() < 2 {
            return input_err("t_span needs at least 2 points");
        }
        let dev = z.device();
        let zero_prompt = |x: &Tensor| -> Result<Tensor> {
            if tp == 0 {
                return Ok(x.clone());
            }
            Ok(Tensor::cat(&[&x.narrow(2, 0, tp)?.zeros_like()?, &x.narrow(2, tp, tt - tp)?], 2)?)
        };
        // official quirk: `mu[..., :prompt_len] = 0` on mu [B, T, C] zeroes the first Tp CHANNELS
        let mu = match mu.dims3() {
            Ok((_, _, mc)) if self.cfg.zero_prompt_speech_token && tp > 0 => {
                let k = tp.min(mc);
                if k == mc { mu.zeros_like()? } else { Tensor::cat(&[&mu.narrow(2, 0, k)?.zeros_like()?, &mu.narrow(2, k, mc - k)?], 2)? }
            }
            _ => mu.clone(),
        };
        let prompt_x = if tp == tt { prompt.clone() } else { Tensor::cat(&[prompt, &z.narrow(2, tp, tt - tp)?.zeros_like()?], 2)? };
        let r = self.cfg.cfg_rate;
        let (px2, style2, mu2) = if r > 0.0 {
            (
                Tensor::cat(&[&prompt_x, &prompt_x.zeros_like()?], 0)?,
                Tensor::cat(&[style, &style.zeros_like()?], 0)?,
                Tensor::cat(&[&mu, &mu.zeros_like()?], 0)?,
            )
        } else {
            (prompt_x.clone(), style.clone(), mu.clone())
        };
        let mut x = zero_prompt(z)?;
        let mut t = t_span[0];
        let mut states = Vec::with_capacity(t_span.len() - 1);
        for step in 1..t_span.len() {
            let dt = t_span[step] - t_span[step - 1];
            let sp = format!("solve_euler.step.{}", step - 1);
            x = ctx.nest(&sp, &x, |ctx, x| {
                let mut plain = Ctx::plain();
                let v = if r > 0.0 {
                    let tv = Tensor::from_vec(vec![t; 2 * b], 2 * b, dev)?.to_dtype(x.dtype())?;
                    let v = ctx.block(&format!("{sp}.stacked_dphi_dt"), x, |x| self.forward(&Tensor::cat(&[x, x], 0)?, &px2, x_lens, &tv, &style2, &mu2, &mut plain))?;
                    ctx.block(&format!("{sp}.dphi_dt"), &v, |v| Ok((v.narrow(0, 0, b)?.affine(1.0 + r, 0.0)? - v.narrow(0, b, b)?.affine(r, 0.0)?)?))?
                } else {
                    let tv = Tensor::from_vec(vec![t; b], b, dev)?.to_dtype(x.dtype())?;
                    ctx.block(&format!("{sp}.dphi_dt"), x, |x| self.forward(x, &px2, x_lens, &tv, &style2, &mu2, &mut plain))?
                };
                zero_prompt(&(x + v.affine(dt as f64, 0.0)?)?)
            })?;
            t += dt;
            states.push(x.clone());
        }
        Ok(states)
    }
}

/// `torch.linspace(0, 1, n_timesteps + 1)` in f32 as torch's CPU kernel computes it (the front
/// half counts up from 0, the back half down from 1): the `t_span` of `cfm.inference`. Bit-exact
/// for the official 25 steps (unit test below); the parity tests pass torch's own tensor.
pub fn t_span(n_timesteps: usize) -> Vec<f32> {
    let n = n_timesteps + 1;
    if n_timesteps == 0 {
        return vec![0.0];
    }
    let step = 1.0f32 / n_timesteps as f32;
    (0..n).map(|i| if i < n / 2 { step * i as f32 } else { 1.0 - step * (n - 1 - i) as f32 }).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn t_span_is_torch_linspace_for_25_steps() {
        // torch.linspace(0, 1, 26).tolist() (torch 2.9.1, CPU, float32)
        let torch: [f64; 26] = [
            0.0, 0.03999999910593033, 0.07999999821186066, 0.11999999731779099, 0.1599999964237213,
            0.19999998807907104, 0.23999999463558197, 0.2800000011920929, 0.3199999928474426,
            0.35999998450279236, 0.3999999761581421, 0.4399999976158142, 0.47999998927116394,
            0.5199999809265137, 0.5600000023841858, 0.6000000238418579, 0.6399999856948853,
            0.6800000071525574, 0.7200000286102295, 0.7599999904632568, 0.800000011920929,
            0.8400000333786011, 0.8799999952316284, 0.9200000166893005, 0.9599999785423279, 1.0,
        ];
        let ours = super::t_span(25);
        assert_eq!(ours.len(), 26);
        for (a, b) in ours.iter().zip(torch.iter()) {
            assert_eq!(*a, *b as f32);
        }
    }

    #[test]
    fn config_default_is_official_and_strict() {
        let d: super::DitConfig = serde_json::from_str("{}").unwrap();
        assert_eq!((d.hidden_dim, d.depth, d.block_size, d.freq_dim), (512, 13, 8192, 256));
        assert!(serde_json::from_str::<super::DitConfig>(r#"{"hiden_dim": 512}"#).is_err());
        assert!(serde_json::from_str::<super::DitConfig>(r#"{"final_layer_type": "conv"}"#).is_err());
    }
}
