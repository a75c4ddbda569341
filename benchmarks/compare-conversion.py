#!/usr/bin/env python3
"""Image conversion side by side over a corpus (default ../shared/corpus/real): our processing path
(shared::convert::process_image: decode → orient → WebP → thumbnail, via the `convert-image`
bin) at each CONVERSION_EFFORT (--efforts, default both: `smallest` searches each image for the
lowest quality of a few setting families that keeps the q85 encoding's SSIM, `fast` makes one q85
encoding), cwebp replaying the exact settings ours chose for that image in that effort (quality,
method, lossless, -sharp_yuv, -sns, -segments, -sharpness, -pre), and Pillow at quality 85 (what today's AnkiCollab plugin does:
`img.save(out, 'WEBP', quality=85)`). It also checks that the SSIM our `smallest` search computed
at run time agrees with scikit-image's.

Per image and in total: time (per image and per megapixel), output bytes, peak RSS, and SSIM of
each output against the original's decoded pixels. One process per image and tool, so peak RSS
(ru_maxrss from wait4) is per image; times are taken inside each process (best of --repeat) so
that interpreter and process start-up are left out:
  ours   process_image on the bytes in memory (decode, orient, encode, thumbnail, strip)
  cwebp  its own -v timings, "read input" (read + decode) + "encode picture"
  Pillow Image.open + save to memory (decode + encode)
SSIM: scikit-image structural_similarity on 8-bit RGB after compositing alpha on white, Gaussian
window σ=1.5, no sample-covariance correction (Wang et al. 2004), channels averaged; animations
are compared frame by frame along their timeline and averaged.

Run (see BENCHMARKS.md):
  python3 -m venv ~/.cache/ankicollab-media/venv-bench
  ~/.cache/ankicollab-media/venv-bench/bin/pip install -r benchmarks/requirements.txt
  ~/.cache/ankicollab-media/venv-bench/bin/python benchmarks/compare-conversion.py
It builds the bin with `cargo build --release -p benchmarks --bin convert-image` in
$CARGO_TARGET_DIR (default ~/.cache/ankicollab-media/target-bench)."""
import argparse, io, json, os, re, shutil, subprocess, sys, tempfile, time

import numpy as np
from PIL import Image, ImageOps, ImageSequence
from skimage.metrics import structural_similarity

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
PILLOW_QUALITY = 85

PILLOW_WORKER = r"""
import io, json, sys, time
from PIL import Image
path, repeat = sys.argv[1], int(sys.argv[2])
best, out = None, None
for _ in range(repeat):
    t = time.perf_counter()
    img = Image.open(path)
    buf = io.BytesIO()
    # save_all keeps animations animated (a bare save would keep the first frame only).
    img.save(buf, "WEBP", quality=%d, save_all=getattr(img, "n_frames", 1) > 1)
    dt = time.perf_counter() - t
    best, out = dt if best is None else min(best, dt), buf.getvalue()
open(sys.argv[3], "wb").write(out)
print(json.dumps({"secs": best, "bytes": len(out)}))
""" % PILLOW_QUALITY


def run_rss(cmd):
    """Run one process; (exit code, stdout, stderr, its peak RSS in KiB). GNU time reports the
    child's ru_maxrss: Linux carries the high-water mark across exec, so forking from this
    (large) Python process directly would report Python's size instead."""
    rss_file = os.path.join(_tmp, "rss")
    p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss_file] + cmd, capture_output=True, text=True)
    with open(rss_file) as f:
        rss = int(f.read().strip().splitlines()[-1] or 0) if p.returncode == 0 else 0
    return p.returncode, p.stdout, p.stderr, rss


_tmp = tempfile.mkdtemp(prefix="compare-conversion-")


def best_of(repeat, cmd, parse):
    """Run cmd `repeat` times; the fastest run's parsed result, with the largest peak RSS."""
    best, rss = None, 0
    for _ in range(repeat):
        rc, out, err, r = run_rss(cmd)
        if rc != 0:
            return {"error": (err.strip().splitlines() or ["exit %d" % rc])[-1]}
        res = parse(out, err)
        rss = max(rss, r)
        if best is None or res["secs"] < best["secs"]:
            best = res
    best["peak_rss_kib"] = rss
    return best


# ---- decoding for SSIM ----------------------------------------------------------------------

def on_white(img):
    """8-bit RGB array, alpha composited on white."""
    if img.mode in ("I;16", "I;16B", "I", "F"):
        img = img.convert("I").point(lambda v: v / 256).convert("L") if img.mode != "F" else img.convert("L")
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))


