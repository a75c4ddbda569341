//! SSIM (Wang et al. 2004), as the conversion benchmark measures quality: 8-bit RGB with alpha
//! composited on white, a Gaussian window of σ = 1.5 (11 taps), K1 = 0.01, K2 = 0.03, averaged
//! over the picture less a 5-pixel border and over the three channels. That is scikit-image's
//! `structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
//! data_range=255)`, which the benchmark calls, so a candidate encoding that passes here passes
//! there.
//!
//! Memory stays bounded whatever the picture's size: rows are filtered as they stream past, and
//! only the last 11 filtered rows are kept.

const RADIUS: usize = 5;
const TAPS: usize = 2 * RADIUS + 1;
const C1: f32 = (0.01 * 255.0) * (0.01 * 255.0);
const C2: f32 = (0.03 * 255.0) * (0.03 * 255.0);
/// Samples are centred on this before they are squared, which keeps f32 variances exact enough.
const MID: f32 = 128.0;

/// 8-bit RGB or RGBA pixels, row by row.
#[derive(Debug, Clone, Copy)]
pub struct Picture<'a> {
    pub data: &'a [u8],
    pub width: usize,
    pub height: usize,
    pub alpha: bool,
}

impl Picture<'_> {
    fn channels(&self) -> usize {
        if self.alpha {
            4
        } else {
            3
        }
    }

    /// Row `y` as three centred planes, alpha composited on white the way Pillow's
    /// `alpha_composite` rounds it (the benchmark's reference).
    fn load_row(&self, y: usize, planes: &mut [Vec<f32>; 3]) {
        let n = self.channels();
        let row = &self.data[y * self.width * n..(y + 1) * self.width * n];
        for (x, px) in row.chunks_exact(n).enumerate() {
            for c in 0..3 {
                let v = if self.alpha { on_white(px[c], px[3]) } else { px[c] };
                planes[c][x] = f32::from(v) - MID;
            }
        }
    }
}

fn on_white(v: u8, a: u8) -> u8 {
    if a == 0 {
        return 255;
    }
    // Pillow's ImagingAlphaComposite with an opaque white destination: 7 bits of precision.
    let (v, a) = (u32::from(v), u32::from(a));
    let tmp = v * a * 128 + 255 * (255 - a) * 128 + (0x80 << 7);
    ((((tmp >> 8) + tmp) >> 8) >> 7) as u8
}

fn kernel() -> [f32; TAPS] {
    let mut k = [0f64; TAPS];
    for (i, w) in k.iter_mut().enumerate() {
        let x = i as f64 - RADIUS as f64;
        *w = (-0.5 * x * x / (1.5 * 1.5)).exp();
    }
    let sum: f64 = k.iter().sum();
    k.map(|w| (w / sum) as f32)
}

/// `out[x] = Σ_k w[k] · src[x + k]`: the window's weighted sum for each kept column. The kernel
/// is symmetric, so taps k and 10 - k share a multiplication; one pass over `out` with every tap
/// in registers is about twice as fast as a pass per tap.
fn filter_row(w: &[f32; TAPS], src: &[f32], out: &mut [f32]) {
    for (o, s) in out.iter_mut().zip(src.windows(TAPS)) {
        *o = w[5] * s[5]
            + w[0] * (s[0] + s[10])
            + w[1] * (s[1] + s[9])
            + w[2] * (s[2] + s[8])
            + w[3] * (s[3] + s[7])
            + w[4] * (s[4] + s[6]);
    }
}

/// `out[i] = Σ_k w[k] · rows[k][i]`: the vertical pass over the last TAPS filtered rows.
fn filter_column(w: &[f32; TAPS], rows: [&[f32]; TAPS], out: &mut [f32]) {
    let [r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10] = rows;
    for (i, o) in out.iter_mut().enumerate() {
        *o = w[5] * r5[i]
            + w[0] * (r0[i] + r10[i])
            + w[1] * (r1[i] + r9[i])
            + w[2] * (r2[i] + r8[i])
            + w[3] * (r3[i] + r7[i])
            + w[4] * (r4[i] + r6[i]);
    }
}

