//! `tandem bench diffusion`: sample quality and speed of a `diffusion` teacher under every solver,
//! with and without DualFast, over a list of NFE, and of `consistency` students at 1, 2 and 4
//! steps, all from the same classes and seeds.
//!
//! Each row reports FID-CNN (the Fréchet distance to the chosen split in the penultimate features
//! of a classifier bundle, `tandem_training::fid`), that classifier's accuracy on the
//! class-conditional samples, the MSE to a many-step DDIM reference from the same initial noise
//! (the metric of the DualFast paper), and images per second on this machine. `--split val` is
//! for choosing options; the table in BENCHMARKS.md is on the test split.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tandem_runtime::bundle::{Bundle, FamilySpec};
use tandem_runtime::diffusion::{DualFast, Solver};
use tandem_runtime::families::generator::{image_grid, GenerateRequest, GeneratedImage, Generative, Generator};
use tandem_runtime::models::consistency::ConsistencyNet;
use tandem_runtime::models::unet::UNet;
use tandem_training::data::{self, DatasetName, Split};
use tandem_training::fid::{FeatureExtractor, FeatureStats};

use super::Machine;

/// Arguments of `tandem bench diffusion`.
#[derive(clap::Args)]
pub struct DiffusionBenchArgs {
    /// The `diffusion` bundle.
    #[arg(long)]
    pub teacher: PathBuf,
    /// `consistency` bundles to add at 1, 2 and 4 steps.
    #[arg(long)]
    pub student: Vec<PathBuf>,
    /// The classifier bundle whose penultimate features FID-CNN uses, and whose accuracy on the
    /// samples is reported (the strongest classifier of the dataset).
    #[arg(long)]
    pub classifier: PathBuf,
    #[arg(long, default_value = "mnist")]
    pub dataset: DatasetName,
    /// The split the samples are compared with: test for the table, val for choosing options.
    #[arg(long, default_value = "test")]
    pub split: Split,
    /// Samples per row, spread evenly over the classes.
    #[arg(long, default_value_t = 10_000)]
    pub samples: usize,
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,5,6,8,10,20")]
    pub nfe: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "ddim,dpmpp2m,unipc")]
    pub samplers: Vec<String>,
    /// DualFast variants, each `tau:c_max:schedule:space` (e.g. `first:0.3:linear:eps`); every
    /// sampler runs without DualFast and with each variant.
    #[arg(long, value_delimiter = ',', default_value = "first:0.3:linear:eps")]
    pub dualfast: Vec<String>,
    /// Guidance scale (default: the teacher's).
    #[arg(long)]
    pub guidance: Option<f64>,
    /// Samples (per the whole row, spread over the classes) compared with the reference.
    #[arg(long, default_value_t = 100)]
    pub reference_samples: usize,
    /// DDIM steps of the reference.
    #[arg(long, default_value_t = 1000)]
    pub reference_steps: usize,
    /// Seed of the first class; class k uses seed + k.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Write a small grid (the first images of each class) per row into this directory.
    #[arg(long)]
    pub grids: Option<PathBuf>,
    #[arg(long, env = "TANDEM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    model: String,
    sampler: String,
    dualfast: Option<String>,
    nfe: usize,
    fid_cnn: f64,
    accuracy: f64,
    mse_to_reference: f64,
    images_per_s: f64,
}

/// What the rows share: classes, seeds, the split's statistics, the reference.
struct Setup {
    classes: usize,
    per_class: usize,
    ref_per_class: usize,
    seed: u64,
    extractor: FeatureExtractor,
    split_stats: FeatureStats,
    reference: Vec<Vec<u8>>,
}

impl Setup {
    /// The images of one request per class, in class order, with the time they took.
    fn sample<G: Generative>(
        &self,
        generator: &Generator<G>,
        base: &GenerateRequest,
        per_class: usize,
    ) -> Result<(Vec<Arc<GeneratedImage>>, f64)> {
        let started = Instant::now();
        let mut images = Vec::with_capacity(self.classes * per_class);
        for k in 0..self.classes {
            let req =
                GenerateRequest { class: Some(k as u32), n: per_class, seed: self.seed + k as u64, ..base.clone() };
            images.extend(generator.generate_now(&req, 64)?.images);
        }
        Ok((images, started.elapsed().as_secs_f64()))
    }

