//! Plugins that are not updated yet: today's `POST /media/manifest` answered from the new store,
//! so the backend's existing route keeps serving them during the switch.
//!
//! Old plugins fetch each `download_url` with their AnkiCollab session, which sends
//! `Authorization: Bearer …` with every request. S3 refuses a pre-signed URL that also carries an
//! `Authorization` header ("only one auth mechanism allowed"), so with [`Redirects`] the answer
//! points at a route of the backend (`GET /media/legacy-download`, [`Redirects::resolve`] behind
//! it, or the axum feature's handler) that answers 302 to the real URL: HTTP clients drop the
//! `Authorization` header when a redirect leaves the host. The redirect is signed, so the route
//! cannot be used to send anyone anywhere else.

use std::collections::BTreeSet;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio_postgres::GenericClient;

use crate::decks;
use crate::error::{Error, Result};
use crate::references::ReferencesClient;

/// Today's manifest answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub files: Vec<ManifestFile>,
    pub file_count: usize,
    /// When the first URL expires (RFC 3339), if any.
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub filename: String,
    pub download_url: String,
}

/// Today's limit per request.
pub const MAX_FILENAMES: usize = 500;

/// Signs and checks the backend's redirect URLs.
#[derive(Clone)]
pub struct Redirects {
    /// The route's absolute URL, e.g. `https://api.ankicollab.com/media/legacy-download`.
    pub base: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for Redirects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redirects").field("base", &self.base).finish_non_exhaustive()
    }
}

impl Redirects {
    /// `key`: any secret of the backend's (the media token secret will do).
    pub fn new(base: impl Into<String>, key: &[u8]) -> Self {
        Self { base: base.into(), key: key.to_vec() }
    }

    fn hmac(&self, url: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(b"ankicollab-media legacy download\n");
        mac.update(url.as_bytes());
        mac
    }

    fn mac(&self, url: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.hmac(url).finalize().into_bytes())
    }

    /// The URL an old plugin gets for `url`.
    pub fn wrap(&self, url: &str) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}?u={}&s={}", self.base, b64.encode(url), self.mac(url))
    }

    /// The real URL behind a redirect's `u` and `s` query values, if they were signed here.
    pub fn resolve(&self, u: &str, s: &str) -> Option<String> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let url = String::from_utf8(b64.decode(u).ok()?).ok()?;
        let given = b64.decode(s).ok()?;
        // HMAC's own comparison, in constant time.
        self.hmac(&url).verify_slice(&given).is_ok().then_some(url)
    }
}

#[derive(Deserialize)]
struct DownloadsPage {
    #[serde(default)]
    files: Vec<DownloadsFile>,
}

#[derive(Deserialize)]
struct DownloadsFile {
    filename: String,
    url: String,
    expires_at: Option<String>,
}

/// Today's `POST /media/manifest` for `user_id`: `{deck_hash, filenames}` (at most 500) →
/// `{files: [{filename, download_url}], file_count, expires_at}`, for the ready files among
/// `filenames` in the tree of the deck `deck_hash` names (a subdeck's hash finds its root).
///
/// ```no_run
/// # async fn demo(db: &tokio_postgres::Client, refs: &ankicollab_media_backend::ReferencesClient)
/// # -> Result<(), ankicollab_media_backend::Error> {
/// use ankicollab_media_backend::legacy::{manifest, Redirects};
/// let redirects = Redirects::new("https://api.example.com/media/legacy-download", b"a secret");
/// let answer = manifest(refs, db, 42, "apple-banana", &["cell.png".to_string()], Some(&redirects)).await?;
/// # Ok(()) }
/// ```
pub async fn manifest(
    refs: &ReferencesClient,
    db: &impl GenericClient,
    user_id: i64,
    deck_hash: &str,
    filenames: &[String],
    redirects: Option<&Redirects>,
) -> Result<Manifest> {
    if filenames.len() > MAX_FILENAMES {
        return Err(Error::Invalid(format!("at most {MAX_FILENAMES} filenames")));
    }
    let root = decks::root_of_deck(db, deck_hash).await?.unwrap_or_else(|| deck_hash.to_owned());
    let names: Vec<String> = filenames.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect();
    let token = refs.issuer().for_user(user_id);
    let page: DownloadsPage = refs
        .post_json("/v1/downloads", Some(&token.token), &serde_json::json!({"deck": root, "filenames": names}))
        .await?;
    let mut expires: Vec<String> = Vec::new();
    let files: Vec<ManifestFile> = page
        .files
        .into_iter()
        .map(|f| {
            expires.extend(f.expires_at);
            let download_url = match redirects {
                Some(r) => r.wrap(&f.url),
                None => f.url,
            };
            ManifestFile { filename: f.filename, download_url }
        })
        .collect();
    Ok(Manifest { file_count: files.len(), files, expires_at: expires.into_iter().min() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_resolve_only_what_was_signed_here() {
        let r = Redirects::new("https://b.example/media/legacy-download", b"k");
        let url = "https://bucket.s3.amazonaws.com/media/abc?X-Amz-Signature=1&x=2";
        let wrapped = r.wrap(url);
        let query = wrapped.split_once('?').unwrap().1;
        let (u, s) = query.split_once('&').unwrap();
        let (u, s) = (u.strip_prefix("u=").unwrap(), s.strip_prefix("s=").unwrap());
        assert_eq!(r.resolve(u, s).as_deref(), Some(url));
        let other = Redirects::new("https://b.example/x", b"other key");
        assert_eq!(other.resolve(u, s), None, "another key's signature");
        let evil = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("https://evil.example/");
        assert_eq!(r.resolve(&evil, s), None, "another URL under the same signature");
        assert_eq!(r.resolve("!!", s), None);
        assert_eq!(r.resolve(u, "AAAA"), None);
    }
}
