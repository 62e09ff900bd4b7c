//! Small sentence-transformers directories and text bundles for the tests of this crate and of
//! downstream crates.
//!
//! [`write_tiny_sentence_transformers_dir`] writes a complete directory with a tiny random BERT
//! and a real WordPiece tokenizer; [`cut_sentence_transformers_dir`] shrinks a real one to its
//! first layers, so that a test can use real weights and vocabulary at a fraction of the cost;
//! [`write_tiny_cross_encoder_bundle`] writes a cross-encoder bundle over the same tiny BERT.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use safetensors::tensor::TensorView;
use safetensors::SafeTensors;
use serde_json::{json, Value};
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::bundle::{write_bundle_files, CrossEncoderSpec, FamilySpec, WEIGHTS_FILE as BUNDLE_WEIGHTS_FILE};
use crate::hf::{set_pooling_mode, CONFIG_FILE, MODULES_FILE, SENTENCE_BERT_CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};
use crate::models::cross_encoder::SCORE_PREFIX;
use crate::models::sentence_encoder::{expected_tensor_shapes, is_unused_checkpoint_tensor, BertConfig, Pooling};
use crate::testing::generic_manifest;
use crate::{Error, Result};

/// The tiny WordPiece vocabulary, in id order; the first five are the special tokens.
pub const TINY_VOCAB: &[&str] = &[
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "!", "?", "'", "a", "the", "is", "this", "that", "test",
    "sentence", "cat", "dog", "sat", "on", "mat", "hello", "world", "good", "bad", "day", "night", "i", "you", "we",
    "like", "love", "run", "fast", "slow", "big", "small", "red", "blue", "car", "house", "tree", "and", "or", "not",
    "##s", "##ing", "##ed", "##er",
];

/// The `max_seq_length` of the tiny directory: short, so that tests can hit it.
pub const TINY_MAX_SEQ_LENGTH: usize = 24;

/// The architecture of the tiny BERT: width 32, two heads, `layers` layers.
pub fn tiny_bert_config(layers: usize) -> BertConfig {
    BertConfig {
        vocab_size: TINY_VOCAB.len(),
        hidden_size: 32,
        num_hidden_layers: layers,
        num_attention_heads: 2,
        intermediate_size: 64,
        hidden_act: "gelu".into(),
        max_position_embeddings: 32,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        pad_token_id: 0,
    }
}

/// A `tokenizer.json` over [`TINY_VOCAB`] built like BERT's uncased tokenizer.
///
/// Like files exported by `transformers`, it pads every text to a fixed length and truncates, so
/// tests notice if a loader forgets to turn those off.
pub fn tiny_tokenizer_json() -> String {
    let vocab: serde_json::Map<String, Value> =
        TINY_VOCAB.iter().enumerate().map(|(i, t)| ((*t).to_owned(), json!(i))).collect();
    let model: WordPiece = serde_json::from_value(json!({
        "unk_token": "[UNK]",
        "continuing_subword_prefix": "##",
        "max_input_chars_per_word": 100,
        "vocab": vocab,
    }))
    .expect("the tiny WordPiece model is well-formed. This is a bug.");
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(true, true, None, true)))
        .expect("a BERT normalizer is accepted. This is a bug.");
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    let template = TemplateProcessing::builder()
        .try_single("[CLS] $A [SEP]")
        .and_then(|b| b.try_pair("[CLS] $A [SEP] $B:1 [SEP]:1"))
        .expect("the BERT template parses. This is a bug.")
        .special_tokens(vec![("[CLS]", 2), ("[SEP]", 3)])
        .build()
        .expect("the BERT template is complete. This is a bug.");
    tokenizer.with_post_processor(Some(template));
    tokenizer.with_decoder(Some(WordPieceDecoder::default()));
    let specials = TINY_VOCAB[..5].iter().map(|t| AddedToken::from(*t, true));
    tokenizer.add_special_tokens(specials).expect("special tokens of the vocabulary are accepted. This is a bug.");
    tokenizer.with_padding(Some(PaddingParams {
        strategy: PaddingStrategy::Fixed(32),
        pad_token: "[PAD]".into(),
        ..PaddingParams::default()
    }));
    tokenizer
        .with_truncation(Some(TruncationParams { max_length: 32, ..TruncationParams::default() }))
        .expect("truncation to 32 is valid. This is a bug.");
    tokenizer.to_string(true).expect("a tokenizer serializes. This is a bug.")
}

