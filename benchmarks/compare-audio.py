#!/usr/bin/env python3
"""Uncompressed audio stored as MP3, side by side with the `lame` command at the same settings.

    python3 benchmarks/compare-audio.py [--repeat 3] [--seconds 60]

Makes the test files the way the pipeline test does (espeak-ng speech at 22.05 kHz mono; with
sox a stereo tone, a stereo "music" of plucked chords over pink noise, and the speech at 44.1 kHz
stereo, as a recorded clip often is), each `--seconds` long, as WAV, FLAC and AIFF. For each, our
encoder (`shared::audio::to_mp3` via the `encode-audio` bin, release build: symphonia decodes,
LAME 3.100 encodes at -V 4, best of --repeat, timed inside the process) and `lame -V 4
--noreplaygain` (the library's defaults: the command computes ReplayGain unless told not to) on
the same WAV or AIFF (lame does not read FLAC), best of --repeat wall time. Prints the bytes
before and after and the seconds of encoding per minute of audio.

It builds the bin with `cargo build --release -p benchmarks --bin encode-audio` in
$CARGO_TARGET_DIR (default ~/.cache/ankicollab-media/target-bench).
"""
import argparse, json, os, pathlib, subprocess, tempfile, time

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPEECH = ("Pronunciation practice. The quick brown fox jumps over the lazy dog. "
          "She sells sea shells by the sea shore. How much wood would a woodchuck chuck. ")


def run(*args: str) -> None:
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_files(d: pathlib.Path, seconds: int) -> list[pathlib.Path]:
    made = []
    run("espeak-ng", "-w", str(d / "short.wav"), SPEECH)
    # speech: the sentences repeated to length (espeak-ng's own format, 22.05 kHz mono 16-bit)
    run("sox", str(d / "short.wav"), str(d / "speech-mono-22k.wav"), "repeat", "40", "trim", "0", str(seconds))
    run("sox", str(d / "speech-mono-22k.wav"), "-r", "44100", "-c", "2", str(d / "speech-stereo-44k.wav"))
    run("sox", "-n", "-r", "44100", "-c", "2", "-b", "16", str(d / "tone-stereo-44k.wav"),
        "synth", str(seconds), "sine", "440", "sine", "660", "gain", "-6")
    notes = ["pluck", "%-5", "pluck", "%-1", "pluck", "%2"]  # a chord, restarted every second
    run("sox", "-n", "-r", "44100", "-c", "2", "-b", "16", str(d / "chord.wav"), "synth", "1", *notes, "gain", "-12")
    run("sox", "-n", "-r", "44100", "-c", "2", "-b", "16", str(d / "noise.wav"), "synth", str(seconds), "pinknoise", "gain", "-30")
    run("sox", str(d / "chord.wav"), str(d / "chords.wav"), "repeat", str(seconds - 1))
    run("sox", "-m", str(d / "chords.wav"), str(d / "noise.wav"), str(d / "music-stereo-44k.wav"), "trim", "0", str(seconds))
    for stem in ["speech-mono-22k", "speech-stereo-44k", "tone-stereo-44k", "music-stereo-44k"]:
        wav = d / f"{stem}.wav"
        for ext in ["flac", "aiff"]:
            run("sox", str(wav), str(d / f"{stem}.{ext}"))
        made += [wav, d / f"{stem}.flac", d / f"{stem}.aiff"]
    return made


def lame_seconds(src: pathlib.Path, out: pathlib.Path, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        run("lame", "--quiet", "-V", "4", "--noreplaygain", str(src), str(out))
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=60)
    args = ap.parse_args()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/ankicollab-media/target-bench"))
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "benchmarks", "--bin", "encode-audio"],
                   check=True, cwd=ROOT, env={**os.environ, "CARGO_TARGET_DIR": target})
    bin_ = pathlib.Path(target) / "release" / "encode-audio"
    version = subprocess.run(["lame", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    with tempfile.TemporaryDirectory() as tmp:
        d = pathlib.Path(tmp)
        files = make_files(d, args.seconds)
        ours = subprocess.run([str(bin_), "--repeat", str(args.repeat), *map(str, files)],
                              check=True, capture_output=True, text=True).stdout
        results = {r["file"]: r for r in map(json.loads, ours.splitlines())}
        print(f"ours: shared::audio::to_mp3 (symphonia + LAME 3.100 -V 4); theirs: {version}, -V 4 --noreplaygain")
        print("| file | seconds | input bytes | ours bytes | ours × | lame bytes | ours s/min | lame s/min | ours ÷ lame |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        totals: dict[str, list[float]] = {}
        for f in files:
            r = results[f.name]
            if "bytes" not in r:
                print(f"| {f.name} | | {r.get('input_bytes', '')} | {r.get('error', 'kept as uploaded')} | | | | | |")
                continue
            minutes = r["duration_ms"] / 60_000
            ours_min = r["seconds"] / minutes
            if f.suffix == ".flac":
                theirs = "", ""
                ratio = ""
            else:
                out = d / "lame.mp3"
                lame_min = lame_seconds(f, out, args.repeat) / minutes
                theirs = f"{out.stat().st_size:,}", f"{lame_min:.3f}"
                ratio = f"{ours_min / lame_min:.2f}"
            print(f"| {f.name} | {r['duration_ms'] / 1000:.1f} | {r['input_bytes']:,} | {r['bytes']:,} | "
                  f"{r['bytes'] / r['input_bytes']:.3f} | {theirs[0]} | {ours_min:.3f} | {theirs[1]} | {ratio} |")
            t = totals.setdefault(f.suffix, [0, 0])
            t[0] += r["input_bytes"]
            t[1] += r["bytes"]
        for ext, (before, after) in totals.items():
            print(f"{ext}: {before:,} → {after:,} bytes ({after / before:.3f}×)")


if __name__ == "__main__":
    main()
