//! What the runs that train on (query, gloss) pairs share: batches without two pairs of one
//! synset, the model mining its own hard negatives, and a batch's mined glosses.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use tandem_runtime::bundle::Manifest;

use super::encoder::TrainingEncoder;
use crate::retrieval::{self, Benchmark, MiningOptions, TrainingPair};
use crate::trainer;
use crate::Result;

/// The batches of an epoch, as indices into `pairs`: a seeded order cut into batches of
/// `batch_size`, never two pairs of one synset in a batch (their glosses would count as each
/// other's negatives); pairs that met their synset train in batches of their own at the end.
pub(crate) fn batches(pairs: &[TrainingPair], batch_size: usize, seed: u64, epoch: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9).wrapping_add(epoch as u64)));
    let mut batches = Vec::new();
    let (mut batch, mut synsets) = (Vec::new(), HashSet::new());
    let mut deferred = Vec::new();
    for i in order.into_iter().chain(std::iter::once(usize::MAX)) {
        if i != usize::MAX && !synsets.insert(pairs[i].synset) {
            deferred.push(i);
            continue;
        }
        if i != usize::MAX {
            batch.push(i);
        }
        if batch.len() == batch_size || (i == usize::MAX && !batch.is_empty()) {
            batches.push(std::mem::take(&mut batch));
            synsets.clear();
        }
    }
    for chunk in deferred.chunks(batch_size) {
        let mut seen = HashSet::new();
        let unique: Vec<usize> = chunk.iter().copied().filter(|&i| seen.insert(pairs[i].synset)).collect();
        if unique.len() > 1 {
            batches.push(unique);
        }
    }
    batches
}

/// Per pair, its mined negatives as document indices, best first.
pub(crate) type Mined = Vec<Vec<usize>>;

/// Hard negatives per pair, mined by `encoder` with its weights as they are now, through the
/// serving path (written as a bundle beside the run, `<out>.miner-bundle`), with what the
/// mining measured for the epoch's record.
pub(crate) fn mine_own(
    encoder: &TrainingEncoder,
    manifest: &Manifest,
    out: &Path,
    benchmark: &Benchmark,
    pairs: &[TrainingPair],
    mining: &MiningOptions,
) -> Result<(Mined, BTreeMap<String, f64>)> {
    let dir = trainer::sibling(out, "miner-bundle");
    encoder.write_bundle(&dir, manifest)?;
    let started = std::time::Instant::now();
    let negatives = retrieval::mine_hard_negatives(benchmark, &dir, pairs, mining)?;
    let mined = negatives.iter().map(Vec::len).sum::<usize>();
    let measured = BTreeMap::from([
        ("hard_negatives_per_pair".into(), mined as f64 / pairs.len().max(1) as f64),
        ("mining_s".into(), started.elapsed().as_secs_f64()),
    ]);
    Ok((negatives, measured))
}

/// The mined negatives of a batch's pairs, each once, without any document that is a batch
/// pair's own synset or has its text (it would be another query's positive).
pub(crate) fn batch_negatives(
    pairs: &[TrainingPair],
    negatives: &[Vec<usize>],
    benchmark: &Benchmark,
    batch: &[usize],
) -> Vec<usize> {
    if negatives.is_empty() {
        return Vec::new();
    }
    let synsets: HashSet<usize> = batch.iter().map(|&i| pairs[i].synset).collect();
    let texts: HashSet<&str> = batch.iter().map(|&i| pairs[i].positive.as_str()).collect();
    let mut seen = HashSet::new();
    batch
        .iter()
        .flat_map(|&i| negatives[i].iter().copied())
        .filter(|d| !synsets.contains(d) && !texts.contains(benchmark.docs[*d].as_str()) && seen.insert(*d))
        .collect()
}
