//! Media tokens: HS256 JWTs the media server accepts, signed with the secret it was deployed with.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use time::OffsetDateTime;

use crate::error::{Error, Result};

/// `iss` the media server expects unless configured otherwise (`JWT_ISSUER`).
pub const DEFAULT_ISSUER: &str = "ankicollab";
/// `aud` the media server expects unless configured otherwise (`JWT_AUDIENCE`).
pub const DEFAULT_AUDIENCE: &str = "ankicollab-media";
/// The `sub` of the backend's own `references` tokens.
pub const BACKEND_SUBJECT: &str = "ankicollab-backend";

/// A minted token and when it expires; `expires_at` is what `POST /media/token` answers.
#[derive(Clone, PartialEq, Eq)]
pub struct MediaToken {
    pub token: String,
    pub expires_at: OffsetDateTime,
}

impl MediaToken {
    /// `expires_at` as RFC 3339 (`2026-12-06T21:00:00Z`).
    pub fn expires_at_rfc3339(&self) -> String {
        self.expires_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| self.expires_at.unix_timestamp().to_string())
    }
}

impl std::fmt::Debug for MediaToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A token is a credential: never in a log.
        f.debug_struct("MediaToken").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: i64,
    exp: i64,
    iss: &'a str,
    aud: &'a str,
    scope: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    decks: &'a [String],
}

/// Mints the media server's tokens. Build it once at start-up from the secret the media stack
/// generated (its `JwtSecret` in Secrets Manager: the secret itself, or during a rotation
/// `{"keys": [{"kid", "secret"}, …]}`, whose first key signs).
///
/// ```
/// use ankicollab_media_backend::TokenIssuer;
///
/// let issuer = TokenIssuer::new("the secret from Secrets Manager")?;
/// let token = issuer.for_user(42);
/// assert!(token.expires_at > time::OffsetDateTime::now_utc());
/// let maintainer = issuer.for_maintainer(42, &["apple-banana-cherry".to_string()]);
/// assert_ne!(token.token, maintainer.token);
/// # Ok::<(), ankicollab_media_backend::Error>(())
/// ```
#[derive(Clone)]
pub struct TokenIssuer {
    kid: Option<String>,
    key: Vec<u8>,
    issuer: String,
    audience: String,
    user_ttl: Duration,
    backend_ttl: Duration,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Keys {
    keys: Vec<Key>,
}

#[derive(Deserialize)]
struct Key {
    kid: String,
    secret: String,
}

impl TokenIssuer {
    /// From the secret as stored. User tokens live an hour, the backend's own an hour too (the
    /// media server allows at most 4 h and 24 h by default); see [`TokenIssuer::lifetimes`].
    pub fn new(secret: &str) -> Result<Self> {
        let trimmed = secret.trim();
        let (kid, bytes) = if trimmed.starts_with('{') {
            let keys: Keys = serde_json::from_str(trimmed).map_err(|e| Error::Secret(format!("not key JSON: {e}")))?;
            let first = keys.keys.into_iter().next().ok_or_else(|| Error::Secret("no key listed".into()))?;
            if first.kid.is_empty() || first.secret.is_empty() {
                return Err(Error::Secret("the first key needs a kid and a secret".into()));
            }
            (Some(first.kid), first.secret.into_bytes())
        } else if trimmed.is_empty() {
            return Err(Error::Secret("empty".into()));
        } else {
            (None, secret.as_bytes().to_vec())
        };
        Ok(Self {
            kid,
            key: bytes,
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
            user_ttl: Duration::from_secs(3600),
            backend_ttl: Duration::from_secs(3600),
        })
    }

    /// `iss` and `aud`, when the media stack was deployed with other values than the defaults.
    pub fn names(mut self, issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self.audience = audience.into();
        self
    }

    /// How long user tokens and the backend's own tokens live; keep them within the media stack's
    /// `TokenMaxLifetime` and `TokenMaxReferencesLifetime`.
    pub fn lifetimes(mut self, user: Duration, backend: Duration) -> Self {
        self.user_ttl = user;
        self.backend_ttl = backend;
        self
    }

    /// Upload and download, for a signed-in user (`sub` is the user's id: quotas and rate limits
    /// are per `sub`).
    pub fn for_user(&self, user_id: impl std::fmt::Display) -> MediaToken {
        self.mint(&user_id.to_string(), "upload download", &[], self.user_ttl)
    }

    /// The maintainer page for `decks` (their `human_hash`es; [`crate::decks::maintained_decks`]
    /// lists a user's), plus upload and download.
    pub fn for_maintainer(&self, user_id: impl std::fmt::Display, decks: &[String]) -> MediaToken {
        self.mint(&user_id.to_string(), "maintain upload download", decks, self.user_ttl)
    }

