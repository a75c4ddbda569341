//! POST /v1/uploads: which files the server lacks, and pre-signed PUTs for them.

use std::collections::{BTreeMap, HashMap};

use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::auth::{Principal, Scope};
use crate::clock::now_rfc3339;
use crate::config::Config;
use crate::error::ApiError;
use crate::hash::Sha256Hash;
use crate::model::{MediaStatus, RejectReason};
use crate::policy::{check_deck, class_from_filename, normalize_filename};
use crate::presign::{CredentialSource, Presigner, UploadSpec};
use crate::store::{lookup, BeginUpload, Hold, MediaRepo, PendingUpload, QuotaStore, Reserve};

/// What issuing upload URLs reads, reserves and signs with ([`crate::App::uploads`]).
pub struct Ports<'a> {
    pub media: &'a dyn MediaRepo,
    pub quotas: &'a dyn QuotaStore,
    pub presigner: &'a Presigner,
    pub credentials: &'a dyn CredentialSource,
    pub config: &'a Config,
}

/// The content type every upload is sent with; the real type is sniffed from the bytes later.
pub const UPLOAD_CONTENT_TYPE: &str = "application/octet-stream";
/// Conditional writes in flight per request.
const PARALLEL_WRITES: usize = 16;

#[derive(Debug, Deserialize)]
pub struct UploadRequest {
    pub deck: String,
    pub files: Vec<UploadFile>,
}

