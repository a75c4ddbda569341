//! process-upload: turn an uploaded object into a stored, servable file, or a rejection.
//!
//! Safe to run any number of times for the same key, in any order: every step either checks what
//! is already there or writes the same result again.

use aws_lambda_events::s3::S3Event;
use time::OffsetDateTime;

use crate::audio;
use crate::clock::now_rfc3339;
use crate::convert::process_image;
use crate::error::StoreError;
use crate::hash::Sha256Hash;
use crate::model::{Keys, MediaStatus, RejectReason, StoredMedia};
use crate::policy::Limits;
use crate::sniff::{sniff, AudioKind, Sniffed};
use crate::store::{BlobStore, MediaRepo, QuotaStore, ReadBlob, Settlement};
use crate::svg;

pub const CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

#[derive(Debug, PartialEq)]
pub enum Outcome {
    Ready(StoredMedia),
    Rejected(RejectReason),
    /// Nothing to do (a repeated event, or a key that is not an upload).
    Skipped(&'static str),
}

/// S3 event keys are URL-encoded with `+` for spaces.
pub fn decode_event_key(key: &str) -> Option<String> {
    let plus_decoded = key.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_decoded).decode_utf8().ok().map(|k| k.into_owned())
}

/// Why an upload was not processed this time. Every one fails the event, which is delivered again.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A sweep is deleting the hash; its next delivery, after the deletion, stores it afresh.
    #[error("{0} is being deleted; retry the event")]
    BeingDeleted(Sha256Hash),
    /// The sweep took the record while the bytes were being stored, and may have removed them.
    #[error("{0} was swept during processing; retry the event")]
    SweptMeanwhile(Sha256Hash),
}

/// What processing reads and writes ([`crate::App::processing`]): the records, the quota holds it
/// settles, and the objects.
pub struct Ports<'a> {
    pub media: &'a dyn MediaRepo,
    pub quotas: &'a dyn QuotaStore,
    pub blobs: &'a dyn BlobStore,
    pub keys: &'a Keys,
    pub limits: &'a Limits,
}

/// Handle every record of an S3 event. A storage error fails the whole event so that it is
/// retried; content problems are outcomes, not errors.
pub async fn handle_s3_event(ports: &Ports<'_>, event: &S3Event) -> Result<Vec<Outcome>, ProcessError> {
    let mut outcomes = Vec::new();
    for record in &event.records {
        let Some(raw) = record.s3.object.key.as_deref() else {
            continue;
        };
        let Some(key) = decode_event_key(raw) else {
            tracing::warn!(key = raw, "event key is not valid UTF-8 once decoded");
            outcomes.push(Outcome::Skipped("undecodable key"));
            continue;
        };
        outcomes.push(process_key(ports, &key, OffsetDateTime::now_utc()).await?);
    }
    Ok(outcomes)
}

/// One upload object, as processing takes it through its steps: settle if already done → read
/// and verify → convert → store.
pub async fn process_key(ports: &Ports<'_>, key: &str, now: OffsetDateTime) -> Result<Outcome, ProcessError> {
    let Some(hash) = ports.keys.parse_upload(key) else {
        tracing::warn!(key, "not an upload key; ignored");
        return Ok(Outcome::Skipped("not an upload key"));
    };
    let upload = Upload { ports, key: Some(key), hash, now: now_rfc3339(now), at: now };
    let recorded = match upload.settle_if_done().await? {
        Next::Done(done) => return Ok(done),
        Next::Process { recorded } => recorded,
    };
    // A late or repeated event whose object is gone leaves nothing behind, not even a record.
    let bytes = match upload.read_and_verify().await? {
        Read::Verified(bytes) => bytes,
        Read::Gone => return Ok(Outcome::Skipped("upload object is gone")),
        Read::Refused(reason) => return upload.record(recorded).await?.reject(reason).await,
    };
    upload.record(recorded).await?.finish(bytes).await
}

