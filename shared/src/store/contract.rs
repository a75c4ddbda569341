//! One contract per storage trait: what every implementation must do, written once and run
//! against the in-memory store (this crate's unit tests) and against the DynamoDB, S3 and
//! Postgres adapters on the local stack (`tests/e2e/contracts.rs`), so that the fake the logic is
//! tested with cannot drift from the stores it stands for.
//!
//! Each contract works on hashes, decks, users and keys of its own, so it can run beside other
//! tests on a shared stack; whole-table reads are filtered to what it made. A broken promise
//! panics with what was expected; a store that fails answers its error.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use time::OffsetDateTime;

use super::mirror::{Change, FileRow, Key, Mirror, Row, StoredRow};
use super::refs::{Commit, NoteRef, RefOp, ReferenceStore, Step};
use super::*;
use crate::model::MediaStatus;

/// Names no other run, test or contract has used.
struct Fresh(String);

impl Fresh {
    fn new(tag: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let seed = Sha256Hash::of(format!("{tag} {nanos} {} {n}", std::process::id()).as_bytes());
        Self(format!("{tag}-{}", &seed.to_hex()[..12]))
    }
    fn hash(&self, i: u32) -> Sha256Hash {
        Sha256Hash::of(format!("{} {i}", self.0).as_bytes())
    }
    fn name(&self) -> &str {
        &self.0
    }
}

/// Times a second apart, starting now, as records store them; the contracts need them to be in
/// order, and near enough to now that a grace-period sweep on a shared stack leaves them alone.
struct Ticks(OffsetDateTime);

impl Ticks {
    fn new() -> Self {
        Self(OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or(OffsetDateTime::now_utc()))
    }
    fn next(&mut self) -> String {
        self.0 += time::Duration::SECOND;
        crate::clock::now_rfc3339(self.0)
    }
}

fn stored(hash: &Sha256Hash) -> StoredMedia {
    StoredMedia {
        stored_key: format!("media/{hash}"),
        thumb_key: Some(format!("thumbs/{hash}.webp")),
        content_type: "image/webp".into(),
        size: 1000,
        stored_size: 600,
        stored_hash: Sha256Hash::of(hash.as_bytes()),
        width: Some(640),
        height: Some(480),
        duration_ms: None,
    }
}

async fn record(repo: &dyn MediaRepo, hash: &Sha256Hash) -> Result<MediaRecord, StoreError> {
    let found = repo.get(hash).await?;
    Ok(found.unwrap_or_else(|| panic!("{hash} has no record")))
}

