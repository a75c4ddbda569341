//! The media record's lifecycle, in one place, deletion included.
//!
//! ```text
//!  (none) ──upload URL──▶ pending ──process──▶ ready
//!    │                       └──────process──▶ rejected ──upload URL (hash_mismatch only)──▶ pending
//!    └──first reference──▶ missing ──upload URL──▶ pending
//!  ready | rejected | pending | missing, count 0 and unchanged for the grace period
//!        ──sweep──▶ deleting ──objects removed──▶ (none)
//! ```
//!
//! Why a sweep never deletes media that a concurrent request is about to reference: the sweep
//! first turns the record `deleting` with a conditional write that requires count 0 and an
//! unchanged `updated_at` (every reference change and upload touches it). From then on a
//! reference transaction's increment is conditioned on the status not being `deleting`, so it
//! cannot commit; it waits and retries, and once the record is gone it creates a `missing` one,
//! whose next upload stores the bytes again. Conversely, if the reference commits first, the
//! count or `updated_at` has changed and the sweep's conditional write fails. Processing an upload
//! may only mark a record ready while it is not `deleting` (and exists), so an upload racing the
//! sweep is retried rather than left pointing at deleted bytes.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use time::OffsetDateTime;

use crate::app::App;
use crate::clock::now_rfc3339;
use crate::config::Config;
use crate::error::StoreError;
use crate::hash::Sha256Hash;
use crate::model::{MediaRecord, MediaStatus};
use crate::store::BlobStore;

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct SweepReport {
    pub scanned: usize,
    pub deleted: usize,
    pub bytes_reclaimed: u64,
    /// Pending records whose upload never arrived.
    pub expired_uploads: usize,
    /// Unreferenced, but changed within the grace period.
    pub too_recent: usize,
    /// Changed between scan and delete: left alone.
    pub raced: usize,
    /// Quota holds given back because their upload never came.
    pub holds_released: usize,
}

/// How long after its last URL was issued a hold still waits for its upload: the URL's lifetime
/// plus S3's event retries (up to an hour). An upload that lands is settled by processing.
pub fn unused_hold_cutoff(config: &Config, now: OffsetDateTime) -> OffsetDateTime {
    now - time::Duration::seconds(i64::from(config.url_ttl_secs)) - time::Duration::hours(1)
}

fn last_change(r: &MediaRecord) -> Option<OffsetDateTime> {
    let at = r.updated_at.as_deref().or(r.created_at.as_deref())?;
    OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
}

/// Delete media whose count has stayed zero longer than `grace`, re-checking at delete time.
pub async fn sweep(
    app: &App,
    blobs: &dyn BlobStore,
    now: OffsetDateTime,
    grace: time::Duration,
) -> Result<SweepReport, StoreError> {
    let now_s = now_rfc3339(now);
    let keys = &app.config.keys;
    let mut report = SweepReport::default();
    for r in app.media.unreferenced().await? {
        report.scanned += 1;
        // A record left `deleting` by an interrupted sweep is finished without waiting again.
        if r.status != MediaStatus::Deleting {
            if last_change(&r).is_some_and(|t| now - t < grace) {
                report.too_recent += 1;
                continue;
            }
            if !app.media.begin_delete(&r.hash, r.updated_at.as_deref(), &now_s).await? {
                report.raced += 1;
                continue;
            }
        }
        for key in [keys.media(&r.hash), keys.thumb(&r.hash), keys.upload(&r.hash)] {
            blobs.delete(&key).await?;
        }
        if let Some(alias) = r.stored_hash.filter(|s| *s != r.hash) {
            app.media.delete_alias(&alias, &r.hash).await?;
        }
        if app.media.finish_delete(&r.hash, &now_s).await? {
            report.deleted += 1;
            report.bytes_reclaimed += r.stored_size.unwrap_or(0);
            if r.status == MediaStatus::Pending {
                report.expired_uploads += 1;
            }
        } else {
            report.raced += 1;
        }
    }
    report.holds_released = app.quotas.release_unused(&now_rfc3339(unused_hold_cutoff(&app.config, now))).await?;
    tracing::info!(
        scanned = report.scanned,
        deleted = report.deleted,
        bytes_reclaimed = report.bytes_reclaimed,
        expired_uploads = report.expired_uploads,
        too_recent = report.too_recent,
        raced = report.raced,
        holds_released = report.holds_released,
        "sweep finished"
    );
    Ok(report)
}

