"""The steps of scripts/sam-test (which sets up the environment and runs this with the tools venv).

    sam_test.py reset              delete this test's bucket, tables and queue (before `setup`)
    sam_test.py run SAM-ARGS...    the round trip through `sam local`; SAM-ARGS are the template,
                                   --env-vars, --parameter-overrides… for `sam local invoke`

Every answer is checked; the first one that is wrong stops the run with a line saying what was
expected and what came back.
"""

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import boto3
import requests
from botocore.exceptions import ClientError

ENV = os.environ
DECK = "sam-deck"
NOTE = "1700000000001"
REPO = Path(__file__).resolve().parent.parent


class Failed(Exception):
    pass


def check(ok: bool, what: str, got: object = None) -> None:
    if not ok:
        raise Failed(f"{what}; got: {got!r}"[:2000])


def step(name: str):
    print(f"[{time.strftime('%H:%M:%S')}] sam-test: {name}", file=sys.stderr, flush=True)


def clients():
    kw = dict(region_name=ENV.get("AWS_REGION", "us-east-1"), aws_access_key_id="test", aws_secret_access_key="test")
    s3 = boto3.client("s3", endpoint_url=ENV["AWS_ENDPOINT_URL_S3"], **kw)
    ddb = boto3.client("dynamodb", endpoint_url=ENV["AWS_ENDPOINT_URL_DYNAMODB"], **kw)
    streams = boto3.client("dynamodbstreams", endpoint_url=ENV["AWS_ENDPOINT_URL_DYNAMODB"], **kw)
    sqs = boto3.client("sqs", endpoint_url=ENV["AWS_ENDPOINT_URL_SQS"], **kw)
    return s3, ddb, streams, sqs


def reset() -> None:
    """Start from nothing: the previous run's resources (a crashed run's too) are deleted."""
    s3, ddb, _, sqs = clients()
    bucket = ENV["BUCKET"]
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=obj["Key"])
        s3.delete_bucket(Bucket=bucket)
    except ClientError as e:
        if e.response["Error"]["Code"] != "NoSuchBucket":
            raise
    for table in (ENV[k] for k in ("MEDIA_TABLE", "DECK_FILES_TABLE", "REFS_TABLE", "QUOTAS_TABLE")):
        try:
            ddb.delete_table(TableName=table)
        except ddb.exceptions.ResourceNotFoundException:
            pass
    try:
        sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=ENV["UPLOAD_QUEUE_NAME"])["QueueUrl"])
    except ClientError:
        pass


