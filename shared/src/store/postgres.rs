//! The Postgres mirror: AnkiCollab's `anki.media` and `anki.stored_media_files`.
//!
//! One small pool, built once per Lambda instance and reused across invocations; it connects
//! lazily, so a database that is down fails the batch (which is retried), not the start-up.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow, PgSslMode};
use sqlx::{Postgres, Row as _, Transaction};

use crate::error::StoreError;
use crate::hash::Sha256Hash;
use crate::store::mirror::{Change, FileRow, Key, Mirror, Row, Snapshot, StoredRow};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::new("postgres", e)
}

/// Where the database is: `DATABASE_URL` (local), or `DATABASE_SECRET_ARN`, a Secrets Manager
/// secret in the RDS format (`host`, `port`, `username`, `password`, `dbname`).
/// `DATABASE_SSLMODE` (default `verify-full` for secrets) and `DATABASE_CA_CERT` (a PEM bundle,
/// such as RDS's global bundle) set TLS; TLS is rustls.
pub async fn options_from_env() -> Result<PgConnectOptions, StoreError> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let mut options = if let Some(url) = env("DATABASE_URL") {
        PgConnectOptions::from_str(&url).map_err(err)?
    } else if let Some(arn) = env("DATABASE_SECRET_ARN") {
        #[derive(serde::Deserialize)]
        struct Secret {
            host: String,
            #[serde(default)]
            port: Option<u16>,
            username: String,
            password: String,
            #[serde(default)]
            dbname: Option<String>,
        }
        let timeouts = crate::config::SdkTimeouts::from_env().map_err(err)?;
        let sdk = crate::aws::sdk_config(timeouts).await;
        let text = crate::aws::secret_string(&sdk, &arn).await.map_err(|e| err(format!("the database secret: {e}")))?;
        let secret: Secret =
            serde_json::from_str(&text).map_err(|e| err(format!("the database secret is not RDS-shaped JSON: {e}")))?;
        PgConnectOptions::new()
            .host(&secret.host)
            .port(secret.port.unwrap_or(5432))
            .username(&secret.username)
            .password(&secret.password)
            .database(secret.dbname.as_deref().unwrap_or("postgres"))
            .ssl_mode(PgSslMode::VerifyFull)
    } else {
        return Err(err("set DATABASE_URL or DATABASE_SECRET_ARN"));
    };
    if let Some(mode) = env("DATABASE_SSLMODE") {
        options = options.ssl_mode(PgSslMode::from_str(&mode).map_err(err)?);
    }
    if let Some(ca) = env("DATABASE_CA_CERT") {
        options = options.ssl_root_cert(ca);
    }
    Ok(options.application_name("ankicollab-media-sync"))
}

pub struct PgMirror {
    pool: PgPool,
}

impl PgMirror {
    pub fn new(options: PgConnectOptions) -> Self {
        let pool =
            PgPoolOptions::new().max_connections(2).acquire_timeout(Duration::from_secs(10)).connect_lazy_with(options);
        Self { pool }
    }

    pub async fn from_env() -> Result<Self, StoreError> {
        Ok(Self::new(options_from_env().await?))
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// One round trip to the server, for health checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(drop).map_err(err)
    }
}