/// [`tiny_tokenizer_json`] with every lowercase ASCII letter and digit appended, alone and as a
/// continuation (`##a`), and the punctuation of class names and glosses (`/ - : ; ( )`): any
/// word spells, in pieces, so image–text captions and free-text labels never collapse to `[UNK]`.
/// The tiny vocabulary's ids are unchanged.
pub fn tiny_spelling_tokenizer_json() -> String {
    let mut json: Value =
        serde_json::from_str(&tiny_tokenizer_json()).expect("the tiny tokenizer is JSON. This is a bug.");
    let vocab = json["model"]["vocab"].as_object_mut().expect("the tiny tokenizer has a vocabulary. This is a bug.");
    let characters = ('a'..='z').chain('0'..='9');
    let pieces = characters.clone().map(String::from).chain(characters.map(|c| format!("##{c}")));
    for piece in pieces.chain(["/", "-", ":", ";", "(", ")"].map(String::from)) {
        let id = vocab.len();
        vocab.entry(piece).or_insert(json!(id));
    }
    json.to_string()
}

/// Writes a complete sentence-transformers directory with a tiny random BERT of `layers` layers
/// (see [`tiny_bert_config`]) into `dir`, which is created if needed.
///
/// Weights are deterministic for a given `layers`. Like real checkpoints, the weights file also
/// holds an unused pooler and the i64 `embeddings.position_ids` buffer.
pub fn write_tiny_sentence_transformers_dir(
    dir: &Path,
    layers: usize,
    pooling: Pooling,
    normalize: bool,
) -> Result<()> {
    let cfg = tiny_bert_config(layers);
    std::fs::create_dir_all(dir.join("1_Pooling")).map_err(|e| io_error(dir, e))?;

    let mut config = serde_json::to_value(&cfg).map_err(|e| Error::Internal(e.to_string()))?;
    let extra = json!({
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1,
        "hidden_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "model_type": "bert",
        "position_embedding_type": "absolute",
        "use_cache": true,
    });
    merge(&mut config, extra);
    write_json(&dir.join(CONFIG_FILE), &config)?;

    let mut modules = vec![
        json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
        json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
    ];
    if normalize {
        std::fs::create_dir_all(dir.join("2_Normalize")).map_err(|e| io_error(dir, e))?;
        modules.push(
            json!({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}),
        );
    }
    write_json(&dir.join(MODULES_FILE), &Value::Array(modules))?;

    let pooling_path = dir.join("1_Pooling").join(CONFIG_FILE);
    write_json(
        &pooling_path,
        &json!({
            "word_embedding_dimension": cfg.hidden_size,
            "pooling_mode_cls_token": false,
            "pooling_mode_mean_tokens": false,
            "pooling_mode_max_tokens": false,
            "pooling_mode_mean_sqrt_len_tokens": false,
        }),
    )?;
    set_pooling_mode(&pooling_path, pooling)?;
    write_json(
        &dir.join(SENTENCE_BERT_CONFIG_FILE),
        &json!({"max_seq_length": TINY_MAX_SEQ_LENGTH, "do_lower_case": false}),
    )?;
    let tokenizer_path = dir.join(TOKENIZER_FILE);
    std::fs::write(&tokenizer_path, tiny_tokenizer_json()).map_err(|e| io_error(&tokenizer_path, e))?;

    let weights = tiny_weights(&cfg)?;
    let bytes = safetensors::serialize(weights.iter().map(|(k, v)| (k.as_str(), v)), None)
        .map_err(|e| Error::Internal(e.to_string()))?;
    let weights_path = dir.join(WEIGHTS_FILE);
    std::fs::write(&weights_path, bytes).map_err(|e| io_error(&weights_path, e))
}

