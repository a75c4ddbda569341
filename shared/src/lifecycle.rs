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
//!
//! Why a sweep that dies part-way never blocks anyone: `deleting` is a claim that runs out
//! (`deleting_until`, [`SdkTimeouts::sweep_claim`](crate::config::SdkTimeouts::sweep_claim)).
//! The sweep deletes objects only right after taking or renewing the claim, and each of its calls
//! ends within the SDK's operation timeout, so once the claim has run out no deletion of that
//! sweep can still land. Then whoever needs the record (a reference, an upload, processing) takes
//! it back ([`take_back`]): it becomes `missing`, naming no object, and its next upload stores
//! the bytes again. A later sweep finishes an abandoned deletion by renewing the claim first; if
//! the record was taken back meanwhile, the renewal fails and the sweep leaves it alone.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use time::OffsetDateTime;

use crate::access::RevocationStore;
use crate::clock::now_rfc3339;
use crate::config::Config;
use crate::error::StoreError;
use crate::hash::Sha256Hash;
use crate::model::{MediaRecord, MediaStatus};
use crate::store::refs::ReferenceStore;
use crate::store::{BlobStore, MediaRepo, QuotaStore};

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct SweepReport {
    /// The grace period the sweep used: the one asked for, or, if that was shorter, the least
    /// that keeps API instances' memory of ready records true (`Config::min_sweep_grace`).
    pub grace_seconds: i64,
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
    /// Files a storage error stopped part-way; the next run finishes them.
    pub failed: usize,
    /// The first few of those, with the error.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<Failure>,
}

/// A file a run could not finish, and why.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Failure {
    pub hash: String,
    pub error: String,
}

/// How many failures a report names (it counts them all).
const FAILURES_NAMED: usize = 20;

fn record_failure(failed: &mut usize, failures: &mut Vec<Failure>, hash: &Sha256Hash, error: &StoreError, what: &str) {
    tracing::warn!(%hash, error = %error, "{what} failed for one file; going on with the next");
    *failed += 1;
    if failures.len() < FAILURES_NAMED {
        failures.push(Failure { hash: hash.to_hex(), error: error.to_string() });
    }
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

/// Whether a `deleting` record's claim has run out at `now` (one written before claims existed
/// has none, and counts as run out).
pub fn claim_expired(r: &MediaRecord, now: OffsetDateTime) -> bool {
    r.deleting_until.as_deref().is_none_or(|until| {
        OffsetDateTime::parse(until, &time::format_description::well_known::Rfc3339).map_or(true, |t| t < now)
    })
}

/// Take back those of `hashes` whose deletion was abandoned (a sweep died after claiming them
/// and its claim ran out): each becomes `missing`, so it takes references again and its next
/// upload stores its bytes. Returns how many were taken back.
pub async fn take_back(media: &dyn MediaRepo, hashes: &[Sha256Hash], now: OffsetDateTime) -> Result<usize, StoreError> {
    let now_s = now_rfc3339(now);
    let mut taken = 0;
    for hash in hashes {
        let Some(r) = media.get(hash).await? else { continue };
        if claim_expired(&r, now) && media.take_back(hash, r.deleting_until.as_deref(), &now_s).await? {
            tracing::warn!(%hash, claim = ?r.deleting_until, "took back a record an interrupted sweep left deleting");
            taken += 1;
        }
    }
    Ok(taken)
}

/// What became of one unreferenced record.
enum Swept {
    Deleted,
    TooRecent,
    Raced,
}

/// What the sweep, the count reconciliation and the operators' commands touch
/// ([`crate::App::lifecycle`]).
pub struct Ports<'a> {
    pub media: &'a dyn MediaRepo,
    pub refs: &'a dyn ReferenceStore,
    pub quotas: &'a dyn QuotaStore,
    pub blobs: &'a dyn BlobStore,
    pub revocations: &'a dyn RevocationStore,
    pub config: &'a Config,
}