/// Bytes that did not arrive as an upload object (the import of AnkiCollab's existing media),
/// through exactly the steps of [`process_key`] after its read: settle if already done, check,
/// convert, store or reject. `bytes` must hash to `hash` (checked again here).
pub async fn process_bytes(
    ports: &Ports<'_>,
    hash: Sha256Hash,
    bytes: Vec<u8>,
    now: OffsetDateTime,
) -> Result<Outcome, ProcessError> {
    let upload = Upload { ports, key: None, hash, now: now_rfc3339(now), at: now };
    let recorded = match upload.settle_if_done().await? {
        Next::Done(done) => return Ok(done),
        Next::Process { recorded } => recorded,
    };
    match upload.verify(bytes, ports.limits.max_any_bytes()) {
        Read::Verified(bytes) => upload.record(recorded).await?.finish(bytes).await,
        Read::Refused(reason) => upload.record(recorded).await?.reject(reason).await,
        Read::Gone => Ok(Outcome::Skipped("nothing to process")),
    }
}

/// What processing knows about the upload it is working on.
struct Upload<'a> {
    ports: &'a Ports<'a>,
    /// The upload object, removed once processed; None for bytes handed over directly.
    key: Option<&'a str>,
    hash: Sha256Hash,
    /// `at`, as records store it.
    now: String,
    at: OffsetDateTime,
}

/// After [`Upload::settle_if_done`]: finished, or to be processed (`recorded`: its record exists).
enum Next {
    Done(Outcome),
    Process { recorded: bool },
}

enum Read {
    Verified(Vec<u8>),
    /// The object is not there (a repeated event after it was processed).
    Gone,
    Refused(RejectReason),
}

/// The bytes to store and what they are.
#[derive(Debug)]
pub struct Converted {
    pub stored: Vec<u8>,
    pub content_type: String,
    /// Bytes of the original.
    pub size: u64,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub duration_ms: Option<u64>,
    pub thumbnail: Option<Vec<u8>>,
}

/// What process-upload stores for verified bytes, or why it refuses them: pure work on the
/// content (no storage), so the fuzz target runs exactly this. CPU-bound on hostile input: call
/// it off the async threads.
pub fn content(bytes: Vec<u8>, limits: &Limits) -> Result<Converted, RejectReason> {
    let size = bytes.len() as u64;
    match sniff(&bytes) {
        Sniffed::Unsupported(what) => {
            tracing::info!(what, "refused by magic bytes");
            Err(RejectReason::UnsupportedType)
        }
        Sniffed::Audio(_) if size > limits.max_audio_bytes => Err(RejectReason::TooLarge),
        Sniffed::Audio(kind) => {
            // Read from the container's headers: bounded by the file's size, whatever they claim.
            let duration_ms = audio::duration_ms(kind, &bytes).map_err(|e| {
                tracing::info!(error = %e, "audio without a readable duration");
                RejectReason::CorruptMedia
            })?;
            if duration_ms > limits.max_audio_seconds.saturating_mul(1000) {
                tracing::info!(duration_ms, "audio too long");
                return Err(RejectReason::TooLong);
            }
            // Uncompressed audio is stored as MP3 when that is smaller; lossy audio as uploaded
            // (re-encoding it would only lose quality).
            // Either way, what is stored is audio only: the container is rewritten from what plays.
            let (stored, content_type) = match audio::to_mp3(kind, &bytes, duration_ms) {
                Ok(Some(mp3)) => (mp3.bytes, AudioKind::Mp3.content_type()),
                Ok(None) => match audio::keep_audio(kind, &bytes) {
                    Ok(kept) => (kept, kind.content_type()),
                    Err(e) => {
                        tracing::info!(error = %e, "audio whose container does not hold together");
                        return Err(RejectReason::CorruptMedia);
                    }
                },
                Err(e) => {
                    tracing::info!(error = %e, "audio that does not decode");
                    return Err(RejectReason::CorruptMedia);
                }
            };
            Ok(Converted {
                stored,
                content_type: content_type.to_string(),
                size,
                width: None,
                height: None,
                duration_ms: Some(duration_ms),
                thumbnail: None,
            })
        }
        Sniffed::Svg => {
            if size > limits.max_image_bytes {
                return Err(RejectReason::TooLarge);
            }
            let p = svg::process(&bytes, limits.thumbnail_edge)?;
            if p.bytes.len() as u64 > limits.max_stored_image_bytes {
                return Err(RejectReason::TooLarge);
            }
            Ok(Converted {
                stored: p.bytes,
                content_type: "image/svg+xml".into(),
                size,
                width: Some(p.width),
                height: Some(p.height),
                duration_ms: None,
                thumbnail: Some(p.thumbnail),
            })
        }
        Sniffed::Image(kind) => {
            let p = process_image(kind, &bytes, limits)?;
            // The 10 MB limit is on what is stored: a large scan or screenshot that converts
            // below it is kept.
            if p.bytes.len() as u64 > limits.max_stored_image_bytes {
                tracing::info!(stored = p.bytes.len(), "image too large even converted");
                return Err(RejectReason::TooLarge);
            }
            Ok(Converted {
                stored: p.bytes,
                content_type: p.content_type.to_string(),
                size,
                width: Some(p.width),
                height: Some(p.height),
                duration_ms: None,
                thumbnail: Some(p.thumbnail),
            })
        }
    }
}

