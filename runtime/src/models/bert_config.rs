//! The architecture of a BERT encoder as Tandem stores it in a manifest, read from a Hugging Face
//! `config.json` or written by training, with its validation and its exact parameter count.
//!
//! It is its own module because every BERT-based family (embedder, cross-encoder, image–text text
//! tower) and both encoders (candle's and the packed CPU one) read it.

use candle_transformers::models::bert::{Config, HiddenAct, PositionEmbeddingType};
use serde::{Deserialize, Serialize};

/// Activations candle's BERT implements, with the names Hugging Face configs use for them.
const SUPPORTED_ACTIVATIONS: &[&str] = &["gelu", "gelu_new", "gelu_approximate", "gelu_pytorch_tanh", "relu"];

/// The architecture of a BERT encoder: the fields of a Hugging Face `config.json` that change the
/// computation or the tensor shapes.
///
/// It is stored in our manifest, which is why unknown fields are refused here; reading a Hugging
/// Face `config.json`, which has many more keys, goes through [`BertConfig::from_hf_config_json`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BertConfig {
    /// Rows of the word embedding table; token ids must be below it.
    pub vocab_size: usize,
    /// Width of every token vector, and of the sentence embedding.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer; must divide `hidden_size`.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Feed-forward activation: `gelu` (exact), `gelu_new` / `gelu_approximate` /
    /// `gelu_pytorch_tanh` (tanh approximation) or `relu`.
    pub hidden_act: String,
    /// Rows of the position embedding table: the longest sequence the model accepts.
    pub max_position_embeddings: usize,
    /// Rows of the token type embedding table: single texts use type 0, a cross-encoder's pairs
    /// 0 and 1.
    pub type_vocab_size: usize,
    /// Epsilon of every layer norm.
    pub layer_norm_eps: f64,
    /// The token id used to pad sequences of a batch to the same length.
    pub pad_token_id: usize,
}

/// The lenient mirror of a Hugging Face `config.json`: unknown keys are ignored, and fields that
/// `transformers.BertConfig` defaults get the same defaults.
#[derive(Deserialize)]
struct HfBertConfig {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default = "default_hidden_act")]
    hidden_act: String,
    max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    type_vocab_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    layer_norm_eps: f64,
    #[serde(default)]
    pad_token_id: usize,
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default)]
    position_embedding_type: Option<String>,
}

fn default_hidden_act() -> String {
    "gelu".into()
}

fn default_type_vocab_size() -> usize {
    2
}

fn default_layer_norm_eps() -> f64 {
    1e-12
}

impl BertConfig {
    /// Reads the fields that matter from a Hugging Face `config.json`, ignoring the others.
    ///
    /// Models whose `model_type` is not `bert` are refused: RoBERTa-style models share the tensor
    /// names but offset their position ids, so loading them as BERT would silently give wrong
    /// embeddings. The result is validated.
    pub fn from_hf_config_json(bytes: &[u8]) -> std::result::Result<BertConfig, String> {
        let hf: HfBertConfig = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if let Some(model_type) = hf.model_type.as_deref() {
            if model_type != "bert" {
                return Err(format!("field `model_type`: only \"bert\" is supported, found {model_type:?}"));
            }
        }
        if let Some(kind) = hf.position_embedding_type.as_deref() {
            if kind != "absolute" {
                return Err(format!("field `position_embedding_type`: only \"absolute\" is supported, found {kind:?}"));
            }
        }
        let cfg = BertConfig {
            vocab_size: hf.vocab_size,
            hidden_size: hf.hidden_size,
            num_hidden_layers: hf.num_hidden_layers,
            num_attention_heads: hf.num_attention_heads,
            intermediate_size: hf.intermediate_size,
            hidden_act: hf.hidden_act,
            max_position_embeddings: hf.max_position_embeddings,
            type_vocab_size: hf.type_vocab_size,
            layer_norm_eps: hf.layer_norm_eps,
            pad_token_id: hf.pad_token_id,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that candle can build this architecture; the message names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (field, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            if value == 0 {
                return Err(format!("field `{field}`: must be positive"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "field `num_attention_heads`: must divide hidden_size {}, found {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if hidden_act(&self.hidden_act).is_none() {
            return Err(format!(
                "field `hidden_act`: expected one of {}, found {:?}",
                SUPPORTED_ACTIVATIONS.join(", "),
                self.hidden_act
            ));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(format!("field `layer_norm_eps`: must be finite and positive, found {}", self.layer_norm_eps));
        }
        if self.pad_token_id >= self.vocab_size {
            return Err(format!(
                "field `pad_token_id`: must be below vocab_size {}, found {}",
                self.vocab_size, self.pad_token_id
            ));
        }
        Ok(())
    }

    /// The candle-transformers config for this architecture.
    ///
    /// Dropout probabilities are zero (the encoder is used for inference; candle's BERT ignores
    /// them anyway) and `model_type` is unset so that candle does not guess prefixes: we resolve
    /// the `bert.` prefix ourselves. An invalid `hidden_act` maps to `gelu`; call
    /// [`BertConfig::validate`] first.
    pub fn to_candle(&self) -> Config {
        Config {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            intermediate_size: self.intermediate_size,
            hidden_act: hidden_act(&self.hidden_act).unwrap_or(HiddenAct::Gelu),
            hidden_dropout_prob: 0.0,
            max_position_embeddings: self.max_position_embeddings,
            type_vocab_size: self.type_vocab_size,
            initializer_range: 0.02,
            layer_norm_eps: self.layer_norm_eps,
            pad_token_id: self.pad_token_id,
            position_embedding_type: PositionEmbeddingType::Absolute,
            use_cache: false,
            classifier_dropout: None,
            model_type: None,
        }
    }

    /// The number of weights the encoder reads (the pooler and buffers of checkpoints excluded).
    pub fn num_params(&self) -> usize {
        let h = self.hidden_size;
        let i = self.intermediate_size;
        let embeddings = (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * h + 2 * h;
        let attention = 4 * (h * h + h) + 2 * h;
        let feed_forward = (h * i + i) + (i * h + h) + 2 * h;
        embeddings + self.num_hidden_layers * (attention + feed_forward)
    }
}

pub(crate) fn hidden_act(name: &str) -> Option<HiddenAct> {
    match name {
        "gelu" => Some(HiddenAct::Gelu),
        "gelu_new" | "gelu_approximate" | "gelu_pytorch_tanh" => Some(HiddenAct::GeluApproximate),
        "relu" => Some(HiddenAct::Relu),
        _ => None,
    }
}
