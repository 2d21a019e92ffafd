//! Config of the GPT kind: `UnifiedVoice(**cfg.gpt)` (official `indextts/gpt/model_v2.py`) with its
//! `condition_module` / `emo_condition_module` dicts (→ `ConformerEncoder`, `PerceiverResampler`).
//!
//! Strict: unknown keys are an error; `Default` is the official IndexTTS2 `config.yaml` (absent
//! keys take those values). Every constructor argument is implemented or refused at load by
//! [`GptConfig::check`] with an error naming the field, its value and what is supported.
//! Fields the official constructors hard-code (input width 1024, emotion width 1024, dim_head 64,
//! depth 2, pe table 5000, conv kernel 15) are fields here so the tiny fixtures can shrink them.
use crate::error::{input_err, Result};
use serde::Deserialize;

/// `condition_type`: the official branches of `UnifiedVoice.__init__` / `get_conditioning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionType {
    Perceiver,
    ConformerPerceiver,
    ConformerEncoder,
    Gst,
}

/// Conformer `input_layer` (BaseEncoder's subsampling classes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputLayer {
    Linear,
    Conv2d,
    Conv2d2,
    Conv2d6,
    Conv2d8,
}

/// Conformer `pos_enc_layer_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PosEncLayerType {
    AbsPos,
    RelPos,
    NoPos,
}

/// One `condition_module` dict. The first six keys are what UnifiedVoice reads; the rest are
/// `ConformerEncoder` arguments UnifiedVoice leaves at their defaults (settable here, refused
/// unless default).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConformerCfg {
    pub output_size: usize,
    pub linear_units: usize,
    pub attention_heads: usize,
    pub num_blocks: usize,
    #[serde(default = "conv2d2")]
    pub input_layer: InputLayer,
    pub perceiver_mult: usize,
    #[serde(default)]
    pub dropout_rate: f64, // eval: no effect
    #[serde(default = "rel_pos")]
    pub pos_enc_layer_type: PosEncLayerType,
    #[serde(default = "yes")]
    pub normalize_before: bool,
    #[serde(default)]
    pub concat_after: bool,
    #[serde(default)]
    pub macaron_style: bool,
    #[serde(default = "yes")]
    pub use_cnn_module: bool,
}

impl ConditionType {
    fn name(self) -> &'static str {
        match self {
            ConditionType::Perceiver => "perceiver",
            ConditionType::ConformerPerceiver => "conformer_perceiver",
            ConditionType::ConformerEncoder => "conformer_encoder",
            ConditionType::Gst => "gst",
        }
    }
}
impl InputLayer {
    fn name(self) -> &'static str {
        match self {
            InputLayer::Linear => "linear",
            InputLayer::Conv2d => "conv2d",
            InputLayer::Conv2d2 => "conv2d2",
            InputLayer::Conv2d6 => "conv2d6",
            InputLayer::Conv2d8 => "conv2d8",
        }
    }
}
impl PosEncLayerType {
    fn name(self) -> &'static str {
        match self {
            PosEncLayerType::AbsPos => "abs_pos",
            PosEncLayerType::RelPos => "rel_pos",
            PosEncLayerType::NoPos => "no_pos",
        }
    }
}

fn conv2d2() -> InputLayer {
    InputLayer::Conv2d2
}
fn rel_pos() -> PosEncLayerType {
    PosEncLayerType::RelPos
}
fn yes() -> bool {
    true
}

