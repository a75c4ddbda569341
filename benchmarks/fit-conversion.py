#!/usr/bin/env python3
"""Fit what `CONVERSION_EFFORT=smallest`'s search plan leaves open (which setting families it
searches, and how large a sample it searches large pictures on) on the *fit* half of the wide
corpus (benchmarks/fetch-wide-corpus.py), so that compare-conversion.py can report on the other
half, which nothing was chosen on.

1. Every candidate family alone, at the service's sample share (--share): per family the bytes
   against `fast` (one q85 encoding, or lossless for graphics when smaller) and the time.
2. Families chosen greedily among those that keep the set within --max-time of cwebp's single q85
   encode of the same pictures (the time target's unit, measured in the same run) on --confidence
   of bootstrap resamples of the fit half's pictures: a set must meet the target on a half it has
   not seen, not only on average over the one it was chosen on. Among those, the one that saves
   most (or the cheapest of those within --min-gain of it), then the one that adds most to it,
   while the addition saves at least --min-gain of the bytes. A plan searching several families keeps,
   per picture, the smallest passing encoding of any, so a set's bytes are the per-picture minimum.
3. The chosen families at each --shares sample share: bytes, how often the whole-picture check
   undid the sample's pick, and time per Mpx against `fast`'s.
4. The frontier: the chosen families at --share with the SSIM bar lowered by
   each of --slacks, to show what more bytes would cost in score (the service's slack is 0).

`--plan F,F` skips steps 1 and 2 and takes those families (to report on the holdout half with
what the fit half chose, or to trace a plan's frontier).

Run (after fetch-wide-corpus.py):
  ~/.cache/ankicollab-media/venv-bench/bin/python benchmarks/fit-conversion.py \\
      --corpus ~/.cache/ankicollab-media/wide-corpus/fit
It builds the `convert-image` bin in $CARGO_TARGET_DIR (default ~/.cache/ankicollab-media/target-bench)."""
import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
CANDIDATES = [
    "default", "sharp", "sns=0", "sharp+sns=0", "sharp+sns=25", "af", "sharp+af", "sharp+af+sns=0",
    "sharp+af+sns=25", "f=30", "f=90", "sharp+f=90", "seg=1", "sns=100+seg=3+sharpness=7+pre=1",
    "m=6", "sharp+m=6", "sharp+af+m=6",
]


def build() -> str:
    target = os.environ.setdefault("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/ankicollab-media/target-bench"))
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "benchmarks", "--bin", "convert-image"], cwd=ROOT, check=True)
    return os.path.join(target, "release", "convert-image")


