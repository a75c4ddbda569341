"""`make restore HASH=…` (scripts/restore.py) against the local stack's S3 and DynamoDB: objects
deleted as the sweep deletes them come back byte for byte with their headers, the record comes
back from a point-in-time copy, and what cannot be restored says so. Each test uses a versioned
bucket and tables of its own, so the stack's data is never touched. Needs the stack's endpoints
(the environment, or .local/stack.env); skipped without them unless ANKICOLLAB_REQUIRE_STACK is set."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

REPO = Path(__file__).resolve().parents[2]
CACHE_CONTROL = "public, max-age=31536000, immutable"


def stack_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "BUCKET"))}
    path = REPO / ".local" / "stack.env"
    if "AWS_ENDPOINT_URL_S3" not in env and path.is_file():
        for line in path.read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                env.setdefault(k, v)
    if "AWS_ENDPOINT_URL_S3" not in env or "AWS_ENDPOINT_URL_DYNAMODB" not in env:
        if os.environ.get("ANKICOLLAB_REQUIRE_STACK"):
            pytest.fail("no stack endpoints: run scripts/up")
        pytest.skip("no local stack (scripts/up writes .local/stack.env)")
    env.setdefault("AWS_ACCESS_KEY_ID", "test")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    env.setdefault("AWS_REGION", "us-east-1")
    return env


class Place:
    """A versioned bucket and a media table of this test's own, and a point-in-time copy."""

    def __init__(self, env: dict[str, str]) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.env = env
        self.bucket = f"restore-test-{suffix}"
        self.table = f"restore-test-media-{suffix}"
        self.copy = f"restore-test-media-copy-{suffix}"
        session = boto3.session.Session(aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                                        region_name=env["AWS_REGION"])
        self.s3: Any = session.client("s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"],
                                      config=Config(s3={"addressing_style": "path"}))
        self.ddb: Any = session.client("dynamodb", endpoint_url=env["AWS_ENDPOINT_URL_DYNAMODB"])
        self.s3.create_bucket(Bucket=self.bucket)
        self.s3.put_bucket_versioning(Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"})
        for name in (self.table, self.copy):
            self.ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                                  AttributeDefinitions=[{"AttributeName": "hash", "AttributeType": "S"}],
                                  KeySchema=[{"AttributeName": "hash", "KeyType": "HASH"}])

    def close(self) -> None:
        versions = self.s3.list_object_versions(Bucket=self.bucket)
        for v in versions.get("Versions", []) + versions.get("DeleteMarkers", []):
            self.s3.delete_object(Bucket=self.bucket, Key=v["Key"], VersionId=v["VersionId"])
        self.s3.delete_bucket(Bucket=self.bucket)
        for name in (self.table, self.copy):
            self.ddb.delete_table(TableName=name)

    def put(self, key: str, body: bytes, content_type: str) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type,
                           CacheControl=CACHE_CONTROL)

    def get(self, key: str) -> dict[str, Any]:
        result: dict[str, Any] = self.s3.get_object(Bucket=self.bucket, Key=key)
        return result

    def exists(self, key: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.bucket, Key=key)
            return True
        except self.s3.exceptions.ClientError:
            return False

    def versions(self, key: str) -> int:
        return len([v for v in self.s3.list_object_versions(Bucket=self.bucket, Prefix=key).get("Versions", [])
                    if v["Key"] == key])

    def record(self, table: str, hash_: str) -> dict[str, Any] | None:
        item: dict[str, Any] | None = self.ddb.get_item(TableName=table, Key={"hash": {"S": hash_}}).get("Item")
        return item

    def restore(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **self.env, "BUCKET": self.bucket, "MEDIA_TABLE": self.table}
        return subprocess.run([sys.executable, str(REPO / "scripts" / "restore.py"), *args],
                              env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def place() -> Iterator[Place]:
    p = Place(stack_env())
    try:
        yield p
    finally:
        p.close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_swept_image_and_its_thumbnail_come_back_with_their_headers(place: Place) -> None:
    original = b"\x89PNG original upload bytes" * 50
    stored, thumb = b"RIFF....WEBPVP8 stored" * 40, b"RIFF....WEBPVP8 thumb" * 5
    h = sha(original)
    place.put(f"media/{h}", stored, "image/webp")
    place.put(f"thumbs/{h}.webp", thumb, "image/webp")
    # As the sweep deletes: plain deletes, which a versioned bucket turns into delete markers.
    place.s3.delete_object(Bucket=place.bucket, Key=f"media/{h}")
    place.s3.delete_object(Bucket=place.bucket, Key=f"thumbs/{h}.webp")
    assert not place.exists(f"media/{h}")

    run = place.restore(h)
    assert run.returncode == 0, run.stderr
    media, small = place.get(f"media/{h}"), place.get(f"thumbs/{h}.webp")
    assert media["Body"].read() == stored and small["Body"].read() == thumb
    assert media["ContentType"] == "image/webp" and media["CacheControl"] == CACHE_CONTROL
    assert f"media/{h}: restored" in run.stdout and f"thumbs/{h}.webp: restored" in run.stdout
    # No record: it says that the bytes alone serve nothing yet, and how to bring it back.
    assert "record: none" in run.stdout and "--record-from" in run.stdout

    again = place.restore(h)
    assert again.returncode == 0, again.stderr
    assert "present, nothing to restore" in again.stdout
    assert place.versions(f"media/{h}") == 2, "a second restore must not copy again"


def test_the_record_comes_back_from_a_point_in_time_copy_even_by_its_stored_hash(place: Place) -> None:
    original, stored = b"original jpeg" * 100, b"converted webp" * 30
    h, s = sha(original), sha(stored)
    place.put(f"media/{h}", stored, "image/webp")
    place.s3.delete_object(Bucket=place.bucket, Key=f"media/{h}")
    record = {"hash": {"S": h}, "status": {"S": "ready"}, "stored_key": {"S": f"media/{h}"},
              "stored_hash": {"S": s}, "ref_count": {"N": "2"}, "content_type": {"S": "image/webp"}}
    alias = {"hash": {"S": s}, "status": {"S": "ready"}, "alias_of": {"S": h}, "ref_count": {"N": "0"}}
    place.ddb.put_item(TableName=place.copy, Item=record)
    place.ddb.put_item(TableName=place.copy, Item=alias)

    # Asked by the converted bytes' hash (what a client that downloaded the file holds).
    run = place.restore(s, "--record-from", place.copy)
    assert run.returncode == 0, run.stderr
    assert place.get(f"media/{h}")["Body"].read() == stored
    assert place.record(place.table, h) == record and place.record(place.table, s) == alias
    assert "record: ready" in run.stdout and "make reconcile FIX=true" in run.stdout
    assert "no thumbnail to restore" in run.stdout

    # A record that is there already is never overwritten by an older copy.
    place.ddb.update_item(TableName=place.table, Key={"hash": {"S": h}},
                          UpdateExpression="SET ref_count = :n", ExpressionAttributeValues={":n": {"N": "5"}})
    rerun = place.restore(h, "--record-from", place.copy)
    assert rerun.returncode == 0 and "already in" in rerun.stdout
    live = place.record(place.table, h)
    assert live is not None and live["ref_count"] == {"N": "5"}


def test_what_cannot_be_restored_says_so(place: Place) -> None:
    never = sha(b"never uploaded")
    run = place.restore(never)
    assert run.returncode == 1 and "no version to restore from" in run.stderr
    assert not place.exists(f"media/{never}")
    bad = place.restore("not-a-hash")
    assert bad.returncode == 2 and "not a SHA-256" in bad.stderr


def test_the_stacks_bucket_is_versioned_as_the_template_declares() -> None:
    env = stack_env()
    if "BUCKET" not in env:
        pytest.skip("the stack's bucket is not named here")
    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"], region_name=env["AWS_REGION"],
                      aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                      config=Config(s3={"addressing_style": "path"}))
    assert s3.get_bucket_versioning(Bucket=env["BUCKET"]).get("Status") == "Enabled", \
        "local-gateway's setup must enable versioning, as template.yaml does"
