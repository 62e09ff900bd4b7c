//! The image generation families: `diffusion` (a DDPM teacher sampled by an ODE solver, optionally
//! wrapped in DualFast, with classifier-free guidance) and `consistency` (a consistency model
//! sampled in one or a few steps). Both answer [`Runtime::generate`].
//!
//! One item is one image. Items of a request share a [`GenerationPlan`] (sampler, steps, guidance,
//! DualFast, σ), and only items of one plan share a batch, so every model evaluation runs the whole
//! batch at one time point. Each image draws its noise from its own stream of ChaCha8 seeded by
//! the request's seed and the image's index; with a batch-invariant network this makes an image the
//! same, byte for byte, whether it ran alone or in a batch.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::batcher::BatchConfig;
use crate::bundle::{Bundle, ConsistencySpec, DiffusionSpec};
use crate::diffusion::{
    consistency_sample, sample, ConsistencyModel, DualFast, EpsModel, NoiseSchedule, SamplerConfig, Solver, TimePoint,
};
pub use crate::families::generated_image::{encode_png, image_grid, to_pixels, GeneratedImage};
use crate::family::Family;
use crate::models::consistency::ConsistencyNet;
use crate::models::unet::{UNet, UNetConfig};
use crate::registry::{Loaded, Served};
use crate::runtime::ModelInfo;
use crate::{Error, Result, Runtime};

/// The sampler name of consistency models.
pub const CONSISTENCY_SAMPLER: &str = "consistency";

/// The sampler a request for a model of `kind` gets when it names none: DPM-Solver++(2M) for
/// diffusion models, the consistency sampler for consistency models.
pub fn default_sampler(kind: &str) -> &'static str {
    if kind == ConsistencyModelNet::KIND {
        CONSISTENCY_SAMPLER
    } else {
        "dpmpp2m"
    }
}

/// The steps a request gets when it names none: one per given σ for a consistency model (one
/// step without σ), 10 for a diffusion model.
pub fn default_steps(kind: &str, sigmas: Option<&[f64]>) -> usize {
    match sigmas {
        _ if kind != ConsistencyModelNet::KIND => 10,
        Some(sigmas) => sigmas.len().max(1),
        None => 1,
    }
}

/// A generation request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// The class index to generate, or `None` for the unconditional (null-class) model.
    pub class: Option<u32>,
    /// Images to generate.
    pub n: usize,
    /// Model evaluations per image (sampler steps).
    pub steps: usize,
    /// `ddim`, `dpmpp2m`, `dpmpp3m`, `unipc`, `unipc-bh1` for diffusion models, `consistency` for
    /// consistency models.
    pub sampler: String,
    /// Seeds the noise; image `i` uses stream `i` of this seed.
    pub seed: u64,
    /// Classifier-free guidance scale (diffusion only); `None` takes the bundle's default.
    pub guidance: Option<f64>,
    /// Wraps the ODE solver in DualFast (diffusion only).
    pub dualfast: Option<DualFast>,
    /// The σ to sample at (consistency only), first σ_max; `None` takes the bundle's list for
    /// `steps`.
    pub sigmas: Option<Vec<f64>>,
}

/// The generated images, in request order.
#[derive(Debug, Clone)]
pub struct GenerateResponse {
    /// `name@version` of the model that answered.
    pub model: String,
    /// Network evaluations per image (guided sampling runs the conditional and unconditional
    /// branch in one batched evaluation, counted once).
    pub nfe: usize,
    /// One image per requested one.
    pub images: Vec<Arc<GeneratedImage>>,
}

/// How a sampler integrates: an ODE solver over a diffusion model, or consistency steps.
#[derive(Debug, Clone, PartialEq)]
enum Method {
    Ode { config: SamplerConfig, guidance: f64 },
    Consistency { sigmas: Vec<f64> },
}

/// Everything the images of one request share; only items of one plan share a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationPlan {
    steps: usize,
    method: Method,
    key: u64,
}

