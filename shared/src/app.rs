//! Everything a handler needs, built once per Lambda instance (or once by the local gateway).

use std::sync::Arc;

use aws_config::SdkConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};

use crate::access::Gate;
use crate::auth::TokenVerifier;
use crate::aws::{sdk_config, secret_string};
use crate::cdn::CdnSigner;
use crate::config::{Config, ConfigError, Secret};
use crate::download_urls::UrlSigner;
use crate::presign::{CredentialSource, Credentials, CredentialsError, Presigner, S3Endpoint};
use crate::servable::ReadyCache;
use crate::store::dynamo::{DynamoAccess, DynamoDecks, DynamoMedia, DynamoQuotas, DynamoRefs};
use crate::store::refs::ReferenceStore;
use crate::store::s3::S3Blobs;
use crate::store::{BlobStore, DeckIndex, MediaRepo, QuotaStore};
use crate::{downloads, lifecycle, maintainers, process, uploads};

/// The ports each use case takes: `App` is wiring, and these say what each may touch.
impl App {
    /// What signs download URLs (S3's, or CloudFront's when it is on).
    pub fn url_signer(&self) -> UrlSigner<'_> {
        UrlSigner {
            presigner: &self.presigner,
            credentials: self.credentials.as_ref(),
            cdn: self.cdn.as_ref(),
            ttl: self.config.url_ttl_secs,
        }
    }

    pub fn uploads(&self) -> uploads::Ports<'_> {
        uploads::Ports {
            media: self.media.as_ref(),
            quotas: self.quotas.as_ref(),
            presigner: &self.presigner,
            credentials: self.credentials.as_ref(),
            config: &self.config,
        }
    }

    pub fn downloads(&self) -> downloads::Ports<'_> {
        downloads::Ports {
            media: self.media.as_ref(),
            decks: self.decks.as_ref(),
            ready: &self.ready,
            urls: self.url_signer(),
            config: &self.config,
        }
    }

    pub fn maintainers(&self) -> maintainers::Ports<'_> {
        maintainers::Ports {
            media: self.media.as_ref(),
            decks: self.decks.as_ref(),
            refs: self.refs.as_ref(),
            urls: self.url_signer(),
            keys: &self.config.keys,
        }
    }

    /// Processing, with the object store built beside the App ([`App::with_objects`]).
    pub fn processing<'a>(&'a self, blobs: &'a dyn BlobStore) -> process::Ports<'a> {
        process::Ports {
            media: self.media.as_ref(),
            quotas: self.quotas.as_ref(),
            blobs,
            keys: &self.config.keys,
            limits: &self.config.limits,
        }
    }

    /// The sweep, the count reconciliation and the operators' commands.
    pub fn lifecycle<'a>(&'a self, blobs: &'a dyn BlobStore) -> lifecycle::Ports<'a> {
        lifecycle::Ports {
            media: self.media.as_ref(),
            refs: self.refs.as_ref(),
            quotas: self.quotas.as_ref(),
            blobs,
            revocations: self.gate.revocations(),
            config: &self.config,
        }
    }
}

/// Credentials from the SDK's provider chain (the function's role on Lambda).
pub struct SdkCredentials(pub SharedCredentialsProvider);

#[async_trait::async_trait]
impl CredentialSource for SdkCredentials {
    async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        let c = self.0.provide_credentials().await.map_err(|e| CredentialsError(e.to_string()))?;
        Ok(Credentials {
            access_key_id: c.access_key_id().to_string(),
            secret_access_key: c.secret_access_key().to_string(),
            session_token: c.session_token().map(str::to_owned),
        })
    }
}

pub struct App {
    pub config: Config,
    pub media: Arc<dyn MediaRepo>,
    pub decks: Arc<dyn DeckIndex>,
    pub refs: Arc<dyn ReferenceStore>,
    pub quotas: Arc<dyn QuotaStore>,
    pub presigner: Presigner,
    pub credentials: Arc<dyn CredentialSource>,
    pub tokens: Option<TokenVerifier>,
    /// Signs download URLs for the CloudFront distribution, when it is on; S3 signs them otherwise.
    pub cdn: Option<CdnSigner>,
    /// Revocations and rate limits, with this instance's memory of them.
    pub gate: Gate,
    /// This instance's memory of ready records, for downloads (`servable`).
    pub ready: ReadyCache,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no AWS credentials provider is configured")]
    NoCredentials,
    #[error("{0}")]
    Endpoint(String),
    #[error("reading the token secret: {0}")]
    Secret(String),
    #[error("the token secret: {0}")]
    TokenSecret(String),
    #[error("the CloudFront signing key: {0}")]
    Cdn(String),
}

