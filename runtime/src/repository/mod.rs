//! The models directory: bundles that can be loaded by name, reloaded in place, unloaded, and
//! kept in step with the disk by a watcher.
//!
//! Layout: `DIR/<name>/` holds one bundle (`manifest.json` and the files it lists), or
//! `DIR/<name>/<version>/` holds one bundle per version, side by side. The manifest's name must be
//! `<name>`, and in the versioned layout its version must be `<version>`, so that what a directory
//! is called and what it serves never disagree. Entries starting with a dot are ignored: a writer
//! can prepare `DIR/.name.tmp/` and rename it into place.
//!
//! Every change of what is served takes one path ([`Repository::apply`]): fingerprint the bundle's
//! files, load and verify it fully with a warm-up batch on the calling (blocking) thread while the
//! old version keeps serving, and only then swap it into the registry ([`Runtime::swap_in`]). A
//! bundle that fails anywhere on the way is refused: the version already serving keeps serving,
//! and the location records the error.
//!
//! Each location is in one [`ModelState`]: `Loading` until its first load ends, `Ready` while it
//! serves (also during a reload, and after a refused one, whose error it keeps), `Failed` when
//! its load failed and nothing of it serves. Lifecycle operations are serialised by one lock held
//! on a blocking thread; readers ([`Repository::statuses`]) never wait for a load.

mod disk;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use disk::{validate_segment, Location, MAX_SEGMENT_LEN};

use crate::registry::version_key;
use crate::runtime::{ModelInfo, Runtime};
use crate::{Error, Result};
use disk::{Fingerprint, Peek};

/// Where a location stands; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelState {
    /// Its first load is running; nothing of it serves yet.
    Loading,
    /// It serves. A reload in progress, or one that was refused, does not change that.
    Ready,
    /// Its load failed and nothing of it serves.
    Failed,
}

impl ModelState {
    /// `loading`, `ready` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelState::Loading => "loading",
            ModelState::Ready => "ready",
            ModelState::Failed => "failed",
        }
    }
}

/// One location of the models directory as readers see it.
#[derive(Debug, Clone)]
pub struct ModelStatus {
    /// `<name>` or `<name>/<version>`, relative to the models directory.
    pub location: Location,
    /// `name@version` of what serves, else of what the manifest says, else of the location.
    pub id: String,
    /// The model's name.
    pub name: String,
    /// The model's version; empty when neither the manifest nor the layout says.
    pub version: String,
    /// The model's family; empty when the manifest cannot be read.
    pub kind: String,
    /// Where it stands.
    pub state: ModelState,
    /// Why the last load or reload was refused; `None` after a success.
    pub error: Option<String>,
    /// What serves from this location now.
    pub model: Option<ModelInfo>,
}

/// What a load request did.
#[derive(Debug, Clone)]
pub struct LoadOutcome {
    /// What serves now.
    pub info: ModelInfo,
    /// `false` when the location was already serving and nothing was read from disk.
    pub created: bool,
}

/// What one pass over the models directory changed.
#[derive(Debug, Clone, Default)]
pub struct PollReport {
    /// `name@version` of models served for the first time.
    pub loaded: Vec<String>,
    /// `name@version` of models replaced by a changed bundle.
    pub reloaded: Vec<String>,
    /// `name@version` of models whose directory is gone.
    pub unloaded: Vec<String>,
    /// Locations whose new or changed bundle was refused, and why.
    pub failed: Vec<(String, String)>,
}

impl PollReport {
    /// Whether the pass changed nothing and refused nothing.
    pub fn is_empty(&self) -> bool {
        self.loaded.is_empty() && self.reloaded.is_empty() && self.unloaded.is_empty() && self.failed.is_empty()
    }
}

/// Registers the help text of the lifecycle metrics with the installed recorder.
pub fn describe_metrics() {
    metrics::describe_counter!(
        "tandem_model_loads_total",
        "bundles of the models directory loaded (operation `load`) or reloaded (`reload`) and now serving"
    );
    metrics::describe_counter!(
        "tandem_model_load_failures_total",
        "bundles of the models directory refused on load or reload; what was serving keeps serving"
    );
    metrics::describe_counter!("tandem_model_unloads_total", "models of the models directory unloaded");
}

/// A lifecycle operation, for logs and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Load,
    Reload,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Load => "load",
            Operation::Reload => "reload",
        }
    }
}

/// What readers see of a location.
#[derive(Debug, Clone)]
struct Entry {
    state: ModelState,
    error: Option<String>,
    serving: Option<ModelInfo>,
    /// What the manifest said at the last attempt, for listing a location that does not serve.
    peek: Peek,
}

