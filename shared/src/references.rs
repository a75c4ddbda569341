//! POST /v1/references: which media each note uses, with set semantics per note.
//!
//! A note's change becomes a plan of operations on reference items; the plan is cut into steps
//! that each fit one DynamoDB transaction, and every step carries the count changes of exactly
//! its own reference items. So whichever steps have committed, each hash's reference count equals
//! its live reference items (DESIGN.md invariant 1), and replaying a request finds nothing to do.
//!
//! **What a deck's filename means.** Notes of one deck may use one filename for different bytes
//! (two contributors' `diagram.png`). The deck index keeps, per filename, how many notes use each
//! hash under it and when each was last added ([`FileVersions`]); the filename resolves to the
//! hash of the most recent live reference, and when that one goes, to the most recent of those
//! left. The same steps that move reference items move these counts, so the index, downloads,
//! the maintainer API and Postgres all read the one rule, [`FileVersions::resolved`], and a name
//! never resolves to a hash no note uses (which the sweep could delete).
//!
//! [`FileVersions`]: crate::store::refs::FileVersions
//! [`FileVersions::resolved`]: crate::store::refs::FileVersions::resolved

use std::collections::BTreeMap;
use std::time::Duration;

use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::auth::{Principal, Scope};
use crate::clock::now_rfc3339;
use crate::error::{ApiError, StoreError};
use crate::hash::Sha256Hash;
use crate::policy::{check_deck, normalize_filename};
use crate::store::refs::{Commit, RefOp, ReferenceStore, Step};
use crate::store::{lookup, MediaRepo};

/// At most this many notes per request (API.md).
pub const MAX_NOTES: usize = 100;
/// DynamoDB allows 100 items per transaction.
pub const MAX_TRANSACTION_ITEMS: usize = 100;
/// Notes updated concurrently within one request.
const PARALLEL_NOTES: usize = 8;
/// Attempts when a concurrent writer or a sweep gets in the way.
const MAX_ATTEMPTS: u32 = 12;

/// What one note references: filename → hash.
pub type NoteSet = BTreeMap<String, Sha256Hash>;

/// What turns `current` into `desired` (both filename → hash).
pub fn plan(current: &BTreeMap<String, Sha256Hash>, desired: &BTreeMap<String, Sha256Hash>) -> Vec<RefOp> {
    let mut ops = Vec::new();
    for (filename, hash) in current {
        match desired.get(filename) {
            None => ops.push(RefOp::Remove { filename: filename.clone(), hash: *hash }),
            Some(to) if to != hash => ops.push(RefOp::Change { filename: filename.clone(), from: *hash, to: *to }),
            Some(_) => {}
        }
    }
    for (filename, hash) in desired {
        if !current.contains_key(filename) {
            ops.push(RefOp::Add { filename: filename.clone(), hash: *hash });
        }
    }
    ops
}

/// Cut a plan into steps of at most `max_items` transaction items each.
pub fn steps(ops: Vec<RefOp>, max_items: usize) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    let mut current = Step::default();
    for op in ops {
        let mut trial = current.clone();
        trial.add(op.clone());
        if trial.items() > max_items && !current.ops.is_empty() {
            out.push(std::mem::take(&mut current));
            current.add(op);
        } else {
            current = trial;
        }
    }
    if !current.ops.is_empty() {
        out.push(current);
    }
    out
}

#[derive(Debug, Deserialize)]
pub struct ReferencesRequest {
    pub deck: String,
    pub notes: Vec<NoteMedia>,
}

#[derive(Debug, Deserialize)]
pub struct NoteMedia {
    pub note_id: String,
    pub media: Vec<MediaRef>,
}

#[derive(Debug, Deserialize)]
pub struct MediaRef {
    pub filename: String,
    pub hash: String,
}

#[derive(Debug, Serialize, PartialEq, Eq, Default)]
pub struct ReferencesResponse {
    pub notes: usize,
    pub added: usize,
    pub removed: usize,
}

