//! The AnkiCollab media server's logic. Functions' `main.rs` files are glue around this crate.
//!
//! - [`policy`], [`hash`], [`sniff`], [`convert`], [`svg`], [`audio`]: pure rules about files.
//! - [`presign`], [`cdn`], [`download_urls`], [`auth`]: URLs and tokens.
//! - [`store`]: storage traits and their DynamoDB/S3 adapters.
//! - [`uploads`], [`process`], [`downloads`]: what each function does.
//! - [`api`], [`error`]: HTTP mapping, in one place; [`maintainer_page`]: the page it serves.

pub mod access;
pub mod api;
pub mod app;
pub mod audio;
pub mod auth;
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
pub mod sniff;
pub mod store;
pub mod svg;
pub mod sync;
pub mod telemetry;
pub mod uploads;

pub use app::App;
