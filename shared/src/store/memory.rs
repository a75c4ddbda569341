//! In-memory stores for unit tests of the logic. The real adapters have their own tests against
//! the emulators.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use super::*;
use crate::model::MediaStatus;

#[derive(Default)]
pub struct MemoryMedia(pub Mutex<HashMap<Sha256Hash, MediaRecord>>);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl MediaRepo for MemoryMedia {
    async fn get(&self, hash: &Sha256Hash) -> Result<Option<MediaRecord>, StoreError> {
        Ok(lock(&self.0).get(hash).cloned())
    }
    async fn get_many(
        &self,
        hashes: &[Sha256Hash],
    ) -> Result<HashMap<Sha256Hash, MediaRecord>, StoreError> {
        let m = lock(&self.0);
        Ok(hashes
            .iter()
            .filter_map(|h| m.get(h).map(|r| (*h, r.clone())))
            .collect())
    }
    async fn begin_upload(&self, u: &PendingUpload<'_>) -> Result<BeginUpload, StoreError> {
        let mut m = lock(&self.0);
        let r = m.entry(u.hash).or_insert_with(|| {
            let mut r = MediaRecord::new(u.hash, MediaStatus::Pending);
            r.created_at = Some(u.now.into());
            r
        });
        if r.alias_of.is_some() || r.status == MediaStatus::Ready {
            return Ok(BeginUpload::AlreadyReady);
        }
        if let (MediaStatus::Rejected, Some(reason)) = (r.status, r.reason) {
            if !reason.allows_retry() {
                return Ok(BeginUpload::Rejected(reason));
            }
        }
        r.status = MediaStatus::Pending;
        r.reason = None;
        r.size = Some(u.size);
        r.uploader = Some(u.uploader.into());
        r.upload_expires_at = Some(u.expires_at.into());
        r.updated_at = Some(u.now.into());
        Ok(BeginUpload::Started)
    }
    async fn mark_ready(
        &self,
        hash: &Sha256Hash,
        s: &StoredMedia,
        now: &str,
    ) -> Result<(), StoreError> {
        let mut m = lock(&self.0);
        let r = m
            .entry(*hash)
            .or_insert_with(|| MediaRecord::new(*hash, MediaStatus::Ready));
        r.status = MediaStatus::Ready;
        r.reason = None;
        r.upload_expires_at = None;
        r.stored_key = Some(s.stored_key.clone());
        r.thumb_key = s.thumb_key.clone();
        r.content_type = Some(s.content_type.clone());
        r.size = Some(s.size);
        r.stored_size = Some(s.stored_size);
        r.stored_hash = Some(s.stored_hash);
        r.width = s.width;
        r.height = s.height;
        r.updated_at = Some(now.into());
        Ok(())
    }
    async fn mark_rejected(
        &self,
        hash: &Sha256Hash,
        reason: RejectReason,
        now: &str,
    ) -> Result<(), StoreError> {
        let mut m = lock(&self.0);
        let r = m
            .entry(*hash)
            .or_insert_with(|| MediaRecord::new(*hash, MediaStatus::Rejected));
        if r.status != MediaStatus::Ready {
            r.status = MediaStatus::Rejected;
            r.reason = Some(reason);
            r.updated_at = Some(now.into());
        }
        Ok(())
    }
    async fn put_alias(
        &self,
        alias: &Sha256Hash,
        target: &Sha256Hash,
        now: &str,
    ) -> Result<(), StoreError> {
        lock(&self.0).entry(*alias).or_insert_with(|| {
            let mut r = MediaRecord::new(*alias, MediaStatus::Ready);
            r.alias_of = Some(*target);
            r.created_at = Some(now.into());
            r
        });
        Ok(())
    }
}

#[derive(Default)]
pub struct MemoryDecks(pub Mutex<BTreeMap<(String, String), Sha256Hash>>);

#[async_trait]
impl DeckIndex for MemoryDecks {
    async fn put(
        &self,
        deck: &str,
        entries: &[(String, Sha256Hash)],
        _now: &str,
    ) -> Result<(), StoreError> {
        let mut m = lock(&self.0);
        for (f, h) in entries {
            m.insert((deck.into(), f.clone()), *h);
        }
        Ok(())
    }
    async fn resolve(
        &self,
        deck: &str,
        filenames: &[String],
    ) -> Result<HashMap<String, Sha256Hash>, StoreError> {
        let m = lock(&self.0);
        Ok(filenames
            .iter()
            .filter_map(|f| {
                m.get(&(deck.to_string(), f.clone()))
                    .map(|h| (f.clone(), *h))
            })
            .collect())
    }
    async fn page(
        &self,
        deck: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<DeckPage, StoreError> {
        let m = lock(&self.0);
        let entries: Vec<_> = m
            .iter()
            .filter(|((d, f), _)| d == deck && after.is_none_or(|a| f.as_str() > a))
            .take(limit)
            .map(|((_, f), h)| (f.clone(), *h))
            .collect();
        let next_after = (entries.len() == limit)
            .then(|| entries.last().map(|e| e.0.clone()))
            .flatten();
        Ok(DeckPage {
            entries,
            next_after,
        })
    }
}

#[derive(Default)]
pub struct MemoryBlobs(pub Mutex<HashMap<String, (Vec<u8>, String)>>);

#[async_trait]
impl BlobStore for MemoryBlobs {
    async fn read(&self, key: &str, max: u64) -> Result<Option<ReadBlob>, StoreError> {
        Ok(lock(&self.0).get(key).map(|(b, _)| {
            if b.len() as u64 > max {
                ReadBlob::TooLarge(b.len() as u64)
            } else {
                ReadBlob::Bytes(b.clone())
            }
        }))
    }
    async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
        _cc: Option<&str>,
    ) -> Result<(), StoreError> {
        lock(&self.0).insert(key.into(), (bytes, content_type.into()));
        Ok(())
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        lock(&self.0).remove(key);
        Ok(())
    }
    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(lock(&self.0).contains_key(key))
    }
}
