//! The load generator of `tandem bench serve`: wrk with `benches/wrk.lua` (compiled in), which
//! posts distinct classify requests, accounts for each by its request id and prints one JSON
//! summary. wrk is found on PATH, or Debian's package is unpacked once into the user cache, as the
//! shell benchmarks do.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The script, the same file the shell benchmarks run.
const SCRIPT: &str = include_str!("../../benches/wrk.lua");

/// A runnable wrk.
pub struct Wrk {
    program: PathBuf,
    /// `LD_LIBRARY_PATH` for an unpacked package's LuaJIT.
    library_path: Option<PathBuf>,
    /// The script, written once to a scratch file.
    script: tempfile::TempPath,
    /// e.g. `wrk 4.1.0`.
    pub version: String,
}

/// The figures of one load.
pub struct LoadResult {
    pub duration_s: f64,
    pub statuses: Vec<(u16, u64)>,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    /// [latency in ms, share of the 200s answered within it].
    pub cdf: Vec<(f64, f64)>,
    errors: u64,
}

impl LoadResult {
    /// 200s per second.
    pub fn ok_per_s(&self) -> f64 {
        let ok = self.statuses.iter().find(|(s, _)| *s == 200).map_or(0, |(_, n)| *n);
        ok as f64 / self.duration_s.max(1e-9)
    }

    /// Answers other than 200.
    pub fn non_200(&self) -> u64 {
        self.statuses.iter().filter(|(s, _)| *s != 200).map(|(_, n)| n).sum()
    }

    /// Connect, read, write and timeout errors together.
    pub fn connection_errors(&self) -> u64 {
        self.errors
    }

    /// Reads the script's `TANDEM_LOAD_JSON` summary.
    fn parse(v: &Value) -> Result<LoadResult> {
        let number = |key: &str| -> Result<f64> {
            v.get(key).and_then(Value::as_f64).with_context(|| format!("the load summary has no number {key:?}"))
        };
        let statuses = v
            .get("statuses")
            .and_then(Value::as_object)
            .context("the load summary has no statuses")?
            .iter()
            .map(|(k, n)| Ok((k.parse::<u16>()?, n.as_u64().context("a status count")?)))
            .collect::<Result<Vec<_>>>()?;
        let errors =
            v.get("errors").and_then(Value::as_object).map_or(0, |e| e.values().filter_map(Value::as_u64).sum());
        let cdf = v
            .get("ok_cdf")
            .and_then(Value::as_array)
            .map(|points| {
                points.iter().filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?))).collect::<Vec<_>>()
            })
            .unwrap_or_default();
        Ok(LoadResult {
            duration_s: number("duration_s")?,
            statuses,
            p50_ms: number("ok_p50_ms")?,
            p90_ms: number("ok_p90_ms")?,
            p99_ms: number("ok_p99_ms")?,
            cdf,
            errors,
        })
    }
}

/// What each request of a load is.
pub struct Load<'a> {
    /// The model name in the route or body.
    pub model: &'a str,
    /// `classify` or `embed` (the script's `TANDEM_LOAD_KIND`).
    pub kind: &'a str,
    /// Image side of classify bodies.
    pub side: usize,
    /// Distinct bodies per wrk thread, cycled.
    pub bodies: usize,
}

impl Wrk {
    /// A closed loop of `connections` for `seconds` of `load`'s requests.
    pub fn run(&self, port: u16, load: &Load, connections: usize, seconds: Duration) -> Result<LoadResult> {
        // Two threads at most: the client shares the machine with the server.
        let threads = connections.min(2);
        let mut command = Command::new(&self.program);
        if let Some(lib) = &self.library_path {
            command.env("LD_LIBRARY_PATH", lib);
        }
        let output = command
            .env("TANDEM_LOAD_MODEL", load.model)
            .env("TANDEM_LOAD_KIND", load.kind)
            .env("TANDEM_LOAD_SIDE", load.side.max(1).to_string())
            .env("TANDEM_LOAD_BODIES", load.bodies.to_string())
            .env("TANDEM_LOAD_THREADS", threads.to_string())
            .env_remove("TANDEM_LOAD_RATE")
            .env_remove("TANDEM_LOAD_PENDING")
            .args(["-t", &threads.to_string(), "-c", &connections.to_string()])
            // wrk takes whole seconds.
            .args(["-d", &format!("{}s", seconds.as_secs().max(1)), "--timeout", "30s", "-s"])
            .arg(&self.script)
            .arg(format!("http://127.0.0.1:{port}"))
            .output()
            .context("running wrk")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("TANDEM_LOAD_JSON ")) else {
            bail!("wrk printed no summary: {}{}", stdout, String::from_utf8_lossy(&output.stderr));
        };
        LoadResult::parse(&serde_json::from_str(line).context("wrk's summary")?)
    }
}

