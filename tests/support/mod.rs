//! Helpers for end-to-end tests against the local stack (`make up` / `scripts/test`).

pub mod pg;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub struct Stack {
    pub api: String,
    pub http: reqwest::Client,
    pub s3: aws_sdk_s3::Client,
    pub ddb: aws_sdk_dynamodb::Client,
    pub bucket: String,
    pub media_table: String,
    pub secret: String,
    pub corpus: PathBuf,
}

/// A deck name no earlier run has used.
/// An App as the functions build it from the stack's environment, and the object store beside it.
pub async fn app_with_objects() -> anyhow::Result<(shared::App, std::sync::Arc<dyn shared::store::BlobStore>)> {
    let app = shared::App::from_env().await?;
    let blobs = shared::app::object_store(&app.config).await;
    Ok((app, blobs))
}

pub fn deck(tag: &str) -> String {
    format!("{tag}-{}", &sha256_hex(&unique_bytes(8))[..10])
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Load `.local/stack.env` into the environment unless the caller already did.
fn load_env() -> anyhow::Result<()> {
    if std::env::var("API_URL").is_ok() {
        return Ok(());
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.local/stack.env");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{} is missing: start the stack with `make up` or run `make test`", path.display()))?;
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            std::env::set_var(k, v);
        }
    }
    Ok(())
}

fn var(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set"))
}