/// Writes a `cross_encoder` bundle named `name@version` to `dir/name` and returns its path: the
/// tiny BERT of [`tiny_bert_config`] (2 layers) with deterministic weights, mean pooling, a head
/// away from zero (so that scores differ between pairs), the tiny tokenizer and
/// [`TINY_MAX_SEQ_LENGTH`].
pub fn write_tiny_cross_encoder_bundle(dir: &Path, name: &str, version: &str) -> Result<PathBuf> {
    let cfg = tiny_bert_config(2);
    let mut weights: Vec<(String, Tensor)> =
        tiny_weights(&cfg)?.into_iter().filter(|(name, _)| !is_unused_checkpoint_tensor(name)).collect();
    let mut rng = SplitMix64(0xc055);
    let head: Vec<f32> = (0..cfg.hidden_size).map(|_| rng.uniform()).collect();
    weights.push((format!("{SCORE_PREFIX}.weight"), Tensor::from_vec(head, (1, cfg.hidden_size), &Device::Cpu)?));
    weights.push((format!("{SCORE_PREFIX}.bias"), Tensor::from_vec(vec![0.1f32], 1, &Device::Cpu)?));
    let bytes = safetensors::serialize(weights.iter().map(|(k, v)| (k.as_str(), v)), None)
        .map_err(|e| Error::Internal(e.to_string()))?;
    let spec = CrossEncoderSpec {
        architecture: cfg,
        tokenizer: TOKENIZER_FILE.into(),
        pooling: Pooling::Mean,
        max_seq_length: TINY_MAX_SEQ_LENGTH,
    };
    let mut manifest = generic_manifest(name, FamilySpec::CrossEncoder(spec));
    manifest.version = version.to_owned();
    let tokenizer = tiny_tokenizer_json();
    let path = dir.join(name);
    write_bundle_files(&path, &manifest, &[(BUNDLE_WEIGHTS_FILE, &bytes), (TOKENIZER_FILE, tokenizer.as_bytes())])?;
    Ok(path)
}

/// Deterministic weights of the right scale: layer norms near identity, matrices with unit-ish
/// gain, so that activations neither vanish nor explode and token vectors differ.
fn tiny_weights(cfg: &BertConfig) -> Result<Vec<(String, Tensor)>> {
    let mut rng = SplitMix64(0x5eed ^ cfg.num_hidden_layers as u64);
    let mut weights = Vec::new();
    let shapes = expected_tensor_shapes(cfg)?;
    let pooler = [
        ("pooler.dense.weight".to_owned(), vec![cfg.hidden_size, cfg.hidden_size]),
        ("pooler.dense.bias".to_owned(), vec![cfg.hidden_size]),
    ];
    for (name, shape) in shapes.into_iter().chain(pooler) {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = if name.ends_with("LayerNorm.weight") {
            (0..n).map(|_| 1.0 + 0.1 * rng.uniform()).collect()
        } else if name.ends_with("bias") {
            (0..n).map(|_| 0.1 * rng.uniform()).collect()
        } else if name.starts_with("embeddings.") {
            (0..n).map(|_| rng.uniform()).collect()
        } else {
            // Uniform on ±sqrt(3 / fan_in) has variance 1 / fan_in.
            let scale = (3.0 / shape[1] as f32).sqrt();
            (0..n).map(|_| scale * rng.uniform()).collect()
        };
        weights.push((name, Tensor::from_vec(values, shape, &Device::Cpu)?));
    }
    let positions: Vec<i64> = (0..cfg.max_position_embeddings as i64).collect();
    let positions = Tensor::from_vec(positions, (1, cfg.max_position_embeddings), &Device::Cpu)?;
    weights.push(("embeddings.position_ids".into(), positions.to_dtype(DType::I64)?));
    Ok(weights)
}