fn valid_note_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub async fn apply_references(
    refs: &dyn ReferenceStore,
    media: &dyn MediaRepo,
    who: &Principal,
    req: ReferencesRequest,
    now: OffsetDateTime,
) -> Result<ReferencesResponse, ApiError> {
    who.require_any(&[Scope::References])?;
    check_deck(&req.deck)?;
    if req.notes.len() > MAX_NOTES {
        return Err(ApiError::too_many_items(format!("notes: at most {MAX_NOTES} per request")));
    }
    // Validate everything before writing anything.
    let mut wanted = Vec::with_capacity(req.notes.len());
    for (i, note) in req.notes.iter().enumerate() {
        if !valid_note_id(&note.note_id) {
            return Err(ApiError::bad_request(format!("notes[{i}].note_id: 1-64 of A-Z a-z 0-9 _ -")));
        }
        let mut desired = BTreeMap::new();
        for (j, m) in note.media.iter().enumerate() {
            let filename = normalize_filename(&m.filename)
                .map_err(|e| ApiError::bad_request(format!("notes[{i}].media[{j}].filename: {e}")))?;
            let hash = Sha256Hash::parse(&m.hash)
                .map_err(|e| ApiError::bad_request(format!("notes[{i}].media[{j}].hash: {e}")))?;
            if desired.insert(filename, hash).is_some_and(|old| old != hash) {
                return Err(ApiError::bad_request(format!(
                    "notes[{i}].media[{j}]: one filename with two different hashes"
                )));
            }
        }
        wanted.push((note.note_id.clone(), desired));
    }
    let mut sets: Vec<NoteSet> = wanted.iter().map(|(_, d)| d.clone()).collect();
    canonicalize(media, &mut sets).await?;
    for ((_, desired), set) in wanted.iter_mut().zip(sets) {
        *desired = set;
    }

    let now_s = now_rfc3339(now);
    // Notes are independent of each other: update several at once.
    let notes = wanted.len();
    let (deck, now_s) = (&req.deck, &now_s);
    let results: Vec<(usize, usize)> = stream::iter(wanted)
        .map(|(note_id, desired)| async move {
            set_note(refs, media, deck, &note_id, &move |_: &NoteSet| desired.clone(), now_s).await
        })
        .buffer_unordered(PARALLEL_NOTES)
        .try_collect()
        .await?;
    Ok(ReferencesResponse {
        notes,
        added: results.iter().map(|r| r.0).sum(),
        removed: results.iter().map(|r| r.1).sum(),
    })
}

/// References point at canonical hashes: the hash of converted bytes means its original.
async fn canonicalize(media: &dyn MediaRepo, sets: &mut [NoteSet]) -> Result<(), StoreError> {
    let all: Vec<Sha256Hash> = sets.iter().flat_map(|s| s.values().copied()).collect();
    if all.is_empty() {
        return Ok(());
    }
    let records = lookup(media, &all).await?;
    for hash in sets.iter_mut().flat_map(|s| s.values_mut()) {
        if let Some(r) = records.get(hash) {
            *hash = r.hash;
        }
    }
    Ok(())
}

/// Reference items a step adds and removes.
fn tally(step: &Step) -> (usize, usize) {
    step.ops.iter().fold((0, 0), |(a, r), op| match op {
        RefOp::Add { .. } => (a + 1, r),
        RefOp::Remove { .. } => (a, r + 1),
        RefOp::Change { .. } => (a + 1, r + 1),
    })
}

/// Whether the note's references show every change of `step`.
fn applied(step: &Step, current: &BTreeMap<String, Sha256Hash>) -> bool {
    step.ops.iter().all(|op| match op {
        RefOp::Add { filename, hash } => current.get(filename) == Some(hash),
        RefOp::Remove { filename, .. } => !current.contains_key(filename),
        RefOp::Change { filename, to, .. } => current.get(filename) == Some(to),
    })
}

fn parse_time(at: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
}

