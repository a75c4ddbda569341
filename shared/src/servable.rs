//! What a download answers for a hash, and this instance's memory of the ready ones.
//!
//! A whole-deck download used to read and parse every media record of the deck on every request
//! (most of its CPU, and one read unit per file). A ready record's download fields (stored key,
//! stored hash, size, type) do not change while it stays ready: processing settles and skips a
//! hash that is ready already, and nothing else writes them. They change only if the sweep
//! deletes the record and the hash is referenced or uploaded again. So an instance may remember
//! them for a while, under one rule that makes the memory never disagree with the records:
//!
//! * a record is remembered only after a consistent read of the deck index found the hash
//!   referenced, stamped with a time taken before that read (`read_from`);
//! * the sweep deletes only what has been unreferenced *and unchanged* for its grace period, and
//!   removing a reference changes the record (the same transaction sets `updated_at`);
//! * so a record remembered at `read_from` cannot change before `read_from + grace`: it would have
//!   to lose its last reference after the deck read and then stay unchanged for the whole grace.
//!   A memory is used only while `read_from + ttl` is still ahead, and the sweep's grace is never
//!   less than `ttl` ([`crate::config::Config::min_sweep_grace`], enforced in
//!   [`crate::lifecycle::sweep`]).
//!
//! Pending, rejected and missing records are never remembered: they are read every time. The
//! model test below checks the rule over random histories of uploads, conversions, references,
//! sweeps, time and several instances.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

use crate::error::StoreError;
use crate::hash::Sha256Hash;
use crate::model::{MediaRecord, MediaStatus};
use crate::store::{lookup, MediaRepo};

/// What a download serves of a ready record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Servable {
    pub stored_key: String,
    /// SHA-256 of the bytes served.
    pub stored_hash: Sha256Hash,
    pub size: u64,
    pub content_type: String,
}

/// What a download answers for one hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Ready(Arc<Servable>),
    /// Not servable, with the reason code the answer gives.
    Unavailable(&'static str),
}

impl Found {
    /// What the record says (`None`: there is no record).
    pub fn of(record: Option<&MediaRecord>) -> Self {
        match record {
            Some(r @ MediaRecord { status: MediaStatus::Ready, stored_key: Some(key), .. }) => {
                Found::Ready(Arc::new(Servable {
                    stored_key: key.clone(),
                    stored_hash: r.stored_hash.unwrap_or(r.hash),
                    size: r.stored_size.unwrap_or_default(),
                    content_type: r.content_type.clone().unwrap_or_default(),
                }))
            }
            Some(MediaRecord { status: MediaStatus::Pending, .. }) => Found::Unavailable("pending"),
            Some(MediaRecord { status: MediaStatus::Rejected, .. }) => Found::Unavailable("rejected"),
            _ => Found::Unavailable("missing"),
        }
    }
}

/// This instance's memory of ready records, bounded in time (`READY_CACHE_SECS`) and in entries
/// (`READY_CACHE_ENTRIES`, about 200 bytes each). A `ttl` of zero turns it off.
pub struct ReadyCache {
    ttl: time::Duration,
    max_entries: usize,
    entries: Mutex<HashMap<Sha256Hash, Entry>>,
}

struct Entry {
    servable: Arc<Servable>,
    /// The memory may be used while the deck read it came after started before this.
    until: OffsetDateTime,
}

impl ReadyCache {
    pub fn new(ttl_secs: u64, max_entries: usize) -> Self {
        let ttl = time::Duration::seconds(i64::try_from(ttl_secs).unwrap_or(i64::MAX));
        Self { ttl, max_entries, entries: Mutex::new(HashMap::new()) }
    }

    pub fn off() -> Self {
        Self::new(0, 0)
    }

    fn enabled(&self) -> bool {
        self.ttl.is_positive() && self.max_entries > 0
    }

