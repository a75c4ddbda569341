//! How one answer's download URLs are signed: a pre-signed S3 GET per object, or, with the
//! CloudFront distribution on, one policy and signature per key prefix that every URL of the
//! answer under that prefix shares. CloudFront takes one statement per policy, so an answer with
//! media and thumbnails carries two grants, `media/*` and `thumbs/*`, never the whole
//! distribution.

use time::OffsetDateTime;

use crate::cdn::{CdnError, CdnSigner, Grant};
use crate::presign::{CredentialSource, Credentials, CredentialsError, Presigner};

/// An answer's URLs could not be signed: no credentials, or CloudFront's key refused. Like a
/// storage failure, transient to the caller (503).
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("cloudfront: {0}")]
    Cdn(#[from] CdnError),
}

/// What signs download URLs: S3's pre-signer with the function's credentials, or CloudFront's
/// key when the distribution is on. `ttl`: how long the URLs live.
#[derive(Clone, Copy)]
pub struct UrlSigner<'a> {
    pub presigner: &'a Presigner,
    pub credentials: &'a dyn CredentialSource,
    pub cdn: Option<&'a CdnSigner>,
    pub ttl: u32,
}

impl<'a> UrlSigner<'a> {
    /// For an answer whose URLs expire `ttl` seconds after `now`, each under one of `prefixes`
    /// (`media/`, `thumbs/`: what the answer needs, never more).
    pub async fn for_answer(&self, prefixes: &[&str], now: OffsetDateTime) -> Result<GetUrls<'a>, SigningError> {
        let ttl = self.ttl;
        match self.cdn {
            Some(signer) => {
                let expires = now.unix_timestamp() + i64::from(ttl);
                // Signing fails only if the key does; answer 503 rather than URLs that do not work.
                let grant = |p: &&str| Ok::<_, CdnError>((p.to_string(), signer.grant(p, expires)?));
                let grants = prefixes.iter().map(grant).collect::<Result<_, _>>()?;
                Ok(GetUrls::Cdn { signer, grants })
            }
            None => {
                let creds = self.credentials.credentials().await?;
                Ok(GetUrls::S3 { presigner: self.presigner, creds, now, ttl })
            }
        }
    }

    /// Where the URLs point (scheme and host): what the maintainer page's CSP lets it load.
    pub fn origin(&self) -> &'a str {
        self.cdn.map_or(self.presigner.origin(), CdnSigner::base_url)
    }
}

/// One answer's URLs, signed by [`UrlSigner::for_answer`].
pub enum GetUrls<'a> {
    S3 { presigner: &'a Presigner, creds: Credentials, now: OffsetDateTime, ttl: u32 },
    Cdn { signer: &'a CdnSigner, grants: Vec<(String, Grant)> },
}

impl GetUrls<'_> {
    /// The URL of `key`; `None` for a key under no prefix the answer was granted (a CloudFront
    /// URL for it would be refused).
    pub fn url(&self, key: &str) -> Option<String> {
        match self {
            GetUrls::S3 { presigner, creds, now, ttl } => Some(presigner.get(creds, key, *now, *ttl).url),
            GetUrls::Cdn { signer, grants } => {
                let grant = grants.iter().find(|(prefix, _)| key.starts_with(prefix.as_str())).map(|(_, g)| g);
                if grant.is_none() {
                    tracing::error!(key, "no grant covers this key");
                }
                grant.map(|g| signer.url(g, key))
            }
        }
    }
}