/// Writes into `dst` a copy of the sentence-transformers directory `src` keeping only its first
/// `layers` transformer layers and pooling with `pooling`.
///
/// The config's `num_hidden_layers` is rewritten and the other layers' tensors are dropped; every
/// other tensor is copied with its dtype. Modules and the tokenizer are copied unchanged. `src`
/// must have the layout of [`crate::hf::read_sentence_transformers_dir`] with the transformer at
/// the top level.
pub fn cut_sentence_transformers_dir(src: &Path, dst: &Path, layers: usize, pooling: Pooling) -> Result<()> {
    let st = crate::hf::read_sentence_transformers_dir(src)?;
    if layers == 0 || layers > st.bert.num_hidden_layers {
        return Err(Error::InvalidInput(format!(
            "cannot keep {layers} layers of a model with {}",
            st.bert.num_hidden_layers
        )));
    }
    if st.weights.parent() != Some(src) {
        return Err(Error::InvalidInput("the transformer module must be at the top of the directory".into()));
    }
    let modules_bytes = read(&src.join(MODULES_FILE))?;
    let modules: Vec<Value> = serde_json::from_slice(&modules_bytes).map_err(|e| bundle_error(src, MODULES_FILE, e))?;
    let pooling_dir = modules
        .iter()
        .find(|m| m["type"] == "sentence_transformers.models.Pooling")
        .and_then(|m| m["path"].as_str())
        .ok_or_else(|| Error::Bundle(format!("{}: no pooling module", src.join(MODULES_FILE).display())))?;
    for m in &modules {
        if let Some(path) = m["path"].as_str().filter(|p| !p.is_empty()) {
            std::fs::create_dir_all(dst.join(path)).map_err(|e| io_error(dst, e))?;
        }
    }
    std::fs::create_dir_all(dst).map_err(|e| io_error(dst, e))?;
    let mut copy = vec![MODULES_FILE.to_owned(), TOKENIZER_FILE.to_owned(), format!("{pooling_dir}/{CONFIG_FILE}")];
    if src.join(SENTENCE_BERT_CONFIG_FILE).exists() {
        copy.push(SENTENCE_BERT_CONFIG_FILE.to_owned());
    }
    for file in &copy {
        std::fs::copy(src.join(file), dst.join(file)).map_err(|e| io_error(&src.join(file), e))?;
    }
    set_pooling_mode(&dst.join(pooling_dir).join(CONFIG_FILE), pooling)?;

    let mut config: Value =
        serde_json::from_slice(&read(&src.join(CONFIG_FILE))?).map_err(|e| bundle_error(src, CONFIG_FILE, e))?;
    config["num_hidden_layers"] = json!(layers);
    write_json(&dst.join(CONFIG_FILE), &config)?;

    let weights = read(&st.weights)?;
    let (_, metadata) = SafeTensors::read_metadata(&weights).map_err(|e| bundle_error(src, WEIGHTS_FILE, e))?;
    let tensors = SafeTensors::deserialize(&weights).map_err(|e| bundle_error(src, WEIGHTS_FILE, e))?;
    let kept: Vec<(String, TensorView)> =
        tensors.tensors().into_iter().filter(|(name, _)| layer_index(name).is_none_or(|i| i < layers)).collect();
    let info: Option<HashMap<String, String>> = metadata.metadata().clone();
    let bytes = safetensors::serialize(kept, info).map_err(|e| Error::Internal(e.to_string()))?;
    let path = dst.join(WEIGHTS_FILE);
    std::fs::write(&path, bytes).map_err(|e| io_error(&path, e))
}

/// The layer of an encoder tensor (`[bert.]encoder.layer.{i}.…`), `None` for other tensors.
fn layer_index(name: &str) -> Option<usize> {
    let name = name.strip_prefix("bert.").unwrap_or(name);
    let rest = name.strip_prefix("encoder.layer.")?;
    rest.split('.').next()?.parse().ok()
}

