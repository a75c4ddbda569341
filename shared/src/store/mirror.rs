//! The mirror of DynamoDB in AnkiCollab's Postgres, as the sync reads and writes it: its rows, the
//! changes stream records make to them, and the trait its adapter (`postgres`) implements.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::error::StoreError;
use crate::hash::Sha256Hash;

/// What a mirrored row is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// A row of `anki.media`.
    File { deck: String, filename: String },
    /// A row of `anki.stored_media_files`.
    Stored(Sha256Hash),
}

impl Key {
    /// The item's name in `anki.media_sync_versions`. Deck ids hold no spaces, so the filename
    /// is everything after the second one.
    pub fn item(&self) -> String {
        match self {
            Key::File { deck, filename } => format!("file {deck} {filename}"),
            Key::Stored(hash) => format!("stored {hash}"),
        }
    }
}

/// A row of `anki.media`. `deck` is our deck key (`anki.media.deck_key`); AnkiCollab's numeric id
/// of it (`anki.media.deck`) is derived in Postgres.
#[derive(Debug, Clone, PartialEq)]
pub struct FileRow {
    pub deck: String,
    pub filename: String,
    pub hash: Sha256Hash,
    pub notes: i64,
    pub updated_at: Option<OffsetDateTime>,
}

/// A row of `anki.stored_media_files`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    pub hash: Sha256Hash,
    pub s3_key: Option<String>,
    pub reference_count: i64,
    pub status: String,
    pub size: Option<i64>,
    pub stored_size: Option<i64>,
    pub content_type: Option<String>,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub duration_ms: Option<i64>,
    pub stored_hash: Option<String>,
    pub thumb_key: Option<String>,
    pub reject_reason: Option<String>,
    pub updated_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    File(FileRow),
    Stored(StoredRow),
}

impl Row {
    pub fn key(&self) -> Key {
        match self {
            Row::File(r) => Key::File { deck: r.deck.clone(), filename: r.filename.clone() },
            Row::Stored(r) => Key::Stored(r.hash),
        }
    }
}

/// One stream record: the state of `key` after a change (`None`: gone), and its sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub key: Key,
    /// Decimal digits; compared as numbers, since their length varies.
    pub seq: String,
    pub row: Option<Row>,
}

/// The Postgres side, behind a trait so that tests can put faults in between.
#[async_trait]
pub trait Mirror: Send + Sync {
    /// Bring the schema up to date (idempotent).
    async fn migrate(&self) -> Result<(), StoreError>;
    /// Apply a change unless one with an equal or higher sequence number was applied to the same
    /// item already. Returns whether it was applied.
    async fn apply(&self, change: &Change) -> Result<bool, StoreError>;
    async fn snapshot(&self) -> Result<Snapshot, StoreError>;
    /// Write `row` (or remove the key's row) if the item's last applied sequence number is still
    /// `seen` (`None`: none was). Returns whether it wrote.
    async fn repair(&self, key: &Key, seen: Option<&str>, row: Option<&Row>) -> Result<bool, StoreError>;
    /// Give every row AnkiCollab's current id of its deck key (a deck created, or deleted, since
    /// the row was written). Returns how many rows changed.
    async fn resolve_deck_ids(&self) -> Result<u64, StoreError>;
}

/// Everything the mirror holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub rows: BTreeMap<Key, Row>,
    /// item → last applied sequence number.
    pub versions: HashMap<String, String>,
    /// Rows of a legacy `anki.media` that DynamoDB has not (yet) described: no deck key. Left alone.
    pub legacy_rows: i64,
    /// Rows whose deck key names no AnkiCollab deck (`deck` null): kept, and reported.
    pub unresolved_decks: i64,
    /// Rows whose `deck` is not AnkiCollab's current id of their deck key.
    pub stale_deck_ids: i64,
}