#[derive(Debug, Default, Serialize)]
pub struct Drift {
    pub hash: String,
    pub recorded: i64,
    pub actual: i64,
}

#[derive(Debug, Default, Serialize)]
pub struct CountsReport {
    pub records: usize,
    pub reference_items: i64,
    pub drift: Vec<Drift>,
    pub fixed: usize,
    /// Referenced hashes that have no record at all.
    pub references_without_record: Vec<String>,
    /// Objects under the final prefix with no ready record.
    pub objects_without_record: Vec<String>,
    /// Ready records whose object is not there.
    pub records_without_object: Vec<String>,
}

/// Recompute counts from the reference items; report (and with `fix`, repair) drift; list stored
/// objects without a record and records without an object.
pub async fn reconcile_counts(
    app: &App,
    blobs: &dyn BlobStore,
    fix: bool,
    now: OffsetDateTime,
) -> Result<CountsReport, StoreError> {
    let now_s = now_rfc3339(now);
    let counts: BTreeMap<Sha256Hash, i64> = app.refs.count_all().await?;
    let records = app.media.scan_all().await?;
    let mut report =
        CountsReport { records: records.len(), reference_items: counts.values().sum(), ..Default::default() };
    let mut known = HashSet::new();
    for r in records.iter().filter(|r| r.alias_of.is_none()) {
        known.insert(r.hash);
        let actual = counts.get(&r.hash).copied().unwrap_or(0);
        if r.ref_count != actual {
            report.drift.push(Drift { hash: r.hash.to_hex(), recorded: r.ref_count, actual });
            if fix && app.media.set_ref_count(&r.hash, r.ref_count, actual, &now_s).await? {
                report.fixed += 1;
            }
        }
    }
    report.references_without_record = counts.keys().filter(|h| !known.contains(h)).map(Sha256Hash::to_hex).collect();

    let keys = &app.config.keys;
    let stored: HashSet<String> = blobs.list(&keys.media_prefix).await?.into_iter().map(|(k, _)| k).collect();
    let ready: HashSet<String> = records
        .iter()
        .filter(|r| r.status == MediaStatus::Ready && r.alias_of.is_none())
        .filter_map(|r| r.stored_key.clone())
        .collect();
    report.objects_without_record = stored.difference(&ready).cloned().collect();
    report.records_without_object = ready.difference(&stored).cloned().collect();
    report.objects_without_record.sort();
    report.records_without_object.sort();
    tracing::info!(
        records = report.records,
        drift = report.drift.len(),
        fixed = report.fixed,
        objects_without_record = report.objects_without_record.len(),
        records_without_object = report.records_without_object.len(),
        "reconcile finished"
    );
    Ok(report)
}

/// What the sweep-orphans function is asked to do. An EventBridge schedule delivers its custom
/// input as is (not an `EventBridgeEvent`), so this is the whole event. There is no default: this
/// function deletes, so anything that is not exactly one of these commands is refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum SweepCommand {
    /// Delete media unreferenced for longer than the grace period.
    Sweep {
        /// Overrides the configured grace period.
        #[serde(default)]
        grace_seconds: Option<i64>,
    },
    /// Recompute reference counts and list inconsistencies.
    Reconcile {
        /// Repair drifted counts.
        #[serde(default)]
        fix: bool,
    },
}