/// Delete media whose count has stayed zero longer than `grace` (never less than
/// [`Config::min_sweep_grace`]), re-checking at delete time. A storage error on one file is
/// counted in the report, and the sweep goes on with the next.
pub async fn sweep(ports: &Ports<'_>, now: OffsetDateTime, grace: time::Duration) -> Result<SweepReport, StoreError> {
    let started = std::time::Instant::now();
    // Claims are timed by the clock, not by the run's start: a long run's last claims must last
    // as long as its first.
    let claim_until = || {
        let elapsed = time::Duration::try_from(started.elapsed()).unwrap_or(time::Duration::ZERO);
        now_rfc3339(now + elapsed + ports.config.sdk_timeouts.sweep_claim())
    };
    let grace = grace.max(ports.config.min_sweep_grace());
    let mut report = SweepReport { grace_seconds: grace.whole_seconds(), ..SweepReport::default() };
    for r in ports.media.unreferenced().await? {
        report.scanned += 1;
        match sweep_one(ports, &r, now, grace, &claim_until).await {
            Ok(Swept::Deleted) => {
                report.deleted += 1;
                report.bytes_reclaimed += r.stored_size.unwrap_or(0);
                if r.status == MediaStatus::Pending {
                    report.expired_uploads += 1;
                }
            }
            Ok(Swept::TooRecent) => report.too_recent += 1,
            Ok(Swept::Raced) => report.raced += 1,
            Err(e) => record_failure(&mut report.failed, &mut report.failures, &r.hash, &e, "sweep"),
        }
    }
    let cutoff = now_rfc3339(unused_hold_cutoff(ports.config, now));
    match ports.quotas.release_unused(&cutoff).await {
        Ok(n) => report.holds_released = n,
        Err(e) => {
            tracing::warn!(error = %e, "releasing unused quota holds failed; the next run retries");
            report.failed += 1;
        }
    }
    tracing::info!(
        scanned = report.scanned,
        deleted = report.deleted,
        bytes_reclaimed = report.bytes_reclaimed,
        expired_uploads = report.expired_uploads,
        too_recent = report.too_recent,
        raced = report.raced,
        holds_released = report.holds_released,
        failed = report.failed,
        "sweep finished"
    );
    Ok(report)
}

/// One record's deletion, in the steps a crash can fall between: claim, delete its objects,
/// drop its alias, remove the record.
async fn sweep_one(
    ports: &Ports<'_>,
    r: &MediaRecord,
    now: OffsetDateTime,
    grace: time::Duration,
    claim_until: &(dyn Fn() -> String + Sync),
) -> Result<Swept, StoreError> {
    let now_s = now_rfc3339(now);
    let claimed = if r.status == MediaStatus::Deleting {
        if !claim_expired(r, now) {
            // Another sweep is at work on it; renewing its claim would only hold a reference back
            // longer.
            return Ok(Swept::Raced);
        }
        // Left by an interrupted sweep: finished without waiting again, under a fresh claim.
        ports.media.renew_delete(&r.hash, &claim_until()).await?
    } else if last_change(r).is_some_and(|t| now - t < grace) {
        return Ok(Swept::TooRecent);
    } else {
        ports.media.begin_delete(&r.hash, r.updated_at.as_deref(), &now_s, &claim_until()).await?
    };
    if !claimed {
        return Ok(Swept::Raced);
    }
    let keys = &ports.config.keys;
    let objects = [keys.media(&r.hash), keys.thumb(&r.hash), keys.upload(&r.hash)];
    // At once, so that all of them land within the claim.
    futures::future::try_join_all(objects.iter().map(|key| ports.blobs.delete(key))).await?;
    if let Some(alias) = r.stored_hash.filter(|s| *s != r.hash) {
        ports.media.delete_alias(&alias, &r.hash).await?;
    }
    Ok(if ports.media.finish_delete(&r.hash, &now_s).await? { Swept::Deleted } else { Swept::Raced })
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
    /// Drifted counts a storage error kept from being fixed; the next run tries again.
    pub failed: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<Failure>,
}

