//! An AR2-style loop (Adversarial Retriever-Ranker, METHODS.md section 9): the retriever (a
//! bi-encoder) and the ranker (a cross-encoder) train in alternation.
//!
//! Each round:
//! 1. **Ranker.** The cross-encoder continues from the last round's (the first round starts from
//!    `ranker.init`, an embedder or a cross-encoder) on hard negatives that the *current*
//!    retriever mines: it learns to tell the answers from what the retriever confuses them with.
//! 2. **Retriever.** The retriever continues from its last round's weights with the contrastive
//!    loss plus score KL to the new ranker over the negatives it mines itself
//!    ([`super::rank_distill`]); the index is rebuilt with its current weights at the start of
//!    every epoch, so each round mines from a refreshed index.
//!
//! The adversarial min-max of the paper is read here as this alternation of the two ordinary
//! objectives; the paper's exact retriever objective (the ranker's distribution over the
//! retriever's own samples) is the score-KL term over the retriever's mined candidates.
//! Every sub-run is an ordinary run beside `out` (`<out>/round-<r>-ranker`, `-retriever`), so a
//! killed loop resumes within its current run, and finished runs are kept, not retrained.

use std::path::{Path, PathBuf};

use super::rank_distill::{self, RankDistillConfig};
use crate::families::cross_encoder::{self, CrossEncoderConfig};
use crate::report::TrainSummary;
use crate::{Error, Result};

/// The loop: the starting retriever, the two runs' settings as templates, and the rounds.
#[derive(Debug, Clone)]
pub struct Ar2Config {
    /// The embedder bundle the retriever starts from.
    pub retriever: PathBuf,
    /// The ranker's run; `init` is the first round's start, `miner` and `out` are set per round.
    pub ranker: CrossEncoderConfig,
    /// The retriever's run; `base.init`, `cross_encoder` and `base.run.out` are set per round.
    pub retriever_run: RankDistillConfig,
    /// Rounds of ranker-then-retriever.
    pub rounds: usize,
    /// The directory the rounds' bundles go in.
    pub out: PathBuf,
}

/// What one round trained.
#[derive(Debug, Clone)]
pub struct Ar2Round {
    /// 1-based.
    pub round: usize,
    /// The ranker's run.
    pub ranker: TrainSummary,
    /// The retriever's run.
    pub retriever: TrainSummary,
}

/// Runs the loop; the last round's retriever is the result.
pub fn ar2(cfg: &Ar2Config) -> Result<Vec<Ar2Round>> {
    if cfg.rounds == 0 {
        return Err(Error::InvalidArgument("--rounds must be at least 1".into()));
    }
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    let mut retriever = cfg.retriever.clone();
    let mut ranker_start = cfg.ranker.init.clone();
    let mut rounds = Vec::with_capacity(cfg.rounds);
    for round in 1..=cfg.rounds {
        let mut ranker = cfg.ranker.clone();
        ranker.init = ranker_start.clone();
        ranker.miner = retriever.clone();
        ranker.run.common.out = cfg.out.join(format!("round-{round}-ranker"));
        ranker.run.common.name = format!("{}-r{round}", cfg.ranker.run.common.name);
        ranker.run.common.seed = cfg.ranker.run.common.seed + round as u64;
        let ranker_summary = finished(&ranker.run.common.out).map_or_else(|| cross_encoder::train(&ranker), Ok)?;

        let mut student = cfg.retriever_run.clone();
        student.base.init = Some(retriever.clone());
        student.cross_encoder = ranker.run.common.out.clone();
        let run = &mut student.base.run;
        run.common.out = cfg.out.join(format!("round-{round}-retriever"));
        run.common.name = format!("{}-r{round}", cfg.retriever_run.base.run.common.name);
        run.common.seed = cfg.retriever_run.base.run.common.seed + round as u64;
        let retriever_summary =
            finished(&student.base.run.common.out).map_or_else(|| rank_distill::rank_distill(&student), Ok)?;
        tracing::info!(
            round,
            ranker_val = ranker_summary.val_accuracy,
            retriever_val = retriever_summary.val_accuracy,
            "AR2 round done"
        );
        retriever = student.base.run.common.out.clone();
        ranker_start = ranker.run.common.out.clone();
        rounds.push(Ar2Round { round, ranker: ranker_summary, retriever: retriever_summary });
    }
    Ok(rounds)
}

/// The summary of a run that already exported its bundle, if it did.
fn finished(out: &Path) -> Option<TrainSummary> {
    if !out.join("manifest.json").exists() {
        return None;
    }
    let bytes = std::fs::read(crate::trainer::sibling(out, "summary.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}
