//! The Kubernetes manifests in `deploy/k8s/`: valid against Kubernetes' own schemas
//! (`kubernetes-validate`, pinned in `benches/requirements.txt`, which carries the schemas and
//! needs no network), wired consistently (paths, ports, the drain arithmetic), and with a
//! settings file that `tandem serve` accepts and serves with.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// The oldest Kubernetes release the manifests are checked against, and the newest the
/// validator knows (its default).
const KUBERNETES_VERSIONS: [Option<&str>; 2] = [Some("1.30.0"), None];

/// What the pinned validator needs, for failure messages.
const INSTALL: &str = "python3 -m pip install -r benches/requirements.txt";

fn k8s_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/k8s")
}

/// Every `*.yaml` in `deploy/k8s/`, sorted.
fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(k8s_dir())
        .expect("deploy/k8s exists")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in deploy/k8s");
    files
}

/// The first launcher of the validator that answers `--version`.
fn validator() -> Vec<&'static str> {
    let launchers: [&[&str]; 2] = [&["kubernetes-validate"], &["python3", "-m", "kubernetes_validate"]];
    let found = launchers.iter().find(|launcher| {
        Command::new(launcher[0])
            .args(&launcher[1..])
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|out| out.status.success())
    });
    found
        .unwrap_or_else(|| panic!("kubernetes-validate is not installed; {INSTALL} installs the pinned version"))
        .to_vec()
}

#[test]
fn kubernetes_manifests_pass_strict_schema_validation() {
    let launcher = validator();
    let files = manifests();
    for version in KUBERNETES_VERSIONS {
        let mut cmd = Command::new(launcher[0]);
        cmd.args(&launcher[1..]).arg("--strict");
        if let Some(version) = version {
            cmd.args(["--kubernetes-version", version]);
        }
        let out = cmd.args(&files).stdin(Stdio::null()).output().expect("kubernetes-validate runs");
        let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "kubernetes-validate failed ({version:?}):\n{report}");
        // An unknown kind or apiVersion is only a warning (no schema to check against): refuse it.
        let problems: Vec<&str> = report.lines().filter(|line| !line.starts_with("INFO ")).collect();
        assert!(problems.is_empty(), "kubernetes-validate reported ({version:?}):\n{report}");
        let passed = report.lines().filter(|line| line.contains(" passed for resource ")).count();
        assert_eq!(passed, files.len(), "one resource per file should pass ({version:?}):\n{report}");
    }
}

/// Every manifest as JSON, by kind, parsed with PyYAML (which the validator depends on).
fn resources() -> Vec<Value> {
    let script = "import json, sys, yaml\n\
                  print(json.dumps([d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]))";
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(manifests())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("python3 runs ({INSTALL}): {e}"));
    assert!(out.status.success(), "reading the manifests failed ({INSTALL}):\n{}", show(&out));
    serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("the manifests as JSON")
}

fn of_kind<'a>(resources: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = resources.iter().filter(|r| r["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} in deploy/k8s");
    found[0]
}

/// The settings file the ConfigMap carries, parsed, with the path it is mounted at.
fn settings(resources: &[Value]) -> (String, toml::Table) {
    let config = of_kind(resources, "ConfigMap");
    let data = config["data"].as_object().expect("the ConfigMap has data");
    assert_eq!(data.len(), 1, "the ConfigMap holds one settings file");
    let (key, text) = data.iter().next().expect("one entry");
    let text = text.as_str().expect("the settings file is text").to_owned();
    let table: toml::Table = text.parse().unwrap_or_else(|e| panic!("{key} is not TOML: {e}\n{text}"));
    (key.clone(), table)
}

fn seconds(table: &toml::Table, key: &str) -> f64 {
    match &table[key] {
        toml::Value::Integer(ms) if key.ends_with("_ms") => *ms as f64 / 1000.0,
        toml::Value::String(text) => humantime::parse_duration(text).expect("a duration").as_secs_f64(),
        other => panic!("{key} = {other} is not a duration this test reads"),
    }
}

