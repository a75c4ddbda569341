//! One call per AnkiCollab event, each keeping the media server's references equal to what the
//! notes use (the deck rule: [`crate::decks`]).
//!
//! What a note uses is kept in the kit's table `anki.media_note_files` (filename → SHA-256): the
//! plugin reports a suggestion's files ([`MediaSync::suggestion_submitted`]); approving or
//! declining the suggestion keeps those its fields still reference (reviewed or pending, as
//! AnkiCollab's own media cleanup decides), plus template media (names starting with `_`).
//! Every event then *syncs* its notes: it computes each note's deck keys and files and sets them
//! in the media server, removing the note from keys that no longer see it. A sync holds a
//! per-note advisory lock, tells the media server first and records what it told second, so a
//! crash or an outage between the two is repaired by the next call: every call is idempotent
//! and safe to retry.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tokio_postgres::{Client, GenericClient, Transaction};

use crate::decks;
use crate::error::{Error, Result};
use crate::files::{filename_problem, is_sha256, referenced_media};
use crate::references::{Applied, FileRef, NoteMedia, ReferencesClient};

/// The kit's tables (`sql/kit.sql`).
pub const KIT_SQL: &str = include_str!("../sql/kit.sql");

/// Create the kit's tables in AnkiCollab's database if they are missing (idempotent).
pub async fn migrate(db: &Client) -> Result<()> {
    db.batch_execute(KIT_SQL).await?;
    Ok(())
}

/// At most this many notes are synced in one transaction.
const NOTES_PER_SYNC: usize = 500;

/// One file a suggestion's note uses, as the plugin reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedFile {
    pub note_guid: String,
    pub filename: String,
    pub sha256: String,
}

/// What a report did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Recorded {
    /// Files recorded for notes that exist, and set in the media server.
    pub recorded: usize,
    /// Files recorded for notes the backend has not inserted yet (a new deck): they become
    /// references when the note appears and is synced ([`MediaSync::deck_created`]).
    pub waiting: usize,
}

/// What a sync changed in the media server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Synced {
    pub notes: usize,
    pub added: usize,
    pub removed: usize,
}

impl Synced {
    fn add(&mut self, a: Applied) {
        self.added += a.added;
        self.removed += a.removed;
    }
}

/// The events. Build once; every method takes a connection to AnkiCollab's database.
///
/// ```no_run
/// use ankicollab_media_backend::{MediaSync, ReferencesClient, TokenIssuer};
///
/// # async fn demo(db: &mut tokio_postgres::Client) -> Result<(), ankicollab_media_backend::Error> {
/// let issuer = TokenIssuer::new(&std::env::var("MEDIA_TOKEN_SECRET").unwrap())?;
/// let media = MediaSync::new(ReferencesClient::new("https://media.example.com", issuer));
/// ankicollab_media_backend::migrate(db).await?;
/// // After `merge_by_commit` approved commit 812, whose notes are 17 and 18:
/// media.suggestion_approved(db, &[17, 18]).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MediaSync {
    refs: ReferencesClient,
}

impl MediaSync {
    pub fn new(refs: ReferencesClient) -> Self {
        Self { refs }
    }

    pub fn references(&self) -> &ReferencesClient {
        &self.refs
    }

    /// **Suggestion created or updated**: the plugin reported the files a suggestion's notes use
    /// (`POST /media/references`, after checking the caller may write those notes). They are
    /// recorded and become references while the suggestion is pending. `deck_hash` is the deck
    /// the plugin named; notes are found by guid in its subtree. Files for guids with no note yet
    /// wait for it.
    pub async fn suggestion_submitted(
        &self,
        db: &mut Client,
        user_id: Option<i64>,
        deck_hash: &str,
        files: &[ReportedFile],
    ) -> Result<Recorded> {
        for f in files {
            if !is_sha256(&f.sha256) {
                return Err(Error::Invalid(format!("{}: sha256 is not 64 lowercase hex digits", f.filename)));
            }
            if let Some(problem) = filename_problem(&f.filename) {
                return Err(Error::Invalid(format!("{:?}: {problem}", f.filename)));
            }
        }
        let guids: Vec<String> =
            files.iter().map(|f| f.note_guid.clone()).collect::<BTreeSet<_>>().into_iter().collect();
        let notes = decks::notes_by_guid(&*db, deck_hash, &guids).await?;
        let mut recorded = Recorded::default();
        let mut touched = BTreeSet::new();
        let tx = db.transaction().await?;
        for f in files {
            match notes.get(&f.note_guid) {
                Some(ids) => {
                    for &id in ids {
                        record_file(&tx, id, &f.filename, &f.sha256, user_id).await?;
                        touched.insert(id);
                        recorded.recorded += 1;
                    }
                }
                None => {
                    tx.execute(
                        "INSERT INTO anki.media_unresolved_files (deck_hash, note_guid, filename, sha256, reported_by)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (deck_hash, note_guid, filename) DO UPDATE
                         SET sha256 = excluded.sha256, reported_by = excluded.reported_by, reported_at = now()",
                        &[&deck_hash, &f.note_guid, &f.filename, &f.sha256, &user_id],
                    )
                    .await?;
                    recorded.waiting += 1;
                }
            }
        }
        tx.commit().await?;
        self.sync_notes(db, &touched.into_iter().collect::<Vec<_>>()).await?;
        Ok(recorded)
    }

