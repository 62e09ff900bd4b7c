//! Students cut from a teacher embedder: some of its layers, optionally a vocabulary cut to the
//! tokens a corpus uses, and optionally narrower feed-forward blocks.
//!
//! Every cut starts the student from the teacher's own weights, which is what makes distillation
//! on a CPU budget work: taken layers already compute something close to the teacher's, and the
//! kept token embeddings are the teacher's rows. The vocabulary cut matters for size, not speed
//! (a look-up costs the same in any table): all-MiniLM-L6-v2's 30,522 × 384 word embeddings are
//! 11.7 M of its 22.6 M weights.
//!
//! The cut vocabulary keeps every special token and every single-character token (`a`, `##a`),
//! so WordPiece's greedy longest match can still spell any word it could spell before, only in
//! more pieces when a longer piece was dropped; the rest of the budget goes to the tokens the
//! corpus uses most.
//!
//! The feed-forward cut is what buys speed beyond the layer count: the two feed-forward products
//! are two thirds of a MiniLM layer's arithmetic (2 × 384 × 1,536 of 1.77 M multiply-adds per
//! token), and a cut vocabulary spells some words in more pieces, so two layers of six alone come
//! out below three times the teacher's speed. Each layer keeps the units whose weights matter most
//! by magnitude (the norm of a unit's input row times the norm of its output column): a unit with
//! a small product can only add a small vector to the residual stream.

use std::collections::{BTreeMap, HashMap};

use candle_core::{Device, Tensor};
use serde_json::Value;
use tandem_runtime::bundle::{Bundle, EmbedderSpec, FamilySpec};
use tandem_runtime::models::sentence_encoder::{bert_root, expected_tensor_shapes};
use tandem_runtime::text::TextTokenizer;

use crate::{Error, Result};

/// Which parts of the teacher the student keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudentShape {
    /// Teacher layers, in order, that become the student's layers `0..`.
    pub layers: Vec<usize>,
    /// Keep this many vocabulary entries (specials and single characters included); `None` keeps all.
    pub vocab: Option<usize>,
    /// Keep this many feed-forward units per layer (the intermediate size); `None` keeps all.
    pub intermediate: Option<usize>,
}

/// Weights counted by where they sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamCount {
    /// Word, position and token-type tables and their layer norm.
    pub embeddings: usize,
    /// The transformer layers.
    pub layers: usize,
}

impl ParamCount {
    /// Every weight.
    pub fn total(&self) -> usize {
        self.embeddings + self.layers
    }

    /// The counts as bundle metrics: `params`, `params_embeddings`, `params_layers`.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        BTreeMap::from([
            ("params".into(), self.total() as f64),
            ("params_embeddings".into(), self.embeddings as f64),
            ("params_layers".into(), self.layers as f64),
        ])
    }
}

/// A student ready to train: its bundle section, its tokenizer file and its starting tensors.
pub struct Student {
    /// The embedder section (architecture, pooling, tokenizer path, length limit).
    pub spec: EmbedderSpec,
    /// The tokenizer file, rewritten for a cut vocabulary.
    pub tokenizer: Vec<u8>,
    /// Every tensor the architecture reads, by name.
    pub tensors: HashMap<String, Tensor>,
    /// Its weights, counted.
    pub params: ParamCount,
}

/// Counts an embedder's weights, embeddings apart.
pub fn count_params(spec: &EmbedderSpec) -> ParamCount {
    let a = &spec.architecture;
    let embeddings = (a.vocab_size + a.max_position_embeddings + a.type_vocab_size) * a.hidden_size + 2 * a.hidden_size;
    ParamCount { embeddings, layers: a.num_params() - embeddings }
}