/// `explicit`, else wrk on PATH, else Debian's wrk (and LuaJIT) unpacked into the user cache.
pub fn find_wrk(explicit: Option<&Path>) -> Result<Wrk> {
    let (program, library_path) = match explicit {
        Some(p) => (p.to_path_buf(), None),
        None if Command::new("wrk").arg("-v").output().is_ok() => (PathBuf::from("wrk"), None),
        None => unpacked_wrk()?,
    };
    let mut probe = Command::new(&program);
    if let Some(lib) = &library_path {
        probe.env("LD_LIBRARY_PATH", lib);
    }
    let out = probe.arg("-v").output().with_context(|| format!("running {}", program.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let version = text.lines().next().unwrap_or("").split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    if !version.starts_with("wrk") {
        bail!("{} does not run as wrk: {text}", program.display());
    }
    let mut script = tempfile::Builder::new().suffix(".lua").tempfile()?;
    std::io::Write::write_all(&mut script, SCRIPT.as_bytes())?;
    Ok(Wrk { program, library_path, script: script.into_temp_path(), version })
}

/// Debian's wrk and its LuaJIT library, downloaded with apt-get and unpacked with dpkg once.
fn unpacked_wrk() -> Result<(PathBuf, Option<PathBuf>)> {
    let cache = std::env::var_os("TANDEM_BENCH_TOOLS").map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("tandem-bench-tools")
    });
    let root = cache.join("wrk");
    let program = root.join("usr/bin/wrk");
    let lib = root.join("usr/lib/x86_64-linux-gnu");
    if !program.exists() {
        let debs = cache.join("deb");
        std::fs::create_dir_all(&debs)?;
        eprintln!("unpacking Debian's wrk into {}", root.display());
        let download = |update: bool| -> Result<bool> {
            if update {
                install_step("apt-get").args(["update", "-qq"]).status()?;
            }
            Ok(install_step("apt-get")
                .args(["download", "wrk", "libluajit-5.1-2"])
                .current_dir(&debs)
                .status()
                .context("apt-get (install wrk, or give --wrk)")?
                .success())
        };
        if !download(false)? && !download(true)? {
            bail!("cannot download wrk: install it (apt-get install wrk) or give --wrk");
        }
        for entry in std::fs::read_dir(&debs)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "deb") {
                let ok = install_step("dpkg").arg("-x").arg(&path).arg(&root).status()?.success();
                if !ok {
                    bail!("dpkg -x {} failed", path.display());
                }
            }
        }
    }
    Ok((program, Some(lib)))
}

/// A command of the one-time wrk install, with its output on our stderr: stdout carries the
/// report, which `--json` callers parse, and apt's progress lines would break it.
fn install_step(program: &str) -> Command {
    let mut command = Command::new(program);
    command.stdout(std::io::stderr());
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_summary_parses() {
        let line = r#"{"duration_s":2.0,"sent":10,"answered":10,"statuses":{"200":8,"503":2},"ok_p50_ms":1.5,"ok_p90_ms":2.5,"ok_p99_ms":3.5,"ok_p999_ms":4.0,"ok_max_ms":5.0,"unanswered":0,"late_slots":0,"errors":{"connect":1,"read":0,"write":0,"timeout":1},"ok_cdf":[[1.0,0.25],[2.0,1.0]]}"#;
        let r = LoadResult::parse(&serde_json::from_str(line).unwrap()).unwrap();
        assert_eq!((r.ok_per_s(), r.non_200(), r.connection_errors()), (4.0, 2, 2));
        assert_eq!((r.p50_ms, r.p90_ms, r.p99_ms), (1.5, 2.5, 3.5));
        assert_eq!(r.cdf, vec![(1.0, 0.25), (2.0, 1.0)]);
        assert!(LoadResult::parse(&serde_json::json!({"statuses": {}})).is_err());
    }
}
