//! One in-memory store behind every storage trait, for unit tests of the logic and benchmarks
//! that must not measure storage. Each method holds one lock, so it is as atomic as the
//! DynamoDB operation it stands for. The real adapters have their own tests against emulators.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use super::*;
use crate::model::MediaStatus;
use crate::store::mirror::{Change, Key, Mirror, Row, Snapshot};
use crate::store::refs::{Commit, FileVersions, NoteRef, RefOp, ReferenceStore, Step};

#[derive(Default)]
pub struct State {
    pub media: HashMap<Sha256Hash, MediaRecord>,
    /// (deck, filename) → the hashes its notes use under it, and when a commit last changed it
    pub decks: BTreeMap<(String, String), (FileVersions, String)>,
    /// (deck, note, filename) → hash
    pub refs: BTreeMap<(String, String, String), Sha256Hash>,
    pub blobs: HashMap<String, (Vec<u8>, String)>,
    /// (user, day) → (bytes, files)
    pub usage: HashMap<(String, String), (u64, u64)>,
    /// (user, day, hash) → (bytes, issued_at while pending)
    pub holds: HashMap<(String, String, Sha256Hash), (u64, Option<String>)>,
    pub deny_list: crate::access::DenyList,
    /// bucket key → theoretical arrival time (ms)
    pub buckets: HashMap<String, u64>,
    /// Every bucket write, done or not (the rate limiter's cost).
    pub bucket_writes: u64,
}

#[derive(Default)]
pub struct MemoryStore(pub Mutex<State>);

impl MemoryStore {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn bucket_writes(&self) -> u64 {
        self.lock().bucket_writes
    }
}

#[async_trait]
impl crate::access::RevocationStore for MemoryStore {
    async fn deny_list(&self) -> Result<crate::access::DenyList, StoreError> {
        Ok(self.lock().deny_list.clone())
    }
    async fn revoke(&self, sub: &str, how: crate::access::Revocation) -> Result<(), StoreError> {
        self.lock().deny_list.insert(sub.to_string(), how);
        Ok(())
    }
    async fn unrevoke(&self, sub: &str) -> Result<bool, StoreError> {
        Ok(self.lock().deny_list.remove(sub).is_some())
    }
}

#[async_trait]
impl crate::access::BucketStore for MemoryStore {
    async fn write(
        &self,
        key: &str,
        write: crate::access::BucketWrite,
        _expires_at: i64,
    ) -> Result<crate::access::BucketWritten, StoreError> {
        use crate::access::{BucketWrite, BucketWritten};
        let mut s = self.lock();
        s.bucket_writes += 1;
        let found = s.buckets.get(key).copied();
        let new = match (write, found) {
            (BucketWrite::Advance { by, min, max }, Some(t)) if (min..=max).contains(&t) => t + by,
            (BucketWrite::Restart { to, before }, t) if t.is_none_or(|t| t < before) => to,
            _ => return Ok(BucketWritten::Found(found)),
        };
        s.buckets.insert(key.to_string(), new);
        Ok(BucketWritten::Done(new))
    }
}

