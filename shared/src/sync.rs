//! Keeping AnkiCollab's Postgres equal to DynamoDB (the sync-postgres function).
//!
//! DynamoDB is the source of truth. Two of its tables are mirrored: the deck index (deck,
//! filename → hash, note count) into `anki.media`, and the media records (not their aliases) into
//! `anki.stored_media_files`. The tables' streams deliver, for every change of an item, a record
//! with the item's new state and a sequence number that grows with each change of that item.
//!
//! The mirror applies a record only if its sequence number is higher than the last one it applied
//! to the same item, removals included (`anki.media_sync_versions`). So the result depends on
//! which records arrived, not on how often or in which order: duplicates, replays after a crash
//! and retried batches all end in the state of each item's latest record, which is its state in
//! DynamoDB.
//!
//! Reconcile (also the backfill of an empty database) takes a snapshot of Postgres first and scans
//! DynamoDB second. With `fix`, it rewrites a row that differs only if no stream record has been
//! applied to that item since the snapshot. Whatever changed after the scan has a stream record
//! still to come, with a higher sequence number, so a repair never has the last word over a newer
//! change.

use std::collections::BTreeMap;

use aws_lambda_events::dynamodb::{Event, EventRecord};
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::StoreError;
use crate::hash::Sha256Hash;
use crate::model::{MediaRecord, MediaStatus};
use crate::store::dynamo::deck_item;
use crate::store::mirror::{Change, FileRow, Key, Mirror, Row, StoredRow};
use crate::store::{DeckFile, DeckIndex, MediaRepo};

/// The deck index's item as a row; `None` when no note uses it (the API treats it as absent).
pub fn file_row(f: DeckFile) -> Option<FileRow> {
    (f.notes > 0).then(|| FileRow {
        updated_at: timestamp(f.updated_at.as_deref()),
        deck: f.deck,
        filename: f.filename,
        hash: f.hash,
        notes: f.notes,
    })
}

/// A media record as a row; `None` for alias items, which only point at another record.
pub fn stored_row(r: MediaRecord) -> Option<StoredRow> {
    if r.alias_of.is_some() {
        return None;
    }
    let status = match r.status {
        MediaStatus::Pending => "pending",
        MediaStatus::Ready => "ready",
        MediaStatus::Rejected => "rejected",
        MediaStatus::Missing => "missing",
        MediaStatus::Deleting => "deleting",
    };
    Some(StoredRow {
        hash: r.hash,
        s3_key: r.stored_key,
        reference_count: r.ref_count,
        status: status.into(),
        size: r.size.and_then(|v| i64::try_from(v).ok()),
        stored_size: r.stored_size.and_then(|v| i64::try_from(v).ok()),
        content_type: r.content_type,
        width: r.width.and_then(|v| i32::try_from(v).ok()),
        height: r.height.and_then(|v| i32::try_from(v).ok()),
        duration_ms: r.duration_ms.and_then(|v| i64::try_from(v).ok()),
        stored_hash: r.stored_hash.map(|h| h.to_hex()),
        thumb_key: r.thumb_key,
        reject_reason: r.reason.map(|reason| reason.code().to_string()),
        updated_at: timestamp(r.updated_at.as_deref()),
    })
}

/// RFC 3339 to the microsecond precision Postgres keeps, so that equal times compare equal.
fn timestamp(s: Option<&str>) -> Option<OffsetDateTime> {
    let t = OffsetDateTime::parse(s?, &time::format_description::well_known::Rfc3339).ok()?;
    t.replace_nanosecond(t.nanosecond() / 1000 * 1000).ok().map(|t| t.to_offset(time::UtcOffset::UTC))
}

