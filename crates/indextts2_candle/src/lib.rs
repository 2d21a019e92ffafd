//! Strict Candle implementations of the IndexTTS2 models.
//!
//! Every model is built from a config plus a [`store::Weights`] view of an official checkpoint
//! (converted to safetensors with the official key names). Nothing here can create a weight that
//! is not in the file.
pub mod bigvgan;
pub mod campplus;
pub mod ctx;
pub mod dit;
pub mod emotion;
pub mod error;
pub mod mel;
pub mod gpt;
pub mod gpt_conformer;
pub mod gpt_perceiver;
pub mod length_regulator;
pub mod nn;
pub mod pipeline;
pub mod registry;
pub mod resample;
pub mod semantic_codec;
pub mod s2mel;
pub mod sampling;
pub mod store;
pub mod text;
pub mod transforms;
pub mod w2v_bert;
pub mod w2v_features;
pub mod wavenet;

pub use error::{Error, Result};