#[async_trait]
impl MediaRepo for MemoryStore {
    async fn get(&self, hash: &Sha256Hash) -> Result<Option<MediaRecord>, StoreError> {
        Ok(self.lock().media.get(hash).cloned())
    }
    async fn get_many(&self, hashes: &[Sha256Hash]) -> Result<HashMap<Sha256Hash, MediaRecord>, StoreError> {
        let s = self.lock();
        Ok(hashes.iter().filter_map(|h| s.media.get(h).map(|r| (*h, r.clone()))).collect())
    }
    async fn begin_upload(&self, u: &PendingUpload<'_>) -> Result<BeginUpload, StoreError> {
        let mut s = self.lock();
        let r = s.media.entry(u.hash).or_insert_with(|| {
            let mut r = MediaRecord::new(u.hash, MediaStatus::Pending);
            r.created_at = Some(u.now.into());
            r
        });
        if r.alias_of.is_some() || r.status == MediaStatus::Ready {
            return Ok(BeginUpload::AlreadyReady);
        }
        if r.status == MediaStatus::Deleting {
            return Ok(BeginUpload::Busy);
        }
        if let (true, Some(reason)) = (r.finally_rejected(), r.reason) {
            return Ok(BeginUpload::Rejected(reason));
        }
        let someone_elses = r.uploader.as_deref().is_some_and(|who| who != u.uploader)
            && r.upload_expires_at.as_deref().is_some_and(|until| until >= u.now);
        if r.status == MediaStatus::Pending && someone_elses {
            return Ok(BeginUpload::Shared);
        }
        r.status = MediaStatus::Pending;
        r.reason = None;
        r.size = Some(u.size);
        r.uploader = Some(u.uploader.into());
        r.upload_expires_at = Some(u.expires_at.into());
        r.updated_at = Some(u.now.into());
        Ok(BeginUpload::Started)
    }
    async fn mark_ready(&self, hash: &Sha256Hash, st: &StoredMedia, now: &str) -> Result<bool, StoreError> {
        let mut s = self.lock();
        let Some(r) = s.media.get_mut(hash) else { return Ok(false) };
        if r.status == MediaStatus::Deleting {
            return Ok(false);
        }
        r.status = MediaStatus::Ready;
        r.reason = None;
        r.upload_expires_at = None;
        r.stored_key = Some(st.stored_key.clone());
        r.thumb_key = st.thumb_key.clone();
        r.content_type = Some(st.content_type.clone());
        r.size = Some(st.size);
        r.stored_size = Some(st.stored_size);
        r.stored_hash = Some(st.stored_hash);
        r.width = st.width;
        r.height = st.height;
        r.duration_ms = st.duration_ms;
        r.updated_at = Some(now.into());
        Ok(true)
    }
    async fn mark_rejected(&self, hash: &Sha256Hash, reason: RejectReason, now: &str) -> Result<(), StoreError> {
        let mut s = self.lock();
        let r = s.media.entry(*hash).or_insert_with(|| {
            let mut r = MediaRecord::new(*hash, MediaStatus::Rejected);
            r.created_at = Some(now.into());
            r
        });
        if !matches!(r.status, MediaStatus::Ready | MediaStatus::Deleting) {
            r.status = MediaStatus::Rejected;
            r.reason = Some(reason);
            r.updated_at = Some(now.into());
        }
        Ok(())
    }
    async fn ensure_record(&self, hash: &Sha256Hash, now: &str) -> Result<Option<MediaRecord>, StoreError> {
        let mut s = self.lock();
        let r = s.media.entry(*hash).or_insert_with(|| {
            let mut r = MediaRecord::new(*hash, MediaStatus::Pending);
            r.created_at = Some(now.into());
            r.updated_at = Some(now.into());
            r
        });
        Ok(Some(r.clone()))
    }
    async fn put_alias(&self, alias: &Sha256Hash, target: &Sha256Hash, now: &str) -> Result<(), StoreError> {
        self.lock().media.entry(*alias).or_insert_with(|| {
            let mut r = MediaRecord::new(*alias, MediaStatus::Ready);
            r.alias_of = Some(*target);
            r.created_at = Some(now.into());
            r.updated_at = Some(now.into());
            r
        });
        Ok(())
    }
    async fn unreferenced(&self) -> Result<Vec<MediaRecord>, StoreError> {
        Ok(self.lock().media.values().filter(|r| r.ref_count == 0 && r.alias_of.is_none()).cloned().collect())
    }
    async fn begin_delete(
        &self,
        hash: &Sha256Hash,
        seen_updated_at: Option<&str>,
        now: &str,
        until: &str,
    ) -> Result<bool, StoreError> {
        let mut s = self.lock();
        let Some(r) = s.media.get_mut(hash) else { return Ok(false) };
        if r.ref_count != 0 || r.updated_at.as_deref() != seen_updated_at || r.status == MediaStatus::Deleting {
            return Ok(false);
        }
        r.status = MediaStatus::Deleting;
        r.updated_at = Some(now.into());
        r.deleting_until = Some(until.into());
        Ok(true)
    }
    async fn renew_delete(&self, hash: &Sha256Hash, until: &str) -> Result<bool, StoreError> {
        let mut s = self.lock();
        match s.media.get_mut(hash) {
            Some(r) if r.status == MediaStatus::Deleting => {
                r.deleting_until = Some(until.into());
                Ok(true)
            }
            _ => Ok(false),
        }
    }
    async fn take_back(&self, hash: &Sha256Hash, seen_until: Option<&str>, now: &str) -> Result<bool, StoreError> {
        let mut s = self.lock();
        match s.media.get_mut(hash) {
            Some(r) if r.status == MediaStatus::Deleting && r.deleting_until.as_deref() == seen_until => {
                r.status = MediaStatus::Missing;
                r.stored_key = None;
                r.thumb_key = None;
                r.deleting_until = None;
                r.updated_at = Some(now.into());
                Ok(true)
            }
            _ => Ok(false),
        }
    }
    async fn finish_delete(&self, hash: &Sha256Hash, now: &str) -> Result<bool, StoreError> {
        let mut s = self.lock();
        match s.media.get(hash) {
            Some(r) if r.status == MediaStatus::Deleting && r.ref_count == 0 => {
                s.media.remove(hash);
                Ok(true)
            }
            Some(r) if r.status == MediaStatus::Deleting => {
                let r = s.media.get_mut(hash).expect("present");
                // A reference got in after all: the bytes are gone, so the hash is missing.
                r.status = MediaStatus::Missing;
                r.stored_key = None;
                r.thumb_key = None;
                r.deleting_until = None;
                r.updated_at = Some(now.into());
                Ok(false)
            }
            _ => Ok(false),
        }
    }
    async fn delete_alias(&self, alias: &Sha256Hash, target: &Sha256Hash) -> Result<(), StoreError> {
        let mut s = self.lock();
        if s.media.get(alias).is_some_and(|r| r.alias_of == Some(*target)) {
            s.media.remove(alias);
        }
        Ok(())
    }
    async fn set_ref_count(&self, hash: &Sha256Hash, seen: i64, actual: i64, now: &str) -> Result<bool, StoreError> {
        let mut s = self.lock();
        match s.media.get_mut(hash) {
            Some(r) if r.ref_count == seen => {
                r.ref_count = actual;
                r.updated_at = Some(now.into());
                Ok(true)
            }
            _ => Ok(false),
        }
    }
    async fn scan_all(&self) -> Result<Vec<MediaRecord>, StoreError> {
        Ok(self.lock().media.values().cloned().collect())
    }
}

