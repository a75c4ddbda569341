#!/usr/bin/env python3
"""Cold start: time from process start to the first event handled, with clients built, against a
minimal local Lambda runtime API (this script). Native release binaries; best and median of 20
starts per function. The event needs no storage call, so what is measured is init (config,
aws-config, SDK clients, signer) plus routing and auth of one request.
Run: cargo build --release -p presign-download -p sweep-orphans && python3 benchmarks/cold-start.py"""
import json, os, statistics, subprocess, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

here = os.path.dirname(os.path.abspath(__file__))
target = os.environ.get("CARGO_TARGET_DIR", os.path.join(here, "..", "target"))
http_event = json.load(open(os.path.join(here, "..", "events", "media-status.json")))
http_event["rawPath"] = "/v1/media/not-a-hash"  # refused after auth, before any storage call
http_event["headers"]["authorization"] = "Bearer x.y.z"
FUNCTIONS = {"presign-download": http_event, "sweep-orphans": {"mode": "unknown"}}

done = threading.Event()
state = {}

class Runtime(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.path.endswith("/invocation/next"):
            if state.get("served"):
                done.wait(5)  # the binary waits for its next event; we are finished with it
            state["served"] = True
            body = json.dumps(state["event"]).encode()
            self.send_response(200)
            self.send_header("Lambda-Runtime-Aws-Request-Id", "req-1")
            self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30000))
            self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:f")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # a binary we already killed

    def do_POST(self):
        # Only an answer to the event counts (not an init error).
        if "/invocation/req-1/" in self.path:  # its response, or the error it returned
            state["handled"] = time.perf_counter()
        else:
            state["failed"] = self.path
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(202)
        self.end_headers()
        done.set()

server = ThreadingHTTPServer(("127.0.0.1", 0), Runtime)
threading.Thread(target=server.serve_forever, daemon=True).start()
env = dict(os.environ, AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{server.server_address[1]}", AWS_LAMBDA_FUNCTION_NAME="f",
           AWS_LAMBDA_FUNCTION_MEMORY_SIZE="512", AWS_LAMBDA_FUNCTION_VERSION="1", AWS_LAMBDA_LOG_STREAM_NAME="s",
           AWS_LAMBDA_LOG_GROUP_NAME="g", AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="AKIDEXAMPLE",
           AWS_SECRET_ACCESS_KEY="secret", AWS_SESSION_TOKEN="token", BUCKET="b", MEDIA_TABLE="m",
           DECK_FILES_TABLE="d", REFS_TABLE="r", JWT_SECRET="k" * 32, RUST_LOG="warn")
print(f"{'function':<18} {'best ms':>8} {'median ms':>10}")
for name, event in FUNCTIONS.items():
    times = []
    for _ in range(20):
        state.clear(); state["event"] = event; done.clear()
        start = time.perf_counter()
        p = subprocess.Popen([os.path.join(target, "release", name)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        done.wait(10)
        assert "handled" in state, f"{name} did not answer: {state.get('failed')}"
        times.append((state["handled"] - start) * 1000)
        p.kill(); p.wait()
    print(f"{name:<18} {min(times):>8.1f} {statistics.median(times):>10.1f}")
server.shutdown()