/// Adds the keys of `extra` to the object `base`.
fn merge(base: &mut Value, extra: Value) {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| io_error(path, e))
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::Internal(e.to_string()))?;
    std::fs::write(path, bytes).map_err(|e| io_error(path, e))
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Bundle(format!("{}: {e}", path.display()))
}

fn bundle_error(dir: &Path, file: &str, e: impl std::fmt::Display) -> Error {
    Error::Bundle(format!("{}: {e}", dir.join(file).display()))
}

/// A tiny seeded generator, enough for test weights and free of dependencies.
struct SplitMix64(u64);

impl SplitMix64 {
    /// Uniform on [-1, 1).
    fn uniform(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Sentences of everyday English for the embedding benchmarks: one is a short text (10 to 14
/// tokens with the special tokens), consecutive ones joined make a long text.
pub const EVERYDAY_SENTENCES: [&str; 24] = [
    "The cat slept on the warm windowsill all afternoon.",
    "Stock markets fell sharply after the surprise rate decision.",
    "She planted tomatoes and basil in the small garden.",
    "The train to the coast leaves every hour on weekdays.",
    "Researchers found a new species of frog in the rainforest.",
    "He forgot his umbrella and got soaked on the way home.",
    "The museum opens a photography exhibition next month.",
    "Our team finally fixed the bug in the payment service.",
    "Fresh bread from the corner bakery sells out by noon.",
    "The children built a sandcastle before the tide came in.",
    "A strong wind knocked down several trees in the park.",
    "The library extended its opening hours during exams.",
    "My neighbour walks her two dogs along the river.",
    "The concert was cancelled because of the heavy storm.",
    "Doctors recommend drinking water throughout the day.",
    "The company hired twenty engineers for the new office.",
    "He learned to play the guitar by watching online videos.",
    "The new bridge shortened the commute for many drivers.",
    "Farmers expect a good harvest after the spring rains.",
    "The old castle attracts thousands of tourists every summer.",
    "She finished the marathon in just under four hours.",
    "The recipe calls for two eggs and a cup of flour.",
    "Astronomers observed a bright comet near the horizon.",
    "The city council approved a plan for more bike lanes.",
];

/// `n` short texts (single sentences) and `n` long ones (consecutive sentences joined while they
/// stay within `long_tokens` tokens), deterministic, so that runtimes timed apart see the same texts.
pub fn benchmark_texts(
    tokenizer: &crate::text::TextTokenizer,
    n: usize,
    long_tokens: usize,
) -> Result<(Vec<String>, Vec<String>)> {
    let pick = |i: usize| EVERYDAY_SENTENCES[i % EVERYDAY_SENTENCES.len()];
    let short = (0..n).map(|i| pick(i).to_owned()).collect();
    let mut long = Vec::with_capacity(n);
    for i in 0..n {
        let mut text = String::new();
        for j in i.. {
            let candidate = format!("{text} {}", pick(j)).trim().to_owned();
            if tokenizer.encode(&candidate, true)?.ids.len() > long_tokens || j >= i + EVERYDAY_SENTENCES.len() {
                break;
            }
            text = candidate;
        }
        long.push(text);
    }
    Ok((short, long))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hf::read_sentence_transformers_dir;
    use crate::models::sentence_encoder::{is_unused_checkpoint_tensor, SentenceEncoder};
    use crate::text::TextTokenizer;
    use candle_nn::VarBuilder;

    fn load(dir: &Path) -> (SentenceEncoder, TextTokenizer) {
        let st = read_sentence_transformers_dir(dir).unwrap();
        let weights = std::fs::read(&st.weights).unwrap();
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu).unwrap();
        let encoder = SentenceEncoder::new(&st.bert, st.pooling, vb).unwrap();
        let tokenizer = TextTokenizer::from_bytes(&std::fs::read(&st.tokenizer).unwrap(), st.max_seq_length).unwrap();
        (encoder, tokenizer)
    }

    #[test]
    fn the_tiny_directory_loads_and_embeds() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_sentence_transformers_dir(dir.path(), 2, Pooling::Mean, true).unwrap();
        let (encoder, tokenizer) = load(dir.path());
        assert_eq!(tokenizer.max_seq_length(), TINY_MAX_SEQ_LENGTH);
        let texts = ["Hello world!", "The cat sat on the mat.", ""];
        let encoded = tokenizer.encode_batch(&texts, true).unwrap();
        let ids: Vec<&[u32]> = encoded.iter().map(|e| e.ids.as_slice()).collect();
        let vectors = encoder.embed(&ids).unwrap();
        assert_eq!(vectors.len(), 3);
        assert!(vectors.iter().all(|v| v.len() == 32 && v.iter().all(|x| x.is_finite())));
        assert_ne!(vectors[0], vectors[1]);

        // The file holds exactly the encoder's tensors plus the unused ones real checkpoints have.
        let weights = std::fs::read(dir.path().join(WEIGHTS_FILE)).unwrap();
        let st = SafeTensors::deserialize(&weights).unwrap();
        let expected = expected_tensor_shapes(&tiny_bert_config(2)).unwrap();
        let mut names: Vec<String> =
            st.names().into_iter().filter(|n| !is_unused_checkpoint_tensor(n)).map(str::to_owned).collect();
        names.sort();
        assert_eq!(names, expected.keys().cloned().collect::<Vec<_>>());
        assert_eq!(st.len(), expected.len() + 3);
    }

    #[test]
    fn tiny_weights_are_deterministic() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        write_tiny_sentence_transformers_dir(a.path(), 1, Pooling::Cls, false).unwrap();
        write_tiny_sentence_transformers_dir(b.path(), 1, Pooling::Cls, false).unwrap();
        let read = |d: &Path| std::fs::read(d.join(WEIGHTS_FILE)).unwrap();
        assert_eq!(read(a.path()), read(b.path()));
    }

