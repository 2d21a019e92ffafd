//! Wav2Vec-BERT 2.0 (`facebook/w2v-bert-2.0`, transformers `Wav2Vec2BertModel`) as IndexTTS2 uses it.
//!
//! features `[B, T, 160]` (+ optional 0/1 mask `[B, T]`) → `hidden_states[output_layer]` `[B, T, H]`
//! (official 17 = output of `encoder.layers[16]`; later layers are never loaded) and, when the
//! store holds stats, `emb = (hidden − mean) / √var`.
//!
//! Layer = conformer block: ½·FFN (swish) → self-attention with `relative_key` distance
//! embeddings (clamped to [−left, right]) → conv module (LN, pointwise+GLU, causal depthwise conv
//! padded k−1 on the left, LN, swish, pointwise) → ½·FFN → LayerNorm.
//!
//! Stats: the same safetensors holds `<stats>.mean` / `<stats>.var` (`[H]`, copied from the official
//! `wav2vec2bert_stats.pt`), read from the root of the store, outside any model prefix.
use crate::ctx::{Ctx, Faults};
use crate::error::{input_err, Result};
use crate::nn::{LayerNorm, Linear};
use crate::store::Weights;
use crate::w2v_features::{FeatureConfig, FeatureExtractor, Features};
use candle_core::{DType, Tensor};
use serde::Deserialize;

/// The `Wav2Vec2BertConfig` values that reach `hidden_states[output_layer]`, plus the read-out,
/// the stats and the front end; absent keys take w2v-bert-2.0's values (= transformers'
/// defaults). Values that only matter elsewhere (dropouts, SpecAugment, adapter, heads) have no
/// effect on that read-out and are not part of this config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct W2vBertConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub feature_projection_input_dim: usize,
    #[serde(default = "d_act")]
    pub hidden_act: HiddenAct,
    #[serde(default = "d_pos")]
    pub position_embeddings_type: PositionEmbeddings,
    pub left_max_position_embeddings: usize,
    pub right_max_position_embeddings: usize,
    pub conv_depthwise_kernel_size: usize,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    /// Index into transformers' `hidden_states` (0 = encoder input); IndexTTS2 reads 17.
    pub output_layer: usize,
    /// Key prefix of `mean`/`var` at the root of the store; `None` = no normalisation.
    #[serde(default)]
    pub stats: Option<String>,
    #[serde(default)]
    pub features: FeatureConfig,
}

impl Default for W2vBertConfig {
    fn default() -> Self {
        W2vBertConfig {
            hidden_size: 1024,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            intermediate_size: 4096,
            feature_projection_input_dim: 160,
            hidden_act: d_act(),
            position_embeddings_type: d_pos(),
            left_max_position_embeddings: 64,
            right_max_position_embeddings: 8,
            conv_depthwise_kernel_size: 31,
            layer_norm_eps: d_eps(),
            output_layer: 17,
            stats: None,
            features: FeatureConfig::default(),
        }
    }
}

/// `hidden_act`: the conformer's activation. transformers' `swish` and `silu` are the same function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum HiddenAct {
    Swish,
    Silu,
}

impl TryFrom<String> for HiddenAct {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        match s.as_str() {
            "swish" => Ok(HiddenAct::Swish),
            "silu" => Ok(HiddenAct::Silu),
            _ => Err(format!("Wav2Vec-BERT hidden_act {s:?} is not supported (supported: \"swish\", \"silu\"; w2v-bert-2.0 uses swish)")),
        }
    }
}

/// `position_embeddings_type`: only w2v-bert-2.0's relative-key attention is ported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum PositionEmbeddings {
    RelativeKey,
}

impl TryFrom<String> for PositionEmbeddings {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        match s.as_str() {
            "relative_key" => Ok(PositionEmbeddings::RelativeKey),
            _ => Err(format!("Wav2Vec-BERT position_embeddings_type {s:?} is not supported (supported: \"relative_key\", as w2v-bert-2.0)")),
        }
    }
}

fn d_act() -> HiddenAct {
    HiddenAct::Swish
}
fn d_pos() -> PositionEmbeddings {
    PositionEmbeddings::RelativeKey
}
fn d_eps() -> f64 {
    1e-5
}

