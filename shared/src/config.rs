//! Typed configuration, parsed once from the environment at start-up.

use crate::access::{Rate, RateLimits};
use crate::maintainer_page::EmbedOrigins;
use crate::model::Keys;
use crate::policy::Limits;

/// How long a count must stay zero before the sweep deletes the media, unless `SWEEP_GRACE_SECS`
/// says otherwise: URL expiry (15 min) plus S3 event retries (up to an hour), with a wide margin.
pub const DEFAULT_SWEEP_GRACE: time::Duration = time::Duration::hours(24);

/// A secret setting (the token secret, the CloudFront key): its `Debug` never prints it, so a
/// logged `Config` cannot leak it; [`Secret::expose`] is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    #[error("environment variable {0} is not valid: {1}")]
    Invalid(&'static str, String),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub bucket: String,
    pub media_table: String,
    pub deck_files_table: String,
    pub refs_table: String,
    pub quotas_table: String,
    pub region: String,
    /// Where pre-signed URLs point when not at AWS (path style), e.g. LocalStack.
    pub s3_public_endpoint: Option<String>,
    pub jwt_secret: Option<Secret>,
    /// Secrets Manager secret holding the token secret, when `JWT_SECRET` is not set (AWS).
    pub jwt_secret_arn: Option<String>,
    /// What tokens must say (`JWT_ISSUER`, `JWT_AUDIENCE`) and how long they may live
    /// (`TOKEN_MAX_LIFETIME_SECS`, `TOKEN_MAX_REFERENCES_LIFETIME_SECS`).
    pub token_policy: crate::auth::TokenPolicy,
    pub url_ttl_secs: u32,
    pub download_page_size: usize,
    /// How long a count must have stayed zero before the sweep deletes the media.
    pub sweep_grace_secs: i64,
    pub keys: Keys,
    pub limits: Limits,
    /// Who may embed the maintainer page and send it a token (`MAINTAINER_PAGE_EMBED_ORIGINS`).
    pub embed_origins: EmbedOrigins,
    /// Downloads through CloudFront, when `CDN_URL` is set.
    pub cdn: Option<CdnConfig>,
    pub sdk_timeouts: SdkTimeouts,
    /// Per user and route class (`RATE_LIMIT_UPLOADS`, `RATE_LIMIT_DOWNLOADS`,
    /// `RATE_LIMIT_REFERENCES`, `RATE_LIMIT_MAINTAINER`: `N` a minute or `N/BURST`, 0 for none).
    pub rate_limits: RateLimits,
    /// How often an instance reads the deny-list again (`REVOCATION_REFRESH_SECS`, at most 60).
    pub revocation_refresh_secs: u64,
    /// How long an API instance may answer downloads from its memory of ready records
    /// (`READY_CACHE_SECS`, 0 for never; `servable`). The sweep's grace is never less.
    pub ready_cache_secs: u64,
    /// How many ready records an instance remembers at most (`READY_CACHE_ENTRIES`).
    pub ready_cache_entries: usize,
}

impl Config {
    /// The least grace period a sweep may use: what keeps an instance's memory of ready records
    /// from ever disagreeing with the records (`servable`).
    pub fn min_sweep_grace(&self) -> time::Duration {
        time::Duration::seconds(i64::try_from(self.ready_cache_secs).unwrap_or(i64::MAX))
    }
}

/// Bounds on every AWS SDK call, chosen per function for its own timeout
/// (`SDK_CONNECT_TIMEOUT_SECS`, `SDK_OPERATION_TIMEOUT_SECS`): a hung backend costs one call its
/// operation timeout (all attempts included), never the function its whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdkTimeouts {
    pub connect: std::time::Duration,
    pub operation: std::time::Duration,
}

impl Default for SdkTimeouts {
    fn default() -> Self {
        Self { connect: std::time::Duration::from_secs(3), operation: std::time::Duration::from_secs(10) }
    }
}

