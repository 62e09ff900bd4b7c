//! One module per route group; each exposes `router()` plus its handlers for the OpenAPI document.

pub(crate) mod classify;
pub(crate) mod docs;
pub(crate) mod health;
pub(crate) mod metrics;
pub(crate) mod models;
