//! The plugin's two routes on AnkiCollab's backend, as axum handlers (feature `axum`):
//!
//! - `POST /media/token` → `{"token", "api_url", "expires_at"}`: a media token for the caller,
//!   401 when the caller's AnkiCollab bearer token is not valid;
//! - `POST /media/references` with `{"deck_hash", "files": [{"note_guid", "filename", "sha256"}]}`:
//!   the files of a suggestion the plugin uploaded. Each note must be one the caller may write
//!   (their own pending suggestion, or a deck they maintain); its files are recorded and become
//!   references ([`MediaSync::suggestion_submitted`]). Answers `{"recorded", "waiting", "refused"}`;
//!   a file that cannot be taken is listed in `refused` with its reason, and the batch goes on.
//!
//! Errors are `{"error": {"code", "message"}}`, as the media server's: 400 `bad_request`, 401
//! `unauthorized`, 403 `forbidden` (nothing the caller may write), 413 `too_many_items`, 503
//! `unavailable` (the database or the media server is down: retry, it is idempotent).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::DerefMut;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_postgres::Client;

use crate::decks;
use crate::error::Error;
use crate::files::{filename_problem, is_sha256};
use crate::legacy::Redirects;
use crate::sync::{MediaSync, ReportedFile};
use crate::tokens::TokenIssuer;

/// Any error of the backend's own closures.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A connection to AnkiCollab's database (a pooled one, boxed).
pub type Connection = Box<dyn DerefMut<Target = Client> + Send>;
/// At most this many files per `POST /media/references`.
pub const MAX_FILES: usize = 1000;

type AuthenticateFn = dyn Fn(String) -> BoxFuture<'static, Result<Option<i64>, BoxError>> + Send + Sync;
type ConnectFn = dyn Fn() -> BoxFuture<'static, Result<Connection, BoxError>> + Send + Sync;
type MayWriteFn =
    dyn for<'a> Fn(&'a Client, i64, &'a [i64]) -> BoxFuture<'a, Result<BTreeSet<i64>, BoxError>> + Send + Sync;

/// The two routes and what they need from the backend.
///
/// ```no_run
/// # #[cfg(feature = "axum")] {
/// use ankicollab_media_backend::routes::{Connection, MediaRoutes};
/// use ankicollab_media_backend::{MediaSync, ReferencesClient, TokenIssuer};
///
/// # async fn user_for_bearer(_: &str) -> Option<i64> { Some(1) }
/// # async fn demo(pool: bb8_like::Pool) -> Result<(), ankicollab_media_backend::Error> {
/// let issuer = TokenIssuer::new(&std::env::var("MEDIA_TOKEN_SECRET").unwrap())?;
/// let sync = MediaSync::new(ReferencesClient::new("https://media.example.com", issuer.clone()));
/// let routes = MediaRoutes::new(
///     sync,
///     issuer,
///     move || { let pool = pool.clone(); Box::pin(async move { Ok(Box::new(pool.get_owned().await?) as Connection) }) },
///     |bearer| Box::pin(async move { Ok(user_for_bearer(&bearer).await) }),
/// );
/// let app: axum::Router = axum::Router::new().merge(routes.router());
/// # Ok(()) }
/// # mod bb8_like { #[derive(Clone)] pub struct Pool; impl Pool { pub async fn get_owned(&self) -> Result<Conn, std::io::Error> { unimplemented!() } }
/// #   pub struct Conn; impl std::ops::Deref for Conn { type Target = tokio_postgres::Client; fn deref(&self) -> &tokio_postgres::Client { unimplemented!() } }
/// #   impl std::ops::DerefMut for Conn { fn deref_mut(&mut self) -> &mut tokio_postgres::Client { unimplemented!() } } }
/// # }
/// ```
pub struct MediaRoutes {
    sync: Arc<MediaSync>,
    redirects: Option<Redirects>,
    issuer: TokenIssuer,
    connect: Box<ConnectFn>,
    authenticate: Box<AuthenticateFn>,
    may_write: Box<MayWriteFn>,
}

