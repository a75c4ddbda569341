"""A proxy between the local gateway and one emulator (moto's DynamoDB, LocalStack's S3 and SQS)
that injects the faults AWS services really answer with, at a rate and seed of our choosing:

- before the request reaches the service: throttling (DynamoDB `ThrottlingException`, S3
  `SlowDown`), 500 `InternalServerError`/`InternalError`, 503 `ServiceUnavailable`, and for
  DynamoDB transactions `TransactionCanceledException` with a `TransactionConflict` reason;
- after the service applied it: the answer is lost (a 500 in its place, or the connection
  closed), which is what a timeout after a successful write looks like to a client.

    python3 scripts/fault_proxy.py --listen 127.0.0.1:5150 --target http://127.0.0.1:5050 \
        --kind dynamodb --rate 0.25 --seed 7

`POST /_faults {"rate": 0}` changes the rate while it runs (the chaos check turns faults off
before it looks); `GET /_faults` answers what was injected, by kind.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import random
import threading
import urllib.parse
from typing import Any

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade", "host"}


class State:
    def __init__(self, target: str, kind: str, rate: float, seed: int) -> None:
        parts = urllib.parse.urlsplit(target)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.kind = kind
        self.rate = rate
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.injected: dict[str, int] = {}
        self.requests = 0

    def draw(self) -> float:
        with self.lock:
            self.requests += 1
            return self.random.random()

    def count(self, what: str) -> None:
        with self.lock:
            self.injected[what] = self.injected.get(what, 0) + 1


def dynamodb_error(kind: str, message: str) -> bytes:
    return json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{kind}", "message": message}).encode()


def s3_error(code: str, message: str) -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'.encode()


def make_handler(state: State) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def reply(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def control(self, body: bytes) -> None:
            if self.command == "POST":
                rate = float(json.loads(body or b"{}").get("rate", state.rate))
                with state.lock:
                    state.rate = rate
            with state.lock:
                answer = {"rate": state.rate, "requests": state.requests, "injected": dict(state.injected)}
            self.reply(200, json.dumps(answer).encode(), "application/json")

        def fault_before(self, target: str) -> bool:
            """Answer with a fault instead of forwarding; True if it did."""
            roll = state.draw()
            with state.lock:
                rate = state.rate
            if roll >= rate:
                return False
            pick = roll / rate  # uniform in [0, 1) again
            if state.kind == "dynamodb":
                if "TransactWriteItems" in target and pick < 0.3:
                    state.count("transaction_conflict")
                    body = json.dumps(
                        {
                            "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
                            "message": "Transaction cancelled, please refer cancellation reasons for specific reasons [TransactionConflict]",
                            "CancellationReasons": [{"Code": "TransactionConflict", "Message": "injected"}],
                        }
                    ).encode()
                    self.reply(400, body, "application/x-amz-json-1.0")
                elif pick < 0.6:
                    state.count("throttling")
                    self.reply(400, dynamodb_error("ThrottlingException", "Rate exceeded"), "application/x-amz-json-1.0")
                else:
                    state.count("internal_error")
                    self.reply(500, dynamodb_error("InternalServerError", "injected"), "application/x-amz-json-1.0")
            else:
                if pick < 0.5:
                    state.count("slow_down")
                    self.reply(503, s3_error("SlowDown", "Please reduce your request rate."), "application/xml")
                else:
                    state.count("internal_error")
                    self.reply(500, s3_error("InternalError", "injected"), "application/xml")
            return True

        def forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.path.startswith("/_faults"):
                self.control(body)
                return
            target = self.headers.get("X-Amz-Target", "") + " " + self.command + " " + self.path
            if self.fault_before(target):
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["Host"] = f"{state.host}:{state.port}"
            conn = http.client.HTTPConnection(state.host, state.port, timeout=120)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except OSError as e:
                self.reply(502, str(e).encode(), "text/plain")
                return
            finally:
                conn.close()
            # The service has done it; now and then the client never learns.
            if state.draw() < state.rate * 0.25 and self.command != "GET" and 200 <= resp.status < 300:
                state.count("answer_lost")
                if state.kind == "dynamodb":
                    self.reply(500, dynamodb_error("InternalServerError", "injected after the write"), "application/x-amz-json-1.0")
                else:
                    self.reply(503, s3_error("ServiceUnavailable", "injected after the write"), "application/xml")
                return
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = forward

    return Handler


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--kind", choices=["dynamodb", "s3"], required=True, help="which service's faults (SQS answers as S3 does)")
    p.add_argument("--rate", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    host, port = a.listen.rsplit(":", 1)
    server = http.server.ThreadingHTTPServer((host, int(port)), make_handler(State(a.target, a.kind, a.rate, a.seed)))
    server.daemon_threads = True
    print(f"fault proxy {a.listen} -> {a.target} ({a.kind}, rate {a.rate}, seed {a.seed})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
