"""What the service costs on AWS, from what it does on the local stack (issue 15, item 4).

    scripts/up --no-demo && ~/.cache/ankicollab-media/venv-tools/bin/python benchmarks/cost-model.py

Measured, not estimated, on the running local stack:
- **Upload**: every file of `corpus/real` is uploaded as a new subscriber's maintainer would (POST
  /v1/uploads, the PUTs, POST /v1/references), processed by the stack's process-upload, and the
  stored records read back. Per file: API requests and their bytes, DynamoDB calls and items read
  and written (counted by moto's meter, `scripts/moto_server.py`), S3 requests (LocalStack's
  request log), bytes stored (original, converted, thumbnail). Conversion time per image is
  process-upload's own code in release (`convert-image`), on this machine.
- **Subscriber**: a 10,000-file deck (`bench-client-10000`, seeded here if it is not there) fetched
  as the client fetches it (POST /v1/downloads page by page, production's 2,000 per page), once
  through a gateway signing S3 URLs and once through one signing CloudFront URLs: requests,
  answer bytes, handler wall time, DynamoDB calls and items. Its items are sized by DynamoDB's
  rules from the tables themselves. The deck's files are small synthetic images, so the GET
  bytes are computed with the corpus's mean stored size after conversion (one GET per file, as
  the client does).

Then priced at AWS list prices (us-east-1, the `PRICES` below, with the date they were read),
free tiers shown separately: one subscriber, a month of one deck with 1,000 subscribers, an
upload of 1,000 corpus-sized files. Prints a Markdown report (and writes JSON with --out).
Standard library plus boto3 (the tools venv)."""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import soak  # noqa: E402  (the soak's HTTP helpers, tokens and image generator)

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

ENV = soak.ENV
MOTO = ENV["AWS_ENDPOINT_URL_DYNAMODB"]
LOCALSTACK_LOG = ROOT / ".local" / "logs" / "localstack.log"
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", pathlib.Path.home() / ".cache/ankicollab-media/target"))
BENCH_TARGET = pathlib.Path(os.environ.get("BENCH_TARGET_DIR", pathlib.Path.home() / ".cache/ankicollab-media/target-bench"))
IMAGES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
KB = 1024
GB = 1 << 30

# AWS list prices, us-east-1, as published on the services' pricing pages (read 2026-12-03; the
# DynamoDB on-demand prices are those after the cut of November 2024). Per unit given.
PRICES = {
    "http_api_per_million": 1.00,  # API Gateway HTTP API, first 300 M a month; metered per 512 KB
    "lambda_arm_gb_s": 0.0000133334,  # Lambda arm64, per GB-second
    "lambda_per_million": 0.20,
    "ddb_rru_per_million": 0.125,  # on-demand read request units
    "ddb_wru_per_million": 0.625,  # on-demand write request units
    "ddb_gb_month": 0.25,
    "s3_gb_month": 0.023,  # S3 Standard, first 50 TB
    "s3_put_per_thousand": 0.005,  # PUT, COPY, POST, LIST
    "s3_get_per_thousand": 0.0004,  # GET, HEAD and the rest
    "s3_egress_gb": 0.09,  # data transfer out to the internet, first 10 TB, after the free 100 GB
    "cf_egress_gb": 0.085,  # CloudFront, North America/Europe, first 10 TB, after the free 1 TB
    "cf_https_per_10k": 0.0100,  # CloudFront HTTPS requests, after the free 10 M
}
FREE = {  # always-free allowances a month
    "egress_gb": 100, "cf_egress_gb": 1024, "cf_requests": 10_000_000, "lambda_requests": 1_000_000,
    "lambda_gb_s": 400_000, "ddb_gb": 25,
}
MEMORY_MB = {"presign-upload": 256, "presign-download": 512, "process-upload": 2048, "references": 512}


# --- what the emulators saw -------------------------------------------------------------------

def meter(reset: bool = False) -> dict[str, dict[str, int]]:
    req = urllib.request.Request(MOTO + "/_meter", method="DELETE" if reset else "GET")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def s3_log_offset() -> int:
    return LOCALSTACK_LOG.stat().st_size


def s3_requests_since(offset: int) -> dict[str, int]:
    """S3 operations LocalStack logged after `offset` (one line per request: `AWS s3.GetObject => 200`)."""
    with LOCALSTACK_LOG.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    counts: dict[str, int] = {}
    for op in re.findall(r"AWS s3\.(\w+) =>", text):
        counts[op] = counts.get(op, 0) + 1
    return counts


