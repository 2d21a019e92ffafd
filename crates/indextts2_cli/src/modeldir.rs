//! The official IndexTTS-2 model directory: `config.yaml` (for the file names), the source files it
//! names, and the converted pipeline (`candle/pipeline.safetensors` + `candle/pipeline.json`, written
//! once by `indextts-convert DIR`, which maps every config value or refuses it).
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const CONVERTED_DIR: &str = "candle";
pub const PIPELINE_FILE: &str = "pipeline.safetensors";
pub const PIPELINE_CONFIG: &str = "pipeline.json";
/// Not an official file: only synthetic directories carry it (reference/official_config.py).
pub const HARDCODED_FILE: &str = "candle_hardcoded.yaml";

/// The part of config.yaml that names files. The model sections (`gpt`, `s2mel`, …) are mapped by
/// the converter (reference/official_config.py), which refuses what it does not implement.
#[derive(Deserialize)]
struct ConfigYaml {
    dataset: Dataset,
    gpt_checkpoint: String,
    w2v_stat: String,
    s2mel_checkpoint: String,
    emo_matrix: String,
    spk_matrix: String,
    vocoder: Vocoder,
}

#[derive(Deserialize)]
struct Dataset {
    bpe_model: String,
}

#[derive(Deserialize)]
struct Vocoder {
    name: String,
}

pub struct ModelDir {
    pub dir: PathBuf,
    pub bpe_model: PathBuf,
    pub weights: PathBuf,
    pub config_json: PathBuf,
}

fn convert_hint(dir: &Path) -> String {
    format!("convert it once with:  indextts-convert {}", dir.display())
}

impl ModelDir {
    /// Reads config.yaml; every missing source file is listed at once; the converted pipeline must
    /// exist and be newer than its sources.
    pub fn open(dir: &Path) -> Result<ModelDir, String> {
        if !dir.is_dir() {
            return Err(format!("--model-dir {}: not a directory", dir.display()));
        }
        let cfg_path = dir.join("config.yaml");
        let text = std::fs::read_to_string(&cfg_path)
            .map_err(|e| format!("{}: cannot be read ({e}); the official IndexTTS-2 config.yaml belongs in the model directory", cfg_path.display()))?;
        let cfg: ConfigYaml = serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", cfg_path.display()))?;
        let vocoder = cfg.vocoder.name.trim_end_matches('/').rsplit('/').next().unwrap_or("").to_string();
        let sources: Vec<String> = vec![
            cfg.gpt_checkpoint.clone(),
            cfg.s2mel_checkpoint.clone(),
            cfg.w2v_stat.clone(),
            cfg.emo_matrix.clone(),
            cfg.spk_matrix.clone(),
            cfg.dataset.bpe_model.clone(),
            "w2v-bert-2.0/model.safetensors".into(),
            "w2v-bert-2.0/config.json".into(),
            "MaskGCT/semantic_codec/model.safetensors".into(),
            "campplus/campplus_cn_common.bin".into(),
            format!("{vocoder}/bigvgan_generator.pt"),
            format!("{vocoder}/config.json"),
        ];
        let missing: Vec<&String> = sources.iter().filter(|f| !dir.join(f.as_str()).is_file()).collect();
        if !missing.is_empty() {
            let list: Vec<String> = missing.iter().map(|f| format!("  {}", dir.join(f.as_str()).display())).collect();
            return Err(format!("{}: {} file(s) of the official layout are missing:\n{}", dir.display(), missing.len(), list.join("\n")));
        }
        let out = dir.join(CONVERTED_DIR);
        let weights = out.join(PIPELINE_FILE);
        let config_json = out.join(PIPELINE_CONFIG);
        let absent: Vec<String> = [&weights, &config_json].iter().filter(|p| !p.is_file()).map(|p| format!("  {}", p.display())).collect();
        if !absent.is_empty() {
            return Err(format!("{}: the converted pipeline is missing (Rust does not read .pth files):\n{}\n{}", dir.display(), absent.join("\n"), convert_hint(dir)));
        }
        // stale: a source or a config file changed after the conversion
        let converted = mtime(&weights).min(mtime(&config_json));
        let mut inputs: Vec<PathBuf> = sources.iter().map(|f| dir.join(f)).collect();
        inputs.push(cfg_path);
        inputs.push(dir.join(HARDCODED_FILE));
        let newer: Vec<String> = inputs.iter().filter(|p| p.is_file() && mtime(p) > converted).map(|p| format!("  {}", p.display())).collect();
        if !newer.is_empty() {
            return Err(format!("{}: the converted pipeline is older than:\n{}\n{}", dir.display(), newer.join("\n"), convert_hint(dir)));
        }
        Ok(ModelDir { bpe_model: dir.join(&cfg.dataset.bpe_model), dir: dir.to_path_buf(), weights, config_json })
    }

    /// `pipeline.json` with `bpe_model` set to config.yaml's (the converter leaves it null).
    pub fn pipeline_config(&self) -> Result<indextts2_candle::pipeline::PipelineConfig, String> {
        let text = std::fs::read_to_string(&self.config_json).map_err(|e| format!("{}: {e}", self.config_json.display()))?;
        let mut v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", self.config_json.display()))?;
        v["bpe_model"] = serde_json::Value::String(self.bpe_model.to_string_lossy().into_owned());
        serde_json::from_value(v).map_err(|e| format!("{}: {e}; {}", self.config_json.display(), convert_hint(&self.dir)))
    }
}

fn mtime(p: &Path) -> std::time::SystemTime {
    std::fs::metadata(p).and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH)
}
