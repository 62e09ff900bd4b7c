//! The encoder an embedder run trains, with what every such run does with it: embed texts with
//! gradients, write the current weights as a servable bundle, and measure a bundle on the
//! retrieval benchmark. Fine-tuning and distillation differ only in their data and loss.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use tandem_runtime::bundle::{now_rfc3339, Bundle, EmbedderSpec, FamilySpec, Manifest, Provenance};
use tandem_runtime::layers::differentiable::l2_normalize;
use tandem_runtime::models::sentence_encoder::bert_root;
use tandem_runtime::models::trainable_bert::{padded_batch, TrainableBert};
use tandem_runtime::text::TextTokenizer;

use crate::data::Split;
use crate::report::EpochRecord;
use crate::retrieval::{self, Benchmark, EvalOptions, FirstStage, RetrievalReport};
use crate::trainer::{self, Export, TestReport, Validation};
use crate::{Error, Result};

/// A trainable BERT with its tokenizer and the bundle it will be written as.
pub(crate) struct TrainingEncoder {
    /// The embedder section of the bundle this encoder is written as.
    pub spec: EmbedderSpec,
    /// The manifest the written bundles start from (identity and provenance are replaced).
    base: Manifest,
    tokenizer: TextTokenizer,
    tokenizer_bytes: Vec<u8>,
    /// The weights the optimiser trains.
    pub vars: VarMap,
    bert: TrainableBert,
    /// Where the weights live.
    pub device: Device,
}

impl TrainingEncoder {
    /// The encoder of an embedder bundle; `what` names the argument in errors (`--init`).
    pub fn from_bundle(bundle: &Bundle, what: &str, max_seq_length: Option<usize>) -> Result<TrainingEncoder> {
        let FamilySpec::Embedder(spec) = bundle.manifest.family.clone() else {
            return Err(Error::InvalidArgument(format!(
                "{what} {} is a {} bundle, not an embedder",
                bundle.manifest.name,
                bundle.manifest.kind()
            )));
        };
        let tokenizer = bundle.file(&spec.tokenizer)?.to_vec();
        let device = tandem_runtime::device::default_device();
        let source = bert_root(bundle.var_builder(&device));
        TrainingEncoder::build(spec, bundle.manifest.clone(), tokenizer, max_seq_length, |name, dims| {
            Ok(source.get(dims, name)?)
        })
    }

    /// An encoder of `spec` whose tensors are given by name (a student cut from a teacher).
    pub fn from_tensors(
        spec: EmbedderSpec,
        base: Manifest,
        tokenizer_bytes: Vec<u8>,
        tensors: &HashMap<String, Tensor>,
        max_seq_length: Option<usize>,
    ) -> Result<TrainingEncoder> {
        TrainingEncoder::build(spec, base, tokenizer_bytes, max_seq_length, |name, dims| {
            let tensor = tensors
                .get(name)
                .ok_or_else(|| Error::InvalidArgument(format!("the student has no tensor `{name}`")))?;
            if tensor.dims() != dims {
                return Err(Error::InvalidArgument(format!(
                    "the student's `{name}` has shape {:?}, the architecture needs {dims:?}",
                    tensor.dims()
                )));
            }
            Ok(tensor.clone())
        })
    }

    fn build(
        spec: EmbedderSpec,
        base: Manifest,
        tokenizer_bytes: Vec<u8>,
        max_seq_length: Option<usize>,
        tensor: impl Fn(&str, &[usize]) -> Result<Tensor>,
    ) -> Result<TrainingEncoder> {
        let device = tandem_runtime::device::default_device();
        let max_len = max_seq_length.unwrap_or(spec.max_seq_length).min(spec.max_seq_length);
        let tokenizer = TextTokenizer::from_bytes(&tokenizer_bytes, max_len)?;
        let vars = VarMap::new();
        let bert =
            TrainableBert::new(&spec.architecture, spec.pooling, VarBuilder::from_varmap(&vars, DType::F32, &device))?;
        for (name, var) in vars.data().lock().expect("varmap lock poisoned. This is a bug.").iter() {
            var.set(&tensor(name, var.dims())?.to_device(&device)?.to_dtype(DType::F32)?)?;
        }
        Ok(TrainingEncoder { spec, base, tokenizer, tokenizer_bytes, vars, bert, device })
    }

