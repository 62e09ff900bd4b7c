//! `tandem serve`: load bundles into a runtime and serve them until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
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

/// Loads every model named in `settings` and serves them; returns after a graceful shutdown.
pub fn serve(settings: &ServeSettings) -> anyhow::Result<()> {
    if settings.models.is_empty() {
        bail!("no models to serve: pass --model DIR (repeatable) or set `models` in the settings file");
    }
    let runtime = Arc::new(Runtime::new(settings.runtime_config()));
    for dir in &settings.models {
        let info = runtime.load(dir).with_context(|| format!("cannot load {}", dir.display()))?;
        eprintln!("loaded {} ({} parameters) from {}", info.id, info.params, dir.display());
    }
    let server = settings.server_config();
    server.validate().map_err(|e| anyhow::anyhow!(e))?;
    eprintln!("serving on http://{}:{} (docs at /docs)", server.host, server.port);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let served = rt.block_on(tandem_server::serve(runtime.clone(), server, tandem_server::shutdown_signal()));
    // The drain timeout is a hard bound on exit: do not wait for blocking tasks or model workers
    // still running work the drain abandoned (dropping the runtime joins the workers).
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    std::mem::forget(runtime);
    served?;
    Ok(())
}