    /// Scores a row's images.
    fn row<G: Generative>(
        &self,
        generator: &Generator<G>,
        base: &GenerateRequest,
        label: (&str, &str, Option<String>),
    ) -> Result<(Row, Vec<Arc<GeneratedImage>>)> {
        let (images, seconds) = self.sample(generator, base, self.per_class)?;
        let pixels: Vec<u8> = images.iter().flat_map(|i| i.pixels.iter().copied()).collect();
        let (features, predicted) = self.extractor.features_and_classes(&pixels)?;
        let fid = FeatureStats::of(&features)?.frechet_distance(&self.split_stats)?;
        let hits = predicted.iter().enumerate().filter(|(i, p)| **p == i / self.per_class).count();
        let mut squared = 0.0;
        let mut count = 0usize;
        for k in 0..self.classes {
            for j in 0..self.ref_per_class {
                let ours = &images[k * self.per_class + j].pixels;
                let reference = &self.reference[k * self.ref_per_class + j];
                squared += ours
                    .iter()
                    .zip(reference)
                    .map(|(a, b)| ((f64::from(*a) - f64::from(*b)) / 127.5).powi(2))
                    .sum::<f64>();
                count += ours.len();
            }
        }
        let row = Row {
            model: label.0.to_owned(),
            sampler: label.1.to_owned(),
            dualfast: label.2,
            nfe: base.steps,
            fid_cnn: fid,
            accuracy: hits as f64 / images.len() as f64,
            mse_to_reference: squared / count.max(1) as f64,
            images_per_s: images.len() as f64 / seconds.max(1e-9),
        };
        Ok((row, images))
    }
}

fn dualfast_variant(text: &str) -> Result<DualFast> {
    let parts: Vec<&str> = text.split(':').collect();
    let [tau, c_max, schedule, space] = parts.as_slice() else {
        bail!("a DualFast variant is tau:c_max:schedule:space, got {text:?}");
    };
    Ok(DualFast::from_names(Some(tau), Some(c_max.parse().context("c_max")?), Some(schedule), Some(space))?)
}

