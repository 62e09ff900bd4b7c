//! Image generation end to end through the runtime: diffusion and consistency bundles, every
//! sampler, determinism by seed, batch invariance, and the errors of bad requests.

use std::time::Duration;

use tandem_runtime::diffusion::{CSchedule, DualFast, DualFastTau, MixSpace};
use tandem_runtime::testing::{write_tiny_consistency_bundle, write_tiny_diffusion_bundle};
use tandem_runtime::{BatchConfig, DelayPolicy, Error, GenerateRequest, Runtime, RuntimeConfig};

fn runtime(max_batch_size: usize) -> (tempfile::TempDir, Runtime) {
    let tmp = tempfile::tempdir().unwrap();
    write_tiny_diffusion_bundle(tmp.path(), "ddpm").unwrap();
    write_tiny_consistency_bundle(tmp.path(), "cm").unwrap();
    let rt = runtime_on(tmp.path(), max_batch_size);
    (tmp, rt)
}

/// A runtime over the bundles `runtime` wrote into `dir`.
fn runtime_on(dir: &std::path::Path, max_batch_size: usize) -> Runtime {
    let batch = BatchConfig {
        max_batch_size,
        max_batch_delay: Duration::from_millis(30),
        delay_policy: DelayPolicy::Fixed,
        ..Default::default()
    };
    let rt = Runtime::new(RuntimeConfig { batch, cache_capacity: 0 });
    rt.load(&dir.join("ddpm")).unwrap();
    rt.load(&dir.join("cm")).unwrap();
    rt
}

/// Asserts two images are the same bytes, reporting how many differ rather than both images.
fn same(a: &[u8], b: &[u8], what: &str) {
    let differing = a.iter().zip(b).filter(|(x, y)| x != y).count();
    assert!(a.len() == b.len() && differing == 0, "{what}: {differing} of {} bytes differ", a.len());
}

