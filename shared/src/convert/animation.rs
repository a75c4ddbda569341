//! Animated GIF, PNG and WebP: every frame decoded within the limits, then encoded as an animated
//! WebP, lossless or lossy, whichever is smaller (the stripped original is kept if smaller still).

use std::io::Cursor;

use image::codecs::{gif::GifDecoder, png::PngDecoder, webp::WebPDecoder};
use image::{AnimationDecoder, DynamicImage, Frame, ImageDecoder};

use super::decode::{check_pixels, corrupt, decode_limits};
use super::encode::{thumbnail, webp_config, WebpSettings, LOSSLESS, LOSSY};
use super::{keep_smaller, libwebp, Encoding, ProcessedImage};
use crate::model::RejectReason;
use crate::policy::Limits;
use crate::sniff::ImageKind;

/// Frames of an animated GIF, PNG or WebP; `None` for a still image.
pub(super) fn decode_animation(
    kind: ImageKind,
    bytes: &[u8],
    limits: &Limits,
) -> Result<Option<Vec<Frame>>, RejectReason> {
    let frames = match kind {
        ImageKind::Gif => {
            let mut d = GifDecoder::new(Cursor::new(bytes)).map_err(corrupt)?;
            d.set_limits(decode_limits(limits)).map_err(corrupt)?;
            let (w, h) = d.dimensions();
            check_pixels(w, h, limits)?;
            d.into_frames()
        }
        ImageKind::Png => {
            let mut d = PngDecoder::new(Cursor::new(bytes)).map_err(corrupt)?;
            d.set_limits(decode_limits(limits)).map_err(corrupt)?;
            let (w, h) = d.dimensions();
            check_pixels(w, h, limits)?;
            if !d.is_apng().map_err(corrupt)? {
                return Ok(None);
            }
            d.apng().map_err(corrupt)?.into_frames()
        }
        ImageKind::WebP => {
            let mut d = WebPDecoder::new(Cursor::new(bytes)).map_err(corrupt)?;
            d.set_limits(decode_limits(limits)).map_err(corrupt)?;
            let (w, h) = d.dimensions();
            check_pixels(w, h, limits)?;
            if !d.has_animation() {
                return Ok(None);
            }
            d.into_frames()
        }
        _ => return Ok(None),
    };
    // Every frame is a full canvas: bound the sum, whatever the header claims.
    let mut total = 0u64;
    let mut out = Vec::new();
    for frame in frames {
        let frame = frame.map_err(corrupt)?;
        let buf = frame.buffer();
        total += u64::from(buf.width()) * u64::from(buf.height());
        if total > limits.max_animation_pixels {
            return Err(RejectReason::TooManyPixels);
        }
        out.push(frame);
    }
    match out.len() {
        0 => Err(RejectReason::CorruptMedia),
        1 if kind == ImageKind::Gif => Ok(None), // a still GIF
        _ => Ok(Some(out)),
    }
}

pub(super) fn encode_animation(
    kind: ImageKind,
    bytes: &[u8],
    frames: Vec<Frame>,
    limits: &Limits,
) -> Result<ProcessedImage, RejectReason> {
    let first = frames[0].buffer();
    let (width, height) = first.dimensions();
    let thumbnail = thumbnail(&DynamicImage::ImageRgba8(first.clone()), limits.thumbnail_edge)?;

    // Lossless keeps flat GIF frames exact and is usually smallest; lossy wins on dithered or
    // photographic frames. Animations are small (bounded by max_animation_pixels): try both.
    let mut settings = LOSSLESS;
    let mut webp = encode_frames(&frames, width, height, &settings)?;
    let lossy = encode_frames(&frames, width, height, &LOSSY)?;
    if lossy.len() < webp.len() {
        (settings, webp) = (LOSSY, lossy);
    }
    drop(frames);

    let webp = ProcessedImage {
        bytes: webp,
        content_type: "image/webp",
        width,
        height,
        encoding: Encoding::Animated,
        thumbnail,
        webp: settings,
        ssim: None,
        search: None,
    };
    // Frames are encoded as decoded, never oriented, so the original always shows the same picture.
    Ok(keep_smaller(kind, bytes, true, webp))
}

fn encode_frames(frames: &[Frame], width: u32, height: u32, settings: &WebpSettings) -> Result<Vec<u8>, RejectReason> {
    let config = webp_config(settings)?;
    let mut timestamp = 0i32;
    let mut timed = Vec::with_capacity(frames.len());
    for frame in frames {
        timed.push((frame.buffer().as_raw().as_slice(), timestamp));
        let (num, den) = frame.delay().numer_denom_ms();
        timestamp = timestamp.saturating_add((num / den.max(1)).max(1) as i32);
    }
    libwebp::encode_animation(timed, width, height, timestamp, &config).map_err(corrupt)
}
