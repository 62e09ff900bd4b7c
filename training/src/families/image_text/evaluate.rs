//! The figures of an image–text bundle on a split, measured through the serving path: the
//! runtime embeds the images and the captions (`Runtime::embed_image_text`) and classifies the
//! images zero-shot (`Runtime::classify_zero_shot`), exactly as `embed` and `classify` answer
//! over HTTP. Validation, the test of an exported bundle and `tandem eval --task image-text` all
//! measure with [`evaluate_bundle`].
//!
//! The figures, over the N images of the split and the C captions of the dataset's
//! [`CaptionSet`], with similarity the dot product of the unit vectors (ties go to the earlier
//! index):
//!
//! - **image→text R@K** (`i2t_r@1`, `i2t_r@5`): the share of the N images for which at least one
//!   of the K captions most similar to the image describes the image's class;
//! - **text→image R@K** (`t2i_r@1`, `t2i_r@5`): the share of the C captions for which at least one
//!   of the K images most similar to the caption is of the caption's class;
//! - **zero-shot accuracy** (`zero_shot_accuracy`): the share of the N images whose most probable
//!   label, among the class names alone (no template, no gloss: the bundle's `labels`), is their
//!   class.

use std::collections::BTreeMap;
use std::path::Path;

use tandem_runtime::image::GrayImage;
use tandem_runtime::{BatchConfig, ImageTextEmbedRequest, ImageTextInput, Runtime, RuntimeConfig, ZeroShotRequest};

use super::captions::CaptionSet;
use crate::data::{self, Dataset, DatasetName, Split};
use crate::{Error, Result};

/// Inputs sent to the runtime per request: a few of its batches, so that batching works and no
/// request holds the whole split.
const CHUNK: usize = 256;

/// What [`evaluate_bundle`] measures; see the module's documentation for the definitions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageTextReport {
    /// Image→text recall at 1.
    pub i2t_r1: f64,
    /// Image→text recall at 5.
    pub i2t_r5: f64,
    /// Text→image recall at 1.
    pub t2i_r1: f64,
    /// Text→image recall at 5.
    pub t2i_r5: f64,
    /// Zero-shot accuracy against the class names.
    pub zero_shot_accuracy: f64,
    /// Images measured.
    pub n: usize,
    /// Captions searched.
    pub captions: usize,
}

impl ImageTextReport {
    /// The figures by the names `tandem eval` prints (`i2t_r@1`, ..., `zero_shot_accuracy`, `n`).
    pub fn figures(&self) -> BTreeMap<String, f64> {
        BTreeMap::from([
            ("i2t_r@1".into(), self.i2t_r1),
            ("i2t_r@5".into(), self.i2t_r5),
            ("t2i_r@1".into(), self.t2i_r1),
            ("t2i_r@5".into(), self.t2i_r5),
            ("zero_shot_accuracy".into(), self.zero_shot_accuracy),
            ("n".into(), self.n as f64),
        ])
    }
}

/// Measures the `image_text` bundle in `dir` on the first `limit` images (all when `None`) of a
/// split of its training dataset (`dataset` overrides the provenance's), against that dataset's
/// caption set; WordNet as [`super::caption_set`] finds it. What `tandem eval --task image-text`
/// prints.
pub fn evaluate_split(
    dir: &Path,
    dataset: Option<DatasetName>,
    split: Split,
    data_dir: &Path,
    wordnet_dir: Option<&Path>,
    limit: Option<usize>,
) -> Result<ImageTextReport> {
    let manifest = tandem_runtime::bundle::Bundle::load(dir)?.manifest;
    if manifest.image_text().is_none() {
        return Err(Error::InvalidArgument(format!(
            "{} is a {} bundle, not an image_text one",
            dir.display(),
            manifest.kind()
        )));
    }
    let dataset = match dataset {
        Some(dataset) => dataset,
        None => manifest.provenance.dataset.parse()?,
    };
    let images = data::load(dataset, split, data_dir)?;
    let n = limit.unwrap_or(images.len()).min(images.len());
    let images = images.subset(&(0..n).collect::<Vec<_>>());
    evaluate_bundle(dir, &images, &super::caption_set(dataset, data_dir, wordnet_dir)?)
}

