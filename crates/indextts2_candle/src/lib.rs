//! Strict Candle implementations of the IndexTTS2 models.
//!
//! Every model is built from a config plus a [`store::Weights`] view of an official checkpoint
//! (converted to safetensors with the official key names). Nothing here can create a weight that
//! is not in the file.
//!
//! Layers, lowest first (no module imports one that imports it back): [`error`], [`store`],
//! [`ctx`], [`transforms`], [`nn`], [`text`]; [`runnable`] (the [`runnable::Runnable`] trait every
//! kind implements); the models; [`pipeline`]; [`dispatch`] (kind → load, kind → faults, the table
//! the Python bindings call).
//!
//! # Examples
//!
//! One per model, each on its official checkpoint converted by `indextts-convert` and its config as
//! JSON (the same JSON the Python harness passes; the official values are in
//! `fixtures/manifests/official-configs.json`). Outputs are Candle tensors; [`ctx::Ctx::plain`]
//! records nothing, [`ctx::Faults::none`] switches no fault on.
//!
//! BigVGAN vocoder (`bigvgan_generator.pt`): mel `[1, num_mels, T]` → wav `[1, 1, T · hop]`.
//! ```no_run
//! use candle_core::{Device, Tensor};
//! use indextts2_candle::{bigvgan::BigVgan, ctx::{Ctx, Faults}, store::{Store, Weights}};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let w = Weights::new(Store::open("bigvgan.safetensors", &Device::Cpu)?);
//! let cfg = serde_json::from_str(&std::fs::read_to_string("bigvgan.json")?)?;
//! let vocoder = BigVgan::load(&w, cfg, Faults::none())?;
//! let mel = Tensor::zeros((1, 80, 50), candle_core::DType::F32, &Device::Cpu)?;
//! let wav = vocoder.forward(&mel, &mut Ctx::plain())?;
//! # Ok(()) }
//! ```
//!
//! Wav2Vec-BERT 2.0 with its SeamlessM4T features (`w2v-bert-2.0/model.safetensors`, the
//! normalisation stats merged in as `semantic_stats`): 16 kHz audio `[N]` → hidden states.
//! ```no_run
//! use candle_core::{Device, Tensor};
//! use indextts2_candle::{ctx::{Ctx, Faults}, store::{Store, Weights}, w2v_bert::W2vBert};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let w = Weights::new(Store::open("w2v_bert.safetensors", &Device::Cpu)?);
//! let w2v = W2vBert::load(&w, serde_json::from_str(&std::fs::read_to_string("w2v_bert.json")?)?, Faults::none())?;
//! let audio = Tensor::zeros(16000, candle_core::DType::F32, &Device::Cpu)?;
//! let (features, mask) = w2v.features(&audio)?;
//! let out = w2v.forward(&features, Some(&mask), &mut Ctx::plain())?;
//! let semantic = out.emb.unwrap_or(out.hidden); // `emb` = layer 17, normalised, when stats are loaded
//! # Ok(()) }
//! ```
//!
//! MaskGCT semantic codec (RepCodec): semantic embedding `[1, T, 1024]` → codes and their embedding.
//! ```no_run
//! use candle_core::{Device, Tensor};
//! use indextts2_candle::{ctx::{Ctx, Faults}, semantic_codec::SemanticCodec, store::{Store, Weights}};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let w = Weights::new(Store::open("semantic_codec.safetensors", &Device::Cpu)?);
//! let codec = SemanticCodec::load(&w, serde_json::from_str(&std::fs::read_to_string("semantic_codec.json")?)?, Faults::none())?;
//! let emb = Tensor::zeros((1, 50, 1024), candle_core::DType::F32, &Device::Cpu)?;
//! let (codes, s_ref) = codec.quantize(&emb, &mut Ctx::plain())?;
//! let back = codec.vq2emb(&codes, &mut Ctx::plain())?;
//! # Ok(()) }
//! ```
//!
//! CAMPPlus speaker embedding (`campplus_cn_common.bin`): 16 kHz wav `[1, N]` → Kaldi fbank → style `[1, 192]`.
//! ```no_run
//! use candle_core::{Device, Tensor};
//! use indextts2_candle::{campplus::CampPlus, ctx::{Ctx, Faults}, store::{Store, Weights}};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let w = Weights::new(Store::open("campplus.safetensors", &Device::Cpu)?);
//! let campplus = CampPlus::load(&w, serde_json::from_str(&std::fs::read_to_string("campplus.json")?)?, Faults::none())?;
//! let wav = Tensor::zeros((1, 16000), candle_core::DType::F32, &Device::Cpu)?;
//! let feat = campplus.fbank(&wav, &mut Ctx::plain())?;
//! let style = campplus.forward(&feat.unsqueeze(0)?, &mut Ctx::plain())?;
//! # Ok(()) }
//! ```
//!
//! The s2mel mel spectrogram (weightless: an empty store): 22.05 kHz wav `[1, N]` → log mel `[1, 80, T]`.
//! ```no_run
//! use candle_core::{Device, Tensor};
//! use indextts2_candle::{ctx::{Ctx, Faults}, mel::MelSpectrogram, store::{Store, Weights}};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let w = Weights::new(Store::open("empty.safetensors", &Device::Cpu)?);
//! let mel = MelSpectrogram::load(&w, serde_json::from_str(&std::fs::read_to_string("mel.json")?)?, Faults::none())?;
//! let wav = Tensor::zeros((1, 22050), candle_core::DType::F32, &Device::Cpu)?;
//! let spec = mel.forward(&wav, &mut Ctx::plain())?;
//! # Ok(()) }
//! ```
//!
//! The torchaudio resampler (weightless): any rate pair, or the speaker front end of the config's rate.
//! ```no_run
//! use candle_core::{Device, Tensor};
//! use indextts2_candle::{ctx::{Ctx, Faults}, resample::{Resampler, SR_16K, SR_22K}, store::{Store, Weights}};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let w = Weights::new(Store::open("empty.safetensors", &Device::Cpu)?);
//! let rs = Resampler::load(&w, serde_json::from_str(r#"{"orig_freq": 22050, "new_freq": 16000}"#)?, Faults::none())?;
//! let clip = Tensor::zeros(22050, candle_core::DType::F32, &Device::Cpu)?;
//! let at_16k = rs.forward(&clip.unsqueeze(0)?, SR_22K, SR_16K, &mut Ctx::plain())?;
//! let (audio_22k, audio_16k) = rs.front(&clip, &mut Ctx::plain())?; // cut to 15 s, both rates
//! # Ok(()) }
//! ```
//!
//! The GPT (UnifiedVoice, `gpt.pth`): speaker conditioning, then greedy codes for text ids.
//! ```no_run
//! use candle_core::{DType, Device, Tensor};
//! use indextts2_candle::{ctx::{Ctx, Faults}, gpt::UnifiedVoice, store::{Store, Weights}};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dev = Device::Cpu;
//! let w = Weights::new(Store::open("gpt.safetensors", &dev)?);
//! let gpt = UnifiedVoice::load(&w, serde_json::from_str(&std::fs::read_to_string("gpt.json")?)?, Faults::none())?;
//! let semantic = Tensor::zeros((1, 50, 1024), DType::F32, &dev)?; // w2v-bert embedding [1, T, 1024]
//! let lens = Tensor::new(&[50i64], &dev)?;
//! let spk = gpt.spk_cond(&semantic.transpose(1, 2)?.contiguous()?, &lens, &mut Ctx::plain())?; // channels first
//! let emovec = gpt.emovec(&semantic, &lens, &mut Ctx::plain())?; // channels last, as the official
//! let text = Tensor::new(&[[10i64, 11, 12]], &dev)?;
//! let codes = gpt.greedy(&spk, &emovec, &text, &Tensor::new(&[100i64], &dev)?)?;
//! # Ok(()) }
//! ```
//!
//! The length regulator (`s2mel.pth`, prefix `net`): semantic embedding → `ylens` frames of condition.
//! ```no_run
//! use candle_core::{Device, Tensor};
//! use indextts2_candle::{ctx::{Ctx, Faults}, length_regulator::Regulator, store::{Store, Weights}};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let w = Weights::new(Store::open("s2mel.safetensors", &Device::Cpu)?).pp("net");
//! let lr = Regulator::load(&w, serde_json::from_str(&std::fs::read_to_string("length_regulator.json")?)?, Faults::none())?;
//! let s_ref = Tensor::zeros((1, 50, 1024), candle_core::DType::F32, &Device::Cpu)?;
//! let cond = lr.forward(&s_ref, &[86], &mut Ctx::plain())?;
//! # Ok(()) }
//! ```
//!
//! The DiT / CFM (`s2mel.pth`, prefix `net.cfm`): the Euler solve from noise `z` over `t_span`;
//! the last state is the mel.
//! ```no_run
//! use candle_core::{DType, Device, Tensor};
//! use indextts2_candle::{ctx::{Ctx, Faults}, dit::Dit, store::{Store, Weights}};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dev = Device::Cpu;
//! let w = Weights::new(Store::open("s2mel.safetensors", &dev)?).pp("net.cfm");
//! let dit = Dit::load(&w, serde_json::from_str(&std::fs::read_to_string("dit.json")?)?, Faults::none())?;
//! let (prompt_frames, total) = (40, 100);
//! let z = Tensor::randn(0f32, 1.0, (1, 80, total), &dev)?; // the noise is an input
//! let prompt = Tensor::zeros((1, 80, prompt_frames), DType::F32, &dev)?;
//! let mu = Tensor::zeros((1, total, 512), DType::F32, &dev)?;
//! let style = Tensor::zeros((1, 192), DType::F32, &dev)?;
//! let t_span: Vec<f32> = (0..=25).map(|i| i as f32 / 25.0).collect();
//! let states = dit.solve_euler(&z, &[total as i64], &prompt, &mu, &style, &t_span, &mut Ctx::plain())?;
//! # Ok(()) }
//! ```
//!
//! The emotion matrices (`feat1.pt` / `feat2.pt`): an 8-weight emotion vector mixed into the emovec.
//! ```no_run
//! use candle_core::{DType, Device, Tensor};
//! use indextts2_candle::{ctx::{Ctx, Faults}, emotion::EmotionMatrices, store::{Store, Weights}};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dev = Device::Cpu;
//! let w = Weights::new(Store::open("emotion.safetensors", &dev)?);
//! let em = EmotionMatrices::load(&w, serde_json::from_str(&std::fs::read_to_string("emotion.json")?)?, Faults::none())?;
//! let (style, emovec) = (Tensor::zeros((1, 192), DType::F32, &dev)?, Tensor::zeros((1, 1280), DType::F32, &dev)?);
//! let weights = Tensor::new(&[0.0f32, 0.6, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], &dev)?;
//! let (mixed, rows) = em.mix(&style, &emovec, &weights, &mut Ctx::plain())?;
//! # Ok(()) }
//! ```
//!
//! The text front end (`bpe.model`): normalized text → token ids, per segment.
//! ```no_run
//! use indextts2_candle::text::{TextTokenizer, DEFAULT_MAX_SEGMENT_TOKENS};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tok = TextTokenizer::load("bpe.model")?;
//! let ids = tok.encode("你好 WORLD")?;
//! let segments = tok.segments("FIRST SENTENCE. SECOND ONE.", DEFAULT_MAX_SEGMENT_TOKENS)?;
//! # Ok(()) }
//! ```
//!
//! The whole pipeline (one file with every model under its prefix, see [`pipeline::COMPONENTS`]):
//! text and a 22.05 kHz speaker clip → the joined wav at 22.05 kHz.
//! ```no_run
//! use candle_core::{DType, Device, Tensor};
//! use indextts2_candle::pipeline::{Decoding, EmotionInput, Noise, Pipeline};
//! use indextts2_candle::{ctx::Faults, resample::INTERVAL_SILENCE_MS, store::{Store, Weights}, text::DEFAULT_MAX_SEGMENT_TOKENS};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dev = Device::Cpu;
//! let w = Weights::new(Store::open("pipeline.safetensors", &dev)?);
//! let pipe = Pipeline::load(&w, serde_json::from_str(&std::fs::read_to_string("pipeline.json")?)?)?;
//! let speaker = Tensor::zeros(22050 * 3, DType::F32, &dev)?;
//! let emotion = EmotionInput { clip_16k: None, alpha: 1.0, weights: None }; // the speaker's own emotion
//! let t_span = Tensor::new((0..=25).map(|i| i as f32 / 25.0).collect::<Vec<_>>().as_slice(), &dev)?;
//! // infer_v2's beam sampler on torch's stream after manual_seed(0), which also gives each
//! // segment's CFM noise (Noise::Stream); Noise::Pool(&z) takes given noise instead
//! let mut decoding = Decoding::official(0);
//! let out = pipe.tts("HELLO WORLD.", &speaker, &emotion, &mut decoding, Noise::Stream, &t_span,
//!                    DEFAULT_MAX_SEGMENT_TOKENS, INTERVAL_SILENCE_MS)?;
//! println!("{} samples in {} segments", out.wav.dim(1)?, out.segments.len());
//! # Ok(()) }
//! ```
pub mod bigvgan;
pub mod campplus;
pub mod ctx;
pub mod dispatch;
pub mod dit;
pub mod emotion;
pub mod error;
pub mod fastload;
pub mod mel;
pub mod dense;
pub mod gpt;
pub mod gpt_config;
pub mod gpt_conformer;
pub mod gpt_perceiver;
pub mod length_regulator;
pub mod nn;
pub mod norm;
pub mod pipeline;
pub mod registry;
pub mod resample;
pub mod runnable;
pub mod semantic_codec;
pub mod s2mel;
pub mod sampling;
pub mod store;
pub mod text;
pub mod transforms;
pub mod vact;
pub mod vsin;
pub mod w2v_bert;
pub mod w2v_features;
pub mod wavenet;

pub use error::{Error, Result};
