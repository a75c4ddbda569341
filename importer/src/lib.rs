//! The import of AnkiCollab's existing media into the media server (`make import-legacy`).
//!
//! For every `anki.media_files` row that a live note references, the object is read from
//! AnkiCollab's bucket, checked against the row's MD5, hashed with SHA-256 and put through exactly
//! the processing of an upload (`shared::process::process_bytes`: sniffing, limits, conversion,
//! thumbnails, audio checks); then each live reference is recorded for its note with the kit
//! (`ankicollab_media_backend::record_file`) and the notes are synced, so the media server holds
//! them under the note's deck key by the kit's deck rule.
//!
//! **Resumable and idempotent.** A ledger in AnkiCollab's database (`anki.media_legacy_files`,
//! which is also the MD5 → SHA-256 map for the transition, and `anki.media_legacy_references`)
//! says what is done: a file is entered once it is stored or refused for good, a reference once
//! the media server has it. Every step before its entry is idempotent, so a run killed anywhere
//! redoes at most the steps of the files in flight, and a run after completion reads no object
//! and sends no reference. Missing objects, wrong MD5s and storage errors are not entered: each
//! run tries them again (and a re-run during the switch picks up rows added meanwhile).
//!
//! **Bounded.** Rows are read a page at a time, at most `parallel` files are in flight, and
//! results are committed in small batches: memory does not grow with the number of files.

pub mod progress;
pub mod report;
pub mod source;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ankicollab_media_backend::files::filename_problem;
use ankicollab_media_backend::{decks, record_file, MediaSync};
use futures::stream::{self, StreamExt};
use md5::{Digest as _, Md5};
use serde::Serialize;
use shared::hash::Sha256Hash;
use shared::process::{process_bytes, Outcome};
use shared::store::BlobStore;
use shared::App;
use time::OffsetDateTime;
use tokio_postgres::Client;

use crate::progress::Progress;
use crate::report::Report;
use crate::source::{Bucket, Fetched, LegacyFile, NoteState};

/// The ledger (beside the kit's tables, in AnkiCollab's database).
pub const LEDGER_SQL: &str = include_str!("../sql/ledger.sql");

/// Where files go: the media server's stores and processing, and the kit for references.
pub struct Target {
    pub app: App,
    pub blobs: Arc<dyn BlobStore>,
    pub sync: MediaSync,
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Files in flight at once.
    pub parallel: usize,
    /// Rows read per query.
    pub page: i64,
    /// Results committed per batch (ledger, references, report).
    pub batch: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self { parallel: 8, page: 500, batch: 200 }
    }
}

/// The counts of a run (also the report's last line).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub files: u64,
    pub imported: u64,
    pub already_there: u64,
    pub refused: u64,
    pub missing: u64,
    pub wrong_md5: u64,
    pub unreferenced: u64,
    pub failed: u64,
    pub references_imported: u64,
    pub references_already: u64,
    pub references_refused: u64,
    /// References whose note is gone (a null `note_id`): reported, counted, nothing to import.
    pub references_without_note: u64,
    pub deleted_note_references: u64,
    pub bytes_read: u64,
}

impl Summary {
    /// The line printed at the end.
    pub fn line(&self) -> String {
        let mut s = format!(
            "imported {}, already there {}, refused {}, missing {}, unreferenced {}",
            self.imported, self.already_there, self.refused, self.missing, self.unreferenced
        );
        for (n, what) in [
            (self.wrong_md5, "wrong md5"),
            (self.failed, "failed (retry)"),
            (self.references_refused, "references not imported"),
        ] {
            if n > 0 {
                s.push_str(&format!(", {what} {n}"));
            }
        }
        s
    }

    /// Whether something referenced could not be imported (the exit status says so).
    pub fn incomplete(&self) -> bool {
        self.refused + self.missing + self.wrong_md5 + self.failed + self.references_refused > 0
    }
}

