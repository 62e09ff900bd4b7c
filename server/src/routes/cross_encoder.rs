//! Cross-encoders: served by the rerank routes, `POST /v1/models/{id}/rerank` and the Cohere- and
//! Jina-compatible `POST /v1/rerank`, with the request and response shapes embedders answer.
//!
//! The handlers are the embedder module's (`embedder::rerank`, `embedder::compat_rerank`): they
//! take either kind, and the runtime scores by the kind it finds (cosine for an embedder, the
//! head's raw logit for a cross-encoder), so one route never forks into two shapes. This module
//! names the kind and its routes, as every kind has.

/// The kind this module names.
pub(crate) const KIND: &str = "cross_encoder";

/// The routes that serve cross-encoders, as named in 422 answers to other kinds' models.
pub(crate) const ROUTES: &[&str] = &["POST /v1/rerank", "POST /v1/models/{id}/rerank"];
