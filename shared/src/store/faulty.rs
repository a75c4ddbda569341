//! Stores that fail one chosen call of the sweep's, before or after doing it: what
//! [`crate::scenarios::sweep_interrupted_at_every_step`] stops a sweep with.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::*;

/// Where the fault falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// The call fails without having happened (an error with the SDK's attempts spent).
    Before,
    /// The call happens and its answer is lost (a crash right after it, or a timeout).
    After,
}

/// Wraps the media repo and the object store. Once armed, the `fail_at`-th of the sweep's calls
/// from then on (claims, object deletions, alias removal, record removal; counted from 0) fails
/// as `when` says; everything else passes through.
pub struct Faulty {
    media: Arc<dyn MediaRepo>,
    blobs: Arc<dyn BlobStore>,
    calls: AtomicUsize,
    armed: std::sync::Mutex<Option<(usize, When)>>,
}

impl Faulty {
    pub fn new(media: Arc<dyn MediaRepo>, blobs: Arc<dyn BlobStore>) -> Arc<Self> {
        Arc::new(Self { media, blobs, calls: AtomicUsize::new(0), armed: std::sync::Mutex::new(None) })
    }

    /// Fail the call numbered `fail_at` (from 0) from now on, `when` (before or after doing it).
    pub fn arm(&self, fail_at: usize, when: When) {
        self.calls.store(0, Ordering::SeqCst);
        *self.armed.lock().unwrap_or_else(|p| p.into_inner()) = Some((fail_at, when));
    }

    /// Disarm; whether the fault fell.
    pub fn disarm(&self) -> bool {
        let armed = self.armed.lock().unwrap_or_else(|p| p.into_inner()).take();
        armed.is_some_and(|(fail_at, _)| self.calls.load(Ordering::SeqCst) > fail_at)
    }

    async fn step<T: Send, F: std::future::Future<Output = Result<T, StoreError>> + Send>(
        &self,
        call: F,
    ) -> Result<T, StoreError> {
        let armed = *self.armed.lock().unwrap_or_else(|p| p.into_inner());
        let Some((fail_at, when)) = armed else { return call.await };
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n != fail_at {
            return call.await;
        }
        if when == When::After {
            call.await?;
        }
        Err(StoreError::new("injected", format!("sweep step {n} failed ({when:?})")))
    }
}

#[async_trait]
impl MediaRepo for Faulty {
    async fn get(&self, hash: &Sha256Hash) -> Result<Option<MediaRecord>, StoreError> {
        self.media.get(hash).await
    }
    async fn get_many(&self, hashes: &[Sha256Hash]) -> Result<HashMap<Sha256Hash, MediaRecord>, StoreError> {
        self.media.get_many(hashes).await
    }
    async fn begin_upload(&self, upload: &PendingUpload<'_>) -> Result<BeginUpload, StoreError> {
        self.media.begin_upload(upload).await
    }
    async fn mark_ready(&self, hash: &Sha256Hash, stored: &StoredMedia, now: &str) -> Result<bool, StoreError> {
        self.media.mark_ready(hash, stored, now).await
    }
    async fn mark_rejected(&self, hash: &Sha256Hash, reason: RejectReason, now: &str) -> Result<(), StoreError> {
        self.media.mark_rejected(hash, reason, now).await
    }
    async fn put_alias(&self, alias: &Sha256Hash, target: &Sha256Hash, now: &str) -> Result<(), StoreError> {
        self.media.put_alias(alias, target, now).await
    }
    async fn ensure_record(&self, hash: &Sha256Hash, now: &str) -> Result<Option<MediaRecord>, StoreError> {
        self.media.ensure_record(hash, now).await
    }
    async fn unreferenced(&self) -> Result<Vec<MediaRecord>, StoreError> {
        self.media.unreferenced().await
    }
    async fn begin_delete(
        &self,
        hash: &Sha256Hash,
        seen_updated_at: Option<&str>,
        now: &str,
        until: &str,
    ) -> Result<bool, StoreError> {
        self.step(self.media.begin_delete(hash, seen_updated_at, now, until)).await
    }
    async fn renew_delete(&self, hash: &Sha256Hash, until: &str) -> Result<bool, StoreError> {
        self.step(self.media.renew_delete(hash, until)).await
    }
    async fn take_back(&self, hash: &Sha256Hash, seen_until: Option<&str>, now: &str) -> Result<bool, StoreError> {
        self.media.take_back(hash, seen_until, now).await
    }
    async fn finish_delete(&self, hash: &Sha256Hash, now: &str) -> Result<bool, StoreError> {
        self.step(self.media.finish_delete(hash, now)).await
    }
    async fn delete_alias(&self, alias: &Sha256Hash, target: &Sha256Hash) -> Result<(), StoreError> {
        self.step(self.media.delete_alias(alias, target)).await
    }
    async fn set_ref_count(&self, hash: &Sha256Hash, seen: i64, actual: i64, now: &str) -> Result<bool, StoreError> {
        self.media.set_ref_count(hash, seen, actual, now).await
    }
    async fn scan_all(&self) -> Result<Vec<MediaRecord>, StoreError> {
        self.media.scan_all().await
    }
}

#[async_trait]
impl BlobStore for Faulty {
    async fn read(&self, key: &str, max: u64) -> Result<Option<ReadBlob>, StoreError> {
        self.blobs.read(key, max).await
    }
    async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
        cache_control: Option<&str>,
    ) -> Result<(), StoreError> {
        self.blobs.put(key, bytes, content_type, cache_control).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.step(self.blobs.delete(key)).await
    }
    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.blobs.exists(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        self.blobs.list(prefix).await
    }
    async fn verified_sha256(&self, key: &str) -> Result<Option<Sha256Hash>, StoreError> {
        self.blobs.verified_sha256(key).await
    }
}
