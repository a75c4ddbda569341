//! Image processing: decode within limits, orient, drop metadata, pick the smallest good encoding,
//! and make a thumbnail. Pure CPU work with no I/O; callers run it on a blocking thread.

mod strip;

use std::collections::HashSet;
use std::io::Cursor;

use image::codecs::{gif::GifDecoder, png::PngDecoder, webp::WebPDecoder};
use image::{AnimationDecoder, DynamicImage, Frame, ImageDecoder, ImageReader};

use crate::model::RejectReason;
use crate::policy::Limits;
use crate::sniff::ImageKind;
pub use strip::{jpeg_is_complete, strip_metadata};

/// Quality of lossy WebP for photos: visually close to the source at a fraction of its size.
pub const PHOTO_QUALITY: f32 = 82.0;
pub const THUMBNAIL_QUALITY: f32 = 70.0;
/// Above this many distinct colours an image is treated as a photo (lossy); at or below, as a
/// graphic (lossless), where lossy encoding would smear edges and text.
pub const GRAPHIC_MAX_COLOURS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Lossy WebP.
    Lossy,
    /// Lossless WebP.
    Lossless,
    /// The uploaded bytes, minus their metadata.
    Original,
    /// Animated WebP.
    Animated,
}

#[derive(Debug)]
pub struct ProcessedImage {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
    pub encoding: Encoding,
    pub thumbnail: Vec<u8>,
}

fn decode_limits(limits: &Limits) -> image::Limits {
    let mut l = image::Limits::default();
    // Room for the largest allowed picture as 16-bit RGBA plus decoder working memory.
    l.max_alloc = Some(limits.max_pixels.saturating_mul(8) + (64 << 20));
    l
}

fn corrupt(e: impl std::fmt::Display) -> RejectReason {
    tracing::info!(error = %e, "image did not decode");
    RejectReason::CorruptMedia
}

fn check_pixels(w: u32, h: u32, limits: &Limits) -> Result<(), RejectReason> {
    if w == 0 || h == 0 {
        return Err(RejectReason::CorruptMedia);
    }
    if u64::from(w) * u64::from(h) > limits.max_pixels {
        return Err(RejectReason::TooManyPixels);
    }
    Ok(())
}

/// Turn uploaded image bytes into what we store. Never returns something larger than `bytes`
/// unless the original cannot be kept (wrong orientation, BMP/TIFF, or a payload after the image).
pub fn process_image(kind: ImageKind, bytes: &[u8], limits: &Limits) -> Result<ProcessedImage, RejectReason> {
    if bytes.len() as u64 > limits.max_image_bytes {
        return Err(RejectReason::TooLarge);
    }
    if kind == ImageKind::Jpeg && !jpeg_is_complete(bytes) {
        return Err(RejectReason::CorruptMedia);
    }
    if let Some(frames) = decode_animation(kind, bytes, limits)? {
        return encode_animation(kind, bytes, frames, limits);
    }

    let (mut img, orientation) = match decode_still(kind, bytes, limits) {
        Err(RejectReason::CorruptMedia) if kind == ImageKind::Tiff => {
            (decode_float_tiff(bytes, limits)?, image::metadata::Orientation::NoTransforms)
        }
        other => other?,
    };
    img.apply_orientation(orientation);
    let upright = orientation == image::metadata::Orientation::NoTransforms;

    let pixels = Pixels::from_image(&img);
    let (encoding, webp) = if kind == ImageKind::Jpeg || !pixels.is_graphic() {
        (Encoding::Lossy, pixels.encode(false, PHOTO_QUALITY)?)
    } else {
        (Encoding::Lossless, pixels.encode(true, 100.0)?)
    };
    let thumbnail = thumbnail(&img, limits.thumbnail_edge)?;
    let (width, height) = (img.width(), img.height());
    drop(img);

    // Keeping the original is allowed only if it shows the same picture without metadata.
    let original = upright.then(|| strip_metadata(kind, bytes)).flatten();
    Ok(match original {
        Some(orig) if orig.len() <= webp.len() => ProcessedImage {
            bytes: orig,
            content_type: kind.content_type(),
            width,
            height,
            encoding: Encoding::Original,
            thumbnail,
        },
        _ => ProcessedImage { bytes: webp, content_type: "image/webp", width, height, encoding, thumbnail },
    })
}

fn decode_still(
    kind: ImageKind,
    bytes: &[u8],
    limits: &Limits,
) -> Result<(DynamicImage, image::metadata::Orientation), RejectReason> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), kind.image_format());
    reader.limits(decode_limits(limits));
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    // Refuse on the header's dimensions, before a single pixel is allocated.
    let (w, h) = decoder.dimensions();
    check_pixels(w, h, limits)?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    Ok((DynamicImage::from_decoder(decoder).map_err(corrupt)?, orientation))
}

