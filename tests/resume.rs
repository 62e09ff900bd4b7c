//! Killing a training run and resuming it gives exactly the weights of an uninterrupted run.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::common::*;

/// A run long enough (four epochs of a few tenths of a second each) to be killed in the middle.
fn run(out: &Path) -> Command {
    let mut cmd = tandem();
    cmd.args(["train", "--dataset", "digits", "--arch", "student", "--epochs", "4", "--train-limit", "400"])
        .args(["--batch-size", "16", "--seed", "5", "--name", "resumable", "--quiet", "--json", "--out"])
        .arg(out)
        .env("TANDEM_LOG", "info");
    cmd
}

#[test]
fn a_killed_run_resumes_to_the_same_weights_and_refuses_changed_settings() {
    let dir = tempfile::tempdir().expect("temp dir");

    let reference = dir.path().join("reference");
    run_ok(&mut run(&reference));
    let expected = std::fs::read(reference.join("model.safetensors")).expect("the reference run wrote weights");

    let out = dir.path().join("interrupted");
    let checkpoint = dir.path().join("interrupted.checkpoint.safetensors");
    let mut child =
        ChildGuard(run(&out).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("tandem train starts"));
    let deadline = Instant::now() + PATIENCE;
    while !checkpoint.exists() {
        let exited = child.0.try_wait().expect("try_wait on a child");
        assert!(exited.is_none(), "the run ended ({exited:?}) before its first checkpoint appeared");
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.0.kill().expect("SIGKILL the run");
    let status = child.0.wait().expect("wait for the killed run");
    assert!(!status.success(), "the run finished before it could be killed; make it longer");
    assert!(!out.join("model.safetensors").exists(), "the killed run already exported its bundle");
    assert!(checkpoint.exists());

    let refused = run_failing(run(&out).args(["--resume", "--lr", "0.01"]));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("other settings") && stderr.contains("--resume"), "unclear refusal:\n{stderr}");
    assert!(!out.join("model.safetensors").exists(), "a refused resume wrote a bundle");

    let resumed = run_ok(run(&out).arg("--resume"));
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(stderr.contains("resuming from"), "the run started over instead of resuming:\n{stderr}");
    let summary = stdout_json(&resumed);
    assert_eq!(summary["history"].as_array().map(Vec::len), Some(4), "{summary}");
    let got = std::fs::read(out.join("model.safetensors")).expect("the resumed run wrote weights");
    assert!(got == expected, "resumed weights differ from an uninterrupted run's");
}