pub const FAULTS: &[&str] = &[
    "hidden_off_by_one",    // reads hidden_states[output_layer − 1] (the input of the last layer run)
    "var_as_std",           // stats normalisation divides by var instead of √var
    "symmetric_dw_padding", // depthwise conv padded (k−1)/2 on both sides instead of k−1 on the left
    "layer_norm_eps",       // every LayerNorm with BERT's eps 1e-12 instead of the config's 1e-5
    "softmax_scale",        // attention scores scaled by 1/√hidden instead of 1/√head
    "swish_beta",           // conv-module swish as x·σ(1.702·x) (sigmoid-GELU) instead of SiLU x·σ(x)
];

struct FeedForward {
    intermediate_dense: Linear,
    output_dense: Linear,
}

impl FeedForward {
    fn load(w: &Weights, h: usize, inner: usize) -> Result<FeedForward> {
        Ok(FeedForward {
            intermediate_dense: Linear::load(&w.pp("intermediate_dense"), h, inner, true)?,
            output_dense: Linear::load(&w.pp("output_dense"), inner, h, true)?,
        })
    }
    /// Taps `<n>.{intermediate_dense, intermediate_act_fn, output_dense}`, then `<n>`.
    fn forward(&self, x: &Tensor, ctx: &mut Ctx, n: &str) -> Result<Tensor> {
        let x = ctx.input(n, x)?;
        let h = ctx.block(&format!("{n}.intermediate_dense"), &x, |x| self.intermediate_dense.forward(x))?;
        let h = ctx.block(&format!("{n}.intermediate_act_fn"), &h, |h| Ok(crate::vact::silu(h)?))?;
        let y = ctx.block(&format!("{n}.output_dense"), &h, |h| self.output_dense.forward(h))?;
        ctx.tap(n, &y);
        Ok(y)
    }
}

struct SelfAttention {
    linear_q: Linear,
    linear_k: Linear,
    linear_v: Linear,
    linear_out: Linear,
    distance_embedding: Tensor, // [left + right + 1, head]
    heads: usize,
    head: usize,
    left: usize,
    right: usize,
    scale: f64,
}

impl SelfAttention {
    fn load(w: &Weights, cfg: &W2vBertConfig, faults: &Faults) -> Result<SelfAttention> {
        let h = cfg.hidden_size;
        let head = h / cfg.num_attention_heads;
        let (left, right) = (cfg.left_max_position_embeddings, cfg.right_max_position_embeddings);
        Ok(SelfAttention {
            linear_q: Linear::load(&w.pp("linear_q"), h, h, true)?,
            linear_k: Linear::load(&w.pp("linear_k"), h, h, true)?,
            linear_v: Linear::load(&w.pp("linear_v"), h, h, true)?,
            linear_out: Linear::load(&w.pp("linear_out"), h, h, true)?,
            distance_embedding: w.pp("distance_embedding").get((left + right + 1, head), "weight")?,
            heads: cfg.num_attention_heads,
            head,
            left,
            right,
            scale: 1.0 / (if faults.on("softmax_scale") { h } else { head } as f64).sqrt(),
        })
    }

    fn split(&self, x: &Tensor, b: usize, t: usize) -> Result<Tensor> {
        Ok(x.reshape((b, t, self.heads, self.head))?.transpose(1, 2)?.contiguous()?)
    }