impl GenerationPlan {
    fn new(steps: usize, method: Method) -> GenerationPlan {
        let mut hasher = DefaultHasher::new();
        steps.hash(&mut hasher);
        // Every parameter enters the key, floats by their bits, so two plans share a batch or a
        // cached image only when they would compute the same thing.
        format!("{method:?}").hash(&mut hasher);
        if let Method::Ode { guidance, config } = &method {
            guidance.to_bits().hash(&mut hasher);
            if let Some(d) = &config.dualfast {
                d.c_max.to_bits().hash(&mut hasher);
            }
        }
        if let Method::Consistency { sigmas } = &method {
            sigmas.iter().for_each(|s| s.to_bits().hash(&mut hasher));
        }
        GenerationPlan { steps, method, key: hasher.finish() }
    }
}

/// One image to generate.
#[derive(Debug, Clone)]
pub struct GenerateItem {
    plan: Arc<GenerationPlan>,
    class: u32,
    seed: u64,
    index: u64,
}

impl GenerateItem {
    /// The image's own noise generator: stream `index` of `seed`.
    fn rng(&self) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(self.index);
        rng
    }
}

/// What differs between the two kinds: the network and how one plan runs it.
pub trait Generative: Send + Sync + 'static {
    /// The manifest kind.
    const KIND: &'static str;
    /// The UNet's architecture.
    fn architecture(&self) -> &UNetConfig;
    /// Class labels, empty for an unconditional model.
    fn labels(&self) -> &[String];
    /// Checks a request against this model and turns it into a plan.
    fn plan(&self, request: &GenerateRequest) -> Result<GenerationPlan>;
    /// Samples a batch from its initial noise `x` (flattened), drawing later noise from `rngs`.
    fn sample(&self, plan: &GenerationPlan, classes: &[u32], x: Vec<f32>, rngs: &mut [ChaCha8Rng]) -> Result<Vec<f32>>;
}

/// A loaded generative model of kind `G`.
pub struct Generator<G: Generative> {
    model: G,
}

/// A DDPM teacher, sampled by an ODE solver.
pub struct DiffusionModel {
    net: UNet,
    schedule: NoiseSchedule,
    spec: DiffusionSpec,
    device: Device,
}

/// A consistency model.
pub struct ConsistencyModelNet {
    net: ConsistencyNet,
    spec: ConsistencySpec,
    device: Device,
}

/// Parses and checks the options shared by both kinds.
fn check_common(request: &GenerateRequest, labels: &[String]) -> Result<()> {
    if request.n == 0 {
        return Err(Error::InvalidInput("n must be at least 1".into()));
    }
    if request.steps == 0 {
        return Err(Error::InvalidInput("steps must be at least 1".into()));
    }
    match (request.class, labels.len()) {
        (Some(_), 0) => Err(Error::InvalidInput("this model is unconditional: leave out class".into())),
        (Some(k), n) if k as usize >= n => {
            Err(Error::InvalidInput(format!("class {k} is out of range: the model has classes 0 to {}", n - 1)))
        }
        _ => Ok(()),
    }
}

impl Generative for DiffusionModel {
    const KIND: &'static str = "diffusion";

    fn architecture(&self) -> &UNetConfig {
        self.net.config()
    }

    fn labels(&self) -> &[String] {
        &self.spec.labels
    }

    fn plan(&self, request: &GenerateRequest) -> Result<GenerationPlan> {
        check_common(request, &self.spec.labels)?;
        if request.sampler == CONSISTENCY_SAMPLER {
            return Err(Error::InvalidInput(format!(
                "sampler {CONSISTENCY_SAMPLER} needs a consistency model; a diffusion model takes {}",
                Solver::ALL.map(Solver::as_str).join(", ")
            )));
        }
        let solver: Solver = request.sampler.parse()?;
        if request.sigmas.is_some() {
            return Err(Error::InvalidInput("sigmas apply to consistency models only".into()));
        }
        if request.steps > self.schedule.train_steps() {
            return Err(Error::InvalidInput(format!(
                "steps must be at most {} (the model's training steps), got {}",
                self.schedule.train_steps(),
                request.steps
            )));
        }
        let guidance = request.guidance.unwrap_or(self.spec.guidance);
        if !(guidance.is_finite() && (0.0..=50.0).contains(&guidance)) {
            return Err(Error::InvalidInput(format!("guidance must be between 0 and 50, got {guidance}")));
        }
        if let Some(d) = &request.dualfast {
            if !(d.c_max.is_finite() && d.c_max.abs() <= 1.0) {
                return Err(Error::InvalidInput(format!("dualfast c_max must be between -1 and 1, got {}", d.c_max)));
            }
        }
        // Images live on [−1, 1] inside the model.
        let config = SamplerConfig { solver, dualfast: request.dualfast, clip_x0: Some(1.0) };
        Ok(GenerationPlan::new(request.steps, Method::Ode { config, guidance }))
    }

