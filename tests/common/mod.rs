//! What every end-to-end test needs: the real binary, servers on free ports, HTTP over real
//! sockets, and an in-process reference classifier to hold the served answers against.

use std::fs::File;
use std::io::Cursor;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tandem_runtime::bundle::Bundle;
use tandem_runtime::families::classifier::Classifier;
use tandem_runtime::family::Family;
use tandem_runtime::image::GrayImage;
use tandem_training::data::{load, Dataset, DatasetName, Split};
use tempfile::TempDir;

/// Upper bound for anything that should happen promptly. Only a hang ever reaches it, so a slow,
/// busy machine does not fail a test; nothing asserts on how long something took.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// How often pollers look again.
pub const POLL: Duration = Duration::from_millis(10);

/// The `tandem` binary with an environment of its own: no `TANDEM_*` setting of the developer's
/// shell leaks into a test, logs stay short and uncoloured (but say when the server is listening),
/// and errors carry no backtrace noise.
pub fn tandem() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TANDEM_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("TANDEM_LOG", "warn,tandem_server=info")
        .env("NO_COLOR", "1")
        .env("RUST_LIB_BACKTRACE", "0")
        .stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to completion and insists that it succeeded, showing its output otherwise.
#[track_caller]
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the tandem binary starts");
    assert!(out.status.success(), "{cmd:?} failed with {}\n{}", out.status, show(&out));
    out
}

/// Runs `cmd` to completion and insists that it failed, returning its output.
#[track_caller]
pub fn run_failing(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the tandem binary starts");
    assert!(!out.status.success(), "{cmd:?} succeeded but should have failed\n{}", show(&out));
    out
}

/// Both output streams, for failure messages.
pub fn show(out: &Output) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Parses the whole of stdout as one JSON document.
#[track_caller]
pub fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document: {e}\n{}", show(out)))
}

/// `tandem train` arguments for a quick run on part of the embedded digits.
pub fn quick_train(out: &Path, name: &str, arch: &str, epochs: usize) -> Command {
    let mut cmd = tandem();
    cmd.args(["train", "--dataset", "digits", "--arch", arch, "--train-limit", "200", "--quiet", "--name", name])
        .arg("--epochs")
        .arg(epochs.to_string())
        .arg("--out")
        .arg(out);
    cmd
}

/// Trains a small student in `root/name`: a second of work, enough to serve.
#[track_caller]
pub fn train_bundle(root: &Path, name: &str) -> PathBuf {
    let out = root.join(name);
    run_ok(&mut quick_train(&out, name, "student", 2));
    out
}

/// Reads a bundle's manifest.
#[track_caller]
pub fn manifest(bundle: &Path) -> Value {
    let path = bundle.join("manifest.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).expect("the manifest is JSON")
}

/// The embedded digits test split.
pub fn digits_test() -> Dataset {
    load(DatasetName::Digits, Split::Test, Path::new("")).expect("the embedded digits load")
}

/// Encodes grayscale pixels as PNG.
pub fn png(pixels: &[u8], width: u32, height: u32) -> Vec<u8> {
    let img = image::GrayImage::from_raw(width, height, pixels.to_vec()).expect("pixel count matches the size");
    let mut bytes = Vec::new();
    img.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png).expect("PNG encodes");
    bytes
}

/// A port that was free a moment ago; callers retry when another process takes it first.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// Polls `cond` until it holds, failing after [`PATIENCE`].
#[track_caller]
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}