def token(scope: str, decks: str = "") -> str:
    out = subprocess.run(
        [ENV["GATEWAY_BIN"], "token", "sam-test", scope, decks], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def api(method: str, path: str, tok: str, body: object = None) -> dict:
    url = ENV["SAM_API_URL"] + path
    started = time.monotonic()
    r = requests.request(method, url, headers={"Authorization": f"Bearer {tok}"}, json=body, timeout=120)
    check(r.status_code == 200, f"{method} {path} through sam local start-api: expected 200", (r.status_code, r.text))
    check(
        r.headers.get("content-type", "").startswith("application/json"),
        f"{method} {path}: expected a JSON answer",
        r.headers.get("content-type"),
    )
    step(f"  {method} {path}: 200 in {time.monotonic() - started:.1f} s")
    return r.json()


def invoke(function: str, event: dict, sam_args: list[str]) -> object:
    """`sam local invoke FUNCTION -e EVENT`; the function's answer, which must not be an error."""
    path = Path(ENV["SAM_DIR"]) / "events" / f"{function}-{int(time.time() * 1000)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(event, indent=2))
    started = time.monotonic()
    p = subprocess.run(
        [ENV["SAM"], "local", "invoke", function, "--event", str(path), *sam_args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    path.with_suffix(".log").write_text(p.stderr)
    log = "\n".join(p.stderr.splitlines()[-30:])
    check(p.returncode == 0, f"sam local invoke {function} exited {p.returncode}; its log:\n{log}\n", p.stdout)
    out = p.stdout.strip()
    try:
        answer = json.loads(out) if out else None
    except json.JSONDecodeError:
        answer = json.loads(out.splitlines()[-1])
    check(
        not (isinstance(answer, dict) and "errorType" in answer),
        f"{function} failed under sam local invoke; its log:\n{log}\n",
        answer,
    )
    step(f"  sam local invoke {function}: ok in {time.monotonic() - started:.1f} s -> {json.dumps(answer)[:300]}")
    return answer


def s3_event(bucket: str, key: str, size: int, etag: str) -> dict:
    """The sample S3 event (events/process-upload.json), for this object."""
    event = json.loads((REPO / "events" / "process-upload.json").read_text())
    rec = event["Records"][0]
    rec["eventTime"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    rec["s3"]["bucket"].update(name=bucket, arn=f"arn:aws:s3:::{bucket}")
    rec["s3"]["object"].update(key=key, size=size, eTag=etag)
    return event


def stream_event(streams, ddb, table: str) -> dict:
    """Every record of TABLE's stream so far, captured from moto, as Lambda delivers a batch."""
    arn = ddb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    records = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        it = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")
        it = it["ShardIterator"]
        while it:
            page = streams.get_records(ShardIterator=it)
            for r in page["Records"]:
                d = r["dynamodb"]
                if isinstance(d.get("ApproximateCreationDateTime"), datetime):
                    d["ApproximateCreationDateTime"] = int(d["ApproximateCreationDateTime"].timestamp())
                records.append({**r, "eventSourceARN": arn})
            it = page.get("NextShardIterator") if page["Records"] else None
    check(bool(records), f"moto's stream of {table} has records")

    def plain(v):  # boto3 gives binary attributes as bytes; the event carries them as base64
        if isinstance(v, bytes):
            return base64.b64encode(v).decode()
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v

    return {"Records": plain(records)}


def psql(sql: str) -> str:
    p = subprocess.run(
        [ENV["PSQL"], "-X", "-tA", "-F", "|", ENV["DATABASE_URL"], "-c", sql], capture_output=True, text=True
    )
    check(p.returncode == 0, f"psql {sql!r}", p.stderr)
    return p.stdout.strip()


def run(sam_args: list[str]) -> None:
    s3, ddb, streams, _ = clients()
    bucket = ENV["BUCKET"]
    corpus = Path(ENV["CORPUS"]) / "real"
    src = corpus / ENV.get("SAM_TEST_FILE", "grace_hopper.jpg")
    data = src.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    filename = src.name
    # A second file is asked for but never uploaded: the sweep must find it (and, within the
    # grace period, leave it).
    unsent = corpus / "text.png"
    unsent_digest = hashlib.sha256(unsent.read_bytes()).hexdigest()
    user = token("upload download")

    step(f"upload {filename} ({len(data)} bytes) through POST /v1/uploads")
    answer = api(
        "POST",
        "/v1/uploads",
        user,
        {
            "deck": DECK,
            "files": [
                {"hash": digest, "size": len(data), "filename": filename},
                {"hash": unsent_digest, "size": unsent.stat().st_size, "filename": unsent.name},
            ],
        },
    )
    files = answer.get("files")
    check(isinstance(files, list) and len(files) == 2, "one answer per file", answer)
    check(files[1].get("status") == "upload", "an upload URL for the second file too", files[1])
    up = files[0]
    check(up.get("hash") == digest and up.get("status") == "upload", "status upload for a new file", up)
    check(
        up.get("method") == "PUT" and up.get("url", "").startswith(ENV["AWS_ENDPOINT_URL_S3"]),
        "a PUT URL on LocalStack",
        up,
    )
    r = requests.put(up["url"], data=data, headers=up["headers"], timeout=60)
    check(r.status_code == 200, "LocalStack accepts the PUT with exactly the returned headers", (r.status_code, r.text))
    key = f"uploads/{digest}"
    head = s3.head_object(Bucket=bucket, Key=key)
    check(head["ContentLength"] == len(data), "the upload is stored", head)

    status = api("GET", f"/v1/media/{digest}", user)
    check(
        status.get("status") == "pending",
        "pending before process-upload runs (nothing else processes this bucket)",
        status,
    )

    step("process-upload: sam local invoke with an S3 event for the object")
    invoke("ProcessUploadFunction", s3_event(bucket, key, len(data), head["ETag"].strip('"')), sam_args)
    status = api("GET", f"/v1/media/{digest}", user)
    check(status.get("status") == "ready", "ready after process-upload", status)
    try:
        s3.head_object(Bucket=bucket, Key=key)
        check(False, "process-upload removes the upload", key)
    except ClientError as e:
        check(e.response["Error"]["Code"] in ("404", "NoSuchKey"), "the upload is gone", e.response["Error"])

    step("references: POST /v1/references")
    refs = api(
        "POST",
        "/v1/references",
        token("references"),
        {"deck": DECK, "notes": [{"note_id": NOTE, "media": [{"filename": filename, "hash": digest}]}]},
    )
    check(refs == {"notes": 1, "added": 1, "removed": 0}, "one note, one reference added", refs)

    step("download: POST /v1/downloads, then GET the URL")
    down = api("POST", "/v1/downloads", user, {"deck": DECK, "filenames": [filename]})
    check(down.get("unavailable") == [] and len(down.get("files", [])) == 1, "the file is available", down)
    f = down["files"][0]
    check(f.get("filename") == filename and f.get("hash") == digest, "the file by name and hash", f)
    got = requests.get(f["url"], timeout=60)
    check(got.status_code == 200, "LocalStack serves the pre-signed GET", (got.status_code, got.text[:300]))
    check(hashlib.sha256(got.content).hexdigest() == f["stored_hash"], "the bytes hash to stored_hash", f)
    check(len(got.content) == f["size"], "size is the stored size", (len(got.content), f))
    check(
        got.headers.get("content-type") == f["content_type"], "Content-Type as listed", got.headers.get("content-type")
    )
    check(f["stored_hash"] != digest or got.content == data, "unconverted bytes are the upload's", f)
    step(f"  {filename}: {len(data)} -> {len(got.content)} bytes, {f['content_type']}, sha256 verified")

    step("compressed answers: POST /v1/downloads asking for gzip, through API Gateway's encoding as SAM emulates it")
    names = [filename] + [f"missing-{i}.png" for i in range(40)]
    r = requests.post(ENV["SAM_API_URL"] + "/v1/downloads", headers={"Authorization": f"Bearer {user}", "Accept-Encoding": "gzip"},
                      json={"deck": DECK, "filenames": names}, timeout=120)
    check(r.status_code == 200, "the gzipped answer", (r.status_code, r.text[:300]))
    check(r.headers.get("content-encoding") == "gzip", "Content-Encoding: gzip", dict(r.headers))
    zipped = r.json()  # requests gunzips it, as the add-on's client does
    check([x["filename"] for x in zipped["files"]] == [filename] and len(zipped["unavailable"]) == 40, "it decodes to the answer", zipped)
    step(f"  {len(r.content)} bytes of JSON, sent gzipped")

    step("maintainers: GET /v1/decks/{deck}/media?q=, then the preview and thumbnail URLs")
    listing = api("GET", f"/v1/decks/{DECK}/media?q={filename[:5]}", token("maintain", DECK))
    check([x.get("filename") for x in listing.get("files", [])] == [filename], "the search finds the file", listing)
    m = listing["files"][0]
    check(m.get("hash") == digest and m.get("notes") == 1, "its hash and note count", m)
    # Images have a thumbnail; audio has none.
    for what in ("url", "thumbnail_url") if f["content_type"].startswith("image/") else ("url",):
        r = requests.get(m[what], timeout=60)
        check(r.status_code == 200 and r.content, f"the {what} is served", (r.status_code, r.text[:300]))

    step("the maintainer page: GET /admin?deck= and a script of it (public routes)")
    page = requests.get(f"{ENV['SAM_API_URL']}/admin?deck={DECK}", timeout=120)
    check(
        page.status_code == 200 and page.headers.get("content-type", "").startswith("text/html"),
        "the page is served as HTML",
        (page.status_code, page.headers.get("content-type"), page.text[:300]),
    )
    check("default-src 'none'" in page.headers.get("content-security-policy", ""), "the page has its CSP", page.headers)
    script = requests.get(f"{ENV['SAM_API_URL']}/admin/app.js", timeout=120)
    check(
        script.status_code == 200 and "javascript" in script.headers.get("content-type", ""),
        "its script is served",
        (script.status_code, script.headers.get("content-type")),
    )

    step("sweep-orphans: sam local invoke with the schedule's event")
    sweep = invoke("SweepOrphansFunction", json.loads((REPO / "events" / "sweep-orphans.json").read_text()), sam_args)
    check(
        isinstance(sweep, dict)
        and sweep.get("scanned") == 1
        and sweep.get("too_recent") == 1
        and sweep.get("deleted") == 0,
        "the sweep finds the unreferenced upload, within its grace period",
        sweep,
    )
    check(requests.get(f["url"], timeout=60).status_code == 200, "the referenced file is still served after the sweep")

    step("sync-postgres: migrate, then the streams' records of both tables, then reconcile")
    check(invoke("SyncPostgresFunction", {"mode": "migrate"}, sam_args) == {"migrated": True}, "migrated")
    for table in (ENV["MEDIA_TABLE"], ENV["DECK_FILES_TABLE"]):
        event = stream_event(streams, ddb, table)
        out = invoke("SyncPostgresFunction", event, sam_args)
        check(out == {"batchItemFailures": []}, f"every record of {table}'s stream applied", out)
    row = psql(
        "SELECT m.hash, m.notes, s.s3_key, s.status, s.reference_count FROM anki.media m "
        f"JOIN anki.stored_media_files s USING (hash) WHERE m.deck_key = '{DECK}' AND m.filename = '{filename}'"
    )
    check(row == f"{digest}|1|media/{digest}|ready|1", "anki.media and stored_media_files describe the file", row)
    step(f"  Postgres: {row}")
    report = invoke("SyncPostgresFunction", {"mode": "reconcile", "fix": False}, sam_args)
    check(
        isinstance(report, dict)
        and report.get("missing") == 0
        and report.get("extra") == 0
        and report.get("differing") == 0,
        "Postgres equals DynamoDB",
        report,
    )


if __name__ == "__main__":
    try:
        if sys.argv[1] == "reset":
            reset()
        else:
            run(sys.argv[2:])
    except Failed as e:
        print(f"sam-test FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception:
        traceback.print_exc()
        print("sam-test FAILED: an unexpected error (above)", file=sys.stderr)
        sys.exit(1)