#[async_trait]
impl DeckIndex for MemoryStore {
    async fn resolve(&self, deck: &str, filenames: &[String]) -> Result<HashMap<String, Sha256Hash>, StoreError> {
        let s = self.lock();
        Ok(filenames
            .iter()
            .filter_map(|f| Some((f.clone(), s.decks.get(&(deck.to_string(), f.clone()))?.0.resolved()?)))
            .collect())
    }
    async fn page(&self, deck: &str, after: Option<&str>, limit: usize) -> Result<DeckPage, StoreError> {
        let s = self.lock();
        let mut entries: Vec<DeckEntry> = s
            .decks
            .iter()
            .filter(|((d, f), _)| d == deck && after.is_none_or(|a| f.as_str() > a))
            .filter_map(|((_, f), (v, _))| {
                Some(DeckEntry { filename: f.clone(), hash: v.resolved()?, notes: v.notes() })
            })
            .take(limit + 1)
            .collect();
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next_after = if more { entries.last().map(|e| e.filename.clone()) } else { None };
        Ok(DeckPage { entries, next_after })
    }
    async fn file_notes(&self, deck: &str, filename: &str) -> Result<i64, StoreError> {
        Ok(self.lock().decks.get(&(deck.to_string(), filename.to_string())).map_or(0, |(v, _)| v.notes()))
    }
    async fn scan_all(&self) -> Result<Vec<DeckFile>, StoreError> {
        let s = self.lock();
        Ok(s.decks
            .iter()
            .filter_map(|((deck, filename), (v, updated_at))| {
                Some(DeckFile {
                    deck: deck.clone(),
                    filename: filename.clone(),
                    hash: v.resolved()?,
                    notes: v.notes(),
                    updated_at: Some(updated_at.clone()),
                })
            })
            .collect())
    }
}