/// What only lifecycle operations touch, under the operations lock.
#[derive(Default)]
struct Book {
    /// The fingerprint each location had when it was last tried, successfully or not.
    tried: BTreeMap<Location, Fingerprint>,
    /// Locations unloaded on request, which the watcher leaves alone until they are loaded again.
    excluded: BTreeSet<Location>,
    /// Directory names that cannot be served, already logged.
    ignored: BTreeSet<String>,
}

/// The bundles of one models directory, served through one [`Runtime`].
pub struct Repository {
    root: PathBuf,
    runtime: Arc<Runtime>,
    ops: Mutex<Book>,
    entries: Mutex<BTreeMap<Location, Entry>>,
}

impl Repository {
    /// The models directory `root`, serving into `runtime`; loads nothing yet.
    pub fn open(runtime: Arc<Runtime>, root: &Path) -> Result<Arc<Repository>> {
        let root =
            root.canonicalize().map_err(|e| Error::NotFound(format!("models directory {}: {e}", root.display())))?;
        if !root.is_dir() {
            return Err(Error::InvalidInput(format!("models directory {} is not a directory", root.display())));
        }
        Ok(Arc::new(Repository { root, runtime, ops: Mutex::default(), entries: Mutex::default() }))
    }

    /// The models directory, canonical.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The runtime its models serve in.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Every location, ordered by location.
    pub fn statuses(&self) -> Vec<ModelStatus> {
        let entries = self.entries.lock().expect("entries lock poisoned. This is a bug.");
        entries.iter().map(|(location, entry)| status(location, entry)).collect()
    }

    /// Loads `name` (at `version`, else its highest version) from the models directory, unless it
    /// already serves. A location unloaded earlier is watched again.
    pub async fn load(self: &Arc<Self>, name: String, version: Option<String>) -> Result<LoadOutcome> {
        self.blocking(move |repo| repo.load_blocking(&name, version.as_deref())).await
    }

    /// Reloads the model `id` (`name@version`, or `name` for its highest version) from its
    /// location; a refused bundle leaves the old version serving.
    pub async fn reload(self: &Arc<Self>, id: String) -> Result<ModelInfo> {
        self.blocking(move |repo| repo.reload_blocking(&id)).await
    }

    /// Unloads the model `id`, or forgets a location that failed to load; the watcher then leaves
    /// it alone until it is loaded again. Requests in flight on the model still complete.
    pub async fn unload(self: &Arc<Self>, id: String) -> Result<()> {
        self.blocking(move |repo| repo.unload_blocking(&id)).await
    }

    /// One pass over the directory; see [`Repository::poll_blocking`].
    pub async fn poll(self: &Arc<Self>) -> Result<PollReport> {
        self.blocking(|repo| Ok(repo.poll_blocking())).await
    }

