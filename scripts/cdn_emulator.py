#!/usr/bin/env python3
"""A local stand-in for the CloudFront distribution in front of the media bucket.

It refuses what CloudFront refuses for a signed URL, and serves what CloudFront would serve:

- the URL must carry a canned (`Expires`) or custom (`Policy`) policy, a `Signature` and a
  `Key-Pair-Id` of a trusted public key; `Hash-Algorithm` is `SHA1` (the default) or `SHA256`;
- the signature is RSA PKCS #1 v1.5 over the policy (for a canned policy, over the policy the URL
  implies), checked with the public key, with `cryptography`: an implementation independent of
  the service's own signer;
- the policy's one statement must name a resource that matches the URL (`*` any run of
  characters, `?` one) and a `DateLessThan` still in the future (and a `DateGreaterThan`, if any,
  in the past);
- then the object is read from the origin as Origin Access Control would: only under `media/`
  and `thumbs/`, which is all the bucket policy lets the distribution read.

    scripts/cdn_emulator.py --port 4599 --key ID=public.pem [--key ...] --bucket NAME

The origin is S3 at `AWS_ENDPOINT_URL_S3` with the environment's credentials (LocalStack).
"""
from __future__ import annotations

import argparse
import base64
import json
import re
import sys
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

SIGNING_PARAMS = ("Expires", "Policy", "Signature", "Key-Pair-Id", "Hash-Algorithm")
READABLE = ("media/", "thumbs/")


def cf_b64decode(s: str) -> bytes:
    """CloudFront's URL-safe base64: `-` `_` `~` stand for `+` `=` `/`."""
    return base64.b64decode(s.translate(str.maketrans("-_~", "+=/")), validate=True)


def load_keys(pairs: list[str]) -> dict[str, rsa.RSAPublicKey]:
    keys: dict[str, rsa.RSAPublicKey] = {}
    for pair in pairs:
        key_id, _, path = pair.partition("=")
        with open(path, "rb") as f:
            key = serialization.load_pem_public_key(f.read())
        if not isinstance(key, rsa.RSAPublicKey):
            raise SystemExit(f"{path}: not an RSA public key")
        keys[key_id] = key
    return keys


@dataclass
class Refusal(Exception):
    reason: str


def resource_matches(pattern: str, url: str) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, url, flags=re.DOTALL) is not None


def check(url: str, keys: dict[str, rsa.RSAPublicKey], now: float | None = None) -> None:
    """Raise `Refusal` unless CloudFront would accept this signed URL (scheme, host, path, query)."""
    now = time.time() if now is None else now
    parts = urllib.parse.urlsplit(url)
    params = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    one = {k: v[0] for k, v in params.items() if len(v) == 1}
    if any(len(params.get(k, [])) > 1 for k in SIGNING_PARAMS):
        raise Refusal("a signing parameter appears twice")
    key_id = one.get("Key-Pair-Id")
    if not key_id:
        raise Refusal("missing Key-Pair-Id")
    if key_id not in keys:
        raise Refusal("unknown Key-Pair-Id")
    if "Signature" not in one:
        raise Refusal("missing Signature")
    algorithm = {"SHA1": hashes.SHA1(), "SHA256": hashes.SHA256()}.get(one.get("Hash-Algorithm", "SHA1"))
    if algorithm is None:
        raise Refusal("unsupported Hash-Algorithm")
    # The URL as signed: without the signing parameters, the viewer's own query kept in order.
    kept = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k not in SIGNING_PARAMS]
    base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, urllib.parse.urlencode(kept), ""))
    try:
        if "Policy" in one:
            policy_bytes = cf_b64decode(one["Policy"])
        elif "Expires" in one:
            policy_bytes = json.dumps(
                {"Statement": [{"Resource": base, "Condition": {"DateLessThan": {"AWS:EpochTime": int(one["Expires"])}}}]},
                separators=(",", ":")).encode()
        else:
            raise Refusal("missing Policy or Expires")
        signature = cf_b64decode(one["Signature"])
    except (ValueError, base64.binascii.Error) as e:
        raise Refusal(f"malformed parameter: {e}") from e
    try:
        keys[key_id].verify(signature, policy_bytes, padding.PKCS1v15(), algorithm)
    except InvalidSignature as e:
        raise Refusal("signature does not match") from e
    try:
        policy = json.loads(policy_bytes)
        (statement,) = policy["Statement"]
        resource = statement.get("Resource", base)
        condition = statement["Condition"]
        less_than = int(condition["DateLessThan"]["AWS:EpochTime"])
        greater_than = condition.get("DateGreaterThan", {}).get("AWS:EpochTime")
    except (ValueError, KeyError, TypeError) as e:
        raise Refusal(f"malformed policy: {e}") from e
    if not resource_matches(resource, base):
        raise Refusal("resource does not match the URL")
    if now >= less_than:
        raise Refusal("expired")
    if greater_than is not None and now < int(greater_than):
        raise Refusal("not yet valid")


class Handler(BaseHTTPRequestHandler):
    keys: dict[str, rsa.RSAPublicKey] = {}
    bucket = ""
    s3 = None  # a boto3 client, made at start-up

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass

    def refuse(self, status: int, reason: str) -> None:
        body = f"<Error><Code>AccessDenied</Code><Message>{reason}</Message></Error>".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
        self.serve(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self.serve(head=False)

    def serve(self, head: bool) -> None:
        url = f"http://{self.headers.get('Host', '')}{self.path}"
        try:
            check(url, self.keys)
        except Refusal as r:
            return self.refuse(403, r.reason)
        key = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path.lstrip("/"))
        if not key.startswith(READABLE):
            return self.refuse(403, "the distribution may not read this key")
        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=key)
        except self.s3.exceptions.NoSuchKey:
            # Without s3:ListBucket, S3 answers a missing key with 403, and so does CloudFront.
            return self.refuse(403, "no such object")
        body = obj["Body"].read()
        self.send_response(200)
        self.send_header("Content-Type", obj.get("ContentType", "application/octet-stream"))
        if obj.get("CacheControl"):
            self.send_header("Cache-Control", obj["CacheControl"])
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Cache", "Miss from cloudfront-emulator")
        self.end_headers()
        if not head:
            self.wfile.write(body)


def main() -> int:
    import boto3  # only the server needs them; `check` is importable without
    import botocore.config

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=4599)
    parser.add_argument("--key", action="append", default=[], help="ID=public-key.pem, a trusted key (repeatable)")
    parser.add_argument("--bucket", required=True)
    args = parser.parse_args()
    Handler.keys = load_keys(args.key)
    Handler.bucket = args.bucket
    Handler.s3 = boto3.client("s3", config=botocore.config.Config(s3={"addressing_style": "path"}))
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"cdn emulator on http://127.0.0.1:{args.port} for bucket {args.bucket}, keys {sorted(Handler.keys)}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
