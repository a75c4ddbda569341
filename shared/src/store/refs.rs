//! What the reference store keeps and how a step of reference changes is committed: the types
//! `references` plans with and the trait its adapters (`dynamo::refs`, `memory`) implement.
//! A filename's versions ([`FileVersions`]) are the deck index's rule for what the name means.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::StoreError;
use crate::hash::Sha256Hash;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefOp {
    Add {
        filename: String,
        hash: Sha256Hash,
    },
    Remove {
        filename: String,
        hash: Sha256Hash,
    },
    /// Same filename, other bytes.
    Change {
        filename: String,
        from: Sha256Hash,
        to: Sha256Hash,
    },
}

impl RefOp {
    pub fn filename(&self) -> &str {
        match self {
            RefOp::Add { filename, .. } | RefOp::Remove { filename, .. } | RefOp::Change { filename, .. } => filename,
        }
    }
}

/// One hash under a deck's filename: how many of the deck's notes use it, and when it was last
/// added (RFC 3339; empty for entries older than this bookkeeping).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Version {
    pub notes: i64,
    pub added_at: String,
}

/// The hashes a deck's notes use under one filename.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileVersions(pub BTreeMap<Sha256Hash, Version>);

impl FileVersions {
    /// The hash the filename means: of the hashes some note uses under it, the one added most
    /// recently (ties broken by the larger hash, so that every reader agrees). `None` when no
    /// note uses the name.
    pub fn resolved(&self) -> Option<Sha256Hash> {
        self.0
            .iter()
            .filter(|(_, v)| v.notes > 0)
            .max_by(|a, b| (&a.1.added_at, a.0).cmp(&(&b.1.added_at, b.0)))
            .map(|(h, _)| *h)
    }

    /// Notes that use the filename, whatever the hash.
    pub fn notes(&self) -> i64 {
        self.0.values().map(|v| v.notes.max(0)).sum()
    }

    /// Apply one step's change of this filename, committed at `now`.
    pub fn apply(&mut self, change: &FileChange, now: &str) {
        for (hash, delta) in &change.versions {
            let v = self.0.entry(*hash).or_default();
            v.notes += delta;
            if change.added.contains(hash) {
                v.added_at = now.to_string();
            }
        }
        self.0.retain(|_, v| v.notes > 0);
    }
}

/// One step's change of one filename of the deck.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileChange {
    /// Change of the number of notes that use the filename.
    pub notes: i64,
    /// Change of the number of notes that use each hash under it.
    pub versions: BTreeMap<Sha256Hash, i64>,
    /// Hashes this step adds under the filename: their `added_at` becomes the commit's time.
    pub added: BTreeSet<Sha256Hash>,
}

/// One transaction's worth of work: reference item operations and the counter changes they imply.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Step {
    pub ops: Vec<RefOp>,
    /// Change of each hash's reference count.
    pub media: BTreeMap<Sha256Hash, i64>,
    /// Per filename of the deck: what changes in its index entry (one item each).
    pub deck_files: BTreeMap<String, FileChange>,
}

impl Step {
    pub fn items(&self) -> usize {
        self.ops.len() + self.media.len() + self.deck_files.len()
    }

    /// Take `op` into the step, with the count changes it implies.
    pub(crate) fn add(&mut self, op: RefOp) {
        match &op {
            RefOp::Add { filename, hash } => {
                *self.media.entry(*hash).or_default() += 1;
                let f = self.deck_files.entry(filename.clone()).or_default();
                f.notes += 1;
                *f.versions.entry(*hash).or_default() += 1;
                f.added.insert(*hash);
            }
            RefOp::Remove { filename, hash } => {
                *self.media.entry(*hash).or_default() -= 1;
                let f = self.deck_files.entry(filename.clone()).or_default();
                f.notes -= 1;
                *f.versions.entry(*hash).or_default() -= 1;
            }
            RefOp::Change { filename, from, to } => {
                *self.media.entry(*from).or_default() -= 1;
                *self.media.entry(*to).or_default() += 1;
                let f = self.deck_files.entry(filename.clone()).or_default();
                *f.versions.entry(*from).or_default() -= 1;
                *f.versions.entry(*to).or_default() += 1;
                f.added.insert(*to);
            }
        }
        // A hash whose changes cancel out needs no write.
        self.media.retain(|_, d| *d != 0);
        self.ops.push(op);
    }
}

/// How an attempt to commit a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    Done,
    /// Another writer changed the note's references first: re-read and plan again.
    Conflict,
    /// A hash cannot take a reference as it stands: the sweeper is deleting it right now, or it
    /// turned out to be an alias of converted bytes. Wait, look the hashes up again, plan again.
    Deleting,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteRef {
    pub note_id: String,
    pub filename: String,
    pub hash: Sha256Hash,
}

/// Reference items, keyed by (deck, note, filename).
#[async_trait::async_trait]
pub trait ReferenceStore: Send + Sync {
    /// The note's references: filename → hash.
    async fn note_refs(&self, deck: &str, note_id: &str) -> Result<BTreeMap<String, Sha256Hash>, StoreError>;
    /// Commit one step atomically, or nothing.
    async fn commit(&self, deck: &str, note_id: &str, step: &Step, now: &str) -> Result<Commit, StoreError>;
    /// Every note of the deck that references `filename`.
    async fn file_refs(&self, deck: &str, filename: &str) -> Result<Vec<NoteRef>, StoreError>;
    /// Live reference items per hash (`lifecycle::reconcile_counts`).
    async fn count_all(&self) -> Result<BTreeMap<Sha256Hash, i64>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u8) -> Sha256Hash {
        Sha256Hash::from_digest([i; 32])
    }

    #[test]
    fn a_filename_resolves_to_its_most_recent_live_version() {
        let v = |notes, at: &str| Version { notes, added_at: at.into() };
        let mut f = FileVersions(BTreeMap::from([(h(1), v(1, "t1")), (h(2), v(1, "t2"))]));
        assert_eq!(f.resolved(), Some(h(2)));
        f.0.get_mut(&h(2)).unwrap().notes = 0;
        assert_eq!(f.resolved(), Some(h(1)), "when the newest goes, the next newest");
        f.0.get_mut(&h(1)).unwrap().notes = 0;
        assert_eq!(f.resolved(), None);
        let tie = FileVersions(BTreeMap::from([(h(3), v(1, "t")), (h(4), v(2, "t"))]));
        assert_eq!(tie.resolved(), Some(h(4)), "ties go to the larger hash, for every reader alike");
        assert_eq!(tie.notes(), 3);
    }
}