impl Stack {
    pub async fn connect() -> anyhow::Result<Self> {
        load_env()?;
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).build());
        Ok(Self {
            api: var("API_URL")?,
            http: reqwest::Client::builder().timeout(Duration::from_secs(180)).build()?,
            s3,
            ddb: aws_sdk_dynamodb::Client::new(&sdk),
            bucket: var("BUCKET")?,
            media_table: var("MEDIA_TABLE")?,
            secret: var("JWT_SECRET")?,
            corpus: PathBuf::from(var("CORPUS")?),
        })
    }

    /// Wait until the gateway's S3-event queue holds nothing, visible or in flight: every upload
    /// event has been handled, failed ones retried until they succeeded.
    pub async fn wait_uploads_settled(&self) -> anyhow::Result<()> {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let queue = var("UPLOAD_QUEUE_URL")?;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut quiet = 0;
        while quiet < 3 {
            let attrs = sqs
                .get_queue_attributes()
                .queue_url(&queue)
                .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
                .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                .send()
                .await?;
            let pending: u64 =
                attrs.attributes().into_iter().flatten().filter_map(|(_, v)| v.parse::<u64>().ok()).sum();
            quiet = if pending == 0 { quiet + 1 } else { 0 };
            if Instant::now() > deadline {
                bail!("{pending} upload events still queued after 120 s");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Ok(())
    }

    pub fn token(&self, scope: &str) -> String {
        shared::auth::mint(self.secret.as_bytes(), "test-user", scope, &[], 3600)
    }

    /// A maintainer's token for these decks.
    pub fn maintainer(&self, decks: &[&str]) -> String {
        let decks: Vec<String> = decks.iter().map(|d| d.to_string()).collect();
        shared::auth::mint(self.secret.as_bytes(), "maintainer", "maintain", &decks, 3600)
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self.http.request(method, format!("{}{path}", self.api));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let value = serde_json::from_str(&text).with_context(|| format!("not JSON ({status}): {text}"))?;
        Ok((status, value))
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        self.call(reqwest::Method::POST, path, Some(token), Some(body)).await
    }

    /// POST /v1/references for `notes` of `deck`, as the backend sends it; the body of the 200
    /// answer, an error for any other.
    pub async fn references(&self, deck: &str, notes: Value) -> anyhow::Result<Value> {
        let (status, body) =
            self.post("/v1/references", &self.token("references"), json!({"deck": deck, "notes": notes})).await?;
        anyhow::ensure!(status == 200, "references answered {status}: {body}");
        Ok(body)
    }

    /// Upload bytes through the API (ask; PUT unless storage has them) and wait until they are
    /// processed: the record as `GET /v1/media/{hash}` answers it.
    pub async fn upload_processed(&self, name: &str, body: &[u8]) -> anyhow::Result<Value> {
        let items = self.request_uploads("uploads", &[(name, body)]).await?;
        if items[0]["status"] == "upload" {
            anyhow::ensure!(self.put_upload(&items[0], body.to_vec()).await? == 200, "storage refused {name}");
        }
        self.wait_processed(&sha256_hex(body)).await
    }

    /// Ask for upload URLs, failing on anything but 200.
    pub async fn request_uploads(&self, deck: &str, files: &[(&str, &[u8])]) -> anyhow::Result<Vec<Value>> {
        let files: Vec<Value> = files
            .iter()
            .map(|(name, bytes)| json!({"hash": sha256_hex(bytes), "size": bytes.len(), "filename": name}))
            .collect();
        let (status, body) =
            self.post("/v1/uploads", &self.token("upload"), json!({"deck": deck, "files": files})).await?;
        if status != 200 {
            bail!("POST /v1/uploads answered {status}: {body}");
        }
        Ok(body["files"].as_array().context("no files")?.clone())
    }

    /// PUT bytes to a pre-signed upload, with exactly the headers the API returned.
    pub async fn put_upload(&self, item: &Value, bytes: Vec<u8>) -> anyhow::Result<u16> {
        let url = item["url"].as_str().context("item has no url")?;
        let mut req = self.http.put(url).body(bytes);
        for (k, v) in item["headers"].as_object().context("item has no headers")? {
            req = req.header(k.as_str(), v.as_str().unwrap_or_default());
        }
        Ok(req.send().await?.status().as_u16())
    }

    /// Poll GET /v1/media/{hash} until processing has finished.
    pub async fn wait_processed(&self, hash: &str) -> anyhow::Result<Value> {
        let token = self.token("upload");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (status, body) =
                self.call(reqwest::Method::GET, &format!("/v1/media/{hash}"), Some(&token), None).await?;
            if status == 200 && body["status"] != "pending" {
                return Ok(body);
            }
            if Instant::now() > deadline {
                bail!("{hash} still {status} {body} after 120 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn object(&self, key: &str) -> anyhow::Result<Option<(Vec<u8>, HashMap<String, String>)>> {
        match self.s3.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(o) => {
                let mut meta = HashMap::new();
                meta.insert("content-type".into(), o.content_type.clone().unwrap_or_default());
                meta.insert("cache-control".into(), o.cache_control.clone().unwrap_or_default());
                Ok(Some((o.body.collect().await?.into_bytes().to_vec(), meta)))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn exists(&self, key: &str) -> anyhow::Result<bool> {
        match self.s3.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Wait (briefly) until an object no longer exists.
    pub async fn wait_gone(&self, key: &str) -> anyhow::Result<()> {
        // The upload object goes last, after the record is final and the quota is settled; on the
        // one-request-at-a-time moto under the full suite those steps have taken 17 s.
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.exists(key).await? {
            if Instant::now() > deadline {
                bail!("{key} is still there");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    pub async fn record(&self, hash: &str) -> anyhow::Result<Option<HashMap<String, AttributeValue>>> {
        let r = self
            .ddb
            .get_item()
            .table_name(&self.media_table)
            .key("hash", AttributeValue::S(hash.into()))
            .consistent_read(true)
            .send()
            .await?;
        Ok(r.item)
    }

    /// Remove every trace of a hash (its record, alias and objects) so a test starts from nothing,
    /// whatever earlier runs left on the stack.
    pub async fn forget(&self, hash: &str) -> anyhow::Result<()> {
        if let Some(item) = self.record(hash).await? {
            if let Some(AttributeValue::S(stored)) = item.get("stored_hash") {
                if stored != hash {
                    self.delete_record(stored).await?;
                }
            }
        }
        self.delete_record(hash).await?;
        for key in [format!("uploads/{hash}"), format!("media/{hash}"), format!("thumbs/{hash}.webp")] {
            self.s3.delete_object().bucket(&self.bucket).key(key).send().await?;
        }
        Ok(())
    }

    async fn delete_record(&self, hash: &str) -> anyhow::Result<()> {
        self.ddb.delete_item().table_name(&self.media_table).key("hash", AttributeValue::S(hash.into())).send().await?;
        Ok(())
    }

    pub fn corpus_files(&self, dir: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.corpus.join(dir))? {
            let path = entry?.path();
            let name = path.file_name().context("no name")?.to_string_lossy().into_owned();
            out.push((name, std::fs::read(&path)?));
        }
        out.sort();
        Ok(out)
    }
}

/// Random bytes, unique per call, so tests never collide on a hash.
pub fn unique_bytes(len: usize) -> Vec<u8> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = format!(
        "{:?}-{}-{}",
        std::time::SystemTime::now(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let mut out = Vec::with_capacity(len + 32);
    let mut block = Sha256::digest(seed.as_bytes()).to_vec();
    while out.len() < len {
        out.extend_from_slice(&block);
        block = Sha256::digest(&block).to_vec();
    }
    out.truncate(len);
    out
}

/// A small PNG that no other test produces.
pub fn unique_png() -> Vec<u8> {
    let noise = unique_bytes(64 * 48 * 3);
    let img = image::RgbImage::from_raw(64, 48, noise).expect("buffer matches dimensions");
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).expect("PNG encodes");
    out.into_inner()
}

/// Every sample an MP3 or Ogg file decodes to: two files that give the same play the same.
pub fn decode_audio(bytes: &[u8], extension: &str) -> anyhow::Result<Vec<f32>> {
    shared::audio::decode_samples(bytes, extension).map_err(anyhow::Error::msg)
}