    /// The core on projected q `[B, T, H]` (k, v from their own projections): scores with the
    /// relative-key term, the additive key mask `[B, 1, 1, T]` (0 or f32::MIN), softmax, ·V.
    fn core(&self, q: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let (b, t, h) = q.dims3()?;
        let q4 = q.reshape((b, t, self.heads, self.head))?;
        let q = q4.transpose(1, 2)?.contiguous()?;
        // Only left+right+1 distinct distances: score every query against each embedding once,
        // then pick the column for clamp(r − l) per (l, r).
        let per_dist = q.broadcast_matmul(&self.distance_embedding.t()?.contiguous()?)?; // [B, h, T, P]
        let (k4, v4) = (k.reshape((b, t, self.heads, self.head))?, v.reshape((b, t, self.heads, self.head))?);
        if let Some(y) = crate::dense::attention_rel(&q4, &k4, &v4, Some((&per_dist, self.left, self.right)), bias, self.scale)? {
            return Ok(y); // CPU: one fused pass per (batch, head, query block), the same score sums
        }
        let k = self.split(k, b, t)?;
        let v = self.split(v, b, t)?;
        let scores = (q.matmul(&k.t()?.contiguous()?)? * self.scale)?;
        let (l, r) = (self.left as i64, self.right as i64);
        let idx: Vec<u32> = (0..t as i64)
            .flat_map(|qi| (0..t as i64).map(move |ki| ((ki - qi).clamp(-l, r) + l) as u32))
            .collect();
        let idx = Tensor::from_vec(idx, (1, 1, t, t), q.device())?.broadcast_as((b, self.heads, t, t))?.contiguous()?;
        let rel = per_dist.gather(&idx, 3)?;
        let mut scores = (scores + (rel * self.scale)?)?;
        if let Some(bias) = bias {
            scores = scores.broadcast_add(bias)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        Ok(probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, h))?)
    }

    /// Taps `<n>.{linear_q, linear_k, linear_v, attention, linear_out}`, then `<n>`.
    fn forward(&self, x: &Tensor, bias: Option<&Tensor>, ctx: &mut Ctx, n: &str) -> Result<Tensor> {
        let x = ctx.input(n, x)?;
        let q = ctx.block(&format!("{n}.linear_q"), &x, |x| self.linear_q.forward(x))?;
        let k = ctx.block(&format!("{n}.linear_k"), &x, |x| self.linear_k.forward(x))?;
        let v = ctx.block(&format!("{n}.linear_v"), &x, |x| self.linear_v.forward(x))?;
        let y = ctx.block(&format!("{n}.attention"), &q, |q| self.core(q, &k, &v, bias))?;
        let y = ctx.block(&format!("{n}.linear_out"), &y, |y| self.linear_out.forward(y))?;
        ctx.tap(n, &y);
        Ok(y)
    }
}

struct ConvModule {
    layer_norm: LayerNorm,
    pointwise_conv1: Linear, // [2H, H, 1] as a Linear
    depthwise: Vec<Tensor>,  // tap j of the depthwise kernel as [1, H, 1]
    depthwise_w: Tensor,     // the kernel [H, 1, k]
    depthwise_layer_norm: LayerNorm,
    pointwise_conv2: Linear,
    k: usize,
    symmetric: bool,
    swish_beta: bool,
}

/// A 1×1 conv on `[B, C, T]` through its Linear form on `[B, T, C]`.
fn pointwise(lin: &Linear, x: &Tensor) -> Result<Tensor> {
    Ok(lin.forward(&x.transpose(1, 2)?.contiguous()?)?.transpose(1, 2)?)
}

impl ConvModule {
    fn load(w: &Weights, cfg: &W2vBertConfig, eps: f64, faults: &Faults) -> Result<ConvModule> {
        let (h, k) = (cfg.hidden_size, cfg.conv_depthwise_kernel_size);
        let pw1 = w.pp("pointwise_conv1").get((2 * h, h, 1), "weight")?.reshape((2 * h, h))?;
        let pw2 = w.pp("pointwise_conv2").get((h, h, 1), "weight")?.reshape((h, h))?;
        let dw = w.pp("depthwise_conv").get((h, 1, k), "weight")?;
        Ok(ConvModule {
            layer_norm: LayerNorm::load(&w.pp("layer_norm"), h, eps)?,
            pointwise_conv1: Linear::from_tensors(pw1, None),
            depthwise: (0..k).map(|j| Ok(dw.narrow(2, j, 1)?.reshape((1, h, 1))?)).collect::<Result<_>>()?,
            depthwise_w: dw.contiguous()?,
            depthwise_layer_norm: LayerNorm::load(&w.pp("depthwise_layer_norm"), h, eps)?,
            pointwise_conv2: Linear::from_tensors(pw2, None),
            k,
            symmetric: faults.on("symmetric_dw_padding"),
            swish_beta: faults.on("swish_beta"),
        })
    }