/// The tables whose streams are mirrored.
#[derive(Debug, Clone)]
pub struct StreamTables {
    pub media: String,
    pub deck_files: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SyncError {
    #[error("stream record without a valid sequence number")]
    BadSequence,
    #[error("stream record from an unknown table: {0}")]
    UnknownTable(String),
    #[error("stream record with an unreadable item: {0}")]
    BadItem(String),
}

/// What a stream record means for the mirror; `None` for records it does not mirror (aliases).
pub fn change_from_record(tables: &StreamTables, record: &EventRecord) -> Result<Option<Change>, SyncError> {
    let seq = record.change.sequence_number.clone().unwrap_or_default();
    if seq.is_empty() || seq.len() > 64 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SyncError::BadSequence);
    }
    // arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL
    let arn = record.event_source_arn.as_deref().unwrap_or_default();
    let table = arn.split('/').nth(1).or(record.table_name.as_deref()).unwrap_or_default();
    let removed = record.event_name == "REMOVE";
    let bad = |e: serde_dynamo::Error| SyncError::BadItem(e.to_string());
    if table == tables.deck_files {
        #[derive(Deserialize)]
        struct DeckKey {
            deck: String,
            filename: String,
        }
        let k: DeckKey = serde_dynamo::from_item(record.change.keys.clone()).map_err(bad)?;
        // The filename's row holds what it resolves to now (see `store::refs::FileVersions`); an item
        // no note uses (a count-down of an entry already gone, say) has no row.
        let row = if removed {
            None
        } else {
            deck_item::deck_file(&record.change.new_image).and_then(file_row).map(Row::File)
        };
        Ok(Some(Change { key: Key::File { deck: k.deck, filename: k.filename }, seq, row }))
    } else if table == tables.media {
        #[derive(Deserialize)]
        struct MediaKey {
            hash: Sha256Hash,
        }
        let k: MediaKey = serde_dynamo::from_item(record.change.keys.clone()).map_err(bad)?;
        let image = if removed { &record.change.old_image } else { &record.change.new_image };
        // Aliases are not mirrored. A removal without its old image cannot tell, and deleting a
        // row that does not exist is harmless.
        if image.get("alias_of").is_some() {
            return Ok(None);
        }
        // Every write sets a status; an image without one (moto first emits the bare key of an
        // item an update creates) describes no record yet.
        let row = if removed || image.get("status").is_none() {
            None
        } else {
            let r: MediaRecord = serde_dynamo::from_item(image.clone()).map_err(bad)?;
            stored_row(r).map(Row::Stored)
        };
        Ok(Some(Change { key: Key::Stored(k.hash), seq, row }))
    } else {
        Err(SyncError::UnknownTable(table.to_string()))
    }
}

/// Apply a stream batch in order. A record that fails is reported, with every record after it,
/// as a batch item failure: Lambda then retries from that record, and the records before it,
/// already applied, are not lost.
pub async fn apply_stream(mirror: &dyn Mirror, tables: &StreamTables, event: &Event) -> DynamoDbEventResponse {
    let mut response = DynamoDbEventResponse::default();
    for (i, record) in event.records.iter().enumerate() {
        let outcome = match change_from_record(tables, record) {
            Ok(None) => Ok(()),
            Ok(Some(change)) => mirror.apply(&change).await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = outcome {
            tracing::error!(%error, event_id = %record.event_id, "stream record not applied; the batch resumes here");
            response.batch_item_failures = event.records[i..]
                .iter()
                .map(|r| {
                    let mut failure = DynamoDbBatchItemFailure::default();
                    failure.item_identifier = r.change.sequence_number.clone();
                    failure
                })
                .collect();
            break;
        }
    }
    response
}

/// What `reconcile_mirror` found and did. Lists are capped; counts are not.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct MirrorReport {
    pub files_in_dynamodb: usize,
    pub stored_in_dynamodb: usize,
    /// In DynamoDB, not in Postgres.
    pub missing: usize,
    /// In Postgres, not in DynamoDB.
    pub extra: usize,
    /// In both, different.
    pub differing: usize,
    pub fixed: usize,
    /// Not fixed because a stream record changed the row since the snapshot.
    pub changed_meanwhile: usize,
    pub legacy_rows: i64,
    /// Rows whose deck key names no deck in AnkiCollab's `anki.decks` (their `deck` is null).
    pub unresolved_decks: i64,
    /// Rows whose AnkiCollab deck id was out of date (a deck created or deleted since).
    pub stale_deck_ids: i64,
    /// Of those, given their current id by this run.
    pub deck_ids_fixed: u64,
    pub examples: Vec<String>,
}