/// What became of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FileOutcome {
    /// Stored under `sha256`; `fresh` when this run stored it.
    Stored {
        sha256: String,
        stored_sha256: Option<String>,
        fresh: bool,
    },
    /// Our policy refuses it (a reason code as uploads get), for good.
    Refused {
        sha256: Option<String>,
        reason: String,
    },
    Missing,
    WrongMd5 {
        actual: String,
    },
    Unreferenced,
    /// A storage error: tried again by the next run.
    Failed(String),
}

struct Item {
    file: LegacyFile,
    /// The ledger's entry, if the file was finished by an earlier run.
    done: Option<(String, String, Option<String>)>,
}

/// Create the ledger (and the kit's tables) if missing.
pub async fn prepare(db: &Client) -> anyhow::Result<()> {
    ankicollab_media_backend::migrate(db).await?;
    db.batch_execute(LEDGER_SQL).await?;
    Ok(())
}

/// Import everything. `db` reads AnkiCollab's rows; `writer` (a second connection to the same
/// database) writes the ledger and the references.
pub async fn run(
    db: &Client,
    writer: &mut Client,
    bucket: Arc<Bucket>,
    target: Arc<Target>,
    options: Options,
    report: &mut Report,
    progress: &Progress,
) -> anyhow::Result<Summary> {
    progress.set_total(source::count_files(db).await?.max(0) as u64);
    let pages = stream::unfold(Some(0i64), move |after| async move {
        let after = after?;
        let result = async {
            let files = source::page(db, after, options.page).await?;
            let ids: Vec<i64> = files.iter().map(|f| f.media_id).collect();
            let mut done: BTreeMap<i64, (String, String, Option<String>)> = BTreeMap::new();
            for r in db
                .query(
                    "SELECT media_id, sha256, outcome, reason FROM anki.media_legacy_files WHERE media_id = ANY($1)",
                    &[&ids],
                )
                .await?
            {
                done.insert(r.get(0), (r.get(1), r.get(2), r.get(3)));
            }
            anyhow::Ok(files.into_iter().map(|f| Item { done: done.remove(&f.media_id), file: f }).collect::<Vec<_>>())
        }
        .await;
        match result {
            Ok(items) if items.is_empty() => None,
            Ok(items) => {
                let next = items.last().map(|i| i.file.media_id);
                Some((stream::iter(items.into_iter().map(Ok)).left_stream(), next))
            }
            // Stop paging; the error goes to the caller.
            Err(e) => Some((stream::iter(vec![Err(e)]).right_stream(), None)),
        }
    })
    .flatten();
    // Each file is its own task, so that it runs to its end while a batch is committed: a request
    // left half-sent meanwhile would hold a connection (one-request-at-a-time servers, such as
    // the local DynamoDB, would wait for it for ever).
    let results = pages
        .map(|item| {
            let (bucket, target, progress) = (bucket.clone(), target.clone(), progress.clone());
            async move {
                let item = item?;
                let task = tokio::spawn(async move {
                    let outcome = process_one(&item, &bucket, &target, &progress).await;
                    (item.file, outcome)
                });
                task.await.map_err(|e| anyhow::anyhow!("a file's task failed: {e}"))
            }
        })
        .buffer_unordered(options.parallel.max(1))
        .ready_chunks(options.batch.max(1));
    let mut results = std::pin::pin!(results);

    let mut summary = Summary::default();
    while let Some(chunk) = results.next().await {
        let chunk: Vec<(LegacyFile, FileOutcome)> = chunk.into_iter().collect::<anyhow::Result<_>>()?;
        commit(writer, &target, &chunk, &mut summary, report).await?;
        report.flush()?;
        progress.advance(chunk.len() as u64);
    }
    summary.bytes_read = progress.bytes();
    report.summary(&summary)?;
    Ok(summary)
}