    fn sample(&self, plan: &GenerationPlan, classes: &[u32], x: Vec<f32>, _: &mut [ChaCha8Rng]) -> Result<Vec<f32>> {
        let Method::Ode { config, guidance } = &plan.method else {
            return Err(Error::Internal("a diffusion model got a consistency plan. This is a bug.".into()));
        };
        let grid = self.schedule.sampling_grid(plan.steps)?;
        let mut guided = Guided { net: &self.net, classes, guidance: *guidance, device: &self.device };
        sample(&mut guided, &grid, config, x)
    }
}

impl Generative for ConsistencyModelNet {
    const KIND: &'static str = "consistency";

    fn architecture(&self) -> &UNetConfig {
        self.net.unet().config()
    }

    fn labels(&self) -> &[String] {
        &self.spec.labels
    }

    fn plan(&self, request: &GenerateRequest) -> Result<GenerationPlan> {
        check_common(request, &self.spec.labels)?;
        if request.sampler != CONSISTENCY_SAMPLER {
            return Err(Error::InvalidInput(format!(
                "a consistency model takes sampler {CONSISTENCY_SAMPLER}, got {:?}",
                request.sampler
            )));
        }
        if request.dualfast.is_some() || request.guidance.is_some() {
            return Err(Error::InvalidInput("dualfast and guidance apply to diffusion models only".into()));
        }
        let sigmas = match &request.sigmas {
            Some(sigmas) => sigmas.clone(),
            None => self.spec.sigmas.get(&request.steps.to_string()).cloned().ok_or_else(|| {
                let known: Vec<&String> = self.spec.sigmas.keys().collect();
                Error::InvalidInput(format!(
                    "this model has no σ list for {} steps (it has {known:?}); give sigmas",
                    request.steps
                ))
            })?,
        };
        if sigmas.len() != request.steps {
            return Err(Error::InvalidInput(format!("{} sigmas for {} steps", sigmas.len(), request.steps)));
        }
        let (min, max) = (self.spec.sigma_min, self.spec.sigma_max);
        let ordered = sigmas.windows(2).all(|w| w[0] > w[1]);
        if !ordered || sigmas.iter().any(|s| !(s.is_finite() && *s > min && *s <= max)) {
            return Err(Error::InvalidInput(format!(
                "sigmas must decrease strictly and lie in ({min}, {max}], got {sigmas:?}"
            )));
        }
        Ok(GenerationPlan::new(request.steps, Method::Consistency { sigmas }))
    }

    fn sample(&self, plan: &GenerationPlan, classes: &[u32], x: Vec<f32>, rngs: &mut [ChaCha8Rng]) -> Result<Vec<f32>> {
        let Method::Consistency { sigmas } = &plan.method else {
            return Err(Error::Internal("a consistency model got an ODE plan. This is a bug.".into()));
        };
        let dim = self.architecture().image_dim();
        // The caller's noise is unit-variance; consistency sampling starts from σ_max·z.
        let x: Vec<f32> = x.iter().map(|v| (f64::from(*v) * sigmas[0]) as f32).collect();
        let mut noise = |_: usize| rngs.iter_mut().flat_map(|rng| normals(rng, dim)).collect::<Vec<f32>>();
        let mut model = Denoiser { net: &self.net, classes, device: &self.device };
        // Served samples stay in the data range at every step, as the diffusion solvers' x₀ do.
        consistency_sample(&mut model, sigmas, self.spec.sigma_min, x, &mut noise, Some((-1.0, 1.0)))
    }
}