/// Media records: uploads begin on what may be uploaded and only there, readiness and rejection
/// never undo what they must not, aliases, and the sweeper's guarded deletion.
pub async fn media_repo(repo: &dyn MediaRepo) -> Result<(), StoreError> {
    let ids = Fresh::new("media");
    let mut t = Ticks::new();
    let [a, b, c, d, e, f, g, h] = [0, 1, 2, 3, 4, 5, 6, 7].map(|i| ids.hash(i));

    assert_eq!(repo.get(&a).await?, None);
    assert!(repo.get_many(&[a, b]).await?.is_empty());

    // A new upload, and the same hash asked for again (with another size) while pending.
    let t1 = t.next();
    assert_eq!(repo.begin_upload(&begin(a, 10, &t1)).await?, BeginUpload::Started);
    let r = record(repo, &a).await?;
    assert_eq!((r.status, r.size, r.ref_count), (MediaStatus::Pending, Some(10), 0));
    assert_eq!((r.uploader.as_deref(), r.upload_expires_at.as_deref()), (Some("contract"), Some("x")));
    assert_eq!((r.created_at.as_deref(), r.updated_at.as_deref()), (Some(t1.as_str()), Some(t1.as_str())));
    let t2 = t.next();
    assert_eq!(repo.begin_upload(&begin(a, 1000, &t2)).await?, BeginUpload::Started);
    let r = record(repo, &a).await?;
    assert_eq!((r.size, r.created_at.as_deref()), (Some(1000), Some(t1.as_str())), "created once");

    // Another user asking for it while the first user's URL is valid gets a URL of its own and
    // changes nothing of the record (a wrong size there would fail the first user's upload);
    // once that URL has expired, the other user's request takes the record over.
    let (t_other, t_later) = (t.next(), t.next());
    let other = |hash, size, expires_at, now| PendingUpload { hash, size, uploader: "someone-else", expires_at, now };
    assert_eq!(repo.begin_upload(&other(a, 7, &t_later, &t_other)).await?, BeginUpload::Shared);
    let r = record(repo, &a).await?;
    assert_eq!((r.size, r.uploader.as_deref()), (Some(1000), Some("contract")), "left as declared");
    let lapsed = ids.hash(20);
    let (t_first, t_expired, t_after) = (t.next(), t.next(), t.next());
    let first = PendingUpload { hash: lapsed, size: 5, uploader: "contract", expires_at: &t_expired, now: &t_first };
    assert_eq!(repo.begin_upload(&first).await?, BeginUpload::Started);
    assert_eq!(repo.begin_upload(&other(lapsed, 6, &t_later, &t_after)).await?, BeginUpload::Started);
    let r = record(repo, &lapsed).await?;
    assert_eq!((r.size, r.uploader.as_deref()), (Some(6), Some("someone-else")), "taken over once expired");

    // Ready: the stored form is recorded, the upload's bookkeeping goes, and it stays ready.
    let t3 = t.next();
    assert!(repo.mark_ready(&a, &stored(&a), &t3).await?);
    let ready = record(repo, &a).await?;
    let s = stored(&a);
    assert_eq!(ready.status, MediaStatus::Ready);
    assert_eq!(ready.stored_key.as_deref(), Some(s.stored_key.as_str()));
    assert_eq!(ready.thumb_key, s.thumb_key);
    assert_eq!(ready.content_type.as_deref(), Some("image/webp"));
    assert_eq!((ready.size, ready.stored_size, ready.stored_hash), (Some(1000), Some(600), Some(s.stored_hash)));
    assert_eq!((ready.width, ready.height), (Some(640), Some(480)));
    assert_eq!((ready.reason, ready.upload_expires_at.as_deref()), (None, None));
    assert_eq!(ready.updated_at.as_deref(), Some(t3.as_str()));
    assert_eq!(repo.begin_upload(&begin(a, 1000, &t.next())).await?, BeginUpload::AlreadyReady);
    repo.mark_rejected(&a, RejectReason::CorruptMedia, &t.next()).await?;
    assert_eq!(record(repo, &a).await?, ready, "a ready record is never downgraded");

    // What answers use comes back from the batched read as from the single one.
    let many = repo.get_many(&[a, a, b]).await?;
    assert_eq!(many.len(), 1, "one record per hash, none for a hash without one");
    let m = &many[&a];
    assert_eq!(
        (m.status, m.size, m.stored_size, &m.content_type),
        (ready.status, ready.size, ready.stored_size, &ready.content_type)
    );
    assert_eq!((&m.stored_key, &m.thumb_key, m.stored_hash), (&ready.stored_key, &ready.thumb_key, ready.stored_hash));
    assert_eq!((m.width, m.height, m.reason, m.alias_of), (ready.width, ready.height, None, None));

    // Audio: a duration and no pixels, through both reads.
    assert_eq!(repo.begin_upload(&begin(h, 1000, &t.next())).await?, BeginUpload::Started);
    let clip = StoredMedia {
        thumb_key: None,
        content_type: "audio/mpeg".into(),
        width: None,
        height: None,
        duration_ms: Some(2612),
        ..stored(&h)
    };
    assert!(repo.mark_ready(&h, &clip, &t.next()).await?);
    let r = record(repo, &h).await?;
    assert_eq!((r.duration_ms, r.width), (Some(2612), None));
    assert_eq!(repo.get_many(&[h]).await?[&h].duration_ms, Some(2612));
    assert_eq!(ready.duration_ms, None, "images have none");

    // Rejections: a retryable one lets the hash be uploaded again; a final one does not.
    assert_eq!(repo.begin_upload(&begin(b, 5, &t.next())).await?, BeginUpload::Started);
    for reason in RejectReason::RETRYABLE {
        repo.mark_rejected(&b, reason, &t.next()).await?;
        let r = record(repo, &b).await?;
        assert_eq!((r.status, r.reason), (MediaStatus::Rejected, Some(reason)));
        assert_eq!(repo.begin_upload(&begin(b, 5, &t.next())).await?, BeginUpload::Started, "{reason} allows a retry");
        assert_eq!(record(repo, &b).await?.reason, None, "a new upload clears the old reason");
    }
    let t4 = t.next();
    repo.mark_rejected(&b, RejectReason::UnsupportedType, &t4).await?;
    assert_eq!(record(repo, &b).await?.updated_at.as_deref(), Some(t4.as_str()));
    assert_eq!(repo.begin_upload(&begin(b, 5, &t.next())).await?, BeginUpload::Rejected(RejectReason::UnsupportedType));
    assert_eq!(record(repo, &b).await?.status, MediaStatus::Rejected, "a refused upload changes nothing");

    // A rejection of a hash without a record (its record was swept) creates one.
    let t5 = t.next();
    repo.mark_rejected(&c, RejectReason::TooManyPixels, &t5).await?;
    let r = record(repo, &c).await?;
    assert_eq!((r.status, r.reason, r.ref_count), (MediaStatus::Rejected, Some(RejectReason::TooManyPixels), 0));
    assert_eq!((r.created_at.as_deref(), r.updated_at.as_deref()), (Some(t5.as_str()), Some(t5.as_str())));

    // Bytes without a record never turn ready.
    assert!(!repo.mark_ready(&g, &stored(&g), &t.next()).await?);
    assert_eq!(repo.get(&g).await?, None);

    // An upload that outlived its record gets one; an existing record is left as it is.
    let t6 = t.next();
    let made = repo.ensure_record(&d, &t6).await?.expect("ensure_record answers the record");
    assert_eq!((made.status, made.ref_count, made.created_at.as_deref()), (MediaStatus::Pending, 0, Some(t6.as_str())));
    assert_eq!(repo.ensure_record(&a, &t.next()).await?, Some(ready.clone()));

    // Aliases: the hash of converted bytes resolves to its original, unless it has a record of its own.
    let t7 = t.next();
    repo.put_alias(&e, &a, &t7).await?;
    let alias = record(repo, &e).await?;
    assert_eq!(
        (alias.status, alias.alias_of, alias.created_at.as_deref()),
        (MediaStatus::Ready, Some(a), Some(t7.as_str()))
    );
    repo.put_alias(&a, &e, &t.next()).await?;
    assert_eq!(record(repo, &a).await?, ready, "a record of its own is never made an alias");
    assert_eq!(repo.begin_upload(&begin(e, 5, &t.next())).await?, BeginUpload::AlreadyReady);
    let looked_up = lookup(repo, &[e]).await?;
    assert_eq!(looked_up[&e].stored_key, ready.stored_key, "lookup follows the alias");
    repo.delete_alias(&e, &b).await?;
    assert!(repo.get(&e).await?.is_some(), "an alias of another target stays");

    // The sweeper's side: only unreferenced records (never aliases), guarded by what it saw.
    let unreferenced: Vec<Sha256Hash> = repo.unreferenced().await?.into_iter().map(|r| r.hash).collect();
    for (hash, expected) in [(a, true), (b, true), (c, true), (d, true), (e, false)] {
        assert_eq!(unreferenced.contains(&hash), expected, "{hash} unreferenced?");
    }
    let claim = "2099-01-01T00:00:00Z";
    assert!(!repo.begin_delete(&a, Some("not what it was"), &t.next(), claim).await?);
    assert!(!repo.begin_delete(&a, None, &t.next(), claim).await?, "a record with a time was not seen without one");
    assert!(repo.begin_delete(&a, ready.updated_at.as_deref(), &t.next(), claim).await?);
    let deleting = record(repo, &a).await?;
    assert_eq!((deleting.status, deleting.deleting_until.as_deref()), (MediaStatus::Deleting, Some(claim)));
    assert!(!repo.begin_delete(&a, deleting.updated_at.as_deref(), &t.next(), claim).await?, "deleting once");
    // A claim is renewed only while the record is being deleted, and taken back only as it was seen.
    let renewed = "2099-01-01T00:00:10Z";
    assert!(repo.renew_delete(&a, renewed).await?);
    assert_eq!(record(repo, &a).await?.deleting_until.as_deref(), Some(renewed));
    assert!(!repo.take_back(&a, Some(claim), &t.next()).await?, "a renewed claim is not the one seen");
    assert!(!repo.take_back(&a, None, &t.next()).await?);
    assert!(!repo.renew_delete(&b, renewed).await?, "only a record being deleted is claimed");
    assert!(!repo.take_back(&b, None, &t.next()).await?, "only a record being deleted is taken back");
    assert_eq!(repo.begin_upload(&begin(a, 1000, &t.next())).await?, BeginUpload::Busy);
    assert!(!repo.mark_ready(&a, &stored(&a), &t.next()).await?, "a record being deleted never turns ready");
    repo.mark_rejected(&a, RejectReason::CorruptMedia, &t.next()).await?;
    assert_eq!(record(repo, &a).await?.status, MediaStatus::Deleting);
    assert!(repo.finish_delete(&a, &t.next()).await?);
    assert_eq!(repo.get(&a).await?, None);
    repo.delete_alias(&e, &a).await?;
    assert_eq!(repo.get(&e).await?, None);
    assert!(!repo.finish_delete(&b, &t.next()).await?, "only a record being deleted is deleted");
    assert_eq!(record(repo, &b).await?.status, MediaStatus::Rejected);

    // Counts found to drift are set only if they are still what was seen; a referenced record is
    // not deleted; one that gained a reference while being deleted is missing, its bytes gone.
    let t8 = t.next();
    assert!(repo.set_ref_count(&d, 0, 3, &t8).await?);
    let r = record(repo, &d).await?;
    assert_eq!((r.ref_count, r.updated_at.as_deref()), (3, Some(t8.as_str())));
    assert!(!repo.set_ref_count(&d, 0, 5, &t.next()).await?);
    assert!(!repo.begin_delete(&d, r.updated_at.as_deref(), &t.next(), claim).await?, "a referenced record stays");
    assert!(!repo.unreferenced().await?.iter().any(|r| r.hash == d));
    assert_eq!(repo.begin_upload(&begin(f, 5, &t.next())).await?, BeginUpload::Started);
    assert!(repo.mark_ready(&f, &stored(&f), &t.next()).await?);
    let seen = record(repo, &f).await?.updated_at;
    assert!(repo.begin_delete(&f, seen.as_deref(), &t.next(), claim).await?);
    assert!(repo.set_ref_count(&f, 0, 1, &t.next()).await?);
    let t9 = t.next();
    assert!(!repo.finish_delete(&f, &t9).await?);
    let r = record(repo, &f).await?;
    assert_eq!((r.status, r.ref_count, r.updated_at.as_deref()), (MediaStatus::Missing, 1, Some(t9.as_str())));
    assert_eq!((r.stored_key, r.thumb_key), (None, None), "a missing record names no object");
    assert_eq!(
        repo.begin_upload(&begin(f, 5, &t.next())).await?,
        BeginUpload::Started,
        "a missing hash may be uploaded"
    );

    // A deletion abandoned part-way is taken back: missing, naming no object, claimable by no one.
    let i = ids.hash(8);
    assert_eq!(repo.begin_upload(&begin(i, 5, &t.next())).await?, BeginUpload::Started);
    assert!(repo.mark_ready(&i, &stored(&i), &t.next()).await?);
    let seen = record(repo, &i).await?.updated_at;
    assert!(repo.begin_delete(&i, seen.as_deref(), &t.next(), claim).await?);
    let t10 = t.next();
    assert!(repo.take_back(&i, Some(claim), &t10).await?);
    let r = record(repo, &i).await?;
    assert_eq!((r.status, r.updated_at.as_deref(), r.deleting_until), (MediaStatus::Missing, Some(t10.as_str()), None));
    assert_eq!((r.stored_key, r.thumb_key), (None, None));
    assert!(!repo.renew_delete(&i, renewed).await?, "a sweep coming back finds it taken");
    assert!(!repo.finish_delete(&i, &t.next()).await?);
    assert!(!repo.take_back(&i, None, &t.next()).await?, "once");
    assert_eq!(repo.begin_upload(&begin(i, 5, &t.next())).await?, BeginUpload::Started);

    let all: BTreeMap<Sha256Hash, MediaStatus> =
        repo.scan_all().await?.into_iter().filter(|r| ids.owns(&r.hash)).map(|r| (r.hash, r.status)).collect();
    let expected = BTreeMap::from([
        (b, MediaStatus::Rejected),
        (c, MediaStatus::Rejected),
        (d, MediaStatus::Pending),
        (f, MediaStatus::Pending),
        (h, MediaStatus::Ready),
        (i, MediaStatus::Pending),
        (lapsed, MediaStatus::Pending),
    ]);
    assert_eq!(all, expected);

    // The counts set above have no reference items behind them: put them back, so that a shared
    // stack's reconciliation finds no drift this contract made.
    assert!(repo.set_ref_count(&d, 3, 0, &t.next()).await?);
    assert!(repo.set_ref_count(&f, 1, 0, &t.next()).await?);
    Ok(())
}