# A client the meter does not count (its user agent says so): what this script reads to size
# items and to see that processing finished is not the service's work.
PROBE = boto3.client("dynamodb", endpoint_url=MOTO, region_name=ENV["AWS_REGION"],
                     aws_access_key_id=ENV["AWS_ACCESS_KEY_ID"], aws_secret_access_key=ENV["AWS_SECRET_ACCESS_KEY"],
                     config=Config(user_agent_extra="cost-model-probe"))


def attribute_size(v: dict) -> int:
    """An attribute value's size as DynamoDB bills it (developer guide, "Item sizes")."""
    (kind, x), = v.items()
    if kind == "S":
        return len(x.encode())
    if kind == "N":
        digits = x.lstrip("-").replace(".", "").lstrip("0") or "0"
        return math.ceil(len(digits) / 2) + 1
    if kind == "B":
        return len(x) if isinstance(x, bytes) else len(x.encode())
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in ("SS", "NS", "BS"):
        return sum(attribute_size({kind[0]: e}) for e in x)
    if kind == "L":
        return 3 + sum(1 + attribute_size(e) for e in x)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + attribute_size(e) for k, e in x.items())
    raise ValueError(kind)


def item_size(item: dict) -> int:
    return sum(len(k.encode()) + attribute_size(v) for k, v in item.items())