/// A child process that is killed when the guard drops, so a failing test leaves nothing behind.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Waits up to `bound` for the process to exit on its own.
    pub fn wait_exit(&mut self, bound: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait on a child") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Sends SIGTERM, as an orchestrator stopping the process would; a no-op once it has exited.
    #[track_caller]
    pub fn terminate(&mut self) {
        if self.0.try_wait().expect("try_wait on a child").is_some() {
            return;
        }
        // Not reaped yet, so the pid still names this process even if it is exiting right now.
        let status =
            Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status().expect("the kill command runs");
        assert!(status.success(), "kill -TERM failed: {status}");
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A running `tandem serve` on 127.0.0.1, ready for traffic, with its log captured to a file.
pub struct Server {
    /// The port it listens on.
    pub port: u16,
    /// The process.
    pub child: ChildGuard,
    log: PathBuf,
    _dir: TempDir,
}

/// Why a server did not become ready.
enum Start {
    Ready,
    Exited(ExitStatus),
}

impl Server {
    /// `tandem serve <args> --port <free port>`.
    #[track_caller]
    pub fn start(args: &[&str]) -> Server {
        Server::start_with(&[], |cmd| {
            let port = free_port();
            cmd.args(args).arg("--port").arg(port.to_string());
            port
        })
    }

    /// `tandem serve` set up by `setup`, which returns the port the server should end up on.
    /// Retries with fresh ports when another process took one in the meantime.
    #[track_caller]
    pub fn start_with(env: &[(&str, &str)], mut setup: impl FnMut(&mut Command) -> u16) -> Server {
        let mut last_log = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir");
            let log = dir.path().join("serve.log");
            let mut cmd = tandem();
            cmd.arg("serve").envs(env.iter().copied());
            let port = setup(&mut cmd);
            cmd.stdout(Stdio::null()).stderr(File::create(&log).expect("log file"));
            let child = ChildGuard(cmd.spawn().expect("tandem serve starts"));
            let mut server = Server { port, child, log, _dir: dir };
            match server.wait_ready() {
                Start::Ready => return server,
                Start::Exited(status) => {
                    last_log = server.log();
                    assert!(
                        last_log.contains("in use"),
                        "tandem serve exited with {status} before it was ready:\n{last_log}"
                    );
                }
            }
        }
        panic!("no free port after 5 tries:\n{last_log}");
    }

    /// Polls readiness, but only once this process says it bound the port: until then, an answer
    /// could come from whatever else took the port first.
    fn wait_ready(&mut self) -> Start {
        let http = Http::new();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.0.try_wait().expect("try_wait on a child") {
                return Start::Exited(status);
            }
            let listening = self.log().contains("listening");
            if let Some(reply) = listening.then(|| http.get(&self.url("/health/ready")).ok()).flatten() {
                if reply.status == 200 {
                    return Start::Ready;
                }
                assert_eq!(reply.status, 503, "readiness answers 200 or 503: {}", reply.text());
            }
            assert!(Instant::now() < deadline, "the server never became ready:\n{}", self.log());
            std::thread::sleep(POLL);
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// What the server wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A finished HTTP exchange.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// Response body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} body is not JSON ({e}): {}", self.status, self.text()))
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    }
}

/// A request running in the background.
pub type Pending = tokio::task::JoinHandle<Result<Reply, reqwest::Error>>;

/// A blocking façade over an async HTTP client, so that tests read top to bottom; its runtime
/// has a worker thread of its own, so spawned requests make progress while the test waits.
pub struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Default for Http {
    fn default() -> Self {
        Http::new()
    }
}

impl Http {
    /// A client that never goes through a proxy, whatever the environment says.
    pub fn new() -> Http {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let client = {
            let _entered = rt.enter();
            reqwest::Client::builder().no_proxy().timeout(PATIENCE).build().expect("an HTTP client")
        };
        Http { rt, client }
    }

    /// The client, for building requests.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Starts a request in the background; `join` it later.
    pub fn spawn(&self, req: reqwest::RequestBuilder) -> Pending {
        self.rt.spawn(fetch(req))
    }

    /// Waits for a background request.
    pub fn join(&self, handle: Pending) -> Result<Reply, reqwest::Error> {
        self.rt.block_on(handle).expect("the request task does not panic")
    }

    /// Sends a request and reads the whole answer.
    pub fn send(&self, req: reqwest::RequestBuilder) -> Result<Reply, reqwest::Error> {
        self.rt.block_on(fetch(req))
    }

    /// `GET url`.
    pub fn get(&self, url: &str) -> Result<Reply, reqwest::Error> {
        self.send(self.client.get(url))
    }

    /// Sends a request that must get an answer.
    #[track_caller]
    pub fn ok(&self, req: reqwest::RequestBuilder) -> Reply {
        match self.send(req) {
            Ok(reply) => reply,
            Err(e) => panic!("request failed without an HTTP answer: {e}"),
        }
    }
}

/// Sends `req` and collects status, headers and body.
pub async fn fetch(req: reqwest::RequestBuilder) -> Result<Reply, reqwest::Error> {
    let res = req.send().await?;
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.bytes().await?.to_vec();
    Ok(Reply { status, headers, body })
}

/// Checks the one error shape, `{"error":{"type":..., "message":...}}` and nothing else, and the
/// status; returns the message.
#[track_caller]
pub fn assert_error(reply: &Reply, status: u16, kind: &str) -> String {
    assert_eq!(reply.status, status, "expected {status} {kind}, got: {}", reply.text());
    let content_type = reply.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("application/json"), "error content type {content_type:?}");
    let body = reply.json();
    let outer = body.as_object().expect("the error body is an object");
    assert_eq!(outer.keys().collect::<Vec<_>>(), ["error"], "{body}");
    let inner = outer["error"].as_object().expect("`error` is an object");
    let mut keys: Vec<_> = inner.keys().collect();
    keys.sort();
    assert_eq!(keys, ["message", "type"], "{body}");
    let message = inner["message"].as_str().expect("`message` is a string");
    assert!(!message.is_empty(), "{body}");
    assert!(!message.starts_with(char::is_uppercase), "messages start lowercase: {message:?}");
    assert_eq!(inner["type"].as_str(), Some(kind), "{body}");
    message.to_owned()
}

