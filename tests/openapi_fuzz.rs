//! Property-based fuzzing of the served API against its own OpenAPI document with schemathesis,
//! an external Python tool that CI installs. Without it the test is skipped locally and fails in CI.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

/// Longest a whole schemathesis run may take: a guard against a hang, not a timing check. It
/// needs about a minute for the 24 operations on an idle 2-core machine, and several times that
/// when the machine is busy.
const BOUND: Duration = Duration::from_secs(480);

/// The hooks that keep generated classify inputs decodable; see the file for why.
const HOOKS: &str = include_str!("schemathesis_hooks.py");

/// How to invoke schemathesis, and its major version (the CLI changed between 3 and 4).
struct Schemathesis {
    program: Vec<String>,
    major: u32,
}

impl Schemathesis {
    /// The first launcher that answers `--version`.
    fn find() -> Option<Schemathesis> {
        let launchers: [&[&str]; 3] =
            [&["schemathesis"], &["python3", "-m", "schemathesis.cli"], &["python3", "-m", "schemathesis"]];
        launchers.iter().find_map(|launcher| {
            let out = Command::new(launcher[0])
                .args(&launcher[1..])
                .arg("--version")
                .stdin(Stdio::null())
                .output()
                .ok()
                .filter(|out| out.status.success())?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let major = major_version(&text)?;
            Some(Schemathesis { program: launcher.iter().map(|s| (*s).to_owned()).collect(), major })
        })
    }

    /// `run` with every check, a fixed seed and a bounded number of examples per operation.
    fn command(&self, url: &str, workdir: &Path) -> Command {
        let mut cmd = Command::new(&self.program[0]);
        cmd.args(&self.program[1..]).arg("run").arg(url).args(["--checks", "all"]);
        if self.major >= 4 {
            cmd.args(["--max-examples", "30", "--seed", "1", "--request-timeout", "10"]);
            cmd.args(["--generation-database", "none", "--no-color"]);
        } else {
            cmd.args(["--hypothesis-max-examples", "30", "--hypothesis-deadline", "2000"]);
            cmd.args(["--hypothesis-seed", "1", "--hypothesis-database", "none"]);
        }
        cmd.current_dir(workdir)
            .env("SCHEMATHESIS_HOOKS", "tandem_schemathesis_hooks")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        cmd
    }
}

/// The major version in `schemathesis, version 4.32.5`.
fn major_version(text: &str) -> Option<u32> {
    let rest = &text[text.find("version")? + "version".len()..];
    rest.trim_start().split('.').next()?.parse().ok()
}

#[test]
fn major_versions_are_read_from_both_launchers() {
    assert_eq!(major_version("schemathesis, version 4.32.5\n"), Some(4));
    assert_eq!(major_version("python -m schemathesis.cli, version 3.39.16"), Some(3));
    assert_eq!(major_version("command not found"), None);
}