/// Runs the benchmark and prints the table, or one JSON object.
pub fn run_diffusion_bench(args: DiffusionBenchArgs) -> Result<()> {
    let machine = Machine::detect();
    let device = tandem_runtime::device::default_device();
    let bundle = Bundle::load(&args.teacher)?;
    let FamilySpec::Diffusion(spec) = bundle.manifest.family.clone() else {
        bail!("{} is not a diffusion bundle", args.teacher.display());
    };
    let classes = spec.labels.len().max(1);
    if args.samples < 2 * classes || args.reference_samples < classes {
        bail!("--samples must be at least 2 per class and --reference-samples at least 1 per class");
    }
    let teacher =
        Generator::diffusion(UNet::new(&spec.architecture, bundle.var_builder(&device))?, spec.clone(), &device)?;
    let extractor = FeatureExtractor::load(&args.classifier)?;
    let data_dir = args.data_dir.clone().unwrap_or_else(data::default_data_dir);
    let split = data::load(args.dataset, args.split, &data_dir)?;
    let split_stats = FeatureStats::of(&extractor.features(&split.images)?)?;
    if !args.json {
        println!("tandem bench diffusion | {}", machine.describe());
        println!(
            "teacher {} | FID-CNN features: {} | {} {} images | {} samples per row | reference: DDIM {} steps on {} samples",
            bundle.model_id(),
            extractor.model,
            args.dataset,
            args.split,
            args.samples,
            args.reference_steps,
            args.reference_samples
        );
    }
    let base = GenerateRequest {
        class: None,
        n: 1,
        steps: args.reference_steps,
        sampler: "ddim".into(),
        seed: args.seed,
        guidance: args.guidance,
        dualfast: None,
        sigmas: None,
    };
    let mut setup = Setup {
        classes,
        per_class: args.samples / classes,
        ref_per_class: (args.reference_samples / classes).min(args.samples / classes),
        seed: args.seed,
        extractor,
        split_stats,
        reference: Vec::new(),
    };
    let started = Instant::now();
    let (reference, _) = setup.sample(&teacher, &base, setup.ref_per_class)?;
    setup.reference = reference.iter().map(|i| i.pixels.clone()).collect();
    if !args.json {
        println!("reference sampled in {:.0}s", started.elapsed().as_secs_f64());
        println!("| model | sampler | DualFast | NFE | FID-CNN | accuracy | MSE to reference | images/s |");
        println!("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |");
    }
    let variants: Vec<(String, DualFast)> =
        args.dualfast.iter().map(|v| Ok((v.clone(), dualfast_variant(v)?))).collect::<Result<_>>()?;
    let mut rows = Vec::new();
    let mut record = |row: Row, images: Vec<Arc<GeneratedImage>>, json: bool| -> Result<()> {
        if !json {
            println!(
                "| {} | {} | {} | {} | {:.2} | {:.4} | {:.5} | {:.1} |",
                row.model,
                row.sampler,
                row.dualfast.as_deref().unwrap_or("off"),
                row.nfe,
                row.fid_cnn,
                row.accuracy,
                row.mse_to_reference,
                row.images_per_s
            );
        }
        if let Some(dir) = &args.grids {
            let per_class = setup_first(&images, classes, 8);
            let name = format!(
                "{}-{}-{}-nfe{}.png",
                row.model,
                row.sampler,
                row.dualfast.as_deref().unwrap_or("off").replace(':', "_"),
                row.nfe
            );
            std::fs::create_dir_all(dir)?;
            tandem_runtime::fs::atomic_write(&dir.join(name), &image_grid(&per_class, 8, 2)?)?;
        }
        rows.push(row);
        Ok(())
    };
    for sampler in &args.samplers {
        let solver: Solver = sampler.parse()?;
        for &nfe in &args.nfe {
            let options = std::iter::once(None).chain(variants.iter().map(|(name, d)| Some((name.clone(), *d))));
            for option in options {
                let req = GenerateRequest {
                    steps: nfe,
                    sampler: solver.as_str().into(),
                    dualfast: option.as_ref().map(|o| o.1),
                    ..base.clone()
                };
                let (row, images) =
                    setup.row(&teacher, &req, (&bundle.manifest.name, solver.as_str(), option.map(|o| o.0)))?;
                record(row, images, args.json)?;
            }
        }
    }
    for path in &args.student {
        let student = Bundle::load(path)?;
        let FamilySpec::Consistency(cspec) = student.manifest.family.clone() else {
            bail!("{} is not a consistency bundle", path.display());
        };
        let unet = UNet::new(&cspec.architecture, student.var_builder(&device))?;
        let generator = Generator::consistency(
            ConsistencyNet::new(unet, cspec.sigma_min, cspec.sigma_data, &cspec.parametrization)?,
            cspec.clone(),
            &device,
        );
        for steps in cspec.sigmas.keys().filter_map(|k| k.parse::<usize>().ok()) {
            let req = GenerateRequest { steps, sampler: "consistency".into(), guidance: None, ..base.clone() };
            let (row, images) = setup.row(&generator, &req, (&student.manifest.name, "consistency", None))?;
            record(row, images, args.json)?;
        }
    }
    if args.json {
        let out = serde_json::json!({ "machine": machine, "teacher": bundle.model_id(), "split": args.split.to_string(), "rows": rows });
        println!("{out}");
    }
    Ok(())
}

/// The first `n` images of each class of a row laid out class after class.
fn setup_first(images: &[Arc<GeneratedImage>], classes: usize, n: usize) -> Vec<Arc<GeneratedImage>> {
    let per_class = images.len() / classes.max(1);
    (0..classes).flat_map(|k| images[k * per_class..k * per_class + n.min(per_class)].iter().cloned()).collect()
}