/// [`content`] on a blocking thread, a panic in a codec taken as a corrupt file, not a crash.
async fn convert(hash: &Sha256Hash, bytes: Vec<u8>, limits: &Limits) -> Result<Converted, RejectReason> {
    let limits = limits.clone();
    let span = tracing::info_span!("content", %hash);
    match tokio::task::spawn_blocking(move || span.in_scope(|| content(bytes, &limits))).await {
        Ok(result) => result,
        Err(e) => {
            tracing::error!(%hash, error = %e, "processing panicked");
            Err(RejectReason::CorruptMedia)
        }
    }
}

impl Upload<'_> {
    /// A repeated event, or a second upload of finished work: settle, drop the leftover object,
    /// and say so.
    async fn settle_if_done(&self) -> Result<Next, ProcessError> {
        let hash = &self.hash;
        let Some(r) = self.ports.media.get(hash).await? else {
            return Ok(Next::Process { recorded: false });
        };
        if r.status == MediaStatus::Ready && r.alias_of.is_none() {
            self.settle(Settlement::Stored).await?;
            self.drop_upload().await?;
            tracing::info!(%hash, "already ready");
            return Ok(Next::Done(Outcome::Skipped("already ready")));
        }
        // The key's bytes are fixed by its hash, so a final rejection stands: a replayed PUT of
        // refused bytes costs a record read, not another decode.
        if r.finally_rejected() {
            self.settle(Settlement::Rejected).await?;
            self.drop_upload().await?;
            tracing::info!(%hash, "already rejected");
            return Ok(Next::Done(Outcome::Skipped("already rejected")));
        }
        if r.status == MediaStatus::Deleting {
            // Its bytes arrived again after a sweep that died claimed it: take it back and store
            // them; while a live sweep holds it, the event is retried after the deletion.
            if crate::lifecycle::take_back(self.ports.media, &[*hash], self.at).await? == 0 {
                return Err(ProcessError::BeingDeleted(*hash));
            }
        }
        Ok(Next::Process { recorded: true })
    }

    /// An upload whose record is gone (swept while the event waited) gets a fresh one, once
    /// its bytes are known to be there.
    async fn record(&self, recorded: bool) -> Result<&Self, StoreError> {
        if !recorded {
            self.ports.media.ensure_record(&self.hash, &self.now).await?;
        }
        Ok(self)
    }

    /// The object's bytes, read up to the largest size any file may have, and checked to be
    /// the bytes the key promises.
    async fn read_and_verify(&self) -> Result<Read, StoreError> {
        let Some(key) = self.key else { return Ok(Read::Gone) };
        let max = self.ports.limits.max_any_bytes();
        Ok(match self.ports.blobs.read(key, max).await? {
            None => Read::Gone,
            // Final only for the bytes the key names (S3 checked them against it as they were
            // written); other bytes under this key say nothing about the file, so the user may
            // upload it again.
            Some(ReadBlob::TooLarge(_)) => match self.ports.blobs.verified_sha256(key).await? {
                Some(h) if h == self.hash => Read::Refused(RejectReason::TooLarge),
                _ => Read::Refused(RejectReason::HashMismatch),
            },
            Some(ReadBlob::Bytes(b)) => self.verify(b, max),
        })
    }

    fn verify(&self, bytes: Vec<u8>, max: u64) -> Read {
        if Sha256Hash::of(&bytes) != self.hash {
            // Compared first: a final reason (empty, too large) must be about the file the key names.
            Read::Refused(RejectReason::HashMismatch)
        } else if bytes.is_empty() {
            Read::Refused(RejectReason::EmptyFile)
        } else if bytes.len() as u64 > max {
            Read::Refused(RejectReason::TooLarge)
        } else {
            Read::Verified(bytes)
        }
    }

    async fn finish(&self, bytes: Vec<u8>) -> Result<Outcome, ProcessError> {
        match convert(&self.hash, bytes, self.ports.limits).await {
            Ok(converted) => self.store(converted).await,
            Err(reason) => self.reject(reason).await,
        }
    }

    /// Settle the uploaders' holds on this hash. Bytes handed over directly (the import) were
    /// never announced, so no one holds anything for them.
    async fn settle(&self, how: Settlement) -> Result<(), StoreError> {
        match self.key {
            Some(_) => self.ports.quotas.settle(&self.hash, how).await.map(drop),
            None => Ok(()),
        }
    }

    async fn drop_upload(&self) -> Result<(), StoreError> {
        match self.key {
            Some(key) => self.ports.blobs.delete(key).await,
            None => Ok(()),
        }
    }

    /// Bytes first, record second (a ready record always has its object), then the alias of
    /// converted bytes, the quota, and last the upload object.
    async fn store(&self, c: Converted) -> Result<Outcome, ProcessError> {
        let (ports, hash, keys) = (self.ports, &self.hash, self.ports.keys);
        let stored_hash = Sha256Hash::of(&c.stored);
        let info = StoredMedia {
            stored_key: keys.media(hash),
            thumb_key: c.thumbnail.as_ref().map(|_| keys.thumb(hash)),
            content_type: c.content_type,
            size: c.size,
            stored_size: c.stored.len() as u64,
            stored_hash,
            width: c.width,
            height: c.height,
            duration_ms: c.duration_ms,
        };
        self.ports.blobs.put(&info.stored_key, c.stored, &info.content_type, Some(CACHE_CONTROL)).await?;
        if let (Some(thumb_key), Some(thumb)) = (&info.thumb_key, c.thumbnail) {
            self.ports.blobs.put(thumb_key, thumb, "image/webp", Some(CACHE_CONTROL)).await?;
        }
        if !ports.media.mark_ready(hash, &info, &self.now).await? {
            // The sweeper took the record meanwhile and may have removed what we just wrote: fail
            // so that the event is retried once the sweep is over.
            return Err(ProcessError::SweptMeanwhile(*hash));
        }
        if stored_hash != *hash {
            ports.media.put_alias(&stored_hash, hash, &self.now).await?;
        }
        // Settle before the upload object goes: if settling fails, the retried event still finds it.
        self.settle(Settlement::Stored).await?;
        self.drop_upload().await?;
        tracing::info!(
            %hash,
            content_type = %info.content_type,
            size = info.size,
            stored_size = info.stored_size,
            "stored"
        );
        Ok(Outcome::Ready(info))
    }

    /// Record the refusal, give the bytes back to the uploaders' quota, drop the object.
    async fn reject(&self, reason: RejectReason) -> Result<Outcome, ProcessError> {
        let hash = &self.hash;
        self.ports.media.mark_rejected(hash, reason, &self.now).await?;
        self.settle(Settlement::Rejected).await?;
        self.drop_upload().await?;
        tracing::info!(%hash, reason = reason.code(), "rejected");
        Ok(Outcome::Rejected(reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_event_keys() {
        assert_eq!(decode_event_key("uploads/a+b%2Bc%C3%A9").as_deref(), Some("uploads/a b+cé"));
        assert_eq!(decode_event_key("uploads/%FF"), None);
    }
}

#[cfg(test)]
mod logic_tests {
    use super::*;
    use crate::model::MediaStatus;
    use crate::App;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img =
            image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 3) as u8, ((x ^ y) * 5) as u8]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[tokio::test]
    async fn stores_once_and_replays_are_harmless() {
        let (app, blobs) = App::in_memory_with_blobs("k");
        let bytes = png(40, 30);
        let hash = Sha256Hash::of(&bytes);
        let key = app.config.keys.upload(&hash);
        blobs.put(&key, bytes.clone(), "application/octet-stream", None).await.unwrap();
        let now = OffsetDateTime::now_utc();

        let Outcome::Ready(info) = process_key(&app.processing(&*blobs), &key, now).await.unwrap() else {
            panic!("not ready")
        };
        assert_eq!((info.width, info.height), (Some(40), Some(30)));
        assert!(info.stored_size <= bytes.len() as u64);
        assert!(!blobs.exists(&key).await.unwrap());
        assert!(blobs.exists(&info.stored_key).await.unwrap());
        let record = app.media.get(&hash).await.unwrap().unwrap();
        assert_eq!(record.status, MediaStatus::Ready);
        if info.stored_hash != hash {
            let alias = app.media.get(&info.stored_hash).await.unwrap().unwrap();
            assert_eq!(alias.alias_of, Some(hash));
        }
        // The same event again, and a re-upload of the same bytes: nothing changes.
        assert_eq!(process_key(&app.processing(&*blobs), &key, now).await.unwrap(), Outcome::Skipped("already ready"));
        blobs.put(&key, bytes, "application/octet-stream", None).await.unwrap();
        assert_eq!(process_key(&app.processing(&*blobs), &key, now).await.unwrap(), Outcome::Skipped("already ready"));
        assert!(!blobs.exists(&key).await.unwrap());
        assert_eq!(app.media.get(&hash).await.unwrap().unwrap(), record);
    }

    /// The sweep removed the record and the object, then the event came (again): nothing is
    /// left behind, and an upload of the same bytes later is stored as usual.
    #[tokio::test]
    async fn a_late_event_whose_object_is_gone_leaves_no_record() {
        let (app, blobs) = App::in_memory_with_blobs("k");
        let bytes = png(12, 9);
        let hash = Sha256Hash::of(&bytes);
        let key = app.config.keys.upload(&hash);
        let now = OffsetDateTime::now_utc();
        assert_eq!(
            process_key(&app.processing(&*blobs), &key, now).await.unwrap(),
            Outcome::Skipped("upload object is gone")
        );
        assert_eq!(app.media.get(&hash).await.unwrap(), None);
        blobs.put(&key, bytes, "application/octet-stream", None).await.unwrap();
        assert!(matches!(process_key(&app.processing(&*blobs), &key, now).await.unwrap(), Outcome::Ready(_)));
        assert_eq!(app.media.get(&hash).await.unwrap().map(|r| r.status), Some(MediaStatus::Ready));
    }

    #[tokio::test]
    async fn bytes_that_do_not_match_their_key_are_refused() {
        let (app, blobs) = App::in_memory_with_blobs("k");
        let hash = Sha256Hash::of(b"what the client promised");
        let key = app.config.keys.upload(&hash);
        blobs.put(&key, png(4, 4), "application/octet-stream", None).await.unwrap();
        let outcome = process_key(&app.processing(&*blobs), &key, OffsetDateTime::now_utc()).await.unwrap();
        assert_eq!(outcome, Outcome::Rejected(RejectReason::HashMismatch));
        assert!(!blobs.exists(&key).await.unwrap());
        assert!(!blobs.exists(&app.config.keys.media(&hash)).await.unwrap());
        assert_eq!(app.media.get(&hash).await.unwrap().unwrap().reason, Some(RejectReason::HashMismatch));
    }

    #[tokio::test]
    async fn processing_settles_the_uploaders_holds() {
        use crate::store::{Hold, Reserve};
        let (app, blobs) = App::in_memory_with_blobs("k");
        let (good, bad) = (png(8, 8), b"#!/bin/sh\necho not media\n".to_vec());
        let hold = |user: &str, bytes: &[u8]| Hold {
            user: user.into(),
            day: "2026-11-22".into(),
            hash: Sha256Hash::of(bytes),
            bytes: bytes.len() as u64,
        };
        let issued = "2026-11-22T10:00:00Z";
        for h in [hold("u1", &good), hold("u2", &good), hold("u1", &bad)] {
            assert_eq!(app.quotas.reserve(&h, issued, 1 << 20, 10).await.unwrap(), Reserve::Granted);
        }
        let total = (good.len() + bad.len()) as u64;
        assert_eq!(app.quotas.usage("u1", "2026-11-22").await.unwrap(), (total, 2));
        for bytes in [&good, &bad] {
            let key = app.config.keys.upload(&Sha256Hash::of(bytes));
            blobs.put(&key, bytes.clone(), "application/octet-stream", None).await.unwrap();
            process_key(&app.processing(&*blobs), &key, OffsetDateTime::now_utc()).await.unwrap();
        }
        // Stored: both uploaders stay charged. Refused: the bytes come back, the file still counts.
        assert_eq!(app.quotas.usage("u1", "2026-11-22").await.unwrap(), (good.len() as u64, 2));
        assert_eq!(app.quotas.usage("u2", "2026-11-22").await.unwrap(), (good.len() as u64, 1));
        // Settled holds are no longer the sweep's to give back.
        assert_eq!(app.quotas.release_unused("2026-11-23T00:00:00Z").await.unwrap(), 0);
        assert_eq!(app.quotas.usage("u1", "2026-11-22").await.unwrap(), (good.len() as u64, 2));
        // A hold whose upload never came is given back in full, once it is old enough.
        let unused = hold("u1", b"never uploaded");
        app.quotas.reserve(&unused, issued, 1 << 20, 10).await.unwrap();
        assert_eq!(app.quotas.release_unused(issued).await.unwrap(), 0);
        assert_eq!(app.quotas.release_unused("2026-11-22T11:00:00Z").await.unwrap(), 1);
        assert_eq!(app.quotas.usage("u1", "2026-11-22").await.unwrap(), (good.len() as u64, 2));
    }

    #[tokio::test]
    async fn refused_bytes_put_again_are_not_decoded_again() {
        let (app, blobs) = App::in_memory_with_blobs("k");
        let junk = b"<html onload=alert(1)>".to_vec();
        let hash = Sha256Hash::of(&junk);
        let key = app.config.keys.upload(&hash);
        blobs.put(&key, junk.clone(), "application/octet-stream", None).await.unwrap();
        let first = process_key(&app.processing(&*blobs), &key, OffsetDateTime::now_utc()).await.unwrap();
        assert_eq!(first, Outcome::Rejected(RejectReason::UnsupportedType));
        // The URL is still valid: the same bytes again.
        blobs.put(&key, junk, "application/octet-stream", None).await.unwrap();
        let again = process_key(&app.processing(&*blobs), &key, OffsetDateTime::now_utc()).await.unwrap();
        assert_eq!(again, Outcome::Skipped("already rejected"));
        assert!(!blobs.exists(&key).await.unwrap());
        assert_eq!(app.media.get(&hash).await.unwrap().unwrap().reason, Some(RejectReason::UnsupportedType));
        // A rejection that says nothing about the content is processed again.
        let bytes = png(4, 4);
        let hash = Sha256Hash::of(&bytes);
        let key = app.config.keys.upload(&hash);
        app.media.ensure_record(&hash, "t").await.unwrap();
        app.media.mark_rejected(&hash, RejectReason::HashMismatch, "t").await.unwrap();
        blobs.put(&key, bytes, "application/octet-stream", None).await.unwrap();
        assert!(matches!(
            process_key(&app.processing(&*blobs), &key, OffsetDateTime::now_utc()).await.unwrap(),
            Outcome::Ready(_)
        ));
    }

    #[tokio::test]
    async fn other_keys_are_ignored() {
        let (app, blobs) = App::in_memory_with_blobs("k");
        let outcome = process_key(&app.processing(&*blobs), "media/abc", OffsetDateTime::now_utc()).await.unwrap();
        assert_eq!(outcome, Outcome::Skipped("not an upload key"));
    }

    /// `empty_file` and `too_large` are final: the hash can never be uploaded again. So they are
    /// given only for the bytes the key names; other bytes under a key (empty, or larger than any
    /// file may be) are a hash mismatch, which the uploader may retry with the right bytes.
    #[tokio::test]
    async fn final_reasons_are_given_only_for_the_bytes_the_key_names() {
        let (app, blobs) = App::in_memory_with_blobs("k");
        let now = OffsetDateTime::now_utc();
        let max = app.config.limits.max_any_bytes() as usize;
        let big = vec![7u8; max + 1];
        let cases = [
            (Sha256Hash::of(b"a file"), Vec::new(), RejectReason::HashMismatch),
            (Sha256Hash::of(b""), Vec::new(), RejectReason::EmptyFile),
            (Sha256Hash::of(b"another file"), big.clone(), RejectReason::HashMismatch),
            (Sha256Hash::of(&big), big, RejectReason::TooLarge),
        ];
        for (hash, bytes, want) in cases {
            let key = app.config.keys.upload(&hash);
            blobs.put(&key, bytes, "application/octet-stream", None).await.unwrap();
            assert_eq!(
                process_key(&app.processing(&*blobs), &key, now).await.unwrap(),
                Outcome::Rejected(want),
                "{want}"
            );
            let record = app.media.get(&hash).await.unwrap().unwrap();
            assert_eq!(record.finally_rejected(), !want.allows_retry(), "{want}");
        }
    }

    /// `events/process-upload.json` as S3 delivers it: the upload it names (the empty file's
    /// hash) is refused as empty, and its object goes; the same event again changes nothing.
    #[tokio::test]
    async fn the_sample_event_is_handled() {
        let (app, blobs) = App::in_memory_with_blobs("k");
        let event: S3Event = serde_json::from_str(include_str!("../../events/process-upload.json")).unwrap();
        let empty = Sha256Hash::of(b"");
        let key = app.config.keys.upload(&empty);
        blobs.put(&key, Vec::new(), "application/octet-stream", None).await.unwrap();
        let outcomes = handle_s3_event(&app.processing(&*blobs), &event).await.unwrap();
        assert_eq!(outcomes, [Outcome::Rejected(RejectReason::EmptyFile)]);
        assert!(!blobs.exists(&key).await.unwrap());
        assert_eq!(app.media.get(&empty).await.unwrap().unwrap().reason, Some(RejectReason::EmptyFile));
        assert_eq!(
            handle_s3_event(&app.processing(&*blobs), &event).await.unwrap(),
            [Outcome::Skipped("already rejected")]
        );
    }
}