impl MirrorReport {
    pub fn differences(&self) -> usize {
        self.missing + self.extra + self.differing
    }
}

const EXAMPLES: usize = 50;

/// Compare Postgres with DynamoDB and, with `fix`, make Postgres equal (the backfill, too).
pub async fn reconcile_mirror(
    media: &dyn MediaRepo,
    decks: &dyn DeckIndex,
    mirror: &dyn Mirror,
    fix: bool,
) -> Result<MirrorReport, StoreError> {
    // Snapshot first, scan second: see the module comment.
    let snapshot = mirror.snapshot().await?;
    let files = decks.scan_all().await?;
    let records = media.scan_all().await?;
    let mut report = MirrorReport {
        files_in_dynamodb: files.len(),
        stored_in_dynamodb: records.len(),
        legacy_rows: snapshot.legacy_rows,
        unresolved_decks: snapshot.unresolved_decks,
        stale_deck_ids: snapshot.stale_deck_ids,
        ..Default::default()
    };
    if snapshot.unresolved_decks > 0 {
        tracing::warn!(rows = snapshot.unresolved_decks, "mirror rows whose deck key names no AnkiCollab deck");
    }
    let mut want: BTreeMap<Key, Row> = BTreeMap::new();
    for row in files.into_iter().filter_map(file_row).map(Row::File) {
        want.insert(row.key(), row);
    }
    for row in records.into_iter().filter_map(stored_row).map(Row::Stored) {
        want.insert(row.key(), row);
    }

    let mut todo: Vec<(Key, Option<Row>)> = Vec::new();
    for (key, row) in &want {
        match snapshot.rows.get(key) {
            None => {
                report.missing += 1;
                todo.push((key.clone(), Some(row.clone())));
            }
            Some(have) if have != row => {
                report.differing += 1;
                todo.push((key.clone(), Some(row.clone())));
            }
            Some(_) => {}
        }
    }
    for key in snapshot.rows.keys().filter(|k| !want.contains_key(*k)) {
        report.extra += 1;
        todo.push((key.clone(), None));
    }
    report.examples =
        todo.iter().take(EXAMPLES).map(|(k, row)| describe(k, snapshot.rows.get(k), row.as_ref())).collect();
    if fix {
        for (key, row) in &todo {
            let seen = snapshot.versions.get(&key.item()).map(String::as_str);
            if mirror.repair(key, seen, row.as_ref()).await? {
                report.fixed += 1;
            } else {
                report.changed_meanwhile += 1;
            }
        }
        report.deck_ids_fixed = mirror.resolve_deck_ids().await?;
    }
    Ok(report)
}

fn describe(key: &Key, have: Option<&Row>, want: Option<&Row>) -> String {
    match (have, want) {
        (None, _) => format!("missing: {}", key.item()),
        (_, None) => format!("extra: {}", key.item()),
        (Some(have), Some(want)) => format!("differs: {} (postgres {have:?}, dynamodb {want:?})", key.item()),
    }
}

/// What sync-postgres is asked to do when it is not handed a stream batch.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum MirrorCommand {
    /// Apply the migrations.
    Migrate,
    /// Compare with DynamoDB; with `fix`, repair (on an empty database: the backfill).
    Reconcile {
        #[serde(default)]
        fix: bool,
    },
}

