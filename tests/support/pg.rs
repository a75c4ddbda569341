//! Postgres and the DynamoDB streams, for the sync tests.

use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_lambda_events::dynamodb::{Event, EventRecord};
use shared::store::mirror::Mirror;
use shared::store::postgres::PgMirror;
use shared::sync::{apply_stream, MirrorReport, StreamTables};
use sqlx::postgres::PgConnectOptions;

fn options() -> anyhow::Result<PgConnectOptions> {
    super::load_env()?;
    Ok(PgConnectOptions::from_str(&super::var("DATABASE_URL")?)?)
}

/// The mirror the local gateway keeps in step with the streams.
pub async fn live() -> anyhow::Result<PgMirror> {
    Ok(PgMirror::new(options()?))
}

/// A new, migrated database of its own.
pub async fn fresh(tag: &str) -> anyhow::Result<PgMirror> {
    let mirror = empty(tag).await?;
    mirror.migrate().await.context("migrate")?;
    Ok(mirror)
}

/// An empty database of its own: its name and URL. `scripts/up --fresh` drops these.
pub async fn new_database(tag: &str) -> anyhow::Result<(String, String)> {
    let name = format!("sync_{tag}_{}", &super::sha256_hex(&super::unique_bytes(8))[..10]);
    let admin = PgMirror::new(options()?);
    sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(admin.pool()).await?;
    let url = super::var("DATABASE_URL")?;
    let base = url.rsplit_once('/').map(|(b, _)| b).unwrap_or(&url);
    Ok((name.clone(), format!("{base}/{name}")))
}

/// An empty database of its own, not migrated. `scripts/up --fresh` drops these.
pub async fn empty(tag: &str) -> anyhow::Result<PgMirror> {
    let name = format!("sync_{tag}_{}", &super::sha256_hex(&super::unique_bytes(8))[..10]);
    let admin = PgMirror::new(options()?);
    sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(admin.pool()).await?;
    Ok(PgMirror::new(options()?.database(&name)))
}

/// AnkiCollab's tables as they are today (`backend-kit/tests/ankicollab_today.sql`), created in
/// `pool`'s database unless they are there; one caller at a time.
pub async fn ankicollab_schema(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock(7411)").execute(&mut *conn).await?;
    let applied = sqlx::raw_sql(include_str!("../../backend-kit/tests/ankicollab_today.sql")).execute(&mut *conn).await;
    sqlx::query("SELECT pg_advisory_unlock(7411)").execute(&mut *conn).await?;
    applied.context("AnkiCollab's schema")?;
    Ok(())
}

/// A deck in AnkiCollab's `anki.decks` (a root unless `parent`) named by `human_hash`; its id.
pub async fn ankicollab_deck(pool: &sqlx::PgPool, human_hash: &str, parent: Option<i64>) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("INSERT INTO anki.decks (name, human_hash, parent) VALUES ($1, $1, $2) RETURNING id")
        .bind(human_hash)
        .bind(parent)
        .fetch_one(pool)
        .await?)
}

pub fn tables() -> anyhow::Result<StreamTables> {
    super::load_env()?;
    Ok(StreamTables { media: super::var("MEDIA_TABLE")?, deck_files: super::var("DECK_FILES_TABLE")? })
}

/// Every record both mirrored tables' streams hold now, each table's oldest first.
pub async fn stream_records() -> anyhow::Result<Vec<EventRecord>> {
    super::load_env()?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let streams = aws_sdk_dynamodbstreams::Client::new(&sdk);
    let tables = tables()?;
    let mut out = local_gateway::streams::read_all(&ddb, &streams, &tables.media).await?;
    out.extend(local_gateway::streams::read_all(&ddb, &streams, &tables.deck_files).await?);
    Ok(out)
}

/// Deliver records as Lambda does: in batches, and a batch that reports a failure again from the
/// failed record on. Returns how many deliveries it took.
pub async fn deliver(mirror: &dyn Mirror, records: &[EventRecord], batch: usize) -> anyhow::Result<usize> {
    let tables = tables()?;
    let mut deliveries = 0;
    for chunk in records.chunks(batch) {
        let mut pending = chunk.to_vec();
        while !pending.is_empty() {
            deliveries += 1;
            anyhow::ensure!(deliveries < 100_000, "the mirror keeps failing");
            let mut event = Event::default();
            event.records = std::mem::take(&mut pending);
            let response = apply_stream(mirror, &tables, &event).await;
            if let Some(first) = response.batch_item_failures.first().and_then(|f| f.item_identifier.clone()) {
                pending = event
                    .records
                    .into_iter()
                    .skip_while(|r| r.change.sequence_number.as_ref() != Some(&first))
                    .collect();
            }
        }
    }
    Ok(deliveries)
}

/// Wait until reconcile finds nothing to fix in `mirror`.
pub async fn wait_converged(app: &shared::App, mirror: &dyn Mirror) -> anyhow::Result<MirrorReport> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let report = shared::sync::reconcile_mirror(&*app.media, &*app.decks, mirror, false).await?;
        if report.differences() == 0 {
            return Ok(report);
        }
        anyhow::ensure!(Instant::now() < deadline, "Postgres did not converge to DynamoDB: {report:#?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
