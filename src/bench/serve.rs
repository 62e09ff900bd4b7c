//! `tandem bench serve`: what the HTTP path keeps of the model. One run starts `tandem serve` on a
//! classifier bundle under several configurations, drives each with wrk at a list of
//! concurrencies, and compares them with two ceilings measured in the same run: the model alone
//! in-process (the best batch size, no HTTP), and a minimal axum handler that answers a fixed small
//! JSON body (the HTTP ceiling of this machine).
//!
//! Every served figure comes from a fresh server: a warm-up, then counters read before and after
//! the measured window, so the mean batch size, the cache hit rate and the CPU time are those of
//! the window alone.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tandem_runtime::image::GrayImage;
use tandem_runtime::{ClassifyRequest, EmbedRequest, Runtime, RuntimeConfig};
use tandem_training::plot::{line_chart, LineChart};

use super::machine::Machine;
use super::serve_breakdown::{self, pseudo_random, Breakdown, CachedClassify};
use super::serve_layers::{self, LayerCosts};
use super::serve_load::{find_wrk, Load, LoadResult, Wrk};
use super::serve_process::{self, free_port, ProcessSample};

/// Settings of `tandem bench serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeBenchArgs {
    /// The classifier bundle to serve [default: the largest shipped one, models/fashion-teacher].
    #[arg(long, default_value = "models/fashion-teacher")]
    pub model: PathBuf,
    /// Concurrent connections of each load.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64,256")]
    pub concurrency: Vec<usize>,
    /// Length of each measured load, in seconds (after a warm-up of a fifth of it).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Also serve this embedder bundle (e.g. all-MiniLM-L6-v2 after `tandem import hf`) with one
    /// short distinct sentence per request on `/v1/embeddings`, batching off and on.
    #[arg(long)]
    pub embedder: Option<PathBuf>,
    /// Write the throughput and latency plots (PNG) into this folder.
    #[arg(long)]
    pub plots: Option<PathBuf>,
    /// The wrk binary [default: wrk on PATH, else Debian's package unpacked into the user cache].
    #[arg(long)]
    pub wrk: Option<PathBuf>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Measure only in-process, without sockets: where a cached request's time goes and what
    /// each middleware layer costs (no servers, no load generator).
    #[arg(long)]
    pub in_process: bool,
}

/// What a load is aimed at: a bundle, its model name, and the request the load script sends.
struct Target {
    dir: PathBuf,
    model: String,
    /// `classify` (one `side`×`side` pixel array) or `embed` (one sentence).
    kind: &'static str,
    side: usize,
}

/// A served configuration: how the server runs and what the load sends.
struct Config {
    name: &'static str,
    /// Arguments of `tandem serve` after the model (none for the axum floor, which is not Tandem).
    serve_args: &'static [&'static str],
    /// Distinct request bodies per wrk thread: 1 makes every request after the first a cache hit.
    bodies: usize,
    /// The minimal axum handler instead of `tandem serve`.
    http_floor: bool,
}

const CONFIGS: [Config; 5] = [
    Config {
        name: "batching off",
        serve_args: &["--max-batch-size", "1", "--cache-capacity", "0"],
        bodies: 256,
        http_floor: false,
    },
    // The defaults: the adaptive delay policy.
    Config { name: "batching on", serve_args: &["--cache-capacity", "0"], bodies: 256, http_floor: false },
    Config {
        name: "batching on, fixed delay",
        serve_args: &["--cache-capacity", "0", "--batch-delay-policy", "fixed"],
        bodies: 256,
        http_floor: false,
    },
    Config { name: "cache hits", serve_args: &[], bodies: 1, http_floor: false },
    Config { name: "axum floor", serve_args: &[], bodies: 256, http_floor: true },
];

/// The embedder's configurations, cache off.
const EMBEDDER_CONFIGS: [Config; 2] = [
    Config {
        name: "embedder, batching off",
        serve_args: &["--max-batch-size", "1", "--cache-capacity", "0"],
        bodies: 256,
        http_floor: false,
    },
    Config { name: "embedder, batching on", serve_args: &["--cache-capacity", "0"], bodies: 256, http_floor: false },
];

