//! What the models directory looks like on disk: its layout, names, path checks, and the cheap
//! fingerprints that tell a watcher which bundles changed.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::bundle::{sha256_hex, MANIFEST_FILE, WEIGHTS_FILE};
use crate::registry::version_key;
use crate::{Error, Result};

/// Longest name or version the models directory accepts.
pub const MAX_SEGMENT_LEN: usize = 128;

/// Where a bundle lies in the models directory: `<name>/`, or `<name>/<version>/` in the
/// versioned layout. Displayed as that relative path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// The directory under the models directory, and the manifest's name.
    pub name: String,
    /// The version directory in the versioned layout; `None` for `<name>/` itself.
    pub version: Option<String>,
}

impl Location {
    /// The bundle directory under `root`.
    pub fn dir(&self, root: &Path) -> PathBuf {
        match &self.version {
            Some(version) => root.join(&self.name).join(version),
            None => root.join(&self.name),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            Some(version) => write!(f, "{}/{version}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Checks a name or version taken from a request or a directory entry: the manifest's characters
/// (ASCII letters, digits, `-`, `_`, `.`), not starting with a dot, at most [`MAX_SEGMENT_LEN`]
/// long. This alone keeps `..`, absolute paths and separators out; symlinks are checked by
/// [`check_inside`].
pub fn validate_segment(field: &str, value: &str) -> Result<()> {
    let chars_ok = value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if value.is_empty() || value.len() > MAX_SEGMENT_LEN || !chars_ok || value.starts_with('.') {
        return Err(Error::InvalidInput(format!(
            "{field} {value:?} must be 1 to {MAX_SEGMENT_LEN} ASCII letters, digits, '-', '_' or '.', not starting \
             with '.'"
        )));
    }
    Ok(())
}

/// Fails unless `path`, with every symlink resolved, lies inside `root` (itself canonical).
/// `what` names the path in the error, relative to the models directory.
pub fn check_inside(root: &Path, path: &Path, what: &str) -> Result<()> {
    let canonical = path.canonicalize().map_err(|e| Error::NotFound(format!("{what}: {e}")))?;
    if !canonical.starts_with(root) {
        return Err(Error::InvalidInput(format!("{what} resolves outside the models directory")));
    }
    Ok(())
}

/// Whether `name` is a directory entry the scan looks at: not hidden, and valid UTF-8.
fn visible(name: &std::ffi::OsStr) -> Option<&str> {
    name.to_str().filter(|n| !n.starts_with('.'))
}

/// Bundle locations present under `root`, or `None` when `root` cannot be read (then nothing should
/// be unloaded on the strength of it).
///
/// A location is discovered once its `manifest.json` exists (bundle writers write it last), and a
/// location already `known` stays for as long as its directory exists, so a bundle being rewritten
/// in place is reloaded (and refused while incomplete), never unloaded. `<name>/` is the flat
/// layout when it holds a manifest or is already known as flat; otherwise its subdirectories with
/// a manifest are versions. Names that cannot be served are passed to `ignore` once per scan.
pub fn scan(root: &Path, known: &BTreeSet<Location>, mut ignore: impl FnMut(&str)) -> Option<BTreeSet<Location>> {
    let entries = std::fs::read_dir(root).ok()?;
    let mut found = BTreeSet::new();
    for entry in entries.flatten() {
        let Some(name) = visible(&entry.file_name()).map(str::to_owned) else { continue };
        let dir = entry.path();
        if !dir.is_dir() {
            continue;
        }
        if validate_segment("name", &name).is_err() {
            ignore(&name);
            continue;
        }
        let flat = Location { name: name.clone(), version: None };
        if dir.join(MANIFEST_FILE).is_file() || known.contains(&flat) {
            found.insert(flat);
            continue;
        }
        for sub in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Some(version) = visible(&sub.file_name()).map(str::to_owned) else { continue };
            if validate_segment("version", &version).is_ok() && sub.path().join(MANIFEST_FILE).is_file() {
                found.insert(Location { name: name.clone(), version: Some(version) });
            }
        }
    }
    found.extend(known.iter().filter(|loc| loc.dir(root).is_dir()).cloned());
    Some(found)
}

/// The location holding `name` (at `version`, or its highest version), for a load request.
pub fn locate(root: &Path, name: &str, version: Option<&str>, known: &BTreeSet<Location>) -> Result<Location> {
    let dir = root.join(name);
    if !dir.is_dir() {
        return Err(Error::NotFound(format!("no bundle named {name:?} in the models directory")));
    }
    check_inside(root, &dir, name)?;
    let flat = Location { name: name.to_owned(), version: None };
    if dir.join(MANIFEST_FILE).is_file() || known.contains(&flat) {
        if let (Some(wanted), Some(found)) = (version, Peek::read(&dir).version) {
            if wanted != found {
                return Err(Error::NotFound(format!("{name} holds version {found}, not {wanted}")));
            }
        }
        return Ok(flat);
    }
    let mut versions: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|sub| visible(&sub.file_name()).map(str::to_owned))
        .filter(|v| validate_segment("version", v).is_ok() && dir.join(v).join(MANIFEST_FILE).is_file())
        .collect();
    versions.sort_by_key(|v| version_key(v));
    let version = match version {
        Some(wanted) if versions.iter().any(|v| v == wanted) => wanted.to_owned(),
        Some(wanted) => {
            return Err(Error::NotFound(format!("no version {wanted:?} of {name} in the models directory")))
        }
        None => match versions.pop() {
            Some(highest) => highest,
            None => return Err(Error::NotFound(format!("{name} in the models directory holds no bundle"))),
        },
    };
    let location = Location { name: name.to_owned(), version: Some(version) };
    check_inside(root, &location.dir(root), &location.to_string())?;
    Ok(location)
}

/// What a manifest says about itself, read leniently so that a broken bundle can still be listed
/// under its name, version and kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Peek {
    /// The manifest's `name`, if readable.
    pub name: Option<String>,
    /// The manifest's `version`, if readable.
    pub version: Option<String>,
    /// The family's `kind`, if readable.
    pub kind: Option<String>,
    /// Every file the manifest lists, plus the manifest and the weights; relative paths.
    pub files: Vec<String>,
    /// sha256 of the manifest's bytes; `None` when it cannot be read.
    pub manifest_sha256: Option<String>,
}

impl Peek {
    /// Reads `dir/manifest.json`; anything unreadable is left out.
    pub fn read(dir: &Path) -> Peek {
        let mut files = vec![MANIFEST_FILE.to_owned(), WEIGHTS_FILE.to_owned()];
        let Ok(bytes) = std::fs::read(dir.join(MANIFEST_FILE)) else {
            return Peek { files, ..Peek::default() };
        };
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
        let listed = value["files"].as_array().into_iter().flatten().filter_map(|f| text(&f["path"]));
        for path in listed {
            if !files.contains(&path) {
                files.push(path);
            }
        }
        // Schema 1 had no family section; its bundles are classifiers.
        let kind =
            text(&value["family"]["kind"]).or_else(|| (value["schema_version"] == 1).then(|| "classifier".into()));
        Peek {
            name: text(&value["name"]),
            version: text(&value["version"]),
            kind,
            files,
            manifest_sha256: Some(sha256_hex(&bytes)),
        }
    }
}

/// Size, modification time and file identity of one file; `None` for a file that is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

/// A cheap summary of a bundle on disk: the manifest's digest, and the metadata of every file it
/// lists. Any write to a listed file, a rename over it or a new manifest changes it; only a change
/// leads to a full load and verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    manifest_sha256: Option<String>,
    files: Vec<(String, Option<Stamp>)>,
}

