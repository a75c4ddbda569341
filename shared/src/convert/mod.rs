//! Image processing: decode within limits, orient, drop metadata, pick the smallest good encoding,
//! and make a thumbnail. Pure CPU work with no I/O; callers run it on a blocking thread.

mod ssim;
mod strip;

use std::collections::HashSet;
use std::io::Cursor;

use image::codecs::{gif::GifDecoder, png::PngDecoder, webp::WebPDecoder};
use image::{AnimationDecoder, DynamicImage, Frame, ImageDecoder, ImageReader};

use crate::model::RejectReason;
use crate::policy::Limits;
use crate::sniff::ImageKind;
pub use ssim::{ssim, Picture};
pub use strip::{jpeg_is_complete, strip_metadata};

/// Quality of lossy WebP: what the AnkiCollab plugin has always used (Pillow's `quality=85`, the
/// same libwebp and method). Every image's q85 encoding is its quality floor: whatever is stored
/// instead must score at least its SSIM.
pub const PHOTO_QUALITY: f32 = 85.0;
pub const THUMBNAIL_QUALITY: f32 = 70.0;
/// libwebp's effort, 0 (fast) to 6 (smallest).
pub const METHOD: i32 = 4;
/// Below this many pixels a graphic is kept lossless even when lossy is smaller.
const TINY_PIXELS: u64 = 64 * 64;
/// Above this many distinct colours an image is treated as a photo (lossy only); at or below, as a
/// graphic, for which lossless is tried as well (exact edges and text when that is smaller).
pub const GRAPHIC_MAX_COLOURS: usize = 1024;

/// How hard process-upload works for smaller files (`CONVERSION_EFFORT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Effort {
    /// One lossy encoding at the plugin's settings (and lossless for graphics).
    Fast,
    /// Also the encodings of [`LADDER`], keeping the smallest that scores at least the q85
    /// encoding's SSIM: about 10% fewer bytes on the benchmark corpus, for several encodings' time
    /// (BENCHMARKS.md, "Conversion"). Bytes are paid at every download, the time once.
    #[default]
    Smallest,
}

impl std::str::FromStr for Effort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fast" => Ok(Effort::Fast),
            "smallest" => Ok(Effort::Smallest),
            other => Err(format!("{other:?} is not fast or smallest")),
        }
    }
}

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
    /// When the ladder ran: the SSIM of the q85 floor and of the lossy encoding it kept.
    pub ssim: Option<(f64, f64)>,
}

/// What libwebp was asked for (libwebp's defaults unless said otherwise); benchmarks replay it
/// with cwebp.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WebpSettings {
    pub lossless: bool,
    pub quality: f32,
    pub method: i32,
    /// RGB to YUV conversion that keeps colour edges sharp (`use_sharp_yuv`).
    pub sharp_yuv: bool,
    /// Spatial noise shaping, 0 to 100 (default 50).
    pub sns_strength: i32,
    /// Segments, 1 to 4 (default 4).
    pub segments: i32,
    /// Loop filter sharpness, 0 to 7 (default 0).
    pub filter_sharpness: i32,
    /// Pre-processing: 0 none (default), 1 segment-smooth.
    pub preprocessing: i32,
}

const LOSSY: WebpSettings = WebpSettings {
    lossless: false,
    quality: PHOTO_QUALITY,
    method: METHOD,
    sharp_yuv: false,
    sns_strength: 50,
    segments: 4,
    filter_sharpness: 0,
    preprocessing: 0,
};
const LOSSLESS: WebpSettings = WebpSettings { lossless: true, quality: 100.0, ..LOSSY };

/// The lossy encodings [`Effort::Smallest`] tries after the q85 floor: families of settings, each
/// from its highest quality down, for as long as the result keeps the floor's SSIM. Sharp YUV
/// keeps colour edges through 4:2:0 chroma, which lets smooth photos drop to q70-80; strong noise
/// shaping with three segments, a sharper loop filter and pre-processing suits large graphics and
/// gradients; libwebp's slowest method at the plugin's quality finds a few percent on detailed
/// photos. A family stops at its first step that scores below the bar (lower qualities would
/// score lower still); a step no smaller than the best so far is skipped unscored. Chosen by a search over the benchmark corpus
/// (BENCHMARKS.md, "Conversion"); the SSIM check makes them safe on anything else.
pub const LADDER: [(WebpSettings, &[f32]); 3] = [
    (WebpSettings { sharp_yuv: true, ..LOSSY }, &[83.0, 82.0, 80.0, 75.0, 70.0]),
    (WebpSettings { sns_strength: 100, segments: 3, filter_sharpness: 7, preprocessing: 1, ..LOSSY }, &[82.0, 76.0]),
    (WebpSettings { method: 6, ..LOSSY }, &[85.0]),
];

