"""Downloads through CloudFront, with the distribution on: a second gateway signs CloudFront URLs
(one policy per answer), `scripts/cdn_emulator.py` stands in for the distribution, and Python's
`cryptography` checks the signatures independently of the service's signer. The emulator refuses
what CloudFront refuses: an expired URL, another resource, a tampered policy or signature, an
unknown key; and reads only what the bucket policy lets the distribution read."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from stack import ENV, ROOT, free_port, gateway, request, token, wait_until_listening

sys.path.insert(0, str(ROOT / "scripts"))
import cdn_emulator  # noqa: E402 (found through the path above)

KEY_ID = "KTESTCDNKEY001"
OTHER_KEY_ID = "KTESTCDNKEY002"
PRIVATE_PEM = (ROOT / "shared/testdata/cdn-test-key.pem").read_text()
PUBLIC_KEY = serialization.load_pem_public_key((ROOT / "shared/testdata/cdn-test-key.pub.pem").read_bytes())


def cf_b64(b: bytes) -> str:
    return base64.b64encode(b).decode().translate(str.maketrans("+=/", "-_~"))


@pytest.fixture(scope="module")
def other_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[rsa.RSAPrivateKey, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("keys") / "other.pub.pem"
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key, path


@pytest.fixture(scope="module")
def cdn(other_key: tuple[rsa.RSAPrivateKey, Path]) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, **ENV}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts/cdn_emulator.py"), "--port", str(port), "--bucket", ENV["BUCKET"],
         "--key", f"{KEY_ID}={ROOT / 'shared/testdata/cdn-test-key.pub.pem'}", "--key", f"{OTHER_KEY_ID}={other_key[1]}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_listening(url + "/")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def cdn_gateway(cdn: str) -> Iterator[str]:
    yield from gateway(CDN_URL=cdn, CDN_KEY_PAIR_ID=KEY_ID, CDN_PRIVATE_KEY=PRIVATE_PEM)


def png(seed: int) -> bytes:
    """A small PNG no other test uploads."""
    raw = b"".join(b"\x00" + bytes((x * 7 + y * 3 + seed) % 256 for x in range(48 * 3)) for y in range(32))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 48, 32, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def deck() -> tuple[str, list[bytes]]:
    """A deck of two processed images, uploaded and referenced through the stack's own gateway."""
    api = ENV["API_URL"]
    name = "cdn-" + hashlib.sha256(str(time.time_ns()).encode()).hexdigest()[:10]
    files = [png(time.time_ns() % 251 + i) for i in range(2)]
    listing = [{"hash": hashlib.sha256(b).hexdigest(), "size": len(b), "filename": f"f{i}.png"} for i, b in enumerate(files)]
    status, body = request("POST", api + "/v1/uploads", {"deck": name, "files": listing}, {"Authorization": "Bearer " + token("upload")})
    assert status == 200, body
    for item, data in zip(body["files"], files):
        if item["status"] == "upload":
            put = urllib.request.Request(item["url"], data=data, method="PUT", headers=item["headers"])
            assert urllib.request.urlopen(put, timeout=30).status == 200
    notes = [{"note_id": "n1", "media": [{"filename": f["filename"], "hash": f["hash"]} for f in listing]}]
    status, body = request("POST", api + "/v1/references", {"deck": name, "notes": notes},
                           {"Authorization": "Bearer " + token("references", "ankicollab-backend")})
    assert status == 200, body
    for f in listing:
        for _ in range(300):
            status, info = request("GET", api + f"/v1/media/{f['hash']}", headers={"Authorization": "Bearer " + token()})
            if status == 200 and info["status"] != "pending":
                break
            time.sleep(0.2)
        assert info["status"] == "ready", info
    return name, files