impl MediaRoutes {
    /// `connect` hands out a connection to AnkiCollab's database; `authenticate` turns the
    /// caller's bearer token into their user id (None: not valid → 401), as the backend's own
    /// `AuthenticatedUser` does. Who may write a note is AnkiCollab's rule
    /// ([`decks::writable_notes`]) unless [`MediaRoutes::may_write`] says otherwise.
    pub fn new(
        sync: impl Into<Arc<MediaSync>>,
        issuer: TokenIssuer,
        connect: impl Fn() -> BoxFuture<'static, Result<Connection, BoxError>> + Send + Sync + 'static,
        authenticate: impl Fn(String) -> BoxFuture<'static, Result<Option<i64>, BoxError>> + Send + Sync + 'static,
    ) -> Self {
        Self {
            sync: sync.into(),
            redirects: None,
            issuer,
            connect: Box::new(connect),
            authenticate: Box::new(authenticate),
            may_write: Box::new(|db, user, notes| {
                Box::pin(
                    async move { decks::writable_notes(db, user, notes).await.map_err(|e| Box::new(e) as BoxError) },
                )
            }),
        }
    }

    /// The backend's own check of which of these notes the user may report media for.
    pub fn may_write(
        mut self,
        check: impl for<'a> Fn(&'a Client, i64, &'a [i64]) -> BoxFuture<'a, Result<BTreeSet<i64>, BoxError>>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        self.may_write = Box::new(check);
        self
    }

    /// Also serve `GET /media/legacy-download`, the redirect behind the URLs that
    /// [`crate::legacy::manifest`] gives old plugins (`redirects.base` must be this route's
    /// absolute URL).
    pub fn legacy_downloads(mut self, redirects: Redirects) -> Self {
        self.redirects = Some(redirects);
        self
    }

    /// `POST /media/token` and `POST /media/references` (and `GET /media/legacy-download`), for
    /// the backend's router (any state).
    pub fn router<S: Clone + Send + Sync + 'static>(self) -> Router<S> {
        let mut router = Router::new().route("/media/token", post(token)).route("/media/references", post(references));
        if self.redirects.is_some() {
            router = router.route("/media/legacy-download", axum::routing::get(legacy_download));
        }
        router.with_state(Arc::new(self))
    }

    async fn user(&self, headers: &HeaderMap) -> Result<i64, Response> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 1024)
            .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "unauthorized", "missing bearer token"))?;
        match (self.authenticate)(bearer.to_owned()).await {
            Ok(Some(user)) => Ok(user),
            Ok(None) => Err(error(StatusCode::UNAUTHORIZED, "unauthorized", "the AnkiCollab session is not valid")),
            Err(e) => {
                tracing::error!(error = %e, "authenticating a media request failed");
                Err(unavailable())
            }
        }
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": {"code": code, "message": message}}))).into_response()
}

fn unavailable() -> Response {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the media service is busy; retry shortly");
    r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("2"));
    r
}

#[derive(Serialize)]
struct TokenAnswer {
    token: String,
    api_url: String,
    expires_at: String,
}

async fn token(State(routes): State<Arc<MediaRoutes>>, headers: HeaderMap) -> Response {
    let user = match routes.user(&headers).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let t = routes.issuer.for_user(user);
    let mut r = Json(TokenAnswer {
        expires_at: t.expires_at_rfc3339(),
        token: t.token,
        api_url: routes.sync.references().api_url().to_owned(),
    })
    .into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    r
}

#[derive(Deserialize)]
struct ReferencesBody {
    deck_hash: String,
    files: Vec<ReportedFile>,
}

#[derive(Serialize)]
struct Refused {
    note_guid: String,
    filename: String,
    reason: &'static str,
}