/// Each Lambda function builds only the clients it uses (as its role allows only those): a client
/// that is never built is also left out of the function's binary, which keeps them small and
/// quick to start. The App holds what every function uses (DynamoDB's stores and the URL signer);
/// the object store is built beside it ([`App::with_objects`], or [`object_store`] for an App
/// built already) for the functions that read and write objects, and handed to the functions of
/// this crate that need it.
impl App {
    /// The API functions, the local gateway and the tests: DynamoDB, the URL signer and the token
    /// secret (read from Secrets Manager when `JWT_SECRET_ARN` names it).
    pub async fn from_env() -> Result<Self, InitError> {
        let (mut config, sdk) = load().await?;
        read_token_secret(&mut config, &sdk).await?;
        let cdn = cdn_signer(&config, &sdk).await?;
        Ok(Self { cdn, ..Self::assemble(config, &sdk)? })
    }

    /// sync-postgres: driven by events, not by users, so no token secret.
    pub async fn without_tokens() -> Result<Self, InitError> {
        let (config, sdk) = load().await?;
        Self::assemble(config, &sdk)
    }

    /// The functions that read and write objects (process-upload, sweep-orphans): no token
    /// secret, and the object store built from the same SDK config, loaded once at start-up.
    pub async fn with_objects() -> Result<(Self, Arc<dyn BlobStore>), InitError> {
        let (config, sdk) = load().await?;
        let blobs = s3_blobs(&config, &sdk);
        Ok((Self::assemble(config, &sdk)?, blobs))
    }

    fn assemble(config: Config, sdk: &SdkConfig) -> Result<Self, InitError> {
        let dynamo = aws_sdk_dynamodb::Client::new(sdk);
        let creds = sdk.credentials_provider().ok_or(InitError::NoCredentials)?;
        let endpoint = match &config.s3_public_endpoint {
            Some(url) => S3Endpoint::path_style(url, &config.bucket).map_err(InitError::Endpoint)?,
            None => S3Endpoint::aws(&config.bucket, &config.region),
        };
        let access = Arc::new(DynamoAccess::new(dynamo.clone(), &config.quotas_table));
        Ok(Self {
            gate: Gate::new(access.clone(), access, config.rate_limits, config.revocation_refresh_secs),
            media: Arc::new(DynamoMedia::new(dynamo.clone(), &config.media_table)),
            refs: Arc::new(DynamoRefs::new(
                dynamo.clone(),
                &config.refs_table,
                &config.media_table,
                &config.deck_files_table,
            )),
            quotas: Arc::new(DynamoQuotas::new(dynamo.clone(), &config.quotas_table)),
            decks: Arc::new(DynamoDecks::new(dynamo, &config.deck_files_table)),
            presigner: Presigner::new(endpoint, &config.region),
            credentials: Arc::new(SdkCredentials(creds)),
            tokens: match config.jwt_secret.as_ref().map(Secret::expose) {
                Some(text) => {
                    Some(TokenVerifier::from_text(text, config.token_policy.clone()).map_err(InitError::TokenSecret)?)
                }
                None => None,
            },
            cdn: None,
            ready: ReadyCache::new(config.ready_cache_secs, config.ready_cache_entries),
            config,
        })
    }
}

/// S3 beside an App built already (the local gateway, tests); the bucket is the config's.
pub async fn object_store(config: &Config) -> Arc<dyn BlobStore> {
    let sdk = sdk_config(config.sdk_timeouts).await;
    s3_blobs(config, &sdk)
}

/// Typed config and the SDK's shared config.
async fn load() -> Result<(Config, SdkConfig), InitError> {
    let config = Config::from_env()?;
    let sdk = sdk_config(config.sdk_timeouts).await;
    Ok((config, sdk))
}

