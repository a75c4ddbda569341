"""Restore a media object (and its thumbnail) from the bucket's previous version.

    make restore HASH=<sha256> [STACK=<stack name>] [RECORD_FROM=<table>]
    restore.py HASH [--stack NAME] [--record-from TABLE]

The bucket is versioned (template.yaml): a swept or deleted object is a delete marker over its
last version for NoncurrentVersionDays. This copies that version back over the marker, for
`media/<hash>` and `thumbs/<hash>.webp` (keys as the media record names them, else as
shared::model::Keys makes them); an object whose current version is there is left alone.

Where: with --stack, the deployed stack's outputs (BucketName, MediaTableName) and the usual AWS
credentials; else BUCKET and MEDIA_TABLE from the environment; else the local stack's
.local/stack.env (its endpoints too).

The media record: when the sweep deleted the file, it deleted its record too, and nothing serves
restored bytes without one. --record-from copies the record (and the alias record of its
converted bytes) from a table restored to a point in time before the deletion
(docs/OPERATIONS.md, "Restore a media object"); then `make reconcile FIX=true` recounts its
references. Without it, the command says what state the record is in and what to do.

Exit status: 0 restored or nothing to restore, 1 nothing to restore from, 2 bad arguments.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from env_file import read_env_file

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Target:
    bucket: str
    table: str | None
    s3: Any
    dynamodb: Any


def clients(env: dict[str, str]) -> tuple[Any, Any]:
    session = boto3.session.Session(
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
        region_name=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
    )
    # Emulators answer on an address, not a bucket's virtual host.
    path_style = Config(s3={"addressing_style": "path"})
    s3 = session.client("s3", endpoint_url=env.get("AWS_ENDPOINT_URL_S3"), config=path_style)
    dynamodb = session.client("dynamodb", endpoint_url=env.get("AWS_ENDPOINT_URL_DYNAMODB"))
    return s3, dynamodb


def resolve(stack: str | None) -> Target:
    if stack:
        s3, dynamodb = clients(dict(os.environ))
        cfn = boto3.session.Session().client("cloudformation")
        outputs = {o["OutputKey"]: o["OutputValue"] for o in cfn.describe_stacks(StackName=stack)["Stacks"][0]["Outputs"]}
        return Target(outputs["BucketName"], outputs["MediaTableName"], s3, dynamodb)
    env = dict(os.environ)
    if "BUCKET" not in env:
        stack_env = REPO / ".local" / "stack.env"
        if not stack_env.is_file():
            raise SystemExit("no --stack, no BUCKET and no .local/stack.env: which bucket?")
        env = {**read_env_file(stack_env), **{k: v for k, v in env.items() if k.startswith("AWS_")}}
    s3, dynamodb = clients(env)
    return Target(env["BUCKET"], env.get("MEDIA_TABLE"), s3, dynamodb)


def restore_key(t: Target, key: str) -> str:
    """Bring back the newest version of `key` that is not a delete marker; say what was done:
    'restored', 'present' (its current version is there) or 'none' (no version to restore)."""
    versions: list[dict[str, Any]] = []
    for page in t.s3.get_paginator("list_object_versions").paginate(Bucket=t.bucket, Prefix=key):
        versions += [v for v in page.get("Versions", []) if v["Key"] == key]
    if any(v["IsLatest"] for v in versions):
        return "present"
    if not versions:
        return "none"
    newest = max(versions, key=lambda v: v["LastModified"])
    # A copy (not removing the marker) keeps the history whole. The headers are set again from
    # the version's own: some S3s refuse a copy onto its own key that changes no metadata.
    head = t.s3.head_object(Bucket=t.bucket, Key=key, VersionId=newest["VersionId"])
    headers = {k: head[k] for k in ("ContentType", "CacheControl", "ContentEncoding", "ContentDisposition",
                                    "ContentLanguage") if head.get(k)}
    t.s3.copy_object(
        Bucket=t.bucket,
        Key=key,
        CopySource={"Bucket": t.bucket, "Key": key, "VersionId": newest["VersionId"]},
        MetadataDirective="REPLACE",
        Metadata=head.get("Metadata", {}),
        **headers,
    )
    print(f"{key}: restored version {newest['VersionId']} of {newest['LastModified']:%Y-%m-%d %H:%M:%S} UTC")
    return "restored"


def get_record(t: Target, table: str, hash_: str) -> dict[str, Any] | None:
    item: dict[str, Any] | None = t.dynamodb.get_item(TableName=table, Key={"hash": {"S": hash_}},
                                                      ConsistentRead=True).get("Item")
    return item


def original_of(t: Target, table: str, hash_: str) -> str:
    """The hash whose objects `hash_` names: itself, or the original it is the stored form of."""
    record = get_record(t, table, hash_)
    if record and "alias_of" in record:
        original: str = record["alias_of"]["S"]
        print(f"{hash_} is the stored form of {original}: restoring that")
        return original
    return hash_


def copy_record(t: Target, source: str, hash_: str) -> list[str]:
    """Copy the record of `hash_` (and the alias of its stored bytes) from `source` into the live
    table where it is absent; the hashes copied."""
    assert t.table
    record = get_record(t, source, hash_)
    if record is None:
        raise SystemExit(f"{source} has no record of {hash_}: restore the table to an earlier time")
    items = [record]
    stored = record.get("stored_hash", {}).get("S")
    if stored and (alias := get_record(t, source, stored)) is not None:
        items.append(alias)
    copied = []
    for item in items:
        try:
            t.dynamodb.put_item(TableName=t.table, Item=item, ConditionExpression="attribute_not_exists(#h)",
                                ExpressionAttributeNames={"#h": "hash"})
            copied.append(item["hash"]["S"])
        except t.dynamodb.exceptions.ConditionalCheckFailedException:
            print(f"record {item['hash']['S']}: already in {t.table}, left as it is")
    return copied


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("hash")
    ap.add_argument("--stack", help="the deployed stack's name (its outputs name the bucket and table)")
    ap.add_argument("--record-from", help="a table restored to a point in time before the deletion")
    args = ap.parse_args()
    hash_ = args.hash.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", hash_):
        print(f"not a SHA-256 in hex: {args.hash!r}", file=sys.stderr)
        return 2
    t = resolve(args.stack)

    if args.record_from:
        if not t.table:
            raise SystemExit("--record-from needs the media table (MEDIA_TABLE or --stack)")
        hash_ = original_of(t, args.record_from, hash_)
        for h in copy_record(t, args.record_from, hash_):
            print(f"record {h}: copied from {args.record_from}")
    if t.table:
        hash_ = original_of(t, t.table, hash_)
    record = get_record(t, t.table, hash_) if t.table else None

    media_key = record.get("stored_key", {}).get("S") if record else None
    thumb_key = record.get("thumb_key", {}).get("S") if record else None
    media = restore_key(t, media_key or f"media/{hash_}")
    thumb = restore_key(t, thumb_key or f"thumbs/{hash_}.webp")
    if media == "none":
        print(f"media/{hash_}: no version to restore from (never stored here, or deleted more than "
              "NoncurrentVersionDays ago)", file=sys.stderr)
        return 1
    if media == "present":
        print(f"{media_key or f'media/{hash_}'}: present, nothing to restore")
    if thumb == "none":
        print("no thumbnail to restore (audio has none)")

    status = record.get("status", {}).get("S") if record else None
    if status == "ready":
        print("record: ready. Next: `make reconcile FIX=true` (on AWS, sweep-orphans with "
              '{"mode": "reconcile", "fix": true}) checks its reference count.')
    elif record is None:
        print("record: none (the sweep deletes the record with the bytes): nothing serves these bytes yet. "
              "Bring the record back with --record-from <a point-in-time copy of the table> "
              "(docs/OPERATIONS.md, \"Restore a media object\"), or let the next upload of the file "
              "store it again.")
    else:
        print(f"record: {status}. A reference or upload takes a `deleting` or `missing` record back and "
              "asks for the bytes again; see docs/OPERATIONS.md, \"Restore a media object\".")
    return 0


if __name__ == "__main__":
    sys.exit(main())