#[test]
fn manifests_agree_on_paths_ports_and_the_drain_arithmetic() {
    let resources = resources();
    let (config_key, table) = settings(&resources);
    let deployment = of_kind(&resources, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let env = |name: &str| {
        container["env"].as_array().and_then(|vars| vars.iter().find(|v| v["name"] == name)).map(|v| v["value"].clone())
    };
    let mount = |volume: &str| {
        let mounts = container["volumeMounts"].as_array().expect("volume mounts");
        let found = mounts.iter().find(|m| m["name"] == volume).unwrap_or_else(|| panic!("{volume} is mounted"));
        assert_eq!(found["readOnly"], true, "{volume} is mounted read-only");
        found["mountPath"].as_str().expect("a mount path").to_owned()
    };
    let volume = |name: &str| {
        let volumes = pod["volumes"].as_array().expect("volumes");
        volumes.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("volume {name}")).clone()
    };

    // The settings file is where TANDEM_CONFIG says, and comes from this ConfigMap.
    let settings_volume = volume("settings");
    assert_eq!(settings_volume["configMap"]["name"], of_kind(&resources, "ConfigMap")["metadata"]["name"]);
    assert_eq!(env("TANDEM_CONFIG"), Some(Value::from(format!("{}/{config_key}", mount("settings")))));

    // Models come from the read-only volume, and name bundles that ship in models/.
    assert_eq!(volume("models")["persistentVolumeClaim"]["readOnly"], true);
    let models_dir = mount("models");
    for model in table["models"].as_array().expect("models is a list") {
        let path = model.as_str().expect("a model path");
        let name =
            path.strip_prefix(&format!("{models_dir}/")).unwrap_or_else(|| panic!("{path} is under {models_dir}"));
        assert!(Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(name).is_dir(), "{name} ships in models/");
    }

    // The keys file is the Secret's item, mounted as a directory so updates reach it.
    let keys = volume("api-keys");
    let item = keys["secret"]["items"][0]["path"].as_str().expect("the Secret's item path");
    assert_eq!(table["api_keys_file"].as_str(), Some(format!("{}/{item}", mount("api-keys")).as_str()));

    // Probes and the Service reach the named container port.
    let port = &container["ports"][0];
    assert_eq!(port["containerPort"], 8080, "the image's TANDEM_PORT");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/health/ready");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/health/live");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], port["name"], "{probe} port");
    }
    let service = of_kind(&resources, "Service");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], port["name"]);
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for selector in
        [&service["spec"]["selector"], &of_kind(&resources, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]]
    {
        for (key, value) in selector.as_object().expect("a selector") {
            assert_eq!(&labels[key], value, "selector {key} matches the pod's labels");
        }
    }
    assert_eq!(
        of_kind(&resources, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );

    // The drain: grace, then in-flight work, then a margin, all inside the kubelet's grace period.
    let termination = pod["terminationGracePeriodSeconds"].as_f64().expect("terminationGracePeriodSeconds");
    let grace = seconds(&table, "drain_grace");
    let drain_timeout = seconds(&table, "drain_timeout_ms");
    assert!(
        grace + drain_timeout + 3.0 <= termination,
        "drain_grace {grace} s + drain_timeout {drain_timeout} s must leave a few seconds of {termination} s"
    );
    assert!(seconds(&table, "request_timeout_ms") <= drain_timeout, "a request accepted last ends inside the drain");
    let readiness = &container["readinessProbe"];
    let noticed =
        readiness["periodSeconds"].as_f64().unwrap_or(10.0) * readiness["failureThreshold"].as_f64().unwrap_or(3.0);
    assert!(noticed < grace, "readiness notices the drain ({noticed} s) well inside the grace ({grace} s)");
}

#[test]
fn the_configmap_settings_serve_the_shipped_models() {
    let resources = resources();
    let (_, table) = settings(&resources);
    let dir = tempfile::tempdir().expect("temp dir");
    let settings_file = dir.path().join("tandem.toml");
    std::fs::write(&settings_file, toml::to_string(&table).expect("TOML")).expect("write the settings");
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "# one key\ntest-key-1\n").expect("write the keys");
    // Flags override the file's paths (models and keys) with this checkout's; every other
    // setting is the file's, so a key `tandem serve` does not know fails the start.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut args = vec!["--config".to_owned(), settings_file.display().to_string()];
    for model in table["models"].as_array().expect("models") {
        let name = Path::new(model.as_str().expect("a path")).file_name().expect("a bundle name");
        args.extend(["--model".to_owned(), repo.join("models").join(name).display().to_string()]);
    }
    args.extend(["--api-keys-file".to_owned(), keys.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = Server::start(&args);
    let http = Http::new();

    assert_eq!(http.get(&server.url("/health/live")).expect("live").status, 200);
    assert_eq!(http.get(&server.url("/v1/models")).expect("models").status, 401, "the keys file is in force");
    let listed = http.ok(http.client().get(server.url("/v1/models")).bearer_auth("test-key-1"));
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(listed.json()["models"].as_array().map(Vec::len), table["models"].as_array().map(Vec::len));
    assert_eq!(http.get(&server.url("/metrics")).expect("metrics").status, 401, "metrics need the key");

    // During the file's drain grace the server still answers, and readiness says 503.
    server.child.terminate();
    wait_until("readiness to answer 503 while draining", || {
        http.get(&server.url("/health/ready")).is_ok_and(|reply| reply.status == 503)
    });
    assert_eq!(http.get(&server.url("/health/live")).expect("live while draining").status, 200);
    assert!(server.child.wait_exit(Duration::from_millis(200)).is_none(), "still in the grace period");
}
