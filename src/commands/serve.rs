//! `tandem serve`: load bundles into a runtime and serve them until SIGTERM or SIGINT, with the
//! models directory behind the admin API (and a watcher on it) when one is given.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use tandem_runtime::repository::Repository;
use tandem_runtime::Runtime;

use crate::settings::{resolve, ServeSettings};

/// Arguments of `tandem serve`.
#[derive(clap::Args)]
pub struct Args {
    /// A TOML settings file; environment variables and flags override it.
    #[arg(long, env = "TANDEM_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: ServeSettings,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let settings = resolve(args.config.as_ref(), args.settings)?;
    serve(&settings)
}

/// Loads every model named in `settings` and every bundle of the models directory, and serves
/// them (watching the directory when asked); returns after a graceful shutdown.
pub fn serve(settings: &ServeSettings) -> anyhow::Result<()> {
    if settings.models.is_empty() && settings.models_dir.is_none() {
        bail!(
            "no models to serve: pass --model DIR (repeatable) or --models-dir DIR, or set `models` or `models_dir` \
             in the settings file"
        );
    }
    let watch = settings.watch_interval()?;
    let server = settings.server_config();
    server.validate().map_err(|e| anyhow::anyhow!(e))?;
    let runtime = Arc::new(Runtime::new(settings.runtime_config()));
    for dir in &settings.models {
        let info = runtime.load(dir).with_context(|| format!("cannot load {}", dir.display()))?;
        eprintln!("loaded {} ({} parameters) from {}", info.id, info.params, dir.display());
    }
    let repository = settings.models_dir.as_deref().map(|dir| load_models_dir(&runtime, dir)).transpose()?;
    eprintln!("serving on http://{}:{} (docs at /docs)", server.host, server.port);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let served = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind((server.host.as_str(), server.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", server.host, server.port))?;
        let mut state = tandem_server::AppState::new(runtime.clone(), &server);
        if let Some(repository) = repository {
            if let Some(interval) = watch {
                eprintln!("watching {} every {interval:?}", repository.root().display());
                tokio::spawn(repository.clone().watch(interval));
            }
            state = state.with_repository(repository);
        }
        tandem_server::serve_with_state(listener, state, tandem_server::shutdown_signal()).await?;
        anyhow::Ok(())
    });
    // The drain timeout is a hard bound on exit: do not wait for blocking tasks or model workers
    // still running work the drain abandoned (dropping the runtime joins the workers).
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    std::mem::forget(runtime);
    served
}

/// Opens the models directory and loads every bundle in it; any bundle that fails stops the start,
/// so that what was deployed is what serves.
fn load_models_dir(runtime: &Arc<Runtime>, dir: &Path) -> anyhow::Result<Arc<Repository>> {
    let repository = Repository::open(runtime.clone(), dir)
        .with_context(|| format!("cannot open the models directory {}", dir.display()))?;
    let report = repository.poll_blocking();
    if !report.failed.is_empty() {
        let failures: Vec<String> = report.failed.iter().map(|(location, err)| format!("{location}: {err}")).collect();
        bail!("cannot load the models directory {}:\n  {}", dir.display(), failures.join("\n  "));
    }
    for id in &report.loaded {
        eprintln!("loaded {id} from the models directory {}", dir.display());
    }
    Ok(repository)
}