/// Floating-point TIFFs (scientific images, e.g. from scikit-image), which the `image` crate does
/// not decode: samples in 0..1 (or scaled by their maximum), chunky or one strip per plane.
fn decode_float_tiff(bytes: &[u8], limits: &Limits) -> Result<DynamicImage, RejectReason> {
    use tiff::decoder::{Decoder, DecodingResult};
    use tiff::ColorType;
    let mut d = Decoder::new(Cursor::new(bytes)).map_err(corrupt)?;
    let (w, h) = d.dimensions().map_err(corrupt)?;
    check_pixels(w, h, limits)?;
    let channels = match d.colortype().map_err(corrupt)? {
        ColorType::Gray(_) => 1,
        ColorType::RGB(_) => 3,
        ColorType::RGBA(_) => 4,
        other => return Err(corrupt(format!("TIFF colour type {other:?}"))),
    };
    let floats = |r: DecodingResult| -> Result<Vec<f64>, RejectReason> {
        match r {
            DecodingResult::F64(v) => Ok(v),
            DecodingResult::F32(v) => Ok(v.into_iter().map(f64::from).collect()),
            _ => Err(RejectReason::CorruptMedia),
        }
    };
    let plane = (w * h) as usize;
    let first = floats(d.read_image().map_err(corrupt)?)?;
    let interleaved = if first.len() == plane * channels {
        first
    } else if first.len() == plane && d.strip_count().map_err(corrupt)? as usize == channels {
        // Planar: one strip per channel.
        let mut planes = vec![first];
        for c in 1..channels {
            planes.push(floats(d.read_chunk(c as u32).map_err(corrupt)?)?);
        }
        if planes.iter().any(|p| p.len() != plane) {
            return Err(RejectReason::CorruptMedia);
        }
        (0..plane * channels).map(|i| planes[i % channels][i / channels]).collect()
    } else {
        return Err(RejectReason::CorruptMedia);
    };
    let max = interleaved.iter().copied().fold(1.0f64, f64::max);
    let bytes: Vec<u8> = interleaved.iter().map(|v| ((v / max).clamp(0.0, 1.0) * 255.0).round() as u8).collect();
    let img = match channels {
        1 => image::GrayImage::from_raw(w, h, bytes).map(DynamicImage::ImageLuma8),
        3 => image::RgbImage::from_raw(w, h, bytes).map(DynamicImage::ImageRgb8),
        _ => image::RgbaImage::from_raw(w, h, bytes).map(DynamicImage::ImageRgba8),
    };
    img.ok_or(RejectReason::CorruptMedia)
}

/// 8-bit pixels ready for libwebp, without an alpha channel when every pixel is opaque.
struct Pixels {
    data: Vec<u8>,
    width: u32,
    height: u32,
    alpha: bool,
}

impl Pixels {
    fn from_image(img: &DynamicImage) -> Self {
        let (width, height) = (img.width(), img.height());
        if img.color().has_alpha() {
            let rgba = img.to_rgba8();
            if rgba.pixels().any(|p| p.0[3] != 255) {
                return Self { data: rgba.into_raw(), width, height, alpha: true };
            }
        }
        Self { data: img.to_rgb8().into_raw(), width, height, alpha: false }
    }

    /// Few distinct colours: screenshots, diagrams, text, palette images.
    fn is_graphic(&self) -> bool {
        let step = if self.alpha { 4 } else { 3 };
        let mut seen = HashSet::with_capacity(GRAPHIC_MAX_COLOURS + 1);
        for px in self.data.chunks_exact(step) {
            let key = px.iter().fold(0u32, |acc, &c| (acc << 8) | u32::from(c));
            if seen.insert(key) && seen.len() > GRAPHIC_MAX_COLOURS {
                return false;
            }
        }
        true
    }

    fn encode(&self, lossless: bool, quality: f32) -> Result<Vec<u8>, RejectReason> {
        let encoder = if self.alpha {
            webp::Encoder::from_rgba(&self.data, self.width, self.height)
        } else {
            webp::Encoder::from_rgb(&self.data, self.width, self.height)
        };
        let config = webp_config(lossless, quality)?;
        let out = encoder.encode_advanced(&config).map_err(|e| corrupt(format!("{e:?}")))?;
        Ok(out.to_vec())
    }
}

fn webp_config(lossless: bool, quality: f32) -> Result<webp::WebPConfig, RejectReason> {
    let mut config = webp::WebPConfig::new().map_err(|_| corrupt("libwebp config"))?;
    config.lossless = i32::from(lossless);
    config.quality = quality;
    config.method = 4;
    // Keep invisible pixels' colours out of the file; they cost bytes and can carry data.
    config.exact = 0;
    Ok(config)
}

fn thumbnail(img: &DynamicImage, edge: u32) -> Result<Vec<u8>, RejectReason> {
    let small = if img.width() > edge || img.height() > edge { img.thumbnail(edge, edge) } else { img.clone() };
    Pixels::from_image(&small).encode(false, THUMBNAIL_QUALITY)
}

/// Frames of an animated GIF, PNG or WebP; `None` for a still image.
fn decode_animation(kind: ImageKind, bytes: &[u8], limits: &Limits) -> Result<Option<Vec<Frame>>, RejectReason> {
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

fn encode_animation(
    kind: ImageKind,
    bytes: &[u8],
    frames: Vec<Frame>,
    limits: &Limits,
) -> Result<ProcessedImage, RejectReason> {
    let first = frames[0].buffer();
    let (width, height) = first.dimensions();
    let thumbnail = thumbnail(&DynamicImage::ImageRgba8(first.clone()), limits.thumbnail_edge)?;

    let config = webp_config(true, 100.0)?;
    let mut encoder = webp::AnimEncoder::new(width, height, &config);
    let mut timestamp = 0i32;
    for frame in &frames {
        encoder.add_frame(webp::AnimFrame::from_rgba(frame.buffer().as_raw(), width, height, timestamp));
        let (num, den) = frame.delay().numer_denom_ms();
        timestamp = timestamp.saturating_add((num / den.max(1)).max(1) as i32);
    }
    let webp = encoder.try_encode().map_err(|e| corrupt(format!("{e:?}")))?.to_vec();
    drop(encoder);

    let original = strip_metadata(kind, bytes);
    Ok(match original {
        Some(orig) if orig.len() <= webp.len() => ProcessedImage {
            bytes: orig,
            content_type: kind.content_type(),
            width,
            height,
            encoding: Encoding::Original,
            thumbnail,
        },
        _ => ProcessedImage {
            bytes: webp,
            content_type: "image/webp",
            width,
            height,
            encoding: Encoding::Animated,
            thumbnail,
        },
    })
}