    /// **Suggestion approved** (a field, a note, or a whole commit): call after AnkiCollab applied
    /// it, with the ids of the notes it touched. Each note keeps the files its fields still
    /// reference and the media server follows.
    pub async fn suggestion_approved(&self, db: &mut Client, note_ids: &[i64]) -> Result<Synced> {
        self.prune(db, note_ids).await?;
        self.sync_notes(db, note_ids).await
    }

    /// **Suggestion declined**: call after AnkiCollab removed it. A declined new note is gone, so
    /// all its references go; a declined change keeps what the note's remaining fields use.
    pub async fn suggestion_declined(&self, db: &mut Client, note_ids: &[i64]) -> Result<Synced> {
        self.prune(db, note_ids).await?;
        self.sync_notes(db, note_ids).await
    }

    /// **Note deleted** (marked `deleted`, or removed): its references go from every deck.
    pub async fn note_deleted(&self, db: &mut Client, note_ids: &[i64]) -> Result<Synced> {
        self.sync_notes(db, note_ids).await
    }

    /// **Deck deleted** (a whole tree, or a subtree): call after AnkiCollab deleted it. Every note
    /// the media server holds under `deck_hash`, and every note it holds that no longer exists,
    /// is removed.
    pub async fn deck_deleted(&self, db: &mut Client, deck_hash: &str) -> Result<Synced> {
        db.execute("DELETE FROM anki.media_unresolved_files WHERE deck_hash = $1", &[&deck_hash]).await?;
        let rows = db
            .query(
                "SELECT DISTINCT t.note_id FROM anki.media_note_decks t
                 WHERE t.deck_key = $1
                    OR NOT EXISTS (SELECT 1 FROM anki.notes n WHERE n.id = t.note_id AND NOT coalesce(n.deleted, false))",
                &[&deck_hash],
            )
            .await?;
        let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        self.sync_notes(db, &ids).await
    }

    /// A deck's notes were inserted (`/createDeck` finished): files reported for them while they
    /// did not exist yet become references.
    pub async fn deck_created(&self, db: &mut Client, deck_hash: &str) -> Result<Synced> {
        let guids: Vec<String> = db
            .query("SELECT DISTINCT note_guid FROM anki.media_unresolved_files WHERE deck_hash = $1", &[&deck_hash])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let notes = decks::notes_by_guid(&*db, deck_hash, &guids).await?;
        let ids: Vec<i64> = notes.values().flatten().copied().collect();
        self.sync_notes(db, &ids).await
    }

    /// Bring the media server in line with these notes as they are now (after a move, a new
    /// subscription, or to repair). Idempotent.
    pub async fn sync_notes(&self, db: &mut Client, note_ids: &[i64]) -> Result<Synced> {
        let ids: Vec<i64> = note_ids.iter().copied().collect::<BTreeSet<_>>().into_iter().collect();
        let mut total = Synced::default();
        for chunk in ids.chunks(NOTES_PER_SYNC) {
            let tx = db.transaction().await?;
            let s = self.sync_chunk(&tx, chunk).await?;
            tx.commit().await?;
            total.notes += s.notes;
            total.added += s.added;
            total.removed += s.removed;
        }
        Ok(total)
    }