#[test]
fn schemathesis_finds_no_failures_in_the_served_api() {
    let Some(schemathesis) = Schemathesis::find() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "schemathesis is not installed, and CI must run this test: python3 -m pip install 'schemathesis>=3.30,<5'"
        );
        println!("skipped: schemathesis not installed (python3 -m pip install 'schemathesis>=3.30,<5')");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let bundle = train_bundle(dir.path(), "fuzzed");
    let texts = dir.path().join("texts");
    tandem_runtime::testing_text::write_tiny_sentence_transformers_dir(
        &dir.path().join("st"),
        2,
        tandem_runtime::models::sentence_encoder::Pooling::Mean,
        true,
    )
    .expect("a tiny sentence-transformers directory");
    run_ok(
        tandem().args(["import", "hf"]).arg(dir.path().join("st")).arg("--out").arg(&texts).args(["--name", "texts"]),
    );
    // The admin routes run against a models directory holding one scratch bundle. The models the
    // other operations need are given with --model, which the admin API never unloads or reloads
    // (it answers 409), so no generated request can take them away, whatever order or ids
    // schemathesis picks; loading, reloading or unloading the scratch bundle changes nothing else.
    // This matters: schemathesis 4's stateful phase infers links from `GET /v1/models` to every
    // `{id}` parameter, so it does call `DELETE /v1/models/{id}` with the ids that list returns.
    // A diffusion model, so that the generate route answers real requests, not only 404 and 422.
    let ddpm =
        tandem_runtime::testing::write_tiny_diffusion_bundle(dir.path(), "ddpm").expect("a tiny diffusion bundle");
    let models_dir = dir.path().join("models");
    tandem_runtime::testing::write_tiny_classifier_bundle(&models_dir, "scratch", "1").expect("a scratch bundle");
    let server = Server::start(&[
        "--model",
        bundle.to_str().expect("UTF-8 path"),
        "--model",
        texts.to_str().expect("UTF-8 path"),
        "--model",
        ddpm.to_str().expect("UTF-8 path"),
        "--models-dir",
        models_dir.to_str().expect("UTF-8 path"),
    ]);

    let workdir = dir.path().join("schemathesis");
    std::fs::create_dir(&workdir).expect("work dir");
    std::fs::write(workdir.join("tandem_schemathesis_hooks.py"), HOOKS).expect("write the hooks");
    let output = workdir.join("output.txt");
    let log = File::create(&output).expect("output file");
    let mut cmd = schemathesis.command(&server.url("/openapi.json"), &workdir);
    cmd.stdout(log.try_clone().expect("clone the output handle")).stderr(log);
    let mut child = ChildGuard(cmd.spawn().expect("schemathesis starts"));
    let status = child.wait_exit(BOUND);
    let report = std::fs::read_to_string(&output).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("schemathesis ran past {BOUND:?}:\n{report}"));
    assert!(
        status.success(),
        "schemathesis reported failures ({status}):\n{report}\n--- server log ---\n{}",
        server.log()
    );
    // Issue 12 asks for at least 1,000 generated cases over every route, every one passing.
    let counts = SummaryCounts::read(&report).unwrap_or_else(|| panic!("no summary counts in the report:\n{report}"));
    let SummaryCounts { selected, tested, generated, passed } = counts;
    assert_eq!(tested, selected, "not every operation was tested:\n{report}");
    assert!(generated >= 1000, "only {generated} cases were generated:\n{report}");
    assert_eq!(generated, passed, "{report}");
    eprintln!("schemathesis: {generated} cases generated, {passed} passed");
}

/// The counts of schemathesis' summary: operations selected and tested, cases generated and passed.
#[derive(Debug, PartialEq, Eq)]
struct SummaryCounts {
    selected: u64,
    tested: u64,
    generated: u64,
    passed: u64,
}

impl SummaryCounts {
    fn read(report: &str) -> Option<SummaryCounts> {
        let line = |prefix: &str| report.lines().find_map(|l| l.trim().strip_prefix(prefix).map(str::to_owned));
        let selected = line("Selected: ")?.split_once('/')?.1.parse().ok()?;
        let tested = line("Tested: ")?.parse().ok()?;
        let cases = report.lines().find_map(|l| l.trim().strip_suffix(" passed")?.split_once(" generated, "))?;
        Some(SummaryCounts { selected, tested, generated: cases.0.parse().ok()?, passed: cases.1.parse().ok()? })
    }
}

#[test]
fn summary_counts_are_read_from_a_schemathesis_report() {
    let report = "API Operations:\n  Selected: 24/24\n  Tested: 24\n\nTest cases:\n  1541 generated, 1541 passed\n";
    assert_eq!(
        SummaryCounts::read(report),
        Some(SummaryCounts { selected: 24, tested: 24, generated: 1541, passed: 1541 })
    );
    assert_eq!(SummaryCounts::read("Test cases:\n  12 generated, 11 passed, 1 failed\n"), None);
}
