#!/usr/bin/env python3
"""The media client against its peers, side by side in one run, on the local stack (`make up`).

Download of a deck of N small distinct images (default 10,000), each way into an empty folder:
  client    ankicollab_media's MediaClient.download (listing included, verified, atomic)
  plugin    today's AnkiCollab plugin's strategy: names asked 500 at a time, 10 downloads at a
            time with 0.25 s pauses, no check (temp file + rename, as it does)
  ceiling   plain parallel GETs of the same pre-signed URLs, as many threads as the client
  boto3     boto3's transfer manager for the same objects, as many threads
then the client again into the full folder (an unchanged deck), and the upload of M new files
(default 1,000): the client against plain parallel PUTs of URLs from the same /v1/uploads calls.
Each variant runs in a child process, so that its peak RSS is its own.

  client/.venv-python benchmarks/compare-client.py [--files N] [--upload-files M] [--workers W]
(with the client's venv: ~/.cache/ankicollab-media/venv-client/bin/python)
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "client"))

import requests  # noqa: E402

from ankicollab_media import MediaClient  # noqa: E402
from tests.stack import Stack, stack_env, tiny_png  # noqa: E402

CACHE = Path(os.environ.get("ANKICOLLAB_CACHE") or Path.home() / ".cache" / "ankicollab-media")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- seeding ---------------------------------------------------------------------------------------


def deck_count(stack: Stack, deck: str) -> int:
    n, cursor = 0, None
    while True:
        page = stack.call("POST", "/v1/downloads", "download", {"deck": deck, "cursor": cursor})
        n += len(page["files"])
        cursor = page["next_cursor"]
        if not cursor:
            return n


def seed(stack: Stack, deck: str, n: int, workers: int) -> None:
    if deck_count(stack, deck) == n:
        log(f"{deck}: already holds {n} ready files")
        return
    src = CACHE / "bench-client" / f"src-{n}"
    src.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        p = src / f"img{i:05}.png"
        if not p.exists():
            p.write_bytes(tiny_png(7_000_000 + i, 16))
    log(f"{deck}: uploading {n} files")
    with MediaClient(stack.api, stack.token("upload"), workers=workers) as c:
        report = c.upload(deck, sorted(src.iterdir()))
    assert not report.failed and not report.rejected, report.summary()
    names = sorted(report.hashes)
    stack.post_references(deck, {f"n{i}": {name: report.hashes[name]} for i, name in enumerate(names)})
    log(f"{deck}: waiting for processing")
    while (have := deck_count(stack, deck)) < n:
        log(f"  {have}/{n} ready")
        time.sleep(5)


def listing(stack: Stack, deck: str) -> list[dict[str, Any]]:
    files, cursor = [], None
    while True:
        page = stack.call("POST", "/v1/downloads", "download", {"deck": deck, "cursor": cursor})
        files += page["files"]
        cursor = page["next_cursor"]
        if not cursor:
            return files


# -- the variants, each in a child process ---------------------------------------------------------


def sessions() -> Any:
    local = threading.local()

    def get() -> requests.Session:
        s = getattr(local, "s", None)
        if s is None:
            s = local.s = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_maxsize=32)
            s.mount("http://", adapter)
        return s

    return get


def child(args: argparse.Namespace) -> dict[str, Any]:
    env = stack_env()
    assert env is not None
    stack = Stack(env)
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if args.child == "client":
        with MediaClient(stack.api, stack.token("download"), workers=args.workers, cache_path=args.cache) as c:
            report = c.download(args.deck, out)
        result = {"files": len(report.downloaded) + len(report.skipped), "downloaded": len(report.downloaded)}
        assert not report.failed, report.failed
    elif args.child == "plugin":
        # The names are what the plugin knows from the notes; it asks for URLs 500 at a time.
        names = [f["filename"] for f in json.loads(Path(args.urls).read_text())]
        get = sessions()
        done = 0
        for start in range(0, len(names), 500):
            body = {"deck": args.deck, "filenames": names[start : start + 500]}
            files = stack.call("POST", "/v1/downloads", "download", body)["files"]
            for b in range(0, len(files), 10):
                batch = files[b : b + 10]

                def fetch(f: dict[str, Any]) -> None:
                    r = get().get(f["url"], stream=True, timeout=30)
                    r.raise_for_status()
                    tmp = out / f"{f['filename']}.tmp.{uuid.uuid4().hex[:8]}"
                    with open(tmp, "wb") as fh:
                        for chunk in r.iter_content(131072):
                            fh.write(chunk)
                    os.replace(tmp, out / f["filename"])

                with cf.ThreadPoolExecutor(10) as ex:
                    list(ex.map(fetch, batch))
                done += len(batch)
                time.sleep(0.25)
        result = {"files": done}
    elif args.child == "ceiling":
        files = json.loads(Path(args.urls).read_text())
        get = sessions()

        def fetch(f: dict[str, Any]) -> int:
            r = get().get(f["url"], timeout=30)
            r.raise_for_status()
            (out / f["filename"]).write_bytes(r.content)
            return len(r.content)

        with cf.ThreadPoolExecutor(args.workers) as ex:
            sizes = list(ex.map(fetch, files))
        result = {"files": len(sizes)}
    elif args.child == "boto3":
        import boto3  # noqa: PLC0415
        from boto3.s3.transfer import TransferConfig  # noqa: PLC0415
        from botocore.config import Config  # noqa: PLC0415

        files = json.loads(Path(args.urls).read_text())
        s3 = boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL_S3"],
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(max_pool_connections=args.workers * 2, s3={"addressing_style": "path"}),
        )
        config = TransferConfig(max_concurrency=args.workers, use_threads=True)
        bucket = env["BUCKET"]

        def fetch(f: dict[str, Any]) -> None:
            key = f["url"].split(f"/{bucket}/", 1)[1].split("?", 1)[0]
            s3.download_file(bucket, key, str(out / f["filename"]), Config=config)

        with cf.ThreadPoolExecutor(args.workers) as ex:
            list(ex.map(fetch, files))
        result = {"files": len(files)}
    elif args.child == "upload-client":
        # Each upload run is its own user: the daily quota (10,000 files) is per user, and the
        # deck's seeding has used it up for the default one.
        token = stack.token("upload", sub=f"bench-{out.name}")
        with MediaClient(stack.api, token, workers=args.workers, cache_path=args.cache) as c:
            report = c.upload(args.deck, sorted(out.iterdir()))
        assert not report.failed and not report.rejected, report.summary()
        result = {"files": len(report.uploaded)}
    elif args.child == "upload-plain":
        paths = sorted(out.iterdir())
        token = stack.token("upload", sub=f"bench-{out.name}")
        get = sessions()
        import hashlib  # noqa: PLC0415

        def ask(batch: list[Path]) -> list[dict[str, Any]]:
            body = {
                "deck": args.deck,
                "files": [
                    {"hash": hashlib.sha256(p.read_bytes()).hexdigest(), "size": p.stat().st_size, "filename": p.name}
                    for p in batch
                ],
            }
            r = get().post(
                stack.api + "/v1/uploads", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=120
            )
            r.raise_for_status()
            return r.json()["files"]

        def put(item_path: tuple[dict[str, Any], Path]) -> None:
            item, p = item_path
            r = get().put(item["url"], data=p.read_bytes(), headers=item["headers"], timeout=30)
            r.raise_for_status()

        n = 0
        with cf.ThreadPoolExecutor(args.workers) as ex:
            for start in range(0, len(paths), 500):
                batch = paths[start : start + 500]
                items = ask(batch)
                todo = [(i, p) for i, p in zip(items, batch) if i["status"] == "upload"]
                list(ex.map(put, todo))
                n += len(todo)
        result = {"files": n}
    else:
        raise SystemExit(f"unknown variant {args.child}")
    result["seconds"] = time.perf_counter() - started
    return result


def run_child(variant: str, args: argparse.Namespace, out: Path, **extra: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", variant, "--dir", str(out), "--workers", str(args.workers)]
    for k, v in extra.items():
        cmd += [f"--{k}", v]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{variant} failed ({proc.returncode})")
    result: dict[str, Any] = json.loads(output)
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    return result


def wait_processed(stack: Stack, deck: str, n: int) -> None:
    while deck_count(stack, deck) < n:
        time.sleep(2)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--files", type=int, default=10_000)
    p.add_argument("--upload-files", type=int, default=1_000)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--skip-plugin", action="store_true", help="leave out the slow plugin strategy")
    p.add_argument("--rounds", type=int, default=3, help="runs of each fast variant (the median counts)")
    p.add_argument("--seed-only", action="store_true", help="upload and process the deck, then stop")
    p.add_argument("--uploads-only", action="store_true", help="only the upload comparison")
    p.add_argument("--child")
    p.add_argument("--dir")
    p.add_argument("--deck")
    p.add_argument("--urls")
    p.add_argument("--cache")
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    env = stack_env()
    if env is None:
        raise SystemExit("the local stack is not up (make up)")
    stack = Stack(env)
    deck = f"bench-client-{args.files}"
    seed(stack, deck, args.files, args.workers)
    if args.seed_only:
        return
    t = time.perf_counter()
    files = [] if args.uploads_only else listing(stack, deck)
    list_seconds = time.perf_counter() - t
    log(f"listing {len(files)} files: {list_seconds:.2f} s")

    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp:
        urls = Path(tmp) / "urls.json"
        urls.write_text(json.dumps(files))
        order = ["ceiling", "client", "boto3"]
        for r in range(0 if args.uploads_only else args.rounds):
            for variant in order if r % 2 == 0 else reversed(order):
                out = Path(tmp) / f"{variant}-{r}"
                cache = str(Path(tmp) / f"cache-{variant}-{r}.sqlite3")
                res = run_child(variant, args, out, deck=deck, urls=str(urls), cache=cache)
                log(f"{variant} round {r + 1}: {res['seconds']:.2f} s, {res['peak_rss_mb']:.0f} MB")
                results.setdefault(variant, []).append(res)
                if variant == "client":
                    again = run_child("client", args, out, deck=deck, cache=cache)
                    log(f"client again (unchanged deck): {again['seconds']:.2f} s")
                    assert again["downloaded"] == 0
                    results.setdefault("client-again", []).append(again)
                shutil.rmtree(out, ignore_errors=True)
        if not args.skip_plugin and not args.uploads_only:
            res = run_child("plugin", args, Path(tmp) / "plugin", deck=deck, urls=str(urls))
            log(f"plugin strategy: {res['seconds']:.2f} s")
            results["plugin"] = [res]

        # Uploads of new files: each run gets its own fresh files; processing settles between runs.
        up_deck = f"bench-up-{uuid.uuid4().hex[:8]}"
        base = int(time.time()) % 1_000_000 * 1000
        for r in range(args.rounds):
            for k, variant in enumerate(["upload-plain", "upload-client"] if r % 2 == 0 else ["upload-client", "upload-plain"]):
                out = Path(tmp) / f"{variant}-{r}"
                out.mkdir()
                seed_at = base + (r * 2 + k) * args.upload_files * 3
                for i in range(args.upload_files):
                    (out / f"u{i:05}.png").write_bytes(tiny_png(seed_at + i, 16))
                res = run_child(variant, args, out, deck=up_deck, cache=str(Path(tmp) / f"upcache-{r}-{k}.sqlite3"))
                assert res["files"] == args.upload_files, res
                log(f"{variant} round {r + 1}: {res['seconds']:.2f} s, {res['peak_rss_mb']:.0f} MB")
                results.setdefault(variant, []).append(res)
                # Let the gateway process what was uploaded before the next run measures.
                time.sleep(1)
                stack_settle(stack)

    def med(name: str, key: str = "seconds") -> float:
        values = sorted(r[key] for r in results[name])
        return values[len(values) // 2]

    checks = []
    if "client" in results:
        ceiling, ours = med("ceiling"), med("client")
        rows = [
            ("client (ours), listing included", ours, med("client", "peak_rss_mb")),
            ("plain parallel GETs (ceiling)", ceiling, med("ceiling", "peak_rss_mb")),
            ("boto3 transfer", med("boto3"), med("boto3", "peak_rss_mb")),
        ]
        if "plugin" in results:
            rows.append(("today's plugin strategy", med("plugin"), med("plugin", "peak_rss_mb")))
        print(f"\nDownload of {args.files} files ({args.workers} workers; median of {args.rounds}; listing alone {list_seconds:.2f} s)")
        print("| variant | seconds | files/s | vs ceiling | peak RSS MB |\n| --- | ---: | ---: | ---: | ---: |")
        for name, secs, rss in rows:
            print(f"| {name} | {secs:.2f} | {args.files / secs:.0f} | {secs / ceiling:.2f}x | {rss:.0f} |")
        print(f"| client again, unchanged deck | {med('client-again'):.2f} | | | {med('client-again', 'peak_rss_mb'):.0f} |")
    up_ours, up_plain = med("upload-client"), med("upload-plain")
    print(f"\nUpload of {args.upload_files} new files (median of {args.rounds})")
    print("| variant | seconds | vs plain | peak RSS MB |\n| --- | ---: | ---: | ---: |")
    print(f"| client (ours) | {up_ours:.2f} | {up_ours / up_plain:.2f}x | {med('upload-client', 'peak_rss_mb'):.0f} |")
    print(f"| plain parallel PUTs | {up_plain:.2f} | 1.00x | {med('upload-plain', 'peak_rss_mb'):.0f} |")
    print("\nTargets")
    checks.append(("upload within 1.25x of plain PUTs", up_ours <= 1.25 * up_plain, f"{up_ours / up_plain:.2f}x"))
    rss = max(r["peak_rss_mb"] for k in ("client", "client-again", "upload-client") for r in results.get(k, []))
    checks.append(("client peak RSS under 100 MB", rss < 100, f"{rss:.0f} MB"))
    if "client" in results:
        checks.append(("download within 1.25x of the ceiling", ours <= 1.25 * ceiling, f"{ours / ceiling:.2f}x"))
        checks.append(("second download under 5 s", med("client-again") < 5, f"{med('client-again'):.2f} s"))
    if "plugin" in results:
        checks.append(("at least 10x faster than the plugin's strategy", med("plugin") >= 10 * ours, f"{med('plugin') / ours:.1f}x"))
    for what, ok, detail in checks:
        print(f"- {'PASS' if ok else 'FAIL'}: {what} {detail}")


def stack_settle(stack: Stack) -> None:
    """Wait until the gateway's upload queue is empty (processing has caught up)."""
    import boto3  # noqa: PLC0415

    sqs = boto3.client(
        "sqs",
        endpoint_url=stack.env["AWS_ENDPOINT_URL_SQS"],
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    quiet = 0
    while quiet < 3:
        a = sqs.get_queue_attributes(
            QueueUrl=stack.env["UPLOAD_QUEUE_URL"],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        busy = int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])
        quiet = quiet + 1 if busy == 0 else 0
        time.sleep(1)


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    main()
