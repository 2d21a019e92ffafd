//! s2mel CFM: the DiT estimator (gpt_fast transformer with AdaLN and U-ViT skips, WaveNet post-net)
//! and the Euler solver with classifier-free guidance (`s2mel/modules/{flow_matching,
//! diffusion_transformer}.py`, `gpt_fast/model.py`).
//!
//! Loaded with prefix `net.cfm`; weights and taps are `estimator.…`.
use crate::ctx::{Ctx, Faults};
use crate::error::{input_err, Result};
use crate::nn::{layer_norm, Conv1d, Linear};
use crate::store::Weights;
use crate::transforms::{load_weight_norm, split_fused};
use crate::wavenet::WaveNet;
use candle_core::{DType, Tensor, D};
use serde::Deserialize;

/// Architecture of the estimator (official values in `reference/s2mel.py:FULL_DIT`).
#[derive(Debug, Clone, Deserialize)]
pub struct DitConfig {
    pub hidden_dim: usize,
    pub num_heads: usize,
    pub depth: usize,
    pub in_channels: usize,
    pub content_dim: usize,
    pub style_dim: usize,
    pub block_size: usize,
    pub rope_base: f64,
    pub norm_eps: f64,
    pub freq_dim: usize,
    pub wavenet_hidden_dim: usize,
    pub wavenet_num_layers: usize,
    pub wavenet_kernel_size: usize,
    pub wavenet_dilation_rate: usize,
    /// CFG strength of the solver (infer_v2 hard-codes 0.7).
    pub cfg_rate: f64,
}

pub const FAULTS: &[&str] = &[
    "adaln_swapped",      // AdaLN uses (bias, scale) instead of (scale, bias)
    "final_no_plus_one",  // FinalLayer modulates with scale instead of (1 + scale)
    "wqkv_split_order",   // fused wqkv split as (v, k, q)
    "rope_halves",        // RoPE rotates (i, i + D/2) halves instead of interleaved pairs
    "uvit_skip_shifted",  // U-ViT pushes each emitting layer's input, i.e. skips shifted by one layer
    "wavenet_zero_pad",   // SConv1d zero padding instead of reflect
    "skip_weight_norm",   // weight_v used as the weight: weight norm not folded
];

/// gpt_fast ModelArgs default FFN width: 2/3 of 4·dim rounded up to a multiple of 256.
fn intermediate_size(dim: usize) -> usize {
    let n = 2 * 4 * dim / 3;
    n.div_ceil(256) * 256
}

struct AdaLn {
    project: Linear,
    norm_w: Tensor,
    dim: usize,
    eps: f64,
    swapped: bool,
}

impl AdaLn {
    fn load(w: &Weights, dim: usize, eps: f64, swapped: bool) -> Result<AdaLn> {
        Ok(AdaLn { project: Linear::load(&w.pp("project_layer"), dim, 2 * dim, true)?, norm_w: w.pp("norm").get(dim, "weight")?, dim, eps, swapped })
    }
    /// x `[B, T, D]`, c `[B, 1, D]`: scale·RMSNorm(x) + bias.
    fn forward(&self, x: &Tensor, c: &Tensor) -> Result<Tensor> {
        let sb = self.project.forward(c)?;
        let (mut scale, mut bias) = (sb.narrow(D::Minus1, 0, self.dim)?, sb.narrow(D::Minus1, self.dim, self.dim)?);
        if self.swapped {
            std::mem::swap(&mut scale, &mut bias);
        }
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = x.broadcast_div(&(ms + self.eps)?.sqrt()?)?.broadcast_mul(&self.norm_w)?;
        Ok(normed.broadcast_mul(&scale)?.broadcast_add(&bias)?)
    }
}