    /// Pooled, unnormalised vectors of texts, `[n, hidden]`, with the graph for training.
    pub fn pooled(&self, texts: &[&str]) -> Result<Tensor> {
        let ids = texts
            .iter()
            .map(|t| Ok(self.tokenizer.encode(t, true)?.ids))
            .collect::<tandem_runtime::Result<Vec<Vec<u32>>>>()?;
        let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let pad = u32::try_from(self.spec.architecture.pad_token_id).unwrap_or(0);
        let (input_ids, mask) = padded_batch(&refs, pad, &self.device)?;
        Ok(self.bert.forward(&input_ids, &mask)?)
    }

    /// Unit-length embeddings of texts, `[n, hidden]`, with the graph for training.
    pub fn embed(&self, texts: &[&str]) -> Result<Tensor> {
        Ok(l2_normalize(&self.pooled(texts)?, 1e-12)?)
    }

    /// The manifest of the current weights as bundle `name@version`.
    pub fn manifest(
        &self,
        name: &str,
        version: &str,
        provenance: Provenance,
        metrics: BTreeMap<String, f64>,
    ) -> Manifest {
        let mut manifest = self.base.clone();
        manifest.family = FamilySpec::Embedder(self.spec.clone());
        manifest.name = name.to_owned();
        manifest.version = version.to_owned();
        manifest.provenance = provenance;
        manifest.metrics = metrics;
        manifest.created_at = now_rfc3339();
        manifest
    }

    /// The files a bundle holds besides the weights: the tokenizer.
    pub fn tokenizer_files(&self) -> Vec<(String, Vec<u8>)> {
        vec![(self.spec.tokenizer.clone(), self.tokenizer_bytes.clone())]
    }

    /// Validation of the current weights: written as a bundle beside the run
    /// (`<out>.val-bundle`) and measured by the benchmark's own evaluation, nDCG@10 as accuracy.
    pub fn validate(
        &self,
        manifest: &Manifest,
        out: &Path,
        benchmark: &Benchmark,
        queries: usize,
        corpus: usize,
    ) -> Result<Validation> {
        let dir = trainer::sibling(out, "val-bundle");
        self.write_bundle(&dir, manifest)?;
        let report = evaluate(benchmark, &dir, Split::Val, Some(queries), Some(corpus))?;
        Ok(Validation { loss: 1.0 - report.ndcg_at_10, accuracy: report.ndcg_at_10, extra: report.figures() })
    }

    /// The export of the current weights with `manifest`, whose metrics gain the last validation's
    /// nDCG@10.
    pub fn export(&self, mut manifest: Manifest, params: usize, history: &[EpochRecord]) -> Export {
        if let Some(last) = history.last() {
            manifest.metrics.insert("val_ndcg_at_10".into(), last.val_accuracy);
        }
        Export {
            manifest,
            vars: self.vars.clone(),
            params,
            val_accuracy: history.last().map_or(0.0, |r| r.val_accuracy),
            head_mixture: None,
            dual_io: None,
            files: self.tokenizer_files(),
        }
    }

    /// Writes the current weights with `manifest` as a servable bundle in `dir`.
    pub fn write_bundle(&self, dir: &Path, manifest: &Manifest) -> Result<()> {
        let weights = tandem_runtime::bundle::serialize_varmap(&self.vars)?;
        let mut files: Vec<(&str, &[u8])> = vec![(tandem_runtime::bundle::WEIGHTS_FILE, &weights)];
        let tokenizer = self.tokenizer_files();
        files.extend(tokenizer.iter().map(|(p, b)| (p.as_str(), b.as_slice())));
        tandem_runtime::bundle::write_bundle_files(dir, manifest, &files)?;
        Ok(())
    }
}

/// Measures the embedder bundle in `dir` on a split of the benchmark, as `tandem eval` does.
fn evaluate(
    benchmark: &Benchmark,
    dir: &Path,
    split: Split,
    queries: Option<usize>,
    corpus: Option<usize>,
) -> Result<RetrievalReport> {
    let options = EvalOptions { split, limit_queries: queries, corpus_limit: corpus, rerank: None };
    retrieval::evaluate(benchmark, &FirstStage::Embedder(dir.to_path_buf()), &options)
}

/// The test of an exported embedder bundle: nDCG@10 as accuracy, the other figures beside it.
pub(crate) fn test(
    benchmark: &Benchmark,
    dir: &Path,
    queries: Option<usize>,
    corpus: Option<usize>,
) -> Result<TestReport> {
    let report = evaluate(benchmark, dir, Split::Test, queries, corpus)?;
    Ok(TestReport { accuracy: report.ndcg_at_10, n: report.n, extra: report.figures() })
}
