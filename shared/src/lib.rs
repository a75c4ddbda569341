//! The AnkiCollab media server's logic. Functions' `main.rs` files are glue around this crate.
//!
//! - [`policy`], [`hash`], [`sniff`], [`convert`], [`svg`], [`audio`]: pure rules about files.
//! - [`presign`], [`cdn`], [`download_urls`], [`auth`], [`access`]: URLs, tokens, revocation and
//!   rate limits.
//! - [`uploads`], [`process`], [`downloads`] (with [`servable`]), [`references`], [`maintainers`],
//!   [`lifecycle`], [`sync`]: the use cases, each taking only the ports it uses.
//! - [`store`]: one trait per capability, and their DynamoDB, S3 and Postgres adapters.
//! - [`app`] (wiring: clients built once, each use case's ports), [`aws`], [`config`]; [`api`] and
//!   [`error`]: HTTP mapping, in one place; [`maintainer_page`]: the page it serves.

pub mod access;
pub mod api;
pub mod app;
pub mod audio;
pub mod auth;
pub mod aws;
pub mod cdn;
pub mod clock;
pub mod config;
pub mod convert;
pub mod download_urls;
pub mod downloads;
pub mod error;
pub mod hash;
pub mod lifecycle;
pub mod maintainer_page;
pub mod maintainers;
pub mod model;
pub mod policy;
pub mod presign;
pub mod process;
pub mod references;
#[cfg(any(test, feature = "test-util"))]
pub mod scenarios;
pub mod servable;
pub mod sniff;
pub mod store;
pub mod svg;
pub mod sync;
pub mod telemetry;
pub mod uploads;

pub use app::App;

/// A file of the shared corpus, for unit tests (`name` under it, e.g. `real/bell.oga`): from
/// `$CORPUS` as the test scripts set it (scripts/lib.sh finds it), else `$ANKICOLLAB_CORPUS`, else
/// `../shared/corpus` beside the repository.
#[cfg(test)]
pub(crate) fn corpus_file(name: &str) -> Vec<u8> {
    let dir = std::env::var("CORPUS")
        .or_else(|_| std::env::var("ANKICOLLAB_CORPUS"))
        .unwrap_or_else(|_| format!("{}/../../shared/corpus", env!("CARGO_MANIFEST_DIR")));
    let path = std::path::Path::new(&dir).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