def run(binary: str, path: str, args: list[str], repeat: int) -> dict:
    out = subprocess.run([binary, "--repeat", str(repeat), *args, path], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def sweep(binary: str, files: list[str], args: list[str], repeat: int, jobs: int) -> dict[str, dict]:
    with ThreadPoolExecutor(jobs) as pool:
        rows = list(pool.map(lambda f: run(binary, f, args, repeat), files))
    return {os.path.basename(f): r for f, r in zip(files, rows)}


def cwebp_q85(files: list[str], repeat: int, jobs: int) -> dict[str, float]:
    """Seconds of cwebp's own read + encode at -q 85 -m 4 over the pictures, best of `repeat` each
    (cwebp reads no GIF or BMP: those are handed to it as PNG, untimed)."""
    timing = re.compile(r"Time to (?:read input|encode picture): ([0-9.]+)s")

    def one(path: str, tmp: str) -> float:
        src = path
        if os.path.splitext(path)[1].lower() in (".gif", ".bmp"):
            src = os.path.join(tmp, os.path.basename(path) + ".png")
            Image.open(path).save(src)
        best = float("inf")
        for _ in range(max(1, repeat)):
            err = subprocess.run(["cwebp", "-v", "-q", "85", "-m", "4", src, "-o", os.devnull],
                                 capture_output=True, text=True, check=True).stderr
            best = min(best, sum(float(x) for x in timing.findall(err)))
        return best

    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(jobs) as pool:
        return dict(zip((os.path.basename(f) for f in files), pool.map(lambda f: one(f, tmp), files)))


def resampled(parts: list[tuple[float, float]], confidence: float, rounds: int = 2000) -> float:
    """The `confidence` quantile of sum(ours) / sum(cwebp) over bootstrap resamples of the
    pictures (drawn with replacement, as many as there are; a fixed seed, so runs agree)."""
    rng = random.Random(19)
    ratios = []
    for _ in range(rounds):
        draw = [parts[rng.randrange(len(parts))] for _ in parts]
        ratios.append(sum(a for a, _ in draw) / sum(b for _, b in draw))
    ratios.sort()
    return ratios[min(rounds - 1, int(confidence * rounds))]


def total(rows: dict[str, dict]) -> int:
    return sum(r["bytes"] for r in rows.values())


def secs(rows: dict[str, dict]) -> float:
    return sum(r["secs"] for r in rows.values())


def table(title: str, columns: list[str]) -> None:
    """A Markdown heading and table header; the first column is text, the rest numbers."""
    print(f"\n## {title}\n")
    print("| " + " | ".join(columns) + " |")
    print("| " + " | ".join(["---"] + ["---:"] * (len(columns) - 1)) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=os.path.expanduser("~/.cache/ankicollab-media/wide-corpus/fit"))
    ap.add_argument("--families", default=",".join(CANDIDATES), help="candidate families, comma-separated")
    ap.add_argument("--shares", default="1,0.25,0.125,0.0625", help="sample shares to compare")
    ap.add_argument("--min-gain", type=float, default=0.005, help="least saving (share of bytes) a family must add")
    ap.add_argument("--repeat", type=int, default=1, help="best of N times per picture (step 3)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--plan", help="skip steps 1-2 and use these families")
    ap.add_argument("--share", default="0.125", help="sample share for steps 1, 2 and 4")
    ap.add_argument("--max-time", type=float, default=5.0,
                    help="time budget of the chosen set, as a multiple of cwebp's single q85 encode (the target)")
    ap.add_argument("--confidence", type=float, default=0.95,
                    help="share of bootstrap resamples of the fit half on which the budget must hold")
    ap.add_argument("--slacks", default="0,0.0005,0.001,0.002,0.004", help="SSIM slacks for step 4")
    args = ap.parse_args()

    files = sorted(os.path.join(args.corpus, f) for f in os.listdir(args.corpus)
                   if os.path.splitext(f)[1].lower() in IMAGE_EXTS)
    binary = build()
    fast = sweep(binary, files, ["--effort", "fast"], args.repeat, args.jobs)
    failed = [n for n, r in fast.items() if "error" in r]
    fast = {n: r for n, r in fast.items() if n not in failed}
    files = [f for f in files if os.path.basename(f) not in failed]
    mpx = sum(r["width"] * r["height"] for r in fast.values()) / 1e6
    print(f"{args.corpus}: {len(files)} pictures, {mpx:.1f} Mpx, fast stores {total(fast):,} B" + (f"; not images: {failed}" if failed else ""))
    args.cwebp = cwebp_q85(files, args.repeat, args.jobs)
    args.cwebp_secs = sum(args.cwebp.values())
    print(f"fast's time: {secs(fast) / args.cwebp_secs:.2f}× cwebp's single q85 encode ({secs(fast):.2f} s against {args.cwebp_secs:.2f} s)")

    chosen = args.plan.split(",") if args.plan else choose(binary, files, fast, args)
    if not chosen:
        print("\nno family saves enough on these pictures: nothing to sample or trace")
        return
    shares(binary, files, fast, chosen, args)
    frontier(binary, files, fast, chosen, args)


def choose(binary: str, files: list[str], fast: dict[str, dict], args: argparse.Namespace) -> list[str]:
    base = total(fast)
    fast_secs = secs(fast)
    per_fast = fast_secs / args.cwebp_secs  # fast's time in cwebp q85 encodes
    q = f"{args.confidence:.0%}"
    table(f"1. Each family alone (sample share {args.share})",
          ["family", "bytes", "/ fast", "pictures it shrinks", "time / fast's", "time / cwebp q85's",
           f"time / cwebp q85's, {q} of resamples"])
    alone: dict[str, dict[str, dict]] = {}
    cost: dict[str, float] = {}

    def set_cost(fams: list[str]) -> float:
        """The set's time in cwebp q85 encodes, at the --confidence quantile of resamples: per
        picture, each family adds its own search to the one decode, floor and thumbnail all share."""
        parts = [(fast[n]["secs"] + sum(alone[f][n]["secs"] - fast[n]["secs"] for f in fams), args.cwebp[n])
                 for n in fast]
        return resampled(parts, args.confidence)
    for fam in args.families.split(","):
        rows = sweep(binary, files, ["--effort", "smallest", "--families", fam, "--sample-share", args.share],
                     args.repeat, args.jobs)
        alone[fam] = rows
        cost[fam] = secs(rows) / fast_secs
        shrunk = sum(1 for n, r in rows.items() if r["bytes"] < fast[n]["bytes"])
        print(f"| {fam} | {total(rows):,} | {total(rows) / base:.3f} | {shrunk} | {cost[fam]:.2f}× | "
              f"{cost[fam] * per_fast:.2f}× | {set_cost([fam]):.2f}× |", flush=True)
    oracle = sum(min(alone[f][n]["bytes"] for f in alone) for n in fast)
    print(f"\nthe smallest of all candidates per picture: {oracle / base:.3f} of fast")

    print(f"\n## 2. Greedy choice within {args.max_time}× cwebp's single q85 encode on {q} of resamples\n")
    chosen: list[str] = []
    current = base

    while True:
        trials = {f: sum(min([alone[g][n]["bytes"] for g in chosen + [f]] + [fast[n]["bytes"]]) for n in fast)
                  for f in alone if f not in chosen and set_cost(chosen + [f]) <= args.max_time}
        if not trials:
            print("- no other family fits the time budget")
            break
        # The cheapest of those within --min-gain of the best: more time must buy more bytes.
        least = min(trials.values())
        f, b = min(((g, t) for g, t in trials.items() if t <= least + args.min_gain * base),
                   key=lambda kv: set_cost(chosen + [kv[0]]))
        gain = (current - b) / base
        print(f"- adding {f}: {b / base:.3f} of fast (saves {gain:.3%} more), {set_cost(chosen + [f]):.2f}× cwebp's time "
              f"on {q} of resamples")
        if gain < args.min_gain:
            print(f"  below --min-gain {args.min_gain:.1%}: not added")
            break
        chosen.append(f)
        current = b
    print(f"\nchosen: {','.join(chosen)}")
    return chosen


def shares(binary: str, files: list[str], fast: dict[str, dict], chosen: list[str], args: argparse.Namespace) -> None:
    base = total(fast)
    table("3. Sample shares, with the chosen families",
          ["sample share", "bytes", "/ fast", "time / fast's", "time / cwebp q85's", "pictures sampled",
           "sample's pick undone by the whole-picture check"])
    for share in args.shares.split(","):
        rows = sweep(binary, files, ["--effort", "smallest", "--families", ",".join(chosen), "--sample-share", share],
                     args.repeat, args.jobs)
        sampled = sum(1 for r in rows.values() if (r.get("search") or {}).get("sampled"))
        undone = sum(1 for r in rows.values() if (r.get("search") or {}).get("retried"))
        print(f"| {share} | {total(rows):,} | {total(rows) / base:.3f} | {secs(rows) / secs(fast):.2f}× | "
              f"{secs(rows) / args.cwebp_secs:.2f}× | {sampled} | {undone} |", flush=True)


def frontier(binary: str, files: list[str], fast: dict[str, dict], chosen: list[str], args: argparse.Namespace) -> None:
    base = total(fast)
    table("4. Bytes against score: the SSIM bar lowered",
          ["SSIM slack", "bytes", "/ fast", "mean run-time SSIM, kept − floor", "pictures kept below the floor"])
    for slack in args.slacks.split(","):
        rows = sweep(binary, files, ["--effort", "smallest", "--families", ",".join(chosen),
                                     "--sample-share", args.share, "--ssim-slack", slack],
                     1, args.jobs)
        deltas = [r["ssim_kept"] - r["ssim_floor"] for r in rows.values()
                  if r.get("ssim_floor") is not None and r.get("encoding") == "lossy"]
        below = sum(1 for d in deltas if d < 0)
        mean = sum(deltas) / len(deltas) if deltas else 0.0
        print(f"| {slack} | {total(rows):,} | {total(rows) / base:.3f} | {mean:+.5f} | {below} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