/// Mean SSIM of `b` against the reference `a`; `None` when their sizes differ or the picture is
/// smaller than the window.
pub fn ssim(a: &Picture, b: &Picture) -> Option<f64> {
    let (width, height) = (a.width, a.height);
    if (b.width, b.height) != (width, height) || width < TAPS || height < TAPS {
        return None;
    }
    let channels_a = a.channels();
    let channels_b = b.channels();
    if a.data.len() < width * height * channels_a || b.data.len() < width * height * channels_b {
        return None;
    }
    let w = kernel();
    let out_w = width - 2 * RADIUS;
    // For each of the last TAPS rows, channel and quantity (x, y, x², y², xy): the row filtered
    // horizontally, kept columns only.
    const QUANTITIES: usize = 5;
    let stride = out_w;
    let slot_len = 3 * QUANTITIES * stride;
    let mut ring = vec![0f32; TAPS * slot_len];
    let mut xs: [Vec<f32>; 3] = std::array::from_fn(|_| vec![0f32; width]);
    let mut ys: [Vec<f32>; 3] = std::array::from_fn(|_| vec![0f32; width]);
    let mut product = vec![0f32; width];
    let mut vert = vec![0f32; QUANTITIES * stride];
    let mut total = 0f64;

    for y in 0..height {
        a.load_row(y, &mut xs);
        b.load_row(y, &mut ys);
        let slot = &mut ring[(y % TAPS) * slot_len..][..slot_len];
        for c in 0..3 {
            let (x, yv) = (&xs[c], &ys[c]);
            let dst = &mut slot[c * QUANTITIES * stride..][..QUANTITIES * stride];
            let (d_x, rest) = dst.split_at_mut(stride);
            let (d_y, rest) = rest.split_at_mut(stride);
            let (d_xx, rest) = rest.split_at_mut(stride);
            let (d_yy, d_xy) = rest.split_at_mut(stride);
            filter_row(&w, x, d_x);
            filter_row(&w, yv, d_y);
            product.iter_mut().zip(x).for_each(|(p, v)| *p = v * v);
            filter_row(&w, &product, d_xx);
            product.iter_mut().zip(yv).for_each(|(p, v)| *p = v * v);
            filter_row(&w, &product, d_yy);
            product.iter_mut().zip(x.iter().zip(yv)).for_each(|(p, (u, v))| *p = u * v);
            filter_row(&w, &product, d_xy);
        }
        if y + 1 < TAPS {
            continue;
        }
        // Rows y-10 ..= y are filtered horizontally: filter them vertically for row y-5.
        let first = y + 1 - TAPS;
        for c in 0..3 {
            let rows = std::array::from_fn(|k| {
                &ring[((first + k) % TAPS) * slot_len + c * QUANTITIES * stride..][..QUANTITIES * stride]
            });
            filter_column(&w, rows, &mut vert);
            let (mx, rest) = vert.split_at(stride);
            let (my, rest) = rest.split_at(stride);
            let (exx, rest) = rest.split_at(stride);
            let (eyy, exy) = rest.split_at(stride);
            let mut row_sum = 0f64;
            for i in 0..stride {
                // Means of the centred samples: variances and covariance are shift-free.
                let (cx, cy) = (mx[i], my[i]);
                let vx = exx[i] - cx * cx;
                let vy = eyy[i] - cy * cy;
                let cov = exy[i] - cx * cy;
                let (ux, uy) = (cx + MID, cy + MID);
                let s = ((2.0 * ux * uy + C1) * (2.0 * cov + C2)) / ((ux * ux + uy * uy + C1) * (vx + vy + C2));
                row_sum += f64::from(s);
            }
            total += row_sum;
        }
    }
    let out_h = height - 2 * RADIUS;
    Some(total / (3 * out_w * out_h) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picture(data: &[u8], width: usize, height: usize, alpha: bool) -> Picture<'_> {
        Picture { data, width, height, alpha }
    }

    fn noise(width: usize, height: usize, seed: u32) -> Vec<u8> {
        let mut state = seed.wrapping_mul(2_654_435_761).max(1);
        (0..width * height * 3)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                // A smooth gradient plus noise, like a photo.
                ((i / 3 % width) as u32 * 2 + (state % 40)) as u8
            })
            .collect()
    }

    #[test]
    fn identical_pictures_score_one_and_changes_score_less() {
        let a = noise(40, 30, 1);
        assert!((ssim(&picture(&a, 40, 30, false), &picture(&a, 40, 30, false)).unwrap() - 1.0).abs() < 1e-6);
        let b = noise(40, 30, 2);
        let score = ssim(&picture(&a, 40, 30, false), &picture(&b, 40, 30, false)).unwrap();
        assert!(score < 0.9, "{score}");
        let mut c = a.clone();
        c[500] = c[500].wrapping_add(60);
        let slight = ssim(&picture(&a, 40, 30, false), &picture(&c, 40, 30, false)).unwrap();
        assert!(score < slight && slight < 1.0, "{slight}");
    }

    #[test]
    fn sizes_must_agree_and_fit_the_window() {
        let a = noise(20, 20, 1);
        assert_eq!(ssim(&picture(&a, 20, 20, false), &picture(&a[..10 * 20 * 3], 20, 10, false)), None);
        assert_eq!(ssim(&picture(&a, 10, 40, false), &picture(&a, 10, 40, false)), None);
    }

    #[test]
    fn alpha_is_composited_on_white_as_pillow_does() {
        assert_eq!((on_white(0, 0), on_white(0, 255), on_white(200, 255)), (255, 0, 200));
        // Pillow: alpha_composite(white, (0, 0, 0, 128)) → 127; (100, 50, 0, 77) → 208, 193, 178.
        assert_eq!(on_white(0, 128), 127);
        assert_eq!((on_white(100, 77), on_white(50, 77), on_white(0, 77)), (208, 193, 178));
    }

    /// Against scikit-image 0.25's structural_similarity on the same pixels (see the benchmark's
    /// settings above): a 16×12 gradient and its copy with every fourth pixel darkened.
    #[test]
    fn agrees_with_scikit_image() {
        let (w, h) = (16, 12);
        let a: Vec<u8> = (0..w * h * 3).map(|i| ((i / 3 % w) * 9 + (i / 3 / w) * 5 + (i % 3) * 20) as u8).collect();
        let b: Vec<u8> = a.iter().enumerate().map(|(i, v)| if (i / 3) % 4 == 0 { v / 2 } else { *v }).collect();
        let score = ssim(&picture(&a, w, h, false), &picture(&b, w, h, false)).unwrap();
        assert!((score - SKIMAGE).abs() < 1e-5, "{score} against scikit-image's {SKIMAGE}");
    }
    const SKIMAGE: f64 = 0.444_074_988_856_581_6;
}