#[derive(Debug, Deserialize)]
pub struct UploadFile {
    pub hash: String,
    pub size: u64,
    pub filename: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum UploadItem {
    Exists {
        hash: String,
    },
    Upload {
        hash: String,
        method: &'static str,
        url: String,
        headers: BTreeMap<&'static str, String>,
        expires_at: String,
    },
    Rejected {
        hash: String,
        reason: &'static str,
    },
}

#[derive(Debug, Serialize)]
pub struct UploadResponse {
    pub files: Vec<UploadItem>,
}

/// What one request line asks for, once checked.
enum Line {
    Refused(RejectReason),
    Wants { hash: Sha256Hash },
}

fn check_line(ports: &Ports<'_>, f: &UploadFile) -> Line {
    let Ok(hash) = Sha256Hash::parse(&f.hash) else {
        return Line::Refused(RejectReason::BadHash);
    };
    // Only the name's rules and extension matter here: which deck uses which file under which
    // name comes from references.
    let Ok(filename) = normalize_filename(&f.filename) else {
        return Line::Refused(RejectReason::BadFilename);
    };
    let Some(class) = class_from_filename(&filename) else {
        return Line::Refused(RejectReason::UnsupportedType);
    };
    if f.size == 0 {
        return Line::Refused(RejectReason::EmptyFile);
    }
    if f.size > ports.config.limits.max_bytes_for(class) {
        return Line::Refused(RejectReason::TooLarge);
    }
    Line::Wants { hash }
}

/// What the answer for one hash is, shared by every line that names it.
enum Decision {
    Exists,
    Refused(RejectReason),
    Upload { size: u64 },
}

/// classify each line → decide per distinct hash from its record → reserve the uploads (quota
/// and pending record) → sign what may be uploaded, and answer in the request's order.
pub async fn presign_uploads(
    ports: &Ports<'_>,
    who: &Principal,
    req: UploadRequest,
    now: OffsetDateTime,
) -> Result<UploadResponse, ApiError> {
    who.require_any(&[Scope::Upload])?;
    check_deck(&req.deck)?;
    if req.files.is_empty() {
        return Err(ApiError::bad_request("files: at least one file"));
    }
    let max = ports.config.limits.max_upload_batch;
    if req.files.len() > max {
        return Err(ApiError::too_many_items(format!("files: at most {max} per request")));
    }
    let lines: Vec<Line> = req.files.iter().map(|f| check_line(ports, f)).collect();
    let mut decisions = decide(ports, &lines, &req.files).await?;
    let window = UrlWindow::new(now, ports.config.url_ttl_secs);
    reserve(ports, who, &mut decisions, &window).await?;
    let answers = sign(ports, decisions, &window).await?;
    let files = lines
        .into_iter()
        .zip(&req.files)
        .map(|(line, f)| match line {
            Line::Refused(reason) => UploadItem::Rejected { hash: f.hash.clone(), reason: reason.code() },
            // Every wanted hash has an answer; were one missing, the client would ask again.
            Line::Wants { hash } => answers
                .get(&hash)
                .cloned()
                .unwrap_or(UploadItem::Rejected { hash: hash.to_hex(), reason: RejectReason::RetryLater.code() }),
        })
        .collect();
    Ok(UploadResponse { files })
}

/// When the URLs of one answer are issued and until when they are valid.
struct UrlWindow {
    now: OffsetDateTime,
    now_s: String,
    ttl: u32,
    expires_at: String,
}

impl UrlWindow {
    fn new(now: OffsetDateTime, ttl: u32) -> Self {
        let expires_at = now_rfc3339(now + time::Duration::seconds(i64::from(ttl)));
        Self { now, now_s: now_rfc3339(now), ttl, expires_at }
    }
}

/// One decision per distinct hash, from its record; the first line's size stands for duplicates.
async fn decide(
    ports: &Ports<'_>,
    lines: &[Line],
    files: &[UploadFile],
) -> Result<HashMap<Sha256Hash, Decision>, ApiError> {
    let mut sizes: HashMap<Sha256Hash, u64> = HashMap::new();
    for (line, f) in lines.iter().zip(files) {
        if let Line::Wants { hash, .. } = line {
            sizes.entry(*hash).or_insert(f.size);
        }
    }
    let hashes: Vec<Sha256Hash> = sizes.keys().copied().collect();
    let records = lookup(ports.media, &hashes).await?;
    Ok(sizes
        .into_iter()
        .map(|(hash, size)| {
            let decision = match records.get(&hash) {
                Some(r) if r.status == MediaStatus::Ready => Decision::Exists,
                Some(r) if r.finally_rejected() => Decision::Refused(r.reason.unwrap_or(RejectReason::UnsupportedType)),
                _ => Decision::Upload { size },
            };
            (hash, decision)
        })
        .collect())
}

/// Charge each upload to the user's daily allowance before its URL exists, then record it as
/// pending (conditionally: a concurrent finish wins), giving the charge back if no URL is issued
/// after all. Decisions change where either step says no.
async fn reserve(
    ports: &Ports<'_>,
    who: &Principal,
    decisions: &mut HashMap<Sha256Hash, Decision>,
    window: &UrlWindow,
) -> Result<(), ApiError> {
    let to_start: Vec<(Sha256Hash, u64)> = decisions
        .iter()
        .filter_map(|(h, d)| match d {
            Decision::Upload { size } => Some((*h, *size)),
            _ => None,
        })
        .collect();
    let now = window.now;
    let day = format!("{:04}-{:02}-{:02}", now.year(), u8::from(now.month()), now.day());
    let limits = &ports.config.limits;
    // Per hash: how beginning its upload went, or why no URL may be issued.
    let started: Vec<(Sha256Hash, Result<BeginUpload, RejectReason>)> = stream::iter(to_start)
        .map(|(hash, size)| {
            let upload =
                PendingUpload { hash, size, uploader: &who.sub, expires_at: &window.expires_at, now: &window.now_s };
            let hold = Hold { user: who.sub.clone(), day: day.clone(), hash, bytes: size };
            async move {
                let reserved = ports
                    .quotas
                    .reserve(&hold, upload.now, limits.daily_upload_bytes, limits.daily_upload_files)
                    .await?;
                match reserved {
                    Reserve::Exceeded => return Ok((hash, Err(RejectReason::QuotaExceeded))),
                    Reserve::OtherSize { .. } => return Ok((hash, Err(RejectReason::SizeMismatch))),
                    Reserve::Granted | Reserve::AlreadyHeld => {}
                }
                let mut began = ports.media.begin_upload(&upload).await?;
                // Left `deleting` by a sweep that died: taken back, it may be uploaded again.
                if began == BeginUpload::Busy && crate::lifecycle::take_back(ports.media, &[hash], now).await? > 0 {
                    began = ports.media.begin_upload(&upload).await?;
                }
                let issues_url = matches!(began, BeginUpload::Started | BeginUpload::Shared);
                if !issues_url && reserved == Reserve::Granted {
                    ports.quotas.release(&hold).await?;
                }
                Ok::<_, crate::error::StoreError>((hash, Ok(began)))
            }
        })
        .buffer_unordered(PARALLEL_WRITES)
        .try_collect()
        .await?;
    for (hash, outcome) in started {
        let changed = match outcome {
            Ok(BeginUpload::Started | BeginUpload::Shared) => continue,
            Ok(BeginUpload::AlreadyReady) => Decision::Exists,
            Ok(BeginUpload::Rejected(r)) | Err(r) => Decision::Refused(r),
            Ok(BeginUpload::Busy) => Decision::Refused(RejectReason::RetryLater),
        };
        decisions.insert(hash, changed);
    }
    Ok(())
}

/// Each hash's answer: a pre-signed PUT (credentials fetched only when one is needed), or why not.
async fn sign(
    ports: &Ports<'_>,
    decisions: HashMap<Sha256Hash, Decision>,
    window: &UrlWindow,
) -> Result<HashMap<Sha256Hash, UploadItem>, ApiError> {
    let mut answers = HashMap::with_capacity(decisions.len());
    let mut to_sign = Vec::new();
    for (hash, decision) in decisions {
        match decision {
            Decision::Exists => {
                answers.insert(hash, UploadItem::Exists { hash: hash.to_hex() });
            }
            Decision::Refused(reason) => {
                answers.insert(hash, UploadItem::Rejected { hash: hash.to_hex(), reason: reason.code() });
            }
            Decision::Upload { size } => to_sign.push((hash, size)),
        }
    }
    if to_sign.is_empty() {
        return Ok(answers);
    }
    let creds = ports.credentials.credentials().await?;
    for (hash, size) in to_sign {
        let key = ports.config.keys.upload(&hash);
        let checksum = hash.to_base64();
        let spec =
            UploadSpec { key: &key, content_length: size, sha256_b64: &checksum, content_type: UPLOAD_CONTENT_TYPE };
        let p = ports.presigner.put(&creds, &spec, window.now, window.ttl);
        let item = UploadItem::Upload {
            hash: hash.to_hex(),
            method: "PUT",
            url: p.url,
            headers: p.headers.into_iter().collect(),
            expires_at: window.expires_at.clone(),
        };
        answers.insert(hash, item);
    }
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StoredMedia;
    use crate::App;

    fn principal(app: &App) -> Principal {
        let t = crate::auth::mint(b"k", "u1", "upload", &[], 60);
        app.tokens.as_ref().unwrap().verify(Some(&format!("Bearer {t}"))).unwrap()
    }

    fn file(bytes: &[u8], name: &str) -> UploadFile {
        UploadFile { hash: Sha256Hash::of(bytes).to_hex(), size: bytes.len() as u64, filename: name.into() }
    }

    fn statuses(r: &UploadResponse) -> Vec<&'static str> {
        r.files
            .iter()
            .map(|i| match i {
                UploadItem::Exists { .. } => "exists",
                UploadItem::Upload { .. } => "upload",
                UploadItem::Rejected { reason, .. } => reason,
            })
            .collect()
    }

