//! `GET /local/health`: which of the gateway's backends answer, and who this gateway is.
//!
//! 200 when LocalStack S3, moto's DynamoDB and Postgres all answer within a second, else 503
//! naming the ones that do not, so that a dead emulator is told apart from a slow API (the API's
//! own 503 says only "storage is busy", by design). `scripts/up` also reads `secret`, `binary`
//! and `pid` to restart a gateway that another checkout started, or that runs an older build.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::{header, StatusCode};
use serde_json::{json, Value};
use shared::hash::Sha256Hash;
use shared::store::postgres::PgMirror;

const TIMEOUT: Duration = Duration::from_secs(1);

pub struct Health {
    pub s3: aws_sdk_s3::Client,
    pub ddb: aws_sdk_dynamodb::Client,
    pub mirror: Arc<PgMirror>,
    pub bucket: String,
    pub table: String,
    /// Who this process is: fixed at start.
    identity: Value,
}

impl Health {
    pub fn new(
        s3: aws_sdk_s3::Client,
        ddb: aws_sdk_dynamodb::Client,
        mirror: Arc<PgMirror>,
        bucket: String,
        table: String,
        jwt_secret: &str,
    ) -> Self {
        let binary = std::env::current_exe().ok();
        let built = binary
            .as_ref()
            .and_then(|b| std::fs::metadata(b).ok())
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        let identity = json!({
            "pid": std::process::id(),
            "binary": binary.map(|b| b.display().to_string()),
            "binary_mtime": built,
            // A fingerprint, not the secret: enough to tell whether tokens minted here will pass.
            "secret": fingerprint(jwt_secret),
        });
        Self { s3, ddb, mirror, bucket, table, identity }
    }

    pub async fn check(&self) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
        let (s3, dynamodb, postgres) = tokio::join!(
            probe(async { self.s3.head_bucket().bucket(&self.bucket).send().await.map(drop) }),
            probe(async { self.ddb.describe_table().table_name(&self.table).send().await.map(drop) }),
            probe(self.mirror.ping()),
        );
        let backends = [("s3", s3), ("dynamodb", dynamodb), ("postgres", postgres)];
        let unreachable: Vec<&str> = backends.iter().filter(|(_, r)| r.is_err()).map(|(n, _)| *n).collect();
        for (name, result) in &backends {
            if let Err(e) = result {
                tracing::warn!(backend = name, error = %e, "backend unreachable");
            }
        }
        let mut body = json!({
            "status": if unreachable.is_empty() { "ok" } else { "unavailable" },
            "unreachable": unreachable,
            "backends": backends.iter().map(|(n, r)| (n.to_string(), match r {
                Ok(()) => json!("ok"),
                Err(e) => json!(e),
            })).collect::<serde_json::Map<_, _>>(),
        });
        if let (Some(body), Some(identity)) = (body.as_object_mut(), self.identity.as_object()) {
            body.extend(identity.clone());
        }
        let status = if unreachable.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        (status, [(header::CONTENT_TYPE, "application/json")], body.to_string())
    }
}

/// The same fingerprint `scripts/up` computes: the first 16 hex digits of SHA-256(secret).
pub fn fingerprint(secret: &str) -> String {
    Sha256Hash::of(secret.as_bytes()).to_hex()[..16].to_owned()
}

async fn probe<E: std::fmt::Display>(call: impl std::future::Future<Output = Result<(), E>>) -> Result<(), String> {
    match tokio::time::timeout(TIMEOUT, call).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("unreachable: {e}")),
        Err(_) => Err(format!("no answer within {} s", TIMEOUT.as_secs())),
    }
}