#[async_trait]
impl ReferenceStore for MemoryStore {
    async fn note_refs(&self, deck: &str, note_id: &str) -> Result<BTreeMap<String, Sha256Hash>, StoreError> {
        let s = self.lock();
        Ok(s.refs
            .iter()
            .filter(|((d, n, _), _)| d == deck && n == note_id)
            .map(|((_, _, f), h)| (f.clone(), *h))
            .collect())
    }
    async fn commit(&self, deck: &str, note_id: &str, step: &Step, now: &str) -> Result<Commit, StoreError> {
        let mut s = self.lock();
        // Check every condition first: all or nothing, like a transaction.
        for op in &step.ops {
            let key = (deck.to_string(), note_id.to_string(), op.filename().to_string());
            let ok = match op {
                RefOp::Add { .. } => !s.refs.contains_key(&key),
                RefOp::Remove { hash, .. } => s.refs.get(&key) == Some(hash),
                RefOp::Change { from, .. } => s.refs.get(&key) == Some(from),
            };
            if !ok {
                return Ok(Commit::Conflict);
            }
        }
        for (hash, delta) in &step.media {
            let r = s.media.get(hash);
            if *delta > 0 && r.is_some_and(|r| r.status == MediaStatus::Deleting || r.alias_of.is_some()) {
                return Ok(Commit::Deleting);
            }
            if *delta < 0 && r.is_none_or(|r| r.ref_count < -delta) {
                return Ok(Commit::Conflict);
            }
        }
        for op in &step.ops {
            let key = (deck.to_string(), note_id.to_string(), op.filename().to_string());
            match op {
                RefOp::Add { hash, .. } | RefOp::Change { to: hash, .. } => {
                    s.refs.insert(key, *hash);
                }
                RefOp::Remove { .. } => {
                    s.refs.remove(&key);
                }
            }
        }
        for (hash, delta) in &step.media {
            let r = s.media.entry(*hash).or_insert_with(|| {
                let mut r = MediaRecord::new(*hash, MediaStatus::Missing);
                r.created_at = Some(now.into());
                r
            });
            r.ref_count += delta;
            r.updated_at = Some(now.into());
        }
        for (filename, change) in &step.deck_files {
            let key = (deck.to_string(), filename.clone());
            let (versions, updated_at) = s.decks.entry(key.clone()).or_default();
            versions.apply(change, now);
            *updated_at = now.to_string();
            if versions.notes() <= 0 {
                s.decks.remove(&key);
            }
        }
        Ok(Commit::Done)
    }
    async fn file_refs(&self, deck: &str, filename: &str) -> Result<Vec<NoteRef>, StoreError> {
        let s = self.lock();
        Ok(s.refs
            .iter()
            .filter(|((d, _, f), _)| d == deck && f == filename)
            .map(|((_, n, f), h)| NoteRef { note_id: n.clone(), filename: f.clone(), hash: *h })
            .collect())
    }
    async fn count_all(&self) -> Result<BTreeMap<Sha256Hash, i64>, StoreError> {
        let mut out = BTreeMap::new();
        for h in self.lock().refs.values() {
            *out.entry(*h).or_default() += 1;
        }
        Ok(out)
    }
}

#[async_trait]
impl BlobStore for MemoryStore {
    async fn read(&self, key: &str, max: u64) -> Result<Option<ReadBlob>, StoreError> {
        Ok(self.lock().blobs.get(key).map(|(b, _)| {
            if b.len() as u64 > max {
                ReadBlob::TooLarge(b.len() as u64)
            } else {
                ReadBlob::Bytes(b.clone())
            }
        }))
    }
    async fn put(&self, key: &str, bytes: Vec<u8>, content_type: &str, _cc: Option<&str>) -> Result<(), StoreError> {
        self.lock().blobs.insert(key.into(), (bytes, content_type.into()));
        Ok(())
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.lock().blobs.remove(key);
        Ok(())
    }
    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.lock().blobs.contains_key(key))
    }
    async fn verified_sha256(&self, key: &str) -> Result<Option<Sha256Hash>, StoreError> {
        Ok(self.lock().blobs.get(key).map(|(b, _)| Sha256Hash::of(b)))
    }
    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(self
            .lock()
            .blobs
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, (b, _))| (k.clone(), b.len() as u64))
            .collect())
    }
}