/// One configuration at one concurrency.
#[derive(Debug, Clone, Serialize)]
struct Row {
    config: &'static str,
    concurrency: usize,
    requests_per_s: f64,
    items_per_s: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    non_200: u64,
    connection_errors: u64,
    mean_batch_size: Option<f64>,
    cache_hit_rate: Option<f64>,
    server_cpu_cores: f64,
    server_rss_mib: f64,
    #[serde(skip)]
    cdf: Vec<(f64, f64)>,
}

pub fn run_serve_bench(args: ServeBenchArgs) -> Result<()> {
    let machine = Machine::detect();
    if args.concurrency.is_empty() || args.concurrency.contains(&0) || args.seconds == 0 {
        bail!("--concurrency needs positive connection counts and --seconds a positive length");
    }
    let bundle = tandem_runtime::bundle::Bundle::load(&args.model).with_context(|| args.model.display().to_string())?;
    let Some(spec) = bundle.manifest.classifier() else {
        bail!("{} is not a classifier bundle: `tandem bench serve` loads classifiers", args.model.display());
    };
    let (model, side) = (bundle.manifest.name.clone(), spec.input.shape[2]);
    if args.in_process {
        if !args.json {
            println!("tandem bench serve --in-process | {}", machine.describe());
            println!("model {} ({side}x{side} inputs, one per request)", bundle.model_id());
        }
        let (breakdown, layers) = in_process(&args, &model, side)?;
        if args.json {
            let out = serde_json::json!({
                "machine": machine,
                "model": bundle.model_id(),
                "in_process_breakdown_us": breakdown,
                "per_layer_us": layers,
            });
            println!("{out}");
        } else {
            print_in_process(&breakdown, &layers);
        }
        return Ok(());
    }
    let target = Target { dir: args.model.clone(), model: model.clone(), kind: "classify", side };
    let wrk = find_wrk(args.wrk.as_deref())?;
    if !args.json {
        println!("tandem bench serve | {}", machine.describe());
        println!(
            "model {} ({side}x{side} inputs, one per request) | load: {}, {} s per point after a {} s warm-up, on this machine",
            bundle.model_id(),
            wrk.version,
            args.seconds,
            warmup(args.seconds).as_secs_f64()
        );
    }
    let ceiling = model_ceiling(&args.model, &model, side)?;
    let (breakdown, layers) = in_process(&args, &model, side)?;
    if !args.json {
        print_in_process(&breakdown, &layers);
        println!("model alone, in-process: {}", ceiling.describe("items"));
        println!(
            "\n| configuration | clients | requests/s | items/s | p50 ms | p90 ms | p99 ms | mean batch | cache hits | server CPU (cores) | server RSS MiB | non-200 |"
        );
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    }
    let mut rows = Vec::new();
    let mut table = |configs: &[Config], target: &Target| -> Result<()> {
        for config in configs {
            for &concurrency in &args.concurrency {
                let row = measure(config, concurrency, &args, &wrk, target)?;
                if !args.json {
                    print_row(&row);
                }
                rows.push(row);
            }
        }
        Ok(())
    };
    table(&CONFIGS, &target)?;
    let embedder = match &args.embedder {
        Some(dir) => {
            let bundle = tandem_runtime::bundle::Bundle::load(dir).with_context(|| dir.display().to_string())?;
            if bundle.manifest.embedder().is_none() {
                bail!("{} is not an embedder bundle", dir.display());
            }
            let target = Target { dir: dir.clone(), model: bundle.manifest.name.clone(), kind: "embed", side: 0 };
            let ceiling = embedder_ceiling(dir, &target.model)?;
            table(&EMBEDDER_CONFIGS, &target)?;
            Some((bundle.model_id(), ceiling))
        }
        None => None,
    };
    if let Some(dir) = &args.plots {
        plot(dir, &rows, &ceiling, &model, &machine)?;
    }
    let at = |config: &str, c: usize| rows.iter().find(|r| r.config == config && r.concurrency == c);
    let kept_at_64 = at("batching on", 64).map(|r| r.items_per_s / ceiling.items_per_s);
    let embedder_kept_at_64 =
        embedder.as_ref().and_then(|(_, c)| Some(at("embedder, batching on", 64)?.items_per_s / c.items_per_s));
    let cached_vs_floor = args
        .concurrency
        .iter()
        .filter_map(|&c| Some(at("cache hits", c)?.requests_per_s / at("axum floor", c)?.requests_per_s))
        .fold(None, |best: Option<f64>, r| Some(best.map_or(r, |b| b.max(r))));
    if args.json {
        let out = serde_json::json!({
            "machine": machine,
            "model": bundle.model_id(),
            "load_generator": wrk.version,
            "seconds": args.seconds,
            "model_alone": ceiling,
            "in_process_breakdown_us": breakdown,
            "per_layer_us": layers,
            "rows": rows,
            "served_vs_model_alone_at_64": kept_at_64,
            "embedder": embedder.as_ref().map(|(id, c)| serde_json::json!({"model": id, "model_alone": c})),
            "embedder_served_vs_model_alone_at_64": embedder_kept_at_64,
            "best_cached_vs_axum_floor": cached_vs_floor,
        });
        println!("{out}");
    } else {
        if let Some(kept) = kept_at_64 {
            println!("\nbatching on at 64 clients keeps {:.0}% of the model alone", kept * 100.0);
        }
        if let Some((id, c)) = &embedder {
            println!("embedder {id} alone, in-process: {}", c.describe("sentences"));
        }
        if let Some(kept) = embedder_kept_at_64 {
            println!("embedder batching on at 64 clients keeps {:.0}% of the model alone", kept * 100.0);
        }
        if let Some(ratio) = cached_vs_floor {
            println!("cache hits reach {:.0}% of the axum floor's requests/s (best concurrency)", ratio * 100.0);
        }
    }
    Ok(())
}

