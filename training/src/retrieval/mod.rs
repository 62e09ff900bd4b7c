//! The WordNet retrieval benchmark, its metrics, the BM25 baseline and the evaluation of
//! embedder bundles on it.
//!
//! # The benchmark
//!
//! Built from WordNet 3.0 ([`crate::data::wordnet`], fetched with `tandem data fetch wordnet`):
//!
//! - **Documents**: the definition of every synset (its gloss without the example sentences), all
//!   117,659 of them, numbered in WordNet's order (nouns, verbs, adjectives, adverbs, each by
//!   offset). Some definitions are shared by several synsets (668 texts by 1,630 synsets, such as
//!   `a variety of aster`); they stay separate documents, and exact ties rank the lower number
//!   first.
//! - **Queries**: every example sentence of a synset, and every lemma with underscores read as
//!   spaces (`domestic dog`); a text that occurs twice in one synset is asked once.
//! - **Relevance**: grade 2 for the query's own synset, grade 1 for its direct hypernyms (`@`,
//!   `@i`) and hyponyms (`~`, `~i`), 0 for everything else. A lemma shared by several synsets
//!   (`bank`) is a query of each, judged against its own synset only, so no ranking of an
//!   ambiguous lemma can be perfect for all its senses.
//! - **Split, by synset**: the first 8 bytes of the sha256 of the synset id as written
//!   (`02084193-n`, the adjective satellites as `a`), read big-endian, modulo 100: 0–1 is test,
//!   2–3 validation, 4–99 train (about 2%, 2% and 96% of the synsets). A synset's queries all
//!   belong to its split. The validation and test query sets are the first 2,000 of their
//!   synsets' queries ordered by the same hash of `"{synset id}\t{query}"`; the train split keeps
//!   all of its queries in that order.
//! - **Training pairs** ([`Benchmark::training_pairs`]): `(query, definition)` of the train split
//!   only, without any pair whose query equals a validation or test query or whose definition
//!   equals a validation or test definition (ignoring case and spacing), so no held-out text is
//!   ever trained on.
//!
//! # Metrics
//!
//! Over the asked queries, with equal weight ([`metrics`]): nDCG@10 with linear gains (grade 2 or
//! 1), recall@1 and recall@10 (the fraction of queries whose own synset is in the top 1 or 10),
//! and MRR@10 (the reciprocal rank of the own synset if it is in the top 10, else 0).
//! Every ranking is an exact top-k over the whole corpus: dot products of unit-length embeddings
//! for an embedder, Okapi BM25 for the baseline ([`bm25`]).

pub mod benchmark;
pub mod bm25;
mod eval;
pub mod metrics;
pub mod mining;
pub mod search;

pub use benchmark::{Benchmark, Query, QueryKind, TrainingPair, HELD_OUT_QUERIES};
pub(crate) use eval::Encoder;
pub use eval::{evaluate, ByKind, EvalOptions, FirstStage, KindFigures, Rerank, RetrievalReport, BM25, CUTOFF};
pub use metrics::Metrics;
pub use mining::{mine_hard_negatives, MiningOptions};