/// Recompute counts from the reference items; report (and with `fix`, repair) drift; list stored
/// objects without a record and records without an object.
pub async fn reconcile_counts(ports: &Ports<'_>, fix: bool, now: OffsetDateTime) -> Result<CountsReport, StoreError> {
    let now_s = now_rfc3339(now);
    let counts: BTreeMap<Sha256Hash, i64> = ports.refs.count_all().await?;
    let records = ports.media.scan_all().await?;
    let mut report =
        CountsReport { records: records.len(), reference_items: counts.values().sum(), ..Default::default() };
    let mut known = HashSet::new();
    for r in records.iter().filter(|r| r.alias_of.is_none()) {
        known.insert(r.hash);
        let actual = counts.get(&r.hash).copied().unwrap_or(0);
        if r.ref_count != actual {
            report.drift.push(Drift { hash: r.hash.to_hex(), recorded: r.ref_count, actual });
            if fix {
                match ports.media.set_ref_count(&r.hash, r.ref_count, actual, &now_s).await {
                    Ok(true) => report.fixed += 1,
                    Ok(false) => {}
                    Err(e) => record_failure(&mut report.failed, &mut report.failures, &r.hash, &e, "reconcile"),
                }
            }
        }
    }
    report.references_without_record = counts.keys().filter(|h| !known.contains(h)).map(Sha256Hash::to_hex).collect();

    let keys = &ports.config.keys;
    let stored: HashSet<String> = ports.blobs.list(&keys.media_prefix).await?.into_iter().map(|(k, _)| k).collect();
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
        failed = report.failed,
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
    /// Refuse a user's tokens (every one, or those issued before `issued_before`, in seconds
    /// since the epoch) everywhere within a minute (`make revoke SUB=…`).
    Revoke {
        sub: String,
        #[serde(default)]
        issued_before: Option<u64>,
    },
    /// Take a user off the deny-list.
    Unrevoke { sub: String },
    /// The deny-list as it stands.
    Revocations,
}

impl SweepCommand {
    /// The command in an event, or why it is not one (`{"mode": "sweep"}`,
    /// `{"mode": "sweep", "grace_seconds": 3600}`, `{"mode": "reconcile", "fix": true}`).
    pub fn from_event(event: serde_json::Value) -> Result<Self, CommandError> {
        let command: Self = serde_json::from_value(event).map_err(|e| CommandError::Malformed(e.to_string()))?;
        match command {
            Self::Sweep { grace_seconds: Some(g) } if g < 0 => Err(CommandError::NegativeGrace(g)),
            Self::Revoke { sub, .. } | Self::Unrevoke { sub } if !crate::auth::is_valid_sub(&sub) => {
                Err(CommandError::Subject(sub))
            }
            command => Ok(command),
        }
    }
}

/// Why an event is not a sweep-orphans command. Nothing has run when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(
        "not a sweep-orphans command ({0}); expected {{\"mode\": \"sweep\", \"grace_seconds\"?: n}}, {{\"mode\": \"reconcile\", \"fix\"?: bool}}, {{\"mode\": \"revoke\", \"sub\": s, \"issued_before\"?: n}}, {{\"mode\": \"unrevoke\", \"sub\": s}} or {{\"mode\": \"revocations\"}}"
    )]
    Malformed(String),
    #[error("not a sweep-orphans command: grace_seconds is {0}; it must be 0 or more")]
    NegativeGrace(i64),
    #[error("not a sweep-orphans command: sub {0:?} is not 1-128 printable ASCII characters, as a token's")]
    Subject(String),
}

/// Why a command did not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the report: {0}")]
    Report(#[from] serde_json::Error),
}