    /// The backend's own token for `POST /v1/references`: never hand it to a user.
    pub fn for_backend(&self) -> MediaToken {
        self.mint(BACKEND_SUBJECT, "references", &[], self.backend_ttl)
    }

    /// A compact HS256 JWS (RFC 7515): header and claims in URL-safe base64, HMAC-SHA256 over
    /// both. Written here rather than through a JWT crate, whose process-wide crypto backend
    /// could clash with the embedding backend's own choice.
    fn sign(&self, claims: &Claims<'_>) -> String {
        #[derive(Serialize)]
        struct JwtHeader<'a> {
            alg: &'static str,
            typ: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            kid: Option<&'a str>,
        }
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = JwtHeader { alg: "HS256", typ: "JWT", kid: self.kid.as_deref() };
        // Plain structs of strings and numbers: serialising them cannot fail.
        let header = serde_json::to_vec(&header).unwrap_or_default();
        let claims = serde_json::to_vec(claims).unwrap_or_default();
        let signing_input = format!("{}.{}", b64.encode(header), b64.encode(claims));
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(signing_input.as_bytes());
        format!("{signing_input}.{}", b64.encode(mac.finalize().into_bytes()))
    }

    fn mint(&self, sub: &str, scope: &str, decks: &[String], ttl: Duration) -> MediaToken {
        let now = OffsetDateTime::now_utc();
        let expires_at = now + ttl;
        let claims = Claims {
            sub,
            iat: now.unix_timestamp(),
            exp: expires_at.unix_timestamp(),
            iss: &self.issuer,
            aud: &self.audience,
            scope,
            decks,
        };
        let token = self.sign(&claims);
        MediaToken { token, expires_at: expires_at.replace_nanosecond(0).unwrap_or(expires_at) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(token: &str, i: usize) -> serde_json::Value {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.split('.').nth(i).unwrap()).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn claims(token: &str) -> serde_json::Value {
        part(token, 1)
    }

    fn header(token: &str) -> serde_json::Value {
        part(token, 0)
    }

    #[test]
    fn tokens_carry_the_claims_the_media_server_requires() {
        let issuer = TokenIssuer::new("s3cret").unwrap();
        let t = issuer.for_user(42);
        let c = claims(&t.token);
        assert_eq!(c["sub"], "42");
        assert_eq!(c["scope"], "upload download");
        assert_eq!((c["iss"].as_str(), c["aud"].as_str()), (Some(DEFAULT_ISSUER), Some(DEFAULT_AUDIENCE)));
        assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 3600);
        assert_eq!(c["exp"].as_i64().unwrap(), t.expires_at.unix_timestamp());
        assert!(c.get("decks").is_none());
        let m = claims(&issuer.for_maintainer("7", &["d1".into(), "d2".into()]).token);
        assert_eq!(
            (m["scope"].as_str(), m["decks"].clone()),
            (Some("maintain upload download"), serde_json::json!(["d1", "d2"]))
        );
        let b = claims(&issuer.for_backend().token);
        assert_eq!((b["sub"].as_str(), b["scope"].as_str()), (Some(BACKEND_SUBJECT), Some("references")));
        assert!(!format!("{t:?} {issuer:?}").contains("s3cret") && !format!("{t:?}").contains(&t.token));
    }

    #[test]
    fn a_rotation_signs_with_the_first_key_and_names_it() {
        let issuer =
            TokenIssuer::new(r#"{"keys": [{"kid": "2026-12", "secret": "new"}, {"kid": "2026-06", "secret": "old"}]}"#)
                .unwrap();
        assert_eq!(header(&issuer.for_user(1).token)["kid"], "2026-12");
        assert!(header(&TokenIssuer::new("plain").unwrap().for_user(1).token).get("kid").is_none());
        assert!(matches!(TokenIssuer::new(""), Err(Error::Secret(_))));
        assert!(matches!(TokenIssuer::new(r#"{"keys": []}"#), Err(Error::Secret(_))));
        assert!(matches!(TokenIssuer::new("{nope"), Err(Error::Secret(_))));
        let renamed = TokenIssuer::new("k")
            .unwrap()
            .names("me", "them")
            .lifetimes(Duration::from_secs(60), Duration::from_secs(600));
        let c = claims(&renamed.for_backend().token);
        assert_eq!((c["iss"].as_str(), c["aud"].as_str()), (Some("me"), Some("them")));
        assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 600);
    }
}
