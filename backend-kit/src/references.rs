//! The media server's `POST /v1/references`: which files each note uses, per deck key.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::tokens::{MediaToken, TokenIssuer};

/// The media server takes at most this many notes per request.
pub const MAX_NOTES_PER_REQUEST: usize = 100;

/// A file a note uses: its name in the note and the SHA-256 of its bytes (64 lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FileRef {
    pub filename: String,
    #[serde(rename = "hash")]
    pub sha256: String,
}

impl FileRef {
    pub fn new(filename: impl Into<String>, sha256: impl Into<String>) -> Self {
        Self { filename: filename.into(), sha256: sha256.into() }
    }
}

/// One note's files. `note_id` is the note's key in the media server (AnkiCollab's `notes.id`
/// as decimal digits); an empty `media` removes the note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NoteMedia {
    pub note_id: String,
    pub media: Vec<FileRef>,
}

/// What the media server did, summed over every request of a call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Applied {
    pub notes: usize,
    pub added: usize,
    pub removed: usize,
}

/// How often and how long a call is retried when the media server is unavailable.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// The first pause; each later one doubles, up to `cap`, with jitter.
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self { attempts: 6, base: Duration::from_millis(250), cap: Duration::from_secs(8) }
    }
}

impl Retry {
    fn pause(&self, retry: u32) -> Duration {
        let ceiling = self.base.saturating_mul(1 << retry.min(16)).min(self.cap);
        // Half fixed, half jitter, so that many callers that failed together spread out.
        let jitter = OffsetDateTime::now_utc().nanosecond() as f64 / 1e9;
        ceiling.mul_f64(0.5 + jitter / 2.0)
    }
}

/// Sets and removes notes' references in the media server, with the backend's own token.
///
/// Every call is idempotent (a note's list replaces what the note referenced before), split into
/// requests of at most 100 notes, and retried with backoff on 5xx, 429 and lost connections; a
/// 4xx is returned as [`Error::Refused`] at once.
///
/// ```no_run
/// use ankicollab_media_backend::{FileRef, NoteMedia, ReferencesClient, TokenIssuer};
///
/// # async fn demo() -> Result<(), ankicollab_media_backend::Error> {
/// let refs = ReferencesClient::new("https://media.example.com", TokenIssuer::new("secret")?);
/// let note = NoteMedia { note_id: "1700000000001".into(), media: vec![FileRef::new("cell.png", "9f86d0…")] };
/// refs.set_notes("apple-banana-cherry", &[note]).await?;
/// refs.remove_notes("apple-banana-cherry", &["1700000000001".into()]).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ReferencesClient {
    http: reqwest::Client,
    api_url: String,
    issuer: TokenIssuer,
    token: Mutex<Option<MediaToken>>,
    retry: Retry,
}

#[derive(Serialize)]
struct Request<'a> {
    deck: &'a str,
    notes: &'a [NoteMedia],
}

impl ReferencesClient {
    pub fn new(api_url: impl Into<String>, issuer: TokenIssuer) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        Self {
            http,
            api_url: api_url.into().trim_end_matches('/').to_owned(),
            issuer,
            token: Mutex::new(None),
            retry: Retry::default(),
        }
    }

    /// Another retry policy (tests use short pauses).
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// The media API's address (what `POST /media/token` answers as `api_url`).
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// The token issuer this client signs with.
    pub fn issuer(&self) -> &TokenIssuer {
        &self.issuer
    }

    /// Each note now uses exactly its `media` under `deck_key` (its tree's root `human_hash`).
    pub async fn set_notes(&self, deck_key: &str, notes: &[NoteMedia]) -> Result<Applied> {
        let mut total = Applied::default();
        for chunk in notes.chunks(MAX_NOTES_PER_REQUEST) {
            let a = self.send(deck_key, chunk).await?;
            total.notes += a.notes;
            total.added += a.added;
            total.removed += a.removed;
        }
        Ok(total)
    }

    /// The notes use nothing any more under `deck_key`.
    pub async fn remove_notes(&self, deck_key: &str, note_ids: &[String]) -> Result<Applied> {
        let notes: Vec<NoteMedia> =
            note_ids.iter().map(|id| NoteMedia { note_id: id.clone(), media: vec![] }).collect();
        self.set_notes(deck_key, &notes).await
    }

    fn bearer(&self, fresh: bool) -> String {
        let mut slot = self.token.lock().unwrap_or_else(|p| p.into_inner());
        let renew = match slot.as_ref() {
            None => true,
            Some(t) => fresh || t.expires_at - OffsetDateTime::now_utc() < time::Duration::minutes(5),
        };
        if renew {
            *slot = Some(self.issuer.for_backend());
        }
        slot.as_ref().map(|t| t.token.clone()).unwrap_or_default()
    }

    async fn send(&self, deck_key: &str, notes: &[NoteMedia]) -> Result<Applied> {
        self.post_json("/v1/references", None, &Request { deck: deck_key, notes }).await
    }

    /// POST `body` to the media API with `token` (else the backend's own), retried with backoff
    /// on 5xx, 429 and lost connections; a 401 with the backend's token mints a fresh one once.
    pub(crate) async fn post_json<B: Serialize + ?Sized, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        token: Option<&str>,
        body: &B,
    ) -> Result<T> {
        let url = format!("{}{path}", self.api_url);
        let mut fresh_token = false;
        let mut last = String::new();
        let mut attempt = 0;
        while attempt < self.retry.attempts {
            let bearer = token.map(str::to_owned).unwrap_or_else(|| self.bearer(fresh_token));
            let sent = self.http.post(&url).bearer_auth(bearer).json(body).send().await;
            let wait = match sent {
                Err(e) => {
                    last = format!("no answer: {e}");
                    None
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok());
                    let text = resp.text().await.unwrap_or_default();
                    match status {
                        200..=299 => {
                            return serde_json::from_str(&text)
                                .map_err(|e| Error::Unavailable(format!("{path} answered an unexpected shape: {e}")));
                        }
                        401 if token.is_none() && !fresh_token => {
                            // A token minted just now, once: the clock or the secret moved.
                            fresh_token = true;
                            continue;
                        }
                        429 | 500..=599 => {
                            last = format!("HTTP {status}: {}", api_message(&text));
                            retry_after.map(Duration::from_secs)
                        }
                        _ => {
                            let (code, message) = api_error(&text);
                            return Err(Error::Refused { status, code, message });
                        }
                    }
                }
            };
            attempt += 1;
            if attempt < self.retry.attempts {
                let pause = wait.unwrap_or_else(|| self.retry.pause(attempt - 1)).min(Duration::from_secs(30));
                tracing::info!(path, attempt, ?pause, error = %last, "media server unavailable; retrying");
                tokio::time::sleep(pause).await;
            }
        }
        Err(Error::Unavailable(last))
    }
}

fn api_error(text: &str) -> (String, String) {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let code = v["error"]["code"].as_str().unwrap_or("unknown").to_owned();
    let message = v["error"]["message"].as_str().map(str::to_owned).unwrap_or_else(|| text.chars().take(300).collect());
    (code, message)
}

fn api_message(text: &str) -> String {
    api_error(text).1
}