def frames(path_or_bytes, upright=False):
    """[(start_ms, rgb array)] of a still or animated image, as its decoder composites it."""
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    img = Image.open(src)
    out, t = [], 0
    for frame in ImageSequence.Iterator(img):
        f = ImageOps.exif_transpose(frame) if upright else frame
        out.append((t, on_white(f)))
        t += frame.info.get("duration", 0) or 0
    return out


def float_tiff_frames(path):
    """Floating-point TIFFs, which Pillow cannot open, decoded as ours does (first page, scaled
    by the maximum)."""
    import tifffile
    a = tifffile.imread(path, key=0)
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[-1] not in (3, 4):
        a = np.moveaxis(a, 0, -1)  # planar
    a = np.clip(a / max(1.0, float(a.max())), 0, 1) * 255
    a = np.round(a).astype(np.uint8)
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[a.ndim if a.ndim == 2 else a.shape[-1]]
    return [(0, on_white(Image.fromarray(a, mode)))]


def ssim(ref, out):
    """Mean SSIM along the reference's timeline (one frame for stills); None if shapes differ."""
    scores = []
    for t, r in ref:
        o = [f for s, f in out if s <= t][-1] if out else None
        if o is None or o.shape != r.shape:
            return None
        # The Gaussian window spans 11 pixels; smaller images get the largest odd window that fits.
        side = min(r.shape[:2])
        win = None if side >= 11 else max(3, side - 1 + side % 2)
        scores.append(structural_similarity(
            r, o, channel_axis=2, data_range=255, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, win_size=win))
    return float(np.mean(scores))


# ---- the three converters -------------------------------------------------------------------

def ours(binary, path, outdir, repeat, effort):
    def parse(out, _err):
        return json.loads(out.strip().splitlines()[-1])
    out = os.path.join(outdir, effort)
    os.makedirs(out, exist_ok=True)
    res = best_of(1, [binary, "--repeat", str(repeat), "--out", out, "--effort", effort, path], parse)
    if "error" not in res:
        with open(os.path.join(out, os.path.basename(path) + ".out"), "rb") as f:
            res["data"] = f.read()
    return res


def cwebp_flags(o):
    """cwebp flags for the WebP settings ours used (or tried, when it kept the original)."""
    w = o["webp"]
    flags = ["-m", str(w["method"]), "-q", "%g" % w["quality"]]
    if w["lossless"]:
        return flags + ["-lossless"]
    if w.get("sharp_yuv"):
        flags.append("-sharp_yuv")
    if w.get("autofilter"):
        flags.append("-af")
    for key, flag, default in (("sns_strength", "-sns", 50), ("segments", "-segments", 4),
                               ("filter_strength", "-f", 60), ("filter_sharpness", "-sharpness", 0),
                               ("preprocessing", "-pre", 0)):
        if w.get(key, default) != default:
            flags += [flag, str(w[key])]
    return flags


def cwebp(path, o, outdir, repeat, animated, tag):
    out = os.path.join(outdir, os.path.basename(path) + f".cwebp-{tag}.webp")
    src = path
    ext = os.path.splitext(path)[1].lower()
    w = o.get("webp") or {}
    if animated:
        # cwebp reads no animations; gif2webp (same package, same libwebp) does.
        cmd = ["gif2webp", "-m", str(w.get("method", 4))]
        if not w.get("lossless", True):
            cmd += ["-lossy", "-q", "%g" % w["quality"]]
        cmd += ["-v", src, "-o", out]
        pat = None
    else:
        if ext in (".bmp", ".gif"):
            # cwebp 1.2 reads PNG, JPEG, TIFF and WebP only: hand it the same pixels as PNG
            # (conversion not timed).
            src = os.path.join(outdir, os.path.basename(path) + ".png")
            Image.open(path).save(src)
        cmd = ["cwebp", "-v"] + cwebp_flags(o) + [src, "-o", out]
        pat = re.compile(r"Time to (?:read input|encode picture): ([0-9.]+)s")

    def parse(_out, err):
        if pat is None:
            # gif2webp prints no timings; fall back to wall time measured around it.
            return {"secs": None}
        return {"secs": sum(float(x) for x in pat.findall(err))}

    if pat is None:
        best, rss = None, 0
        for _ in range(repeat):
            t = time.perf_counter()
            rc, _o, err, r = run_rss(cmd)
            dt = time.perf_counter() - t
            if rc != 0:
                return {"error": err.strip().splitlines()[-1]}
            best, rss = dt if best is None else min(best, dt), max(rss, r)
        res = {"secs": best, "peak_rss_kib": rss, "wall": True}
    else:
        res = best_of(repeat, cmd, parse)
    if "error" not in res:
        with open(out, "rb") as f:
            res["data"] = f.read()
        res["bytes"] = len(res["data"])
    return res


