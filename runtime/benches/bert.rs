//! Sentences per second of the candle BERT encoder against the fast CPU encoder, on a real
//! sentence-transformers model (all-MiniLM-L6-v2 or another BERT), for short and long texts.
//!
//! Run with `cargo bench -p tandem-runtime --bench bert -- MODEL_DIR [--threads N]
//! [--batches 1,8,32] [--seconds S] [--corpus-out FILE] [--fast-only]`. MODEL_DIR is a sentence-transformers
//! directory. Short texts are single sentences (about 12 tokens with `[CLS]` and `[SEP]`), long
//! ones consecutive sentences joined up to 128 tokens; a batch of either is the first `batch`
//! texts. `--corpus-out` writes the texts as `{"short": [...], "long": [...]}`, the format of
//! `benches/ort_minilm.py --corpus-json` at the workspace root, so ONNX Runtime can be timed on
//! the same texts. Each figure is the best of three windows after a warm-up. Also prints the
//! largest difference between the two encoders' embeddings of the timed texts. `--fast-only`
//! skips timing candle, for profiling the fast encoder.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use tandem_runtime::hf::read_sentence_transformers_dir;
use tandem_runtime::models::bert_inference::FastBertEncoder;
use tandem_runtime::models::sentence_encoder::SentenceEncoder;
use tandem_runtime::testing_text::benchmark_texts;
use tandem_runtime::text::TextTokenizer;

/// Long texts stop growing before they pass this many tokens.
const LONG_TOKENS: usize = 128;

type Error = Box<dyn std::error::Error>;

struct Args {
    model: PathBuf,
    threads: usize,
    batches: Vec<usize>,
    seconds: f64,
    corpus_out: Option<PathBuf>,
    fast_only: bool,
}

fn parse_args() -> Result<Args, Error> {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let mut parsed = Args {
        model: PathBuf::new(),
        threads: 2,
        batches: vec![1, 8, 32],
        seconds: 1.5,
        corpus_out: None,
        fast_only: false,
    };
    let mut model = None;
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--threads" => parsed.threads = value()?.parse()?,
            "--batches" => {
                parsed.batches = value()?.split(',').map(str::parse).collect::<Result<_, _>>()?;
            }
            "--seconds" => parsed.seconds = value()?.parse()?,
            "--corpus-out" => parsed.corpus_out = Some(value()?.into()),
            "--fast-only" => parsed.fast_only = true,
            _ if !arg.starts_with("--") && model.is_none() => model = Some(PathBuf::from(arg)),
            _ => return Err(format!("unexpected argument {arg}").into()),
        }
    }
    parsed.model = model.ok_or("usage: bert MODEL_DIR [--threads N] [--batches 1,8,32] [--seconds S]")?;
    Ok(parsed)
}

/// `n` short and `n` long texts, the same ones `tandem bench embed` times.
fn corpus(tokenizer: &TextTokenizer, n: usize) -> Result<(Vec<String>, Vec<String>), Error> {
    Ok(benchmark_texts(tokenizer, n, LONG_TOKENS)?)
}

/// Sentences per second of `call` on `batch` texts: warm-up, then the best of three windows.
fn rate(batch: usize, budget: Duration, mut call: impl FnMut()) -> f64 {
    call();
    call();
    let mut best: f64 = 0.0;
    for _ in 0..3 {
        let (start, mut runs) = (Instant::now(), 0usize);
        while runs == 0 || start.elapsed() < budget / 3 {
            call();
            runs += 1;
        }
        best = best.max((batch * runs) as f64 / start.elapsed().as_secs_f64());
    }
    best
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn main() -> Result<(), Error> {
    let args = parse_args()?;
    rayon::ThreadPoolBuilder::new().num_threads(args.threads).build_global()?;
    let st = read_sentence_transformers_dir(&args.model)?;
    let tokenizer = TextTokenizer::from_bytes(&std::fs::read(&st.tokenizer)?, st.max_seq_length)?;
    // SAFETY: the weights file is not modified while the benchmark runs.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&st.weights], DType::F32, &Device::Cpu)? };
    let candle = SentenceEncoder::new(&st.bert, st.pooling, vb.clone())?;
    let start = Instant::now();
    let fast = FastBertEncoder::new(&st.bert, st.pooling, vb)?;
    let load = start.elapsed();

    let n = args.batches.iter().copied().max().unwrap_or(1);
    let (short, long) = corpus(&tokenizer, n)?;
    if let Some(path) = &args.corpus_out {
        std::fs::write(path, serde_json::to_string(&serde_json::json!({"short": short, "long": long}))?)?;
    }
    println!(
        "{} layers, width {}; {} rayon threads; fast encoder packed in {:.0} ms",
        st.bert.num_hidden_layers,
        st.bert.hidden_size,
        args.threads,
        load.as_secs_f64() * 1e3
    );
    println!("{:<6} {:>5} {:>7} {:>12} {:>12} {:>8}", "length", "batch", "tokens", "candle/s", "fast/s", "speedup");
    let budget = Duration::from_secs_f64(args.seconds);
    let mut worst: f32 = 0.0;
    for (name, texts) in [("short", &short), ("long", &long)] {
        let ids: Vec<Vec<u32>> =
            texts.iter().map(|t| tokenizer.encode(t, true).map(|e| e.ids)).collect::<Result<_, _>>()?;
        let all: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        worst = worst.max(max_abs_diff(&candle.embed(&all)?, &fast.embed(&all)?));
        for &batch in &args.batches {
            let refs = &all[..batch];
            let tokens = refs.iter().map(|s| s.len()).sum::<usize>() as f64 / batch as f64;
            let slow = if args.fast_only {
                f64::NAN
            } else {
                rate(batch, budget, || {
                    candle.embed(refs).expect("the candle encoder embeds the corpus");
                })
            };
            let quick = rate(batch, budget, || {
                fast.embed(refs).expect("the fast encoder embeds the corpus");
            });
            println!("{name:<6} {batch:>5} {tokens:>7.1} {slow:>12.1} {quick:>12.1} {:>7.2}x", quick / slow);
        }
    }
    println!("largest difference between the encoders' embeddings: {worst:.3e}");
    Ok(())
}
