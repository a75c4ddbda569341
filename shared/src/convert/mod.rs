//! Image processing: decode within limits, orient, drop metadata, pick the smallest good encoding,
//! and make a thumbnail. Pure CPU work with no I/O; callers run it on a blocking thread.

mod jpeg;
mod libwebp;
mod ssim;
mod strip;

use std::collections::HashSet;
use std::io::Cursor;

use image::codecs::{gif::GifDecoder, png::PngDecoder, webp::WebPDecoder};
use image::{AnimationDecoder, DynamicImage, Frame, ImageDecoder, ImageReader};

use crate::model::RejectReason;
use crate::policy::{Effort, Limits};
use crate::sniff::ImageKind;
pub use ssim::{ssim, Picture};
pub use strip::{jpeg_is_complete, strip_metadata};

/// Quality of lossy WebP: what the AnkiCollab plugin has always used (Pillow's `quality=85`, with
/// the same libwebp, 1.6.0, and method). Every image's q85 encoding is its quality floor: whatever
/// is stored instead must score at least its SSIM.
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
    /// When the search ran: the SSIM of the q85 floor and of the lossy encoding it kept.
    pub ssim: Option<(f64, f64)>,
    /// When the search ran: how it went.
    pub search: Option<SearchStats>,
}

/// How one image's search went (benchmarks report it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SearchStats {
    /// Searched on a sample, then checked on the whole picture.
    pub sampled: bool,
    /// Encodings scored during the search (of the sample when sampled), the floor's not counted.
    pub probes: u32,
    /// The whole-picture check failed the sample's pick and tried a higher quality.
    pub retried: bool,
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
    /// Loop filter strength, 0 to 100 (default 60).
    pub filter_strength: i32,
    /// Loop filter sharpness, 0 to 7 (default 0).
    pub filter_sharpness: i32,
    /// Let libwebp choose the loop filter strength per picture (`autofilter`).
    pub autofilter: bool,
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
    filter_strength: 60,
    filter_sharpness: 0,
    autofilter: false,
    preprocessing: 0,
};
const LOSSLESS: WebpSettings = WebpSettings { lossless: true, quality: 100.0, ..LOSSY };

/// How [`Effort::Smallest`] searches each image for a smaller encoding at the q85 floor's score.
/// Nothing here is a per-image constant: every family is searched for the lowest quality at which
/// this image still keeps its floor, so what is found depends on the image alone.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPlan {
    /// Setting families, each searched for its lowest passing quality (all libwebp defaults
    /// except what the family changes; `quality` is ignored).
    pub families: Vec<WebpSettings>,
    /// No family goes below this quality.
    pub lowest_quality: f32,
    /// Larger pictures are searched on a sample of whole macroblock tiles from a grid over the
    /// picture, about this share of its pixels (at least [`Self::min_sample_pixels`], at most
    /// [`Self::max_sample_pixels`]); the pick is then encoded and scored on the whole picture.
    /// 1 searches every picture whole.
    pub sample_share: f64,
    pub min_sample_pixels: u64,
    pub max_sample_pixels: u64,
    /// A family's search stops once the step still open would save less than this share of its
    /// bytes.
    pub stop_share: f64,
    /// How far below the floor's SSIM a candidate may score: 0 in the service, which never stores
    /// worse than q85; benchmarks raise it to trace bytes against score.
    pub ssim_slack: f64,
}

impl Default for SearchPlan {
    fn default() -> Self {
        Self {
            // Chosen on the fit half of the wide corpus (BENCHMARKS.md, "Conversion"): of 17
            // candidate families, the cheapest within 0.5% of the bytes of the best that keeps
            // 5× cwebp's time on 95% of resamples of the half; no second family added 0.5% more.
            families: vec![WebpSettings { sharp_yuv: true, filter_strength: 90, ..LOSSY }],
            lowest_quality: 50.0,
            sample_share: 0.125,
            min_sample_pixels: 65_536,
            max_sample_pixels: 262_144,
            stop_share: 0.01,
            ssim_slack: 0.0,
        }
    }
}

impl SearchPlan {
    /// The q85 floor's settings, which every family starts from.
    pub const fn floor() -> WebpSettings {
        LOSSY
    }
}

