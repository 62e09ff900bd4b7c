//! `tandem bench embed-speed`: the sentences/s of several embedder bundles on the same WordNet
//! definitions, in one process, in alternating rounds, with every model's ratio to the first.
//!
//! A student's speed target is a ratio to its teacher ("≥ 3× the teacher's sentences/s"), and on
//! a shared machine two figures taken minutes apart measure the neighbours as much as the models.
//! Here the models take turns within each round, and each model's figure is its median over the
//! rounds, so a burst of outside load lands on every model alike.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;
use tandem_runtime::{BatchConfig, EmbedRequest, Runtime, RuntimeConfig};
use tandem_training::data::wordnet::WordNet;
use tandem_training::retrieval::Benchmark;

use super::machine::Machine;

/// Settings of `tandem bench embed-speed`.
#[derive(clap::Args, Debug, Clone)]
pub struct EmbedSpeedArgs {
    /// Embedder bundles, comma-separated; the first is the baseline every ratio divides by.
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    pub models: Vec<PathBuf>,
    /// Definitions embedded per model and round (every k-th of the 117,659).
    #[arg(long, default_value_t = 2000)]
    pub texts: usize,
    /// Texts per call.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Rounds; every model runs once per round, in turn.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Read WordNet's data.* files from this directory unverified, instead of the fetched copy.
    #[arg(long, value_name = "DIR")]
    pub wordnet_dir: Option<PathBuf>,
    /// Where `tandem data fetch` keeps its files (default: $TANDEM_DATA_DIR, else the user cache dir).
    #[arg(long, env = "TANDEM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs the comparison and prints it.
pub fn run_embed_speed(args: EmbedSpeedArgs) -> Result<()> {
    if args.texts == 0 || args.batch == 0 || args.rounds == 0 {
        bail!("--texts, --batch and --rounds must be positive");
    }
    let machine = Machine::detect();
    let wordnet = match &args.wordnet_dir {
        Some(dir) => WordNet::read_dir(dir)?,
        None => WordNet::load(&args.data_dir.clone().unwrap_or_else(tandem_training::data::default_data_dir))?,
    };
    // Every k-th definition: spread over the whole corpus (WordNet's files are ordered by part
    // of speech, whose glosses differ in length), and the same texts on every run.
    let docs = Benchmark::new(&wordnet).docs;
    let stride = (docs.len() / args.texts).max(1);
    let texts: Vec<String> = docs.into_iter().step_by(stride).take(args.texts).collect();

    // No cache (a round repeats the texts) and no batching delay: each call already is a batch.
    let batch = BatchConfig { max_batch_delay: Duration::ZERO, ..BatchConfig::default() };
    let runtime = Runtime::new(RuntimeConfig { batch, cache_capacity: 0 });
    let mut ids = Vec::new();
    for dir in &args.models {
        let info = runtime.load(dir).with_context(|| format!("cannot load {}", dir.display()))?;
        if info.kind != "embedder" {
            bail!("{} is a {} bundle, not an embedder", dir.display(), info.kind);
        }
        if ids.contains(&info.id) {
            bail!("two of --models are both {}: give each a bundle of its own name", info.id);
        }
        ids.push(info.id);
    }
    runtime.warmup()?;
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let embed_all = |id: &str| -> Result<f64> {
        let start = Instant::now();
        for chunk in texts.chunks(args.batch) {
            let request = EmbedRequest { texts: chunk.to_vec(), truncate: true, normalize: None, dimensions: None };
            tokio.block_on(runtime.embed(id, request))?;
        }
        Ok(texts.len() as f64 / start.elapsed().as_secs_f64())
    };
    for id in &ids {
        // One warm-up pass each: the first call sizes buffers and fills the tokenizer's caches.
        embed_all(id)?;
    }
    let mut rates = vec![Vec::with_capacity(args.rounds); ids.len()];
    for _ in 0..args.rounds {
        for (id, model_rates) in ids.iter().zip(&mut rates) {
            model_rates.push(embed_all(id)?);
        }
    }
    let medians: Vec<f64> = rates.iter().map(|r| median(r)).collect();
    let rows: Vec<serde_json::Value> = ids
        .iter()
        .zip(&rates)
        .zip(&medians)
        .map(|((id, r), m)| json!({"model": id, "sentences_per_s": m, "rounds": r, "ratio_to_first": m / medians[0]}))
        .collect();
    if args.json {
        println!("{}", json!({"machine": machine, "texts": texts.len(), "batch": args.batch, "rows": rows}));
        return Ok(());
    }
    println!("tandem bench embed-speed | {}", machine.describe());
    println!("{} WordNet definitions per round, batch {}, {} rounds (median)", texts.len(), args.batch, args.rounds);
    println!("| model | sentences/s (median) | rounds | × the first |");
    println!("| --- | ---: | --- | ---: |");
    for ((id, r), m) in ids.iter().zip(&rates).zip(&medians) {
        let rounds: Vec<String> = r.iter().map(|x| format!("{x:.0}")).collect();
        println!("| {id} | {m:.1} | {} | {:.2} |", rounds.join(", "), m / medians[0]);
    }
    Ok(())
}

/// The middle value (the mean of the two middle values for an even count).
pub(super) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn the_median_takes_the_middle_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
