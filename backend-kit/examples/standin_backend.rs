//! A stand-in for AnkiCollab's backend, for the switch-over tests: an axum server on the kit over a
//! Postgres holding AnkiCollab's tables (`tests/ankicollab_today.sql`). Test code, never deployed.
//!
//! It serves what the real backend adds (the kit's `POST /media/token` and `POST
//! /media/references`), a `/login` like AnkiCollab's (opaque bearer tokens stored hashed in
//! `anki.auth_tokens`), and, for the tests to play AnkiCollab's part, `POST /test/sql` (run SQL
//! on the database) and `POST /test/event` (the kit's call for an AnkiCollab event).
//!
//! Environment: `DATABASE_URL`, `MEDIA_API_URL`, `MEDIA_TOKEN_SECRET`; optional `LISTEN`
//! (default `127.0.0.1:0`), `MEDIA_USER_TOKEN_TTL_SECS`, `REFERENCES_RETRY_BASE_MS`. It prints
//! `listening on http://ADDR` once ready.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ankicollab_media_backend::legacy::{self, Redirects};
use ankicollab_media_backend::routes::{BoxError, Connection, MediaRoutes};
use ankicollab_media_backend::{Error, MediaSync, ReferencesClient, Retry, TokenIssuer};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

#[derive(Clone)]
struct Standin {
    url: Arc<String>,
    sync: Arc<MediaSync>,
    /// Requests served, by path.
    calls: Arc<Mutex<BTreeMap<String, usize>>>,
    redirects: Redirects,
}

async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("standin: connection: {e}");
        }
    });
    Ok(client)
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

fn sha(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let url = env("DATABASE_URL");
    let db = connect(&url).await?;
    db.batch_execute("SELECT pg_advisory_lock(7411)").await?;
    let schema = db.batch_execute(include_str!("../tests/ankicollab_today.sql")).await;
    db.batch_execute("SELECT pg_advisory_unlock(7411)").await?;
    schema?;
    ankicollab_media_backend::migrate(&db).await?;

    let ttl = std::env::var("MEDIA_USER_TOKEN_TTL_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(3600);
    let issuer =
        TokenIssuer::new(&env("MEDIA_TOKEN_SECRET"))?.lifetimes(Duration::from_secs(ttl), Duration::from_secs(3600));
    let base = std::env::var("REFERENCES_RETRY_BASE_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(250);
    let refs = ReferencesClient::new(env("MEDIA_API_URL"), issuer.clone()).with_retry(Retry {
        attempts: 6,
        base: Duration::from_millis(base),
        cap: Duration::from_millis(base * 16),
    });
    // Bound first: the legacy redirect URLs need the address.
    let listener =
        tokio::net::TcpListener::bind(std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:0".into())).await?;
    let public_url = format!("http://{}", listener.local_addr()?);
    let state = Standin {
        url: Arc::new(url.clone()),
        sync: Arc::new(MediaSync::new(refs)),
        calls: Arc::default(),
        redirects: Redirects::new(format!("{public_url}/media/legacy-download"), env("MEDIA_TOKEN_SECRET").as_bytes()),
    };

    let (url_c, url_a) = (url.clone(), url.clone());
    let routes = MediaRoutes::new(
        state.sync.clone(),
        issuer,
        move || {
            let url = url_c.clone();
            Box::pin(async move { Ok(Box::new(Conn(connect(&url).await?)) as Connection) })
        },
        move |bearer: String| {
            let url = url_a.clone();
            Box::pin(async move {
                let db = connect(&url).await?;
                let row = db
                    .query_opt(
                        "UPDATE anki.auth_tokens SET last_used_at = now() WHERE token_hash = $1 AND expires_at > now()
                         RETURNING user_id",
                        &[&sha(&bearer)],
                    )
                    .await?;
                Ok::<_, BoxError>(row.map(|r| r.get::<_, i32>(0) as i64))
            })
        },
    )
    .legacy_downloads(state.redirects.clone());

    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/login", post(login))
        .route("/test/sql", post(sql))
        .route("/test/event", post(event))
        .route("/test/stats", get(stats))
        .route("/media/manifest", post(manifest))
        .with_state(state.clone())
        .merge(routes.router())
        .layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
            let calls = state.calls.clone();
            async move {
                *calls.lock().unwrap_or_else(|p| p.into_inner()).entry(req.uri().path().to_owned()).or_default() += 1;
                next.run(req).await
            }
        }));
    let listener =
        tokio::net::TcpListener::bind(std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:0".into())).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

/// A connection the routes can hold (the real backend hands out pooled ones).
struct Conn(Client);

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.0
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.0
    }
}

fn fail(status: StatusCode, e: impl std::fmt::Display) -> Response {
    (status, Json(json!({"error": {"code": "standin", "message": e.to_string()}}))).into_response()
}

#[derive(Deserialize)]
struct Login {
    username: String,
}