/// Pictures above this size get one encoding whatever the effort, to stay well inside
/// process-upload's timeout.
pub const SEARCH_MAX_PIXELS: u64 = 24_000_000;

/// A candidate must beat the floor's SSIM by this much, so that rounding can never make it worse.
const SSIM_MARGIN: f64 = 1e-5;
/// Sampled pictures are cut into tiles of this edge: whole 16-pixel macroblocks, so that a tile is
/// encoded on the same block grid as in the picture.
const TILE: usize = 128;

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
    process_image_with(kind, bytes, limits, &SearchPlan::default())
}

/// [`process_image`] with another search plan (benchmarks compare plans).
pub fn process_image_with(
    kind: ImageKind,
    bytes: &[u8],
    limits: &Limits,
    plan: &SearchPlan,
) -> Result<ProcessedImage, RejectReason> {
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
    // Consumes the decoded image, so that one full-size copy of the pixels is alive (the search
    // decodes one candidate at a time beside it).
    let pixels = Pixels::from_image(img);
    let floor = pixels.encode(&LOSSY)?;
    // Few colours (screenshots, text, diagrams): lossless is exact and sometimes smaller, but
    // grayscale photos and anti-aliased text are often three times smaller lossy.
    let lossless = if kind != ImageKind::Jpeg && pixels.is_graphic() { Some(pixels.encode(&LOSSLESS)?) } else { None };
    // What a searched encoding must be smaller than to be worth keeping.
    let limit = lossless.as_ref().map_or(floor.len(), |l| l.len().min(floor.len()));
    let (mut ssim, mut search) = (None, None);
    let (mut settings, mut webp) = match limits.effort {
        Effort::Smallest if !tiny && area <= SEARCH_MAX_PIXELS => match pixels.smaller_than(&floor, limit, plan)? {
            None => (LOSSY, floor),
            Some(Search { bar, best: None, stats }) => {
                (ssim, search) = (Some((bar, bar)), Some(stats));
                (LOSSY, floor)
            }
            Some(Search { bar, best: Some(found), stats }) => {
                (ssim, search) = (Some((bar, found.score)), Some(stats));
                (found.settings, found.bytes)
            }
        },
        _ => (LOSSY, floor),
    };
    if let Some(lossless) = lossless {
        // Tiny images stay lossless: a few hundred bytes saved are not worth 4:2:0 chroma on ten
        // pixels.
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
            search,
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
            search,
        },
    })
}

fn decode_still(
    kind: ImageKind,
    bytes: &[u8],
    limits: &Limits,
) -> Result<(DynamicImage, image::metadata::Orientation), RejectReason> {
    if kind == ImageKind::Jpeg {
        return jpeg::decode(bytes, limits);
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), kind.image_format());
    reader.limits(decode_limits(limits));
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    // Refuse on the header's dimensions, before a single pixel is allocated.
    let (w, h) = decoder.dimensions();
    check_pixels(w, h, limits)?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    Ok((high_bytes(DynamicImage::from_decoder(decoder).map_err(corrupt)?), orientation))
}

