//! Where a served classify request's time goes, in-process and without sockets: the whole app
//! (router, middleware, handler) on a cached request, and its parts measured alone: decoding the
//! JSON body, the runtime's call (a cache hit), and encoding the answer. What the whole costs
//! beyond its parts is routing and middleware; what the socket path costs beyond the whole (from
//! the load test) is hyper, the connection and the load generator's share of the machine.
//! `serve_layers` splits routing and middleware further, layer by layer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::body::{Body, Bytes};
use axum::http::Request;
use axum::Router;
use serde::Serialize;
use tandem_runtime::image::GrayImage;
use tandem_runtime::{ClassifyRequest, Runtime, RuntimeConfig};
use tandem_server::wire;
use tower::ServiceExt;

/// Microseconds per request of each part.
#[derive(Debug, Clone, Serialize)]
pub struct Breakdown {
    /// The whole app on a cached request, body collected.
    pub app_us: f64,
    /// `serde_json` from the body bytes to the wire request.
    pub decode_us: f64,
    /// The runtime's classify on a cache hit.
    pub runtime_us: f64,
    /// `serde_json` of the wire answer.
    pub encode_us: f64,
    /// `app_us` minus the three parts: routing, middleware, validation and the handler's glue.
    pub rest_us: f64,
}

/// A seeded stream of 32-bit pseudo-random values (Knuth's MMIX LCG, high half): distinct
/// benchmark inputs, reproducible, with no generator state to carry around.
pub fn pseudo_random(seed: u64) -> impl FnMut() -> u32 {
    let mut state = seed.wrapping_add(1);
    move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 32) as u32
    }
}

/// The JSON body the load script sends: one `side`×`side` image as pixel rows, top 3.
pub fn pixel_body(side: usize, seed: u64) -> String {
    let mut next = pseudo_random(seed);
    let rows: Vec<String> = (0..side)
        .map(|_| {
            let row: Vec<String> = (0..side).map(|_| ((next() >> 24) as u8).to_string()).collect();
            format!("[{}]", row.join(","))
        })
        .collect();
    format!(r#"{{"inputs":[{{"pixels":[{}]}}],"top_k":3}}"#, rows.join(","))
}

/// A loaded classifier and one cached classify request, driven through an app in-process: what
/// both the breakdown and the per-layer costs (`serve_layers`) time.
pub struct CachedClassify {
    runtime: Arc<Runtime>,
    state: tandem_server::AppState,
    tokio: tokio::runtime::Runtime,
    model: String,
    body: Bytes,
    path: String,
}

impl CachedClassify {
    /// Loads the classifier bundle in `dir` named `model`; requests send one `side`-pixel image.
    pub fn new(dir: &std::path::Path, model: &str, side: usize) -> Result<CachedClassify> {
        let runtime = Arc::new(Runtime::new(RuntimeConfig::default()));
        runtime.load(dir)?;
        let state = tandem_server::AppState::new(runtime.clone(), &tandem_server::ServerConfig::default());
        let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let body = Bytes::from(pixel_body(side, 7));
        let path = format!("/v1/models/{model}/classify");
        Ok(CachedClassify { runtime, state, tokio, model: model.to_owned(), body, path })
    }

    /// The state every app built for this request shares (one runtime, one cache).
    pub fn state(&self) -> tandem_server::AppState {
        self.state.clone()
    }

    /// Sends the request through `app` and reads the whole answer, which must be a success.
    pub fn call(&self, app: &Router) -> Result<()> {
        let request = Request::post(&self.path)
            .header("content-type", "application/json")
            .header("x-request-id", "bench")
            .body(Body::from(self.body.clone()))?;
        let response = self.tokio.block_on(app.clone().oneshot(request))?;
        if !response.status().is_success() {
            bail!("the app answered {}", response.status());
        }
        self.tokio.block_on(axum::body::to_bytes(response.into_body(), usize::MAX))?;
        Ok(())
    }
}

/// Runs `f` for about `budget` (at least 100 times) and returns microseconds per call.
fn per_call(budget: Duration, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..20 {
        f()?;
    }
    let started = Instant::now();
    let mut calls = 0u64;
    while calls < 100 || started.elapsed() < budget {
        f()?;
        calls += 1;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / calls as f64)
}

/// Measures the parts of `fixture`'s request, each for about `budget`.
pub fn measure(fixture: &CachedClassify, budget: Duration) -> Result<Breakdown> {
    let CachedClassify { runtime, tokio, model, body, .. } = fixture;
    let app = tandem_server::app(fixture.state());
    let app_us = per_call(budget, || fixture.call(&app))?;
    let decode_us = per_call(budget, || {
        std::hint::black_box(serde_json::from_slice::<wire::ClassifyRequest>(body)?);
        Ok(())
    })?;
    let wire::ClassifyRequest { inputs, .. } = serde_json::from_slice(body)?;
    let Some(wire::ClassifyInput::Pixels(rows)) = inputs.into_iter().next() else {
        bail!("the body holds no pixel rows");
    };
    let image = GrayImage::from_rows(&rows)?;
    let request = ClassifyRequest { images: vec![image], top_k: 3 };
    let runtime_us = per_call(budget, || {
        std::hint::black_box(tokio.block_on(runtime.classify(model, request.clone()))?);
        Ok(())
    })?;
    let answer = tokio.block_on(runtime.classify(model, request.clone()))?;
    let answer = wire::ClassifyResponse {
        model: answer.model,
        predictions: answer
            .predictions
            .into_iter()
            .map(|p| p.into_iter().map(|x| wire::Prediction { label: x.label, score: x.score }).collect())
            .collect(),
    };
    let encode_us = per_call(budget, || {
        std::hint::black_box(serde_json::to_vec(&answer).context("encoding")?);
        Ok(())
    })?;
    let rest_us = app_us - decode_us - runtime_us - encode_us;
    Ok(Breakdown { app_us, decode_us, runtime_us, encode_us, rest_us })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_the_load_scripts_shape() {
        let body = pixel_body(3, 1);
        let request: wire::ClassifyRequest = serde_json::from_str(&body).unwrap();
        assert_eq!(request.top_k, Some(3));
        let Some(wire::ClassifyInput::Pixels(rows)) = request.inputs.into_iter().next() else { panic!("{body}") };
        assert_eq!((rows.len(), rows[0].len()), (3, 3));
        assert_ne!(pixel_body(3, 1), pixel_body(3, 2));
    }
}