/// `n` standard normal draws.
fn normals(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

/// The UNet as an ε model, with classifier-free guidance: ε = ε_∅ + w·(ε_c − ε_∅), both branches in
/// one batch. Images without a class run the null class alone; for them the formula gives ε_∅
/// exactly, so a batch's composition never changes an image.
struct Guided<'a> {
    net: &'a UNet,
    classes: &'a [u32],
    guidance: f64,
    device: &'a Device,
}

impl EpsModel for Guided<'_> {
    fn predict_eps(&mut self, x: &[f32], t: &TimePoint) -> Result<Vec<f32>> {
        let n = self.classes.len();
        let null = self.net.null_class();
        let shape = image_batch_shape(self.net.config(), n);
        let guide = self.guidance != 1.0 && self.classes.iter().any(|k| *k != null);
        if !guide {
            let x = Tensor::from_slice(x, shape, self.device)?;
            let eps = self.net.forward(&x, &vec![t.t as f32; n], self.classes, false)?;
            return Ok(eps.flatten_all()?.to_vec1::<f32>()?);
        }
        let x = Tensor::from_slice(x, shape, self.device)?;
        let both = Tensor::cat(&[&x, &x], 0)?;
        let mut classes = self.classes.to_vec();
        classes.extend(std::iter::repeat_n(null, n));
        let eps =
            self.net.forward(&both, &vec![t.t as f32; 2 * n], &classes, false)?.flatten_all()?.to_vec1::<f32>()?;
        let (cond, uncond) = eps.split_at(eps.len() / 2);
        let w = self.guidance;
        Ok(cond.iter().zip(uncond).map(|(c, u)| (f64::from(*u) + w * (f64::from(*c) - f64::from(*u))) as f32).collect())
    }
}

/// The consistency network as the sampler sees it.
struct Denoiser<'a> {
    net: &'a ConsistencyNet,
    classes: &'a [u32],
    device: &'a Device,
}

impl ConsistencyModel for Denoiser<'_> {
    fn denoise(&mut self, x: &[f32], sigma: f64) -> Result<Vec<f32>> {
        let n = self.classes.len();
        let x = Tensor::from_slice(x, image_batch_shape(self.net.unet().config(), n), self.device)?;
        let out = self.net.forward(&x, &vec![sigma; n], self.classes, false)?;
        Ok(out.flatten_all()?.to_vec1::<f32>()?)
    }
}

fn image_batch_shape(cfg: &UNetConfig, n: usize) -> (usize, usize, usize, usize) {
    let [c, h, w] = cfg.image_shape;
    (n, c, h, w)
}

impl<G: Generative> Family for Generator<G> {
    const KIND: &'static str = G::KIND;
    type Item = GenerateItem;
    type Output = Arc<GeneratedImage>;

    fn group(&self, item: &GenerateItem) -> u64 {
        item.plan.key
    }

    fn cache_key(&self, item: &GenerateItem) -> Option<u64> {
        let mut hasher = DefaultHasher::new();
        (item.plan.key, item.class, item.seed, item.index).hash(&mut hasher);
        Some(hasher.finish())
    }

    fn run_batch(&self, items: &[GenerateItem]) -> Result<Vec<Arc<GeneratedImage>>> {
        let Some(first) = items.first() else { return Ok(Vec::new()) };
        if items.iter().any(|i| i.plan.key != first.plan.key) {
            return Err(Error::Internal("a batch mixed generation plans. This is a bug.".into()));
        }
        let shape = self.model.architecture().image_shape;
        let dim = self.model.architecture().image_dim();
        let mut rngs: Vec<ChaCha8Rng> = items.iter().map(GenerateItem::rng).collect();
        let x: Vec<f32> = rngs.iter_mut().flat_map(|rng| normals(rng, dim)).collect();
        let classes: Vec<u32> = items.iter().map(|i| i.class).collect();
        let out = self.model.sample(&first.plan, &classes, x, &mut rngs)?;
        if let Some(i) = out.iter().position(|v| !v.is_finite()) {
            return Err(Error::Internal(format!("the sampler produced a non-finite value at element {i}")));
        }
        out.chunks(dim).map(|values| Ok(Arc::new(GeneratedImage::from_model_space(values, shape)?))).collect()
    }

