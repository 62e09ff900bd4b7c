//! `tandem bench embed`: sentence-embedding speed of a BERT sentence encoder (all-MiniLM-L6-v2 by
//! default) in-process through Tandem's runtime, through raw candle-transformers without Tandem's
//! batching, through ONNX Runtime on the same weights and texts, and over HTTP with concurrent
//! clients. All in one run, so every ratio compares figures taken on the same machine moments apart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};
use tandem_runtime::candle_core::Device;
use tandem_runtime::import::{import_sentence_transformers, ImportOptions};
use tandem_runtime::models::sentence_encoder::SentenceEncoder;
use tandem_runtime::testing_text::benchmark_texts;
use tandem_runtime::text::TextTokenizer;
use tandem_runtime::{BatchConfig, EmbedRequest, Runtime, RuntimeConfig};

use super::machine::Machine;
use super::python::run_python_json;

/// Settings of `tandem bench embed`.
#[derive(clap::Args, Debug, Clone)]
pub struct EmbedBenchArgs {
    /// A sentence-transformers directory [default: the all-MiniLM-L6-v2 that `tandem data fetch
    /// minilm` installed].
    #[arg(long)]
    pub hf_dir: Option<PathBuf>,
    /// Where `tandem data fetch` keeps its files (default: $TANDEM_DATA_DIR, else the user cache dir).
    #[arg(long, env = "TANDEM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Texts per call.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    pub batches: Vec<usize>,
    /// Concurrent HTTP clients, each sending one short text per request.
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    pub clients: Vec<usize>,
    /// Timing budget per measurement, in seconds.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Skip ONNX Runtime (otherwise a missing Python package is an error naming the install command).
    #[arg(long)]
    pub no_ort: bool,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Long texts stop growing before they pass this many tokens.
const LONG_TOKENS: usize = 128;

/// The model name the bundle is imported under.
const MODEL: &str = "bench";

#[derive(Debug, Clone, Serialize)]
struct Row {
    length: &'static str,
    batch: usize,
    tandem: f64,
    candle: f64,
    onnxruntime: Option<f64>,
    tandem_over_ort: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
struct HttpRow {
    clients: usize,
    sentences_per_s: f64,
    mean_latency_ms: f64,
}

/// Runs the benchmark and prints its tables, or one JSON object.
pub fn run_embed_bench(args: EmbedBenchArgs) -> Result<()> {
    let machine = Machine::detect();
    let hf_dir = match &args.hf_dir {
        Some(dir) => dir.clone(),
        None => {
            let data_dir = args.data_dir.clone().unwrap_or_else(tandem_training::data::default_data_dir);
            tandem_training::data::installed_dir(tandem_training::data::ModelName::MiniLm, &data_dir)?
        }
    };
    let scratch = tempfile_dir()?;
    let bundle_dir = scratch.join("bundle");
    let options = ImportOptions { name: MODEL.into(), version: "1".into() };
    let bundle = import_sentence_transformers(&hf_dir, &bundle_dir, &options)
        .with_context(|| format!("cannot import {}", hf_dir.display()))?;
    let spec = bundle.manifest.embedder().context("an import writes an embedder bundle")?.clone();
    let tokenizer = TextTokenizer::from_bytes(bundle.file(&spec.tokenizer)?, spec.max_seq_length)?;
    let corpus = Corpus::build(&tokenizer, args.batches.iter().copied().max().unwrap_or(1))?;
    let budget = Duration::from_secs_f64(args.seconds.max(0.3));
    if !args.json {
        println!("tandem bench embed ({} build) | {}", profile(), machine.describe());
        println!(
            "model: {} ({} layers, width {}); short texts {:.1} tokens, long {:.1} tokens (special tokens included)",
            hf_dir.display(),
            spec.architecture.num_hidden_layers,
            spec.architecture.hidden_size,
            corpus.mean_tokens(&tokenizer, "short"),
            corpus.mean_tokens(&tokenizer, "long"),
        );
    }

    let ort = if args.no_ort { None } else { Some(run_ort(&hf_dir, &corpus, &args, machine.threads, &scratch)?) };
    let encoder = SentenceEncoder::new(&spec.architecture, spec.pooling, bundle.var_builder(&Device::Cpu))?;
    let in_process = in_process_runtime(&bundle_dir)?;
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;

    let mut rows = Vec::new();
    for length in ["short", "long"] {
        for &batch in &args.batches {
            let texts = corpus.texts(length)[..batch].to_vec();
            let tandem = rate(batch, budget, || {
                let request = EmbedRequest { texts: texts.clone(), truncate: true, normalize: None, dimensions: None };
                tokio.block_on(in_process.embed(MODEL, request)).map(drop).map_err(anyhow::Error::from)
            })?;
            let candle = rate(batch, budget, || {
                let ids: Vec<Vec<u32>> =
                    texts.iter().map(|t| tokenizer.encode(t, true).map(|e| e.ids)).collect::<Result<_, _>>()?;
                let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
                encoder.embed(&refs).map(drop).map_err(anyhow::Error::from)
            })?;
            let onnxruntime = ort.as_ref().and_then(|o| o["sentences_per_s"][length][batch.to_string()].as_f64());
            let tandem_over_ort = onnxruntime.map(|o| tandem / o);
            rows.push(Row { length, batch, tandem, candle, onnxruntime, tandem_over_ort });
        }
    }
    let max_abs_diff = match &ort {
        Some(o) => Some(compare_outputs(&tokio, &in_process, o)?),
        None => None,
    };
    drop(in_process);
    let http = tokio.block_on(http_rows(&bundle_dir, &corpus, &args.clients, budget))?;
    let _ = std::fs::remove_dir_all(&scratch);

    if args.json {
        let out = json!({
            "machine": machine,
            "profile": profile(),
            "model": hf_dir.display().to_string(),
            "mean_tokens": {"short": corpus.mean_tokens(&tokenizer, "short"), "long": corpus.mean_tokens(&tokenizer, "long")},
            "rows": rows,
            "http": http,
            "onnxruntime": ort.as_ref().map(|o| json!({"version": o["onnxruntime"], "optimizer": o["optimizer"], "threads": o["threads"]})),
            "max_abs_diff_vs_onnxruntime": max_abs_diff,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    print_tables(&rows, &http, ort.as_ref(), max_abs_diff);
    Ok(())
}

fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "dev"
    } else {
        "release"
    }
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("tandem-bench-embed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// The texts both runtimes are timed on.
#[derive(Debug, Clone, Serialize)]
struct Corpus {
    short: Vec<String>,
    long: Vec<String>,
}

impl Corpus {
    fn build(tokenizer: &TextTokenizer, n: usize) -> Result<Corpus> {
        let (short, long) = benchmark_texts(tokenizer, n, LONG_TOKENS)?;
        Ok(Corpus { short, long })
    }

    fn texts(&self, length: &str) -> &[String] {
        if length == "short" {
            &self.short
        } else {
            &self.long
        }
    }

    fn mean_tokens(&self, tokenizer: &TextTokenizer, length: &str) -> f64 {
        let texts = self.texts(length);
        let total: usize = texts.iter().map(|t| tokenizer.encode(t, true).map_or(0, |e| e.ids.len())).sum();
        total as f64 / texts.len().max(1) as f64
    }
}

/// A runtime as a library user embeds it: no cache (the texts repeat), and no batching delay,
/// since one caller's request already is the batch.
fn in_process_runtime(bundle: &Path) -> Result<Runtime> {
    let batch = BatchConfig { max_batch_delay: Duration::ZERO, ..BatchConfig::default() };
    let runtime = Runtime::new(RuntimeConfig { batch, cache_capacity: 0 });
    runtime.load(bundle)?;
    runtime.warmup()?;
    Ok(runtime)
}

/// Sentences per second of `call`, which embeds `batch` texts: warm-up, then the best of three
/// windows, so a moment of interference does not decide the figure.
fn rate(batch: usize, budget: Duration, mut call: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..2 {
        call()?;
    }
    let mut best: f64 = 0.0;
    for _ in 0..3 {
        let (start, mut runs) = (Instant::now(), 0usize);
        while runs == 0 || start.elapsed() < budget / 3 {
            call()?;
            runs += 1;
        }
        best = best.max((batch * runs) as f64 / start.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// Times ONNX Runtime on the same directory and texts, with as many intra-op threads as this
/// process has.
fn run_ort(hf_dir: &Path, corpus: &Corpus, args: &EmbedBenchArgs, threads: usize, scratch: &Path) -> Result<Value> {
    let corpus_file = scratch.join("corpus.json");
    std::fs::write(&corpus_file, serde_json::to_vec(corpus)?)?;
    let batches = args.batches.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
    let script_args =
        [hf_dir.display().to_string(), "--threads".into(), threads.to_string(), "--batches".into(), batches]
            .into_iter()
            .chain([
                "--seconds".into(),
                args.seconds.to_string(),
                "--corpus-json".into(),
                corpus_file.display().to_string(),
            ])
            .collect::<Vec<_>>();
    run_python_json("ort_minilm.py", &script_args)
        .map_err(|note| anyhow::anyhow!("ONNX Runtime could not run: {note} (or pass --no-ort)"))
}

/// Largest difference between Tandem's and ONNX Runtime's embeddings of the script's check texts.
fn compare_outputs(tokio: &tokio::runtime::Runtime, runtime: &Runtime, ort: &Value) -> Result<f64> {
    let texts: Vec<String> = serde_json::from_value(ort["check_sentences"].clone())?;
    let theirs: Vec<Vec<f64>> = serde_json::from_value(ort["check_embeddings"].clone())?;
    let request = EmbedRequest { texts, truncate: true, normalize: None, dimensions: None };
    let ours = tokio.block_on(runtime.embed(MODEL, request))?.embeddings;
    let diff = ours
        .iter()
        .zip(&theirs)
        .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (f64::from(*x) - y).abs()))
        .fold(0.0, f64::max);
    Ok(diff)
}

/// Served throughput: a real server on 127.0.0.1 with the default batching settings, and
/// `clients` concurrent connections each posting one short text per request to `/v1/embeddings`.
/// Client and server share the machine.
async fn http_rows(bundle: &Path, corpus: &Corpus, clients: &[usize], budget: Duration) -> Result<Vec<HttpRow>> {
    let runtime = Arc::new(Runtime::new(RuntimeConfig { cache_capacity: 0, ..RuntimeConfig::default() }));
    runtime.load(bundle)?;
    runtime.warmup()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/embeddings", listener.local_addr()?);
    let most = clients.iter().copied().max().unwrap_or(1);
    let config = tandem_server::ServerConfig { concurrency_limit: most.max(256), ..Default::default() };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tandem_server::serve_on(listener, runtime, config, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let mut rows = Vec::new();
    for &n in clients {
        // A short warm-up at this concurrency, then the timed window.
        drive(&client, &url, corpus, n, budget / 5).await?;
        let (count, latency) = drive(&client, &url, corpus, n, budget).await?;
        rows.push(HttpRow {
            clients: n,
            sentences_per_s: count as f64 / budget.as_secs_f64(),
            mean_latency_ms: latency.as_secs_f64() * 1000.0 / count.max(1) as f64,
        });
    }
    let _ = stop.send(());
    server.await??;
    Ok(rows)
}

/// `n` clients posting until `window` ends; returns the requests answered and their total latency.
async fn drive(
    client: &reqwest::Client,
    url: &str,
    corpus: &Corpus,
    n: usize,
    window: Duration,
) -> Result<(usize, Duration)> {
    let deadline = tokio::time::Instant::now() + window;
    let tasks: Vec<_> = (0..n)
        .map(|c| {
            let (client, url) = (client.clone(), url.to_owned());
            let texts = corpus.short.clone();
            tokio::spawn(async move {
                let (mut count, mut latency, mut i) = (0usize, Duration::ZERO, c);
                while tokio::time::Instant::now() < deadline {
                    let body = json!({"model": MODEL, "input": [texts[i % texts.len()]]});
                    let start = Instant::now();
                    let res = client.post(&url).json(&body).send().await?;
                    if !res.status().is_success() {
                        bail!("the server answered {}: {}", res.status(), res.text().await.unwrap_or_default());
                    }
                    res.bytes().await?;
                    latency += start.elapsed();
                    count += 1;
                    i += n;
                }
                Ok((count, latency))
            })
        })
        .collect();
    let (mut count, mut latency) = (0, Duration::ZERO);
    for task in tasks {
        let (c, l) = task.await??;
        count += c;
        latency += l;
    }
    Ok((count, latency))
}

fn print_tables(rows: &[Row], http: &[HttpRow], ort: Option<&Value>, max_abs_diff: Option<f64>) {
    if let Some(o) = ort {
        let optimizer = o["optimizer"].get("name").unwrap_or(&o["optimizer"]);
        println!("onnxruntime {} ({} threads, graph optimizer: {optimizer})", o["onnxruntime"], o["threads"]);
    }
    println!();
    println!(
        "sentences/s, in-process (tokenizing included for tandem and candle; ONNX Runtime times the model run only)"
    );
    println!(
        "{:>6} {:>6} {:>10} {:>10} {:>12} {:>10}",
        "length", "batch", "tandem", "candle", "onnxruntime", "tandem/ort"
    );
    for r in rows {
        let ort = r.onnxruntime.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
        let ratio = r.tandem_over_ort.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}x"));
        println!("{:>6} {:>6} {:>10.1} {:>10.1} {:>12} {:>10}", r.length, r.batch, r.tandem, r.candle, ort, ratio);
    }
    if let Some(d) = max_abs_diff {
        println!("Outputs: max |tandem - onnxruntime| = {d:.2e}");
    }
    println!();
    println!("served over HTTP (POST /v1/embeddings, one short text per request, default batching)");
    println!("{:>8} {:>12} {:>16}", "clients", "sentences/s", "mean latency ms");
    for h in http {
        println!("{:>8} {:>12.1} {:>16.1}", h.clients, h.sentences_per_s, h.mean_latency_ms);
    }
}