/// On AWS the token secret lives in Secrets Manager (`JWT_SECRET_ARN`); it is read once, at
/// start-up. Locally `JWT_SECRET` holds it and wins.
async fn read_token_secret(config: &mut Config, sdk: &SdkConfig) -> Result<(), InitError> {
    if let (None, Some(arn)) = (&config.jwt_secret, &config.jwt_secret_arn) {
        config.jwt_secret = Some(Secret::new(secret_string(sdk, arn).await.map_err(InitError::Secret)?));
    }
    Ok(())
}

/// The CloudFront URL signer, when the distribution is on: its key from `CDN_PRIVATE_KEY` locally,
/// or read once from Secrets Manager (`CDN_PRIVATE_KEY_SECRET`, a name or ARN) at start-up on AWS.
async fn cdn_signer(config: &Config, sdk: &SdkConfig) -> Result<Option<CdnSigner>, InitError> {
    let Some(cdn) = &config.cdn else { return Ok(None) };
    let pem = match (&cdn.private_key, &cdn.private_key_secret) {
        (Some(pem), _) => pem.expose().to_owned(),
        (None, Some(id)) => secret_string(sdk, id).await.map_err(InitError::Cdn)?,
        (None, None) => return Err(InitError::Cdn("no key configured".into())),
    };
    CdnSigner::new(&cdn.url, &cdn.key_pair_id, &pem).map(Some).map_err(|e| InitError::Cdn(e.to_string()))
}

fn s3_blobs(config: &Config, sdk: &SdkConfig) -> Arc<dyn BlobStore> {
    let conf = aws_sdk_s3::config::Builder::from(sdk).force_path_style(config.s3_public_endpoint.is_some()).build();
    Arc::new(S3Blobs::new(aws_sdk_s3::Client::from_conf(conf), &config.bucket))
}

#[cfg(any(test, feature = "test-util"))]
impl App {
    /// An app over in-memory stores, for tests of the logic and for benchmarks that must not
    /// measure storage latency.
    pub fn in_memory(jwt_secret: &str) -> Self {
        Self::in_memory_with_blobs(jwt_secret).0
    }

    /// [`App::in_memory`], and its store as the object store too.
    pub fn in_memory_with_blobs(jwt_secret: &str) -> (Self, Arc<crate::store::memory::MemoryStore>) {
        let store = Arc::new(crate::store::memory::MemoryStore::default());
        (Self::in_memory_over(store.clone(), jwt_secret), store)
    }

    /// An app over `store`: several apps over one store are several instances of a function.
    pub fn in_memory_over(store: Arc<crate::store::memory::MemoryStore>, jwt_secret: &str) -> Self {
        let config = Config {
            bucket: "media-bucket".into(),
            media_table: "media".into(),
            deck_files_table: "deck-files".into(),
            refs_table: "refs".into(),
            quotas_table: "quotas".into(),
            region: "us-east-1".into(),
            s3_public_endpoint: None,
            jwt_secret: Some(Secret::new(jwt_secret)),
            jwt_secret_arn: None,
            token_policy: Default::default(),
            url_ttl_secs: 900,
            download_page_size: 2000,
            sweep_grace_secs: 86400,
            keys: Default::default(),
            limits: Default::default(),
            embed_origins: Default::default(),
            cdn: None,
            sdk_timeouts: Default::default(),
            rate_limits: Default::default(),
            revocation_refresh_secs: 60,
            // Off: the logic's tests sweep with no grace; `servable`'s own tests turn it on.
            ready_cache_secs: 0,
            ready_cache_entries: 0,
        };
        Self {
            media: store.clone(),
            decks: store.clone(),
            refs: store.clone(),
            quotas: store.clone(),
            presigner: Presigner::new(S3Endpoint::aws(&config.bucket, &config.region), &config.region),
            credentials: Arc::new(crate::presign::StaticCredentials(Credentials {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: "secret".into(),
                session_token: Some("session".into()),
            })),
            tokens: Some(TokenVerifier::new(jwt_secret.as_bytes())),
            cdn: None,
            gate: Gate::new(store.clone(), store.clone(), config.rate_limits, config.revocation_refresh_secs),
            ready: ReadyCache::off(),
            config,
        }
    }
}