    fn warmup_item(&self) -> GenerateItem {
        let plan = self
            .model
            .plan(&warmup_request::<G>())
            .unwrap_or_else(|_| GenerationPlan::new(1, Method::Consistency { sigmas: vec![1.0] }));
        GenerateItem { plan: Arc::new(plan), class: self.null_class(), seed: 0, index: 0 }
    }
}

/// The cheapest request a kind answers: one step of its first sampler.
fn warmup_request<G: Generative>() -> GenerateRequest {
    let sampler = if G::KIND == ConsistencyModelNet::KIND { CONSISTENCY_SAMPLER } else { "ddim" };
    GenerateRequest {
        class: None,
        n: 1,
        steps: 1,
        sampler: sampler.into(),
        seed: 0,
        guidance: None,
        dualfast: None,
        sigmas: None,
    }
}

impl Generator<DiffusionModel> {
    /// A diffusion generator over a network held in memory, e.g. the EMA weights during training.
    pub fn diffusion(net: UNet, spec: DiffusionSpec, device: &Device) -> Result<Self> {
        let schedule = NoiseSchedule::new(spec.schedule, spec.train_steps)?;
        Ok(Generator { model: DiffusionModel { net, schedule, spec, device: device.clone() } })
    }
}

impl Generator<ConsistencyModelNet> {
    /// A consistency generator over a network held in memory.
    pub fn consistency(net: ConsistencyNet, spec: ConsistencySpec, device: &Device) -> Self {
        Generator { model: ConsistencyModelNet { net, spec, device: device.clone() } }
    }
}

impl<G: Generative> Generator<G> {
    /// Runs `request` on the calling thread in batches of at most `batch` images, through the same
    /// plan, noise and batch path as served requests: training's validation and offline tools use
    /// it without a [`Runtime`].
    pub fn generate_now(&self, request: &GenerateRequest, batch: usize) -> Result<GenerateResponse> {
        let (nfe, items) = self.items(request)?;
        let mut images = Vec::with_capacity(items.len());
        for chunk in items.chunks(batch.max(1)) {
            images.extend(self.run_batch(chunk)?);
        }
        Ok(GenerateResponse { model: String::new(), nfe, images })
    }

    fn null_class(&self) -> u32 {
        self.model.labels().len() as u32
    }

    /// The model's class labels.
    pub fn labels(&self) -> &[String] {
        self.model.labels()
    }

    /// Checks `request` and makes its items.
    pub fn items(&self, request: &GenerateRequest) -> Result<(usize, Vec<GenerateItem>)> {
        let plan = Arc::new(self.model.plan(request)?);
        let class = request.class.unwrap_or(self.null_class());
        let items = (0..request.n as u64)
            .map(|index| GenerateItem { plan: plan.clone(), class, seed: request.seed, index })
            .collect();
        Ok((plan.steps, items))
    }
}

impl Runtime {
    /// Generates images with the model `id`, a `diffusion` or a `consistency` model.
    pub async fn generate(&self, id: &str, request: GenerateRequest) -> Result<GenerateResponse> {
        match self.typed::<Generator<DiffusionModel>>(id) {
            Ok(model) => self.generate_with(&model, &request).await,
            Err(Error::WrongKind { model, kind, .. }) => match self.typed::<Generator<ConsistencyModelNet>>(id) {
                Ok(m) => self.generate_with(&m, &request).await,
                Err(_) => Err(Error::WrongKind { model, kind, expected: "diffusion or consistency" }),
            },
            Err(e) => Err(e),
        }
    }

    async fn generate_with<G: Generative>(
        &self,
        model: &Loaded<Generator<G>>,
        request: &GenerateRequest,
    ) -> Result<GenerateResponse> {
        let (nfe, items) = model.family.items(request)?;
        let images = self.infer(model, items).await?;
        Ok(GenerateResponse { model: model.info.id.clone(), nfe, images })
    }
}

/// Builds the UNet of a bundle.
fn unet(bundle: &Bundle, cfg: &UNetConfig, device: &Device) -> Result<UNet> {
    UNet::new(cfg, bundle.var_builder(device)).map_err(|e| Error::Bundle(e.to_string()))
}

