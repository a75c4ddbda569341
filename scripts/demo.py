#!/usr/bin/env python3
"""Show the running local stack at work: upload two corpus files through pre-signed URLs, wait for
processing, then download them through pre-signed GETs. Standard library only."""
import base64, hashlib, hmac, json, os, pathlib, sys, time, urllib.error, urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
env = dict(l.split("=", 1) for l in (ROOT / ".local/stack.env").read_text().splitlines() if "=" in l)
API = env["API_URL"]
CORPUS = pathlib.Path(env.get("CORPUS", ROOT.parent / "shared/corpus"))


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def token(sub, scope):
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps({"sub": sub, "scope": scope, "iat": int(time.time()), "exp": int(time.time()) + 3600, "iss": "ankicollab", "aud": "ankicollab-media"}).encode())
    sig = hmac.new(env["JWT_SECRET"].encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


AUTH = {"Authorization": "Bearer " + token("demo-user", "upload download")}


def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(API + path, data=data, method=method, headers={**AUTH, "content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def main():
    files = [CORPUS / "real/phone-exif-rotated-1.jpg", CORPUS / "real/tts-1-0.mp3"]
    blobs = {f.name: f.read_bytes() for f in files}
    request = {"deck": "demo", "files": [{"hash": hashlib.sha256(b).hexdigest(), "size": len(b), "filename": n} for n, b in blobs.items()]}
    print(f"POST /v1/uploads for {', '.join(blobs)}")
    for item, (name, data) in zip(call("POST", "/v1/uploads", request)["files"], blobs.items()):
        print(f"  {name}: {item['status']}")
        if item["status"] == "upload":
            put = urllib.request.Request(item["url"], data=data, method="PUT", headers=item["headers"])
            with urllib.request.urlopen(put) as r:
                print(f"  PUT to storage: {r.status}")

    # The AnkiCollab backend reports which note uses which files; downloads resolve through that.
    backend = {"Authorization": "Bearer " + token("ankicollab-backend", "references")}
    note = {"deck": "demo", "notes": [{"note_id": "1", "media": [{"filename": n, "hash": hashlib.sha256(b).hexdigest()} for n, b in blobs.items()]}]}
    req = urllib.request.Request(API + "/v1/references", data=json.dumps(note).encode(), method="POST", headers={**backend, "content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        print(f"POST /v1/references: {json.load(r)}")

    for name, data in blobs.items():
        h = hashlib.sha256(data).hexdigest()
        for _ in range(150):
            info = call("GET", f"/v1/media/{h}")
            if info["status"] != "pending":
                break
            time.sleep(0.2)
        print(f"  {name}: {info['status']} {info.get('content_type')} {info.get('size')} -> {info.get('stored_size')} bytes")

    answer = call("POST", "/v1/downloads", {"deck": "demo", "filenames": list(blobs) + ["never-uploaded.png"]})
    for f in answer["files"]:
        with urllib.request.urlopen(f["url"]) as r:
            body = r.read()
            print(f"GET {f['filename']}: {r.status} {r.headers['Content-Type']}, {len(body)} bytes, Cache-Control: {r.headers['Cache-Control']}")
    for u in answer["unavailable"]:
        print(f"unavailable {u['filename']}: {u['reason']}")
    ok = len(answer["files"]) == len(blobs)
    print("the local stack works" if ok else "something is wrong: see .local/logs/")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except urllib.error.HTTPError as e:
        # One plain line, not a traceback: what was asked, what came back, and where to look.
        detail = e.read().decode(errors="replace").strip()[:300]
        print(f"the demo failed: {e.url} answered HTTP {e.code} {detail}"
              f" (see .local/logs/gateway.log; `make up` restarts a gateway that is out of date)", file=sys.stderr)
        sys.exit(1)
    except (urllib.error.URLError, OSError) as e:
        print(f"the demo failed: {e} (is the stack up? `make up`; logs in .local/logs/)", file=sys.stderr)
        sys.exit(1)