    #[test]
    fn cutting_keeps_the_first_layers_and_switches_pooling() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        write_tiny_sentence_transformers_dir(src.path(), 3, Pooling::Mean, true).unwrap();
        cut_sentence_transformers_dir(src.path(), dst.path(), 1, Pooling::Cls).unwrap();
        let st = read_sentence_transformers_dir(dst.path()).unwrap();
        assert_eq!(st.bert, tiny_bert_config(1));
        assert_eq!((st.pooling, st.normalize), (Pooling::Cls, true));

        let weights = std::fs::read(&st.weights).unwrap();
        let cut = SafeTensors::deserialize(&weights).unwrap();
        assert!(cut.names().iter().all(|n| layer_index(n).is_none_or(|i| i == 0)));
        assert_eq!(cut.tensor("embeddings.position_ids").unwrap().dtype(), safetensors::Dtype::I64);
        let original = std::fs::read(src.path().join(WEIGHTS_FILE)).unwrap();
        let original = SafeTensors::deserialize(&original).unwrap();
        for name in cut.names() {
            assert_eq!(cut.tensor(name).unwrap().data(), original.tensor(name).unwrap().data(), "{name}");
        }
        // The cut model runs.
        let (encoder, tokenizer) = load(dst.path());
        let ids = tokenizer.encode("a red car", false).unwrap().ids;
        assert_eq!(encoder.embed(&[&ids]).unwrap()[0].len(), 32);

        assert!(cut_sentence_transformers_dir(src.path(), dst.path(), 4, Pooling::Cls).is_err());
        assert!(cut_sentence_transformers_dir(src.path(), dst.path(), 0, Pooling::Cls).is_err());
    }

    #[test]
    fn layer_indices() {
        assert_eq!(layer_index("encoder.layer.11.output.dense.weight"), Some(11));
        assert_eq!(layer_index("bert.encoder.layer.2.attention.self.query.bias"), Some(2));
        assert_eq!(layer_index("embeddings.word_embeddings.weight"), None);
    }
}