impl ConformerCfg {
    /// config.yaml `gpt.condition_module`.
    pub fn official_speaker() -> Self {
        Self::new(512, 2048, 8, 6)
    }
    /// config.yaml `gpt.emo_condition_module`.
    pub fn official_emotion() -> Self {
        Self::new(512, 1024, 4, 4)
    }
    fn new(output_size: usize, linear_units: usize, attention_heads: usize, num_blocks: usize) -> Self {
        ConformerCfg {
            output_size,
            linear_units,
            attention_heads,
            num_blocks,
            input_layer: InputLayer::Conv2d2,
            perceiver_mult: 2,
            dropout_rate: 0.0,
            pos_enc_layer_type: PosEncLayerType::RelPos,
            normalize_before: true,
            concat_after: false,
            macaron_style: false,
            use_cnn_module: true,
        }
    }
    fn check(&self, key: &str) -> Result<()> {
        let refuse = |field: &str, value: String, supported: &str| {
            input_err(format!("gpt config: {key}.{field} = {value} is not supported (supported: {supported})"))
        };
        if self.input_layer != InputLayer::Conv2d2 {
            return refuse("input_layer", self.input_layer.name().to_string(), "conv2d2, the IndexTTS2 value");
        }
        if self.pos_enc_layer_type != PosEncLayerType::RelPos {
            return refuse("pos_enc_layer_type", self.pos_enc_layer_type.name().to_string(), "rel_pos (no rel_shift)");
        }
        for (field, value, default) in [
            ("normalize_before", self.normalize_before, true),
            ("concat_after", self.concat_after, false),
            ("macaron_style", self.macaron_style, false),
            ("use_cnn_module", self.use_cnn_module, true),
        ] {
            if value != default {
                return refuse(field, value.to_string(), &format!("{default} (the ConformerEncoder default UnifiedVoice uses)"));
            }
        }
        if !(0.0..1.0).contains(&self.dropout_rate) {
            return refuse("dropout_rate", self.dropout_rate.to_string(), "[0, 1) (no effect in eval)");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GptConfig {
    pub model_dim: usize,
    pub heads: usize,
    pub layers: usize,
    pub max_text_tokens: usize,
    pub max_mel_tokens: usize,
    pub max_conditioning_inputs: usize,
    pub mel_length_compression: usize, // training-side length factor: no effect on inference
    pub number_text_tokens: usize,
    pub types: usize,
    pub number_mel_codes: usize,
    pub start_mel_token: i64,
    pub stop_mel_token: i64,
    pub start_text_token: i64,
    pub stop_text_token: i64,
    pub train_solo_embeddings: bool, // True only adds two stored, never-used parameters
    pub use_mel_codes_as_input: bool,
    pub checkpointing: bool, // gradient checkpointing: training only
    pub condition_num_latent: usize,
    pub condition_type: ConditionType,
    pub condition_module: ConformerCfg,
    pub emo_condition_module: ConformerCfg,
    // hard-coded in the official constructors
    pub cond_input_size: usize,
    pub emo_dim: usize,
    pub perceiver_dim_head: usize,
    pub perceiver_depth: usize,
    pub pos_enc_max_len: usize,
    pub cnn_module_kernel: usize,
}

impl Default for GptConfig {
    /// The official IndexTTS2 `config.yaml` `gpt:` section (+ the code defaults it relies on).
    fn default() -> Self {
        GptConfig {
            model_dim: 1280,
            heads: 20,
            layers: 24,
            max_text_tokens: 600,
            max_mel_tokens: 1815,
            max_conditioning_inputs: 1,
            mel_length_compression: 1024,
            number_text_tokens: 12000,
            types: 1,
            number_mel_codes: 8194,
            start_mel_token: 8192,
            stop_mel_token: 8193,
            start_text_token: 0,
            stop_text_token: 1,
            train_solo_embeddings: false,
            use_mel_codes_as_input: true,
            checkpointing: true,
            condition_num_latent: 32,
            condition_type: ConditionType::ConformerPerceiver,
            condition_module: ConformerCfg::official_speaker(),
            emo_condition_module: ConformerCfg::official_emotion(),
            cond_input_size: 1024,
            emo_dim: 1024,
            perceiver_dim_head: 64,
            perceiver_depth: 2,
            pos_enc_max_len: 5000,
            cnn_module_kernel: 15,
        }
    }
}

impl GptConfig {
    /// Refuses every value Candle does not implement, naming the field, the value and what works.
    pub fn check(&self) -> Result<()> {
        if self.condition_type != ConditionType::ConformerPerceiver {
            return input_err(format!(
                "gpt config: condition_type = {} is not supported (supported: conformer_perceiver, the IndexTTS2 value)",
                self.condition_type.name()
            ));
        }
        if !self.use_mel_codes_as_input {
            return input_err("gpt config: use_mel_codes_as_input = false (MelEncoder input) is not supported (supported: true)");
        }
        let d = self.model_dim;
        if self.heads == 0 || !d.is_multiple_of(self.heads) {
            return input_err(format!("gpt config: heads = {} must divide model_dim = {d}", self.heads));
        }
        if self.condition_num_latent == 0 || self.types == 0 || self.perceiver_depth == 0 {
            return input_err("gpt config: condition_num_latent, types and perceiver_depth must be ≥ 1");
        }
        let tokens = [
            ("start_mel_token", self.start_mel_token, self.number_mel_codes),
            ("stop_mel_token", self.stop_mel_token, self.number_mel_codes),
            ("start_text_token", self.start_text_token, self.number_text_tokens * self.types + 1),
            ("stop_text_token", self.stop_text_token, self.number_text_tokens * self.types + 1),
        ];
        for (field, v, n) in tokens {
            if v < 0 || v as usize >= n {
                return input_err(format!("gpt config: {field} = {v} outside its embedding table [0, {n})"));
            }
        }
        self.condition_module.check("condition_module")?;
        self.emo_condition_module.check("emo_condition_module")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The official config.yaml `gpt:` section, as JSON: it parses, passes `check`, and equals `Default`.
    const OFFICIAL: &str = r#"{"model_dim": 1280, "max_mel_tokens": 1815, "max_text_tokens": 600, "heads": 20,
        "use_mel_codes_as_input": true, "mel_length_compression": 1024, "layers": 24, "number_text_tokens": 12000,
        "number_mel_codes": 8194, "start_mel_token": 8192, "stop_mel_token": 8193, "start_text_token": 0,
        "stop_text_token": 1, "train_solo_embeddings": false, "condition_type": "conformer_perceiver",
        "condition_module": {"output_size": 512, "linear_units": 2048, "attention_heads": 8, "num_blocks": 6,
                             "input_layer": "conv2d2", "perceiver_mult": 2},
        "emo_condition_module": {"output_size": 512, "linear_units": 1024, "attention_heads": 4, "num_blocks": 4,
                                 "input_layer": "conv2d2", "perceiver_mult": 2}}"#;

    #[test]
    fn official_config_is_the_default() {
        let c: GptConfig = serde_json::from_str(OFFICIAL).unwrap();
        c.check().unwrap();
        assert_eq!(format!("{c:?}"), format!("{:?}", GptConfig::default()));
        let empty: GptConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(format!("{empty:?}"), format!("{:?}", GptConfig::default()));
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = serde_json::from_str::<GptConfig>(r#"{"modle_dim": 8}"#).unwrap_err().to_string();
        assert!(e.contains("modle_dim"), "{e}");
        let e = serde_json::from_str::<GptConfig>(r#"{"condition_module": {"output_size": 8, "linear_units": 8,
            "attention_heads": 2, "num_blocks": 1, "perceiver_mult": 2, "linear_unit": 3}}"#).unwrap_err().to_string();
        assert!(e.contains("linear_unit"), "{e}");
    }

    #[test]
    fn refusals_name_field_and_value() {
        let mut c = GptConfig::default();
        c.emo_condition_module.input_layer = InputLayer::Conv2d6;
        let e = c.check().unwrap_err().to_string();
        assert!(e.contains("emo_condition_module.input_layer") && e.contains("conv2d6"), "{e}");
    }
}
