//! Reading a sentence-transformers model directory, the format Hugging Face embedding models ship in.
//!
//! Only the pipeline `Transformer → Pooling → (Normalize)` over a BERT is understood; any other
//! module (a `Dense` projection, say) is refused, since skipping it would silently give different
//! embeddings than the original model.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::models::sentence_encoder::{BertConfig, Pooling};
use crate::{Error, Result};

/// The modules list of a sentence-transformers directory.
pub const MODULES_FILE: &str = "modules.json";
/// The transformer's Hugging Face config, in the transformer module's directory.
pub const CONFIG_FILE: &str = "config.json";
/// The transformer's weights, in the transformer module's directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The tokenizer, in the transformer module's directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The transformer module's own settings (`max_seq_length`).
pub const SENTENCE_BERT_CONFIG_FILE: &str = "sentence_bert_config.json";

const TRANSFORMER_MODULE: &str = "sentence_transformers.models.Transformer";
const POOLING_MODULE: &str = "sentence_transformers.models.Pooling";
const NORMALIZE_MODULE: &str = "sentence_transformers.models.Normalize";

/// What a sentence-transformers directory describes, checked for consistency.
#[derive(Debug, Clone, PartialEq)]
pub struct SentenceTransformersDir {
    /// The transformer's architecture.
    pub bert: BertConfig,
    /// How token vectors are pooled.
    pub pooling: Pooling,
    /// Whether embeddings are scaled to unit L2 norm (a `Normalize` module follows pooling).
    pub normalize: bool,
    /// The most tokens per text, special tokens included: the directory's `max_seq_length`, capped
    /// by the model's `max_position_embeddings`.
    pub max_seq_length: usize,
    /// The width of the embeddings.
    pub dimension: usize,
    /// The `model.safetensors` file.
    pub weights: PathBuf,
    /// The `tokenizer.json` file.
    pub tokenizer: PathBuf,
}