async fn process_one(item: &Item, bucket: &Bucket, target: &Target, progress: &Progress) -> FileOutcome {
    let file = &item.file;
    if file.live_refs().next().is_none() {
        return FileOutcome::Unreferenced;
    }
    if let Some((sha256, outcome, reason)) = &item.done {
        return match outcome.as_str() {
            "refused" => {
                FileOutcome::Refused { sha256: Some(sha256.clone()), reason: reason.clone().unwrap_or_default() }
            }
            _ => FileOutcome::Stored { sha256: sha256.clone(), stored_sha256: None, fresh: false },
        };
    }
    let max = target.app.config.limits.max_any_bytes();
    let bytes = match bucket.fetch(&file.md5, max).await {
        Ok(Fetched::Bytes(b)) => b,
        Ok(Fetched::Missing) => return FileOutcome::Missing,
        Ok(Fetched::TooLarge(_)) => return FileOutcome::Refused { sha256: None, reason: "too_large".into() },
        Err(e) => return FileOutcome::Failed(format!("{e:#}")),
    };
    progress.read(bytes.len() as u64);
    let actual = hex::encode(Md5::digest(&bytes));
    if actual != file.md5 {
        return FileOutcome::WrongMd5 { actual };
    }
    let hash = Sha256Hash::of(&bytes);
    let sha256 = hash.to_hex();
    match process_bytes(&target.app.processing(&*target.blobs), hash, bytes, OffsetDateTime::now_utc()).await {
        Ok(Outcome::Ready(info)) => FileOutcome::Stored {
            sha256,
            stored_sha256: (info.stored_hash != hash).then(|| info.stored_hash.to_hex()),
            fresh: true,
        },
        Ok(Outcome::Rejected(reason)) => FileOutcome::Refused { sha256: Some(sha256), reason: reason.code().into() },
        Ok(Outcome::Skipped(_)) => match target.app.media.get(&hash).await {
            Ok(Some(r)) if r.finally_rejected() => FileOutcome::Refused {
                sha256: Some(sha256),
                reason: r.reason.map(|x| x.code().to_owned()).unwrap_or_else(|| "rejected".into()),
            },
            Ok(Some(r)) => FileOutcome::Stored {
                sha256,
                stored_sha256: r.stored_hash.filter(|s| *s != hash).map(|s| s.to_hex()),
                fresh: false,
            },
            Ok(None) => FileOutcome::Failed("the record vanished while it was processed".into()),
            Err(e) => FileOutcome::Failed(e.to_string()),
        },
        Err(e) => FileOutcome::Failed(e.to_string()),
    }
}