    /// How many records are remembered now (expired ones included until they are dropped).
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What a download answers for each of `hashes`, which a consistent read of the deck index
    /// that started at `read_from` found referenced; `now` is a time taken after that read.
    /// Remembered ready records are answered from memory; the rest are read (aliases followed,
    /// as [`lookup`] does) and the ready ones remembered.
    pub async fn find(
        &self,
        media: &dyn MediaRepo,
        hashes: &[Sha256Hash],
        read_from: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<HashMap<Sha256Hash, Found>, StoreError> {
        let mut found = HashMap::with_capacity(hashes.len());
        let mut unknown = Vec::new();
        // A memory poisoned by a panic elsewhere is not trusted: everything is read, as with none.
        if let Some(entries) = self.enabled().then(|| self.entries.lock().ok()).flatten() {
            for hash in hashes {
                match entries.get(hash) {
                    Some(e) if now < e.until => {
                        found.insert(*hash, Found::Ready(e.servable.clone()));
                    }
                    _ => unknown.push(*hash),
                }
            }
        } else {
            unknown.extend_from_slice(hashes);
        }
        if unknown.is_empty() {
            return Ok(found);
        }
        let records = lookup(media, &unknown).await?;
        let mut fresh = Vec::new();
        for hash in unknown {
            let answer = Found::of(records.get(&hash));
            if let Found::Ready(s) = &answer {
                fresh.push((hash, s.clone()));
            }
            found.insert(hash, answer);
        }
        self.remember(fresh, read_from + self.ttl, now);
        Ok(found)
    }

    fn remember(&self, fresh: Vec<(Sha256Hash, Arc<Servable>)>, until: OffsetDateTime, now: OffsetDateTime) {
        if !self.enabled() || fresh.is_empty() || until <= now {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else { return };
        for (hash, servable) in fresh {
            if entries.len() >= self.max_entries && !entries.contains_key(&hash) {
                // Full: drop what has run out; if that is not enough, start again (simple, and
                // memory stays bounded whatever the decks are).
                entries.retain(|_, e| now < e.until);
                if entries.len() >= self.max_entries {
                    entries.clear();
                }
            }
            entries.insert(hash, Entry { servable, until });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::MediaRepo;

    fn t(secs: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_800_000_000 + secs)
    }

    async fn ready(store: &MemoryStore, bytes: &[u8]) -> Sha256Hash {
        let hash = Sha256Hash::of(bytes);
        store.ensure_record(&hash, "2027-01-01T00:00:00Z").await.unwrap();
        let stored = crate::model::StoredMedia {
            stored_key: format!("media/{hash}"),
            thumb_key: None,
            content_type: "image/webp".into(),
            size: 10,
            stored_size: 7,
            stored_hash: Sha256Hash::of(b"converted"),
            width: None,
            height: None,
            duration_ms: None,
        };
        assert!(store.mark_ready(&hash, &stored, "2027-01-01T00:00:00Z").await.unwrap());
        hash
    }

    /// Ready records are remembered until `read_from + ttl` and no later; other records are never
    /// remembered; a full cache stays within its bound.
    #[tokio::test]
    async fn remembers_ready_records_for_the_ttl_only() {
        let store = MemoryStore::default();
        let (a, b) = (ready(&store, b"a").await, ready(&store, b"b").await);
        let pending = Sha256Hash::of(b"p");
        store.ensure_record(&pending, "2027-01-01T00:00:00Z").await.unwrap();
        let cache = ReadyCache::new(60, 2);
        let found = cache.find(&store, &[a, pending], t(0), t(1)).await.unwrap();
        assert!(matches!(&found[&a], Found::Ready(s) if s.size == 7 && s.content_type == "image/webp"));
        assert_eq!(found[&pending], Found::Unavailable("pending"));
        assert_eq!(cache.len(), 1, "only the ready record");

        // The record goes: memory answers until the ttl from the deck read, then the record does.
        store.begin_delete(&a, Some("2027-01-01T00:00:00Z"), "x", "y").await.unwrap();
        let found = cache.find(&store, &[a], t(5), t(59)).await.unwrap();
        assert!(matches!(found[&a], Found::Ready(_)), "remembered");
        let found = cache.find(&store, &[a], t(60), t(60)).await.unwrap();
        assert_eq!(found[&a], Found::Unavailable("missing"), "run out: read again");

        // Bounded: a third ready record in a cache of two.
        let c = ready(&store, b"c").await;
        cache.find(&store, &[b], t(100), t(100)).await.unwrap();
        cache.find(&store, &[c], t(100), t(100)).await.unwrap();
        let d = ready(&store, b"d").await;
        cache.find(&store, &[d], t(100), t(100)).await.unwrap();
        assert!(cache.len() <= 2, "{}", cache.len());

        let off = ReadyCache::off();
        off.find(&store, &[b], t(0), t(0)).await.unwrap();
        assert!(off.is_empty());
    }

    mod model {
        //! The invariant the cache rests on, as a model-based test: after any history of
        //! uploads (converted, refused, left pending), references added, moved and removed,
        //! sweeps with any grace asked for, time passing, and downloads through several
        //! instances, what an instance answers equals what an instance without memory answers
        //! at the same moment (what the records say), and every URL it gives names an object
        //! that is there.

        use std::sync::Arc;

        use proptest::prelude::*;
        use serde_json::json;
        use time::OffsetDateTime;

        use crate::app::App;
        use crate::auth::Principal;
        use crate::clock::now_rfc3339;
        use crate::downloads::{presign_downloads, DownloadRequest};
        use crate::hash::Sha256Hash;
        use crate::servable::ReadyCache;
        use crate::store::memory::MemoryStore;
        use crate::store::refs::ReferenceStore;
        use crate::store::{BlobStore, MediaRepo, PendingUpload};

        const TTL: u64 = 60;
        // Few of each, so that histories often meet the same file again.
        const FILES: usize = 3;
        const DECKS: usize = 2;
        const NAMES: usize = 2;

        #[derive(Debug, Clone)]
        enum Op {
            /// Upload a file and process it (PNGs convert to WebP; the last file is refused).
            Upload(usize),
            /// Ask for an upload URL and never use it: the record is pending.
            Begin(usize),
            /// A note of a deck uses a file under a name; `converted` references the hash of
            /// the converted bytes, as a client that downloaded them would.
            Refer {
                deck: usize,
                note: usize,
                name: usize,
                file: usize,
                converted: bool,
            },
            Unrefer {
                deck: usize,
                note: usize,
            },
            /// A sweep asking for this grace (seconds); it may be raised.
            Sweep(u64),
            /// A note's files taken out, a sweep asking for this grace, and the files put back
            /// (a maintainer's undo around the hourly sweep): the history the rule is for.
            Undo {
                deck: usize,
                note: usize,
                grace: u64,
            },
            Wait(u64),
            Download {
                instance: usize,
                deck: usize,
                by_name: bool,
            },
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                2 => (0..FILES).prop_map(Op::Upload),
                1 => (0..FILES).prop_map(Op::Begin),
                4 => (0..DECKS, 0..2usize, 0..NAMES, 0..FILES, any::<bool>())
                    .prop_map(|(deck, note, name, file, converted)| Op::Refer { deck, note, name, file, converted }),
                2 => (0..DECKS, 0..2usize).prop_map(|(deck, note)| Op::Unrefer { deck, note }),
                2 => grace().prop_map(Op::Sweep),
                2 => (0..DECKS, 0..2usize, grace()).prop_map(|(deck, note, grace)| Op::Undo { deck, note, grace }),
                3 => prop_oneof![Just(0), Just(1), Just(TTL / 2), Just(TTL - 1), Just(TTL), Just(3 * TTL)]
                    .prop_map(Op::Wait),
                5 => (0..2usize, 0..DECKS, any::<bool>())
                    .prop_map(|(instance, deck, by_name)| Op::Download { instance, deck, by_name }),
            ]
        }

        fn grace() -> impl Strategy<Value = u64> {
            prop_oneof![Just(0), Just(TTL / 2), Just(TTL), Just(2 * TTL)]
        }

        fn file(i: usize) -> Vec<u8> {
            if i == FILES - 1 {
                b"not an image at all".to_vec()
            } else {
                crate::scenarios::png(9000 + i)
            }
        }

        fn instance(store: &Arc<MemoryStore>, ttl: u64) -> App {
            let mut app = App::in_memory_over(store.clone(), "model");
            app.config.ready_cache_secs = ttl;
            app.ready = ReadyCache::new(ttl, 1000);
            app
        }

        async fn download(app: &App, deck: usize, by_name: bool, now: OffsetDateTime) -> serde_json::Value {
            let who = Principal::for_tests("u", "download", 0);
            let filenames = by_name.then(|| (0..NAMES).map(|n| format!("f{n}.png")).collect());
            let req = DownloadRequest { deck: format!("d{deck}"), filenames, cursor: None };
            let answer = presign_downloads(&app.downloads(), &who, req, now).await.expect("a download answer");
            serde_json::to_value(answer).expect("json")
        }

        /// What `POST /v1/references` does for one note: it now uses exactly `files`.
        async fn set_note(app: &App, deck: usize, note: usize, files: &[(String, Sha256Hash)], now: OffsetDateTime) {
            let media: Vec<_> =
                files.iter().map(|(name, hash)| json!({"filename": name, "hash": hash.to_hex()})).collect();
            let req = json!({"deck": format!("d{deck}"), "notes": [{"note_id": format!("n{note}"), "media": media}]});
            let req = serde_json::from_value(req).expect("a request");
            let who = Principal::for_tests("backend", "references", 0);
            crate::references::apply_references(&*app.refs, &*app.media, &who, req, now).await.expect("referenced");
        }

        async fn sweep(app: &App, store: &MemoryStore, grace: u64, now: OffsetDateTime) -> Result<(), TestCaseError> {
            let report =
                crate::lifecycle::sweep(&app.lifecycle(store), now, time::Duration::seconds(grace as i64)).await;
            let report = report.expect("swept");
            prop_assert!(report.grace_seconds >= TTL as i64, "{report:?}");
            Ok(())
        }

        async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
            let store = Arc::new(MemoryStore::default());
            // Two API instances that remember, and one that does not: the records' word.
            let instances: Vec<App> = (0..2).map(|_| instance(&store, TTL)).collect();
            let truth = instance(&store, 0);
            // The sweeper shares the API's setting, as the template's Globals make it.
            let sweeper = &instances[0];
            let mut now = OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_800_000_000);
            let mut converted = std::collections::HashMap::new();
            for op in ops {
                let at = now_rfc3339(now);
                match op {
                    Op::Upload(i) => {
                        let bytes = file(i);
                        let hash = Sha256Hash::of(&bytes);
                        crate::process::process_bytes(&sweeper.processing(&*store), hash, bytes, now)
                            .await
                            .expect("processed");
                        if let Some(s) = store.get(&hash).await.expect("read").and_then(|r| r.stored_hash) {
                            converted.insert(i, s);
                        }
                    }
                    Op::Begin(i) => {
                        let (hash, size) = (Sha256Hash::of(&file(i)), file(i).len() as u64);
                        let expires = now_rfc3339(now + time::Duration::minutes(15));
                        let pending = PendingUpload { hash, size, uploader: "u", expires_at: &expires, now: &at };
                        store.begin_upload(&pending).await.expect("begin");
                    }
                    Op::Refer { deck, note, name, file: i, converted: c } => {
                        let hash = match (c, converted.get(&i)) {
                            (true, Some(s)) => *s,
                            _ => Sha256Hash::of(&file(i)),
                        };
                        set_note(sweeper, deck, note, &[(format!("f{name}.png"), hash)], now).await;
                    }
                    Op::Unrefer { deck, note } => set_note(sweeper, deck, note, &[], now).await,
                    Op::Sweep(grace) => sweep(sweeper, &store, grace, now).await?,
                    Op::Undo { deck, note, grace } => {
                        let had = store.note_refs(&format!("d{deck}"), &format!("n{note}")).await.expect("refs");
                        let had: Vec<(String, Sha256Hash)> = had.into_iter().collect();
                        set_note(sweeper, deck, note, &[], now).await;
                        sweep(sweeper, &store, grace, now).await?;
                        set_note(sweeper, deck, note, &had, now).await;
                    }
                    Op::Wait(secs) => now += time::Duration::seconds(secs as i64),
                    Op::Download { instance, deck, by_name } => {
                        let answer = download(&instances[instance], deck, by_name, now).await;
                        let records_say = download(&truth, deck, by_name, now).await;
                        prop_assert_eq!(&answer, &records_say);
                        for f in answer["files"].as_array().into_iter().flatten() {
                            let url = f["url"].as_str().unwrap_or_default();
                            let key = url.split('?').next().and_then(|u| u.split(".amazonaws.com/").nth(1));
                            let key = key.unwrap_or_default();
                            prop_assert!(store.exists(key).await.expect("exists"), "{key} is gone: {answer}");
                        }
                    }
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
            #[test]
            fn downloads_answer_what_the_records_say(ops in proptest::collection::vec(op(), 1..48)) {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
                rt.block_on(run(ops))?;
            }
        }

        /// The history the rule is for, written out: a file referenced, downloaded (remembered),
        /// unreferenced, swept at once, referenced again and downloaded within the cache's
        /// time. The sweep may not delete it before the memory runs out.
        #[tokio::test]
        async fn a_sweep_cannot_delete_what_an_instance_remembers() {
            let ops = vec![
                Op::Upload(0),
                Op::Refer { deck: 0, note: 0, name: 0, file: 0, converted: false },
                Op::Download { instance: 1, deck: 0, by_name: false },
                Op::Unrefer { deck: 0, note: 0 },
                Op::Sweep(0),
                Op::Wait(TTL - 1),
                Op::Sweep(0),
                Op::Refer { deck: 0, note: 0, name: 0, file: 0, converted: false },
                Op::Download { instance: 1, deck: 0, by_name: false },
                Op::Download { instance: 1, deck: 0, by_name: true },
            ];
            run(ops).await.expect("the invariant holds");
        }
    }
}