/// Measures the `image_text` bundle in `dir` on `images` (each labelled with its class, the
/// bundle's labels in the same order) against `captions`, through the runtime.
pub fn evaluate_bundle(dir: &Path, images: &Dataset, captions: &CaptionSet) -> Result<ImageTextReport> {
    if images.is_empty() {
        return Err(Error::InvalidArgument("no images to measure".into()));
    }
    let batch = BatchConfig {
        // A chunk, or a chunk and the labels, is queued at once.
        queue_capacity: 2 * CHUNK,
        // A chunk waits behind nothing else, but a slow machine may take minutes over it.
        request_timeout: std::time::Duration::from_secs(3600),
        ..BatchConfig::default()
    };
    // Room for every image's vector, so that zero-shot classification finds them cached.
    let cache_capacity = (images.len() + captions.captions.len() + CHUNK) as u64;
    let runtime = Runtime::new(RuntimeConfig { batch, cache_capacity });
    let id = runtime.load(dir)?.id;
    let labels = &runtime.model(&id)?.manifest.image_text().map(|spec| spec.labels.clone()).unwrap_or_default();
    if labels != &images.classes {
        return Err(Error::InvalidArgument(format!(
            "{id} classifies as {labels:?}, the images are labelled {:?}",
            images.classes
        )));
    }
    let executor = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| tandem_runtime::Error::Internal(format!("cannot start an async runtime: {e}")))?;
    let pictures: Vec<GrayImage> = (0..images.len())
        .map(|i| {
            let pixels = images.image(i).iter().map(|&p| f32::from(p)).collect();
            GrayImage::from_pixels(images.height, images.width, pixels)
        })
        .collect::<tandem_runtime::Result<_>>()?;
    let embed = |inputs: Vec<ImageTextInput>| -> Result<Vec<Vec<f32>>> {
        let request = ImageTextEmbedRequest { inputs, truncate: true, normalize: None, dimensions: None };
        Ok(executor.block_on(runtime.embed_image_text(&id, request))?.embeddings)
    };
    let mut image_vectors = Vec::with_capacity(pictures.len());
    for chunk in pictures.chunks(CHUNK) {
        image_vectors.extend(embed(chunk.iter().cloned().map(ImageTextInput::Image).collect())?);
    }
    let mut caption_vectors = Vec::with_capacity(captions.captions.len());
    for chunk in captions.texts().chunks(CHUNK) {
        caption_vectors.extend(embed(chunk.iter().map(|t| ImageTextInput::Text((*t).to_owned())).collect())?);
    }
    let mut zero_shot_hits = 0;
    for (chunk, start) in pictures.chunks(CHUNK).zip((0..).step_by(CHUNK)) {
        let request = ZeroShotRequest { images: chunk.to_vec(), labels: None, top_k: 1 };
        let answer = executor.block_on(runtime.classify_zero_shot(&id, request))?;
        for (offset, predictions) in answer.predictions.iter().enumerate() {
            let truth = &labels[usize::from(images.labels[start + offset])];
            zero_shot_hits += usize::from(predictions.first().is_some_and(|p| &p.label == truth));
        }
    }
    let image_classes: Vec<usize> = images.labels.iter().map(|&l| usize::from(l)).collect();
    let caption_classes: Vec<usize> = captions.captions.iter().map(|c| c.class).collect();
    let [i2t_r1, i2t_r5] = recall_at(&image_vectors, &image_classes, &caption_vectors, &caption_classes, [1, 5]);
    let [t2i_r1, t2i_r5] = recall_at(&caption_vectors, &caption_classes, &image_vectors, &image_classes, [1, 5]);
    Ok(ImageTextReport {
        i2t_r1,
        i2t_r5,
        t2i_r1,
        t2i_r5,
        zero_shot_accuracy: zero_shot_hits as f64 / images.len() as f64,
        n: images.len(),
        captions: captions.captions.len(),
    })
}

/// For each query, whether one of its `k` most similar candidates shares its class, as a share
/// of the queries, for each `k` of `ks`. Similarity is the dot product; ties go to the earlier
/// candidate.
pub(crate) fn recall_at<const N: usize>(
    queries: &[Vec<f32>],
    query_classes: &[usize],
    candidates: &[Vec<f32>],
    candidate_classes: &[usize],
    ks: [usize; N],
) -> [f64; N] {
    let deepest = ks.iter().copied().max().unwrap_or(0).min(candidates.len());
    let mut hits = [0usize; N];
    for (query, &class) in queries.iter().zip(query_classes) {
        let scores: Vec<f32> = candidates.iter().map(|c| c.iter().zip(query).map(|(a, b)| a * b).sum()).collect();
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        let by_score = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
        if deepest < order.len() && deepest > 0 {
            order.select_nth_unstable_by(deepest - 1, by_score);
            order.truncate(deepest);
        }
        order.sort_by(by_score);
        let first_hit = order.iter().position(|&c| candidate_classes[c] == class);
        for (hit, &k) in hits.iter_mut().zip(&ks) {
            *hit += usize::from(first_hit.is_some_and(|rank| rank < k));
        }
    }
    hits.map(|h| h as f64 / queries.len().max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recall_counts_a_hit_when_one_of_the_k_best_shares_the_class() {
        let queries = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![0.6, 0.8]];
        let classes = [0, 1, 1];
        // Candidates: class 1 near the first axis, class 0 near the second, one class 1 between.
        let candidates = vec![vec![0.9, 0.1], vec![0.1, 0.9], vec![0.7, 0.7]];
        let candidate_classes = [1, 0, 1];
        let [r1, r2, r3] = recall_at(&queries, &classes, &candidates, &candidate_classes, [1, 2, 3]);
        // Query 0 (class 0) ranks 0, 2, 1: its class first at rank 3. Query 1 (class 1) ranks 1,
        // 2, 0: at rank 2. Query 2 (class 1) ranks 2 (0.98), 1 (0.78), 0 (0.62): at rank 1.
        assert_eq!([r1, r2, r3], [1.0 / 3.0, 2.0 / 3.0, 1.0]);
        // A tie goes to the earlier candidate.
        let [tied] = recall_at(&[vec![1.0]], &[0], &[vec![1.0], vec![1.0]], &[1, 0], [1]);
        assert_eq!(tied, 0.0);
    }
}
