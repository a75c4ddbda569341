//! WebP settings and encoding: the plugin's q85 and lossless settings, 8-bit pixels ready for
//! libwebp, and thumbnails.

use std::collections::HashSet;

use image::DynamicImage;

use super::decode::corrupt;
use super::libwebp;
use crate::model::RejectReason;

/// Quality of lossy WebP: what the AnkiCollab plugin has always used (Pillow's `quality=85`, with
/// the same libwebp, 1.6.0, and method). Every image's q85 encoding is its quality floor: whatever
/// is stored instead must score at least its SSIM.
pub const PHOTO_QUALITY: f32 = 85.0;
pub const THUMBNAIL_QUALITY: f32 = 70.0;
/// libwebp's effort, 0 (fast) to 6 (smallest).
pub const METHOD: i32 = 4;
/// Above this many distinct colours an image is treated as a photo (lossy only); at or below, as a
/// graphic, for which lossless is tried as well (exact edges and text when that is smaller).
pub const GRAPHIC_MAX_COLOURS: usize = 1024;

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

pub(super) const LOSSY: WebpSettings = WebpSettings {
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
pub(super) const LOSSLESS: WebpSettings = WebpSettings { lossless: true, quality: 100.0, ..LOSSY };

pub(super) fn webp_config(settings: &WebpSettings) -> Result<libwebp_sys::WebPConfig, RejectReason> {
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

/// 8-bit pixels ready for libwebp, without an alpha channel when every pixel is opaque.
pub(super) struct Pixels {
    pub(super) data: Vec<u8>,
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) alpha: bool,
    /// Encodings scored by [`Pixels::probe`].
    pub(super) probes: std::cell::Cell<u32>,
}

impl Pixels {
    /// Takes the image: 8-bit RGB(A) decodes are reused without a copy.
    pub(super) fn from_image(img: DynamicImage) -> Self {
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

    pub(super) fn new(data: Vec<u8>, width: u32, height: u32, alpha: bool) -> Self {
        Self { data, width, height, alpha, probes: std::cell::Cell::new(0) }
    }

    pub(super) fn channels(&self) -> usize {
        if self.alpha {
            4
        } else {
            3
        }
    }

    /// Few distinct colours: screenshots, diagrams, text, palette images.
    pub(super) fn is_graphic(&self) -> bool {
        let mut seen = HashSet::with_capacity(GRAPHIC_MAX_COLOURS + 1);
        for px in self.data.chunks_exact(self.channels()) {
            let key = px.iter().fold(0u32, |acc, &c| (acc << 8) | u32::from(c));
            if seen.insert(key) && seen.len() > GRAPHIC_MAX_COLOURS {
                return false;
            }
        }
        true
    }

    pub(super) fn encode(&self, settings: &WebpSettings) -> Result<Vec<u8>, RejectReason> {
        libwebp::encode(&self.data, self.width, self.height, self.alpha, &webp_config(settings)?).map_err(corrupt)
    }
}
