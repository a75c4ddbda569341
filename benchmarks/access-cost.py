"""What revocation and per-user rate limits cost in DynamoDB, counted by moto's meter (issue 36).

    scripts/up --no-demo && ~/.cache/ankicollab-media/venv-tools/bin/python benchmarks/access-cost.py

Through the running local gateway (one instance, as one Lambda instance serves requests): USERS
users each send REQUESTS requests in a row (`GET /v1/media/{hash}`, the cheapest route: it reads
one media item), some users idle between two bursts so their bucket refills and must be
restarted. moto's meter (`scripts/moto_server.py`, `GET /_meter`) counts what the service asked
of the quotas table meanwhile: `UpdateItem` is the buckets, `GetItem` the deny-list. Prints the
writes and reads per request and their price per million requests (AWS list prices, us-east-1,
on-demand, the same as `benchmarks/cost-model.py`'s). Standard library only.
"""
from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import soak  # noqa: E402  (the stack's environment and tokens)

USERS = 20
REQUESTS = 15
WRU_PER_MILLION = 0.625
RRU_PER_MILLION = 0.125


def meter(reset: bool = False) -> dict[str, dict[str, int]]:
    req = urllib.request.Request(soak.ENV["AWS_ENDPOINT_URL_DYNAMODB"] + "/_meter", method="DELETE" if reset else "GET")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def get(tok: str) -> int:
    req = urllib.request.Request(soak.API + "/v1/media/" + "0" * 64, headers={"Authorization": "Bearer " + tok})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def quotas_calls(counts: dict[str, dict[str, int]], operation: str) -> int:
    """Calls of `operation` on the quotas table (the meter keys rows `"GetItem quotas strong"`)."""
    table = soak.ENV["QUOTAS_TABLE"]
    return sum(v.get("calls", 0) for k, v in counts.items() if k.split()[:2] == [operation, table])


def main() -> int:
    run = str(int(time.time()))
    tokens = [soak.token(f"access-cost-{run}-{i}", "download") for i in range(USERS)]
    meter(reset=True)
    statuses: dict[int, int] = {}
    sent = 0
    for round_ in range(2):
        for tok in tokens:
            for _ in range(REQUESTS):
                status = get(tok)
                statuses[status] = statuses.get(status, 0) + 1
                sent += 1
        if round_ == 0:
            # Long enough for a bucket at the stack's rate to refill completely: the second
            # burst restarts each bucket, the write an instance must guess.
            time.sleep(2)
    counts = meter()
    writes, reads = quotas_calls(counts, "UpdateItem"), quotas_calls(counts, "GetItem")
    print(f"{sent} requests from {USERS} users ({statuses}); quotas table: {writes} UpdateItem, {reads} GetItem")
    print(f"writes per request: {writes / sent:.3f}; deny-list reads per request: {reads / sent:.4f}")
    print(f"DynamoDB for the limiter and the deny-list: ${(writes * WRU_PER_MILLION + reads * RRU_PER_MILLION) / sent:.3f} per million requests")
    if not counts:
        print("moto's meter counted nothing: is scripts/moto_server.py serving DynamoDB?", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in counts.items() if k.split()[1:2] == [soak.ENV["QUOTAS_TABLE"]]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