    async fn sync_chunk(&self, tx: &Transaction<'_>, ids: &[i64]) -> Result<Synced> {
        // Sorted, so that two syncs of overlapping notes cannot deadlock.
        tx.execute(
            "SELECT pg_advisory_xact_lock(1095582021, hashint8(id)) FROM unnest($1::bigint[]) AS id ORDER BY id",
            &[&ids],
        )
        .await?;
        adopt_unresolved(tx, ids).await?;
        let keys = decks::deck_keys_of_notes(tx, ids).await?;
        let mut files: BTreeMap<i64, Vec<FileRef>> = BTreeMap::new();
        for row in tx
            .query(
                "SELECT note_id, filename, sha256 FROM anki.media_note_files WHERE note_id = ANY($1) ORDER BY 1, 2",
                &[&ids],
            )
            .await?
        {
            files.entry(row.get(0)).or_default().push(FileRef::new(row.get::<_, String>(1), row.get::<_, String>(2)));
        }
        let mut told: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
        for row in
            tx.query("SELECT note_id, deck_key FROM anki.media_note_decks WHERE note_id = ANY($1)", &[&ids]).await?
        {
            told.entry(row.get(0)).or_default().insert(row.get(1));
        }

        // Per deck key: the notes to set (their files) and the notes to remove.
        let mut by_key: BTreeMap<String, Vec<NoteMedia>> = BTreeMap::new();
        let mut now_told: Vec<(i64, String)> = Vec::new();
        let mut untold: Vec<(i64, String)> = Vec::new();
        let none = BTreeSet::new();
        for &id in ids {
            let media = files.get(&id).cloned().unwrap_or_default();
            let want: &BTreeSet<String> = if media.is_empty() { &none } else { keys.get(&id).unwrap_or(&none) };
            for key in want {
                by_key
                    .entry(key.clone())
                    .or_default()
                    .push(NoteMedia { note_id: id.to_string(), media: media.clone() });
                now_told.push((id, key.clone()));
            }
            for key in told.get(&id).unwrap_or(&none).difference(want) {
                by_key.entry(key.clone()).or_default().push(NoteMedia { note_id: id.to_string(), media: vec![] });
                untold.push((id, key.clone()));
            }
        }
        let mut synced = Synced { notes: ids.len(), ..Synced::default() };
        for (key, notes) in &by_key {
            synced.add(self.refs.set_notes(key, notes).await?);
        }
        // Recorded only once the media server has it: a failure above leaves the old record, and
        // the next sync sends again.
        for (id, key) in &now_told {
            tx.execute(
                "INSERT INTO anki.media_note_decks (note_id, deck_key) VALUES ($1, $2)
                 ON CONFLICT (note_id, deck_key) DO UPDATE SET synced_at = now()",
                &[id, key],
            )
            .await?;
        }
        for (id, key) in &untold {
            tx.execute("DELETE FROM anki.media_note_decks WHERE note_id = $1 AND deck_key = $2", &[id, key]).await?;
        }
        // Notes that are gone are now removed everywhere: forget their files.
        tx.execute(
            "DELETE FROM anki.media_note_files f WHERE f.note_id = ANY($1)
               AND NOT EXISTS (SELECT 1 FROM anki.notes n WHERE n.id = f.note_id AND NOT coalesce(n.deleted, false))",
            &[&ids],
        )
        .await?;
        Ok(synced)
    }

    /// Keep, of each note's recorded files, those its fields (reviewed or pending) reference, and
    /// template media (`_name`).
    async fn prune(&self, db: &mut Client, note_ids: &[i64]) -> Result<()> {
        let tx = db.transaction().await?;
        let mut used: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
        for row in tx.query("SELECT note, content FROM anki.fields WHERE note = ANY($1)", &[&note_ids]).await? {
            let content: Option<String> = row.get(1);
            used.entry(row.get(0)).or_default().extend(referenced_media(content.as_deref().unwrap_or_default()));
        }
        for row in tx
            .query("SELECT note_id, filename FROM anki.media_note_files WHERE note_id = ANY($1)", &[&note_ids])
            .await?
        {
            let (id, filename): (i64, String) = (row.get(0), row.get(1));
            let keep = filename.starts_with('_') || used.get(&id).is_some_and(|u| u.contains(&filename));
            if !keep {
                tx.execute("DELETE FROM anki.media_note_files WHERE note_id = $1 AND filename = $2", &[&id, &filename])
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Record that note `note_id` uses `filename` with these bytes (idempotent: the latest report
/// wins). Also what the importer calls for each legacy reference.
pub async fn record_file(
    db: &impl GenericClient,
    note_id: i64,
    filename: &str,
    sha256: &str,
    reported_by: Option<i64>,
) -> Result<()> {
    db.execute(
        "INSERT INTO anki.media_note_files (note_id, filename, sha256, reported_by) VALUES ($1, $2, $3, $4)
         ON CONFLICT (note_id, filename) DO UPDATE
         SET sha256 = excluded.sha256, reported_by = excluded.reported_by, reported_at = now()",
        &[&note_id, &filename, &sha256, &reported_by],
    )
    .await?;
    Ok(())
}

/// Move files reported for guids before their notes existed onto the notes that now do.
async fn adopt_unresolved(tx: &Transaction<'_>, ids: &[i64]) -> Result<()> {
    let rows = tx
        .query(
            "SELECT DISTINCT u.deck_hash, n.guid::text, n.id FROM anki.notes n
             JOIN anki.media_unresolved_files u ON u.note_guid = n.guid
             WHERE n.id = ANY($1)",
            &[&ids],
        )
        .await?;
    for row in rows {
        let (deck_hash, guid, id): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
        // Only a note in the subtree of the deck the plugin named.
        let found = decks::notes_by_guid(tx, &deck_hash, std::slice::from_ref(&guid)).await?;
        if !found.get(&guid).is_some_and(|v| v.contains(&id)) {
            continue;
        }
        tx.execute(
            "INSERT INTO anki.media_note_files (note_id, filename, sha256, reported_by, reported_at)
             SELECT $3, filename, sha256, reported_by, reported_at FROM anki.media_unresolved_files
             WHERE deck_hash = $1 AND note_guid = $2
             ON CONFLICT (note_id, filename) DO UPDATE
             SET sha256 = excluded.sha256, reported_by = excluded.reported_by, reported_at = excluded.reported_at",
            &[&deck_hash, &guid, &id],
        )
        .await?;
        tx.execute(
            "DELETE FROM anki.media_unresolved_files WHERE deck_hash = $1 AND note_guid = $2",
            &[&deck_hash, &guid],
        )
        .await?;
    }
    Ok(())
}