def pillow(path, outdir, repeat):
    out = os.path.join(outdir, os.path.basename(path) + ".pillow.webp")
    res = best_of(1, [sys.executable, "-c", PILLOW_WORKER, path, str(repeat), out],
                  lambda o, _e: json.loads(o.strip().splitlines()[-1]))
    if "error" not in res:
        with open(out, "rb") as f:
            res["data"] = f.read()
    return res


# ---- table ----------------------------------------------------------------------------------

def fmt_bytes(n):
    return "—" if n is None else f"{n:,}"


def fmt(v, spec, none="—"):
    return none if v is None else format(v, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=os.path.join(ROOT, "..", "shared", "corpus", "real"))
    ap.add_argument("--repeat", type=int, default=3, help="runs per image and tool; the fastest counts")
    ap.add_argument("--json", help="also write every measurement here")
    ap.add_argument("--efforts", default="smallest,fast", help="CONVERSION_EFFORT values to measure")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--manifest", help="wide-corpus.json: also total by the kind it gives each file")
    ap.add_argument("files", nargs="*", help="only these corpus files")
    args = ap.parse_args()

    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/ankicollab-media/target-bench"))
    if not args.no_build:
        subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "benchmarks", "--bin", "convert-image"],
                       cwd=ROOT, check=True, env={**os.environ, "CARGO_TARGET_DIR": target})
    binary = os.path.join(target, "release", "convert-image")
    for tool in ("cwebp", "gif2webp"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: apt-get install webp")

    efforts = args.efforts.split(",")
    names = args.files or sorted(f for f in os.listdir(args.corpus) if os.path.splitext(f)[1].lower() in IMAGE_EXTS)
    outdir = tempfile.mkdtemp(prefix="conversion-out-", dir=_tmp)
    rows = []
    for name in names:
        path = os.path.join(args.corpus, name)
        try:
            ref_raw = frames(path)
            ref_up = frames(path, upright=True)
        except Exception:
            ref_raw = ref_up = float_tiff_frames(path)
        h, w = ref_up[0][1].shape[:2]
        animated = len(ref_raw) > 1
        row = {"file": name, "input_bytes": os.path.getsize(path), "mpx": w * h / 1e6, "animated": animated}
        runs = []
        for effort in efforts:
            o = ours(binary, path, outdir, args.repeat, effort)
            c = cwebp(path, o, outdir, args.repeat, animated, effort) if "error" not in o else {"error": "ours failed"}
            runs += [(f"ours {effort}", o, ref_up), (f"cwebp {effort}", c, ref_raw)]
        # The time target's yardstick: cwebp's one plain encode, lossy q85 at libwebp's defaults.
        plain = cwebp(path, {"webp": {"lossless": False, "quality": 85, "method": 4}}, outdir, args.repeat, animated, "q85")
        runs.append(("cwebp q85", plain, ref_raw))
        p = pillow(path, outdir, args.repeat)
        for tool, res, ref in runs + [("pillow", p, ref_raw)]:
            if "data" in res:
                try:
                    res["ssim"] = ssim(ref, frames(res.pop("data")))
                except Exception as e:  # an output Pillow cannot read counts as a failure
                    res["ssim"], res["ssim_error"] = None, str(e)
            row[tool] = res
        rows.append(row)
        print(f"  {name}: " + "; ".join(f"{t} {fmt_bytes(row[t].get('bytes'))} B ssim {fmt(row[t].get('ssim'), '.4f')}"
                                        for t, _, _ in runs + [("pillow", p, None)]), file=sys.stderr)

    report(rows, efforts)
    if args.manifest:
        with open(args.manifest) as f:
            kinds = {m["name"]: m["kind"] for pkg in json.load(f)["packages"] for m in pkg["members"]}
        by_kind(rows, efforts, kinds)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    shutil.rmtree(_tmp, ignore_errors=True)


def report(rows, efforts):
    tools = [f"{k} {e}" for e in efforts for k in ("ours", "cwebp")] + ["cwebp q85", "pillow"]
    for effort in efforts:
        ours_t, cwebp_t = f"ours {effort}", f"cwebp {effort}"
        print(f"\n### CONVERSION_EFFORT={effort}\n")
        print("Time and memory (ms: best of runs, inside the process; RSS: peak of the process)\n")
        print("| image | Mpx | ours ms | cwebp ms | Pillow ms | ours ms/Mpx | cwebp ms/Mpx | Pillow ms/Mpx | ours/cwebp | RSS MiB ours / cwebp / Pillow |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        trio = (ours_t, cwebp_t, "pillow")
        for r in rows:
            ms = {t: (r[t]["secs"] * 1e3 if r[t].get("secs") is not None else None) for t in trio}
            per = {t: (ms[t] / r["mpx"] if ms[t] is not None else None) for t in trio}
            ratio = ms[ours_t] / ms[cwebp_t] if ms[ours_t] and ms[cwebp_t] else None
            rss = " / ".join(fmt(r[t].get("peak_rss_kib") and r[t]["peak_rss_kib"] / 1024, ".0f") for t in trio)
            wall = " (wall)" if r[cwebp_t].get("wall") else ""
            print(f"| {r['file']} | {r['mpx']:.2f} | {fmt(ms[ours_t], '.1f')} | {fmt(ms[cwebp_t], '.1f')}{wall} | "
                  f"{fmt(ms['pillow'], '.1f')} | {fmt(per[ours_t], '.1f')} | {fmt(per[cwebp_t], '.1f')} | "
                  f"{fmt(per['pillow'], '.1f')} | {fmt(ratio, '.2f', '')}{'×' if ratio else ''} | {rss} |")

        print("\nBytes and quality (SSIM against the original's pixels; ours is compared upright; "
              "run-time SSIM: our own floor and kept scores, against our decode of the original)\n")
        print("| image | input B | ours | ours B | cwebp B | Pillow q85 B | ours/Pillow | SSIM ours | SSIM cwebp | SSIM Pillow | ours ≥ Pillow | run-time SSIM floor / kept |")
        print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :-: | ---: |")
        for r in rows:
            o, c, p = r[ours_t], r[cwebp_t], r["pillow"]
            ratio = o["bytes"] / p["bytes"] if o.get("bytes") and p.get("bytes") else None
            ok = "" if o.get("ssim") is None or p.get("ssim") is None else ("yes" if o["ssim"] >= p["ssim"] else "**no**")
            print(f"| {r['file']} | {r['input_bytes']:,} | {describe(o)} | {fmt_bytes(o.get('bytes'))} | {fmt_bytes(c.get('bytes'))} | "
                  f"{fmt_bytes(p.get('bytes')) if 'error' not in p else 'fails'} | {fmt(ratio, '.2f')} | "
                  f"{fmt(o.get('ssim'), '.4f')} | {fmt(c.get('ssim'), '.4f')} | {fmt(p.get('ssim'), '.4f')} | {ok} | "
                  f"{fmt(o.get('ssim_floor'), '.4f')} / {fmt(o.get('ssim_kept'), '.4f')} |")

    # Totals over the images every tool converted, so that the sums compare like with like.
    common = [r for r in rows if all(r[t].get("bytes") and r[t].get("secs") is not None for t in tools)]
    skipped = [r["file"] for r in rows if r not in common]
    mpx = sum(r["mpx"] for r in common)
    tot = {t: sum(r[t]["secs"] for r in common) for t in tools}
    by = {t: sum(r[t]["bytes"] for r in common) for t in tools}
    inp = sum(r["input_bytes"] for r in common)
    print(f"\nTotals over {len(common)} images ({mpx:.1f} Mpx)"
          + (f"; not in the totals (a tool failed): {', '.join(skipped)}" if skipped else "") + "\n")
    print("| tool | time s | ms/Mpx | Mpx/s | bytes | bytes vs input | bytes vs Pillow q85 | max RSS MiB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for t in tools:
        rss = max(r[t]["peak_rss_kib"] for r in common) / 1024
        print(f"| {t} | {tot[t]:.2f} | {tot[t] * 1e3 / mpx:.1f} | {mpx / tot[t]:.1f} | {by[t]:,} | {by[t] / inp:.3f} | "
              f"{by[t] / by['pillow']:.3f} | {rss:.0f} |")
    for effort in efforts:
        ours_t, cwebp_t = f"ours {effort}", f"cwebp {effort}"
        worse = [r["file"] for r in common if r[ours_t].get("ssim") is not None and r["pillow"].get("ssim") is not None
                 and r[ours_t]["ssim"] < r["pillow"]["ssim"]]
        larger = [r["file"] for r in rows if r[ours_t].get("bytes", 0) > r["input_bytes"]]
        # Our run-time SSIM against the benchmark's, where both score the same pixels: lossy
        # outputs (every source is decoded as Pillow decodes it, JPEG by libjpeg-turbo).
        same = [r for r in rows if r[ours_t].get("encoding") == "lossy" and r[ours_t].get("ssim_kept") is not None
                and r[ours_t].get("ssim") is not None]
        gap = max((abs(r[ours_t]["ssim_kept"] - r[ours_t]["ssim"]) for r in same), default=None)
        print(f"\nCONVERSION_EFFORT={effort}")
        target = 5.0 if effort == "smallest" else 1.2
        print(f"  time per Mpx, ours / cwebp's one q85 encode:     {tot[ours_t] / tot['cwebp q85']:.2f}×  (target ≤ {target:.2f}×)")
        print(f"  time per Mpx, ours / cwebp at the same settings: {tot[ours_t] / tot[cwebp_t]:.2f}×")
        print(f"  time per Mpx, ours / Pillow q85:                 {tot[ours_t] / tot['pillow']:.2f}×")
        print(f"  bytes, ours / Pillow q85:    {by[ours_t] / by['pillow']:.3f}" + ("  (target ≤ 0.900)" if effort == "smallest" else ""))
        print(f"  images with SSIM below Pillow q85's: {len(worse)}" + (f" ({', '.join(worse)})" if worse else "") + "  (target 0)")
        print(f"  outputs larger than their input: {len(larger)}" + (f" ({', '.join(larger)})" if larger else "") + "  (target 0)")
        if gap is not None:
            print(f"  run-time SSIM against scikit-image's, largest difference over {len(same)} images: {gap:.2e}")


def by_kind(rows, efforts, kinds):
    """Bytes against Pillow q85 per kind of picture, and SSIM wins."""
    print("\n| kind | images | Mpx | " + " | ".join(f"{e}: bytes / Pillow q85 | {e}: time / cwebp q85's | {e}: below Pillow's SSIM"
                                                    for e in efforts) + " |")
    print("| --- | ---: | ---: | " + " | ".join("---: | ---: | ---:" for _ in efforts) + " |")
    for kind in sorted({kinds.get(r["file"], "?") for r in rows}):
        group = [r for r in rows if kinds.get(r["file"], "?") == kind
                 and all(r[t].get("bytes") and r[t].get("secs") is not None
                         for e in efforts for t in (f"ours {e}", "cwebp q85", "pillow"))]
        if not group:
            continue
        cells = []
        for e in efforts:
            o = f"ours {e}"
            cells.append(f"{sum(r[o]['bytes'] for r in group) / sum(r['pillow']['bytes'] for r in group):.3f}")
            cells.append(f"{sum(r[o]['secs'] for r in group) / sum(r['cwebp q85']['secs'] for r in group):.2f}×")
            cells.append(str(sum(1 for r in group if r[o].get("ssim") is not None and r["pillow"].get("ssim") is not None
                                 and r[o]["ssim"] < r["pillow"]["ssim"])))
        print(f"| {kind} | {len(group)} | {sum(r['mpx'] for r in group):.1f} | " + " | ".join(cells) + " |")


def describe(o):
    enc = o.get("encoding", "failed")
    w = o.get("webp")
    if enc != "lossy" or not w:
        return enc
    extra = [k for k, on in (("sharp YUV", w.get("sharp_yuv")),
                             (f"sns {w.get('sns_strength')}", w.get("sns_strength") not in (None, 50)),
                             (f"{w.get('segments')} segments", w.get("segments") not in (None, 4)),
                             (f"filter {w.get('filter_strength')}", w.get("filter_strength") not in (None, 60)),
                             ("autofilter", w.get("autofilter")),
                             (f"sharpness {w.get('filter_sharpness')}", w.get("filter_sharpness") not in (None, 0)),
                             (f"pre {w.get('preprocessing')}", w.get("preprocessing") not in (None, 0)),
                             (f"method {w.get('method')}", w.get("method") not in (None, 4))) if on]
    return f"lossy q{w['quality']:g}" + (f", {', '.join(extra)}" if extra else "")


if __name__ == "__main__":
    main()