async fn references(State(routes): State<Arc<MediaRoutes>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let user = match routes.user(&headers).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let body: ReferencesBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", &format!("body: {e}")),
    };
    if body.files.len() > MAX_FILES {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_items",
            &format!("at most {MAX_FILES} files per request"),
        );
    }
    if body.deck_hash.is_empty() || body.deck_hash.len() > 255 {
        return error(StatusCode::BAD_REQUEST, "bad_request", "deck_hash: 1-255 characters");
    }
    let mut refused = Vec::new();
    let mut files = Vec::new();
    for f in body.files {
        let reason = if f.note_guid.is_empty() || f.note_guid.len() > 255 {
            Some("bad_note_guid")
        } else if !is_sha256(&f.sha256) {
            Some("bad_hash")
        } else if filename_problem(&f.filename).is_some() {
            Some("bad_filename")
        } else {
            None
        };
        match reason {
            Some(reason) => refused.push(Refused { note_guid: f.note_guid, filename: f.filename, reason }),
            None => files.push(f),
        }
    }
    let mut db = match (routes.connect)().await {
        Ok(db) => db,
        Err(e) => {
            tracing::error!(error = %e, "no database connection for /media/references");
            return unavailable();
        }
    };
    let allowed = match allowed(&routes, &db, user, &body.deck_hash, &files).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let (mine, theirs): (Vec<ReportedFile>, Vec<ReportedFile>) =
        files.into_iter().partition(|f| allowed.contains(&f.note_guid));
    refused.extend(theirs.into_iter().map(|f| Refused {
        note_guid: f.note_guid,
        filename: f.filename,
        reason: "forbidden",
    }));
    if mine.is_empty() && refused.iter().any(|r| r.reason == "forbidden") {
        return error(StatusCode::FORBIDDEN, "forbidden", "none of these notes is yours to change");
    }
    match routes.sync.suggestion_submitted(&mut db, Some(user), &body.deck_hash, &mine).await {
        Ok(r) => Json(json!({"recorded": r.recorded, "waiting": r.waiting, "refused": refused})).into_response(),
        Err(Error::Invalid(m)) => error(StatusCode::BAD_REQUEST, "bad_request", &m),
        Err(Error::Refused { status, code, message }) => {
            tracing::error!(status, code, message, "the media server refused references");
            error(StatusCode::BAD_GATEWAY, "media_server_refused", &message)
        }
        Err(e) => {
            tracing::warn!(error = %e, "recording references failed; the plugin will retry");
            unavailable()
        }
    }
}

/// The guids of `files` the user may report for: existing notes by the `may_write` check, notes
/// not inserted yet (a new deck) only for a maintainer of the deck.
async fn allowed(
    routes: &MediaRoutes,
    db: &Client,
    user: i64,
    deck_hash: &str,
    files: &[ReportedFile],
) -> Result<BTreeSet<String>, Response> {
    let guids: Vec<String> = files.iter().map(|f| f.note_guid.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let fail = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "checking media permissions failed");
        unavailable()
    };
    let notes: BTreeMap<String, Vec<i64>> = decks::notes_by_guid(db, deck_hash, &guids).await.map_err(|e| fail(&e))?;
    let ids: Vec<i64> = notes.values().flatten().copied().collect();
    let writable = if ids.is_empty() {
        BTreeSet::new()
    } else {
        (routes.may_write)(db, user, &ids).await.map_err(|e| fail(&e))?
    };
    let unknown = guids.iter().any(|g| !notes.contains_key(g));
    let maintainer = unknown && decks::maintains_deck(db, user, deck_hash).await.map_err(|e| fail(&e))?;
    Ok(guids
        .into_iter()
        .filter(|g| match notes.get(g) {
            Some(ids) => ids.iter().all(|id| writable.contains(id)),
            None => maintainer,
        })
        .collect())
}

#[derive(Deserialize)]
struct RedirectQuery {
    u: String,
    s: String,
}

/// 302 to a URL [`crate::legacy::manifest`] signed; 404 for anything else (never an open redirect).
async fn legacy_download(
    State(routes): State<Arc<MediaRoutes>>,
    axum::extract::Query(q): axum::extract::Query<RedirectQuery>,
) -> Response {
    match routes.redirects.as_ref().and_then(|r| r.resolve(&q.u, &q.s)) {
        Some(url) => match header::HeaderValue::from_str(&url) {
            Ok(location) => {
                let mut r = StatusCode::FOUND.into_response();
                r.headers_mut().insert(header::LOCATION, location);
                r.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
                r
            }
            Err(_) => error(StatusCode::NOT_FOUND, "not_found", "no such download"),
        },
        None => error(StatusCode::NOT_FOUND, "not_found", "no such download"),
    }
}