    /// `x` `[B, T, H]`; `keep` `[B, T, 1]` zeroes padded frames before the convolutions. Taps as
    /// transformers has them: `<n>.{layer_norm [B,T,H], pointwise_conv1 [B,2H,T], glu [B,H,T],
    /// depthwise_conv (input padded [B,H,T+k−1]), depthwise_layer_norm [B,T,H], activation,
    /// pointwise_conv2 [B,H,T]}`, then `<n>` `[B,T,H]`.
    fn forward(&self, x: &Tensor, keep: Option<&Tensor>, ctx: &mut Ctx, n: &str) -> Result<Tensor> {
        let x = ctx.input(n, x)?;
        let mut y = ctx.block(&format!("{n}.layer_norm"), &x, |x| self.layer_norm.forward(x))?;
        if let Some(keep) = keep {
            y = y.broadcast_mul(keep)?;
        }
        let y = ctx.block(&format!("{n}.pointwise_conv1"), &y.transpose(1, 2)?, |y| pointwise(&self.pointwise_conv1, y))?;
        // y is the transposed view of pointwise_conv1's [B, T, 2H]: GLU over that last dim, in place
        let y = ctx.block(&format!("{n}.glu"), &y, |y| Ok(crate::vact::glu(&y.transpose(1, 2)?, 2)?.transpose(1, 2)?))?;
        let (pl, pr) = if self.symmetric { ((self.k - 1) / 2, (self.k - 1) / 2) } else { (self.k - 1, 0) };
        let yp = y.pad_with_zeros(2, pl, pr)?;
        let y = ctx.block(&format!("{n}.depthwise_conv"), &yp, |yp| {
            if let Some(y) = crate::nn::depthwise_conv1d(yp, &self.depthwise_w, 0, 0)? {
                return Ok(y); // the same sums in one pass
            }
            let t = yp.dim(2)? + 1 - self.k;
            let mut acc = yp.narrow(2, 0, t)?.broadcast_mul(&self.depthwise[0])?;
            for (j, wj) in self.depthwise.iter().enumerate().skip(1) {
                acc = (acc + yp.narrow(2, j, t)?.broadcast_mul(wj)?)?;
            }
            Ok(acc)
        })?;
        let y = ctx.block(&format!("{n}.depthwise_layer_norm"), &y.transpose(1, 2)?, |y| self.depthwise_layer_norm.forward(y))?;
        let y = ctx.block(&format!("{n}.activation"), &y.transpose(1, 2)?, |y| {
            Ok(if self.swish_beta { (y * crate::vact::sigmoid(&(y * 1.702)?)?)? } else { crate::vact::silu(y)? })
        })?;
        let y = ctx.block(&format!("{n}.pointwise_conv2"), &y, |y| pointwise(&self.pointwise_conv2, y))?;
        let y = y.transpose(1, 2)?;
        ctx.tap(n, &y);
        Ok(y)
    }
}

struct Layer {
    name: String,
    ffn1_layer_norm: LayerNorm,
    ffn1: FeedForward,
    self_attn_layer_norm: LayerNorm,
    self_attn: SelfAttention,
    conv_module: ConvModule,
    ffn2_layer_norm: LayerNorm,
    ffn2: FeedForward,
    final_layer_norm: LayerNorm,
}

impl Layer {
    fn load(w: &Weights, name: String, cfg: &W2vBertConfig, eps: f64, faults: &Faults) -> Result<Layer> {
        let h = cfg.hidden_size;
        Ok(Layer {
            ffn1_layer_norm: LayerNorm::load(&w.pp("ffn1_layer_norm"), h, eps)?,
            ffn1: FeedForward::load(&w.pp("ffn1"), h, cfg.intermediate_size)?,
            self_attn_layer_norm: LayerNorm::load(&w.pp("self_attn_layer_norm"), h, eps)?,
            self_attn: SelfAttention::load(&w.pp("self_attn"), cfg, faults)?,
            conv_module: ConvModule::load(&w.pp("conv_module"), cfg, eps, faults)?,
            ffn2_layer_norm: LayerNorm::load(&w.pp("ffn2_layer_norm"), h, eps)?,
            ffn2: FeedForward::load(&w.pp("ffn2"), h, cfg.intermediate_size)?,
            final_layer_norm: LayerNorm::load(&w.pp("final_layer_norm"), h, eps)?,
            name,
        })
    }

