#!/usr/bin/env python3
"""SHA-256 throughput side by side: our code (sha2, as process-upload uses it), sha256sum and
openssl, on the same 512 MiB file (in the page cache), best of 5 runs each. Prints GB/s and ratios.
Run: cargo build --release -p benchmarks --bin sha256-file && python3 benchmarks/compare-hashing.py"""
import os, subprocess, sys, tempfile, time

target = os.environ.get("CARGO_TARGET_DIR", os.path.join(os.path.dirname(__file__), "..", "target"))
ours = os.path.join(target, "release", "sha256-file")
size = 512 << 20
with tempfile.NamedTemporaryFile(delete=False) as f:
    chunk = os.urandom(1 << 20)
    for _ in range(size >> 20):
        f.write(chunk)
    path = f.name
try:
    tools = {"ours (sha2)": [ours, path], "sha256sum": ["sha256sum", path], "openssl dgst": ["openssl", "dgst", "-sha256", path]}
    digests, best = {}, {}
    for name, cmd in tools.items():
        times = []
        for _ in range(5):
            t = time.perf_counter()
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            times.append(time.perf_counter() - t)
        digests[name] = out.split()[-1] if "openssl" in name else out.split()[0]
        best[name] = min(times)
    assert len(set(digests.values())) == 1, digests
    base = best["ours (sha2)"]
    print(f"{'tool':<14} {'GB/s':>6} {'time vs ours':>13}")
    for name, t in best.items():
        print(f"{name:<14} {size / t / 1e9:>6.2f} {t / base:>12.2f}x")
finally:
    os.unlink(path)