/// RoPE cos/sin `[T, head_dim/2]` for the given positions, in f32 as gpt_fast computes them.
fn rope_tables(positions: &[i64], head_dim: usize, base: f64, dev: &candle_core::Device) -> Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| 1.0f32 / (base as f32).powf((2 * i) as f32 / head_dim as f32))
        .collect();
    let mut cos = Vec::with_capacity(positions.len() * half);
    let mut sin = Vec::with_capacity(positions.len() * half);
    for &p in positions {
        for &f in &freqs {
            let a = p as f32 * f;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    let t = positions.len();
    Ok((Tensor::from_vec(cos, (t, half), dev)?, Tensor::from_vec(sin, (t, half), dev)?))
}

struct Rope {
    cos: Tensor, // [1, T, 1, D/2]
    sin: Tensor,
    halves: bool,
}

impl Rope {
    /// x `[B, T, H, D]`.
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, h, d) = x.dims4()?;
        if self.halves {
            let x0 = x.narrow(3, 0, d / 2)?;
            let x1 = x.narrow(3, d / 2, d / 2)?;
            let o0 = (x0.broadcast_mul(&self.cos)? - x1.broadcast_mul(&self.sin)?)?;
            let o1 = (x1.broadcast_mul(&self.cos)? + x0.broadcast_mul(&self.sin)?)?;
            return Ok(Tensor::cat(&[o0, o1], 3)?);
        }
        let xs = x.reshape((b, t, h, d / 2, 2))?;
        let x0 = xs.narrow(4, 0, 1)?.squeeze(4)?;
        let x1 = xs.narrow(4, 1, 1)?.squeeze(4)?;
        let o0 = (x0.broadcast_mul(&self.cos)? - x1.broadcast_mul(&self.sin)?)?;
        let o1 = (x1.broadcast_mul(&self.cos)? + x0.broadcast_mul(&self.sin)?)?;
        Ok(Tensor::stack(&[o0, o1], 4)?.reshape((b, t, h, d))?)
    }
}

struct Attention {
    wqkv: Linear,
    wo: Linear,
    n_head: usize,
    dim: usize,
    wrong_order: bool,
}

impl Attention {
    fn forward(&self, x: &Tensor, rope: &Rope, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let hd = self.dim / self.n_head;
        let qkv = self.wqkv.forward(x)?;
        let parts = split_fused(&qkv, 2, &[self.dim, self.dim, self.dim])?;
        let (q, k, v) = if self.wrong_order { (&parts[2], &parts[1], &parts[0]) } else { (&parts[0], &parts[1], &parts[2]) };
        let q = rope.apply(&q.reshape((b, t, self.n_head, hd))?)?.transpose(1, 2)?.contiguous()?;
        let k = rope.apply(&k.reshape((b, t, self.n_head, hd))?)?.transpose(1, 2)?.contiguous()?;
        let v = v.reshape((b, t, self.n_head, hd))?.transpose(1, 2)?.contiguous()?;
        let mut s = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
        if let Some(m) = mask {
            s = s.broadcast_add(m)?;
        }
        let p = candle_nn::ops::softmax_last_dim(&s)?;
        let y = p.matmul(&v)?.transpose(1, 2)?.reshape((b, t, self.dim))?;
        self.wo.forward(&y)
    }
}

struct Block {
    attention: Attention,
    w1: Linear,
    w2: Linear,
    w3: Linear,
    attention_norm: AdaLn,
    ffn_norm: AdaLn,
    skip_in_linear: Linear,
}