/// AnkiCollab's login, without the password: a fresh 48-character token for the user (created if
/// new), stored hashed, one per user (a new login rotates it).
async fn login(State(s): State<Standin>, Json(body): Json<Login>) -> Response {
    let run = async {
        let db = connect(&s.url).await?;
        let user: i32 = db
            .query_one(
                "INSERT INTO public.users (username, password) VALUES ($1, 'x')
                 ON CONFLICT (username) DO UPDATE SET username = excluded.username RETURNING id",
                &[&body.username],
            )
            .await?
            .get(0);
        let token: String =
            db.query_one("SELECT substr(md5(random()::text) || md5(random()::text), 1, 48)", &[]).await?.get(0);
        db.execute(
            "INSERT INTO anki.auth_tokens (user_id, token_hash, expires_at) VALUES ($1, $2, now() + interval '30 days')
             ON CONFLICT (user_id) DO UPDATE SET token_hash = excluded.token_hash, expires_at = excluded.expires_at",
            &[&user, &sha(&token)],
        )
        .await?;
        Ok::<_, tokio_postgres::Error>(json!({"token": token, "user_id": user}))
    };
    match run.await {
        Ok(v) => Json(v).into_response(),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[derive(Deserialize)]
struct Sql {
    sql: String,
}

/// Run SQL as AnkiCollab would; rows as arrays of text (null as null).
async fn sql(State(s): State<Standin>, Json(body): Json<Sql>) -> Response {
    let run = async {
        let db = connect(&s.url).await?;
        let mut rows = Vec::new();
        for m in db.simple_query(&body.sql).await? {
            if let SimpleQueryMessage::Row(r) = m {
                rows.push((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect::<Vec<_>>());
            }
        }
        Ok::<_, tokio_postgres::Error>(json!({"rows": rows}))
    };
    match run.await {
        Ok(v) => Json(v).into_response(),
        Err(e) => fail(StatusCode::BAD_REQUEST, e),
    }
}

#[derive(Deserialize)]
struct Event {
    event: String,
    #[serde(default)]
    note_ids: Vec<i64>,
    #[serde(default)]
    deck_hash: String,
}

/// The kit's call for one AnkiCollab event, as the backend makes it after its own change.
async fn event(State(s): State<Standin>, Json(e): Json<Event>) -> Response {
    let mut db = match connect(&s.url).await {
        Ok(db) => db,
        Err(err) => return fail(StatusCode::SERVICE_UNAVAILABLE, err),
    };
    let sync = &s.sync;
    let done = match e.event.as_str() {
        "approved" => sync.suggestion_approved(&mut db, &e.note_ids).await,
        "declined" => sync.suggestion_declined(&mut db, &e.note_ids).await,
        "note_deleted" => sync.note_deleted(&mut db, &e.note_ids).await,
        "deck_deleted" => sync.deck_deleted(&mut db, &e.deck_hash).await,
        "deck_created" => sync.deck_created(&mut db, &e.deck_hash).await,
        "sync" => sync.sync_notes(&mut db, &e.note_ids).await,
        other => return fail(StatusCode::BAD_REQUEST, format!("unknown event {other}")),
    };
    match done {
        Ok(r) => Json(json!({"notes": r.notes, "added": r.added, "removed": r.removed})).into_response(),
        Err(err @ Error::Unavailable(_)) => fail(StatusCode::SERVICE_UNAVAILABLE, err),
        Err(err) => fail(StatusCode::INTERNAL_SERVER_ERROR, err),
    }
}

#[derive(Deserialize)]
struct ManifestBody {
    deck_hash: String,
    filenames: Vec<String>,
}

/// AnkiCollab's existing `POST /media/manifest` for plugins not updated yet, answered from the new
/// store by the kit (the user authenticated as on the real route).
async fn manifest(
    State(s): State<Standin>,
    headers: axum::http::HeaderMap,
    Json(body): Json<ManifestBody>,
) -> Response {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let db = match connect(&s.url).await {
        Ok(db) => db,
        Err(e) => return fail(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let user = match db
        .query_opt(
            "SELECT user_id FROM anki.auth_tokens WHERE token_hash = $1 AND expires_at > now()",
            &[&sha(&bearer)],
        )
        .await
    {
        Ok(Some(row)) => row.get::<_, i32>(0) as i64,
        Ok(None) => return fail(StatusCode::UNAUTHORIZED, "not logged in"),
        Err(e) => return fail(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    match legacy::manifest(s.sync.references(), &db, user, &body.deck_hash, &body.filenames, Some(&s.redirects)).await {
        Ok(m) => Json(m).into_response(),
        Err(Error::Invalid(m)) => fail(StatusCode::BAD_REQUEST, m),
        Err(e) => fail(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn stats(State(s): State<Standin>) -> Json<Value> {
    Json(json!({"calls": *s.calls.lock().unwrap_or_else(|p| p.into_inner())}))
}
