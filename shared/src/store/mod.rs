//! Storage behind one small trait per capability, so the logic can be tested without AWS and each
//! adapter can be tested against a real emulator.

#[cfg(any(test, feature = "test-util"))]
pub mod contract;
pub mod dynamo;
#[cfg(any(test, feature = "test-util"))]
pub mod faulty;
#[cfg(any(test, feature = "test-util"))]
pub mod memory;
pub mod mirror;
pub mod postgres;
pub mod refs;
pub mod s3;

use std::collections::HashMap;

use async_trait::async_trait;

use crate::error::StoreError;
use crate::hash::Sha256Hash;
use crate::model::{MediaRecord, RejectReason, StoredMedia};

/// Outcome of asking to upload a hash.
#[derive(Debug, Clone, PartialEq)]
pub enum BeginUpload {
    /// The record is pending now; issue a URL.
    Started,
    /// Someone finished it first.
    AlreadyReady,
    /// The hash's content was refused before; uploading it again would be refused again.
    Rejected(RejectReason),
    /// The sweeper is deleting this hash this very moment; ask again shortly.
    Busy,
    /// Another user's upload of this hash is pending and its URL still valid. The record is
    /// left as that user declared it (size, uploader); this caller gets a URL of its own, and
    /// whichever bytes arrive first are checked against the hash as always.
    Shared,
}

#[derive(Debug, Clone)]
pub struct PendingUpload<'a> {
    pub hash: Sha256Hash,
    pub size: u64,
    pub uploader: &'a str,
    pub expires_at: &'a str,
    pub now: &'a str,
}

/// One user's claim on their daily upload allowance for one hash: reserved when an upload URL
/// is issued, so a second request for the same hash on the same day is not charged again.
#[derive(Debug, Clone, PartialEq)]
pub struct Hold {
    pub user: String,
    /// The UTC day the allowance is for, `YYYY-MM-DD`.
    pub day: String,
    pub hash: Sha256Hash,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserve {
    Granted,
    /// This user already holds this hash today, for this size.
    AlreadyHeld,
    /// This user holds this hash today for another size (`held` bytes), still pending. A hash has
    /// one size, so one of the two is wrong; a URL for it would be charged nothing (the hold is
    /// charged once), so none is issued.
    OtherSize {
        held: u64,
    },
    /// It would take the user past a daily limit.
    Exceeded,
}

/// How processing settled the holds on a hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Stored (or found stored already): the hold stays charged.
    Stored,
    /// Refused: the bytes are given back, but the file still counts, because processing it cost
    /// us; the hold goes, so a later upload of the same hash is charged afresh.
    Rejected,
}

/// Per-user daily upload allowances (bytes and files), as conditional counters. A hold is
/// pending from the moment its URL is issued until processing settles it; a pending hold whose
/// upload never came is given back by the sweep.
#[async_trait]
pub trait QuotaStore: Send + Sync {
    /// Charge a hold issued at `now` (RFC 3339). A hold already held for the same size is not
    /// charged again, but its issue time moves to `now`, since a new URL is about to be issued;
    /// one pending for another size is left alone ([`Reserve::OtherSize`]). So the bytes charged
    /// are always what the issued URLs allow.
    async fn reserve(&self, hold: &Hold, now: &str, max_bytes: u64, max_files: u64) -> Result<Reserve, StoreError>;
    /// Give a pending hold back in full (no URL was issued, or the URL went unused). Idempotent;
    /// a settled hold is left alone.
    async fn release(&self, hold: &Hold) -> Result<(), StoreError>;
    /// Settle every pending hold on `hash`; answers how many it settled. Idempotent.
    async fn settle(&self, hash: &Sha256Hash, outcome: Settlement) -> Result<usize, StoreError>;
    /// Release the pending holds issued before `issued_before` (RFC 3339); answers how many.
    async fn release_unused(&self, issued_before: &str) -> Result<usize, StoreError>;
    /// (bytes, files) the user has reserved that day.
    async fn usage(&self, user: &str, day: &str) -> Result<(u64, u64), StoreError>;
}