    /// Polls every `interval` for as long as the returned future runs.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            if let Err(err) = self.poll().await {
                tracing::error!(error = %err, "models directory poll failed");
            }
        }
    }

    /// One pass over the directory, blocking: loads new bundles, reloads changed ones, unloads
    /// those whose directory is gone. Unchanged bundles are not read beyond their metadata; a
    /// refused bundle is tried again once its files change. The first pass loads everything.
    pub fn poll_blocking(&self) -> PollReport {
        let mut book = self.ops.lock().expect("operations lock poisoned. This is a bug.");
        let mut report = PollReport::default();
        let known: BTreeSet<Location> = self.entries().keys().cloned().collect();
        let Book { ignored, .. } = &mut *book;
        let found = disk::scan(&self.root, &known, |name| {
            if ignored.insert(name.to_owned()) {
                tracing::warn!(name, "ignoring a models directory entry whose name cannot be served");
            }
        });
        let Some(mut found) = found else {
            tracing::warn!(dir = %self.root.display(), "cannot read the models directory; nothing changes");
            return report;
        };
        found.retain(|location| !book.excluded.contains(location));
        for gone in known.difference(&found) {
            if let Some(id) = self.forget(&mut book, gone) {
                report.unloaded.push(id);
            }
        }
        for location in found {
            let fingerprint = Fingerprint::of(&location.dir(&self.root));
            if book.tried.get(&location) == Some(&fingerprint) {
                continue;
            }
            let serving = self.entries().get(&location).is_some_and(|e| e.serving.is_some());
            let op = if serving { Operation::Reload } else { Operation::Load };
            match self.apply(&mut book, &location, fingerprint, op) {
                Ok(info) if serving => report.reloaded.push(info.id),
                Ok(info) => report.loaded.push(info.id),
                Err(err) => report.failed.push((location.to_string(), err.to_string())),
            }
        }
        report
    }

    fn load_blocking(&self, name: &str, version: Option<&str>) -> Result<LoadOutcome> {
        validate_segment("name", name)?;
        if let Some(version) = version {
            validate_segment("version", version)?;
        }
        let mut book = self.ops.lock().expect("operations lock poisoned. This is a bug.");
        let known: BTreeSet<Location> = self.entries().keys().cloned().collect();
        let location = disk::locate(&self.root, name, version, &known)?;
        book.excluded.remove(&location);
        let serving = self.entries().get(&location).and_then(|e| e.serving.clone());
        if let Some(info) = serving.filter(|info| version.is_none_or(|v| v == info.version)) {
            return Ok(LoadOutcome { info, created: false });
        }
        let fingerprint = Fingerprint::of(&location.dir(&self.root));
        let info = self.apply(&mut book, &location, fingerprint, Operation::Load)?;
        Ok(LoadOutcome { info, created: true })
    }

    fn reload_blocking(&self, id: &str) -> Result<ModelInfo> {
        let mut book = self.ops.lock().expect("operations lock poisoned. This is a bug.");
        let location = self.resolve(id)?;
        let fingerprint = Fingerprint::of(&location.dir(&self.root));
        self.apply(&mut book, &location, fingerprint, Operation::Reload)
    }

    fn unload_blocking(&self, id: &str) -> Result<()> {
        let mut book = self.ops.lock().expect("operations lock poisoned. This is a bug.");
        let location = self.resolve(id)?;
        self.forget(&mut book, &location);
        book.excluded.insert(location);
        Ok(())
    }

    /// The location of `id`: the one serving it (a bare name is its highest version, as for
    /// requests), else one that failed to load under that id or name.
    fn resolve(&self, id: &str) -> Result<Location> {
        let entries = self.entries();
        if let Ok(info) = self.runtime.model(id) {
            let owner = entries.iter().find(|(_, e)| e.serving.as_ref().is_some_and(|s| s.id == info.id));
            return match owner {
                Some((location, _)) => Ok(location.clone()),
                None => Err(Error::Conflict(format!(
                    "{} was not loaded from the models directory; only models loaded from there can be reloaded \
                     or unloaded",
                    info.id
                ))),
            };
        }
        let idle = entries.iter().filter(|(_, e)| e.serving.is_none());
        let matching: Vec<(&Location, &Entry)> = if id.contains('@') {
            idle.filter(|(location, entry)| label(location, entry).0 == id).collect()
        } else {
            idle.filter(|(location, entry)| label(location, entry).1 == id).collect()
        };
        matching
            .into_iter()
            .max_by_key(|(location, entry)| version_key(&label(location, entry).2))
            .map(|(location, _)| location.clone())
            .ok_or_else(|| Error::NotFound(format!("no model named {id:?}")))
    }

    /// The one path by which a bundle comes to serve: verify fully, warm up, then swap. On failure
    /// the location keeps what it served and records the error.
    fn apply(
        &self,
        book: &mut Book,
        location: &Location,
        fingerprint: Fingerprint,
        op: Operation,
    ) -> Result<ModelInfo> {
        let dir = location.dir(&self.root);
        book.tried.insert(location.clone(), fingerprint);
        let peek = Peek::read(&dir);
        let old = {
            let mut entries = self.entries();
            let entry = entries.entry(location.clone()).or_insert_with(|| Entry {
                state: ModelState::Loading,
                error: None,
                serving: None,
                peek: peek.clone(),
            });
            if entry.serving.is_none() {
                entry.state = ModelState::Loading;
                entry.peek = peek.clone();
            }
            entry.serving.as_ref().map(|info| info.id.clone())
        };
        tracing::info!(bundle = %location, operation = op.as_str(), "loading from the models directory");
        let result = self.stage(location, &dir, &peek).and_then(|staged| {
            let id = &staged.info().id;
            if old.as_ref() != Some(id) && self.runtime.serves(id) {
                let owner = self
                    .entries()
                    .iter()
                    .find(|(_, e)| e.serving.as_ref().is_some_and(|s| &s.id == id))
                    .map(|(l, _)| l.to_string());
                let place =
                    owner.map_or_else(|| "by a model loaded from elsewhere".to_owned(), |l| format!("from {l}"));
                return Err(Error::Conflict(format!("{location}: {id} is already served {place}")));
            }
            Ok(self.runtime.swap_in(staged, old.as_deref()))
        });
        let labels = [("bundle", location.to_string()), ("operation", op.as_str().to_owned())];
        let mut entries = self.entries();
        let entry = entries.get_mut(location).expect("the entry was inserted above. This is a bug.");
        match &result {
            Ok(info) => {
                metrics::counter!("tandem_model_loads_total", &labels).increment(1);
                tracing::info!(bundle = %location, model = %info.id, operation = op.as_str(), "serving from the models directory");
                *entry = Entry { state: ModelState::Ready, error: None, serving: Some(info.clone()), peek };
            }
            Err(err) => {
                metrics::counter!("tandem_model_load_failures_total", &labels).increment(1);
                tracing::warn!(bundle = %location, operation = op.as_str(), error = %err, kept = ?old, "bundle refused");
                entry.error = Some(err.to_string());
                entry.state = if entry.serving.is_some() { ModelState::Ready } else { ModelState::Failed };
            }
        }
        result
    }

    /// Loads the bundle at `location` without serving it, after the checks the registry cannot
    /// make: every file inside the models directory, and the manifest's identity matching the
    /// layout. Errors name paths relative to the models directory.
    fn stage(&self, location: &Location, dir: &Path, peek: &Peek) -> Result<crate::runtime::StagedModel> {
        disk::check_inside(&self.root, dir, &location.to_string())?;
        for file in &peek.files {
            let path = dir.join(file);
            if path.exists() {
                if let Err(Error::InvalidInput(msg)) =
                    disk::check_inside(&self.root, &path, &format!("{location}/{file}"))
                {
                    return Err(Error::Bundle(msg));
                }
            }
        }
        let staged = self.runtime.stage(dir).map_err(|err| self.relative(location, err))?;
        let info = staged.info();
        if info.name != location.name {
            return Err(Error::Bundle(format!(
                "{location}: the manifest names the model {:?}, but its directory is {:?}",
                info.name, location.name
            )));
        }
        if let Some(version) = location.version.as_ref().filter(|v| **v != info.version) {
            return Err(Error::Bundle(format!(
                "{location}: the manifest's version is {:?}, but its directory is {version:?}",
                info.version
            )));
        }
        Ok(staged)
    }

    /// Unloads what `location` serves and forgets it; returns the unloaded id.
    fn forget(&self, book: &mut Book, location: &Location) -> Option<String> {
        book.tried.remove(location);
        let entry = self.entries().remove(location)?;
        let info = entry.serving?;
        if let Err(err) = self.runtime.unload(&info.id) {
            tracing::warn!(bundle = %location, model = %info.id, error = %err, "was not served any more");
        }
        metrics::counter!("tandem_model_unloads_total", "bundle" => location.to_string()).increment(1);
        tracing::info!(bundle = %location, model = %info.id, "unloaded from the models directory");
        Some(info.id)
    }

    /// A runtime error with the models directory's own path taken out of its message, so that
    /// clients see paths relative to it.
    fn relative(&self, location: &Location, err: Error) -> Error {
        let strip = |msg: String| {
            let dir = format!("{}/", self.root.display());
            let msg = msg.replace(&format!("{dir}{location}: "), "").replace(&dir, "");
            format!("{location}: {msg}")
        };
        match err {
            Error::Bundle(msg) => Error::Bundle(strip(msg)),
            Error::Internal(msg) => Error::Internal(strip(msg)),
            other => other,
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<Location, Entry>> {
        self.entries.lock().expect("entries lock poisoned. This is a bug.")
    }

    /// Runs a lifecycle operation on the blocking pool: loads read and hash whole bundles.
    async fn blocking<T, F>(self: &Arc<Self>, run: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Repository) -> Result<T> + Send + 'static,
    {
        let repo = self.clone();
        tokio::task::spawn_blocking(move || run(&repo))
            .await
            .map_err(|e| Error::Internal(format!("models directory task failed: {e}")))?
    }
}

/// `(id, name, version)` of a location: what serves, else what the manifest said, else the layout.
fn label(location: &Location, entry: &Entry) -> (String, String, String) {
    if let Some(info) = &entry.serving {
        return (info.id.clone(), info.name.clone(), info.version.clone());
    }
    let name = location.name.clone();
    let version = location.version.clone().or_else(|| entry.peek.version.clone()).unwrap_or_default();
    let id = if version.is_empty() { name.clone() } else { format!("{name}@{version}") };
    (id, name, version)
}

fn status(location: &Location, entry: &Entry) -> ModelStatus {
    let (id, name, version) = label(location, entry);
    let kind =
        entry.serving.as_ref().map(|info| info.kind.clone()).or_else(|| entry.peek.kind.clone()).unwrap_or_default();
    ModelStatus {
        location: location.clone(),
        id,
        name,
        version,
        kind,
        state: entry.state,
        error: entry.error.clone(),
        model: entry.serving.clone(),
    }
}
