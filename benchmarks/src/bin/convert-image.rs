//! Run process-upload's image path (`shared::convert::process_image`: decode → orient → WebP →
//! thumbnail) on files and print one JSON line each. Used by compare-conversion.py, which runs
//! one process per image so that peak RSS is per image.
//!
//! usage: convert-image [--repeat N] [--out DIR] [--effort fast|smallest]
//!                      [--families F,F...] [--sample-share S] [--ssim-slack D] FILE...
//!
//! `--families` and `--sample-share` replace the default search plan's (benchmarks/fit-conversion.py
//! compares plans): a family is `default` or `+`-joined changes to libwebp's defaults: `sharp`
//! (sharp YUV), `sns=N`, `seg=N`, `f=N` (filter strength), `sharpness=N`, `af` (autofilter),
//! `pre=N`, `m=N` (method). `--sample-share 1` searches every picture whole; `--ssim-slack D`
//! accepts encodings scoring up to D below the q85 floor's SSIM (to trace bytes against score).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use shared::convert::{process_image_with, Encoding, SearchPlan, WebpSettings};
use shared::policy::{Effort, Limits};
use shared::sniff::{sniff, Sniffed};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut repeat, mut out_dir, mut files) = (1usize, None::<PathBuf>, Vec::new());
    let mut limits = Limits::default();
    let mut plan = SearchPlan::default();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--repeat" => repeat = args.next().ok_or("--repeat N")?.parse()?,
            "--out" => out_dir = Some(args.next().ok_or("--out DIR")?.into()),
            "--effort" => limits.effort = args.next().ok_or("--effort fast|smallest")?.parse::<Effort>()?,
            "--families" => {
                let spec = args.next().ok_or("--families F,F...")?;
                plan.families = spec.split(',').map(family).collect::<Result<_, _>>()?;
            }
            "--sample-share" => plan.sample_share = args.next().ok_or("--sample-share S")?.parse()?,
            "--ssim-slack" => plan.ssim_slack = args.next().ok_or("--ssim-slack D")?.parse()?,
            _ => files.push(PathBuf::from(a)),
        }
    }
    for path in files {
        let bytes = std::fs::read(&path)?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let Sniffed::Image(kind) = sniff(&bytes) else {
            println!("{}", json!({"file": name, "error": "not an image"}));
            continue;
        };
        // Best of `repeat`: the machine is shared, and the minimum is the least disturbed run.
        let mut best = Duration::MAX;
        let mut result = None;
        for _ in 0..repeat.max(1) {
            let t = Instant::now();
            let r = process_image_with(kind, &bytes, &limits, &plan);
            best = best.min(t.elapsed());
            result = Some(r);
        }
        match result.ok_or("no run")? {
            Err(reason) => println!("{}", json!({"file": name, "error": format!("{reason:?}")})),
            Ok(img) => {
                if let Some(dir) = &out_dir {
                    std::fs::write(dir.join(format!("{name}.out")), &img.bytes)?;
                    std::fs::write(dir.join(format!("{name}.thumb.webp")), &img.thumbnail)?;
                }
                let w = img.webp;
                println!(
                    "{}",
                    json!({
                        "file": name,
                        "input_bytes": bytes.len(),
                        "bytes": img.bytes.len(),
                        "thumbnail_bytes": img.thumbnail.len(),
                        "content_type": img.content_type,
                        "encoding": encoding(img.encoding),
                        "width": img.width,
                        "height": img.height,
                        "secs": best.as_secs_f64(),
                        "peak_rss_kib": peak_rss_kib(),
                        "webp": {
                            "lossless": w.lossless, "quality": w.quality, "method": w.method,
                            "sharp_yuv": w.sharp_yuv, "sns_strength": w.sns_strength, "segments": w.segments,
                            "filter_strength": w.filter_strength, "filter_sharpness": w.filter_sharpness,
                            "autofilter": w.autofilter, "preprocessing": w.preprocessing,
                        },
                        "ssim_floor": img.ssim.map(|s| s.0),
                        "ssim_kept": img.ssim.map(|s| s.1),
                        "search": img.search.map(|s| json!({"sampled": s.sampled, "probes": s.probes, "retried": s.retried})),
                    })
                );
            }
        }
    }
    Ok(())
}

/// `default`, or `+`-joined changes to the q85 floor's settings, e.g. `sharp+sns=0`.
fn family(spec: &str) -> Result<WebpSettings, String> {
    let mut w = SearchPlan::floor();
    for part in spec.split('+').filter(|p| *p != "default") {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        let n = || value.parse::<i32>().map_err(|e| format!("{part}: {e}"));
        match key {
            "sharp" => w.sharp_yuv = true,
            "sns" => w.sns_strength = n()?,
            "seg" => w.segments = n()?,
            "f" => w.filter_strength = n()?,
            "sharpness" => w.filter_sharpness = n()?,
            "af" => w.autofilter = true,
            "pre" => w.preprocessing = n()?,
            "m" => w.method = n()?,
            _ => return Err(format!("unknown family part {part:?}")),
        }
    }
    Ok(w)
}

fn encoding(e: Encoding) -> &'static str {
    match e {
        Encoding::Lossy => "lossy",
        Encoding::Lossless => "lossless",
        Encoding::Original => "original",
        Encoding::Animated => "animated",
    }
}

/// VmHWM: this process's peak resident set so far (Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string(Path::new("/proc/self/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
