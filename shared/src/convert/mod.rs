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

/// Quality of lossy WebP: what the AnkiCollab plugin has always used (Pillow's `quality=85`, the
/// same libwebp and method), so no image comes out worse than the plugin made it. At 82 every
/// photo of the benchmark corpus lost SSIM against that (BENCHMARKS.md, "Conversion").
pub const PHOTO_QUALITY: f32 = 85.0;
pub const THUMBNAIL_QUALITY: f32 = 70.0;
/// libwebp's effort, 0 (fast) to 6 (smallest).
pub const METHOD: i32 = 4;
/// Below this many pixels a graphic is kept lossless even when lossy is smaller.
const TINY_PIXELS: u64 = 64 * 64;
/// Above this many distinct colours an image is treated as a photo (lossy only); at or below, as a
/// graphic, for which lossless is tried as well (exact edges and text when that is smaller).
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
    /// The WebP encoding that was stored, or that the original beat.
    pub webp: WebpSettings,
}

/// What libwebp was asked for; benchmarks replay it with cwebp.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WebpSettings {
    pub lossless: bool,
    pub quality: f32,
    pub method: i32,
}

const LOSSY: WebpSettings = WebpSettings { lossless: false, quality: PHOTO_QUALITY, method: METHOD };
const LOSSLESS: WebpSettings = WebpSettings { lossless: true, quality: 100.0, method: METHOD };

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

    let thumbnail = thumbnail(&img, limits.thumbnail_edge)?;
    let (width, height) = (img.width(), img.height());
    // Consumes the decoded image, so that only one full-size copy of the pixels is alive.
    let pixels = Pixels::from_image(img);
    let mut settings = LOSSY;
    let mut webp = pixels.encode(&settings)?;
    if kind != ImageKind::Jpeg && pixels.is_graphic() {
        // Few colours (screenshots, text, diagrams): lossless is exact and sometimes smaller, but
        // grayscale photos and anti-aliased text are often three times smaller lossy. Tiny images
        // stay lossless: a few hundred bytes saved are not worth 4:2:0 chroma on ten pixels.
        let lossless = pixels.encode(&LOSSLESS)?;
        if lossless.len() <= webp.len() || u64::from(width) * u64::from(height) < TINY_PIXELS {
            (settings, webp) = (LOSSLESS, lossless);
        }
    }
    drop(pixels);
    let encoding = if settings.lossless { Encoding::Lossless } else { Encoding::Lossy };

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
            webp: settings,
        },
        _ => ProcessedImage {
            bytes: webp,
            content_type: "image/webp",
            width,
            height,
            encoding,
            thumbnail,
            webp: settings,
        },
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
    /// Takes the image: 8-bit RGB(A) decodes are reused without a copy.
    fn from_image(img: DynamicImage) -> Self {
        let (width, height) = (img.width(), img.height());
        if img.color().has_alpha() {
            let rgba = img.into_rgba8();
            if rgba.pixels().any(|p| p.0[3] != 255) {
                return Self { data: rgba.into_raw(), width, height, alpha: true };
            }
            return Self { data: DynamicImage::ImageRgba8(rgba).into_rgb8().into_raw(), width, height, alpha: false };
        }
        Self { data: img.into_rgb8().into_raw(), width, height, alpha: false }
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

    fn encode(&self, settings: &WebpSettings) -> Result<Vec<u8>, RejectReason> {
        let encoder = if self.alpha {
            webp::Encoder::from_rgba(&self.data, self.width, self.height)
        } else {
            webp::Encoder::from_rgb(&self.data, self.width, self.height)
        };
        let config = webp_config(settings)?;
        let out = encoder.encode_advanced(&config).map_err(|e| corrupt(format!("{e:?}")))?;
        Ok(out.to_vec())
    }
}

fn webp_config(settings: &WebpSettings) -> Result<webp::WebPConfig, RejectReason> {
    let mut config = webp::WebPConfig::new().map_err(|_| corrupt("libwebp config"))?;
    config.lossless = i32::from(settings.lossless);
    config.quality = settings.quality;
    config.method = settings.method;
    // Keep invisible pixels' colours out of the file; they cost bytes and can carry data.
    config.exact = 0;
    Ok(config)
}

fn thumbnail(img: &DynamicImage, edge: u32) -> Result<Vec<u8>, RejectReason> {
    let small = if img.width() > edge || img.height() > edge { img.thumbnail(edge, edge) } else { img.clone() };
    Pixels::from_image(small).encode(&WebpSettings { quality: THUMBNAIL_QUALITY, ..LOSSY })
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

    // Lossless keeps flat GIF frames exact and is usually smallest; lossy wins on dithered or
    // photographic frames. Animations are small (bounded by max_animation_pixels): try both.
    let mut settings = LOSSLESS;
    let mut webp = encode_frames(&frames, width, height, &settings)?;
    let lossy = encode_frames(&frames, width, height, &LOSSY)?;
    if lossy.len() < webp.len() {
        (settings, webp) = (LOSSY, lossy);
    }
    drop(frames);

    let original = strip_metadata(kind, bytes);
    Ok(match original {
        Some(orig) if orig.len() <= webp.len() => ProcessedImage {
            bytes: orig,
            content_type: kind.content_type(),
            width,
            height,
            encoding: Encoding::Original,
            thumbnail,
            webp: settings,
        },
        _ => ProcessedImage {
            bytes: webp,
            content_type: "image/webp",
            width,
            height,
            encoding: Encoding::Animated,
            thumbnail,
            webp: settings,
        },
    })
}

fn encode_frames(frames: &[Frame], width: u32, height: u32, settings: &WebpSettings) -> Result<Vec<u8>, RejectReason> {
    let config = webp_config(settings)?;
    let mut encoder = webp::AnimEncoder::new(width, height, &config);
    let mut timestamp = 0i32;
    for frame in frames {
        encoder.add_frame(webp::AnimFrame::from_rgba(frame.buffer().as_raw(), width, height, timestamp));
        let (num, den) = frame.delay().numer_denom_ms();
        timestamp = timestamp.saturating_add((num / den.max(1)).max(1) as i32);
    }
    Ok(encoder.try_encode().map_err(|e| corrupt(format!("{e:?}")))?.to_vec())
}