impl Fresh {
    /// Whether a hash is one of the first hundred this contract made.
    fn owns(&self, hash: &Sha256Hash) -> bool {
        (0..100).any(|i| self.hash(i) == *hash)
    }
}

fn begin(hash: Sha256Hash, size: u64, now: &str) -> PendingUpload<'_> {
    PendingUpload { hash, size, uploader: "contract", expires_at: "x", now }
}

fn add(filename: &str, hash: Sha256Hash) -> RefOp {
    RefOp::Add { filename: filename.into(), hash }
}
fn remove(filename: &str, hash: Sha256Hash) -> RefOp {
    RefOp::Remove { filename: filename.into(), hash }
}

fn step(ops: impl IntoIterator<Item = RefOp>) -> Step {
    let mut step = Step::default();
    for op in ops {
        step.add(op);
    }
    step
}

/// Reference items, the counts they imply and the deck index they drive, committed together or
/// not at all; `media` and `decks` are the stores the same commits write.
pub async fn references(
    refs: &dyn ReferenceStore,
    media: &dyn MediaRepo,
    decks: &dyn DeckIndex,
) -> Result<(), StoreError> {
    let ids = Fresh::new("refs");
    let deck = ids.name();
    let mut t = Ticks::new();
    let [h1, h2, h3, h4, h5, h6, h7] = [0, 1, 2, 3, 4, 5, 6].map(|i| ids.hash(i));
    let count = |hash: Sha256Hash| async move { Ok::<_, StoreError>(media.get(&hash).await?.map(|r| r.ref_count)) };
    let names = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();

    assert!(refs.note_refs(deck, "n1").await?.is_empty());
    let t1 = t.next();
    assert_eq!(refs.commit(deck, "n1", &step([add("a.jpg", h1), add("b.jpg", h2)]), &t1).await?, Commit::Done);
    assert_eq!(refs.note_refs(deck, "n1").await?, BTreeMap::from([("a.jpg".into(), h1), ("b.jpg".into(), h2)]));
    let r = media.get(&h1).await?.expect("a reference creates the record it counts on");
    assert_eq!((r.status, r.ref_count, r.created_at.as_deref()), (MediaStatus::Missing, 1, Some(t1.as_str())));
    assert_eq!(
        decks.resolve(deck, &names(&["a.jpg", "b.jpg", "c.jpg"])).await?,
        HashMap::from([("a.jpg".into(), h1), ("b.jpg".into(), h2)])
    );
    assert_eq!(decks.file_notes(deck, "a.jpg").await?, 1);
    assert_eq!(
        refs.file_refs(deck, "a.jpg").await?,
        vec![NoteRef { note_id: "n1".into(), filename: "a.jpg".into(), hash: h1 }]
    );

    // All or nothing: a step with one stale operation changes nothing at all.
    let stale = step([add("c.jpg", h3), add("a.jpg", h1)]);
    assert_eq!(refs.commit(deck, "n1", &stale, &t.next()).await?, Commit::Conflict);
    assert_eq!(refs.note_refs(deck, "n1").await?.len(), 2);
    assert_eq!(count(h3).await?.unwrap_or(0), 0);
    assert_eq!(decks.file_notes(deck, "c.jpg").await?, 0);
    assert_eq!(
        refs.commit(deck, "n1", &step([remove("a.jpg", h2)]), &t.next()).await?,
        Commit::Conflict,
        "removing another hash"
    );
    assert_eq!(
        refs.commit(deck, "n9", &step([remove("a.jpg", h1)]), &t.next()).await?,
        Commit::Conflict,
        "removing what is not there"
    );

    // Another note uses the same name for other bytes: the name means the most recently added.
    let t2 = t.next();
    assert_eq!(refs.commit(deck, "n2", &step([add("a.jpg", h4)]), &t2).await?, Commit::Done);
    assert_eq!(decks.resolve(deck, &names(&["a.jpg"])).await?["a.jpg"], h4);
    assert_eq!(decks.file_notes(deck, "a.jpg").await?, 2);
    let mut users: Vec<String> = refs.file_refs(deck, "a.jpg").await?.into_iter().map(|r| r.note_id).collect();
    users.sort();
    assert_eq!(users, ["n1", "n2"]);
    let indexed: Vec<DeckFile> = decks.scan_all().await?.into_iter().filter(|f| f.deck == deck).collect();
    let a = indexed.iter().find(|f| f.filename == "a.jpg").expect("a.jpg is indexed");
    assert_eq!((a.hash, a.notes, a.updated_at.as_deref()), (h4, 2, Some(t2.as_str())));
    assert_eq!(refs.commit(deck, "n2", &step([remove("a.jpg", h4)]), &t.next()).await?, Commit::Done);
    assert_eq!(decks.resolve(deck, &names(&["a.jpg"])).await?["a.jpg"], h1, "back to the version still used");
    assert_eq!(count(h4).await?, Some(0));

    // Same name, other bytes.
    let change = RefOp::Change { filename: "b.jpg".into(), from: h2, to: h3 };
    assert_eq!(refs.commit(deck, "n1", &step([change]), &t.next()).await?, Commit::Done);
    assert_eq!(refs.note_refs(deck, "n1").await?["b.jpg"], h3);
    assert_eq!((count(h2).await?, count(h3).await?), (Some(0), Some(1)));
    assert_eq!(decks.resolve(deck, &names(&["b.jpg"])).await?["b.jpg"], h3);
    assert_eq!(decks.file_notes(deck, "b.jpg").await?, 1);

    // A hash being deleted, or an alias, takes no reference; nothing of the step is written.
    let seen = media.ensure_record(&h5, &t.next()).await?.and_then(|r| r.updated_at);
    assert!(media.begin_delete(&h5, seen.as_deref(), &t.next(), "2099-01-01T00:00:00Z").await?);
    let blocked = step([add("e.jpg", h5), add("f.jpg", h7)]);
    assert_eq!(refs.commit(deck, "n3", &blocked, &t.next()).await?, Commit::Deleting);
    media.put_alias(&h6, &h1, &t.next()).await?;
    assert_eq!(refs.commit(deck, "n3", &step([add("e.jpg", h6)]), &t.next()).await?, Commit::Deleting);
    assert!(refs.note_refs(deck, "n3").await?.is_empty());
    assert_eq!(count(h5).await?, Some(0));
    assert_eq!(count(h7).await?, None);
    assert!(media.finish_delete(&h5, &t.next()).await?);
    media.delete_alias(&h6, &h1).await?;

    // Counts never go below zero: a removal the count cannot cover is refused.
    let r = media.get(&h3).await?.expect("h3 is counted");
    assert!(media.set_ref_count(&h3, r.ref_count, 0, &t.next()).await?);
    assert_eq!(refs.commit(deck, "n1", &step([remove("b.jpg", h3)]), &t.next()).await?, Commit::Conflict);
    assert!(media.set_ref_count(&h3, 0, 1, &t.next()).await?);

    // Paging: every used name once, in order, however the pages fall.
    let mut more: Vec<RefOp> = (0..7).map(|i| add(&format!("p{i}.png"), h7)).collect();
    more.push(remove("b.jpg", h3));
    assert_eq!(refs.commit(deck, "n4", &step(more.drain(..7)), &t.next()).await?, Commit::Done);
    assert_eq!(refs.commit(deck, "n1", &step(more), &t.next()).await?, Commit::Done);
    let mut listed = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..10 {
        let page = decks.page(deck, after.as_deref(), 3).await?;
        assert!(page.entries.len() <= 3);
        listed.extend(page.entries.into_iter().map(|e| (e.filename, e.hash, e.notes)));
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let mut expected = vec![("a.jpg".to_string(), h1, 1)];
    expected.extend((0..7).map(|i| (format!("p{i}.png"), h7, 1)));
    assert_eq!(listed, expected, "b.jpg, used by no note, is not listed");
    assert_eq!(decks.file_notes(deck, "b.jpg").await?, 0);
    assert!(decks.resolve(deck, &names(&["b.jpg"])).await?.is_empty());

    let counted = refs.count_all().await?;
    assert_eq!([h1, h2, h3, h7].map(|h| counted.get(&h).copied().unwrap_or(0)), [1, 0, 0, 7]);
    let indexed: BTreeMap<String, i64> =
        decks.scan_all().await?.into_iter().filter(|f| f.deck == deck).map(|f| (f.filename, f.notes)).collect();
    assert_eq!(indexed.len(), 8);
    assert!(!indexed.contains_key("b.jpg"));
    Ok(())
}

/// Daily allowances: charged once per hash and size, given back exactly once, settled by processing.
pub async fn quotas(q: &dyn QuotaStore) -> Result<(), StoreError> {
    let ids = Fresh::new("quota");
    let user = ids.name().to_string();
    let day = "2001-01-01";
    // Holds issued in 2001, so that releasing unused holds touches only this contract's.
    let at = |s: u32| format!("2001-01-01T00:00:{s:02}Z");
    let hold = |user: &str, i: u32, bytes: u64| Hold { user: user.into(), day: day.into(), hash: ids.hash(i), bytes };

    assert_eq!(q.usage(&user, day).await?, (0, 0));
    assert_eq!(q.reserve(&hold(&user, 1, 100), &at(1), 250, 3).await?, Reserve::Granted);
    assert_eq!(q.usage(&user, day).await?, (100, 1));
    assert_eq!(q.reserve(&hold(&user, 1, 100), &at(2), 250, 3).await?, Reserve::AlreadyHeld);
    assert_eq!(q.reserve(&hold(&user, 1, 120), &at(2), 250, 3).await?, Reserve::OtherSize { held: 100 });
    assert_eq!(q.usage(&user, day).await?, (100, 1), "charged once");
    assert_eq!(q.reserve(&hold(&user, 2, 200), &at(2), 250, 3).await?, Reserve::Exceeded);
    assert_eq!(
        q.reserve(&hold(&user, 2, 300), &at(2), 250, 3).await?,
        Reserve::Exceeded,
        "larger than the limit itself"
    );
    assert_eq!(q.reserve(&hold(&user, 2, 150), &at(2), 250, 3).await?, Reserve::Granted);
    assert_eq!(q.usage(&user, day).await?, (250, 2));
    assert_eq!(q.usage(&user, "2001-01-02").await?, (0, 0), "another day");

    // Given back once, however often asked.
    q.release(&hold(&user, 2, 150)).await?;
    q.release(&hold(&user, 2, 150)).await?;
    assert_eq!(q.usage(&user, day).await?, (100, 1));

    // Stored: the hold stays charged, and is settled once; a settled hold is neither released nor charged again.
    assert_eq!(q.settle(&ids.hash(1), Settlement::Stored).await?, 1);
    assert_eq!(q.settle(&ids.hash(1), Settlement::Stored).await?, 0);
    q.release(&hold(&user, 1, 100)).await?;
    assert_eq!(q.usage(&user, day).await?, (100, 1));
    assert_eq!(q.reserve(&hold(&user, 1, 100), &at(3), 250, 3).await?, Reserve::AlreadyHeld);
    assert_eq!(q.usage(&user, day).await?, (100, 1));

    // Rejected: the bytes come back, the file still counts, and a new upload is charged afresh.
    assert_eq!(q.reserve(&hold(&user, 3, 50), &at(3), 250, 3).await?, Reserve::Granted);
    assert_eq!(q.settle(&ids.hash(3), Settlement::Rejected).await?, 1);
    assert_eq!(q.usage(&user, day).await?, (100, 2));
    assert_eq!(q.reserve(&hold(&user, 3, 50), &at(4), 250, 3).await?, Reserve::Granted);
    assert_eq!(q.usage(&user, day).await?, (150, 3));
    assert_eq!(q.reserve(&hold(&user, 4, 1), &at(4), 250, 3).await?, Reserve::Exceeded, "three files a day");
    assert_eq!(q.settle(&ids.hash(3), Settlement::Stored).await?, 1);

    // Settling covers every user's pending hold on the hash.
    let other = format!("{user}-b");
    assert_eq!(q.reserve(&hold(&other, 5, 10), &at(5), 250, 3).await?, Reserve::Granted);
    assert_eq!(q.reserve(&hold(&user, 5, 10), &at(5), 250, 4).await?, Reserve::Granted);
    assert_eq!(q.settle(&ids.hash(5), Settlement::Stored).await?, 2);

    // Unused holds: released when issued before the cut-off; asking again moves the issue time.
    let late = format!("{user}-c");
    assert_eq!(q.reserve(&hold(&late, 6, 7), &at(1), 250, 3).await?, Reserve::Granted);
    assert_eq!(q.reserve(&hold(&late, 7, 8), &at(1), 250, 3).await?, Reserve::Granted);
    assert_eq!(q.reserve(&hold(&late, 8, 9), &at(8), 250, 3).await?, Reserve::Granted);
    assert_eq!(q.reserve(&hold(&late, 7, 8), &at(9), 250, 3).await?, Reserve::AlreadyHeld);
    assert!(q.release_unused(&at(6)).await? >= 1);
    assert_eq!(q.usage(&late, day).await?, (17, 2), "only the hold issued before the cut-off went");
    assert_eq!(q.usage(&user, day).await?, (160, 4), "settled holds are not unused");
    assert_eq!(q.settle(&ids.hash(6), Settlement::Stored).await?, 0, "a released hold is gone");
    q.release(&hold(&late, 7, 8)).await?;
    q.release(&hold(&late, 8, 9)).await?;
    assert_eq!(q.usage(&late, day).await?, (0, 0));
    Ok(())
}

/// Objects: whole reads capped by the caller, overwrites, idempotent deletes, prefix listings.
pub async fn blobs(store: &dyn BlobStore) -> Result<(), StoreError> {
    let ids = Fresh::new("blobs");
    let prefix = format!("contract/{}/", ids.name());
    let (a, b, empty) = (format!("{prefix}a"), format!("{prefix}b.webp"), format!("{prefix}empty"));

    assert_eq!(store.read(&a, 100).await?, None);
    assert!(!store.exists(&a).await?);
    store.put(&a, b"abc".to_vec(), "application/octet-stream", None).await?;
    store.put(&b, b"hello".to_vec(), "image/webp", Some("public, max-age=31536000, immutable")).await?;
    store.put(&empty, Vec::new(), "application/octet-stream", None).await?;
    assert!(store.exists(&a).await?);
    assert_eq!(store.read(&a, 3).await?, Some(ReadBlob::Bytes(b"abc".to_vec())), "exactly the cap is allowed");
    assert_eq!(store.read(&a, 2).await?, Some(ReadBlob::TooLarge(3)));
    assert_eq!(store.read(&empty, 0).await?, Some(ReadBlob::Bytes(Vec::new())));
    store.put(&a, b"abcd".to_vec(), "application/octet-stream", None).await?;
    assert_eq!(store.read(&a, 100).await?, Some(ReadBlob::Bytes(b"abcd".to_vec())), "an overwrite replaces");

    let mut listed = store.list(&prefix).await?;
    listed.sort();
    assert_eq!(listed, vec![(a.clone(), 4), (b.clone(), 5), (empty.clone(), 0)]);
    assert!(store.list(&format!("{prefix}b")).await?.iter().all(|(k, _)| k == &b));

    store.delete(&a).await?;
    store.delete(&a).await?;
    assert!(!store.exists(&a).await?);
    assert_eq!(store.read(&a, 100).await?, None);
    store.delete(&b).await?;
    store.delete(&empty).await?;
    assert!(store.list(&prefix).await?.is_empty());
    Ok(())
}

/// The Postgres mirror, empty and migrated: a change applies only over older ones (sequence
/// numbers compare as numbers), repairs only over what they saw.
pub async fn mirror(m: &dyn Mirror) -> Result<(), StoreError> {
    let ids = Fresh::new("mirror");
    let deck = ids.name().to_string();
    let at = |s: i64| OffsetDateTime::from_unix_timestamp(1_700_000_000 + s).ok();
    let file = |hash: Sha256Hash, notes: i64, s: i64| {
        Row::File(FileRow { deck: deck.clone(), filename: "a.jpg".into(), hash, notes, updated_at: at(s) })
    };
    let key = Key::File { deck: deck.clone(), filename: "a.jpg".into() };
    let change = |seq: &str, row: Option<Row>| Change { key: key.clone(), seq: seq.into(), row };
    let (h1, h2) = (ids.hash(1), ids.hash(2));

    m.migrate().await?;
    m.migrate().await?;
    assert!(m.apply(&change("99", Some(file(h1, 1, 1)))).await?);
    assert!(!m.apply(&change("99", Some(file(h2, 5, 2)))).await?, "a duplicate");
    assert!(m.apply(&change("100", Some(file(h2, 2, 3)))).await?, "100 is after 99");
    assert!(!m.apply(&change("99", Some(file(h1, 1, 1)))).await?, "an older change arriving late");
    let snap = m.snapshot().await?;
    assert_eq!(snap.rows.get(&key), Some(&file(h2, 2, 3)));
    assert_eq!(snap.versions.get(&key.item()).map(String::as_str), Some("100"));

    assert!(m.apply(&change("1000000000000000000000001", None)).await?, "longer than any integer type");
    assert!(!m.apply(&change("999999999999999999999999", Some(file(h1, 1, 4)))).await?);
    let snap = m.snapshot().await?;
    assert_eq!(snap.rows.get(&key), None, "removed, and an older row does not bring it back");
    assert_eq!(snap.versions.get(&key.item()).map(String::as_str), Some("1000000000000000000000001"));

    let row = StoredRow {
        hash: h1,
        s3_key: Some(format!("media/{h1}")),
        reference_count: 3,
        status: "ready".into(),
        size: Some(1000),
        stored_size: Some(600),
        content_type: Some("image/webp".into()),
        width: Some(640),
        height: Some(480),
        duration_ms: Some(2612),
        stored_hash: Some(h2.to_hex()),
        thumb_key: Some(format!("thumbs/{h1}.webp")),
        reject_reason: None,
        updated_at: at(5),
    };
    let stored = Key::Stored(h1);
    assert!(m.apply(&Change { key: stored.clone(), seq: "7".into(), row: Some(Row::Stored(row.clone())) }).await?);
    assert_eq!(m.snapshot().await?.rows.get(&stored), Some(&Row::Stored(row.clone())), "every column kept");

    // Repairs: only over the version they saw, and they never advance it.
    let fresh = Key::Stored(h2);
    let repaired = StoredRow { hash: h2, status: "missing".into(), s3_key: None, thumb_key: None, ..row.clone() };
    assert!(!m.repair(&fresh, Some("5"), Some(&Row::Stored(repaired.clone()))).await?);
    assert_eq!(m.snapshot().await?.versions.get(&fresh.item()), None, "a refused repair leaves nothing");
    assert!(m.repair(&fresh, None, Some(&Row::Stored(repaired.clone()))).await?);
    assert!(m.repair(&fresh, None, Some(&Row::Stored(repaired.clone()))).await?, "nothing was applied since");
    assert!(!m.repair(&stored, None, None).await?, "a change was applied since");
    assert!(!m.repair(&stored, Some("6"), None).await?);
    assert!(m.repair(&stored, Some("7"), None).await?);
    assert!(
        m.apply(&Change { key: fresh.clone(), seq: "1".into(), row: None }).await?,
        "any change is newer than a repair"
    );
    let snap = m.snapshot().await?;
    assert_eq!((snap.rows.get(&stored), snap.rows.get(&fresh)), (None, None));
    assert_eq!(snap.versions.get(&stored.item()).map(String::as_str), Some("7"));
    assert_eq!(snap.versions.get(&fresh.item()).map(String::as_str), Some("1"));
    assert_eq!(snap.legacy_rows, 0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::memory::{MemoryMirror, MemoryStore};

    #[tokio::test]
    async fn the_memory_store_keeps_every_contract() -> Result<(), crate::error::StoreError> {
        let store = MemoryStore::default();
        super::media_repo(&store).await?;
        super::references(&store, &store, &store).await?;
        super::quotas(&store).await?;
        super::blobs(&store).await?;
        super::mirror(&MemoryMirror::default()).await
    }
}