/// Make the note reference exactly what `desired` says, given what it references now (asked
/// again after every interruption); returns the (added, removed) reference items.
pub async fn set_note(
    refs: &dyn ReferenceStore,
    media: &dyn MediaRepo,
    deck: &str,
    note_id: &str,
    desired: &(dyn Fn(&NoteSet) -> NoteSet + Sync),
    now: &str,
) -> Result<(usize, usize), ApiError> {
    let (mut added, mut removed) = (0, 0);
    let mut look_up_again = false;
    let started = (std::time::Instant::now(), parse_time(now));
    // The step last interrupted: with its answer lost (a retry refused by the step's own
    // conditions), it may have been applied after all, and then it counts as ours.
    let mut unsure: Option<Step> = None;
    for attempt in 0..MAX_ATTEMPTS {
        let current = refs.note_refs(deck, note_id).await?;
        if let Some(step) = unsure.take().filter(|s| applied(s, &current)) {
            let (a, r) = tally(&step);
            added += a;
            removed += r;
        }
        let mut want = desired(&current);
        if look_up_again {
            // A hash may have become an alias since the caller looked it up.
            canonicalize(media, std::slice::from_mut(&mut want)).await?;
        }
        let ops = plan(&current, &want);
        if ops.is_empty() {
            return Ok((added, removed));
        }
        let mut interrupted = None;
        for step in steps(ops, MAX_TRANSACTION_ITEMS) {
            match refs.commit(deck, note_id, &step, now).await? {
                Commit::Done => {
                    let (a, r) = tally(&step);
                    added += a;
                    removed += r;
                }
                other => {
                    interrupted = Some((other, step));
                    break;
                }
            }
        }
        match interrupted {
            None => return Ok((added, removed)),
            Some((why, step)) => {
                tracing::info!(deck, note_id, attempt, ?why, "reference update interrupted; planning again");
                if why == Commit::Conflict {
                    unsure = Some(step);
                } else if why == Commit::Deleting {
                    look_up_again = true;
                    // A sweep that died while deleting one of them never comes back for it: once
                    // its claim has run out, the reference takes the record back.
                    let adding: Vec<Sha256Hash> = step.media.iter().filter(|(_, d)| **d > 0).map(|(h, _)| *h).collect();
                    if let Some(at) = started.1 {
                        let elapsed = time::Duration::try_from(started.0.elapsed()).unwrap_or(time::Duration::ZERO);
                        if crate::lifecycle::take_back(media, &adding, at + elapsed).await? > 0 {
                            continue;
                        }
                    }
                }
                let base = if why == Commit::Deleting { 50 } else { 5 };
                tokio::time::sleep(Duration::from_millis(base << attempt.min(5))).await;
            }
        }
    }
    Err(ApiError::unavailable())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::App;
    use proptest::prelude::*;

    fn h(i: u8) -> Sha256Hash {
        Sha256Hash::from_digest([i; 32])
    }

    fn apply(state: &mut BTreeMap<String, Sha256Hash>, counts: &mut BTreeMap<Sha256Hash, i64>, step: &Step) {
        for op in &step.ops {
            match op {
                RefOp::Add { filename, hash } => {
                    assert!(state.insert(filename.clone(), *hash).is_none());
                }
                RefOp::Remove { filename, hash } => assert_eq!(state.remove(filename), Some(*hash)),
                RefOp::Change { filename, from, to } => assert_eq!(state.insert(filename.clone(), *to), Some(*from)),
            }
        }
        for (hash, d) in &step.media {
            *counts.entry(*hash).or_default() += d;
        }
    }

    fn counts_of(state: &BTreeMap<String, Sha256Hash>) -> BTreeMap<Sha256Hash, i64> {
        let mut c = BTreeMap::new();
        for hash in state.values() {
            *c.entry(*hash).or_default() += 1;
        }
        c
    }

    fn set_strategy() -> impl Strategy<Value = BTreeMap<String, Sha256Hash>> {
        proptest::collection::btree_map("[a-z]{1,3}\\.png", (0u8..5).prop_map(h), 0..120)
    }

    proptest! {
        /// After every committed step, counts equal the reference items; after all, the note
        /// holds exactly the desired set, and planning again finds nothing to do.
        #[test]
        fn steps_keep_counts_equal_to_items(current in set_strategy(), desired in set_strategy(), max in 4usize..100) {
            let mut state = current.clone();
            let mut counts = counts_of(&current);
            for step in steps(plan(&current, &desired), max) {
                prop_assert!(step.items() <= max);
                apply(&mut state, &mut counts, &step);
                counts.retain(|_, c| *c != 0);
                prop_assert_eq!(&counts, &counts_of(&state));
            }
            prop_assert_eq!(&state, &desired);
            prop_assert!(plan(&state, &desired).is_empty());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Model-based: random sequences of note updates through `set_note` over the in-memory
        /// store agree with a plain map of note → set, in counts, in the deck index's note counts,
        /// and in what each filename resolves to: the hash whose latest addition under that name
        /// is the most recent, among those some note still uses (ties: the larger hash).
        #[test]
        fn note_updates_agree_with_a_model(updates in proptest::collection::vec((0u8..4, proptest::collection::btree_map(0u8..6, 0u8..4, 0..5)), 1..30)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            rt.block_on(async {
                let app = App::in_memory("k");
                let mut model: BTreeMap<String, NoteSet> = BTreeMap::new();
                // (filename, hash) → when a note last started to use that hash under that name.
                let mut added: BTreeMap<(String, Sha256Hash), String> = BTreeMap::new();
                for (i, (note, files)) in updates.iter().enumerate() {
                    // A filename may change hash from one update to the next, and two notes may
                    // use one filename for different hashes.
                    let desired: NoteSet = files.iter().map(|(f, v)| (format!("f{f}.png"), h(*v))).collect();
                    let note_id = format!("n{note}");
                    let now = format!("t{i:04}");
                    set_note(&*app.refs, &*app.media, "d", &note_id, &|_: &NoteSet| desired.clone(), &now).await.unwrap();
                    let before = model.insert(note_id, desired.clone()).unwrap_or_default();
                    for (f, hash) in &desired {
                        if before.get(f) != Some(hash) {
                            added.insert((f.clone(), *hash), now.clone());
                        }
                    }
                }
                let mut counts: BTreeMap<Sha256Hash, i64> = BTreeMap::new();
                let mut notes_per_file: BTreeMap<String, i64> = BTreeMap::new();
                for set in model.values() {
                    for (f, hash) in set {
                        *counts.entry(*hash).or_default() += 1;
                        *notes_per_file.entry(f.clone()).or_default() += 1;
                    }
                }
                for v in 0u8..4 {
                    let recorded = app.media.get(&h(v)).await.unwrap().map_or(0, |r| r.ref_count);
                    assert_eq!(recorded, counts.get(&h(v)).copied().unwrap_or(0), "count of h({v})");
                }
                assert_eq!(app.refs.count_all().await.unwrap(), counts.into_iter().filter(|(_, c)| *c > 0).collect());
                let page = app.decks.page("d", None, 100).await.unwrap();
                let index: BTreeMap<String, i64> = page.entries.iter().map(|e| (e.filename.clone(), e.notes)).collect();
                assert_eq!(index, notes_per_file);
                let mut expected: BTreeMap<String, (String, Sha256Hash)> = BTreeMap::new();
                for set in model.values() {
                    for (f, hash) in set {
                        let candidate = (added[&(f.clone(), *hash)].clone(), *hash);
                        let best = expected.entry(f.clone()).or_insert_with(|| candidate.clone());
                        if candidate > *best {
                            *best = candidate;
                        }
                    }
                }
                let resolved: BTreeMap<String, Sha256Hash> = page.entries.iter().map(|e| (e.filename.clone(), e.hash)).collect();
                assert_eq!(resolved, expected.iter().map(|(f, (_, hash))| (f.clone(), *hash)).collect::<BTreeMap<_, _>>());
                let names: Vec<String> = notes_per_file.keys().cloned().collect();
                assert_eq!(app.decks.resolve("d", &names).await.unwrap(), resolved.into_iter().collect());
            });
        }
    }

    #[test]
    fn a_change_moves_the_count() {
        let current = BTreeMap::from([("a.png".to_string(), h(1))]);
        let desired = BTreeMap::from([("a.png".to_string(), h(2))]);
        let s = steps(plan(&current, &desired), 100);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].media, BTreeMap::from([(h(1), -1), (h(2), 1)]));
        let f = &s[0].deck_files["a.png"];
        assert_eq!(
            (f.notes, &f.versions, &f.added),
            (0, &BTreeMap::from([(h(1), -1), (h(2), 1)]), &BTreeSet::from([h(2)]))
        );
    }

    /// Issue 20 (suspicion): a hash that becomes an alias (of converted bytes) between the
    /// request's lookup and its commit must not gain references of its own, which the sweep
    /// would not see when it deletes the original: the commit refuses, and the retry finds the
    /// original.
    #[test]
    fn a_hash_that_turned_into_an_alias_is_referenced_as_its_original() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            let app = App::in_memory("k");
            let (original, converted) = (h(1), h(2));
            app.media.ensure_record(&original, "t").await.unwrap();
            app.media.put_alias(&converted, &original, "t").await.unwrap();
            // As if the caller had looked `converted` up before the alias existed.
            let desired = BTreeMap::from([("a.png".to_string(), converted)]);
            set_note(&*app.refs, &*app.media, "d", "n", &|_: &NoteSet| desired.clone(), "t1").await.unwrap();
            assert_eq!(app.refs.note_refs("d", "n").await.unwrap(), BTreeMap::from([("a.png".to_string(), original)]));
            assert_eq!(app.media.get(&original).await.unwrap().map(|r| r.ref_count), Some(1));
            assert_eq!(app.media.get(&converted).await.unwrap().map(|r| r.ref_count), Some(0));
        });
    }

    /// A store whose commits are applied but whose answers are lost half the time, as when the
    /// SDK's retry of a timed-out attempt is refused by the step's own conditions.
    struct LosesAnswers<'a>(&'a dyn ReferenceStore, std::sync::atomic::AtomicUsize);

    #[async_trait::async_trait]
    impl ReferenceStore for LosesAnswers<'_> {
        async fn note_refs(&self, deck: &str, note_id: &str) -> Result<BTreeMap<String, Sha256Hash>, StoreError> {
            self.0.note_refs(deck, note_id).await
        }
        async fn commit(&self, deck: &str, note_id: &str, step: &Step, now: &str) -> Result<Commit, StoreError> {
            let done = self.0.commit(deck, note_id, step, now).await?;
            let lost = self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 2 == 0;
            Ok(if lost && done == Commit::Done { Commit::Conflict } else { done })
        }
        async fn file_refs(&self, deck: &str, filename: &str) -> Result<Vec<crate::store::refs::NoteRef>, StoreError> {
            self.0.file_refs(deck, filename).await
        }
        async fn count_all(&self) -> Result<BTreeMap<Sha256Hash, i64>, StoreError> {
            self.0.count_all().await
        }
    }

    #[test]
    fn a_step_applied_whose_answer_was_lost_is_counted_once() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            let app = App::in_memory("k");
            let refs = LosesAnswers(&*app.refs, Default::default());
            // Enough files for several steps, then half of them replaced by others.
            let first: BTreeMap<String, Sha256Hash> =
                (0..250).map(|i| (format!("f{i}.png"), h((i % 200) as u8))).collect();
            let counted = set_note(&refs, &*app.media, "d", "n", &|_: &NoteSet| first.clone(), "t1").await.unwrap();
            assert_eq!(counted, (250, 0));
            let second: BTreeMap<String, Sha256Hash> =
                (125..300).map(|i| (format!("f{i}.png"), h((i % 200) as u8 ^ 1))).collect();
            let counted = set_note(&refs, &*app.media, "d", "n", &|_: &NoteSet| second.clone(), "t2").await.unwrap();
            assert_eq!(counted, (175, 250), "125 changed, 50 added, 125 removed");
            assert_eq!(app.refs.note_refs("d", "n").await.unwrap(), second);
        });
    }
}