/// Cuts a student of `shape` from the embedder bundle `teacher`; `corpus` is the text whose token
/// counts decide which vocabulary entries a cut keeps.
pub fn cut_student(teacher: &Bundle, shape: &StudentShape, corpus: &[&str]) -> Result<Student> {
    let FamilySpec::Embedder(teacher_spec) = &teacher.manifest.family else {
        return Err(Error::InvalidArgument(format!(
            "the teacher {} is a {} bundle, not an embedder",
            teacher.manifest.name,
            teacher.manifest.kind()
        )));
    };
    let n_layers = teacher_spec.architecture.num_hidden_layers;
    if shape.layers.is_empty() || shape.layers.iter().any(|&l| l >= n_layers) {
        return Err(Error::InvalidArgument(format!(
            "--layers must name at least one of the teacher's layers 0..{n_layers}, got {:?}",
            shape.layers
        )));
    }
    let tokenizer_bytes = teacher.file(&teacher_spec.tokenizer)?;
    let (kept, tokenizer) = match shape.vocab {
        None => ((0..teacher_spec.architecture.vocab_size as u32).collect(), tokenizer_bytes.to_vec()),
        Some(size) => {
            let tokenizer = TextTokenizer::from_bytes(tokenizer_bytes, teacher_spec.max_seq_length)?;
            let counts = token_counts(&tokenizer, teacher_spec.architecture.vocab_size, corpus)?;
            cut_vocabulary(tokenizer_bytes, &counts, Some(size))?
        }
    };
    let teacher_intermediate = teacher_spec.architecture.intermediate_size;
    let intermediate = shape.intermediate.unwrap_or(teacher_intermediate);
    if intermediate == 0 || intermediate > teacher_intermediate {
        return Err(Error::InvalidArgument(format!(
            "--intermediate must be between 1 and the teacher's {teacher_intermediate}, got {intermediate}"
        )));
    }
    let mut spec = teacher_spec.clone();
    spec.architecture.num_hidden_layers = shape.layers.len();
    spec.architecture.intermediate_size = intermediate;
    spec.architecture.vocab_size = kept.len();
    let old_pad = u32::try_from(spec.architecture.pad_token_id).unwrap_or(0);
    spec.architecture.pad_token_id = kept.binary_search(&old_pad).unwrap_or(0);

    let device = Device::Cpu;
    let source = bert_root(teacher.var_builder(&device));
    let teacher_shapes = expected_tensor_shapes(&teacher_spec.architecture)?;
    let kept_ids = Tensor::new(kept.as_slice(), &device)?;
    let teacher_tensor = |name: &str| -> Result<Tensor> {
        let dims = teacher_shapes
            .get(name)
            .ok_or_else(|| Error::InvalidArgument(format!("the teacher has no tensor `{name}`")))?;
        Ok(source.get(dims.as_slice(), name)?)
    };
    let mut units = HashMap::new();
    if intermediate < teacher_intermediate {
        for &layer in &shape.layers {
            let w_in = teacher_tensor(&format!("encoder.layer.{layer}.intermediate.dense.weight"))?;
            let w_out = teacher_tensor(&format!("encoder.layer.{layer}.output.dense.weight"))?;
            units.insert(layer, Tensor::new(strongest_units(&w_in, &w_out, intermediate)?.as_slice(), &device)?);
        }
    }
    let mut tensors = HashMap::new();
    for (name, dims) in expected_tensor_shapes(&spec.architecture)? {
        // A feed-forward tensor of a narrowed layer is cut along its units' axis.
        let (source_name, unit_cut) = match layer_of(&name) {
            Some((layer, rest)) => {
                let teacher_layer = shape.layers[layer];
                let axis = match rest {
                    "intermediate.dense.weight" | "intermediate.dense.bias" => Some(0),
                    "output.dense.weight" => Some(1),
                    _ => None,
                };
                let cut = axis.and_then(|axis| Some((units.get(&teacher_layer)?, axis)));
                (format!("encoder.layer.{teacher_layer}.{rest}"), cut)
            }
            None => (name.clone(), None),
        };
        let mut tensor = teacher_tensor(&source_name)?;
        if name == "embeddings.word_embeddings.weight" {
            tensor = tensor.index_select(&kept_ids, 0)?;
        }
        if let Some((kept_units, axis)) = unit_cut {
            tensor = tensor.index_select(kept_units, axis)?.contiguous()?;
        }
        if tensor.dims() != dims.as_slice() {
            return Err(Error::InvalidArgument(format!(
                "student tensor `{name}` came out {:?}, expected {dims:?}",
                tensor.dims()
            )));
        }
        tensors.insert(name, tensor);
    }
    let params = count_params(&spec);
    Ok(Student { spec, tokenizer, tensors, params })
}