/// Media records, keyed by hash.
#[async_trait]
pub trait MediaRepo: Send + Sync {
    async fn get(&self, hash: &Sha256Hash) -> Result<Option<MediaRecord>, StoreError>;
    /// Records of those hashes that have one (batched; order is irrelevant), for answering
    /// clients: an adapter may leave out the bookkeeping fields no answer uses (uploader, upload
    /// expiry, timestamps, reference count, stored hash), so use [`MediaRepo::get`] to change a record.
    async fn get_many(&self, hashes: &[Sha256Hash]) -> Result<HashMap<Sha256Hash, MediaRecord>, StoreError>;
    /// Mark a hash pending unless it is ready or finally rejected.
    async fn begin_upload(&self, upload: &PendingUpload<'_>) -> Result<BeginUpload, StoreError>;
    /// Mark processed bytes ready. `false` when the record is gone or being deleted: the caller
    /// must not leave its object behind as if it were safe (the event is retried instead).
    async fn mark_ready(&self, hash: &Sha256Hash, stored: &StoredMedia, now: &str) -> Result<bool, StoreError>;
    /// Never downgrades a ready record.
    async fn mark_rejected(&self, hash: &Sha256Hash, reason: RejectReason, now: &str) -> Result<(), StoreError>;
    /// Make `alias` (the hash of stored, converted bytes) resolve to `target`, unless `alias` has a
    /// record of its own.
    async fn put_alias(&self, alias: &Sha256Hash, target: &Sha256Hash, now: &str) -> Result<(), StoreError>;
    /// The record, created as pending if there is none (an upload that outlived its record).
    async fn ensure_record(&self, hash: &Sha256Hash, now: &str) -> Result<Option<MediaRecord>, StoreError>;

    // The sweeper's side of the lifecycle (see `lifecycle`).
    /// Records (not aliases) whose reference count is zero, including half-deleted ones.
    async fn unreferenced(&self) -> Result<Vec<MediaRecord>, StoreError>;
    /// Mark `deleting`, claimed until `until`, if still unreferenced and unchanged since
    /// `seen_updated_at`.
    async fn begin_delete(
        &self,
        hash: &Sha256Hash,
        seen_updated_at: Option<&str>,
        now: &str,
        until: &str,
    ) -> Result<bool, StoreError>;
    /// Claim a record another sweep left `deleting` until `until`; `false` if it is no longer
    /// `deleting` (someone took it back).
    async fn renew_delete(&self, hash: &Sha256Hash, until: &str) -> Result<bool, StoreError>;
    /// Take back a record whose deletion was abandoned: if it is still `deleting` with the claim
    /// `seen_until` (which the caller found expired), it becomes `missing`, naming no object (its
    /// bytes may be partly gone), so that its next upload stores them again. `false` if anything
    /// changed since it was read.
    async fn take_back(&self, hash: &Sha256Hash, seen_until: Option<&str>, now: &str) -> Result<bool, StoreError>;
    /// Remove a `deleting` record that is still unreferenced; `false` (and status `missing`) if a
    /// reference got in after all.
    async fn finish_delete(&self, hash: &Sha256Hash, now: &str) -> Result<bool, StoreError>;
    async fn delete_alias(&self, alias: &Sha256Hash, target: &Sha256Hash) -> Result<(), StoreError>;
    /// Set a count found to drift (`lifecycle::reconcile_counts`), if it still is `seen`.
    async fn set_ref_count(&self, hash: &Sha256Hash, seen: i64, actual: i64, now: &str) -> Result<bool, StoreError>;
    async fn scan_all(&self) -> Result<Vec<MediaRecord>, StoreError>;
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeckEntry {
    pub filename: String,
    pub hash: Sha256Hash,
    /// How many notes of the deck use the file.
    pub notes: i64,
}

/// One item of the deck index, for whole-table comparisons (`sync::reconcile_mirror`): a filename, what it
/// resolves to and how many notes use it (see [`refs::FileVersions`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DeckFile {
    pub deck: String,
    pub filename: String,
    pub hash: Sha256Hash,
    pub notes: i64,
    pub updated_at: Option<String>,
}

/// One page of a deck's files, in filename order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeckPage {
    pub entries: Vec<DeckEntry>,
    /// The last filename returned, when more may follow.
    pub next_after: Option<String>,
}

/// A deck's filename → hash mapping, maintained by the reference transactions: only filenames
/// that some note of the deck uses.
#[async_trait]
pub trait DeckIndex: Send + Sync {
    async fn resolve(&self, deck: &str, filenames: &[String]) -> Result<HashMap<String, Sha256Hash>, StoreError>;
    async fn page(&self, deck: &str, after: Option<&str>, limit: usize) -> Result<DeckPage, StoreError>;
    /// How many notes of the deck use `filename`, read consistently: written by the same
    /// transactions as the reference items, so 0 here means no reference item is left.
    async fn file_notes(&self, deck: &str, filename: &str) -> Result<i64, StoreError>;
    /// Every item of every deck, lingering zero-note items included.
    async fn scan_all(&self) -> Result<Vec<DeckFile>, StoreError>;
}

#[derive(Debug, PartialEq)]
pub enum ReadBlob {
    Bytes(Vec<u8>),
    /// The object is larger than the caller allows; its body was not read.
    TooLarge(u64),
}

/// Object storage.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Read a whole object, refusing one larger than `max` bytes. `None` if it does not exist.
    async fn read(&self, key: &str, max: u64) -> Result<Option<ReadBlob>, StoreError>;
    async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
        cache_control: Option<&str>,
    ) -> Result<(), StoreError>;
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    async fn exists(&self, key: &str) -> Result<bool, StoreError>;
    /// Keys and sizes under a prefix (`lifecycle::reconcile_counts`).
    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError>;
    /// The SHA-256 the store itself verified when the object was written (S3 checks the
    /// checksum our pre-signed PUTs carry), without reading it; `None` if it holds none or the
    /// object is gone. Processing uses it to tell a too-large file from a wrong one unread.
    async fn verified_sha256(&self, key: &str) -> Result<Option<Sha256Hash>, StoreError>;
}

/// Records for `hashes`, following aliases: a hash of converted bytes answers with the record of
/// the original it came from.
pub async fn lookup(
    repo: &dyn MediaRepo,
    hashes: &[Sha256Hash],
) -> Result<HashMap<Sha256Hash, MediaRecord>, StoreError> {
    let mut found = repo.get_many(hashes).await?;
    let targets: Vec<Sha256Hash> = found.values().filter_map(|r| r.alias_of).collect();
    if targets.is_empty() {
        return Ok(found);
    }
    let originals = repo.get_many(&targets).await?;
    for record in found.values_mut() {
        if let Some(target) = record.alias_of {
            match originals.get(&target) {
                Some(original) if original.alias_of.is_none() => *record = original.clone(),
                // A dangling alias is as good as no record.
                _ => record.status = crate::model::MediaStatus::Missing,
            }
        }
    }
    Ok(found)
}
