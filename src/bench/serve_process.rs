//! The processes `tandem bench serve` measures: a free port, readiness, a plain GET, a clean
//! stop, the CPU time and memory a process has used (from `/proc`), and the minimal axum server
//! that stands for the HTTP ceiling of the machine.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// GET `path` on the local server with `Connection: close`; the body of a 200, else an error.
pub fn http_get(port: u16, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").context("an HTTP answer without a head")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_owned())
}

/// Polls `/health/ready` until it answers 200, the child exits, or `limit` passes.
pub fn wait_ready(child: &mut Child, port: u16, limit: Duration) -> Result<()> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("the server exited before it was ready ({status})");
        }
        if http_get(port, "/health/ready").is_ok() {
            return Ok(());
        }
        if started.elapsed() > limit {
            bail!("the server was not ready after {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGTERM, then waits up to `limit` for an exit with status 0.
pub fn terminate(child: &mut Child, limit: Duration) -> Result<()> {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().context("kill -TERM")?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return if status.success() { Ok(()) } else { bail!("the server exited with {status} after SIGTERM") };
        }
        if started.elapsed() > limit {
            bail!("the server did not stop within {} s of SIGTERM", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A process's CPU time and resident memory at one moment.
pub struct ProcessSample {
    cpu_ticks: u64,
    ticks_per_second: f64,
    /// Resident set size.
    pub rss_bytes: u64,
}

impl ProcessSample {
    /// Reads `/proc/PID/stat` (user and system time) and `/proc/PID/status` (VmRSS).
    pub fn of(pid: u32) -> Result<ProcessSample> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/PID/stat")?;
        // The command name may hold spaces; the fields after its closing parenthesis do not.
        let fields: Vec<&str> = stat.rsplit_once(')').context("a /proc stat line")?.1.split_whitespace().collect();
        let field = |i: usize| -> Result<u64> { Ok(fields.get(i).context("a short /proc stat line")?.parse()?) };
        // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
        let cpu_ticks = field(11)? + field(12)?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/PID/status")?;
        let rss_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        Ok(ProcessSample { cpu_ticks, ticks_per_second: ticks_per_second(), rss_bytes: rss_kib * 1024 })
    }

    /// CPU seconds used between `earlier` and this sample.
    pub fn cpu_seconds_since(&self, earlier: &ProcessSample) -> f64 {
        self.cpu_ticks.saturating_sub(earlier.cpu_ticks) as f64 / self.ticks_per_second
    }
}

/// The kernel's clock ticks per second, as `getconf CLK_TCK` reports it (100 where it cannot).
fn ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Serves [`floor_app`] until SIGTERM.
pub fn run_http_floor(port: u16) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        axum::serve(listener, floor_app()).with_graceful_shutdown(tandem_server::shutdown_signal()).await?;
        Ok(())
    })
}

/// A fixed small JSON body on every path: what axum on tokio answers on this machine with no
/// model, no parsing and no middleware. It reads each request's body (the load sends real classify
/// bodies) and echoes `x-request-id`, which the load script accounts by.
pub fn floor_app() -> axum::Router {
    use axum::http::{HeaderMap, HeaderValue};
    use axum::response::IntoResponse;
    async fn answer(headers: HeaderMap, _body: axum::body::Bytes) -> impl IntoResponse {
        let mut out = HeaderMap::new();
        out.insert("content-type", HeaderValue::from_static("application/json"));
        if let Some(id) = headers.get("x-request-id") {
            out.insert("x-request-id", id.clone());
        }
        (out, r#"{"ok":true}"#)
    }
    axum::Router::new().fallback(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_used_cpu_and_memory() {
        let before = ProcessSample::of(std::process::id()).unwrap();
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let after = ProcessSample::of(std::process::id()).unwrap();
        assert!(after.rss_bytes > 0);
        // 50 ms of spinning is several clock ticks.
        assert!(after.cpu_seconds_since(&before) > 0.0, "no CPU time counted");
    }
}
