//! Records the git revision for `tandem --version`. Builds outside a checkout (a source tarball,
//! a container build without `.git`) take `TANDEM_GIT_REVISION` from the environment, or say
//! `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=TANDEM_GIT_REVISION");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let revision = std::env::var("TANDEM_GIT_REVISION").ok().filter(|r| !r.is_empty()).or_else(git_revision);
    println!("cargo:rustc-env=TANDEM_GIT_REVISION={}", revision.as_deref().unwrap_or("unknown"));
}

fn git_revision() -> Option<String> {
    let out = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let rev = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| o.status.success() && !o.stdout.is_empty());
    Some(if dirty { format!("{rev}-dirty") } else { rev })
}
