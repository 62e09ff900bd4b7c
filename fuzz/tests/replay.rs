//! Every committed corpus input and crash reproducer, run through its target on stable Rust: the
//! fuzzers' findings stay fixed, and the targets keep compiling and running in CI.

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("manifest", tandem_fuzz::manifest),
    ("bundle", tandem_fuzz::bundle),
    ("image", tandem_fuzz::image),
    ("idx", tandem_fuzz::idx),
    ("digits_csv", tandem_fuzz::digits_csv),
    ("request", tandem_fuzz::request),
];

/// The files of `dir`, sorted so that a failure names the same input on every run.
fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<_> = entries.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

#[test]
fn every_corpus_input_and_reproducer_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, target) in TARGETS {
        let corpus = inputs(&root.join("corpus").join(name));
        assert!(!corpus.is_empty(), "the {name} target has no committed corpus");
        let reproducers = inputs(&root.join("regressions").join(name));
        for path in corpus.iter().chain(&reproducers) {
            let data = std::fs::read(path).expect("input reads");
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name}: {} fails its target", path.display());
        }
    }
}