#[derive(Deserialize)]
struct Module {
    idx: usize,
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

/// Every field sentence-transformers has written to a pooling config; unknown ones are refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolingConfig {
    word_embedding_dimension: usize,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
    // Only matters with prompts, which we do not add.
    #[serde(default, rename = "include_prompt")]
    _include_prompt: Option<bool>,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    #[serde(default)]
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

/// Reads and checks the sentence-transformers directory `dir`; errors are [`Error::Bundle`] naming
/// the file and the field.
///
/// Without a `max_seq_length` (or without `sentence_bert_config.json`), the limit is the model's
/// `max_position_embeddings`, as sentence-transformers falls back to. The weights and tokenizer
/// are checked to exist but not read.
pub fn read_sentence_transformers_dir(dir: &Path) -> Result<SentenceTransformersDir> {
    let modules: Vec<Module> = read_json(dir, MODULES_FILE)?;
    let mut modules: Vec<&Module> = modules.iter().collect();
    modules.sort_by_key(|m| m.idx);
    let kinds: Vec<&str> = modules.iter().map(|m| m.kind.as_str()).collect();
    let normalize = match kinds.as_slice() {
        [TRANSFORMER_MODULE, POOLING_MODULE] => false,
        [TRANSFORMER_MODULE, POOLING_MODULE, NORMALIZE_MODULE] => true,
        _ => {
            return Err(bundle_error(
                dir,
                MODULES_FILE,
                format!("expected the modules Transformer, Pooling and optionally Normalize, found {kinds:?}"),
            ))
        }
    };
    let transformer_dir = dir.join(&modules[0].path);
    let pooling_dir = dir.join(&modules[1].path);

    let config_bytes = read_file(&transformer_dir, CONFIG_FILE)?;
    let bert =
        BertConfig::from_hf_config_json(&config_bytes).map_err(|e| bundle_error(&transformer_dir, CONFIG_FILE, e))?;

    let pooling_config: PoolingConfig = read_json(&pooling_dir, CONFIG_FILE)?;
    let pooling = pooling_mode(&pooling_config).map_err(|e| bundle_error(&pooling_dir, CONFIG_FILE, e))?;
    if pooling_config.word_embedding_dimension != bert.hidden_size {
        return Err(bundle_error(
            &pooling_dir,
            CONFIG_FILE,
            format!(
                "field `word_embedding_dimension`: expected the transformer's hidden_size {}, found {}",
                bert.hidden_size, pooling_config.word_embedding_dimension
            ),
        ));
    }

    let max_seq_length = match optional_json::<SentenceBertConfig>(&transformer_dir, SENTENCE_BERT_CONFIG_FILE)? {
        Some(SentenceBertConfig { do_lower_case: true, .. }) => {
            return Err(bundle_error(
                &transformer_dir,
                SENTENCE_BERT_CONFIG_FILE,
                "field `do_lower_case`: true is not supported, lowercasing must be done by tokenizer.json".into(),
            ))
        }
        Some(SentenceBertConfig { max_seq_length: Some(0), .. }) => {
            return Err(bundle_error(
                &transformer_dir,
                SENTENCE_BERT_CONFIG_FILE,
                "field `max_seq_length`: must be positive".into(),
            ))
        }
        Some(SentenceBertConfig { max_seq_length: Some(n), .. }) => n.min(bert.max_position_embeddings),
        _ => bert.max_position_embeddings,
    };

    let weights = existing_file(&transformer_dir, WEIGHTS_FILE)?;
    let tokenizer = existing_file(&transformer_dir, TOKENIZER_FILE)?;
    Ok(SentenceTransformersDir {
        dimension: bert.hidden_size,
        bert,
        pooling,
        normalize,
        max_seq_length,
        weights,
        tokenizer,
    })
}

fn pooling_mode(cfg: &PoolingConfig) -> std::result::Result<Pooling, String> {
    let modes = [
        ("pooling_mode_mean_tokens", cfg.pooling_mode_mean_tokens, Some(Pooling::Mean)),
        ("pooling_mode_cls_token", cfg.pooling_mode_cls_token, Some(Pooling::Cls)),
        ("pooling_mode_max_tokens", cfg.pooling_mode_max_tokens, Some(Pooling::Max)),
        ("pooling_mode_mean_sqrt_len_tokens", cfg.pooling_mode_mean_sqrt_len_tokens, None),
        ("pooling_mode_weightedmean_tokens", cfg.pooling_mode_weightedmean_tokens, None),
        ("pooling_mode_lasttoken", cfg.pooling_mode_lasttoken, None),
    ];
    let on: Vec<_> = modes.iter().filter(|(_, set, _)| *set).collect();
    match on.as_slice() {
        [(_, _, Some(pooling))] => Ok(*pooling),
        [(field, _, None)] => Err(format!("field `{field}`: only mean, cls and max pooling are supported")),
        [] => Err("no pooling mode is set".into()),
        _ => {
            let fields: Vec<&str> = on.iter().map(|(f, _, _)| *f).collect();
            Err(format!("several pooling modes are set ({}), only one is supported", fields.join(", ")))
        }
    }
}

fn bundle_error(dir: &Path, file: &str, msg: String) -> Error {
    Error::Bundle(format!("{}: {msg}", dir.join(file).display()))
}

fn read_file(dir: &Path, file: &str) -> Result<Vec<u8>> {
    std::fs::read(dir.join(file)).map_err(|e| bundle_error(dir, file, format!("cannot read: {e}")))
}

fn read_json<T: serde::de::DeserializeOwned>(dir: &Path, file: &str) -> Result<T> {
    let bytes = read_file(dir, file)?;
    serde_json::from_slice(&bytes).map_err(|e| bundle_error(dir, file, e.to_string()))
}

/// Like [`read_json`], but a missing file is `None`.
fn optional_json<T: serde::de::DeserializeOwned>(dir: &Path, file: &str) -> Result<Option<T>> {
    if dir.join(file).exists() {
        read_json(dir, file).map(Some)
    } else {
        Ok(None)
    }
}

fn existing_file(dir: &Path, file: &str) -> Result<PathBuf> {
    let path = dir.join(file);
    if path.is_file() {
        Ok(path)
    } else {
        Err(bundle_error(dir, file, "missing".into()))
    }
}

/// Rewrites the pooling config at `path` so that `pooling` is the only mode set, keeping its
/// other fields.
pub(crate) fn set_pooling_mode(path: &Path, pooling: Pooling) -> Result<()> {
    let io = |e: std::io::Error| Error::Bundle(format!("{}: {e}", path.display()));
    let bytes = std::fs::read(path).map_err(io)?;
    let mut cfg: Value =
        serde_json::from_slice(&bytes).map_err(|e| Error::Bundle(format!("{}: {e}", path.display())))?;
    let obj =
        cfg.as_object_mut().ok_or_else(|| Error::Bundle(format!("{}: expected a json object", path.display())))?;
    for (key, value) in obj.iter_mut() {
        if key.starts_with("pooling_mode_") {
            *value = Value::Bool(false);
        }
    }
    let key = match pooling {
        Pooling::Mean => "pooling_mode_mean_tokens",
        Pooling::Cls => "pooling_mode_cls_token",
        Pooling::Max => "pooling_mode_max_tokens",
    };
    obj.insert(key.into(), Value::Bool(true));
    let bytes = serde_json::to_vec_pretty(&cfg).map_err(|e| Error::Internal(e.to_string()))?;
    std::fs::write(path, bytes).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing_text::write_tiny_sentence_transformers_dir;

    fn tiny(pooling: Pooling, normalize: bool) -> (tempfile::TempDir, SentenceTransformersDir) {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_sentence_transformers_dir(dir.path(), 2, pooling, normalize).unwrap();
        let st = read_sentence_transformers_dir(dir.path()).unwrap();
        (dir, st)
    }

    fn bundle_msg(dir: &Path) -> String {
        match read_sentence_transformers_dir(dir) {
            Err(Error::Bundle(msg)) => msg,
            other => panic!("expected a bundle error, got {other:?}"),
        }
    }

    fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
        let mut v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        edit(&mut v);
        std::fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
    }