    /// Conformer block; every sub-module is a tap, then `<layer>` itself (its output = the
    /// final_layer_norm's). The residual adds lie between the taps; the injected walk leaves
    /// final_layer_norm's input alone, so they show there.
    fn forward(&self, x: &Tensor, bias: Option<&Tensor>, keep: Option<&Tensor>, ctx: &mut Ctx) -> Result<Tensor> {
        let n = &self.name;
        let x = ctx.input(n, x)?;
        let h = ctx.block(&format!("{n}.ffn1_layer_norm"), &x, |x| self.ffn1_layer_norm.forward(x))?;
        let h = self.ffn1.forward(&h, ctx, &format!("{n}.ffn1"))?;
        let x = ((h * 0.5)? + x)?;
        let h = ctx.block(&format!("{n}.self_attn_layer_norm"), &x, |x| self.self_attn_layer_norm.forward(x))?;
        let h = self.self_attn.forward(&h, bias, ctx, &format!("{n}.self_attn"))?;
        let x = (h + x)?;
        let h = self.conv_module.forward(&x, keep, ctx, &format!("{n}.conv_module"))?;
        let x = (x + h)?;
        let h = ctx.block(&format!("{n}.ffn2_layer_norm"), &x, |x| self.ffn2_layer_norm.forward(x))?;
        let h = self.ffn2.forward(&h, ctx, &format!("{n}.ffn2"))?;
        let x = ((h * 0.5)? + x)?;
        let y = ctx.block(&format!("{n}.final_layer_norm"), &x, |x| self.final_layer_norm.forward(x))?;
        ctx.tap(n, &y);
        Ok(y)
    }
}

struct Stats {
    mean: Tensor,
    std: Tensor,
}

pub struct W2vBert {
    cfg: W2vBertConfig,
    fp_layer_norm: LayerNorm,
    fp_projection: Linear,
    layers: Vec<Layer>,
    stats: Option<Stats>,
    features: FeatureExtractor,
    faults: Faults,
}

pub struct Output {
    pub hidden: Tensor,
    pub emb: Option<Tensor>,
}

impl W2vBert {
    /// transformers' encoder draws one `torch.rand([])` per layer (its layerdrop check, in eval
    /// too), and infer_v2 runs all `num_hidden_layers`: what one official forward takes from
    /// torch's generator.
    pub fn official_rng_draws(&self) -> usize {
        self.cfg.num_hidden_layers
    }

    pub fn load(w: &Weights, cfg: W2vBertConfig, faults: Faults) -> Result<W2vBert> {
        if cfg.num_attention_heads == 0 || cfg.hidden_size % cfg.num_attention_heads != 0 {
            return input_err("Wav2Vec-BERT config: hidden_size must be a multiple of num_attention_heads");
        }
        if cfg.conv_depthwise_kernel_size % 2 == 0 {
            return input_err("Wav2Vec-BERT config: conv_depthwise_kernel_size must be odd");
        }
        if cfg.output_layer == 0 || cfg.output_layer > cfg.num_hidden_layers {
            return input_err(format!(
                "Wav2Vec-BERT output_layer {} must be in 1..={} (index into hidden_states)",
                cfg.output_layer, cfg.num_hidden_layers
            ));
        }
        let (h, fin) = (cfg.hidden_size, cfg.feature_projection_input_dim);
        // The front end first: its config errors name the extractor's own arguments.
        let features = FeatureExtractor::new(cfg.features.clone())?;
        if cfg.features.num_mel_bins * cfg.features.stride != fin {
            return input_err(format!(
                "Wav2Vec-BERT config: features give {}·{} values per frame, the projection takes {fin}",
                cfg.features.num_mel_bins, cfg.features.stride
            ));
        }
        let eps = if faults.on("layer_norm_eps") { 1e-12 } else { cfg.layer_norm_eps };
        let fp = w.pp("feature_projection");
        let fp_layer_norm = LayerNorm::load(&fp.pp("layer_norm"), fin, eps)?;
        let fp_projection = Linear::load(&fp.pp("projection"), fin, h, true)?;
        // Only the layers up to the read-out: the rest are dead weight for IndexTTS2.
        let layers = (0..cfg.output_layer)
            .map(|i| {
                let name = format!("encoder.layers.{i}");
                Layer::load(&w.pp(&name), name, &cfg, eps, &faults)
            })
            .collect::<Result<Vec<_>>>()?;
        let stats = match &cfg.stats {
            Some(p) => {
                let sw = Weights::new(w.store().clone()).pp(p);
                let var = sw.get(h, "var")?;
                Some(Stats { mean: sw.get(h, "mean")?, std: if faults.on("var_as_std") { var } else { var.sqrt()? } })
            }
            None => None,
        };
        Ok(W2vBert { cfg, fp_layer_norm, fp_projection, layers, stats, features, faults })
    }