/// The `keep` feed-forward units of a layer with the largest ‖input row‖ × ‖output column‖, in
/// ascending order; `w_in` is `[intermediate, hidden]` and `w_out` `[hidden, intermediate]`.
fn strongest_units(w_in: &Tensor, w_out: &Tensor, keep: usize) -> Result<Vec<u32>> {
    let rows = w_in.sqr()?.sum(1)?.sqrt()?.to_vec1::<f32>()?;
    let columns = w_out.sqr()?.sum(0)?.sqrt()?.to_vec1::<f32>()?;
    let mut order: Vec<u32> = (0..rows.len() as u32).collect();
    let weight = |u: u32| rows[u as usize] * columns[u as usize];
    order.sort_by(|&a, &b| weight(b).total_cmp(&weight(a)).then(a.cmp(&b)));
    order.truncate(keep);
    order.sort_unstable();
    Ok(order)
}

/// `encoder.layer.3.attention...` as `(3, "attention...")`.
fn layer_of(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("encoder.layer.")?;
    let (index, rest) = rest.split_once('.')?;
    Some((index.parse().ok()?, rest))
}

/// How often each of the `vocab_size` token ids occurs in `corpus`.
pub(crate) fn token_counts(tokenizer: &TextTokenizer, vocab_size: usize, corpus: &[&str]) -> Result<Vec<u64>> {
    let mut counts = vec![0u64; vocab_size];
    for text in corpus {
        for id in tokenizer.encode(text, true)?.ids {
            if let Some(c) = counts.get_mut(id as usize) {
                *c += 1;
            }
        }
    }
    Ok(counts)
}