/// The bundle's classifier, run in this process exactly as the server runs it.
pub struct Reference {
    classifier: Classifier,
}

impl Reference {
    /// Loads the bundle in `dir`.
    #[track_caller]
    pub fn load(dir: &Path) -> Reference {
        let bundle = Bundle::load(dir).expect("the bundle loads");
        let device = tandem_runtime::device::default_device();
        Reference { classifier: Classifier::from_bundle(&bundle, &device).expect("the classifier builds") }
    }

    /// Class probabilities for one image.
    #[track_caller]
    pub fn probabilities(&self, image: &GrayImage) -> Vec<f32> {
        let item = self.classifier.prepare(image);
        let out = self.classifier.run_batch(&[item]).expect("the reference batch runs");
        out[0].to_vec()
    }

    /// Checks one served prediction list (`[{"label":..,"score":..}, ...]`) against this
    /// process's answer: the same scores, best first, `k` of them.
    #[track_caller]
    pub fn assert_agrees(&self, image: &GrayImage, served: &Value, k: usize) {
        const TOLERANCE: f32 = 1e-5;
        let probs = self.probabilities(image);
        let labels = self.classifier.labels();
        let served = served.as_array().expect("predictions are an array");
        assert_eq!(served.len(), k.min(labels.len()), "{served:?}");
        let mut previous = f32::INFINITY;
        for p in served {
            let label = p["label"].as_str().expect("label is a string");
            let score = p["score"].as_f64().expect("score is a number") as f32;
            let idx = labels.iter().position(|l| l == label).unwrap_or_else(|| panic!("unknown label {label:?}"));
            assert!((score - probs[idx]).abs() <= TOLERANCE, "{label}: served {score}, in-process {}", probs[idx]);
            assert!(score <= previous + TOLERANCE, "predictions are not best first: {served:?}");
            previous = score;
        }
        let best = probs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let top = served[0]["label"].as_str().expect("label is a string");
        let top_idx = labels.iter().position(|l| l == top).expect("known label");
        assert!(probs[top_idx] >= best - TOLERANCE, "served top label {top} is not the in-process best: {probs:?}");
    }
}

/// One digits test image as a decoded grayscale image, the way the server sees a PNG of it.
pub fn gray(ds: &Dataset, i: usize) -> GrayImage {
    GrayImage::decode(&png(ds.image(i), ds.width as u32, ds.height as u32)).expect("our PNG decodes")
}

/// Runs a Python helper under `tests/python` with `input` on stdin and parses its JSON answer.
#[track_caller]
pub fn python(script: &str, args: &[&str], input: &Value) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(script);
    let mut child = Command::new("python3")
        .arg(&path)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (install the test dependencies: python3 -m pip install -r benches/requirements.txt)");
    serde_json::to_writer(child.stdin.take().expect("stdin is piped"), input).expect("write the input");
    let out = child.wait_with_output().expect("python3 finishes");
    assert!(
        out.status.success(),
        "{script} failed (python3 -m pip install -r benches/requirements.txt installs its dependencies):\n{}",
        show(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{script} printed no JSON: {e}\n{}", show(&out)))
}