impl SdkTimeouts {
    /// The timeouts from the environment, for what reads no [`Config`] (the Postgres mirror).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_settings(&Settings(|name: &str| std::env::var(name).ok()))
    }

    fn from_settings<F: Fn(&str) -> Option<String>>(s: &Settings<F>) -> Result<Self, ConfigError> {
        let d = Self::default();
        let secs = |name, default: std::time::Duration| -> Result<std::time::Duration, ConfigError> {
            match s.number(name, default.as_secs_f64())? {
                v if v > 0.0 && v.is_finite() => Ok(std::time::Duration::from_secs_f64(v)),
                v => Err(ConfigError::Invalid(name, format!("{v}: must be a positive number of seconds"))),
            }
        };
        Ok(Self {
            connect: secs("SDK_CONNECT_TIMEOUT_SECS", d.connect)?,
            operation: secs("SDK_OPERATION_TIMEOUT_SECS", d.operation)?,
        })
    }

    /// Each of the SDK's (three) attempts gets a third of the operation's time.
    pub fn attempt(&self) -> std::time::Duration {
        (self.operation / 3).max(std::time::Duration::from_millis(500))
    }

    /// How long a sweep's claim on a record it is deleting lasts (`lifecycle`): its conditional
    /// write and then its object deletions each end within an operation timeout; two seconds more
    /// cover the clocks of two functions disagreeing.
    pub fn sweep_claim(&self) -> time::Duration {
        time::Duration::try_from(self.operation * 2).unwrap_or(time::Duration::MINUTE) + time::Duration::seconds(2)
    }
}

/// The CloudFront distribution downloads go through, and the key that signs its URLs.
#[derive(Debug, Clone)]
pub struct CdnConfig {
    /// `CDN_URL`: `https://d111111abcdef8.cloudfront.net`.
    pub url: String,
    /// `CDN_KEY_PAIR_ID`: the id of the public key in the distribution's trusted key group.
    pub key_pair_id: String,
    /// `CDN_PRIVATE_KEY`: the private key itself (PEM), locally.
    pub private_key: Option<Secret>,
    /// `CDN_PRIVATE_KEY_SECRET`: the Secrets Manager secret (name or ARN) holding it, on AWS.
    pub private_key_secret: Option<String>,
}

/// Reads settings from a lookup (the environment, or a table in tests); an empty value counts as
/// unset.
struct Settings<F>(F);

impl<F: Fn(&str) -> Option<String>> Settings<F> {
    fn var(&self, name: &'static str) -> Option<String> {
        (self.0)(name).filter(|v| !v.is_empty())
    }

    fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.var(name).ok_or(ConfigError::Missing(name))
    }

    fn number<T: std::str::FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError> {
        match self.var(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| ConfigError::Invalid(name, v)),
        }
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The config from `lookup` (name → value), as [`Config::from_env`] reads the environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let s = Settings(lookup);
        let d = Limits::default();
        Ok(Self {
            bucket: s.required("BUCKET")?,
            media_table: s.required("MEDIA_TABLE")?,
            deck_files_table: s.required("DECK_FILES_TABLE")?,
            refs_table: s.required("REFS_TABLE")?,
            quotas_table: s.required("QUOTAS_TABLE")?,
            region: s.var("AWS_REGION").or_else(|| s.var("AWS_DEFAULT_REGION")).unwrap_or_else(|| "us-east-1".into()),
            s3_public_endpoint: s.var("S3_PUBLIC_ENDPOINT").or_else(|| s.var("AWS_ENDPOINT_URL_S3")),
            jwt_secret: s.var("JWT_SECRET").map(Secret),
            jwt_secret_arn: s.var("JWT_SECRET_ARN"),
            token_policy: {
                let p = crate::auth::TokenPolicy::default();
                crate::auth::TokenPolicy {
                    issuer: s.var("JWT_ISSUER").unwrap_or(p.issuer),
                    audience: s.var("JWT_AUDIENCE").unwrap_or(p.audience),
                    max_user_lifetime_secs: s.number("TOKEN_MAX_LIFETIME_SECS", p.max_user_lifetime_secs)?,
                    max_references_lifetime_secs: s
                        .number("TOKEN_MAX_REFERENCES_LIFETIME_SECS", p.max_references_lifetime_secs)?,
                }
            },
            url_ttl_secs: s.number("URL_TTL_SECS", 900)?,
            download_page_size: s.number("DOWNLOAD_PAGE_SIZE", 2000)?,
            sweep_grace_secs: s.number("SWEEP_GRACE_SECS", DEFAULT_SWEEP_GRACE.whole_seconds())?,
            keys: Keys::default(),
            embed_origins: EmbedOrigins::parse(&s.var("MAINTAINER_PAGE_EMBED_ORIGINS").unwrap_or_default())
                .map_err(|e| ConfigError::Invalid("MAINTAINER_PAGE_EMBED_ORIGINS", e))?,
            cdn: match s.var("CDN_URL") {
                None => None,
                Some(url) => {
                    let (private_key, private_key_secret) =
                        (s.var("CDN_PRIVATE_KEY").map(Secret), s.var("CDN_PRIVATE_KEY_SECRET"));
                    if private_key.is_none() && private_key_secret.is_none() {
                        return Err(ConfigError::Missing("CDN_PRIVATE_KEY_SECRET"));
                    }
                    Some(CdnConfig {
                        url,
                        key_pair_id: s.required("CDN_KEY_PAIR_ID")?,
                        private_key,
                        private_key_secret,
                    })
                }
            },
            limits: Limits {
                max_image_bytes: s.number("MAX_IMAGE_BYTES", d.max_image_bytes)?,
                max_stored_image_bytes: s.number("MAX_STORED_IMAGE_BYTES", d.max_stored_image_bytes)?,
                max_audio_bytes: s.number("MAX_AUDIO_BYTES", d.max_audio_bytes)?,
                max_audio_seconds: s.number("MAX_AUDIO_SECONDS", d.max_audio_seconds)?,
                max_pixels: s.number("MAX_PIXELS", d.max_pixels)?,
                max_animation_pixels: s.number("MAX_ANIMATION_PIXELS", d.max_animation_pixels)?,
                daily_upload_bytes: s.number("DAILY_UPLOAD_BYTES", d.daily_upload_bytes)?,
                daily_upload_files: s.number("DAILY_UPLOAD_FILES", d.daily_upload_files)?,
                effort: s.number("CONVERSION_EFFORT", d.effort)?,
                ..d
            },
            sdk_timeouts: SdkTimeouts::from_settings(&s)?,
            rate_limits: {
                let d = RateLimits::default();
                let rate = |name: &'static str, default: Rate| match s.var(name) {
                    None => Ok(default),
                    Some(v) => Rate::parse(&v).map_err(|e| ConfigError::Invalid(name, e)),
                };
                RateLimits {
                    uploads: rate("RATE_LIMIT_UPLOADS", d.uploads)?,
                    downloads: rate("RATE_LIMIT_DOWNLOADS", d.downloads)?,
                    references: rate("RATE_LIMIT_REFERENCES", d.references)?,
                    maintainer: rate("RATE_LIMIT_MAINTAINER", d.maintainer)?,
                }
            },
            revocation_refresh_secs: match s.number("REVOCATION_REFRESH_SECS", 60u64)? {
                secs @ 1..=60 => secs,
                v => {
                    return Err(ConfigError::Invalid(
                        "REVOCATION_REFRESH_SECS",
                        format!("{v}: must be 1 to 60 seconds"),
                    ))
                }
            },
            ready_cache_secs: s.number("READY_CACHE_SECS", 3600u64)?,
            ready_cache_entries: s.number("READY_CACHE_ENTRIES", 50_000usize)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    const TABLES: [(&str, &str); 5] =
        [("BUCKET", "b"), ("MEDIA_TABLE", "m"), ("DECK_FILES_TABLE", "d"), ("REFS_TABLE", "r"), ("QUOTAS_TABLE", "q")];

    #[test]
    fn defaults_apply_to_what_is_unset_or_empty() {
        let mut pairs = TABLES.to_vec();
        pairs.push(("URL_TTL_SECS", ""));
        let c = Config::from_lookup(lookup(&pairs)).unwrap();
        assert_eq!((c.bucket.as_str(), c.quotas_table.as_str(), c.region.as_str()), ("b", "q", "us-east-1"));
        assert_eq!((c.url_ttl_secs, c.download_page_size), (900, 2000));
        assert_eq!(c.sweep_grace_secs, DEFAULT_SWEEP_GRACE.whole_seconds());
        let d = Limits::default();
        assert_eq!((c.limits.max_pixels, c.limits.daily_upload_files), (d.max_pixels, d.daily_upload_files));
        assert_eq!((c.jwt_secret, c.s3_public_endpoint), (None, None));
        assert_eq!(c.sdk_timeouts, SdkTimeouts::default());
        assert_eq!((c.rate_limits, c.revocation_refresh_secs), (RateLimits::default(), 60));
    }

    #[test]
    fn rate_limits_and_the_revocation_refresh_are_bounded() {
        let mut pairs = TABLES.to_vec();
        pairs.extend([
            ("RATE_LIMIT_UPLOADS", "30/5"),
            ("RATE_LIMIT_REFERENCES", "0"),
            ("REVOCATION_REFRESH_SECS", "5"),
        ]);
        let c = Config::from_lookup(lookup(&pairs)).unwrap();
        assert_eq!(c.rate_limits.uploads, Rate { per_minute: 30, burst: 5 });
        assert_eq!(c.rate_limits.references, Rate::UNLIMITED);
        assert_eq!(c.rate_limits.downloads, RateLimits::default().downloads);
        assert_eq!(c.revocation_refresh_secs, 5);
        for (name, bad) in
            [("RATE_LIMIT_DOWNLOADS", "lots"), ("REVOCATION_REFRESH_SECS", "3600"), ("REVOCATION_REFRESH_SECS", "0")]
        {
            let mut pairs = TABLES.to_vec();
            pairs.push((name, bad));
            let err = Config::from_lookup(lookup(&pairs)).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn sdk_timeouts_bound_the_sweep_claim() {
        let mut pairs = TABLES.to_vec();
        pairs.extend([("SDK_OPERATION_TIMEOUT_SECS", "4"), ("SDK_CONNECT_TIMEOUT_SECS", "0.5")]);
        let t = Config::from_lookup(lookup(&pairs)).unwrap().sdk_timeouts;
        assert_eq!(t.connect, std::time::Duration::from_millis(500));
        assert_eq!(t.sweep_claim(), time::Duration::seconds(10));
        assert!(t.attempt() * 3 <= t.operation);
        for bad in ["0", "-1", "soon", "inf"] {
            let mut pairs = TABLES.to_vec();
            pairs.push(("SDK_OPERATION_TIMEOUT_SECS", bad));
            assert!(Config::from_lookup(lookup(&pairs)).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_override_defaults() {
        let mut pairs = TABLES.to_vec();
        pairs.extend([
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:4566"),
            ("SWEEP_GRACE_SECS", "0"),
            ("MAX_PIXELS", "1000"),
            ("DAILY_UPLOAD_FILES", "7"),
        ]);
        let c = Config::from_lookup(lookup(&pairs)).unwrap();
        assert_eq!(c.region, "eu-west-1");
        assert_eq!(c.s3_public_endpoint.as_deref(), Some("http://127.0.0.1:4566"));
        assert_eq!((c.sweep_grace_secs, c.limits.max_pixels, c.limits.daily_upload_files), (0, 1000, 7));
        // AWS_REGION wins over AWS_DEFAULT_REGION, as the SDK reads them.
        pairs.push(("AWS_REGION", "ap-south-1"));
        assert_eq!(Config::from_lookup(lookup(&pairs)).unwrap().region, "ap-south-1");
    }

    #[test]
    fn the_distribution_needs_a_key_id_and_a_key() {
        assert!(Config::from_lookup(lookup(&TABLES)).unwrap().cdn.is_none(), "off unless CDN_URL is set");
        let mut pairs = TABLES.to_vec();
        pairs.push(("CDN_URL", "https://d1.cloudfront.net"));
        assert!(matches!(Config::from_lookup(lookup(&pairs)), Err(ConfigError::Missing("CDN_PRIVATE_KEY_SECRET"))));
        pairs.push(("CDN_PRIVATE_KEY_SECRET", "arn:aws:secretsmanager:eu-west-1:1:secret:cdn"));
        assert!(matches!(Config::from_lookup(lookup(&pairs)), Err(ConfigError::Missing("CDN_KEY_PAIR_ID"))));
        pairs.push(("CDN_KEY_PAIR_ID", "K2JCJMDEHXQW5F"));
        let cdn = Config::from_lookup(lookup(&pairs)).unwrap().cdn.unwrap();
        assert_eq!(
            (cdn.url.as_str(), cdn.key_pair_id.as_str(), cdn.private_key),
            ("https://d1.cloudfront.net", "K2JCJMDEHXQW5F", None)
        );
        pairs.push(("CDN_PRIVATE_KEY", "-----BEGIN RSA PRIVATE KEY-----secret"));
        pairs.push(("JWT_SECRET", "token-secret-value"));
        let config = Config::from_lookup(lookup(&pairs)).unwrap();
        let cdn = config.cdn.as_ref().unwrap();
        assert_eq!(cdn.private_key.as_ref().map(Secret::expose), Some("-----BEGIN RSA PRIVATE KEY-----secret"));
        assert_eq!(config.jwt_secret.as_ref().map(Secret::expose), Some("token-secret-value"));
        let logged = format!("{config:?}");
        assert!(!logged.contains("BEGIN") && !logged.contains("token-secret"), "a secret reached a log: {logged}");
    }

    #[test]
    fn missing_or_invalid_settings_are_named() {
        let err = Config::from_lookup(lookup(&TABLES[1..])).unwrap_err();
        assert!(matches!(err, ConfigError::Missing("BUCKET")), "{err}");
        let mut pairs = TABLES.to_vec();
        pairs.push(("URL_TTL_SECS", "fifteen minutes"));
        let err = Config::from_lookup(lookup(&pairs)).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid("URL_TTL_SECS", _)), "{err}");
        assert!(err.to_string().contains("URL_TTL_SECS"));
        pairs.pop();
        pairs.push(("SWEEP_GRACE_SECS", "-"));
        assert!(matches!(Config::from_lookup(lookup(&pairs)), Err(ConfigError::Invalid("SWEEP_GRACE_SECS", _))));
    }
}
