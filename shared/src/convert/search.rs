//! The SSIM-floor search behind `smallest`: for each picture, the smallest lossy encoding that
//! scores at least its q85 encoding's SSIM, searched on a sample of tiles when the picture is large.

use super::decode::corrupt;
use super::encode::{Pixels, WebpSettings, LOSSY, PHOTO_QUALITY};
use super::{libwebp, ssim, Picture};
use crate::model::RejectReason;

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

/// How [`Effort::Smallest`](crate::policy::Effort::Smallest) searches each image for a smaller
/// encoding at the q85 floor's score.
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

/// What the search found: the floor's SSIM, and the smallest passing encoding.
pub(super) struct Search {
    pub(super) bar: f64,
    pub(super) best: Option<Found>,
    pub(super) stats: SearchStats,
}

/// A lossy encoding that keeps the floor, with its score.
pub(super) struct Found {
    pub(super) settings: WebpSettings,
    pub(super) bytes: Vec<u8>,
    pub(super) score: f64,
}

/// One encoding tried by a family's search.
struct Probe {
    quality: f32,
    bytes: Vec<u8>,
    score: f64,
}

/// Probes per family after its q85 one: enough to interpolate to within a quality step.
const MAX_PROBES: usize = 5;

// The search's half of `Pixels` (the encoding half is in encode.rs).
impl Pixels {
    fn area(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
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
    pub(super) fn smaller_than(
        &self,
        floor: &[u8],
        limit: usize,
        plan: &SearchPlan,
    ) -> Result<Option<Search>, RejectReason> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