/// Where a cached request's time goes in-process: its parts, then each layer (for `--seconds`).
fn in_process(args: &ServeBenchArgs, model: &str, side: usize) -> Result<(Breakdown, LayerCosts)> {
    let fixture = CachedClassify::new(&args.model, model, side)?;
    let breakdown = serve_breakdown::measure(&fixture, Duration::from_secs(2))?;
    let layers = serve_layers::measure(&fixture, Duration::from_secs(args.seconds))?;
    Ok((breakdown, layers))
}

fn print_in_process(b: &Breakdown, layers: &LayerCosts) {
    println!(
        "a cached request in-process, no sockets: the whole app {:.1} µs = JSON decode {:.1} + runtime (cache hit) {:.1} + JSON encode {:.1} + routing, middleware and glue {:.1}",
        b.app_us, b.decode_us, b.runtime_us, b.encode_us, b.rest_us
    );
    layers.print();
}

/// The warm-up before each measured window.
fn warmup(seconds: u64) -> Duration {
    Duration::from_secs((seconds / 5).clamp(1, 5))
}

fn print_row(r: &Row) {
    let batch = r.mean_batch_size.map_or("-".into(), |b| format!("{b:.1}"));
    let hits = r.cache_hit_rate.map_or("-".into(), |h| format!("{:.1}%", h * 100.0));
    println!(
        "| {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {batch} | {hits} | {:.2} | {:.0} | {} |",
        r.config,
        r.concurrency,
        r.requests_per_s,
        r.items_per_s,
        r.p50_ms,
        r.p90_ms,
        r.p99_ms,
        r.server_cpu_cores,
        r.server_rss_mib,
        r.non_200 + r.connection_errors
    );
}