/// The kept token ids (ascending; a kept id's new id is its position) and the rewritten
/// `tokenizer.json`, keeping `size` entries of a WordPiece vocabulary by `counts`; with `None`,
/// the specials, the single characters and every token `counts` has seen.
pub(crate) fn cut_vocabulary(
    tokenizer_json: &[u8],
    counts: &[u64],
    size: Option<usize>,
) -> Result<(Vec<u32>, Vec<u8>)> {
    let bad = |why: &str| Error::InvalidArgument(format!("cannot cut the vocabulary: {why}"));
    let mut json: Value = serde_json::from_slice(tokenizer_json).map_err(|e| bad(&e.to_string()))?;
    if json.pointer("/model/type").and_then(Value::as_str) != Some("WordPiece") {
        return Err(bad("the tokenizer is not WordPiece"));
    }
    let vocab: BTreeMap<String, u32> = json
        .pointer("/model/vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("the tokenizer has no model.vocab"))?
        .iter()
        .map(|(token, id)| {
            Ok((token.clone(), id.as_u64().and_then(|i| u32::try_from(i).ok()).ok_or_else(|| bad(token))?))
        })
        .collect::<Result<_>>()?;
    let mut always: Vec<u32> = json
        .get("added_tokens")
        .and_then(Value::as_array)
        .map(|tokens| {
            tokens.iter().filter_map(|t| t.get("id")?.as_u64()).filter_map(|i| u32::try_from(i).ok()).collect()
        })
        .unwrap_or_default();
    if let Some(unk) = json.pointer("/model/unk_token").and_then(Value::as_str).and_then(|t| vocab.get(t)) {
        always.push(*unk);
    }
    always.extend(
        vocab.iter().filter(|(t, _)| t.strip_prefix("##").unwrap_or(t).chars().count() == 1).map(|(_, &id)| id),
    );
    always.sort_unstable();
    always.dedup();
    let mut by_use: Vec<u32> = vocab.values().copied().filter(|id| always.binary_search(id).is_err()).collect();
    let count = |id: u32| counts.get(id as usize).copied().unwrap_or(0);
    let size = size.unwrap_or_else(|| always.len() + by_use.iter().filter(|&&id| count(id) > 0).count());
    if always.len() > size {
        return Err(bad(&format!(
            "the special and single-character tokens alone are {}, more than --vocab {size}",
            always.len()
        )));
    }
    by_use.sort_unstable_by_key(|&id| (std::cmp::Reverse(count(id)), id));
    let mut kept = always;
    kept.extend(by_use.into_iter().take(size - kept.len()));
    kept.sort_unstable();
    let new_id = |old: u64| u32::try_from(old).ok().and_then(|o| kept.binary_search(&o).ok()).map(|i| i as u64);

    let new_vocab: serde_json::Map<String, Value> =
        vocab.iter().filter_map(|(token, &old)| Some((token.clone(), Value::from(new_id(u64::from(old))?)))).collect();
    json["model"]["vocab"] = Value::Object(new_vocab);
    if let Some(tokens) = json.get_mut("added_tokens").and_then(Value::as_array_mut) {
        for token in tokens {
            remap(token.get_mut("id"), new_id);
        }
    }
    if let Some(post) = json.get_mut("post_processor") {
        if let Some(specials) = post.get_mut("special_tokens").and_then(Value::as_object_mut) {
            for special in specials.values_mut() {
                if let Some(ids) = special.get_mut("ids").and_then(Value::as_array_mut) {
                    ids.iter_mut().for_each(|id| remap(Some(id), new_id));
                }
            }
        }
        for key in ["cls", "sep"] {
            remap(post.get_mut(key).and_then(|pair| pair.get_mut(1)), new_id);
        }
    }
    remap(json.pointer_mut("/padding/pad_id"), new_id);
    let bytes = serde_json::to_vec(&json).map_err(|e| bad(&e.to_string()))?;
    Ok((kept, bytes))
}

/// Replaces a JSON id by its new id (a dropped id becomes 0, which only a dropped entry can hold).
fn remap(id: Option<&mut Value>, new_id: impl Fn(u64) -> Option<u64>) {
    if let Some(id) = id {
        if let Some(old) = id.as_u64() {
            *id = Value::from(new_id(old).unwrap_or(0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_runtime::import::{import_sentence_transformers, ImportOptions};
    use tandem_runtime::models::sentence_encoder::Pooling;
    use tandem_runtime::testing_text::write_tiny_sentence_transformers_dir;

    fn teacher(dir: &std::path::Path, layers: usize) -> Bundle {
        let hf = dir.join("hf");
        write_tiny_sentence_transformers_dir(&hf, layers, Pooling::Mean, true).unwrap();
        let out = dir.join("teacher");
        import_sentence_transformers(&hf, &out, &ImportOptions { name: "teacher".into(), version: "1".into() })
            .unwrap();
        Bundle::load(&out).unwrap()
    }

    #[test]
    fn a_student_takes_the_named_layers_and_the_used_vocabulary() {
        let dir = tempfile::tempdir().unwrap();
        let teacher = teacher(dir.path(), 2);
        let FamilySpec::Embedder(spec) = &teacher.manifest.family else { panic!() };
        let full =
            cut_student(&teacher, &StudentShape { layers: vec![1], vocab: None, intermediate: None }, &[]).unwrap();
        assert_eq!(full.spec.architecture.num_hidden_layers, 1);
        let source = bert_root(teacher.var_builder(&Device::Cpu));
        let name = "encoder.layer.0.attention.self.query.weight";
        let taken = source.get(full.tensors[name].dims(), "encoder.layer.1.attention.self.query.weight").unwrap();
        let diff = (&full.tensors[name] - taken).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(diff, 0.0, "student layer 0 is teacher layer 1");
        assert_eq!(full.params.total(), full.spec.architecture.num_params());
        assert_eq!(count_params(spec).embeddings, full.params.embeddings);

        // Cut to the specials, the single characters and the corpus' most used tokens: the corpus
        // tokenizes to the same pieces, renumbered.
        let t = TextTokenizer::from_bytes(teacher.file(&spec.tokenizer).unwrap(), 16).unwrap();
        let corpus = ["the dog", "the dog"];
        let n_always = {
            let json: Value = serde_json::from_slice(teacher.file(&spec.tokenizer).unwrap()).unwrap();
            let vocab = json.pointer("/model/vocab").unwrap().as_object().unwrap();
            let singles = vocab.keys().filter(|t| t.strip_prefix("##").unwrap_or(t).chars().count() == 1).count();
            singles + json["added_tokens"].as_array().unwrap().len()
        };
        let budget = n_always + 2;
        let cut =
            cut_student(&teacher, &StudentShape { layers: vec![0], vocab: Some(budget), intermediate: None }, &corpus)
                .unwrap();
        assert!(cut.spec.architecture.vocab_size <= budget, "{}", cut.spec.architecture.vocab_size);
        assert!(cut.params.embeddings < full.params.embeddings);
        let small = TextTokenizer::from_bytes(&cut.tokenizer, 16).unwrap();
        let before = t.encode("the dog", true).unwrap().ids;
        let after = small.encode("the dog", true).unwrap().ids;
        assert_eq!(before.len(), after.len());
        let rows = cut.tensors["embeddings.word_embeddings.weight"].to_vec2::<f32>().unwrap();
        let old_rows = source
            .get((spec.architecture.vocab_size, spec.architecture.hidden_size), "embeddings.word_embeddings.weight")
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (&old, &new) in before.iter().zip(&after) {
            assert_eq!(rows[new as usize], old_rows[old as usize], "token {old} keeps its embedding as {new}");
        }
        let too_small = StudentShape { layers: vec![0], vocab: Some(3), intermediate: None };
        assert!(cut_student(&teacher, &too_small, &corpus).is_err());
        assert!(cut_student(&teacher, &StudentShape { layers: vec![5], vocab: None, intermediate: None }, &[]).is_err());
    }

    #[test]
    fn a_narrower_student_keeps_each_layers_strongest_feed_forward_units_whole() {
        let dir = tempfile::tempdir().unwrap();
        let teacher = teacher(dir.path(), 2);
        let source = bert_root(teacher.var_builder(&Device::Cpu));
        let FamilySpec::Embedder(spec) = &teacher.manifest.family else { panic!() };
        let (hidden, full) = (spec.architecture.hidden_size, spec.architecture.intermediate_size);
        let keep = full / 4;
        let shape = StudentShape { layers: vec![1, 0], vocab: None, intermediate: Some(keep) };
        let cut = cut_student(&teacher, &shape, &[]).unwrap();
        assert_eq!(cut.spec.architecture.intermediate_size, keep);
        assert_eq!(cut.params.total(), cut.spec.architecture.num_params());
        for (student_layer, teacher_layer) in [(0, 1), (1, 0)] {
            let get = |name: &str, dims: (usize, usize)| {
                source.get(dims, &format!("encoder.layer.{teacher_layer}.{name}")).unwrap().to_vec2::<f32>().unwrap()
            };
            let (w_in, w_out) =
                (get("intermediate.dense.weight", (full, hidden)), get("output.dense.weight", (hidden, full)));
            let bias = source
                .get(full, &format!("encoder.layer.{teacher_layer}.intermediate.dense.bias"))
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let strength = |u: usize| {
                let row: f32 = w_in[u].iter().map(|v| v * v).sum::<f32>().sqrt();
                let column: f32 = w_out.iter().map(|r| r[u] * r[u]).sum::<f32>().sqrt();
                row * column
            };
            let student = |rest: &str| &cut.tensors[&format!("encoder.layer.{student_layer}.{rest}")];
            let s_in = student("intermediate.dense.weight").to_vec2::<f32>().unwrap();
            let s_bias = student("intermediate.dense.bias").to_vec1::<f32>().unwrap();
            let s_out = student("output.dense.weight").to_vec2::<f32>().unwrap();
            // Every kept unit is one teacher unit, whole and in order: its input row, bias and
            // output column together.
            let kept: Vec<usize> = s_in.iter().map(|row| w_in.iter().position(|r| r == row).unwrap()).collect();
            assert!(kept.windows(2).all(|w| w[0] < w[1]), "{kept:?}");
            for (i, &u) in kept.iter().enumerate() {
                assert_eq!(s_bias[i], bias[u]);
                assert!(s_out.iter().zip(&w_out).all(|(s, t)| s[i] == t[u]));
            }
            let weakest_kept = kept.iter().map(|&u| strength(u)).fold(f32::INFINITY, f32::min);
            let strongest_dropped =
                (0..full).filter(|u| !kept.contains(u)).map(strength).fold(f32::NEG_INFINITY, f32::max);
            assert!(weakest_kept >= strongest_dropped, "{weakest_kept} < {strongest_dropped}");
        }
        for bad in [Some(0), Some(full + 1)] {
            let shape = StudentShape { layers: vec![0], vocab: None, intermediate: bad };
            assert!(cut_student(&teacher, &shape, &[]).is_err(), "{bad:?}");
        }
    }
}
