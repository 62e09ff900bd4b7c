//! `tandem sample`: generate images with a `diffusion` or `consistency` bundle through the
//! runtime, exactly as `POST /v1/models/{id}/generate` would, and write them as one grid PNG.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use tandem_runtime::diffusion::DualFast;
use tandem_runtime::families::generator::{default_sampler, default_steps, image_grid};
use tandem_runtime::{BatchConfig, GenerateRequest, Runtime, RuntimeConfig};

/// Pixels between neighbouring images of the grid.
pub const GAP: usize = 2;

/// Arguments of `tandem sample`.
#[derive(clap::Args)]
pub struct Args {
    /// A `diffusion` or `consistency` bundle directory.
    #[arg(long)]
    model: PathBuf,
    /// Where to write the grid PNG.
    #[arg(long)]
    out: PathBuf,
    /// Images to generate.
    #[arg(long, default_value_t = 16)]
    n: usize,
    /// The class index to generate; unconditional when left out.
    #[arg(long)]
    class: Option<u32>,
    /// ddim, dpmpp2m, dpmpp3m, unipc or unipc-bh1 for diffusion models, consistency for
    /// consistency models [default: dpmpp2m, or consistency].
    #[arg(long)]
    sampler: Option<String>,
    /// Model evaluations per image [default: 10 for diffusion; for consistency the number of
    /// --sigmas, else 1].
    #[arg(long)]
    steps: Option<usize>,
    /// Seeds the noise; image i uses stream i of it.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Classifier-free guidance scale (diffusion only) [default: the model's].
    #[arg(long)]
    guidance: Option<f64>,
    /// Images per row of the grid [default: ceil(sqrt(n))].
    #[arg(long)]
    cols: Option<usize>,
    /// Wrap the ODE solver in DualFast with its defaults; any --dualfast-* flag turns it on too.
    #[arg(long)]
    dualfast: bool,
    /// DualFast's largest mixing coefficient [default: 0.3].
    #[arg(long)]
    dualfast_c_max: Option<f64>,
    /// DualFast's reference prediction: first or previous [default: first].
    #[arg(long)]
    dualfast_tau: Option<String>,
    /// How DualFast's coefficient grows: linear or constant [default: linear].
    #[arg(long)]
    dualfast_schedule: Option<String>,
    /// What DualFast mixes: eps or x0 [default: eps].
    #[arg(long)]
    dualfast_space: Option<String>,
    /// The noise levels to sample a consistency model at, comma separated, e.g. `80,0.8`
    /// [default: the bundle's list for --steps].
    #[arg(long, value_delimiter = ',')]
    sigmas: Vec<f64>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.n == 0 {
        bail!("--n must be at least 1");
    }
    let cols = args.cols.unwrap_or_else(|| args.n.isqrt() + usize::from(args.n.isqrt().pow(2) < args.n));
    if cols == 0 {
        bail!("--cols must be at least 1");
    }
    // One batch for the whole request, and no deadline: a command line waits as long as it takes.
    let batch = BatchConfig {
        max_batch_size: args.n,
        max_batch_delay: Duration::ZERO,
        request_timeout: Duration::from_secs(365 * 24 * 3600),
        ..BatchConfig::default()
    };
    let runtime = Runtime::new(RuntimeConfig { batch, cache_capacity: 0 });
    let info = runtime.load(&args.model).with_context(|| format!("cannot load {}", args.model.display()))?;
    let request = request(&args, &info.kind)?;
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let res = tokio.block_on(runtime.generate(&info.id, request))?;
    let png = image_grid(&res.images, cols, GAP)?;
    tandem_runtime::fs::atomic_write(&args.out, &png)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!(
        "wrote {} images of {} to {} ({cols} per row), {} network evaluations each",
        res.images.len(),
        res.model,
        args.out.display(),
        res.nfe
    );
    Ok(())
}

/// The runtime's request, with the defaults of the generate route for the model's kind.
fn request(args: &Args, kind: &str) -> anyhow::Result<GenerateRequest> {
    let sigmas = (!args.sigmas.is_empty()).then(|| args.sigmas.clone());
    let steps = args.steps.unwrap_or_else(|| default_steps(kind, sigmas.as_deref()));
    let dualfast_flags = args.dualfast_c_max.is_some()
        || args.dualfast_tau.is_some()
        || args.dualfast_schedule.is_some()
        || args.dualfast_space.is_some();
    let dualfast = if args.dualfast || dualfast_flags {
        Some(DualFast::from_names(
            args.dualfast_tau.as_deref(),
            args.dualfast_c_max,
            args.dualfast_schedule.as_deref(),
            args.dualfast_space.as_deref(),
        )?)
    } else {
        None
    };
    Ok(GenerateRequest {
        class: args.class,
        n: args.n,
        steps,
        sampler: args.sampler.clone().unwrap_or_else(|| default_sampler(kind).to_owned()),
        seed: args.seed,
        guidance: args.guidance,
        dualfast,
        sigmas,
    })
}
