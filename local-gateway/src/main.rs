//! The local stand-in for what AWS provides around the functions:
//!
//! - `serve`: API Gateway (every route, through `shared::api::handle`, the code the Lambda
//!   functions run), the S3 → process-upload trigger (polls the queue LocalStack S3 notifies), and
//!   the DynamoDB streams → sync-postgres mapping (follows moto's streams; see `streams`).
//! - `setup`: creates the bucket, its notification and lifecycle rule, the queue and the tables,
//!   as `template.yaml` declares them, and migrates Postgres. Idempotent.
//! - `invoke FUNCTION EVENT.json`: run a non-HTTP function once, now.
//! - `token SUB SCOPE [DECKS]`: mint a bearer token with the local secret.

mod health;
mod setup;

use local_gateway::streams;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use aws_lambda_events::s3::S3Event;
use axum::extract::State;
use shared::api::{handle, Route};
use shared::store::mirror::Mirror;
use shared::store::postgres::PgMirror;
use shared::store::BlobStore;
use shared::sync::StreamTables;
use shared::App;

const MAX_BODY: usize = 8 << 20;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("serve") => serve().await,
        Some("setup") => setup::run().await,
        Some("migrate") => {
            // The Postgres schema only (DATABASE_URL): no emulator needed.
            use shared::store::mirror::Mirror;
            shared::store::postgres::PgMirror::from_env().await?.migrate().await?;
            println!("migrated");
            Ok(())
        }
        Some("invoke") => {
            let [_, function, event] = &args[..] else { bail!("usage: local-gateway invoke FUNCTION EVENT.json") };
            invoke(function, event).await
        }
        Some("token") => {
            let (sub, scope) = match (args.get(1), args.get(2)) {
                (Some(s), Some(sc)) => (s, sc),
                _ => bail!("usage: local-gateway token SUB 'SCOPE ...' [DECK,DECK]"),
            };
            let decks: Vec<String> = args.get(3).map(|d| d.split(',').map(str::to_owned).collect()).unwrap_or_default();
            let secret = std::env::var("JWT_SECRET").context("JWT_SECRET is not set")?;
            let key = shared::auth::parse_keys(&secret).map_err(anyhow::Error::msg)?.remove(0);
            let policy = shared::config::Config::from_env().map(|c| c.token_policy).unwrap_or_default();
            // As long as the policy lets a token of this scope live.
            let ttl = if scope.split_whitespace().any(|s| s == "references") {
                policy.max_references_lifetime_secs
            } else {
                policy.max_user_lifetime_secs
            };
            println!("{}", shared::auth::mint_with(&key, &policy, sub, scope, &decks, ttl));
            Ok(())
        }
        Some(other) => bail!("unknown command {other:?}: serve | setup | migrate | invoke | token"),
    }
}

async fn serve() -> anyhow::Result<()> {
    let app = Arc::new(App::from_env().await?);
    let addr = std::env::var("GATEWAY_ADDR").unwrap_or_else(|_| "127.0.0.1:8787".into());
    let queue = std::env::var("UPLOAD_QUEUE_URL").context("UPLOAD_QUEUE_URL is not set")?;
    let sdk = shared::aws::sdk_config(app.config.sdk_timeouts).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let blobs = shared::app::object_store(&app.config).await;
    tokio::spawn(pump_uploads(app.clone(), blobs, sqs, queue));
    let pg = Arc::new(PgMirror::from_env().await?);
    let mirror: Arc<dyn Mirror> = pg.clone();
    let tables = stream_tables(&app);
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let dynamo_streams = aws_sdk_dynamodbstreams::Client::new(&sdk);
    for table in [tables.media.clone(), tables.deck_files.clone()] {
        let pump = streams::pump(mirror.clone(), tables.clone(), ddb.clone(), dynamo_streams.clone(), table);
        tokio::spawn(pump);
    }

    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).build());
    let secret = std::env::var("JWT_SECRET").context("JWT_SECRET is not set")?;
    let health = Arc::new(health::Health::new(
        s3,
        ddb.clone(),
        pg,
        app.config.bucket.clone(),
        app.config.media_table.clone(),
        &secret,
    ));
    let router = axum::Router::new()
        .route("/local/health", axum::routing::get(move || async move { health.check().await }))
        .fallback(api)
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("bind {addr}"))?;
    tracing::info!(%addr, "local gateway listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// API Gateway's part: hand the request to the same handler the Lambda functions use.
async fn api(State(app): State<Arc<App>>, req: axum::extract::Request) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        let e = shared::error::ApiError::payload_too_large("request body is too large");
        return to_axum(shared::api::error_response(&e));
    };
    let request = http::Request::from_parts(parts, lambda_http::Body::Binary(bytes.to_vec()));
    to_axum(handle(&app, request, Route::ALL).await)
}