#[async_trait]
impl QuotaStore for MemoryStore {
    async fn reserve(&self, hold: &Hold, now: &str, max_bytes: u64, max_files: u64) -> Result<Reserve, StoreError> {
        let mut s = self.lock();
        let id = (hold.user.clone(), hold.day.clone(), hold.hash);
        if let Some((held, issued)) = s.holds.get_mut(&id) {
            if issued.is_some() {
                if *held != hold.bytes {
                    return Ok(Reserve::OtherSize { held: *held });
                }
                *issued = Some(now.to_string());
            }
            return Ok(Reserve::AlreadyHeld);
        }
        let (bytes, files) = s.usage.get(&(hold.user.clone(), hold.day.clone())).copied().unwrap_or((0, 0));
        if bytes + hold.bytes > max_bytes || files + 1 > max_files {
            return Ok(Reserve::Exceeded);
        }
        s.usage.insert((hold.user.clone(), hold.day.clone()), (bytes + hold.bytes, files + 1));
        s.holds.insert(id, (hold.bytes, Some(now.to_string())));
        Ok(Reserve::Granted)
    }
    async fn release(&self, hold: &Hold) -> Result<(), StoreError> {
        let mut s = self.lock();
        let id = (hold.user.clone(), hold.day.clone(), hold.hash);
        if s.holds.get(&id).is_some_and(|(_, issued)| issued.is_some()) {
            s.holds.remove(&id);
            if let Some((bytes, files)) = s.usage.get_mut(&(hold.user.clone(), hold.day.clone())) {
                *bytes -= hold.bytes;
                *files -= 1;
            }
        }
        Ok(())
    }
    async fn settle(&self, hash: &Sha256Hash, outcome: Settlement) -> Result<usize, StoreError> {
        let mut s = self.lock();
        let pending: Vec<_> = s
            .holds
            .iter()
            .filter(|((_, _, h), (_, issued))| h == hash && issued.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        for id in &pending {
            match outcome {
                Settlement::Stored => {
                    if let Some((_, issued)) = s.holds.get_mut(id) {
                        *issued = None;
                    }
                }
                Settlement::Rejected => {
                    let (bytes, _) = s.holds.remove(id).unwrap_or_default();
                    if let Some((used, _)) = s.usage.get_mut(&(id.0.clone(), id.1.clone())) {
                        *used -= bytes;
                    }
                }
            }
        }
        Ok(pending.len())
    }
    async fn release_unused(&self, issued_before: &str) -> Result<usize, StoreError> {
        let stale: Vec<Hold> = self
            .lock()
            .holds
            .iter()
            .filter(|(_, (_, issued))| issued.as_deref().is_some_and(|t| t < issued_before))
            .map(|((user, day, hash), (bytes, _))| Hold {
                user: user.clone(),
                day: day.clone(),
                hash: *hash,
                bytes: *bytes,
            })
            .collect();
        for hold in &stale {
            self.release(hold).await?;
        }
        Ok(stale.len())
    }
    async fn usage(&self, user: &str, day: &str) -> Result<(u64, u64), StoreError> {
        Ok(self.lock().usage.get(&(user.to_string(), day.to_string())).copied().unwrap_or((0, 0)))
    }
}

/// The Postgres mirror in memory: rows and the last applied sequence number per item.
#[derive(Default)]
pub struct MemoryMirror(pub Mutex<Snapshot>);

impl MemoryMirror {
    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Sequence numbers are decimal digits of varying length; compare them as numbers.
fn seq_order(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    (a.len(), a).cmp(&(b.len(), b))
}

fn write(snapshot: &mut Snapshot, key: &Key, row: Option<&Row>) {
    match row {
        Some(row) => snapshot.rows.insert(key.clone(), row.clone()),
        None => snapshot.rows.remove(key),
    };
}

#[async_trait]
impl Mirror for MemoryMirror {
    async fn migrate(&self) -> Result<(), StoreError> {
        Ok(())
    }
    async fn apply(&self, change: &Change) -> Result<bool, StoreError> {
        let mut s = self.lock();
        let item = change.key.item();
        if s.versions.get(&item).is_some_and(|seen| seq_order(seen, &change.seq).is_ge()) {
            return Ok(false);
        }
        s.versions.insert(item, change.seq.clone());
        write(&mut s, &change.key, change.row.as_ref());
        Ok(true)
    }
    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        Ok(self.lock().clone())
    }
    async fn repair(&self, key: &Key, seen: Option<&str>, row: Option<&Row>) -> Result<bool, StoreError> {
        let mut s = self.lock();
        let item = key.item();
        if s.versions.get(&item).map_or("0", String::as_str) != seen.unwrap_or("0") {
            return Ok(false);
        }
        // As in Postgres, a repaired item has version 0: below every real sequence number.
        s.versions.entry(item).or_insert_with(|| "0".into());
        write(&mut s, key, row);
        Ok(true)
    }
    async fn resolve_deck_ids(&self) -> Result<u64, StoreError> {
        // No AnkiCollab decks here: nothing to resolve.
        Ok(0)
    }
}