impl SweepCommand {
    /// The command in an event, or why it is not one (`{"mode": "sweep"}`,
    /// `{"mode": "sweep", "grace_seconds": 3600}`, `{"mode": "reconcile", "fix": true}`).
    pub fn from_event(event: serde_json::Value) -> Result<Self, CommandError> {
        let command: Self = serde_json::from_value(event).map_err(|e| CommandError::Malformed(e.to_string()))?;
        match command {
            Self::Sweep { grace_seconds: Some(g) } if g < 0 => Err(CommandError::NegativeGrace(g)),
            command => Ok(command),
        }
    }
}

/// Why an event is not a sweep-orphans command. Nothing has run when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(
        "not a sweep-orphans command ({0}); expected {{\"mode\": \"sweep\", \"grace_seconds\"?: n}} or {{\"mode\": \"reconcile\", \"fix\"?: bool}}"
    )]
    Malformed(String),
    #[error("not a sweep-orphans command: grace_seconds is {0}; it must be 0 or more")]
    NegativeGrace(i64),
}

/// Run a command; the answer is the report as JSON.
pub async fn run(
    app: &App,
    blobs: &dyn BlobStore,
    command: &SweepCommand,
    now: OffsetDateTime,
) -> Result<serde_json::Value, StoreError> {
    let to_json = |v: Result<serde_json::Value, serde_json::Error>| v.map_err(|e| StoreError::new("report", e));
    match *command {
        SweepCommand::Sweep { grace_seconds } => {
            let grace = time::Duration::seconds(grace_seconds.unwrap_or(app.config.sweep_grace_secs));
            to_json(serde_json::to_value(sweep(app, blobs, now, grace).await?))
        }
        SweepCommand::Reconcile { fix } => to_json(serde_json::to_value(reconcile_counts(app, blobs, fix, now).await?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(file: &str) -> serde_json::Value {
        let path = format!("{}/../events/{file}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).expect("an event file")).expect("JSON")
    }

    #[test]
    fn the_sample_events_are_the_commands_they_say() {
        assert_eq!(
            SweepCommand::from_event(event("sweep-orphans.json")).unwrap(),
            SweepCommand::Sweep { grace_seconds: None }
        );
        assert_eq!(SweepCommand::from_event(event("reconcile.json")).unwrap(), SweepCommand::Reconcile { fix: false });
        assert_eq!(
            SweepCommand::from_event(json!({"mode": "sweep", "grace_seconds": 0})).unwrap(),
            SweepCommand::Sweep { grace_seconds: Some(0) }
        );
        assert_eq!(
            SweepCommand::from_event(json!({"mode": "reconcile", "fix": true})).unwrap(),
            SweepCommand::Reconcile { fix: true }
        );
    }

    /// A malformed command once ran the deleting sweep (it fell back to the default).
    #[test]
    fn anything_but_a_well_formed_command_is_refused() {
        let scheduled_event = json!({"version": "0", "id": "x", "detail-type": "Scheduled Event",
            "source": "aws.events", "time": "2026-12-01T00:00:00Z", "detail": {}});
        for bad in [
            json!({"mode": "reconcile", "fix": "true"}),
            json!({"mode": "sweeep"}),
            json!({"mode": "sweep", "grace": 0}),
            json!({"mode": "sweep", "grace_seconds": "0"}),
            json!({"mode": "sweep", "grace_seconds": -1}),
            json!({"mode": "reconcile", "fix": true, "extra": 1}),
            json!({"fix": true}),
            json!({}),
            json!(null),
            json!("sweep"),
            scheduled_event,
        ] {
            let err = SweepCommand::from_event(bad.clone()).expect_err(&bad.to_string());
            assert!(err.to_string().contains("sweep"), "{bad}: {err}");
        }
    }

    /// The refusal happens before anything runs: nothing is deleted from a store holding an
    /// unreferenced record past any grace period.
    #[tokio::test]
    async fn a_refused_command_deletes_nothing() {
        let (app, blobs) = App::in_memory_with_blobs("k");
        let hash = Sha256Hash::of(b"orphan");
        let old = "2020-01-01T00:00:00Z";
        app.media.ensure_record(&hash, old).await.expect("a record");
        for bad in [json!({"mode": "reconcile", "fix": "true"}), json!({})] {
            assert!(SweepCommand::from_event(bad).is_err());
        }
        assert!(crate::store::lookup(app.media.as_ref(), &[hash]).await.unwrap().contains_key(&hash));
        // The same record is swept by a real command, so the check above can fail.
        let command = SweepCommand::from_event(json!({"mode": "sweep", "grace_seconds": 0})).unwrap();
        let report = run(&app, &*blobs, &command, OffsetDateTime::now_utc()).await.unwrap();
        assert_eq!(report["deleted"], json!(1), "{report}");
        assert!(crate::store::lookup(app.media.as_ref(), &[hash]).await.unwrap().is_empty());
    }

    /// Sweep and reconcile over the in-memory store: an unreferenced record past the grace period
    /// goes with its objects, a recent one and a referenced one stay; a drifted count is found,
    /// and repaired only when asked.
    #[tokio::test]
    async fn sweep_and_reconcile_on_the_memory_store() {
        let (app, blobs) = App::in_memory_with_blobs("k");
        let now = OffsetDateTime::now_utc();
        let long_ago = "2020-01-01T00:00:00Z";
        let (old, recent, used) = (Sha256Hash::of(b"old"), Sha256Hash::of(b"recent"), Sha256Hash::of(b"used"));
        app.media.ensure_record(&old, long_ago).await.unwrap();
        app.media.ensure_record(&recent, &now_rfc3339(now)).await.unwrap();
        app.media.ensure_record(&used, long_ago).await.unwrap();
        let desired = crate::references::NoteSet::from([("u.png".to_string(), used)]);
        crate::references::set_note(&*app.refs, &*app.media, "d", "n1", &|_: &_| desired.clone(), long_ago)
            .await
            .unwrap();
        let keys = &app.config.keys;
        for key in [keys.media(&old), keys.thumb(&old), keys.upload(&old)] {
            blobs.put(&key, b"x".to_vec(), "application/octet-stream", None).await.unwrap();
        }

        let report = sweep(&app, &*blobs, now, time::Duration::hours(1)).await.unwrap();
        assert_eq!((report.scanned, report.deleted, report.too_recent, report.raced), (2, 1, 1, 0), "{report:?}");
        let left = crate::store::lookup(app.media.as_ref(), &[old, recent, used]).await.unwrap();
        assert!(!left.contains_key(&old) && left.contains_key(&recent) && left.contains_key(&used), "{left:?}");
        for key in [keys.media(&old), keys.thumb(&old), keys.upload(&old)] {
            assert!(!blobs.exists(&key).await.unwrap(), "{key}");
        }

        let clean = reconcile_counts(&app, &*blobs, false, now).await.unwrap();
        assert_eq!((clean.records, clean.reference_items, clean.drift.len()), (2, 1, 0), "{clean:?}");
        assert!(clean.objects_without_record.is_empty() && clean.references_without_record.is_empty());
        assert!(app.media.set_ref_count(&used, 1, 5, long_ago).await.unwrap());
        let found = reconcile_counts(&app, &*blobs, false, now).await.unwrap();
        assert_eq!(found.drift.len(), 1, "{found:?}");
        assert_eq!((found.drift[0].recorded, found.drift[0].actual, found.fixed), (5, 1, 0));
        assert_eq!(app.media.get(&used).await.unwrap().unwrap().ref_count, 5, "found, not fixed");
        assert_eq!(reconcile_counts(&app, &*blobs, true, now).await.unwrap().fixed, 1);
        assert_eq!(app.media.get(&used).await.unwrap().unwrap().ref_count, 1);
        assert!(reconcile_counts(&app, &*blobs, false, now).await.unwrap().drift.is_empty());
    }
}