fn to_axum(resp: http::Response<lambda_http::Body>) -> axum::response::Response {
    let (parts, body) = resp.into_parts();
    axum::response::Response::from_parts(parts, axum::body::Body::from(body.as_ref().to_vec()))
}

/// The S3 trigger's part: LocalStack S3 notifies a queue; each message is an S3 event for
/// process-upload. A failed event stays on the queue and comes back, as Lambda's retries would.
async fn pump_uploads(app: Arc<App>, blobs: Arc<dyn BlobStore>, sqs: aws_sdk_sqs::Client, queue: String) {
    loop {
        let resp = sqs
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(5)
            .send()
            .await;
        let messages = match resp {
            Ok(r) => r.messages.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = ?e, "polling the upload queue failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let handled = futures::future::join_all(messages.into_iter().map(|m| {
            let (app, blobs) = (app.clone(), blobs.clone());
            async move {
                let done = match serde_json::from_str::<S3Event>(m.body().unwrap_or_default()) {
                    Ok(event) => match shared::process::handle_s3_event(&app.processing(&*blobs), &event).await {
                        Ok(_) => true,
                        Err(e) => {
                            tracing::warn!(error = %e, "process-upload failed; the event will be retried");
                            false
                        }
                    },
                    // s3:TestEvent and anything else that is not an S3 event.
                    Err(_) => true,
                };
                (done, m.receipt_handle)
            }
        }))
        .await;
        for (done, receipt) in handled {
            if let (true, Some(r)) = (done, receipt) {
                let _ = sqs.delete_message().queue_url(&queue).receipt_handle(r).send().await;
            }
        }
    }
}

async fn invoke(function: &str, event_path: &str) -> anyhow::Result<()> {
    let event = std::fs::read_to_string(event_path).with_context(|| format!("read {event_path}"))?;
    let app = App::from_env().await?;
    let blobs = shared::app::object_store(&app.config).await;
    match function {
        "process-upload" => {
            let event: S3Event = serde_json::from_str(&event).context("not an S3 event")?;
            let outcomes = shared::process::handle_s3_event(&app.processing(&*blobs), &event).await?;
            println!("{outcomes:#?}");
        }
        "sweep-orphans" => {
            let event: serde_json::Value = serde_json::from_str(&event).context("not JSON")?;
            let command = shared::lifecycle::SweepCommand::from_event(event)?;
            let report =
                shared::lifecycle::run(&app.lifecycle(&*blobs), &command, time::OffsetDateTime::now_utc()).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        "sync-postgres" => {
            let mirror = PgMirror::from_env().await?;
            let payload: serde_json::Value = serde_json::from_str(&event).context("not JSON")?;
            let out =
                shared::sync::handle(app.media.as_ref(), app.decks.as_ref(), &mirror, &stream_tables(&app), payload)
                    .await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        other => bail!("{other} is not a non-HTTP function here (process-upload, sweep-orphans, sync-postgres)"),
    }
    Ok(())
}

fn stream_tables(app: &App) -> StreamTables {
    StreamTables { media: app.config.media_table.clone(), deck_files: app.config.deck_files_table.clone() }
}