/// The function's whole job: a stream batch, or a command.
pub async fn handle(
    media: &dyn MediaRepo,
    decks: &dyn DeckIndex,
    mirror: &dyn Mirror,
    tables: &StreamTables,
    payload: serde_json::Value,
) -> Result<serde_json::Value, HandleError> {
    if payload.get("Records").is_some() {
        let event: Event = serde_json::from_value(payload).map_err(|e| HandleError::BadEvent(e.to_string()))?;
        let response = apply_stream(mirror, tables, &event).await;
        return serde_json::to_value(response).map_err(|e| HandleError::BadEvent(e.to_string()));
    }
    let command: MirrorCommand = serde_json::from_value(payload).map_err(|e| HandleError::BadEvent(e.to_string()))?;
    match command {
        MirrorCommand::Migrate => {
            mirror.migrate().await?;
            Ok(serde_json::json!({"migrated": true}))
        }
        MirrorCommand::Reconcile { fix } => {
            let report = reconcile_mirror(media, decks, mirror, fix).await?;
            tracing::info!(
                differences = report.differences(),
                fixed = report.fixed,
                "reconcile: {}",
                serde_json::to_string(&report).unwrap_or_default()
            );
            serde_json::to_value(report).map_err(|e| HandleError::BadEvent(e.to_string()))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error("not a DynamoDB stream event or a command: {0}")]
    BadEvent(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> StreamTables {
        StreamTables { media: "media".into(), deck_files: "deck-files".into() }
    }

    fn record(json: serde_json::Value) -> EventRecord {
        serde_json::from_value(json).expect("a stream record")
    }

    const H: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const H2: &str = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752";

    #[test]
    fn deck_file_records_become_rows_and_zero_notes_mean_gone() {
        let insert = record(serde_json::json!({
            "eventID": "1", "awsRegion": "us-east-1", "eventName": "INSERT", "eventSourceARN": "arn:aws:dynamodb:us-east-1:1:table/deck-files/stream/x",
            "dynamodb": {"SequenceNumber": "100", "SizeBytes": 1,
                "Keys": {"deck": {"S": "d1"}, "filename": {"S": "a b.png"}},
                "NewImage": {"deck": {"S": "d1"}, "filename": {"S": "a b.png"}, "hash": {"S": H}, "notes": {"N": "2"},
                             "updated_at": {"S": "2026-11-22T01:02:03.123456789Z"}}}
        }));
        let change = change_from_record(&tables(), &insert).unwrap().unwrap();
        assert_eq!(change.key.item(), "file d1 a b.png");
        assert_eq!(change.seq, "100");
        let Some(Row::File(row)) = change.row else { panic!("a file row") };
        assert_eq!((row.notes, row.hash.to_hex().as_str()), (2, H));
        assert_eq!(row.updated_at.unwrap().nanosecond(), 123_456_000);

        let mut zero = insert.clone();
        zero.change.new_image.insert("notes".into(), serde_dynamo::AttributeValue::N("0".into()));
        assert_eq!(change_from_record(&tables(), &zero).unwrap().unwrap().row, None);
    }

    #[test]
    fn media_records_skip_aliases_and_reject_bad_input() {
        let ready = record(serde_json::json!({
            "eventID": "2", "awsRegion": "us-east-1", "eventName": "MODIFY", "eventSourceARN": "arn:aws:dynamodb:us-east-1:1:table/media/stream/x",
            "dynamodb": {"SequenceNumber": "200000000000000000000001", "SizeBytes": 1, "Keys": {"hash": {"S": H}},
                "NewImage": {"hash": {"S": H}, "status": {"S": "ready"}, "ref_count": {"N": "3"},
                             "stored_key": {"S": format!("media/{H}")}, "size": {"N": "10"}}}
        }));
        let change = change_from_record(&tables(), &ready).unwrap().unwrap();
        let Some(Row::Stored(row)) = change.row else { panic!("a stored row") };
        assert_eq!((row.status.as_str(), row.reference_count, row.s3_key), ("ready", 3, Some(format!("media/{H}"))));

        let alias = record(serde_json::json!({
            "eventID": "3", "awsRegion": "us-east-1", "eventName": "INSERT", "eventSourceARN": "arn:aws:dynamodb:us-east-1:1:table/media/stream/x",
            "dynamodb": {"SequenceNumber": "5", "SizeBytes": 1, "Keys": {"hash": {"S": H2}},
                "NewImage": {"hash": {"S": H2}, "status": {"S": "ready"}, "alias_of": {"S": H}}}
        }));
        assert_eq!(change_from_record(&tables(), &alias), Ok(None));

        let mut no_seq = ready.clone();
        no_seq.change.sequence_number = Some("12a".into());
        assert_eq!(change_from_record(&tables(), &no_seq), Err(SyncError::BadSequence));
        let mut elsewhere = ready.clone();
        elsewhere.event_source_arn = Some("arn:aws:dynamodb:us-east-1:1:table/other/stream/x".into());
        assert_eq!(change_from_record(&tables(), &elsewhere), Err(SyncError::UnknownTable("other".into())));
        let mut bad_hash = ready;
        bad_hash.change.keys.insert("hash".into(), serde_dynamo::AttributeValue::S("nope".into()));
        assert!(matches!(change_from_record(&tables(), &bad_hash), Err(SyncError::BadItem(_))));
    }

    /// The backfill and the repair of drift, on the memory store and mirror: what the stack test
    /// `serial_backfill_and_reconcile_repair_what_differs` checks against Postgres, without one.
    #[tokio::test]
    async fn reconcile_backfills_and_repairs_drift_on_the_memory_store() {
        use crate::store::memory::{MemoryMirror, MemoryStore};
        use crate::store::refs::{ReferenceStore, Step};
        use crate::store::MediaRepo;

        let store = MemoryStore::default();
        let (h1, h2) = (Sha256Hash::parse(H).unwrap(), Sha256Hash::parse(H2).unwrap());
        let mut step = Step::default();
        step.add(crate::store::refs::RefOp::Add { filename: "a.png".into(), hash: h1 });
        step.add(crate::store::refs::RefOp::Add { filename: "b.png".into(), hash: h2 });
        let now = "2026-11-22T01:02:03Z";
        assert_eq!(store.commit("d1", "n1", &step, now).await.unwrap(), crate::store::refs::Commit::Done);
        let mirror = MemoryMirror::default();

        // Empty Postgres: everything is missing, and the fix backfills it.
        let first = reconcile_mirror(&store, &store, &mirror, true).await.unwrap();
        assert_eq!((first.files_in_dynamodb, first.stored_in_dynamodb, first.missing), (2, 2, 4));
        assert_eq!(first.fixed, 4);
        assert_eq!(reconcile_mirror(&store, &store, &mirror, false).await.unwrap().differences(), 0);

        // Drift both ways: a count changed in DynamoDB, a row Postgres has that DynamoDB does not.
        assert!(store.set_ref_count(&h1, 1, 5, now).await.unwrap());
        let stray = Key::File { deck: "d2".into(), filename: "x.png".into() };
        let row =
            Row::File(FileRow { deck: "d2".into(), filename: "x.png".into(), hash: h1, notes: 1, updated_at: None });
        assert!(mirror.apply(&Change { key: stray.clone(), seq: "5".into(), row: Some(row) }).await.unwrap());
        let found = reconcile_mirror(&store, &store, &mirror, false).await.unwrap();
        assert_eq!((found.differing, found.extra, found.fixed), (1, 1, 0), "reported, not fixed");
        let fixed = reconcile_mirror(&store, &store, &mirror, true).await.unwrap();
        assert_eq!(fixed.fixed, 2);
        let snapshot = mirror.snapshot().await.unwrap();
        assert!(!snapshot.rows.contains_key(&stray));
        let Some(Row::Stored(stored)) = snapshot.rows.get(&Key::Stored(h1)) else { panic!("h1 is mirrored") };
        assert_eq!(stored.reference_count, 5);
        assert_eq!(reconcile_mirror(&store, &store, &mirror, false).await.unwrap().differences(), 0);
    }

    #[test]
    fn commands_parse() {
        let c: MirrorCommand = serde_json::from_str(r#"{"mode": "reconcile", "fix": true}"#).unwrap();
        assert_eq!(c, MirrorCommand::Reconcile { fix: true });
        let c: MirrorCommand = serde_json::from_str(r#"{"mode": "migrate"}"#).unwrap();
        assert_eq!(c, MirrorCommand::Migrate);
        // A command with a wrong or unknown field is refused rather than read as its default.
        for bad in [
            r#"{"mode": "reconcile", "fix": "true"}"#,
            r#"{"mode": "reconcile", "fixx": true}"#,
            r#"{"mode": "backfill"}"#,
            r#"{}"#,
        ] {
            assert!(serde_json::from_str::<MirrorCommand>(bad).is_err(), "{bad}");
        }
    }
}