    pub fn config(&self) -> &W2vBertConfig {
        &self.cfg
    }

    /// Taps (reference/w2v_bert.py `tap_names`): `feature_projection.{layer_norm, projection}`,
    /// `feature_projection`, `encoder.masked_fill` (with a mask), every sub-module of each layer
    /// and the layer, `encoder` (the read-out), then `semantic_stats` (or the configured stats prefix).
    pub fn forward(&self, features: &Tensor, mask: Option<&Tensor>, ctx: &mut Ctx) -> Result<Output> {
        let fin = self.cfg.feature_projection_input_dim;
        let (b, t, f) = match features.dims() {
            [b, t, f] => (*b, *t, *f),
            d => return input_err(format!("Wav2Vec-BERT expects input_features [B, T, {fin}], got {d:?}")),
        };
        if f != fin || t == 0 || b == 0 {
            return input_err(format!("Wav2Vec-BERT expects input_features [B, T>0, {fin}], got {:?}", features.dims()));
        }
        let features = features.to_dtype(DType::F32)?;
        let keep = match mask {
            Some(m) => {
                if m.dims() != [b, t] {
                    return input_err(format!("attention_mask must be [{b}, {t}], got {:?}", m.dims()));
                }
                Some(m.to_dtype(DType::F32)?.ne(0f32)?.to_dtype(DType::F32)?.reshape((b, t, 1))?)
            }
            None => None,
        };
        // transformers: (1 − mask)·finfo.min added to the scores of padded keys.
        let bias = match &keep {
            Some(k) => Some(((k.reshape((b, 1, 1, t))? - 1.0)? * -(f32::MIN as f64))?),
            None => None,
        };
        let f = ctx.input("feature_projection", &features)?;
        let f = ctx.block("feature_projection.layer_norm", &f, |x| self.fp_layer_norm.forward(x))?;
        let x = ctx.block("feature_projection.projection", &f, |x| self.fp_projection.forward(x))?;
        ctx.tap("feature_projection", &x);
        // tap `encoder`: the read-out hidden_states[output_layer] (the layers run stop there)
        let hidden = ctx.nest("encoder", &x, |ctx, x| {
            let mut x = x.clone();
            if let Some(k) = &keep {
                x = ctx.block("encoder.masked_fill", &x, |x| Ok(x.broadcast_mul(k)?))?;
            }
            let mut before_last = x.clone();
            for layer in &self.layers {
                before_last = x.clone();
                x = layer.forward(&x, bias.as_ref(), keep.as_ref(), ctx)?;
            }
            Ok(if self.faults.on("hidden_off_by_one") { before_last } else { x })
        })?;
        let emb = match (&self.stats, &self.cfg.stats) {
            (Some(s), Some(name)) => Some(ctx.block(name, &hidden, |h| {
                Ok(h.broadcast_sub(&s.mean)?.broadcast_div(&s.std)?)
            })?),
            _ => None,
        };
        Ok(Output { hidden, emb })
    }

    /// The SeamlessM4T front end on one clip `[N]` (or `[1, N]`) of 16 kHz float audio.
    pub fn features(&self, audio: &Tensor) -> Result<(Tensor, Tensor)> {
        let a = match audio.dims() {
            [_] => audio.clone(),
            [1, _] => audio.squeeze(0)?,
            d => return input_err(format!("audio must be [N] or [1, N] (one clip), got {d:?}")),
        };
        let v = a.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let Features { data, frames, dim, mask } = self.features.extract(&v)?;
        let dev = audio.device();
        Ok((Tensor::from_vec(data, (1, frames, dim), dev)?, Tensor::from_vec(mask, (1, frames), dev)?))
    }
}
