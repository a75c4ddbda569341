//! Storage behind one small trait per capability, so the logic can be tested without AWS and each
//! adapter can be tested against a real emulator.

pub mod dynamo;
pub mod memory;
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
}

#[derive(Debug, Clone)]
pub struct PendingUpload<'a> {
    pub hash: Sha256Hash,
    pub size: u64,
    pub uploader: &'a str,
    pub expires_at: &'a str,
    pub now: &'a str,
}

/// Media records, keyed by hash.
#[async_trait]
pub trait MediaRepo: Send + Sync {
    async fn get(&self, hash: &Sha256Hash) -> Result<Option<MediaRecord>, StoreError>;
    /// Records of those hashes that have one (batched; order is irrelevant).
    async fn get_many(
        &self,
        hashes: &[Sha256Hash],
    ) -> Result<HashMap<Sha256Hash, MediaRecord>, StoreError>;
    /// Mark a hash pending unless it is ready or finally rejected.
    async fn begin_upload(&self, upload: &PendingUpload<'_>) -> Result<BeginUpload, StoreError>;
    async fn mark_ready(
        &self,
        hash: &Sha256Hash,
        stored: &StoredMedia,
        now: &str,
    ) -> Result<(), StoreError>;
    /// Never downgrades a ready record.
    async fn mark_rejected(
        &self,
        hash: &Sha256Hash,
        reason: RejectReason,
        now: &str,
    ) -> Result<(), StoreError>;
    /// Make `alias` (the hash of stored, converted bytes) resolve to `target`, unless `alias` has a
    /// record of its own.
    async fn put_alias(
        &self,
        alias: &Sha256Hash,
        target: &Sha256Hash,
        now: &str,
    ) -> Result<(), StoreError>;
}

/// One page of a deck's files, in filename order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeckPage {
    pub entries: Vec<(String, Sha256Hash)>,
    /// The last filename returned, when more may follow.
    pub next_after: Option<String>,
}

/// A deck's filename → hash mapping.
#[async_trait]
pub trait DeckIndex: Send + Sync {
    async fn put(
        &self,
        deck: &str,
        entries: &[(String, Sha256Hash)],
        now: &str,
    ) -> Result<(), StoreError>;
    async fn resolve(
        &self,
        deck: &str,
        filenames: &[String],
    ) -> Result<HashMap<String, Sha256Hash>, StoreError>;
    async fn page(
        &self,
        deck: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<DeckPage, StoreError>;
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
