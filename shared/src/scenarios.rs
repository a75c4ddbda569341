//! Scenarios that run on any stores: on the in-memory ones by the unit tests, and on DynamoDB and
//! LocalStack S3 by the end-to-end tests (`tests/e2e/references.rs`). The one here stops a sweep
//! between every pair of its steps (DESIGN.md: "a new reference racing the sweeper wins", after a
//! crash at any step), with the stores of [`crate::store::faulty`].

use time::OffsetDateTime;

use crate::app::App;
use crate::clock::now_rfc3339;
use crate::error::StoreError;
use crate::hash::Sha256Hash;
use crate::lifecycle::{sweep, SweepReport};
use crate::model::MediaStatus;
use crate::process::{process_bytes, Outcome, ProcessError};
use crate::references::set_note;
use crate::store::faulty::{Faulty, When};
use crate::store::BlobStore;

/// What one interrupted sweep led to, for the caller's report.
#[derive(Debug)]
pub struct Interrupted {
    pub fail_at: usize,
    pub when: When,
    /// The status the record had when the reference came.
    pub left: Option<MediaStatus>,
    /// Whether the reference found the bytes there (else the file was uploaded again).
    pub kept: bool,
}

fn lost(what: String) -> StoreError {
    StoreError::new("interrupted sweep", what)
}

/// Make `bytes` ready as processing would, last changed at `at`.
async fn stored(app: &App, blobs: &dyn BlobStore, bytes: &[u8], at: OffsetDateTime) -> Result<(), StoreError> {
    match process_bytes(&app.processing(blobs), Sha256Hash::of(bytes), bytes.to_vec(), at).await {
        Ok(Outcome::Ready(_)) => Ok(()),
        Ok(other) => Err(lost(format!("the test file was not stored: {other:?}"))),
        Err(ProcessError::Store(e)) => Err(e),
        Err(e) => Err(lost(e.to_string())),
    }
}

/// For every step of a sweep and both ways of failing there (`app.media` and `blobs` are
/// `faulty`): a file unreferenced since `long_ago`
/// is swept (grace reaching back only to it, so nothing else on a shared stack qualifies) by a
/// sweep that fails at that step. The sweep must go on and report the failure; then a note
/// references the file once the claim has run out, and must succeed; the file must then be
/// ready with its bytes (after one upload again if the record said it was missing), stay so
/// through another sweep, and its count must be its one reference. `files` gives a distinct
/// file per run (bytes processing stores, PNG say). Returns what each run saw.
pub async fn sweep_interrupted_at_every_step(
    app: &App,
    faulty: &Faulty,
    files: &(dyn Fn(usize) -> Vec<u8> + Sync),
    deck: &str,
) -> Result<Vec<Interrupted>, StoreError> {
    let long_ago = OffsetDateTime::now_utc() - time::Duration::days(3650);
    let now = OffsetDateTime::now_utc();
    let grace = now - long_ago - time::Duration::hours(1);
    let after_claim = now + app.config.sdk_timeouts.sweep_claim() + time::Duration::minutes(5);
    let blobs: &dyn BlobStore = faulty;
    let mut seen = Vec::new();
    let mut run = 0;
    for when in [When::Before, When::After] {
        for fail_at in 0.. {
            let bytes = files(run);
            run += 1;
            let hash = Sha256Hash::of(&bytes);
            // Whatever an earlier, failed run left that old goes first, so the fault falls on ours.
            sweep(&app.lifecycle(blobs), now, grace).await?;
            stored(app, blobs, &bytes, long_ago).await?;

            faulty.arm(fail_at, when);
            let report: SweepReport = sweep(&app.lifecycle(blobs), now, grace).await?;
            if !faulty.disarm() {
                // Past the last step: the sweep ran through; nothing more to interrupt.
                if report.failed != 0 || app.media.get(&hash).await?.is_some() {
                    return Err(lost(format!("an uninterrupted sweep did not delete the file: {report:?}")));
                }
                break;
            }
            if report.failed != 1 || report.failures.first().map(|f| f.hash.as_str()) != Some(&*hash.to_hex()) {
                return Err(lost(format!("step {fail_at} {when:?}: the failure was not reported: {report:?}")));
            }
            let left = app.media.get(&hash).await?.map(|r| r.status);

            // A note takes the file after the claim ran out: it must not be refused.
            let note = format!("note-{}", &hash.to_hex()[..12]);
            let want = NoteSetOne(format!("f-{run}.png"), hash);
            set_note(app.refs.as_ref(), app.media.as_ref(), deck, &note, &|_| want.set(), &now_rfc3339(after_claim))
                .await
                .map_err(|e| lost(format!("step {fail_at} {when:?}: the reference was refused: {e:?}")))?;
            let r = app.media.get(&hash).await?.ok_or_else(|| lost("the referenced record is gone".into()))?;
            let kept = r.status == MediaStatus::Ready;
            match r.status {
                MediaStatus::Ready if !blobs.exists(&app.config.keys.media(&hash)).await? => {
                    return Err(lost(format!("step {fail_at} {when:?}: ready, but its bytes are gone")));
                }
                MediaStatus::Ready => {}
                // Asked to upload again, as any missing file is.
                MediaStatus::Missing => stored(app, blobs, &bytes, after_claim).await?,
                other => return Err(lost(format!("step {fail_at} {when:?}: referenced, the record is {other:?}"))),
            }
            // The next sweep (claims long run out) leaves it alone.
            let later = after_claim + time::Duration::minutes(1);
            sweep(&app.lifecycle(blobs), later, later - long_ago - time::Duration::hours(1)).await?;
            let r = app.media.get(&hash).await?.ok_or_else(|| lost("swept after all".into()))?;
            if r.status != MediaStatus::Ready
                || r.ref_count != 1
                || !blobs.exists(&app.config.keys.media(&hash)).await?
            {
                return Err(lost(format!("step {fail_at} {when:?}: afterwards the record is {r:?}")));
            }
            // Leave nothing behind: the note lets go, and the file is swept for good.
            set_note(app.refs.as_ref(), app.media.as_ref(), deck, &note, &|_| Default::default(), &now_rfc3339(later))
                .await
                .map_err(|e| lost(format!("{e:?}")))?;
            seen.push(Interrupted { fail_at, when, left, kept });
        }
    }
    Ok(seen)
}

struct NoteSetOne(String, Sha256Hash);

impl NoteSetOne {
    fn set(&self) -> crate::references::NoteSet {
        [(self.0.clone(), self.1)].into()
    }
}

/// A small PNG, different for every `n`, that processing stores converted (a gradient, which
/// WebP keeps smaller), so with an alias.
pub fn png(n: usize) -> Vec<u8> {
    let seed = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let img = image::RgbImage::from_fn(64, 64, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 4) as u8, (seed >> ((x + y) % 56)) as u8 & 0x0f])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).map(|()| out.into_inner()).unwrap_or_default()
}