/// Pictures above this size get one encoding whatever the effort: the ladder costs about ten
/// encodings' time, and at 50 Mpx that would approach process-upload's timeout.
pub const LADDER_MAX_PIXELS: u64 = 24_000_000;

/// A candidate must beat the floor's SSIM by this much, so that rounding can never make it worse.
const SSIM_MARGIN: f64 = 1e-5;

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
    let area = u64::from(width) * u64::from(height);
    let tiny = area < TINY_PIXELS;
    // Consumes the decoded image, so that one full-size copy of the pixels is alive (the ladder
    // decodes one candidate at a time beside it).
    let pixels = Pixels::from_image(img);
    let floor = pixels.encode(&LOSSY)?;
    let mut ssim = None;
    let (mut settings, mut webp) = match limits.effort {
        Effort::Smallest if !tiny && area <= LADDER_MAX_PIXELS => match pixels.smaller_than(&floor)? {
            None => (LOSSY, floor),
            Some(Search { bar, best: None }) => {
                ssim = Some((bar, bar));
                (LOSSY, floor)
            }
            Some(Search { bar, best: Some((settings, bytes, score)) }) => {
                ssim = Some((bar, score));
                (settings, bytes)
            }
        },
        _ => (LOSSY, floor),
    };
    if kind != ImageKind::Jpeg && pixels.is_graphic() {
        // Few colours (screenshots, text, diagrams): lossless is exact and sometimes smaller, but
        // grayscale photos and anti-aliased text are often three times smaller lossy. Tiny images
        // stay lossless: a few hundred bytes saved are not worth 4:2:0 chroma on ten pixels.
        let lossless = pixels.encode(&LOSSLESS)?;
        if lossless.len() <= webp.len() || tiny {
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
            ssim,
        },
        _ => ProcessedImage {
            bytes: webp,
            content_type: "image/webp",
            width,
            height,
            encoding,
            thumbnail,
            webp: settings,
            ssim,
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

/// What the ladder found: the floor's SSIM, and the smallest passing encoding with its score.
struct Search {
    bar: f64,
    best: Option<(WebpSettings, Vec<u8>, f64)>,
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

    fn picture(&self) -> Picture<'_> {
        Picture { data: &self.data, width: self.width as usize, height: self.height as usize, alpha: self.alpha }
    }

    /// SSIM of an encoding of these pixels against them; `None` if the picture is smaller than
    /// SSIM's window.
    fn ssim_of(&self, webp: &[u8]) -> Result<Option<f64>, RejectReason> {
        let decoded = webp::Decoder::new(webp).decode().ok_or_else(|| corrupt("our own WebP did not decode"))?;
        let other = Picture {
            data: &decoded,
            width: decoded.width() as usize,
            height: decoded.height() as usize,
            alpha: decoded.is_alpha(),
        };
        Ok(ssim(&self.picture(), &other))
    }

    /// The smallest encoding of [`LADDER`] that is smaller than `floor` (the q85 encoding) and
    /// scores at least its SSIM, if any; `None` when the picture is too small to score.
    fn smaller_than(&self, floor: &[u8]) -> Result<Option<Search>, RejectReason> {
        let Some(bar) = self.ssim_of(floor)? else { return Ok(None) };
        let mut best: Option<(WebpSettings, Vec<u8>, f64)> = None;
        for (family, qualities) in LADDER {
            for &quality in qualities {
                let settings = WebpSettings { quality, ..family };
                let bytes = self.encode(&settings)?;
                if bytes.len() >= best.as_ref().map_or(floor.len(), |(_, b, _)| b.len()) {
                    continue; // not smaller; a lower quality may be
                }
                match self.ssim_of(&bytes)? {
                    Some(score) if score >= bar + SSIM_MARGIN => best = Some((settings, bytes, score)),
                    // Lower qualities of this family would score lower still.
                    _ => break,
                }
            }
        }
        Ok(Some(Search { bar, best }))
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
    config.use_sharp_yuv = i32::from(settings.sharp_yuv);
    config.sns_strength = settings.sns_strength;
    config.segments = settings.segments;
    config.filter_sharpness = settings.filter_sharpness;
    config.preprocessing = settings.preprocessing;
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
            ssim: None,
        },
        _ => ProcessedImage {
            bytes: webp,
            content_type: "image/webp",
            width,
            height,
            encoding: Encoding::Animated,
            thumbnail,
            webp: settings,
            ssim: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A corpus file: from $CORPUS as the test scripts set it, else ../shared/corpus.
    fn corpus(name: &str) -> Vec<u8> {
        let dir =
            std::env::var("CORPUS").unwrap_or_else(|_| format!("{}/../../shared/corpus", env!("CARGO_MANIFEST_DIR")));
        let path = format!("{dir}/real/{name}");
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn with(effort: Effort) -> Limits {
        Limits { effort, ..Limits::default() }
    }

    /// SSIM of stored WebP bytes against the original's pixels, decoded by the image crate.
    fn score(original: &Pixels, webp: &[u8]) -> f64 {
        let decoded = image::load_from_memory(webp).unwrap();
        let data = if original.alpha { decoded.to_rgba8().into_raw() } else { decoded.to_rgb8().into_raw() };
        let picture = Picture { data: &data, ..original.picture() };
        ssim(&original.picture(), &picture).unwrap()
    }

    /// The ladder's promise, checked from the outside: what `smallest` stores is no larger than
    /// what `fast` stores, and a lossy result scores at least the q85 encoding's SSIM, computed
    /// here again from the stored bytes rather than taken from the result.
    #[test]
    fn smallest_is_no_larger_and_no_worse_than_q85() {
        for (name, kind) in [("Minduka_Present_Blue_Pack.png", ImageKind::Png), ("grace_hopper.jpg", ImageKind::Jpeg)] {
            let input = corpus(name);
            let fast = process_image(kind, &input, &with(Effort::Fast)).unwrap();
            let small = process_image(kind, &input, &with(Effort::Smallest)).unwrap();
            assert_eq!(fast.ssim, None, "{name}");
            assert!(small.bytes.len() <= fast.bytes.len(), "{name}: {} > {}", small.bytes.len(), fast.bytes.len());

            let pixels = Pixels::from_image(image::load_from_memory(&input).unwrap());
            let floor = score(&pixels, &pixels.encode(&LOSSY).unwrap());
            let (reported_floor, kept) = small.ssim.expect("the ladder ran");
            assert!((floor - reported_floor).abs() < 1e-9, "{name}: {floor} vs {reported_floor}");
            if small.encoding == Encoding::Lossy {
                let stored = score(&pixels, &small.bytes);
                assert!((stored - kept).abs() < 1e-9, "{name}: reported {kept}, stored scores {stored}");
                assert!(stored >= floor, "{name}: {stored} < {floor}");
            }
        }
    }

    /// A drawing the ladder shrinks (BENCHMARKS.md): `smallest` must find a smaller lossy
    /// encoding here, or it has stopped working.
    #[test]
    fn smallest_finds_a_smaller_encoding_for_a_graphic() {
        let input = corpus("Minduka_Present_Blue_Pack.png");
        let fast = process_image(ImageKind::Png, &input, &with(Effort::Fast)).unwrap();
        let small = process_image(ImageKind::Png, &input, &with(Effort::Smallest)).unwrap();
        assert_ne!(small.webp, LOSSY, "kept q85");
        assert!(small.bytes.len() < fast.bytes.len() * 95 / 100, "{} vs {}", small.bytes.len(), fast.bytes.len());
    }

    #[test]
    fn fast_makes_one_encoding_and_efforts_parse() {
        let small =
            process_image(ImageKind::Png, &corpus("Minduka_Present_Blue_Pack.png"), &with(Effort::Fast)).unwrap();
        assert!(matches!(small.webp, LOSSY | LOSSLESS), "{:?}", small.webp);
        assert_eq!("fast".parse(), Ok(Effort::Fast));
        assert_eq!("smallest".parse(), Ok(Effort::Smallest));
        assert!("best".parse::<Effort>().is_err());
    }
}