    #[tokio::test]
    async fn decides_per_hash_and_answers_per_line() {
        let app = App::in_memory("k");
        let who = principal(&app);
        let now = OffsetDateTime::now_utc();
        let (a, b, c) = (b"aaaa".as_slice(), b"bbbb".as_slice(), b"cccc".as_slice());
        // b is ready, c was refused for its content.
        let hb = Sha256Hash::of(b);
        app.media.ensure_record(&hb, "t").await.unwrap();
        app.media
            .mark_ready(
                &hb,
                &StoredMedia {
                    stored_key: "media/x".into(),
                    thumb_key: None,
                    content_type: "image/webp".into(),
                    size: 4,
                    stored_size: 2,
                    stored_hash: hb,
                    width: None,
                    height: None,
                    duration_ms: None,
                },
                "t",
            )
            .await
            .unwrap();
        app.media.mark_rejected(&Sha256Hash::of(c), RejectReason::TooManyPixels, "t").await.unwrap();

        let req = UploadRequest {
            deck: "d1".into(),
            files: vec![file(a, "a.png"), file(b, "b.png"), file(c, "c.png"), file(a, "a-again.png")],
        };
        let resp = presign_uploads(&app.uploads(), &who, req, now).await.unwrap();
        assert_eq!(statuses(&resp), ["upload", "exists", "too_many_pixels", "upload"]);
        // The duplicate got the very same URL.
        assert_eq!(resp.files[0], resp.files[3]);
        let UploadItem::Upload { headers, url, .. } = &resp.files[0] else { unreachable!() };
        assert_eq!(headers["content-length"], "4");
        assert_eq!(headers["x-amz-checksum-sha256"], Sha256Hash::of(a).to_base64());
        assert!(url.contains("X-Amz-Security-Token=session"));

        // A retryable rejection (wrong body uploaded) lets the client try again.
        app.media.mark_rejected(&Sha256Hash::of(a), RejectReason::HashMismatch, "t").await.unwrap();
        let req = UploadRequest { deck: "d1".into(), files: vec![file(a, "a.png")] };
        assert_eq!(statuses(&presign_uploads(&app.uploads(), &who, req, now).await.unwrap()), ["upload"]);
    }