impl Block {
    fn load(w: &Weights, cfg: &DitConfig, faults: &Faults) -> Result<Block> {
        let d = cfg.hidden_dim;
        let inter = intermediate_size(d);
        let a = w.pp("attention");
        let ff = w.pp("feed_forward");
        let sw = faults.on("adaln_swapped");
        Ok(Block {
            attention: Attention {
                wqkv: Linear::load(&a.pp("wqkv"), d, 3 * d, false)?,
                wo: Linear::load(&a.pp("wo"), d, d, false)?,
                n_head: cfg.num_heads,
                dim: d,
                wrong_order: faults.on("wqkv_split_order"),
            },
            w1: Linear::load(&ff.pp("w1"), d, inter, false)?,
            w2: Linear::load(&ff.pp("w2"), inter, d, false)?,
            w3: Linear::load(&ff.pp("w3"), d, inter, false)?,
            attention_norm: AdaLn::load(&w.pp("attention_norm"), d, cfg.norm_eps, sw)?,
            ffn_norm: AdaLn::load(&w.pp("ffn_norm"), d, cfg.norm_eps, sw)?,
            skip_in_linear: Linear::load(&w.pp("skip_in_linear"), 2 * d, d, true)?,
        })
    }
    fn forward(&self, x: &Tensor, c: &Tensor, rope: &Rope, mask: Option<&Tensor>, skip: Option<&Tensor>) -> Result<Tensor> {
        let x = match skip {
            Some(s) => self.skip_in_linear.forward(&Tensor::cat(&[x, s], D::Minus1)?)?,
            None => x.clone(),
        };
        let h = (&x + self.attention.forward(&self.attention_norm.forward(&x, c)?, rope, mask)?)?;
        let n = self.ffn_norm.forward(&h, c)?;
        let ff = self.w2.forward(&(candle_nn::ops::silu(&self.w1.forward(&n)?)? * self.w3.forward(&n)?)?)?;
        Ok((h + ff)?)
    }
}

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
    /// t `[B]` → `[B, hidden]`; the embedding is cat(cos, sin) of 1000·t·freqs.
    fn forward(&self, t: &Tensor) -> Result<Tensor> {
        let args = t.affine(1000.0, 0.0)?.unsqueeze(1)?.broadcast_mul(&self.freqs.unsqueeze(0)?)?;
        let emb = Tensor::cat(&[args.cos()?, args.sin()?], 1)?;
        self.mlp2.forward(&candle_nn::ops::silu(&self.mlp0.forward(&emb)?)?)
    }
}

struct FinalLayer {
    linear: Linear,
    ada: Linear,
    hidden: usize,
    no_plus_one: bool,
}