def media_records(hashes: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for i in range(0, len(hashes), 100):
        keys = [{"hash": {"S": h}} for h in hashes[i:i + 100]]
        while keys:
            r = PROBE.batch_get_item(RequestItems={ENV["MEDIA_TABLE"]: {"Keys": keys}})
            for item in r["Responses"].get(ENV["MEDIA_TABLE"], []):
                out[item["hash"]["S"]] = item
            keys = r.get("UnprocessedKeys", {}).get(ENV["MEDIA_TABLE"], {}).get("Keys", [])
    return out


def deck_items(deck: str) -> list[dict]:
    items: list[dict] = []
    kwargs: dict = {"TableName": ENV["DECK_FILES_TABLE"], "KeyConditionExpression": "deck = :d",
                    "ExpressionAttributeValues": {":d": {"S": deck}}}
    while True:
        r = PROBE.query(**kwargs)
        items += r["Items"]
        if "LastEvaluatedKey" not in r:
            return items
        kwargs["ExclusiveStartKey"] = r["LastEvaluatedKey"]


def deck_hash(item: dict) -> str:
    """The hash a deck index item's name means: of the versions still counted (`c_<hash>` > 0),
    the one added last (`a_<hash>`), as `store::refs::FileVersions` picks it."""
    live = [k[2:] for k, v in item.items() if k.startswith("c_") and int(v["N"]) > 0]
    return max(live, key=lambda h: item.get(f"a_{h}", {}).get("S", ""))


S3 = boto3.client("s3", endpoint_url=ENV["AWS_ENDPOINT_URL_S3"], region_name=ENV["AWS_REGION"],
                  aws_access_key_id=ENV["AWS_ACCESS_KEY_ID"], aws_secret_access_key=ENV["AWS_SECRET_ACCESS_KEY"])


def forget(hashes: list[str]) -> None:
    """Remove every trace of these hashes (records, aliases, objects), as the tests' `forget`
    does, so that the corpus uploads as new on a stack that has seen it."""
    records = media_records(hashes)
    for h in hashes:
        stored = records.get(h, {}).get("stored_hash", {}).get("S")
        for key in {h, stored} - {None}:
            PROBE.delete_item(TableName=ENV["MEDIA_TABLE"], Key={"hash": {"S": key}})
        for key in (f"uploads/{h}", f"media/{h}", f"thumbs/{h}.webp"):
            S3.delete_object(Bucket=ENV["BUCKET"], Key=key)


def table_sizes(table: str) -> list[int]:
    sizes: list[int] = []
    kwargs: dict = {"TableName": table}
    while True:
        r = PROBE.scan(**kwargs)
        sizes += [item_size(i) for i in r["Items"]]
        if "LastEvaluatedKey" not in r:
            return sizes
        kwargs["ExclusiveStartKey"] = r["LastEvaluatedKey"]


def capacity(counts: dict[str, dict[str, int]], sizes: dict[str, float]) -> dict[str, float]:
    """Read and write request units for what the meter counted (`op table [consistency]`), items
    sized by `sizes` (mean bytes per table), by DynamoDB's rules: a Query or Scan pays for the
    bytes it read in 4 KB units per call, a point read 4 KB units per item, a write 1 KB units per
    item; eventually consistent reads half, transactions twice."""
    rru = wru = 0.0
    for key, c in counts.items():
        op, rest = key.split(" ", 1)
        table, _, consistency = rest.partition(" ")
        size = sizes.get(table.split("/")[0], 0.0)
        read = 1.0 if consistency == "strong" else 0.5
        n, k = c.get("items", 0), c.get("calls", 0)
        units4, units1 = max(1, math.ceil(size / (4 * KB))), max(1, math.ceil(size / KB))
        if op in ("Query", "Scan") and k:
            rru += read * k * max(1, math.ceil(n / k * size / (4 * KB)))
        elif op in ("GetItem", "BatchGetItem"):
            rru += read * n * units4
        elif op in ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"):
            wru += n * units1
        elif op == "TransactWriteItems" and table != "*":
            wru += 2 * n * units1
            rru += 2 * c.get("checks", 0) * units4
        elif op == "TransactGetItems" and table != "*":
            rru += 2 * n * units4
    return {"rru": rru, "wru": wru}


def calls(counts: dict[str, dict[str, int]]) -> int:
    return sum(c.get("calls", 0) for c in counts.values())


# --- gateways of this script's own, with production's page size -------------------------------

@contextmanager
def gateway(**overrides: str) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, **ENV, "GATEWAY_ADDR": f"127.0.0.1:{port}", "DOWNLOAD_PAGE_SIZE": "2000",
           # Not the stack's queue: this gateway must not take the stack's upload events.
           "UPLOAD_QUEUE_URL": ENV["UPLOAD_QUEUE_URL"] + "-absent-for-the-cost-model", **overrides}
    proc = subprocess.Popen([str(TARGET / "debug" / "local-gateway"), "serve"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/local/health", timeout=5)
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the upload of the corpus ------------------------------------------------------------------

def wait_settled(hashes: list[str], deadline: float) -> dict[str, dict]:
    while True:
        records = media_records(hashes)
        pending = [h for h in hashes if records.get(h, {}).get("status", {}).get("S") not in ("ready", "rejected")]
        if not pending or time.monotonic() > deadline:
            return records
        # Reading 10,000 records is itself work for moto: look less often the more there are.
        time.sleep(max(0.5, len(hashes) / 2000))


def conversion(paths: list[pathlib.Path]) -> dict[str, dict]:
    """process-upload's image path in release on this machine (one process per image): its time,
    output and thumbnail bytes."""
    subprocess.run(["cargo", "build", "--quiet", "--release", "--workspace", "--bin", "convert-image"],
                   cwd=ROOT, check=True, env={**os.environ, "CARGO_TARGET_DIR": str(BENCH_TARGET)})
    out: dict[str, dict] = {}
    for p in paths:
        r = subprocess.run([str(BENCH_TARGET / "release" / "convert-image"), str(p)], check=True, capture_output=True, text=True)
        out[p.name] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def upload_corpus(corpus: pathlib.Path) -> dict:
    files = {p.name: p.read_bytes() for p in sorted(corpus.iterdir()) if p.is_file()}
    # The corpus's own bytes, forgotten first, so that they upload and process as new.
    deck = f"cost-upload-{int(time.time())}"
    tok_up = soak.token("cost-uploader", "upload")
    tok_refs = soak.token("ankicollab-backend", "references")
    forget([soak.sha(b) for b in files.values()])
    before = meter(reset=True)
    assert not before
    s3_from = s3_log_offset()
    began = time.monotonic()
    walls: dict[str, list[float]] = {"POST /v1/uploads": [], "POST /v1/references": []}
    # The backend records the note first (as AnkiCollab does), then the maintainer's client uploads.
    body = {"deck": deck, "notes": [{"note_id": f"n{i}", "media": [{"filename": f, "hash": soak.sha(b)}]}
                                    for i, (f, b) in enumerate(files.items())]}
    t = time.monotonic()
    soak.api("POST /v1/references", "POST", "/v1/references", tok_refs, body)
    walls["POST /v1/references"].append(time.monotonic() - t)
    t = time.monotonic()
    items = soak.upload(deck, files, tok_up)
    walls["POST /v1/uploads"].append(time.monotonic() - t)  # includes the PUTs
    fresh = [i for i, _ in items if i["status"] == "upload"]
    if len(fresh) != len(files):
        sys.exit(f"{len(files) - len(fresh)} corpus files were not taken as new uploads: {[i for i, _ in items if i['status'] != 'upload']}")
    hashes = [soak.sha(b) for b in files.values()]
    records = wait_settled(hashes, time.monotonic() + 600)
    elapsed = time.monotonic() - began
    time.sleep(2)  # the stream sync's last writes go to Postgres, not DynamoDB; let stragglers land
    counts = meter()
    s3 = s3_requests_since(s3_from)
    rows = []
    for (name, data), h in zip(files.items(), hashes):
        r = records.get(h, {})
        num = lambda k: int(r[k]["N"]) if k in r else 0  # noqa: E731
        rows.append({"file": name, "size": len(data), "status": r.get("status", {}).get("S"),
                     "stored_size": num("stored_size"),
                     "content_type": r.get("content_type", {}).get("S", "")})
    return {"deck": deck, "files": rows, "dynamodb": counts, "s3": s3, "seconds": elapsed, "walls": walls}


# --- the subscriber ----------------------------------------------------------------------------

def seed_deck(deck: str, n: int) -> None:
    """Seed `deck` with `n` small distinct images, named and made as the soak seeds it."""
    have = {i["filename"]["S"] for i in deck_items(deck)}
    tok_up, tok_refs = soak.token("cost-seeder", "upload"), soak.token("ankicollab-backend", "references")
    todo = [i for i in range(n) if f"img{i:05}.png" not in have]
    print(f"seeding {deck}: {len(todo)} of {n} files to upload", file=sys.stderr)
    for k in range(0, len(todo), 100):
        files = {f"img{i:05}.png": soak.png(16, 16, 7_000_000 + i) for i in todo[k:k + 100]}
        soak.api("POST /v1/references", "POST", "/v1/references", tok_refs,
                 {"deck": deck, "notes": [{"note_id": f"n{f[3:8]}", "media": [{"filename": f, "hash": soak.sha(b)}]} for f, b in files.items()]})
        soak.upload(deck, files, tok_up)
    hashes = [deck_hash(i) for i in deck_items(deck)]
    wait_settled(hashes, time.monotonic() + 1800)


def fetch_deck(api_url: str, deck: str) -> dict:
    tok = soak.token("cost-subscriber", "download")
    meter(reset=True)
    s3_from = s3_log_offset()
    pages, cursor, urls, answer_bytes, walls, sizes = 0, None, 0, 0, [], []
    sample = ""
    while True:
        payload: dict = {"deck": deck, **({"cursor": cursor} if cursor else {})}
        req = urllib.request.Request(api_url + "/v1/downloads", data=json.dumps(payload).encode(), method="POST",
                                     headers={"Authorization": "Bearer " + tok, "content-type": "application/json"})
        t = time.monotonic()
        with urllib.request.urlopen(req, timeout=120) as r:
            data = r.read()
        walls.append(time.monotonic() - t)
        body = json.loads(data)
        pages += 1
        answer_bytes += len(data)
        sizes.append(len(data))
        urls += len(body["files"])
        sample = sample or (body["files"][0]["url"] if body["files"] else "")
        cursor = body.get("next_cursor")
        if not cursor:
            break
    return {"requests": pages, "urls": urls, "answer_bytes": answer_bytes, "walls": walls, "answer_sizes": sizes,
            # HTTP APIs meter requests in 512 KB increments.
            "billed_requests": sum(math.ceil(b / (512 * KB)) for b in sizes),
            "dynamodb": meter(), "s3": s3_requests_since(s3_from), "url_bytes": len(sample)}


# --- the report --------------------------------------------------------------------------------

def money(x: float) -> str:
    return f"${x:,.4f}" if x < 1 else f"${x:,.2f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--deck", default="bench-client-10000", help="the subscriber's deck (seeded if short)")
    p.add_argument("--files", type=int, default=10_000)
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--upload-files", type=int, default=1000)
    p.add_argument("--out", help="write the measurements as JSON here")
    args = p.parse_args()
    corpus = pathlib.Path(ENV["CORPUS"]) / "real"

    up = upload_corpus(corpus)
    images = [corpus / r["file"] for r in up["files"] if (corpus / r["file"]).suffix.lower() in IMAGES]
    conv = conversion(images)
    if len(deck_items(args.deck)) < args.files:
        seed_deck(args.deck, args.files)
    hashes = [deck_hash(i) for i in deck_items(args.deck)]
    if len(hashes) < args.files:
        sys.exit(f"{args.deck} holds {len(hashes)} files, not {args.files}")
    key = (ROOT / "shared/testdata/cdn-test-key.pem").read_text()
    with gateway() as s3_api:
        via_s3 = fetch_deck(s3_api, args.deck)
    # A distribution domain as long as CloudFront's; nothing fetches from it.
    with gateway(CDN_URL="https://d111111abcdef8.cloudfront.net", CDN_KEY_PAIR_ID="K2JCJMDEHXQW5F",
                 CDN_PRIVATE_KEY=key) as cdn_api:
        via_cdn = fetch_deck(cdn_api, args.deck)

    sizes = {ENV["MEDIA_TABLE"]: mean([item_size(i) for i in media_records(hashes).values()]),
             ENV["DECK_FILES_TABLE"]: mean([item_size(i) for i in deck_items(args.deck)])}
    for t in (ENV["REFS_TABLE"], ENV["QUOTAS_TABLE"]):
        sizes[t] = mean(table_sizes(t))
    report = build_report(args, up, conv, via_s3, via_cdn, sizes)
    print(report["markdown"])
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps({k: v for k, v in report.items() if k != "markdown"} |
                                                     {"upload": up, "conversion_ms": conv, "via_s3": via_s3,
                                                      "via_cdn": via_cdn, "item_sizes": sizes}, indent=1))
    return 0


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def build_report(args, up: dict, conv: dict[str, dict], via_s3: dict, via_cdn: dict, sizes: dict[str, float]) -> dict:
    n_files = len(up["files"])
    ready = [r for r in up["files"] if r["status"] == "ready"]
    stored_mean = mean([r["stored_size"] for r in ready])
    # Thumbnails are not in the record; convert-image makes the same ones (audio has none).
    thumbs = sum(c.get("thumbnail_bytes", 0) for c in conv.values()) / max(1, len(ready))
    original_mean = mean([r["size"] for r in up["files"]])
    lines = []
    w = lines.append

    # One subscriber.
    sub = {}
    for name, v in (("S3", via_s3), ("CloudFront", via_cdn)):
        cap = capacity(v["dynamodb"], sizes)
        egress_gb = args.files * stored_mean / GB
        api_gb = v["answer_bytes"] / GB
        lambda_gb_s = sum(v["walls"]) * MEMORY_MB["presign-download"] / 1024
        billed_api = v["billed_requests"]
        cost = {
            "API Gateway": billed_api * PRICES["http_api_per_million"] / 1e6,
            "Lambda": v["requests"] * PRICES["lambda_per_million"] / 1e6 + lambda_gb_s * PRICES["lambda_arm_gb_s"],
            "DynamoDB": cap["rru"] * PRICES["ddb_rru_per_million"] / 1e6,
            "answers' egress": api_gb * PRICES["s3_egress_gb"],
        }
        if name == "S3":
            cost["S3 GETs"] = args.files * PRICES["s3_get_per_thousand"] / 1000
            cost["media egress"] = egress_gb * PRICES["s3_egress_gb"]
        else:
            cost["CloudFront requests"] = args.files * PRICES["cf_https_per_10k"] / 10_000
            cost["media egress"] = egress_gb * PRICES["cf_egress_gb"]
            # Each object is fetched from S3 once per edge cache; to the first subscriber, all of them.
            cost["S3 GETs (cache misses, first subscriber)"] = args.files * PRICES["s3_get_per_thousand"] / 1000
        sub[name] = {"cost": cost, "rru": cap["rru"], "egress_gb": egress_gb, "api_gb": api_gb, "lambda_gb_s": lambda_gb_s,
                     "calls": calls(v["dynamodb"]), "billed_api": billed_api}

    w(f"Measured {time.strftime('%Y-%m-%d')} on the local stack. Prices: AWS list prices, us-east-1 (read 2026-12-03), "
      "before free tiers unless a line says otherwise.\n")
    w(f"**Corpus after conversion** ({n_files} files of `corpus/real`, {len(ready)} ready): mean original "
      f"{original_mean / 1000:,.1f} kB, mean stored {stored_mean / 1000:,.1f} kB ({stored_mean / original_mean:.2f}×), "
      f"mean thumbnail {thumbs / 1000:,.1f} kB. Mean DynamoDB item sizes: " +
      ", ".join(f"{t} {s:,.0f} B" for t, s in sizes.items()) + ".\n")
    w(f"**One new subscriber to a {args.files:,}-file deck** (corpus-sized files: {args.files * stored_mean / 1e9:.2f} GB):\n")
    w("| | through S3 (pre-signed GETs) | through CloudFront (one signed policy per answer) |")
    w("| --- | ---: | ---: |")
    w(f"| POST /v1/downloads requests (billed as, per 512 KB) | {via_s3['requests']} ({sub['S3']['billed_api']}) | {via_cdn['requests']} ({sub['CloudFront']['billed_api']}) |")
    w(f"| answer bytes (one URL) | {via_s3['answer_bytes']:,} ({via_s3['url_bytes']} B) | {via_cdn['answer_bytes']:,} ({via_cdn['url_bytes']} B) |")
    w(f"| handler wall time, local debug build (upper bound) | {sum(via_s3['walls']) * 1000:,.0f} ms | {sum(via_cdn['walls']) * 1000:,.0f} ms |")
    w(f"| DynamoDB calls / read request units | {sub['S3']['calls']} / {sub['S3']['rru']:,.1f} | {sub['CloudFront']['calls']} / {sub['CloudFront']['rru']:,.1f} |")
    w(f"| GETs of media | {args.files:,} S3 | {args.files:,} CloudFront |")
    for k in sorted(set(sub["S3"]["cost"]) | set(sub["CloudFront"]["cost"])):
        w(f"| {k} | {money(sub['S3']['cost'].get(k, 0))} | {money(sub['CloudFront']['cost'].get(k, 0))} |")
    tot_s3 = sum(sub["S3"]["cost"].values())
    tot_cf = sum(sub["CloudFront"]["cost"].values())
    w(f"| **total, list price** | **{money(tot_s3)}** | **{money(tot_cf)}** |\n")

    # A month of one deck with N subscribers.
    n = args.subscribers
    month = {}
    for name in ("S3", "CloudFront"):
        s = sub[name]
        egress = n * s["egress_gb"] + n * s["api_gb"]
        lam_req = n * (via_s3 if name == "S3" else via_cdn)["requests"]
        lam_gbs = n * s["lambda_gb_s"]
        c = {
            "API Gateway": n * s["cost"]["API Gateway"],
            "Lambda (free tier: 1 M requests, 400,000 GB-s)": max(0, lam_req - FREE["lambda_requests"]) * PRICES["lambda_per_million"] / 1e6
            + max(0, lam_gbs - FREE["lambda_gb_s"]) * PRICES["lambda_arm_gb_s"],
            "DynamoDB": n * s["cost"]["DynamoDB"],
        }
        if name == "S3":
            c["S3 GETs"] = n * s["cost"]["S3 GETs"]
            c["egress (free: 100 GB)"] = max(0, egress - FREE["egress_gb"]) * PRICES["s3_egress_gb"]
        else:
            reqs = n * args.files
            c["CloudFront requests (free: 10 M)"] = max(0, reqs - FREE["cf_requests"]) * PRICES["cf_https_per_10k"] / 10_000
            media_gb = n * s["egress_gb"]
            c["CloudFront egress (free: 1 TB)"] = max(0, media_gb - FREE["cf_egress_gb"]) * PRICES["cf_egress_gb"]
            c["answers' egress from the API (free: 100 GB)"] = max(0, n * s["api_gb"] - FREE["egress_gb"]) * PRICES["s3_egress_gb"]
            c["S3 GETs (one miss per object and edge; 13 edges assumed)"] = 13 * s["cost"]["S3 GETs (cache misses, first subscriber)"]
        month[name] = c
    storage_gb = args.files * (stored_mean + thumbs) / GB
    w(f"**A month of one {args.files:,}-file deck with {n:,} new subscribers** ({n * args.files * stored_mean / 1e12:.2f} TB of media; "
      f"storage {storage_gb:.2f} GB: {money(storage_gb * PRICES['s3_gb_month'])} a month in S3 Standard):\n")
    w("| | through S3 | through CloudFront |")
    w("| --- | ---: | ---: |")
    for k in list(dict.fromkeys(list(month["S3"]) + list(month["CloudFront"]))):
        w(f"| {k} | {money(month['S3'].get(k, 0))} | {money(month['CloudFront'].get(k, 0))} |")
    w(f"| **total, free tiers applied** | **{money(sum(month['S3'].values()))}** | **{money(sum(month['CloudFront'].values()))}** |\n")

    # An upload of M files like the corpus.
    m = args.upload_files
    cap = capacity(up["dynamodb"], sizes)
    s3_puts = sum(v for k, v in up["s3"].items() if k in ("PutObject", "CopyObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "ListObjectsV2", "ListObjects"))
    s3_other = sum(up["s3"].values()) - s3_puts
    secs = [c["secs"] for c in conv.values() if "secs" in c]
    image_ms = 1000 * mean(secs)
    n_images = len(secs)
    conv_s = sum(secs)
    per = m / n_files
    lam_gbs = per * (conv_s * MEMORY_MB["process-upload"] / 1024)
    # A request carries at most 500 files (uploads) or 100 notes (references; one file a note
    # here); the corpus took one of each, whose local wall times stand for every request.
    up_calls, ref_calls = math.ceil(m / 500), math.ceil(m / 100)
    api_calls = up_calls + ref_calls
    api_gbs = (up_calls * sum(up["walls"]["POST /v1/uploads"]) * MEMORY_MB["presign-upload"]
               + ref_calls * sum(up["walls"]["POST /v1/references"]) * MEMORY_MB["references"]) / 1024
    up_cost = {
        "API Gateway (POST /v1/uploads, /v1/references)": api_calls * PRICES["http_api_per_million"] / 1e6,
        "Lambda: the two API functions (local wall time, upper bound)": api_gbs * PRICES["lambda_arm_gb_s"]
        + api_calls * PRICES["lambda_per_million"] / 1e6,
        "Lambda: process-upload, one invocation per file, conversion CPU at 2 GB": lam_gbs * PRICES["lambda_arm_gb_s"]
        + m * PRICES["lambda_per_million"] / 1e6,
        "DynamoDB writes": per * cap["wru"] * PRICES["ddb_wru_per_million"] / 1e6,
        "DynamoDB reads": per * cap["rru"] * PRICES["ddb_rru_per_million"] / 1e6,
        "S3 PUTs and LISTs": per * s3_puts * PRICES["s3_put_per_thousand"] / 1000,
        "S3 GETs, HEADs, DELETEs": per * s3_other * PRICES["s3_get_per_thousand"] / 1000,
    }
    w(f"**An upload of {m:,} corpus-like files** (measured on the {n_files} files of the corpus, scaled ×{per:.1f}; "
      f"{n_images} images converted in {conv_s:.1f} s of release CPU on this machine, mean {image_ms:.0f} ms):\n")
    w("| | per corpus file (measured) | for " + f"{m:,} files |")
    w("| --- | ---: | ---: |")
    w(f"| DynamoDB calls | {calls(up['dynamodb']) / n_files:.1f} | {calls(up['dynamodb']) * per:,.0f} |")
    w(f"| write / read request units | {cap['wru'] / n_files:.1f} / {cap['rru'] / n_files:.1f} | {cap['wru'] * per:,.0f} / {cap['rru'] * per:,.0f} |")
    w(f"| S3 requests: " + ", ".join(f"{k} {v}" for k, v in sorted(up["s3"].items())) + f" | {sum(up['s3'].values()) / n_files:.1f} | {sum(up['s3'].values()) * per:,.0f} |")
    w(f"| conversion GB-s (2,048 MB) | {conv_s * 2 / n_files:.2f} | {lam_gbs:,.0f} |")
    for k, v in up_cost.items():
        w(f"| {k} | | {money(v)} |")
    w(f"| **total, list price** | | **{money(sum(up_cost.values()))}** |")
    stored = per * (sum(r["stored_size"] for r in ready) + thumbs * len(ready))
    w(f"| stored: originals {per * sum(r['size'] for r in up['files']) / 1e9:.2f} GB → as stored "
      f"{stored / 1e9:.2f} GB (with thumbnails) | | {money(stored / GB * PRICES['s3_gb_month'])} a month |")
    return {"markdown": "\n".join(lines), "subscriber": sub, "month": month, "upload": up_cost}


if __name__ == "__main__":
    sys.exit(main())