def fetch(url: str) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def params(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def with_params(url: str, **changes: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = {**params(url), **changes}
    return urllib.parse.urlunsplit(parts._replace(query="&".join(f"{k}={v}" for k, v in query.items())))


def downloads(cdn_gateway: str, deck: str) -> list[dict]:
    status, body = request("POST", cdn_gateway + "/v1/downloads", {"deck": deck}, {"Authorization": "Bearer " + token("download")})
    assert status == 200, body
    return body["files"]


def test_one_signature_per_answer_verified_independently(cdn: str, cdn_gateway: str, deck: tuple[str, list[bytes]]) -> None:
    files = downloads(cdn_gateway, deck[0])
    assert len(files) == 2
    queries = {urllib.parse.urlsplit(f["url"]).query for f in files}
    assert len(queries) == 1, "every URL of the answer carries the same policy and signature"
    p = params(files[0]["url"])
    assert set(p) == {"Policy", "Signature", "Key-Pair-Id", "Hash-Algorithm"}
    assert (p["Key-Pair-Id"], p["Hash-Algorithm"]) == (KEY_ID, "SHA256")
    policy = cdn_emulator.cf_b64decode(p["Policy"])
    # cryptography, not the service's signer, says whether the signature holds.
    PUBLIC_KEY.verify(cdn_emulator.cf_b64decode(p["Signature"]), policy, padding.PKCS1v15(), hashes.SHA256())
    (statement,) = json.loads(policy)["Statement"]
    assert statement["Resource"] == f"{cdn}/media/*", "downloads grant the media prefix only"
    expires = statement["Condition"]["DateLessThan"]["AWS:EpochTime"]
    assert abs(expires - (time.time() + int(ENV.get("URL_TTL_SECS", "900")))) < 120
    for f in files:
        assert f["url"].startswith(f"{cdn}/media/")
        status, body, headers = fetch(f["url"])
        assert status == 200, body
        assert hashlib.sha256(body).hexdigest() == f["stored_hash"]
        assert "immutable" in headers.get("Cache-Control", "")


def test_what_cloudfront_refuses_is_refused(cdn_gateway: str, deck: tuple[str, list[bytes]], other_key: tuple[rsa.RSAPrivateKey, Path]) -> None:
    url = downloads(cdn_gateway, deck[0])[0]["url"]
    p = params(url)
    keys = cdn_emulator.load_keys([f"{KEY_ID}={ROOT / 'shared/testdata/cdn-test-key.pub.pem'}", f"{OTHER_KEY_ID}={other_key[1]}"])
    cdn_emulator.check(url, keys)  # accepted as it is
    policy = json.loads(cdn_emulator.cf_b64decode(p["Policy"]))
    expires = policy["Statement"][0]["Condition"]["DateLessThan"]["AWS:EpochTime"]
    with pytest.raises(cdn_emulator.Refusal, match="expired"):
        cdn_emulator.check(url, keys, now=expires + 1)

    policy["Statement"][0]["Condition"]["DateLessThan"]["AWS:EpochTime"] = expires + 86400
    longer = cf_b64(json.dumps(policy, separators=(",", ":")).encode())
    signature = bytearray(cdn_emulator.cf_b64decode(p["Signature"]))
    signature[10] ^= 1
    thumb = url.replace("/media/", "/thumbs/", 1).split("?")[0] + ".webp?" + url.split("?")[1]
    refused = {
        "a tampered policy": (with_params(url, Policy=longer), "signature does not match"),
        "a tampered signature": (with_params(url, Signature=cf_b64(bytes(signature))), "signature does not match"),
        "an unknown key": (with_params(url, **{"Key-Pair-Id": "KNOTTRUSTED"}), "unknown Key-Pair-Id"),
        "another trusted key": (with_params(url, **{"Key-Pair-Id": OTHER_KEY_ID}), "signature does not match"),
        "SHA-1 claimed for a SHA-256 signature": (with_params(url, **{"Hash-Algorithm": "SHA1"}), "signature does not match"),
        "another prefix than the policy's": (thumb, "resource does not match"),
        "another host": (url.replace("127.0.0.1", "localhost", 1), "resource does not match"),
        "no signature": (url.replace("&Signature=" + p["Signature"], ""), "missing Signature"),
    }
    for what, (bad, reason) in refused.items():
        with pytest.raises(cdn_emulator.Refusal, match=reason):
            cdn_emulator.check(bad, keys)
        if "localhost" not in bad:
            status, body, _ = fetch(bad)
            assert status == 403, (what, body)
            assert reason.encode() in body, (what, body)


def test_the_distribution_reads_only_media_and_thumbs(cdn: str, deck: tuple[str, list[bytes]]) -> None:
    # A policy for the whole distribution, signed here with the test key: still no uploads/.
    private = serialization.load_pem_private_key(PRIVATE_PEM.encode(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    policy = json.dumps({"Statement": [{"Resource": f"{cdn}/*", "Condition": {"DateLessThan": {"AWS:EpochTime": int(time.time()) + 60}}}]},
                        separators=(",", ":")).encode()
    query = f"Policy={cf_b64(policy)}&Signature={cf_b64(private.sign(policy, padding.PKCS1v15(), hashes.SHA1()))}&Key-Pair-Id={KEY_ID}"
    digest = hashlib.sha256(deck[1][0]).hexdigest()
    status, body, _ = fetch(f"{cdn}/uploads/{digest}?{query}")
    assert status == 403 and b"may not read" in body, body
    status, body, _ = fetch(f"{cdn}/media/{'0' * 64}?{query}")
    assert status == 403, "a key that does not exist is refused as S3 refuses it without ListBucket"
    status, body, _ = fetch(f"{cdn}/media/{digest}?{query}")
    assert status == 200, "SHA-1, the default Hash-Algorithm, is accepted"


def test_maintainer_previews_come_through_the_distribution(cdn: str, cdn_gateway: str, deck: tuple[str, list[bytes]]) -> None:
    name = deck[0]
    status, body = request("GET", cdn_gateway + f"/v1/decks/{name}/media",
                           headers={"Authorization": "Bearer " + token("maintain", "maintainer", [name])})
    assert status == 200, body
    files = body["files"]
    assert files and all(f["url"].startswith(f"{cdn}/media/") for f in files)
    for f in files:
        for key in ("url", "thumbnail_url"):
            if f.get(key):
                status, data, _ = fetch(f[key])
                assert status == 200, (key, data)
    # Two grants, one per prefix the previews need; never the whole distribution.
    with_thumb = next(f for f in files if f.get("thumbnail_url"))
    resources = {key: json.loads(cdn_emulator.cf_b64decode(params(with_thumb[key])["Policy"]))["Statement"][0]["Resource"]
                 for key in ("url", "thumbnail_url")}
    assert resources == {"url": f"{cdn}/media/*", "thumbnail_url": f"{cdn}/thumbs/*"}, resources
    # Neither query string opens anything under the other's prefix, nor uploads/.
    media_query = with_thumb["url"].split("?", 1)[1]
    thumb_query = with_thumb["thumbnail_url"].split("?", 1)[1]
    for crossed in (with_thumb["thumbnail_url"].split("?")[0] + "?" + media_query,
                    with_thumb["url"].split("?")[0] + "?" + thumb_query,
                    f"{cdn}/uploads/{with_thumb['hash']}?{media_query}"):
        status, data, _ = fetch(crossed)
        assert status == 403, (crossed, data)
    # The page may load its previews from the distribution, and from nowhere else.
    with urllib.request.urlopen(cdn_gateway + f"/admin?deck={name}", timeout=30) as r:
        csp = r.headers["Content-Security-Policy"]
    assert f"img-src {cdn};" in csp and f"media-src {cdn};" in csp, csp
