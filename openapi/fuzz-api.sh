#!/usr/bin/env bash
# Property-based API check: schemathesis generates requests from openapi.yaml and sends them to
# the running local stack (scripts/up); every response must be a non-5xx, documented status with
# a body, content type and headers that match the schema.
#   openapi/fuzz-api.sh [MAX_EXAMPLES_PER_OPERATION] [extra schemathesis options]
# Exits non-zero on any failure; the full report is in .local/schemathesis/.
source "$(dirname "$0")/../scripts/lib.sh"
cd "$REPO"
[ -f "$STACK_ENV" ] && healthy gateway || { log "the stack is not up (scripts/up --no-demo)"; exit 1; }
set -a; source "$STACK_ENV"; set +a
st="$TOOLS_VENV/bin/schemathesis"
[ -x "$st" ] || "$TOOLS_VENV/bin/pip" install -q -r "$REPO/scripts/requirements-tools.txt"

max_examples="${1:-${FUZZ_API_EXAMPLES:-60}}"; shift || true
out="$LOCAL/schemathesis"; rm -rf "$out"; mkdir -p "$out"
export FUZZ_DECK="fz-maint"

# One token with every scope, maintaining the seeded deck (and the spec's example deck d1).
token="$("$REPO/scripts/token" fuzz-api 'upload download maintain references' "$FUZZ_DECK,d1")"

# Seed: one real image uploaded, processed and referenced in $FUZZ_DECK, so that ready files
# (URLs, thumbnails, sizes) show up in downloads and listings.
"$TOOLS_VENV/bin/python" - "$token" "$CORPUS/real/no_time_for_that_tiny.gif" <<'PY' || { log "seeding failed"; exit 1; }
import hashlib, json, os, sys, time, urllib.request

token, path = sys.argv[1], sys.argv[2]
api, deck = os.environ["API_URL"], os.environ["FUZZ_DECK"]
data = open(path, "rb").read()
h = hashlib.sha256(data).hexdigest()

def call(method, url, body=None, headers=None):
    req = urllib.request.Request(url, method=method, data=body, headers=headers or {})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")

auth = {"authorization": f"Bearer {token}", "content-type": "application/json"}
item = call("POST", f"{api}/v1/uploads", json.dumps(
    {"deck": deck, "files": [{"hash": h, "size": len(data), "filename": "fuzz-seed.gif"}]}).encode(), auth)["files"][0]
if item["status"] == "upload":
    call("PUT", item["url"], data, item["headers"])
call("POST", f"{api}/v1/references", json.dumps(
    {"deck": deck, "notes": [{"note_id": "fuzz-seed", "media": [{"filename": "fuzz-seed.gif", "hash": h}]}]}).encode(), auth)
for _ in range(100):
    if call("GET", f"{api}/v1/media/{h}", headers=auth)["status"] == "ready":
        break
    time.sleep(0.2)
else:
    sys.exit(f"{h} did not become ready")
PY

checks=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,ignored_auth
log "schemathesis: $checks; up to $max_examples cases per operation and phase, against $API_URL"
set +e
# Run from the report directory: schemathesis keeps its replay state in ./.schemathesis. One
# worker: the DynamoDB emulator serves one request at a time anyway, and with several, Python
# 3.11 sometimes fails inside hypothesis ("AST constructor recursion depth mismatch").
(cd "$out" && PYTHONPATH="$REPO/openapi" SCHEMATHESIS_HOOKS=fuzz_hooks "$st" run "$REPO/openapi/openapi.yaml" \
  --url "$API_URL" -H "Authorization: Bearer $token" \
  --checks "$checks" --phases examples,coverage,fuzzing --mode all \
  --max-examples "$max_examples" --seed "${FUZZ_API_SEED:-20261122}" --workers 1 \
  --request-timeout 30 --generation-database none --suppress-health-check all \
  --report junit,ndjson --report-dir "$out" "$@") > "$out/output.txt" 2>&1
rc=$?
set -e
# A short summary: the totals, and every failure schemathesis reported.
sed -n '/^=* SUMMARY =*$/,$p' "$out/output.txt" | grep -v '^$' | head -n 40
if [ "$rc" != 0 ]; then
  grep -E -A12 "^_+ (GET|POST|DELETE) " "$out/output.txt" | cut -c1-400 | head -n 80
  log "API fuzz check FAILED (exit $rc); full output: $out/output.txt"
  exit 1
fi
log "API fuzz check passed ($out/output.txt)"
