#!/usr/bin/env python3
"""Cold start: time from process start to the first event handled, with clients built, against a
minimal local Lambda runtime API (this script). Best and median of --runs starts per binary.

The default event needs no storage call, so what is measured is init (config, aws-config, SDK
clients, signer, JWT key) plus routing and auth of one request. With --tls the event is a sweep
whose first DynamoDB call goes to a local TLS port that reads the ClientHello and hangs up
(AWS_MAX_ATTEMPTS=1, so no retry): that adds the first TLS handshake attempt, where aws-lc draws
its first random bytes (and seeds its DRBG, with CPU jitter entropy if built in).

    cargo build --release -p presign-download -p sweep-orphans && python3 benchmarks/cold-start.py
    python3 benchmarks/cold-start.py --runner "qemu-aarch64-static -L /usr/aarch64-linux-gnu" \\
        presign-download=$T/lambda/presign-download/bootstrap sweep-orphans=$T/lambda/sweep-orphans/bootstrap
    python3 benchmarks/cold-start.py --tls sweep-orphans=path/to/sweep-orphans

Binaries are NAME=PATH (NAME picks the event: presign-download or sweep-orphans); without any,
$CARGO_TARGET_DIR/release/{presign-download,sweep-orphans}. --runner prefixes the command (e.g.
qemu-user to run arm64 binaries on x86_64; emulation inflates every time). COLD_START_ALL=1 also
prints every start's time, to tell a one-off outlier from a slow first start."""
import argparse, json, os, shlex, socket, statistics, subprocess, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

here = os.path.dirname(os.path.abspath(__file__))
target = os.environ.get("CARGO_TARGET_DIR", os.path.join(here, "..", "target"))
ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("binaries", nargs="*", metavar="NAME=PATH")
ap.add_argument("--runner", default="", help="command prefix, e.g. 'qemu-aarch64-static -L /usr/aarch64-linux-gnu'")
ap.add_argument("--runs", type=int, default=20)
ap.add_argument("--tls", action="store_true", help="sweep-orphans only: first event makes a (failing) TLS connection")
ap.add_argument("--label", default="", help="extra column in the output")
args = ap.parse_args()

http_event = json.load(open(os.path.join(here, "..", "events", "media-status.json")))
http_event["rawPath"] = "/v1/media/not-a-hash"  # refused after auth, before any storage call
http_event["headers"]["authorization"] = "Bearer x.y.z"
EVENTS = {"presign-download": http_event, "sweep-orphans": {"mode": "unknown"}}  # unknown mode: error, no storage
if args.tls:
    EVENTS = {"sweep-orphans": {"mode": "sweep"}}
binaries = [b.split("=", 1) for b in args.binaries] or [[n, os.path.join(target, "release", n)] for n in EVENTS]
for name, _ in binaries:
    assert name in EVENTS, f"no event for {name} (have {', '.join(EVENTS)})"

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

# --tls: a port that takes the ClientHello and closes, so the handshake fails fast.
tls = socket.socket()
tls.bind(("127.0.0.1", 0))
tls.listen(16)
def refuse_tls():
    while True:
        c, _ = tls.accept()
        c.settimeout(5)
        try:
            state["client_hello"] = len(c.recv(4096))
        except OSError:
            pass
        c.close()
threading.Thread(target=refuse_tls, daemon=True).start()

env = dict(os.environ, AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{server.server_address[1]}", AWS_LAMBDA_FUNCTION_NAME="f",
           AWS_LAMBDA_FUNCTION_MEMORY_SIZE="512", AWS_LAMBDA_FUNCTION_VERSION="1", AWS_LAMBDA_LOG_STREAM_NAME="s",
           AWS_LAMBDA_LOG_GROUP_NAME="g", AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="AKIDEXAMPLE",
           AWS_SECRET_ACCESS_KEY="secret", AWS_SESSION_TOKEN="token", BUCKET="b", MEDIA_TABLE="m",
           DECK_FILES_TABLE="d", REFS_TABLE="r", QUOTAS_TABLE="q", JWT_SECRET="k" * 32, RUST_LOG="warn")
if args.tls:
    env.update(AWS_ENDPOINT_URL_DYNAMODB=f"https://127.0.0.1:{tls.getsockname()[1]}", AWS_MAX_ATTEMPTS="1")
print(f"{'function':<18} {'best ms':>8} {'median ms':>10} {'max ms':>8}  {args.label}")
for name, path in binaries:
    times = []
    for _ in range(args.runs):
        state.clear(); state["event"] = EVENTS[name]; done.clear()
        start = time.perf_counter()
        p = subprocess.Popen(shlex.split(args.runner) + [path], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        done.wait(30)
        assert "handled" in state, f"{name} did not answer: {state.get('failed')}"
        assert not args.tls or "client_hello" in state, f"{name} made no TLS connection"
        times.append((state["handled"] - start) * 1000)
        p.kill(); p.wait()
    print(f"{name:<18} {min(times):>8.1f} {statistics.median(times):>10.1f} {max(times):>8.1f}  {args.label}")
    if os.environ.get("COLD_START_ALL"):
        print("  every run, ms:", " ".join(f"{t:.1f}" for t in times))
server.shutdown()