    #[tokio::test]
    async fn refuses_bad_batches_as_a_whole() {
        let app = App::in_memory("k");
        let who = principal(&app);
        let now = OffsetDateTime::now_utc();
        let empty = UploadRequest { deck: "d1".into(), files: vec![] };
        assert_eq!(presign_uploads(&app.uploads(), &who, empty, now).await.unwrap_err().code, "bad_request");
        let many = UploadRequest { deck: "d1".into(), files: (0..501).map(|i| file(&[i as u8], "a.png")).collect() };
        assert_eq!(presign_uploads(&app.uploads(), &who, many, now).await.unwrap_err().code, "too_many_items");
        let deck = UploadRequest { deck: "a/b".into(), files: vec![file(b"x", "a.png")] };
        assert_eq!(presign_uploads(&app.uploads(), &who, deck, now).await.unwrap_err().code, "bad_request");
    }

    #[tokio::test]
    async fn daily_quota_is_reserved_per_hash_and_refused_beyond_the_limit() {
        let mut app = App::in_memory("k");
        app.config.limits.daily_upload_bytes = 10;
        app.config.limits.daily_upload_files = 2;
        let who = principal(&app);
        let now = OffsetDateTime::now_utc();
        let day = format!("{:04}-{:02}-{:02}", now.year(), u8::from(now.month()), now.day());
        let ask = |files: Vec<UploadFile>| {
            let app = &app;
            let who = &who;
            async move { presign_uploads(&app.uploads(), who, UploadRequest { deck: "d1".into(), files }, now).await }
        };

        let r = ask(vec![file(b"aaaa", "a.png"), file(b"bbbb", "b.png")]).await.unwrap();
        assert_eq!(statuses(&r), ["upload", "upload"]);
        assert_eq!(app.quotas.usage("u1", &day).await.unwrap(), (8, 2));
        // Asking again for the same files (a retry) costs nothing more.
        let r = ask(vec![file(b"aaaa", "a.png")]).await.unwrap();
        assert_eq!(statuses(&r), ["upload"]);
        assert_eq!(app.quotas.usage("u1", &day).await.unwrap(), (8, 2));
        // A third file is one too many; so is a file past the byte allowance.
        let r = ask(vec![file(b"cc", "c.png")]).await.unwrap();
        assert_eq!(statuses(&r), ["quota_exceeded"]);
        app.config.limits.daily_upload_files = 5;
        let ask = |files: Vec<UploadFile>| {
            let app = &app;
            let who = &who;
            async move { presign_uploads(&app.uploads(), who, UploadRequest { deck: "d1".into(), files }, now).await }
        };
        let r = ask(vec![file(b"ccc", "c.png"), file(b"dd", "d.png")]).await.unwrap();
        let got = statuses(&r);
        assert_eq!(got.iter().filter(|s| **s == "upload").count(), 1, "{got:?}");
        assert_eq!(got.iter().filter(|s| **s == "quota_exceeded").count(), 1, "{got:?}");
        let (bytes, _) = app.quotas.usage("u1", &day).await.unwrap();
        assert!(bytes <= 10);
        // Another user has their own allowance.
        let t = crate::auth::mint(b"k", "u2", "upload", &[], 60);
        let other = app.tokens.as_ref().unwrap().verify(Some(&format!("Bearer {t}"))).unwrap();
        let r = presign_uploads(
            &app.uploads(),
            &other,
            UploadRequest { deck: "d1".into(), files: vec![file(b"zz", "z.png")] },
            now,
        )
        .await
        .unwrap();
        assert_eq!(statuses(&r), ["upload"]);
    }
}