impl FinalLayer {
    /// x `[B, T, H]`, c `[B, H]`: LayerNorm(x)·(1 + scale) + shift, then the weight-normed linear.
    fn forward(&self, x: &Tensor, c: &Tensor) -> Result<Tensor> {
        let m = self.ada.forward(&candle_nn::ops::silu(c)?)?;
        let shift = m.narrow(1, 0, self.hidden)?.unsqueeze(1)?;
        let scale = m.narrow(1, self.hidden, self.hidden)?.unsqueeze(1)?;
        let scale = if self.no_plus_one { scale } else { (scale + 1.0)? };
        let y = layer_norm(x, None, None, 1e-6)?.broadcast_mul(&scale)?.broadcast_add(&shift)?;
        self.linear.forward(&y)
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
        if cfg.num_heads == 0 || !cfg.hidden_dim.is_multiple_of(cfg.num_heads) || !(cfg.hidden_dim / cfg.num_heads).is_multiple_of(2) {
            return input_err(format!("DiT config: hidden_dim {} must split into {} heads of even size", cfg.hidden_dim, cfg.num_heads));
        }
        if cfg.depth == 0 || cfg.wavenet_num_layers == 0 || cfg.wavenet_kernel_size.is_multiple_of(2) || !cfg.freq_dim.is_multiple_of(2) {
            return input_err("DiT config: needs depth ≥ 1, wavenet layers ≥ 1, an odd wavenet kernel and an even freq_dim");
        }
        if cfg.wavenet_hidden_dim != cfg.hidden_dim {
            return input_err("DiT config: the final layer is modulated by the DiT timestep embedding, so wavenet_hidden_dim must equal hidden_dim");
        }
        let (d, c, wn) = (cfg.hidden_dim, cfg.in_channels, cfg.wavenet_hidden_dim);
        let w = &w.pp("estimator");
        let tr = w.pp("transformer");
        let layers = (0..cfg.depth)
            .map(|i| Block::load(&tr.pp(format!("layers.{i}")), &cfg, &faults))
            .collect::<Result<Vec<_>>>()?;
        let norm = AdaLn::load(&tr.pp("norm"), d, cfg.norm_eps, faults.on("adaln_swapped"))?;
        let input_pos = w.get_int(cfg.block_size, "input_pos")?.to_dtype(DType::I64)?.to_vec1::<i64>()?;
        let skip = faults.on("skip_weight_norm");
        let fl = w.pp("final_layer");
        let final_layer = FinalLayer {
            linear: Linear::from_tensors(load_weight_norm(&fl.pp("linear"), (wn, wn), skip)?, Some(fl.pp("linear").get(wn, "bias")?)),
            ada: Linear::load(&fl.pp("adaLN_modulation.1"), wn, 2 * wn, true)?,
            hidden: wn,
            no_plus_one: faults.on("final_no_plus_one"),
        };
        Ok(Dit {
            layers,
            norm,
            input_pos,
            cond_projection: Linear::load(&w.pp("cond_projection"), cfg.content_dim, d, true)?,
            t_embedder: TimestepEmbedder::load(&w.pp("t_embedder"), d, cfg.freq_dim)?,
            t_embedder2: TimestepEmbedder::load(&w.pp("t_embedder2"), wn, cfg.freq_dim)?,
            cond_x_merge_linear: Linear::load(&w.pp("cond_x_merge_linear"), d + 2 * c + cfg.style_dim, d, true)?,
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
            return input_err(format!("DiT supports at most {} frames (block_size), got {tt}", self.input_pos.len()));
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
    /// cond `[B, T, content]` → velocity `[B, C, T]`. Taps are `estimator.…` module paths.
    #[allow(clippy::too_many_arguments)] // the official estimator signature
    pub fn forward(&self, x: &Tensor, prompt_x: &Tensor, x_lens: &[i64], t: &Tensor, style: &Tensor, cond: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let (b, tt) = self.check(x, prompt_x, x_lens, t, style, cond)?;
        let p = "estimator";
        let dev = x.device();
        let t1 = ctx.block(&format!("{p}.t_embedder"), t, |t| self.t_embedder.forward(t))?;
        let cond = ctx.block(&format!("{p}.cond_projection"), cond, |c| self.cond_projection.forward(c))?;
        let xt = x.transpose(1, 2)?;
        let style_t = style.unsqueeze(1)?.broadcast_as((b, tt, self.cfg.style_dim))?;
        let x_in = Tensor::cat(&[&xt, &prompt_x.transpose(1, 2)?, &cond, &style_t], 2)?;
        let x_in = ctx.block(&format!("{p}.cond_x_merge_linear"), &x_in, |x| self.cond_x_merge_linear.forward(x))?;

        // Key mask from x_lens: 0 or -inf per (batch row, key); absent when every frame is valid.
        let lb = x_lens.len();
        let valid: Vec<f32> = x_lens.iter().flat_map(|&l| (0..tt).map(move |j| if (j as i64) < l { 1.0 } else { 0.0 })).collect();
        let keep = Tensor::from_vec(valid.clone(), (lb, 1, tt), dev)?;
        let attn_mask = if valid.iter().all(|&v| v == 1.0) {
            None
        } else {
            let bias: Vec<f32> = valid.iter().map(|&v| if v == 1.0 { 0.0 } else { f32::NEG_INFINITY }).collect();
            Some(Tensor::from_vec(bias, (lb, 1, 1, tt), dev)?)
        };
        let pos = self.input_pos.get(..tt).ok_or_else(|| crate::Error::Input("sequence longer than input_pos".into()))?;
        let (cos, sin) = rope_tables(pos, self.cfg.hidden_dim / self.cfg.num_heads, self.cfg.rope_base, dev)?;
        let rope = Rope { cos: cos.unsqueeze(0)?.unsqueeze(2)?, sin: sin.unsqueeze(0)?.unsqueeze(2)?, halves: self.faults.on("rope_halves") };

        // Transformer with U-ViT skips: layers below n/2 push, layers above n/2 pop (LIFO).
        let c = t1.unsqueeze(1)?;
        let n = self.layers.len();
        let shifted = self.faults.on("uvit_skip_shifted");
        let mut stack: Vec<Tensor> = Vec::new();
        let mut h = x_in;
        for (i, layer) in self.layers.iter().enumerate() {
            let skip = if i > n / 2 { stack.pop() } else { None };
            let input = h.clone();
            h = ctx.block(&format!("{p}.transformer.layers.{i}"), &h, |x| layer.forward(x, &c, &rope, attn_mask.as_ref(), skip.as_ref()))?;
            if i < n / 2 {
                stack.push(if shifted { input } else { h.clone() });
            }
        }
        let h = ctx.block(&format!("{p}.transformer.norm"), &h, |x| self.norm.forward(x, &c))?;

        let x_res = ctx.block(&format!("{p}.skip_linear"), &Tensor::cat(&[&h, &xt], 2)?, |x| self.skip_linear.forward(x))?;
        let hw = ctx.block(&format!("{p}.conv1"), &x_res, |x| self.conv1.forward(x))?.transpose(1, 2)?.contiguous()?;
        let t2 = ctx.block(&format!("{p}.t_embedder2"), t, |t| self.t_embedder2.forward(t))?;
        let w = self.wavenet.forward(&hw, &keep, &t2.unsqueeze(2)?, ctx, &format!("{p}.wavenet"))?;
        let r = ctx.block(&format!("{p}.res_projection"), &x_res, |x| self.res_projection.forward(x))?;
        let out = (w.transpose(1, 2)? + r)?;
        let out = ctx.block(&format!("{p}.final_layer"), &out, |x| self.final_layer.forward(x, &t1))?;
        ctx.block(&format!("{p}.conv2"), &out.transpose(1, 2)?.contiguous()?, |x| self.conv2.forward(x))
    }

    /// `solve_euler` with CFG: z `[B, C, T]` (the initial noise, given), prompt `[B, C, Tp]`,
    /// mu `[B, T, content]`, style `[B, S]`, t_span `[N+1]`. Returns the N per-step states (the
    /// last is the result). Each step is tap `solve_euler.step.k`; the estimator runs untapped.
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
        let prompt_x = if tp == tt { prompt.clone() } else { Tensor::cat(&[prompt, &z.narrow(2, tp, tt - tp)?.zeros_like()?], 2)? };
        let r = self.cfg.cfg_rate;
        let (px2, style2, mu2) = if r > 0.0 {
            (
                Tensor::cat(&[&prompt_x, &prompt_x.zeros_like()?], 0)?,
                Tensor::cat(&[style, &style.zeros_like()?], 0)?,
                Tensor::cat(&[mu, &mu.zeros_like()?], 0)?,
            )
        } else {
            (prompt_x.clone(), style.clone(), mu.clone())
        };
        let mut x = zero_prompt(z)?;
        let mut t = t_span[0];
        let mut states = Vec::with_capacity(t_span.len() - 1);
        for step in 1..t_span.len() {
            let dt = t_span[step] - t_span[step - 1];
            x = ctx.block(&format!("solve_euler.step.{}", step - 1), &x, |x| {
                let mut plain = Ctx::plain();
                let v = if r > 0.0 {
                    let tv = Tensor::from_vec(vec![t; 2 * b], 2 * b, dev)?;
                    let v = self.forward(&Tensor::cat(&[x, x], 0)?, &px2, x_lens, &tv, &style2, &mu2, &mut plain)?;
                    let (vc, vu) = (v.narrow(0, 0, b)?, v.narrow(0, b, b)?);
                    (vc.affine(1.0 + r, 0.0)? - vu.affine(r, 0.0)?)?
                } else {
                    let tv = Tensor::from_vec(vec![t; b], b, dev)?;
                    self.forward(x, &px2, x_lens, &tv, &style2, &mu2, &mut plain)?
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
    (0..n)
        .map(|i| if i < n / 2 { step * i as f32 } else { 1.0 - step * (n - 1 - i) as f32 })
        .collect()
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
}
