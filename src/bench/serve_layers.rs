//! What each middleware layer costs a cached classify request, in-process and without sockets.
//!
//! The app is built whole, once without each layer, and once without every layer (routing and the
//! handler alone); the HTTP floor's fixed answer goes through the same harness, which is what
//! axum, the request and the harness cost with no work at all. Rounds of requests go through every build in turn, starting one build later
//! each round, so the drifting load of a shared machine falls on all builds alike. A layer's cost
//! is the median over rounds of the whole app's time minus the time without it, both from the
//! same round.

use std::time::{Duration, Instant};

use anyhow::Result;
use axum::Router;
use serde::Serialize;
use tandem_server::{app_without, Layer};

use super::embed_speed::median;
use super::serve_breakdown::CachedClassify;
use super::serve_process::floor_app;

/// Requests per build and round: long enough to dwarf the clock, short enough that a round sees
/// one load.
const CALLS_PER_ROUND: usize = 100;

/// Microseconds per request: the whole app, routing and the handler alone, and each layer.
#[derive(Debug, Clone, Serialize)]
pub struct LayerCosts {
    /// The whole app.
    pub whole_us: f64,
    /// Without every layer: routing, extractors and the handler.
    pub bare_us: f64,
    /// The HTTP floor's fixed answer through the same harness.
    pub floor_us: f64,
    /// Each layer's cost, outermost first.
    pub layers: Vec<LayerCost>,
    /// Rounds measured.
    pub rounds: usize,
}

/// One layer's cost.
#[derive(Debug, Clone, Serialize)]
pub struct LayerCost {
    pub layer: &'static str,
    /// The median over rounds of the whole app's time minus the time without this layer.
    pub us: f64,
}

/// Measures every layer for about `budget` in all.
pub fn measure(fixture: &CachedClassify, budget: Duration) -> Result<LayerCosts> {
    let mut builds: Vec<Router> = vec![app_without(fixture.state(), &[])];
    builds.extend(Layer::ALL.iter().map(|&layer| app_without(fixture.state(), &[layer])));
    builds.push(app_without(fixture.state(), &Layer::ALL));
    builds.push(floor_app());
    for build in &builds {
        for _ in 0..CALLS_PER_ROUND {
            fixture.call(build)?;
        }
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); builds.len()];
    let started = Instant::now();
    let mut rounds = 0;
    while rounds < 5 || started.elapsed() < budget {
        for k in 0..builds.len() {
            let i = (k + rounds) % builds.len();
            let round = Instant::now();
            for _ in 0..CALLS_PER_ROUND {
                fixture.call(&builds[i])?;
            }
            times[i].push(round.elapsed().as_secs_f64() * 1e6 / CALLS_PER_ROUND as f64);
        }
        rounds += 1;
    }
    let whole = &times[0];
    let layers = Layer::ALL
        .iter()
        .zip(&times[1..])
        .map(|(layer, without)| {
            let saved: Vec<f64> = whole.iter().zip(without).map(|(w, o)| w - o).collect();
            LayerCost { layer: layer.name(), us: median(&saved) }
        })
        .collect();
    let n = builds.len();
    Ok(LayerCosts {
        whole_us: median(whole),
        bare_us: median(&times[n - 2]),
        floor_us: median(&times[n - 1]),
        layers,
        rounds,
    })
}

impl LayerCosts {
    /// The table, as BENCHMARKS.md shows it.
    pub fn print(&self) {
        println!(
            "\nper-layer cost of a cached request, in-process ({} rounds of {CALLS_PER_ROUND} per build, medians):",
            self.rounds
        );
        println!("| layer | µs per request | share of the whole app |");
        println!("| --- | ---: | ---: |");
        for cost in &self.layers {
            println!("| {} | {:.1} | {:.0}% |", cost.layer, cost.us, cost.us / self.whole_us * 100.0);
        }
        let sum: f64 = self.layers.iter().map(|c| c.us).sum();
        println!("| sum of the layers | {sum:.1} | {:.0}% |", sum / self.whole_us * 100.0);
        println!(
            "| every layer removed at once | {:.1} | {:.0}% |",
            self.whole_us - self.bare_us,
            100.0 - self.bare_us / self.whole_us * 100.0
        );
        println!(
            "| routing, extractors, handler (no layer) | {:.1} | {:.0}% |",
            self.bare_us,
            self.bare_us / self.whole_us * 100.0
        );
        println!("| whole app | {:.1} | 100% |", self.whole_us);
        println!(
            "| the HTTP floor's fixed answer, same harness | {:.1} | {:.0}% |",
            self.floor_us,
            self.floor_us / self.whole_us * 100.0
        );
    }
}