/// Run a command; the answer is the report as JSON.
pub async fn run(
    ports: &Ports<'_>,
    command: &SweepCommand,
    now: OffsetDateTime,
) -> Result<serde_json::Value, RunError> {
    let revocations = ports.revocations;
    match command {
        SweepCommand::Sweep { grace_seconds } => {
            let grace = time::Duration::seconds(grace_seconds.unwrap_or(ports.config.sweep_grace_secs));
            Ok(serde_json::to_value(sweep(ports, now, grace).await?)?)
        }
        SweepCommand::Reconcile { fix } => Ok(serde_json::to_value(reconcile_counts(ports, *fix, now).await?)?),
        SweepCommand::Revoke { sub, issued_before } => {
            revocations.revoke(sub, crate::access::Revocation::issued_before(*issued_before)).await?;
            tracing::warn!(sub = %sub, ?issued_before, "revoked");
            Ok(serde_json::json!({"revoked": sub, "issued_before": issued_before, "honoured_within_secs": 60}))
        }
        SweepCommand::Unrevoke { sub } => {
            let was = revocations.unrevoke(sub).await?;
            tracing::warn!(sub = %sub, was_revoked = was, "unrevoked");
            Ok(serde_json::json!({"unrevoked": sub, "was_revoked": was}))
        }
        SweepCommand::Revocations => Ok(serde_json::to_value(revocations.deny_list().await?)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::App;
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

    /// `make revoke`'s commands: a subject is revoked (outright or by time), listed, and
    /// restored; a subject no token could carry is refused before anything is written.
    #[tokio::test]
    async fn revoke_commands_change_the_deny_list() {
        let (app, blobs) = App::in_memory_with_blobs("k");
        let now = OffsetDateTime::now_utc();
        let run_json = |v: serde_json::Value| {
            let (app, blobs) = (&app, &blobs);
            async move { run(&app.lifecycle(&**blobs), &SweepCommand::from_event(v).unwrap(), now).await.unwrap() }
        };
        run_json(json!({"mode": "revoke", "sub": "mallory"})).await;
        run_json(json!({"mode": "revoke", "sub": "bob", "issued_before": 1_800_000_000})).await;
        let list = run_json(json!({"mode": "revocations"})).await;
        assert_eq!(list, json!({"mallory": "all", "bob": {"issued_before": 1_800_000_000}}));
        assert_eq!(run_json(json!({"mode": "unrevoke", "sub": "mallory"})).await["was_revoked"], json!(true));
        assert_eq!(run_json(json!({"mode": "unrevoke", "sub": "mallory"})).await["was_revoked"], json!(false));
        assert_eq!(run_json(json!({"mode": "revocations"})).await, json!({"bob": {"issued_before": 1_800_000_000}}));
        for bad in [
            json!({"mode": "revoke"}),
            json!({"mode": "revoke", "sub": ""}),
            json!({"mode": "revoke", "sub": "a b"}),
            json!({"mode": "revoke", "sub": "x".repeat(129)}),
            json!({"mode": "revoke", "sub": "u", "issued_before": "yesterday"}),
            json!({"mode": "unrevoke", "sub": "u", "all": true}),
        ] {
            assert!(SweepCommand::from_event(bad.clone()).is_err(), "{bad}");
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
        let report = run(&app.lifecycle(&*blobs), &command, OffsetDateTime::now_utc()).await.unwrap();
        assert_eq!(report["deleted"], json!(1), "{report}");
        assert!(crate::store::lookup(app.media.as_ref(), &[hash]).await.unwrap().is_empty());
    }

    /// A sweep stopped between any two of its steps (DESIGN.md: a reference racing the sweeper wins).
    #[tokio::test]
    async fn a_sweep_stopped_between_any_two_steps_never_refuses_a_reference() {
        use crate::scenarios::{png, sweep_interrupted_at_every_step};
        use crate::store::faulty::{Faulty, When};
        let (mut app, store) = App::in_memory_with_blobs("s");
        let faulty = Faulty::new(app.media.clone(), store);
        app.media = faulty.clone();
        let seen = sweep_interrupted_at_every_step(&app, &faulty, &png, "deck").await.unwrap();
        // Claim, three objects, the alias, the record: six steps, each failed both ways.
        assert_eq!(seen.len(), 12, "{seen:?}");
        assert_eq!(seen.iter().map(|s| s.fail_at).max(), Some(5));
        let kept: Vec<(usize, When, bool)> = seen.iter().map(|s| (s.fail_at, s.when, s.kept)).collect();
        // Only a sweep that never claimed the record leaves it ready; every other is taken back.
        assert!(kept.contains(&(0, When::Before, true)), "{kept:?}");
        assert!(seen.iter().filter(|s| s.kept).count() == 1, "{seen:?}");
    }

    /// While a live sweep holds its claim a reference waits; the claim running out frees it.
    #[tokio::test]
    async fn a_live_claim_holds_a_reference_back_until_it_runs_out() {
        let (app, blobs) = App::in_memory_with_blobs("s");
        let bytes = crate::scenarios::png(7);
        let hash = Sha256Hash::of(&bytes);
        let now = OffsetDateTime::now_utc();
        crate::process::process_bytes(&app.processing(&*blobs), hash, bytes, now).await.unwrap();
        let seen = app.media.get(&hash).await.unwrap().unwrap().updated_at;
        let claim = now + time::Duration::seconds(30);
        assert!(app.media.begin_delete(&hash, seen.as_deref(), &now_rfc3339(now), &now_rfc3339(claim)).await.unwrap());
        assert_eq!(take_back(app.media.as_ref(), &[hash], now).await.unwrap(), 0, "the claim is live");
        // Another sweep leaves a live claim as it is: renewing it would hold the reference longer.
        let report = sweep(&app.lifecycle(&*blobs), now, time::Duration::ZERO).await.unwrap();
        assert_eq!((report.raced, report.deleted), (1, 0), "{report:?}");
        let r = app.media.get(&hash).await.unwrap().unwrap();
        assert_eq!(r.deleting_until, Some(now_rfc3339(claim)));
        let after = claim + time::Duration::SECOND;
        assert_eq!(take_back(app.media.as_ref(), &[hash], after).await.unwrap(), 1);
        let r = app.media.get(&hash).await.unwrap().unwrap();
        assert_eq!((r.status, r.stored_key, r.deleting_until), (MediaStatus::Missing, None, None));
        // The sweep coming back finds it taken and leaves it.
        assert!(!app.media.renew_delete(&hash, &now_rfc3339(after + time::Duration::MINUTE)).await.unwrap());
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

        let report = sweep(&app.lifecycle(&*blobs), now, time::Duration::hours(1)).await.unwrap();
        assert_eq!((report.scanned, report.deleted, report.too_recent, report.raced), (2, 1, 1, 0), "{report:?}");
        let left = crate::store::lookup(app.media.as_ref(), &[old, recent, used]).await.unwrap();
        assert!(!left.contains_key(&old) && left.contains_key(&recent) && left.contains_key(&used), "{left:?}");
        for key in [keys.media(&old), keys.thumb(&old), keys.upload(&old)] {
            assert!(!blobs.exists(&key).await.unwrap(), "{key}");
        }

        let clean = reconcile_counts(&app.lifecycle(&*blobs), false, now).await.unwrap();
        assert_eq!((clean.records, clean.reference_items, clean.drift.len()), (2, 1, 0), "{clean:?}");
        assert!(clean.objects_without_record.is_empty() && clean.references_without_record.is_empty());
        assert!(app.media.set_ref_count(&used, 1, 5, long_ago).await.unwrap());
        let found = reconcile_counts(&app.lifecycle(&*blobs), false, now).await.unwrap();
        assert_eq!(found.drift.len(), 1, "{found:?}");
        assert_eq!((found.drift[0].recorded, found.drift[0].actual, found.fixed), (5, 1, 0));
        assert_eq!(app.media.get(&used).await.unwrap().unwrap().ref_count, 5, "found, not fixed");
        assert_eq!(reconcile_counts(&app.lifecycle(&*blobs), true, now).await.unwrap().fixed, 1);
        assert_eq!(app.media.get(&used).await.unwrap().unwrap().ref_count, 1);
        assert!(reconcile_counts(&app.lifecycle(&*blobs), false, now).await.unwrap().drift.is_empty());
    }
}