/// 16-bit samples (PNG, TIFF) to 8 bits by their high byte, as Pillow reads 16-bit colour, so
/// that the pixels we encode are the plugin's; the `image` crate's own conversion rounds, which
/// moves about half the samples by one level. (Pillow turns 16-bit grayscale white above 1/256
/// of full scale; the high byte is what it means.)
fn high_bytes(img: DynamicImage) -> DynamicImage {
    fn high<P: image::Pixel<Subpixel = u8>>(
        samples: &[u16],
        width: u32,
        height: u32,
    ) -> image::ImageBuffer<P, Vec<u8>> {
        let mut out = image::ImageBuffer::<P, Vec<u8>>::new(width, height);
        for (to, from) in out.iter_mut().zip(samples) {
            *to = (from >> 8) as u8;
        }
        out
    }
    let (w, h) = (img.width(), img.height());
    match img {
        DynamicImage::ImageLuma16(i) => DynamicImage::ImageLuma8(high(&i, w, h)),
        DynamicImage::ImageLumaA16(i) => DynamicImage::ImageLumaA8(high(&i, w, h)),
        DynamicImage::ImageRgb16(i) => DynamicImage::ImageRgb8(high(&i, w, h)),
        DynamicImage::ImageRgba16(i) => DynamicImage::ImageRgba8(high(&i, w, h)),
        other => other,
    }
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

/// What the search found: the floor's SSIM, and the smallest passing encoding.
struct Search {
    bar: f64,
    best: Option<Found>,
    stats: SearchStats,
}

/// A lossy encoding that keeps the floor, with its score.
struct Found {
    settings: WebpSettings,
    bytes: Vec<u8>,
    score: f64,
}

/// One encoding tried by a family's search.
struct Probe {
    quality: f32,
    bytes: Vec<u8>,
    score: f64,
}

/// Probes per family after its q85 one: enough to interpolate to within a quality step.
const MAX_PROBES: usize = 5;

/// 8-bit pixels ready for libwebp, without an alpha channel when every pixel is opaque.
struct Pixels {
    data: Vec<u8>,
    width: u32,
    height: u32,
    alpha: bool,
    /// Encodings scored by [`Pixels::probe`].
    probes: std::cell::Cell<u32>,
}

impl Pixels {
    /// Takes the image: 8-bit RGB(A) decodes are reused without a copy.
    fn from_image(img: DynamicImage) -> Self {
        let (width, height) = (img.width(), img.height());
        if img.color().has_alpha() {
            let rgba = img.into_rgba8();
            if rgba.pixels().any(|p| p.0[3] != 255) {
                return Self::new(rgba.into_raw(), width, height, true);
            }
            return Self::new(DynamicImage::ImageRgba8(rgba).into_rgb8().into_raw(), width, height, false);
        }
        Self::new(img.into_rgb8().into_raw(), width, height, false)
    }

    fn new(data: Vec<u8>, width: u32, height: u32, alpha: bool) -> Self {
        Self { data, width, height, alpha, probes: std::cell::Cell::new(0) }
    }

    fn channels(&self) -> usize {
        if self.alpha {
            4
        } else {
            3
        }
    }

    fn area(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }

    /// Few distinct colours: screenshots, diagrams, text, palette images.
    fn is_graphic(&self) -> bool {
        let mut seen = HashSet::with_capacity(GRAPHIC_MAX_COLOURS + 1);
        for px in self.data.chunks_exact(self.channels()) {
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

    /// About `want` pixels of this picture as a mosaic of [`TILE`]-pixel tiles, taken from an even
    /// grid over it and kept in their order, so the sample holds the picture's mix of flat and
    /// detailed regions. `None` when the picture is too narrow for a grid of tiles.
    fn sample(&self, want: u64) -> Option<Pixels> {
        let (w, h) = (self.width as usize, self.height as usize);
        let (across, down) = (w / TILE, h / TILE);
        let tiles = (want as usize).div_ceil(TILE * TILE).max(1);
        if across == 0 || down == 0 || across * down <= tiles {
            return None;
        }
        // A grid with the picture's aspect ratio.
        let gx = ((tiles as f64 * across as f64 / down as f64).sqrt().round() as usize).clamp(1, across);
        let gy = tiles.div_ceil(gx).clamp(1, down);
        let n = self.channels();
        let (sw, sh) = (gx * TILE, gy * TILE);
        let mut data = vec![0u8; sw * sh * n];
        // Tile i of g starts near the centre of its g-th of the picture, on a macroblock edge.
        let start = |i: usize, g: usize, len: usize| {
            ((((2 * i + 1) * len) / (2 * g)).saturating_sub(TILE / 2) & !15).min(len - TILE)
        };
        for ty in 0..gy {
            let y0 = start(ty, gy, h);
            for tx in 0..gx {
                let x0 = start(tx, gx, w);
                for row in 0..TILE {
                    let src = ((y0 + row) * w + x0) * n;
                    let dst = ((ty * TILE + row) * sw + tx * TILE) * n;
                    data[dst..dst + TILE * n].copy_from_slice(&self.data[src..src + TILE * n]);
                }
            }
        }
        Some(Pixels::new(data, sw as u32, sh as u32, self.alpha))
    }

    /// SSIM of an encoding of these pixels against them; `None` if the picture is smaller than
    /// SSIM's window.
    fn ssim_of(&self, webp: &[u8]) -> Result<Option<f64>, RejectReason> {
        let decoded = libwebp::decode(webp).ok_or_else(|| corrupt("our own WebP did not decode"))?;
        let other = Picture {
            data: &decoded.pixels,
            width: decoded.width as usize,
            height: decoded.height as usize,
            alpha: decoded.alpha,
        };
        Ok(ssim(&self.picture(), &other))
    }

    /// The smallest encoding the plan finds that is smaller than `limit` (at most the size of
    /// `floor`, the q85 encoding) and scores at least the floor's SSIM, if any; `None` when the
    /// picture is too small to score. Large pictures are searched on a sample, and the pick is
    /// encoded and scored whole.
    fn smaller_than(&self, floor: &[u8], limit: usize, plan: &SearchPlan) -> Result<Option<Search>, RejectReason> {
        let Some(bar) = self.ssim_of(floor)? else { return Ok(None) };
        let slack = plan.ssim_slack;
        let area = self.area();
        let want = ((area as f64 * plan.sample_share) as u64).clamp(plan.min_sample_pixels, plan.max_sample_pixels);
        let sample = if plan.sample_share < 1.0 && want * 10 < area * 7 { self.sample(want) } else { None };
        let mut stats = SearchStats { sampled: sample.is_some(), ..SearchStats::default() };
        let best = match sample {
            None => self.search(limit, bar - slack, plan)?,
            Some(sample) => {
                let sample_floor = sample.encode(&LOSSY)?;
                let pick = match sample.ssim_of(&sample_floor)? {
                    None => None,
                    Some(sample_bar) => sample.search(sample_floor.len(), sample_bar - slack, plan)?,
                };
                stats.probes = sample.probes.get();
                // The pick shrinks the sample by about what it would shrink the picture: a pick
                // that would not get under the limit is not worth a whole-picture encoding.
                let expected = |pick: &Found| pick.bytes.len() as f64 / sample_floor.len() as f64 * floor.len() as f64;
                match pick {
                    Some(pick) if expected(&pick) < limit as f64 => {
                        self.confirm(pick.settings, limit, bar - slack, &mut stats.retried)?
                    }
                    _ => None,
                }
            }
        };
        stats.probes += self.probes.get();
        Ok(Some(Search { bar, best, stats }))
    }

    /// The smallest of each family's lowest passing encoding, if any is smaller than `limit`.
    fn search(&self, limit: usize, bar: f64, plan: &SearchPlan) -> Result<Option<Found>, RejectReason> {
        let mut best: Option<Found> = None;
        for family in &plan.families {
            let limit = best.as_ref().map_or(limit, |b| b.bytes.len());
            if let Some(found) = self.lowest_passing(family, bar, plan)? {
                if found.bytes.len() < limit {
                    best = Some(found);
                }
            }
        }
        Ok(best)
    }

    fn probe(&self, family: &WebpSettings, quality: f32) -> Result<Probe, RejectReason> {
        self.probes.set(self.probes.get() + 1);
        let bytes = self.encode(&WebpSettings { quality, ..*family })?;
        let score = self.ssim_of(&bytes)?.unwrap_or(f64::NEG_INFINITY);
        Ok(Probe { quality, bytes, score })
    }

    /// The lowest quality of `family` that scores at least `bar`, assuming the score falls as the
    /// quality does: q85 first, then ten lower, then steps that interpolate (or, while every probe
    /// passes, extrapolate) the score linearly to the bar, rounded towards passing. Stops when the
    /// open step is one quality wide or would save less than `plan.stop_share` of the bytes.
    fn lowest_passing(
        &self,
        family: &WebpSettings,
        bar: f64,
        plan: &SearchPlan,
    ) -> Result<Option<Found>, RejectReason> {
        let target = bar + SSIM_MARGIN;
        let mut pass = self.probe(family, PHOTO_QUALITY)?;
        if pass.score < target {
            return Ok(None); // loses quality even at the floor's own setting
        }
        let mut above: Option<(f32, f64)> = None; // the passing probe before `pass`
        let mut fail: Option<Probe> = None;
        let mut quality = (PHOTO_QUALITY - 10.0).max(plan.lowest_quality);
        for _ in 0..MAX_PROBES {
            if quality >= pass.quality {
                break;
            }
            let p = self.probe(family, quality)?;
            if p.score >= target {
                above = Some((pass.quality, pass.score));
                pass = p;
            } else {
                fail = Some(p);
            }
            quality = match &fail {
                Some(f) => {
                    let saving = pass.bytes.len().saturating_sub(f.bytes.len()) as f64;
                    if pass.quality - f.quality <= 1.0 || saving < plan.stop_share * pass.bytes.len() as f64 {
                        break;
                    }
                    let t = ((target - f.score) / (pass.score - f.score)).clamp(0.0, 1.0) as f32;
                    (f.quality + t * (pass.quality - f.quality)).ceil().clamp(f.quality + 1.0, pass.quality - 1.0)
                }
                None => {
                    if pass.quality <= plan.lowest_quality {
                        break;
                    }
                    let (q_above, s_above) = above.unwrap_or((PHOTO_QUALITY, pass.score));
                    let slope = (s_above - pass.score) / f64::from(q_above - pass.quality).max(1.0);
                    let drop = if slope > 0.0 { ((pass.score - target) / slope) as f32 } else { 10.0 };
                    (pass.quality - drop.floor().max(1.0)).max(plan.lowest_quality)
                }
            };
        }
        Ok(Some(Found {
            settings: WebpSettings { quality: pass.quality, ..*family },
            bytes: pass.bytes,
            score: pass.score,
        }))
    }

    /// Encode the whole picture at what its sample picked and score it; if the sample was
    /// optimistic, once more halfway back to the floor's quality.
    fn confirm(
        &self,
        mut settings: WebpSettings,
        limit: usize,
        bar: f64,
        retried: &mut bool,
    ) -> Result<Option<Found>, RejectReason> {
        for attempt in 0..2 {
            *retried = attempt > 0;
            let bytes = self.encode(&settings)?;
            if bytes.len() >= limit {
                return Ok(None);
            }
            if let Some(score) = self.ssim_of(&bytes)? {
                if score >= bar + SSIM_MARGIN {
                    return Ok(Some(Found { settings, bytes, score }));
                }
            }
            if settings.quality >= PHOTO_QUALITY {
                break;
            }
            settings.quality =
                (settings.quality + ((PHOTO_QUALITY - settings.quality) / 2.0).ceil()).min(PHOTO_QUALITY);
        }
        Ok(None)
    }

    fn encode(&self, settings: &WebpSettings) -> Result<Vec<u8>, RejectReason> {
        libwebp::encode(&self.data, self.width, self.height, self.alpha, &webp_config(settings)?).map_err(corrupt)
    }
}

fn webp_config(settings: &WebpSettings) -> Result<libwebp_sys::WebPConfig, RejectReason> {
    let mut config = libwebp::config().ok_or_else(|| corrupt("libwebp config"))?;
    config.lossless = i32::from(settings.lossless);
    config.quality = settings.quality;
    config.method = settings.method;
    config.use_sharp_yuv = i32::from(settings.sharp_yuv);
    config.sns_strength = settings.sns_strength;
    config.segments = settings.segments;
    config.filter_strength = settings.filter_strength;
    config.filter_sharpness = settings.filter_sharpness;
    config.autofilter = i32::from(settings.autofilter);
    config.preprocessing = settings.preprocessing;
    // Keep invisible pixels' colours out of the file; they cost bytes and can carry data.
    config.exact = 0;
    Ok(config)
}

pub(crate) fn thumbnail(img: &DynamicImage, edge: u32) -> Result<Vec<u8>, RejectReason> {
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
            search: None,
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
            search: None,
        },
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A picture of the corpus's `real/`.
    pub(super) fn corpus(name: &str) -> Vec<u8> {
        crate::corpus_file(&format!("real/{name}"))
    }

    fn with(effort: Effort) -> Limits {
        Limits { effort, ..Limits::default() }
    }

    /// The upright pixels process_image starts from.
    fn upright(kind: ImageKind, input: &[u8]) -> Pixels {
        let (mut img, orientation) = decode_still(kind, input, &Limits::default()).unwrap();
        img.apply_orientation(orientation);
        Pixels::from_image(img)
    }

    /// SSIM the plain way, sharing nothing with `ssim.rs` or libwebp: WebP decoded by the image
    /// crate's own decoder, alpha composited on white in f64, each channel's means, variances
    /// and covariance filtered whole by a separable Gaussian (σ 1.5, 11 taps), averaged over the
    /// picture less the 5-pixel border and over the three channels.
    fn reference_ssim(original: &Pixels, webp: &[u8]) -> f64 {
        let decoded = image::load_from_memory_with_format(webp, image::ImageFormat::WebP).unwrap().to_rgba8();
        let (w, h) = (original.width as usize, original.height as usize);
        assert_eq!((decoded.width() as usize, decoded.height() as usize), (w, h));
        let n = original.channels();
        let on_white = |v: u8, a: u8| f64::from(v) * f64::from(a) / 255.0 + 255.0 * (1.0 - f64::from(a) / 255.0);
        let k: Vec<f64> = (0..11).map(|i| (-0.5 * (i as f64 - 5.0).powi(2) / 2.25).exp()).collect();
        let sum: f64 = k.iter().sum();
        let k: Vec<f64> = k.iter().map(|x| x / sum).collect();
        // Valid-region Gaussian filter: out[y][x] for the window centred at (y + 5, x + 5).
        let blur = |p: &[f64]| -> Vec<f64> {
            let (ow, oh) = (w - 10, h - 10);
            let rows: Vec<f64> = (0..h)
                .flat_map(|y| (0..ow).map(move |x| (y, x)))
                .map(|(y, x)| (0..11).map(|i| k[i] * p[y * w + x + i]).sum())
                .collect();
            (0..oh)
                .flat_map(|y| (0..ow).map(move |x| (y, x)))
                .map(|(y, x)| (0..11).map(|i| k[i] * rows[(y + i) * ow + x]).sum())
                .collect()
        };
        let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
        let mut total = 0.0;
        for c in 0..3 {
            let mut a = Vec::with_capacity(w * h);
            let mut b = Vec::with_capacity(w * h);
            for (i, px) in original.data.chunks_exact(n).enumerate() {
                let q = decoded.as_raw()[i * 4..i * 4 + 4].to_vec();
                if original.alpha {
                    a.push(on_white(px[c], px[3]));
                    b.push(on_white(q[c], q[3]));
                } else {
                    a.push(f64::from(px[c]));
                    b.push(f64::from(q[c]));
                }
            }
            let (ma, mb) = (blur(&a), blur(&b));
            let sq = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| p * q).collect::<Vec<f64>>();
            let (aa, bb, ab) = (blur(&sq(&a, &a)), blur(&sq(&b, &b)), blur(&sq(&a, &b)));
            let mut s = 0.0;
            for i in 0..ma.len() {
                let (va, vb, cov) = (aa[i] - ma[i] * ma[i], bb[i] - mb[i] * mb[i], ab[i] - ma[i] * mb[i]);
                s += ((2.0 * ma[i] * mb[i] + c1) * (2.0 * cov + c2))
                    / ((ma[i] * ma[i] + mb[i] * mb[i] + c1) * (va + vb + c2));
            }
            total += s / ma.len() as f64;
        }
        total / 3.0
    }

    /// The search's promise, checked from the outside on a sample of the corpus (photos, a
    /// drawing, text, an icon with alpha, a screenshot, a rotated phone photo, and a picture
    /// large enough to be searched on a sample): what `smallest` stores is no larger than what
    /// `fast` stores, and when it is WebP it scores at least the q85 encoding, both scored again
    /// here from the bytes by [`reference_ssim`].
    #[test]
    fn smallest_is_no_larger_and_no_worse_than_q85() {
        let sample = [
            ("Minduka_Present_Blue_Pack.png", ImageKind::Png),
            ("grace_hopper.jpg", ImageKind::Jpeg),
            ("chelsea.png", ImageKind::Png),
            ("text.png", ImageKind::Png),
            ("logo.png", ImageKind::Png),
            ("screenshot-1.bmp", ImageKind::Bmp),
            ("phone-exif-rotated-1.jpg", ImageKind::Jpeg),
            ("retina.jpg", ImageKind::Jpeg),
        ];
        let mut sampled = false;
        for (name, kind) in sample {
            let input = corpus(name);
            let fast = process_image(kind, &input, &with(Effort::Fast)).unwrap();
            let small = process_image(kind, &input, &with(Effort::Smallest)).unwrap();
            assert_eq!((fast.ssim, fast.search), (None, None), "{name}");
            assert!(small.bytes.len() <= fast.bytes.len(), "{name}: {} > {}", small.bytes.len(), fast.bytes.len());
            let stats = small.search.expect("the search ran");
            sampled |= stats.sampled;

            let pixels = upright(kind, &input);
            let floor = reference_ssim(&pixels, &pixels.encode(&LOSSY).unwrap());
            if small.content_type == "image/webp" {
                let stored = reference_ssim(&pixels, &small.bytes);
                assert!(stored >= floor, "{name}: stored {stored} < q85 floor {floor} ({:?})", small.webp);
            }
            let (reported_floor, kept) = small.ssim.unwrap();
            assert!((reported_floor - floor).abs() < 1e-4, "{name}: ssim.rs {reported_floor}, reference {floor}");
            assert!(kept >= reported_floor, "{name}");
        }
        assert!(sampled, "no picture was large enough to be searched on a sample");
    }

    /// A sample is whole tiles of the picture, each where the grid puts it.
    #[test]
    fn a_sample_is_tiles_of_the_picture() {
        let (w, h) = (1000u32, 700u32);
        let data: Vec<u8> = (0..w * h).flat_map(|i| [(i % 251) as u8, (i / 7 % 253) as u8, (i % 13) as u8]).collect();
        let pixels = Pixels::new(data, w, h, false);
        let sample = pixels.sample(100_000).unwrap();
        assert_eq!(sample.width as usize % TILE, 0);
        assert_eq!(sample.height as usize % TILE, 0);
        let area = u64::from(sample.width) * u64::from(sample.height);
        assert!((100_000..200_000).contains(&area), "{area}");
        // Every tile row is a run of the picture's row at a macroblock-aligned column.
        for row in sample.data.chunks_exact(TILE * 3) {
            let found = pixels
                .data
                .chunks_exact(w as usize * 3)
                .any(|src| (0..=(w as usize - TILE)).step_by(16).any(|x| &src[x * 3..(x + TILE) * 3] == row));
            assert!(found, "a tile row that is not in the picture");
        }
        assert!(
            Pixels::new(vec![0; 100 * 5000 * 3], 100, 5000, false).sample(65_536).is_none(),
            "too narrow for tiles"
        );
    }

    /// A drawing the search shrinks (BENCHMARKS.md): `smallest` must find a smaller lossy
    /// encoding here, or it has stopped working.
    #[test]
    fn smallest_finds_a_smaller_encoding_for_a_graphic() {
        let input = corpus("Minduka_Present_Blue_Pack.png");
        let fast = process_image(ImageKind::Png, &input, &with(Effort::Fast)).unwrap();
        let small = process_image(ImageKind::Png, &input, &with(Effort::Smallest)).unwrap();
        assert_ne!(small.webp, LOSSY, "kept q85");
        assert!(small.bytes.len() < fast.bytes.len() * 95 / 100, "{} vs {}", small.bytes.len(), fast.bytes.len());
    }

    /// 16-bit PNGs are read as Pillow reads them: each sample's high byte, not its rounding.
    #[test]
    fn sixteen_bit_samples_keep_their_high_byte() {
        use image::{codecs::png::PngEncoder, ExtendedColorType, ImageEncoder};
        let values: Vec<u16> = vec![0, 127, 128, 255, 256, 383, 384, 32767, 32768, 65407, 65408, 65535];
        let width = values.len() as u32;
        for (colour, channels) in
            [(ExtendedColorType::L16, 1), (ExtendedColorType::Rgb16, 3), (ExtendedColorType::Rgba16, 4)]
        {
            let samples: Vec<u16> = values.iter().flat_map(|&v| std::iter::repeat_n(v, channels)).collect();
            let raw: Vec<u8> = samples.iter().flat_map(|v| v.to_ne_bytes()).collect();
            let mut png = Vec::new();
            PngEncoder::new(&mut png).write_image(&raw, width, 1, colour).unwrap();
            let (img, _) = decode_still(ImageKind::Png, &png, &Limits::default()).unwrap();
            let got: Vec<u8> = img.into_rgba8().pixels().map(|p| p.0[0]).collect();
            let want: Vec<u8> = values.iter().map(|v| (v >> 8) as u8).collect();
            assert_eq!(got, want, "{colour:?}");
        }
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