fn params(cfg: &UNetConfig) -> Result<usize> {
    crate::models::unet::parameter_count(cfg).map_err(|e| Error::Bundle(e.to_string()))
}

/// Loads a diffusion bundle into a served model.
pub(crate) fn load_diffusion(
    bundle: &Bundle,
    spec: &DiffusionSpec,
    device: &Device,
    batch: BatchConfig,
) -> Result<Arc<dyn Served>> {
    let model = DiffusionModel {
        net: unet(bundle, &spec.architecture, device)?,
        schedule: NoiseSchedule::new(spec.schedule, spec.train_steps)?,
        spec: spec.clone(),
        device: device.clone(),
    };
    let info = ModelInfo::of(bundle, params(&spec.architecture)?);
    Ok(Arc::new(Loaded::new(info, Generator { model }, batch)))
}

/// Loads a consistency bundle into a served model.
pub(crate) fn load_consistency(
    bundle: &Bundle,
    spec: &ConsistencySpec,
    device: &Device,
    batch: BatchConfig,
) -> Result<Arc<dyn Served>> {
    let net = ConsistencyNet::new(
        unet(bundle, &spec.architecture, device)?,
        spec.sigma_min,
        spec.sigma_data,
        &spec.parametrization,
    )?;
    let model = ConsistencyModelNet { net, spec: spec.clone(), device: device.clone() };
    let info = ModelInfo::of(bundle, params(&spec.architecture)?);
    Ok(Arc::new(Loaded::new(info, Generator { model }, batch)))
}

type SpecCheck = std::result::Result<(), (String, String)>;

fn check_labels(cfg: &UNetConfig, labels: &[String]) -> SpecCheck {
    if let Err(e) = cfg.validate() {
        return Err(("architecture".into(), e.to_string()));
    }
    if labels.len() != cfg.num_classes {
        return Err((
            "labels".into(),
            format!("expected {} labels (num_classes), found {}", cfg.num_classes, labels.len()),
        ));
    }
    Ok(())
}

/// Checks a diffusion section; errors are `(field, message)` under `family`.
pub(crate) fn validate_diffusion(spec: &DiffusionSpec) -> SpecCheck {
    check_labels(&spec.architecture, &spec.labels)?;
    if let Err(e) = NoiseSchedule::new(spec.schedule, spec.train_steps) {
        return Err(("schedule".into(), e.to_string()));
    }
    if !(spec.guidance.is_finite() && spec.guidance >= 0.0) {
        return Err(("guidance".into(), format!("must be finite and non-negative, found {}", spec.guidance)));
    }
    Ok(())
}

/// Checks a consistency section; errors are `(field, message)` under `family`.
pub(crate) fn validate_consistency(spec: &ConsistencySpec) -> SpecCheck {
    check_labels(&spec.architecture, &spec.labels)?;
    let (min, max, data) = (spec.sigma_min, spec.sigma_max, spec.sigma_data);
    if !(min.is_finite() && max.is_finite() && data.is_finite() && 0.0 < min && min < max && data > 0.0) {
        return Err((
            "sigma_min".into(),
            format!("need 0 < sigma_min < sigma_max and sigma_data > 0, found {min}, {max}, {data}"),
        ));
    }
    for (steps, sigmas) in &spec.sigmas {
        let ok = steps.parse::<usize>().is_ok_and(|n| n == sigmas.len())
            && sigmas.windows(2).all(|w| w[0] > w[1])
            && sigmas.iter().all(|s| s.is_finite() && *s > min && *s <= max);
        if !ok {
            return Err((
                format!("sigmas.{steps}"),
                format!("must hold {steps} decreasing σ in ({min}, {max}], found {sigmas:?}"),
            ));
        }
    }
    Ok(())
}

/// Every tensor a UNet config builds, by name and shape.
pub(crate) fn expected_shapes(cfg: &UNetConfig) -> Result<std::collections::BTreeMap<String, Vec<usize>>> {
    let varmap = candle_nn::VarMap::new();
    UNet::new(cfg, candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &Device::Cpu))?;
    Ok(crate::bundle::shapes_of(&varmap))
}