/// Write the row for `key`, or remove it.
async fn write(tx: &mut Transaction<'_, Postgres>, key: &Key, row: Option<&Row>) -> Result<(), StoreError> {
    match (key, row) {
        (_, Some(Row::File(r))) => {
            // Our row for (deck key, filename); else a legacy row of the same AnkiCollab deck and
            // filename, taken over (id and all); else a new row. `deck` is AnkiCollab's id of the
            // deck key, or null while anki.decks has no such deck.
            let updated = sqlx::query(
                "UPDATE anki.media SET deck = anki.media_deck_id($1), hash = $3, notes = $4, updated_at = $5
                 WHERE deck_key = $1 AND filename = $2",
            )
            .bind(&r.deck)
            .bind(&r.filename)
            .bind(r.hash.to_hex())
            .bind(r.notes)
            .bind(r.updated_at)
            .execute(&mut **tx)
            .await
            .map_err(err)?
            .rows_affected();
            if updated == 0 {
                sqlx::query(
                    "WITH legacy AS (
                        SELECT id FROM anki.media
                        WHERE deck_key IS NULL AND deck = anki.media_deck_id($1) AND filename = $2
                        ORDER BY id LIMIT 1 FOR UPDATE
                     ), taken AS (
                        UPDATE anki.media m SET deck_key = $1, hash = $3, notes = $4, updated_at = $5
                        FROM legacy WHERE m.id = legacy.id RETURNING m.id
                     )
                     INSERT INTO anki.media (deck, deck_key, filename, hash, notes, updated_at)
                     SELECT anki.media_deck_id($1), $1, $2, $3, $4, $5 WHERE NOT EXISTS (SELECT 1 FROM taken)",
                )
                .bind(&r.deck)
                .bind(&r.filename)
                .bind(r.hash.to_hex())
                .bind(r.notes)
                .bind(r.updated_at)
                .execute(&mut **tx)
                .await
                .map_err(err)?;
            }
        }
        (_, Some(Row::Stored(r))) => {
            sqlx::query(
                "INSERT INTO anki.stored_media_files
                   (hash, s3_key, reference_count, status, size, stored_size, content_type, width, height,
                    stored_hash, thumb_key, reject_reason, updated_at, duration_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                 ON CONFLICT (hash) DO UPDATE SET
                   s3_key = excluded.s3_key, reference_count = excluded.reference_count, status = excluded.status,
                   size = excluded.size, stored_size = excluded.stored_size, content_type = excluded.content_type,
                   width = excluded.width, height = excluded.height, stored_hash = excluded.stored_hash,
                   thumb_key = excluded.thumb_key, reject_reason = excluded.reject_reason,
                   updated_at = excluded.updated_at, duration_ms = excluded.duration_ms",
            )
            .bind(r.hash.to_hex())
            .bind(&r.s3_key)
            .bind(r.reference_count)
            .bind(&r.status)
            .bind(r.size)
            .bind(r.stored_size)
            .bind(&r.content_type)
            .bind(r.width)
            .bind(r.height)
            .bind(&r.stored_hash)
            .bind(&r.thumb_key)
            .bind(&r.reject_reason)
            .bind(r.updated_at)
            .bind(r.duration_ms)
            .execute(&mut **tx)
            .await
            .map_err(err)?;
        }
        (Key::File { deck, filename }, None) => {
            sqlx::query("DELETE FROM anki.media WHERE deck_key = $1 AND filename = $2")
                .bind(deck)
                .bind(filename)
                .execute(&mut **tx)
                .await
                .map_err(err)?;
        }
        (Key::Stored(hash), None) => {
            sqlx::query("DELETE FROM anki.stored_media_files WHERE hash = $1")
                .bind(hash.to_hex())
                .execute(&mut **tx)
                .await
                .map_err(err)?;
        }
    }
    Ok(())
}

fn hash(row: &PgRow, column: &str) -> Result<Sha256Hash, StoreError> {
    Sha256Hash::parse(&row.try_get::<String, _>(column).map_err(err)?).map_err(err)
}

