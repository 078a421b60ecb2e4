//! The pipeline: golden builds (config, fetch, inject, finalize, manifest,
//! rebuild-on-change) and clones. Built on every layer below.

#![deny(unsafe_code)]

pub mod build;
pub mod config;
mod files;
pub mod finalize;
pub mod identity;
pub mod inject;
pub mod inspect;
pub mod manifest;
mod refusal;
pub mod seed;
pub mod versions;
pub mod vm;

pub use refusal::Refusal;