/// One batch's results: the ledger, then references (recorded, synced, entered), then the report.
async fn commit(
    db: &mut Client,
    target: &Target,
    chunk: &[(LegacyFile, FileOutcome)],
    summary: &mut Summary,
    report: &mut Report,
) -> anyhow::Result<()> {
    // Files finished for good enter the ledger first: a crash after this redoes only references.
    for (file, outcome) in chunk {
        summary.files += 1;
        let entry = match outcome {
            FileOutcome::Stored { sha256, stored_sha256, fresh } => {
                if *fresh {
                    summary.imported += 1;
                } else {
                    summary.already_there += 1;
                }
                report.file(
                    file,
                    sha256,
                    stored_sha256.as_deref(),
                    if *fresh { "imported" } else { "already_there" },
                )?;
                Some((
                    sha256.as_str(),
                    if *fresh { "imported" } else { "already_there" },
                    None,
                    stored_sha256.as_deref(),
                ))
            }
            FileOutcome::Refused { sha256, reason } => {
                summary.refused += 1;
                report.problem(file, "refused", Some(reason), sha256.as_deref())?;
                sha256.as_deref().map(|s| (s, "refused", Some(reason.as_str()), None))
            }
            FileOutcome::Missing => {
                summary.missing += 1;
                report.problem(file, "missing_object", None, None)?;
                None
            }
            FileOutcome::WrongMd5 { actual } => {
                summary.wrong_md5 += 1;
                report.problem(file, "wrong_md5", Some(&format!("the object's MD5 is {actual}")), None)?;
                None
            }
            FileOutcome::Unreferenced => {
                summary.unreferenced += 1;
                report.unreferenced(file)?;
                None
            }
            FileOutcome::Failed(e) => {
                summary.failed += 1;
                report.problem(file, "failed", Some(e), None)?;
                None
            }
        };
        if let Some((sha256, outcome, reason, stored)) = entry {
            db.execute(
                "INSERT INTO anki.media_legacy_files (media_id, md5, sha256, outcome, reason, stored_sha256)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (media_id) DO UPDATE SET md5 = excluded.md5, sha256 = excluded.sha256,
                   outcome = CASE WHEN anki.media_legacy_files.outcome = 'refused' THEN excluded.outcome
                                  ELSE anki.media_legacy_files.outcome END,
                   reason = excluded.reason,
                   stored_sha256 = coalesce(excluded.stored_sha256, anki.media_legacy_files.stored_sha256)",
                &[&file.media_id, &file.md5, &sha256, &outcome, &reason, &stored],
            )
            .await?;
        }
        summary.deleted_note_references += file.refs.iter().filter(|r| r.note == NoteState::Deleted).count() as u64;
    }

    // References of stored files that no earlier run entered.
    let ref_ids: Vec<i64> = chunk
        .iter()
        .filter(|(_, o)| matches!(o, FileOutcome::Stored { .. }))
        .flat_map(|(f, _)| f.live_refs().map(|r| r.id))
        .collect();
    let entered: BTreeSet<i64> = db
        .query("SELECT reference_id FROM anki.media_legacy_references WHERE reference_id = ANY($1)", &[&ref_ids])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut todo: Vec<(i64, i64, &str, &str)> = Vec::new();
    for (file, outcome) in chunk {
        for r in &file.refs {
            if r.note == NoteState::Gone {
                summary.references_without_note += 1;
                report.reference(file, r, "note_gone", None)?;
                continue;
            }
            if r.note == NoteState::Deleted {
                continue;
            }
            let FileOutcome::Stored { sha256, .. } = outcome else { continue };
            if entered.contains(&r.id) {
                summary.references_already += 1;
                continue;
            }
            match (r.note_id, filename_problem(&r.file_name)) {
                (Some(note), None) => todo.push((r.id, note, r.file_name.as_str(), sha256.as_str())),
                (_, Some(problem)) => {
                    summary.references_refused += 1;
                    report.reference(file, r, "bad_filename", Some(problem))?;
                }
                (None, None) => {
                    summary.references_without_note += 1;
                    report.reference(file, r, "note_gone", None)?;
                }
            }
        }
    }
    if todo.is_empty() {
        return Ok(());
    }
    let notes: Vec<i64> = todo.iter().map(|t| t.1).collect::<BTreeSet<_>>().into_iter().collect();
    let keys = decks::deck_keys_of_notes(&*db, &notes).await?;
    let mut synced = Vec::new();
    for &(ref_id, note, filename, sha256) in &todo {
        if !keys.contains_key(&note) {
            summary.references_refused += 1;
            let (file, r) = find(chunk, ref_id);
            report.reference(file, r, "deck_gone", Some("the note's deck tree has no human_hash"))?;
            continue;
        }
        record_file(&*db, note, filename, sha256, None).await?;
        synced.push((ref_id, note, filename, sha256));
    }
    let notes: Vec<i64> = synced.iter().map(|t| t.1).collect::<BTreeSet<_>>().into_iter().collect();
    target.sync.sync_notes(db, &notes).await?;
    for &(ref_id, note, filename, sha256) in &synced {
        db.execute(
            "INSERT INTO anki.media_legacy_references (reference_id, note_id, filename, sha256) VALUES ($1, $2, $3, $4)
             ON CONFLICT (reference_id) DO NOTHING",
            &[&ref_id, &note, &filename, &sha256],
        )
        .await?;
        summary.references_imported += 1;
    }
    Ok(())
}

fn find(chunk: &[(LegacyFile, FileOutcome)], ref_id: i64) -> (&LegacyFile, &source::LegacyRef) {
    chunk
        .iter()
        .find_map(|(f, _)| f.refs.iter().find(|r| r.id == ref_id).map(|r| (f, r)))
        .expect("a reference of this batch")
}