fn request(sampler: &str, steps: usize, n: usize, seed: u64) -> GenerateRequest {
    GenerateRequest {
        class: Some(3),
        n,
        steps,
        sampler: sampler.into(),
        seed,
        guidance: None,
        dualfast: None,
        sigmas: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sampler_generates_png_images() {
    let (_tmp, rt) = runtime(8);
    for sampler in ["ddim", "dpmpp2m", "dpmpp3m", "unipc", "unipc-bh1"] {
        for dualfast in [None, Some(DualFast::default())] {
            let mut req = request(sampler, 4, 2, 7);
            req.dualfast = dualfast;
            req.guidance = Some(2.0);
            let res = rt.generate("ddpm", req).await.unwrap();
            assert_eq!((res.nfe, res.images.len()), (4, 2));
            let img = &res.images[0];
            assert_eq!((img.width, img.height, img.pixels.len()), (28, 28, 784));
            let decoded = image::load_from_memory(&img.png).unwrap().to_luma8();
            assert_eq!(decoded.as_raw(), &img.pixels, "{sampler}: the PNG holds the pixels");
            assert_ne!(res.images[0].pixels, res.images[1].pixels, "{sampler}: two images, two noises");
        }
    }
    let res = rt.generate("cm", request("consistency", 2, 1, 7)).await.unwrap();
    assert_eq!((res.nfe, res.images.len()), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guided_image_is_the_same_alone_or_in_any_batch() {
    let (tmp, batched) = runtime(16);
    let single = runtime_on(tmp.path(), 1);
    let mut req = request("dpmpp2m", 2, 5, 11);
    req.guidance = Some(3.0);
    let together = batched.generate("ddpm", req.clone()).await.unwrap();
    let alone = single.generate("ddpm", req.clone()).await.unwrap();
    // Concurrent requests with the same plan share batches: an unconditional one and another class.
    let mut unconditional = req.clone();
    unconditional.class = None;
    let mut other_class = req.clone();
    other_class.class = Some(8);
    let (mixed, _, _) = tokio::join!(
        batched.generate("ddpm", req.clone()),
        batched.generate("ddpm", unconditional.clone()),
        batched.generate("ddpm", other_class)
    );
    let unconditional_alone = single.generate("ddpm", unconditional).await.unwrap();
    let mixed = mixed.unwrap();
    for i in 0..5 {
        same(&together.images[i].png, &alone.images[i].png, &format!("image {i}"));
        same(&together.images[i].png, &mixed.images[i].png, &format!("image {i}, mixed batch"));
    }
    assert_ne!(unconditional_alone.images[0].pixels, together.images[0].pixels, "the class matters");
    let reseeded = batched.generate("ddpm", GenerateRequest { seed: 12, ..req }).await.unwrap();
    assert_ne!(reseeded.images[0].pixels, together.images[0].pixels, "a new seed, a new image");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consistency_model_is_the_same_alone_or_in_a_batch() {
    let (tmp, batched) = runtime(16);
    let single = runtime_on(tmp.path(), 1);
    let req = request("consistency", 2, 4, 5);
    let together = batched.generate("cm", req.clone()).await.unwrap();
    let alone = single.generate("cm", req).await.unwrap();
    for i in 0..4 {
        same(&together.images[i].png, &alone.images[i].png, &format!("image {i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dualfast_with_zero_c_changes_nothing_and_otherwise_something() {
    let (_tmp, rt) = runtime(8);
    let plain = rt.generate("ddpm", request("unipc", 5, 1, 3)).await.unwrap();
    let mut off = request("unipc", 5, 1, 3);
    off.dualfast = Some(DualFast { c_max: 0.0, ..DualFast::default() });
    let off = rt.generate("ddpm", off).await.unwrap();
    same(&plain.images[0].png, &off.images[0].png, "c = 0");
    let mut on = request("unipc", 5, 1, 3);
    on.dualfast =
        Some(DualFast { tau: DualFastTau::Previous, c_max: 0.5, schedule: CSchedule::Constant, space: MixSpace::X0 });
    let on = rt.generate("ddpm", on).await.unwrap();
    assert_ne!(plain.images[0].pixels, on.images[0].pixels);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_invalid_input_and_other_kinds_are_wrong_kind() {
    let (_tmp, rt) = runtime(8);
    let invalid = |e: Error| matches!(e, Error::InvalidInput(_));
    let cases: Vec<(&str, GenerateRequest)> = vec![
        ("ddpm", request("euler", 4, 1, 0)),
        ("ddpm", request("consistency", 4, 1, 0)),
        ("cm", request("ddim", 2, 1, 0)),
        ("ddpm", request("ddim", 0, 1, 0)),
        ("ddpm", request("ddim", 1001, 1, 0)),
        ("ddpm", request("ddim", 4, 0, 0)),
        ("ddpm", GenerateRequest { class: Some(10), ..request("ddim", 4, 1, 0) }),
        ("ddpm", GenerateRequest { guidance: Some(f64::NAN), ..request("ddim", 4, 1, 0) }),
        ("cm", request("consistency", 3, 1, 0)),
        ("cm", GenerateRequest { sigmas: Some(vec![0.5, 1.0]), ..request("consistency", 2, 1, 0) }),
        ("cm", GenerateRequest { sigmas: Some(vec![800.0, 1.0]), ..request("consistency", 2, 1, 0) }),
    ];
    for (model, req) in cases {
        let err = rt.generate(model, req.clone()).await.unwrap_err();
        assert!(invalid(err), "{model} {req:?}");
    }
    let mut custom = request("consistency", 3, 1, 0);
    custom.sigmas = Some(vec![80.0, 5.0, 0.5]);
    assert_eq!(rt.generate("cm", custom).await.unwrap().nfe, 3);
    assert!(matches!(rt.generate("nope", request("ddim", 1, 1, 0)).await, Err(Error::NotFound(_))));
}