/// One fresh server (or axum floor) under one load.
fn measure(config: &Config, concurrency: usize, args: &ServeBenchArgs, wrk: &Wrk, target: &Target) -> Result<Row> {
    let port = free_port()?;
    let exe = std::env::current_exe().context("locating the tandem binary")?;
    let mut command = Command::new(exe);
    if config.http_floor {
        command.args(["bench", "http-floor", "--port", &port.to_string()]);
    } else {
        command.arg("serve").arg("--model").arg(&target.dir).args(config.serve_args);
        command.args(["--port", &port.to_string(), "--host", "127.0.0.1"]);
    }
    command.env("TANDEM_LOG", "warn").stdout(Stdio::null()).stderr(Stdio::null());
    let mut server = ServerGuard(command.spawn().context("starting the server")?);
    serve_process::wait_ready(&mut server.0, port, Duration::from_secs(60))?;
    let load = |seconds: Duration| {
        let load = Load { model: &target.model, kind: target.kind, side: target.side, bodies: config.bodies };
        wrk.run(port, &load, concurrency, seconds)
    };
    load(warmup(args.seconds))?;
    let before = (ProcessSample::of(server.0.id())?, metrics(port, config.http_floor)?);
    let result: LoadResult = load(Duration::from_secs(args.seconds))?;
    let after = (ProcessSample::of(server.0.id())?, metrics(port, config.http_floor)?);
    server.stop()?;
    let (batches, items) = (after.1.batches - before.1.batches, after.1.batched_items - before.1.batched_items);
    let (hits, misses) = (after.1.cache_hits - before.1.cache_hits, after.1.cache_misses - before.1.cache_misses);
    let ok = result.ok_per_s();
    Ok(Row {
        config: config.name,
        concurrency,
        requests_per_s: ok,
        items_per_s: ok,
        p50_ms: result.p50_ms,
        p90_ms: result.p90_ms,
        p99_ms: result.p99_ms,
        non_200: result.non_200(),
        connection_errors: result.connection_errors(),
        mean_batch_size: (batches > 0.0).then(|| items / batches),
        cache_hit_rate: (hits + misses > 0.0).then(|| hits / (hits + misses)),
        server_cpu_cores: after.0.cpu_seconds_since(&before.0) / result.duration_s.max(1e-9),
        server_rss_mib: after.0.rss_bytes as f64 / (1024.0 * 1024.0),
        cdf: result.cdf,
    })
}

/// Stops the child on every path out, so a failed measurement leaves no server behind.
struct ServerGuard(Child);