    #[test]
    fn reads_the_tiny_directory() {
        for (pooling, normalize) in [(Pooling::Mean, true), (Pooling::Cls, false), (Pooling::Max, true)] {
            let (dir, st) = tiny(pooling, normalize);
            assert_eq!(st.pooling, pooling);
            assert_eq!(st.normalize, normalize);
            assert_eq!(st.bert.num_hidden_layers, 2);
            assert_eq!(st.dimension, st.bert.hidden_size);
            assert_eq!(st.weights, dir.path().join(WEIGHTS_FILE));
            assert_eq!(st.tokenizer, dir.path().join(TOKENIZER_FILE));
            assert!(st.max_seq_length <= st.bert.max_position_embeddings);
        }
    }

    #[test]
    fn max_seq_length_is_capped_and_has_a_fallback() {
        let (dir, st) = tiny(Pooling::Mean, true);
        let path = dir.path().join(SENTENCE_BERT_CONFIG_FILE);
        edit_json(&path, |v| v["max_seq_length"] = 100_000.into());
        assert_eq!(read_sentence_transformers_dir(dir.path()).unwrap().max_seq_length, st.bert.max_position_embeddings);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(read_sentence_transformers_dir(dir.path()).unwrap().max_seq_length, st.bert.max_position_embeddings);
        std::fs::write(&path, r#"{"max_seq_length": 0}"#).unwrap();
        assert!(bundle_msg(dir.path()).contains("max_seq_length"));
        std::fs::write(&path, r#"{"max_seq_length": 8, "do_lower_case": true}"#).unwrap();
        assert!(bundle_msg(dir.path()).contains("do_lower_case"));
    }

    #[test]
    fn unsupported_pooling_is_a_clear_error() {
        let (dir, _) = tiny(Pooling::Mean, true);
        let path = dir.path().join("1_Pooling").join(CONFIG_FILE);
        edit_json(&path, |v| {
            v["pooling_mode_mean_tokens"] = false.into();
            v["pooling_mode_mean_sqrt_len_tokens"] = true.into();
        });
        let msg = bundle_msg(dir.path());
        assert!(msg.contains("1_Pooling") && msg.contains("pooling_mode_mean_sqrt_len_tokens"), "{msg}");
        edit_json(&path, |v| v["pooling_mode_cls_token"] = true.into());
        assert!(bundle_msg(dir.path()).contains("several pooling modes"));
        edit_json(&path, |v| {
            v["pooling_mode_mean_sqrt_len_tokens"] = false.into();
            v["pooling_mode_cls_token"] = false.into();
        });
        assert!(bundle_msg(dir.path()).contains("no pooling mode"));
        edit_json(&path, |v| {
            v["pooling_mode_cls_token"] = true.into();
            v["word_embedding_dimension"] = 7.into();
        });
        assert!(bundle_msg(dir.path()).contains("word_embedding_dimension"));
    }

    #[test]
    fn other_modules_and_broken_files_are_refused() {
        let (dir, _) = tiny(Pooling::Mean, false);
        let modules = dir.path().join(MODULES_FILE);
        edit_json(&modules, |v| {
            v.as_array_mut().unwrap().push(serde_json::json!({
                "idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"
            }))
        });
        let msg = bundle_msg(dir.path());
        assert!(msg.contains("modules.json") && msg.contains("Dense"), "{msg}");

        let (dir, _) = tiny(Pooling::Mean, false);
        edit_json(&dir.path().join(CONFIG_FILE), |v| v["num_attention_heads"] = 5.into());
        let msg = bundle_msg(dir.path());
        assert!(msg.contains("config.json") && msg.contains("num_attention_heads"), "{msg}");

        let (dir, _) = tiny(Pooling::Mean, false);
        std::fs::remove_file(dir.path().join(WEIGHTS_FILE)).unwrap();
        assert!(bundle_msg(dir.path()).contains("model.safetensors: missing"));

        let (dir, _) = tiny(Pooling::Mean, false);
        std::fs::write(dir.path().join(MODULES_FILE), "[").unwrap();
        assert!(bundle_msg(dir.path()).contains("modules.json"));
        std::fs::remove_file(dir.path().join(MODULES_FILE)).unwrap();
        assert!(bundle_msg(dir.path()).contains("modules.json: cannot read"));
    }
}
