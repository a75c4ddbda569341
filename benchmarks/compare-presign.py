#!/usr/bin/env python3
"""Pre-signing side by side: boto3's generate_presigned_url (timed here) against our signer and
aws-sdk-s3's pre-signer (criterion's estimates from `cargo bench -p benchmarks --bench presign`,
which this script runs). Prints microseconds per URL and ratios.
Run: python3 benchmarks/compare-presign.py   (boto3 from the tools venv: scripts/bootstrap)"""
import json, os, subprocess, sys, time

here = os.path.dirname(os.path.abspath(__file__))
target = os.environ.get("CARGO_TARGET_DIR", os.path.join(here, "..", "target"))
subprocess.run(["cargo", "bench", "-q", "-p", "benchmarks", "--bench", "presign"], check=True, cwd=os.path.join(here, ".."),
               stdout=subprocess.DEVNULL)

import boto3  # noqa: E402

s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="AKIDEXAMPLE",
                  aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", aws_session_token="FQoGZXIvYXdzEXAMPLETOKEN")
params = {"Bucket": "media-bucket", "Key": "uploads/" + "e3" * 32, "ContentLength": 48213,
          "ChecksumSHA256": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="}
for _ in range(200):
    s3.generate_presigned_url("put_object", Params=params, ExpiresIn=900)
n = 3000
t = time.perf_counter()
for _ in range(n):
    s3.generate_presigned_url("put_object", Params=params, ExpiresIn=900)
boto = (time.perf_counter() - t) / n * 1e6

def criterion(name):
    with open(os.path.join(target, "criterion", "presign", name, "new", "estimates.json")) as f:
        return json.load(f)["mean"]["point_estimate"] / 1000

rows = {"ours (PUT)": criterion("ours_put"), "ours (GET)": criterion("ours_get"),
        "aws-sdk-s3 (PUT)": criterion("aws-sdk-s3_put"), "boto3 (PUT)": boto}
base = rows["ours (PUT)"]
print(f"{'signer':<18} {'µs/URL':>8} {'URLs/s/core':>12} {'vs ours':>8}")
for name, us in rows.items():
    print(f"{name:<18} {us:>8.2f} {1e6 / us:>12,.0f} {us / base:>7.1f}x")
