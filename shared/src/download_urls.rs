//! How one answer's download URLs are signed: a pre-signed S3 GET per object, or, with the
//! CloudFront distribution on, one policy and signature that every URL of the answer shares.

use time::OffsetDateTime;

use crate::app::App;
use crate::cdn::{CdnSigner, Grant};
use crate::error::StoreError;
use crate::presign::{Credentials, Presigner};

pub enum GetUrls<'a> {
    S3 { presigner: &'a Presigner, creds: Credentials, now: OffsetDateTime, ttl: u32 },
    Cdn { signer: &'a CdnSigner, grant: Grant },
}

impl GetUrls<'_> {
    /// For an answer whose URLs expire `ttl` seconds after `now`, all of them under `prefix`
    /// (`media/`; empty for the whole distribution).
    pub async fn for_answer<'a>(app: &'a App, prefix: &str, now: OffsetDateTime) -> Result<GetUrls<'a>, StoreError> {
        let ttl = app.config.url_ttl_secs;
        match &app.cdn {
            Some(signer) => {
                let expires = now.unix_timestamp() + i64::from(ttl);
                // Signing fails only if the key does; answer 503 rather than URLs that do not work.
                let grant = signer.grant(prefix, expires).map_err(|e| StoreError::new("cloudfront", e))?;
                Ok(GetUrls::Cdn { signer, grant })
            }
            None => {
                let creds = app.credentials.credentials().await?;
                Ok(GetUrls::S3 { presigner: &app.presigner, creds, now, ttl })
            }
        }
    }

    /// Where the URLs point (scheme and host): what the maintainer page's CSP lets it load.
    pub fn origin(app: &App) -> &str {
        app.cdn.as_ref().map_or(app.presigner.origin(), CdnSigner::base_url)
    }

    pub fn url(&self, key: &str) -> String {
        match self {
            GetUrls::S3 { presigner, creds, now, ttl } => presigner.get(creds, key, *now, *ttl).url,
            GetUrls::Cdn { signer, grant } => signer.url(grant, key),
        }
    }
}
