//! Typed configuration, parsed once from the environment at start-up.

use crate::maintainer_page::EmbedOrigins;
use crate::model::Keys;
use crate::policy::Limits;

/// How long a count must stay zero before the sweep deletes the media, unless `SWEEP_GRACE_SECS`
/// says otherwise: URL expiry (15 min) plus S3 event retries (up to an hour), with a wide margin.
pub const DEFAULT_SWEEP_GRACE: time::Duration = time::Duration::hours(24);

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
    pub jwt_secret: Option<String>,
    /// Secrets Manager secret holding the token secret, when `JWT_SECRET` is not set (AWS).
    pub jwt_secret_arn: Option<String>,
    pub url_ttl_secs: u32,
    pub download_page_size: usize,
    /// How long a count must have stayed zero before the sweep deletes the media.
    pub sweep_grace_secs: i64,
    pub keys: Keys,
    pub limits: Limits,
    /// Who may embed the maintainer page and send it a token (`MAINTAINER_PAGE_EMBED_ORIGINS`).
    pub embed_origins: EmbedOrigins,
}

fn var(name: &'static str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn required(name: &'static str) -> Result<String, ConfigError> {
    var(name).ok_or(ConfigError::Missing(name))
}

fn number<T: std::str::FromStr>(name: &'static str, default: T) -> Result<T, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| ConfigError::Invalid(name, v)),
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let d = Limits::default();
        Ok(Self {
            bucket: required("BUCKET")?,
            media_table: required("MEDIA_TABLE")?,
            deck_files_table: required("DECK_FILES_TABLE")?,
            refs_table: required("REFS_TABLE")?,
            quotas_table: required("QUOTAS_TABLE")?,
            region: var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")).unwrap_or_else(|| "us-east-1".into()),
            s3_public_endpoint: var("S3_PUBLIC_ENDPOINT").or_else(|| var("AWS_ENDPOINT_URL_S3")),
            jwt_secret: var("JWT_SECRET"),
            jwt_secret_arn: var("JWT_SECRET_ARN"),
            url_ttl_secs: number("URL_TTL_SECS", 900)?,
            download_page_size: number("DOWNLOAD_PAGE_SIZE", 2000)?,
            sweep_grace_secs: number("SWEEP_GRACE_SECS", DEFAULT_SWEEP_GRACE.whole_seconds())?,
            keys: Keys::default(),
            embed_origins: EmbedOrigins::parse(&var("MAINTAINER_PAGE_EMBED_ORIGINS").unwrap_or_default())
                .map_err(|e| ConfigError::Invalid("MAINTAINER_PAGE_EMBED_ORIGINS", e))?,
            limits: Limits {
                max_image_bytes: number("MAX_IMAGE_BYTES", d.max_image_bytes)?,
                max_audio_bytes: number("MAX_AUDIO_BYTES", d.max_audio_bytes)?,
                max_pixels: number("MAX_PIXELS", d.max_pixels)?,
                max_animation_pixels: number("MAX_ANIMATION_PIXELS", d.max_animation_pixels)?,
                daily_upload_bytes: number("DAILY_UPLOAD_BYTES", d.daily_upload_bytes)?,
                daily_upload_files: number("DAILY_UPLOAD_FILES", d.daily_upload_files)?,
                effort: number("CONVERSION_EFFORT", d.effort)?,
                ..d
            },
        })
    }
}