impl ServerGuard {
    /// SIGTERM, then a clean exit within the drain timeout, or an error.
    fn stop(&mut self) -> Result<()> {
        serve_process::terminate(&mut self.0, Duration::from_secs(15))
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The counters the table needs, summed over models, from `/metrics`.
#[derive(Default)]
struct Counters {
    batches: f64,
    batched_items: f64,
    cache_hits: f64,
    cache_misses: f64,
}

fn metrics(port: u16, http_floor: bool) -> Result<Counters> {
    if http_floor {
        return Ok(Counters::default());
    }
    let text = serve_process::http_get(port, "/metrics")?;
    let sum = |name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    Ok(Counters {
        batches: sum("tandem_batch_size_count"),
        batched_items: sum("tandem_batch_size_sum"),
        cache_hits: sum("tandem_cache_hits_total"),
        cache_misses: sum("tandem_cache_misses_total"),
    })
}

/// An in-process ceiling: the best items/s over batch sizes, and every size tried.
#[derive(Debug, Clone, Serialize)]
struct Ceiling {
    batch: usize,
    items_per_s: f64,
    tried: Vec<(usize, f64)>,
}

impl Ceiling {
    /// Times `call(batch, first)` (one call of `batch` items, the `first` a running item index)
    /// for 2 s per batch size, with at least two calls, and keeps the fastest size.
    fn measure(batches: &[usize], mut call: impl FnMut(usize, usize) -> Result<()>) -> Result<Ceiling> {
        let mut tried = Vec::new();
        for &batch in batches {
            let started = Instant::now();
            let mut items = 0usize;
            while started.elapsed() < Duration::from_secs(2) || items < 2 * batch {
                call(batch, items)?;
                items += batch;
            }
            tried.push((batch, items as f64 / started.elapsed().as_secs_f64()));
        }
        let (batch, items_per_s) = tried.iter().copied().fold((0, 0.0), |best, t| if t.1 > best.1 { t } else { best });
        Ok(Ceiling { batch, items_per_s, tried })
    }

    /// e.g. `3840 items/s at batch 32 (best of ["1: 1316", ...])`.
    fn describe(&self, unit: &str) -> String {
        let tried: Vec<String> = self.tried.iter().map(|(b, r)| format!("{b}: {r:.0}")).collect();
        format!("{:.0} {unit}/s at batch {} (best of {tried:?})", self.items_per_s, self.batch)
    }
}

/// A runtime with the cache off (every call computes) holding the bundle in `dir`.
fn uncached_runtime(dir: &Path) -> Result<(Runtime, tokio::runtime::Runtime)> {
    let rt = Runtime::new(RuntimeConfig { cache_capacity: 0, ..RuntimeConfig::default() });
    rt.load(dir)?;
    Ok((rt, tokio::runtime::Builder::new_current_thread().enable_all().build()?))
}

/// The classifier's in-process ceiling: the runtime's classify entry point on distinct
/// pseudo-random images.
fn model_ceiling(dir: &Path, model: &str, side: usize) -> Result<Ceiling> {
    let (rt, tokio) = uncached_runtime(dir)?;
    let mut next = pseudo_random(1);
    let images = (0..1024)
        .map(|_| {
            let pixels = (0..side * side).map(|_| f32::from((next() >> 24) as u8)).collect();
            Ok(GrayImage::from_pixels(side, side, pixels)?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ceiling::measure(&[1, 8, 32, 64, 128], |batch, first| {
        let images = (0..batch).map(|j| images[(first + j) % images.len()].clone()).collect();
        tokio.block_on(rt.classify(model, ClassifyRequest { images, top_k: 3 }))?;
        Ok(())
    })
}

/// The embedder's in-process ceiling: the runtime's embed entry point on distinct short sentences.
fn embedder_ceiling(dir: &Path, model: &str) -> Result<Ceiling> {
    let (rt, tokio) = uncached_runtime(dir)?;
    let texts = short_sentences(512);
    Ceiling::measure(&[1, 8, 32, 64], |batch, first| {
        let texts = (0..batch).map(|j| texts[(first + j) % texts.len()].clone()).collect();
        tokio.block_on(rt.embed(model, EmbedRequest { texts, truncate: true, normalize: None, dimensions: None }))?;
        Ok(())
    })
}

/// `n` distinct sentences of 6 to 14 words, like the load script's embed bodies.
fn short_sentences(n: usize) -> Vec<String> {
    const WORDS: [&str; 16] = [
        "the", "model", "serves", "a", "quick", "request", "over", "http", "while", "batching", "keeps", "latency",
        "low", "under", "load", "clients",
    ];
    let mut random = pseudo_random(3);
    let mut next = move || random() as usize;
    (0..n)
        .map(|i| {
            let words: Vec<&str> = (0..6 + next() % 9).map(|_| WORDS[next() % WORDS.len()]).collect();
            format!("{} {i}", words.join(" "))
        })
        .collect()
}

/// Throughput against concurrency (with the in-process ceiling as a flat line), and the latency
/// distributions at the highest concurrency up to 64.
fn plot(dir: &Path, rows: &[Row], ceiling: &Ceiling, model: &str, machine: &Machine) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let levels: Vec<usize> = {
        let mut l: Vec<usize> = rows.iter().map(|r| r.concurrency).collect();
        l.sort_unstable();
        l.dedup();
        l
    };
    let mut lines: Vec<(String, Vec<(f64, f64)>)> = CONFIGS
        .iter()
        .map(|c| {
            let points = rows.iter().filter(|r| r.config == c.name).map(|r| (r.concurrency as f64, r.requests_per_s));
            (c.name.to_string(), points.collect())
        })
        .collect();
    let flat = levels.iter().map(|&c| (c as f64, ceiling.items_per_s)).collect();
    lines.push((format!("model alone, in-process (batch {})", ceiling.batch), flat));
    let title = |what: &str| format!("{model}: {what} ({})", machine.cpu);
    line_chart(
        &LineChart {
            title: title("served throughput"),
            x_desc: "concurrent clients".into(),
            y_desc: "requests/s (one image each)".into(),
            log_x: true,
            log_y: true,
            lines,
        },
        &dir.join("serve-throughput.png"),
    )?;
    let at = levels.iter().copied().filter(|&c| c <= 64).max().unwrap_or(levels[0]);
    let cdfs = CONFIGS
        .iter()
        .filter_map(|c| rows.iter().find(|r| r.config == c.name && r.concurrency == at))
        .map(|r| (r.config.to_string(), r.cdf.clone()))
        .collect();
    line_chart(
        &LineChart {
            title: title(&format!("latency at {at} clients")),
            x_desc: "latency (ms)".into(),
            y_desc: "share of requests answered within".into(),
            log_x: true,
            log_y: false,
            lines: cdfs,
        },
        &dir.join("serve-latency-cdf.png"),
    )?;
    Ok(())
}