impl Fingerprint {
    /// Takes the fingerprint of the bundle in `dir`. Taken before a load reads the files, so that a
    /// bundle still being written when it was read differs from it afterwards and is tried again.
    pub fn of(dir: &Path) -> Fingerprint {
        let peek = Peek::read(dir);
        let files = peek
            .files
            .into_iter()
            .filter(|path| path != MANIFEST_FILE)
            .map(|path| {
                let stamp = std::fs::metadata(dir.join(&path)).ok().map(|m| Stamp {
                    len: m.len(),
                    modified: m.modified().ok(),
                    inode: inode(&m),
                });
                (path, stamp)
            })
            .collect();
        Fingerprint { manifest_sha256: peek.manifest_sha256, files }
    }
}

#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(not(unix))]
fn inode(_meta: &std::fs::Metadata) -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_segment(value: &str, ok: bool) {
        assert_eq!(validate_segment("name", value).is_ok(), ok, "{value:?}");
    }

    #[test]
    fn segments_keep_paths_out() {
        for ok in ["digits", "digits-student", "a_b.c", "1.10", "-"] {
            check_segment(ok, true);
        }
        let long = "a".repeat(MAX_SEGMENT_LEN + 1);
        for bad in ["", ".", "..", "../x", "/etc", "a/b", ".hidden", "a b", "a\\b", "ü", long.as_str()] {
            check_segment(bad, false);
        }
    }

    #[test]
    fn locations_display_as_relative_paths() {
        let flat = Location { name: "m".into(), version: None };
        let versioned = Location { name: "m".into(), version: Some("2".into()) };
        assert_eq!((flat.to_string(), versioned.to_string()), ("m".to_owned(), "m/2".to_owned()));
        assert_eq!(versioned.dir(Path::new("/r")), Path::new("/r/m/2"));
    }
}