#[async_trait]
impl Mirror for PgMirror {
    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await.map_err(err)
    }

    async fn apply(&self, change: &Change) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(err)?;
        let claimed = sqlx::query(
            "INSERT INTO anki.media_sync_versions (item, seq, removed) VALUES ($1, $2::numeric, $3)
             ON CONFLICT (item) DO UPDATE SET seq = excluded.seq, removed = excluded.removed, applied_at = now()
             WHERE anki.media_sync_versions.seq < excluded.seq",
        )
        .bind(change.key.item())
        .bind(&change.seq)
        .bind(change.row.is_none())
        .execute(&mut *tx)
        .await
        .map_err(err)?
        .rows_affected()
            == 1;
        if claimed {
            write(&mut tx, &change.key, change.row.as_ref()).await?;
        }
        tx.commit().await.map_err(err)?;
        Ok(claimed)
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        // One transaction, so that rows and versions are read at the same moment.
        let mut tx = self.pool.begin().await.map_err(err)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        let mut snapshot = Snapshot::default();
        let files = sqlx::query(
            "SELECT deck_key AS deck, filename, hash, notes, updated_at FROM anki.media WHERE deck_key IS NOT NULL",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(err)?;
        for r in files {
            let row = FileRow {
                deck: r.try_get("deck").map_err(err)?,
                filename: r.try_get("filename").map_err(err)?,
                hash: hash(&r, "hash")?,
                notes: r.try_get("notes").map_err(err)?,
                updated_at: r.try_get("updated_at").map_err(err)?,
            };
            snapshot.rows.insert(Row::File(row.clone()).key(), Row::File(row));
        }
        let stored = sqlx::query("SELECT * FROM anki.stored_media_files").fetch_all(&mut *tx).await.map_err(err)?;
        for r in stored {
            let row = StoredRow {
                hash: hash(&r, "hash")?,
                s3_key: r.try_get("s3_key").map_err(err)?,
                reference_count: r.try_get("reference_count").map_err(err)?,
                status: r.try_get("status").map_err(err)?,
                size: r.try_get("size").map_err(err)?,
                stored_size: r.try_get("stored_size").map_err(err)?,
                content_type: r.try_get("content_type").map_err(err)?,
                width: r.try_get("width").map_err(err)?,
                height: r.try_get("height").map_err(err)?,
                duration_ms: r.try_get("duration_ms").map_err(err)?,
                stored_hash: r.try_get("stored_hash").map_err(err)?,
                thumb_key: r.try_get("thumb_key").map_err(err)?,
                reject_reason: r.try_get("reject_reason").map_err(err)?,
                updated_at: r.try_get("updated_at").map_err(err)?,
            };
            snapshot.rows.insert(Key::Stored(row.hash), Row::Stored(row));
        }
        snapshot.legacy_rows = sqlx::query_scalar("SELECT count(*) FROM anki.media WHERE deck_key IS NULL")
            .fetch_one(&mut *tx)
            .await
            .map_err(err)?;
        (snapshot.unresolved_decks, snapshot.stale_deck_ids) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE deck IS NULL),
                    count(*) FILTER (WHERE deck IS DISTINCT FROM anki.media_deck_id(deck_key))
             FROM anki.media WHERE deck_key IS NOT NULL",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(err)?;
        let versions = sqlx::query("SELECT item, seq::text AS seq FROM anki.media_sync_versions")
            .fetch_all(&mut *tx)
            .await
            .map_err(err)?;
        for v in versions {
            snapshot.versions.insert(v.try_get("item").map_err(err)?, v.try_get("seq").map_err(err)?);
        }
        tx.commit().await.map_err(err)?;
        Ok(snapshot)
    }

    async fn resolve_deck_ids(&self) -> Result<u64, StoreError> {
        sqlx::query(
            "UPDATE anki.media SET deck = anki.media_deck_id(deck_key)
             WHERE deck_key IS NOT NULL AND deck IS DISTINCT FROM anki.media_deck_id(deck_key)",
        )
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected())
        .map_err(err)
    }

    async fn repair(&self, key: &Key, seen: Option<&str>, row: Option<&Row>) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(err)?;
        // Make sure there is a version row to lock; 0 is below every real sequence number.
        sqlx::query(
            "INSERT INTO anki.media_sync_versions (item, seq, removed) VALUES ($1, 0, $2) ON CONFLICT (item) DO NOTHING",
        )
        .bind(key.item())
        .bind(row.is_none())
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        let now: String =
            sqlx::query_scalar("SELECT seq::text FROM anki.media_sync_versions WHERE item = $1 FOR UPDATE")
                .bind(key.item())
                .fetch_one(&mut *tx)
                .await
                .map_err(err)?;
        if now != seen.unwrap_or("0") {
            return Ok(false);
        }
        write(&mut tx, key, row).await?;
        tx.commit().await.map_err(err)?;
        Ok(true)
    }
}
