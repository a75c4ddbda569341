//! What AnkiCollab's backend embeds to use the media server
//! (`README.md`, "Switching AnkiCollab over", says what to add, in order).
//!
//! - [`TokenIssuer`]: mint the media server's tokens (`upload download` for a signed-in user,
//!   `maintain` for a deck's owner and maintainers, `references` for the backend itself).
//! - [`routes::MediaRoutes`] (feature `axum`): the plugin's `POST /media/token` and
//!   `POST /media/references`.
//! - [`MediaSync`]: one call per AnkiCollab event (suggestion submitted, approved, declined; note
//!   deleted; deck created, deleted), keeping the media server's references equal to what the
//!   notes use, by [the deck rule](decks).
//! - [`ReferencesClient`]: the media server's references API itself (batches, retries).
//! - [`legacy`]: today's `POST /media/manifest` answered from the new store, for old plugins.
//!
//! No AWS SDK: the kit speaks the media server's HTTP API and AnkiCollab's Postgres
//! (`tokio-postgres`, as the backend does). Every error is an [`Error`] to match on; every call
//! is idempotent, so a failed one can simply be made again.
//!
//! ```no_run
//! use ankicollab_media_backend::{MediaSync, ReferencesClient, TokenIssuer};
//!
//! # async fn demo(db: &mut tokio_postgres::Client) -> Result<(), ankicollab_media_backend::Error> {
//! let issuer = TokenIssuer::new(&std::env::var("MEDIA_TOKEN_SECRET").unwrap())?;
//! let media = MediaSync::new(ReferencesClient::new("https://media.example.com", issuer.clone()));
//! ankicollab_media_backend::migrate(db).await?; // once, at start-up
//!
//! let token = issuer.for_user(42); // what POST /media/token answers
//! media.suggestion_declined(db, &[1700000000017]).await?; // after AnkiCollab declined it
//! media.deck_deleted(db, "apple-banana-cherry").await?; // after AnkiCollab deleted it
//! # Ok(()) }
//! ```

pub mod decks;
pub mod error;
pub mod files;
pub mod legacy;
pub mod references;
#[cfg(feature = "axum")]
pub mod routes;
pub mod sync;
pub mod tokens;

pub use error::{Error, Result};
pub use references::{Applied, FileRef, NoteMedia, ReferencesClient, Retry};
pub use sync::{migrate, record_file, MediaSync, Recorded, ReportedFile, Synced};
pub use tokens::{MediaToken, TokenIssuer};
