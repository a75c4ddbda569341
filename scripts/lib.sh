# Common paths for the scripts. Caches live outside the clone so repeated runs (and CI) reuse them.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${ANKICOLLAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ankicollab-media}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
LOCAL="$REPO/.local"
LS_VENV="$CACHE/venv-localstack"
TOOLS_VENV="$CACHE/venv-tools"
MOTO_VENV="$CACHE/venv-moto"
CLIENT_VENV="$CACHE/venv-client"
LINT_VENV="$CACHE/venv-lint"
mkdir -p "$CACHE" "$LOCAL"
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Ports and names of the local stack (override in the environment).
LS_PORT="${LS_PORT:-4566}"
MOTO_PORT="${MOTO_PORT:-5050}"
GATEWAY_PORT="${GATEWAY_PORT:-8787}"
PG_PORT="${PG_PORT:-55432}"
PG_DATA="${PG_DATA:-/var/tmp/ankicollab-media-pg-$PG_PORT}"
PIDS="$LOCAL/pids"
LOGS="$LOCAL/logs"
STACK_ENV="$LOCAL/stack.env"
mkdir -p "$PIDS" "$LOGS"

# What `make up` runs is the local gateway alone, so that is all it builds; `make test` builds
# every binary, test and example. Both resolve features alike (see the workspace Cargo.toml), so
# neither undoes the other's build.
STACK_BUILD=(-p local-gateway --bin local-gateway)
ALL_BUILD=(--workspace --bins --tests --examples)
build_gateway() { ( cd "$REPO" && cargo build -q "${STACK_BUILD[@]}" ); }
GATEWAY_BIN="$CARGO_TARGET_DIR/debug/local-gateway"

# The shared corpus of real and hostile files: $ANKICOLLAB_CORPUS, else ../shared/corpus beside the
# clone, else the workplace's /work/shared/corpus (a clone made elsewhere, as CI may).
corpus_dir() {
  local d
  for d in "${ANKICOLLAB_CORPUS:-}" "$REPO/../shared/corpus" /work/shared/corpus; do
    [ -n "$d" ] && [ -d "$d/real" ] && [ -d "$d/hostile" ] && { (cd "$d" && pwd); return 0; }
  done
  log "no corpus found: set ANKICOLLAB_CORPUS to the folder holding real/ and hostile/"
  return 1
}

# need_venv VENV PYTHON REQUIREMENTS: create or update a venv once per version of the requirements.
# The stamp covers the files the requirements include (-r) too.
need_venv() {
  local venv=$1 py=$2 req=$3 stamp
  stamp="$1/.req-$(cd "$(dirname "$3")" && cat "$(basename "$3")" $(sed -n 's/^-r  *//p' "$(basename "$3")") | sha256sum | cut -c1-16)"
  [ -f "$stamp" ] && return 0
  log "installing $(basename "$(dirname "$req")")/$(basename "$req") into $venv (first run only, a few minutes)"
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -r "$req"
  rm -f "$venv"/.req-*
  touch "$stamp"
}

# stage NAME COMMAND...: run one stage of a test script, carrying on when it fails.
# stages_done WHAT: at the end, name the failed stages and fail, or say "all WHAT passed".
failed_stages=()
stage() {
  local name=$1; shift
  log "== $name"
  if "$@"; then log "== $name: passed"; else log "== $name: FAILED"; failed_stages+=("$name"); fi
}
stages_done() {
  if [ "${#failed_stages[@]}" -gt 0 ]; then
    log "FAILED: ${failed_stages[*]}"
    return 1
  fi
  log "all $1 passed"
}

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1; }

# as_postgres CMD...: run a Postgres tool as the postgres user when we are root.
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

healthy() { # name
  case $1 in
    localstack) curl -sf "http://127.0.0.1:$LS_PORT/_localstack/health" >/dev/null ;;
    moto) curl -sf "http://127.0.0.1:$MOTO_PORT/moto-api/" >/dev/null ;;
    postgres) "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" ;;
    gateway) curl -sf "http://127.0.0.1:$GATEWAY_PORT/local/health" >/dev/null ;;
  esac
}

wait_healthy() { # name seconds
  local i
  for ((i = 0; i < $2 * 5; i++)); do healthy "$1" && return 0; sleep 0.2; done
  log "$1 did not become healthy in $2 s; its log: $LOGS/$1.log"; tail -n 30 "$LOGS/$1.log" >&2 || true
  return 1
}

# answering NAME: its port answers HTTP at all (a gateway whose backends are down answers 503).
answering() { # name
  case $1 in
    gateway) curl -s -o /dev/null --max-time 3 "http://127.0.0.1:$GATEWAY_PORT/local/health" ;;
    *) healthy "$1" ;;
  esac
}

# stop_listener NAME PORT: stop what we started, and whatever else still listens on the port (a
# process another clone started, or one whose pid file went with a deleted .local/).
stop_listener() { # name port
  stop_pid "$1"
  local pid i
  pid=$(ss -ltnpH "sport = :$2" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2 || true)
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  for i in $(seq 50); do alive "$pid" || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

# gateway_out_of_date: prints why the running gateway must be restarted, or fails if it need not
# (or nothing answers). Its health answer says which binary it runs and its secret's fingerprint.
gateway_out_of_date() {
  local info
  info=$(curl -s --max-time 3 "http://127.0.0.1:$GATEWAY_PORT/local/health") || return 1
  python3 - "$info" "$(printf %s "$(cat "$LOCAL/jwt-secret")" | sha256sum | cut -c1-16)" \
      "$GATEWAY_BIN" "$(stat -c %Y "$GATEWAY_BIN" 2>/dev/null || echo 0)" <<'PY'
import json, sys
info, secret, binary, mtime = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
try:
    h = json.loads(info)
except ValueError:
    sys.exit(print("it is an older gateway that does not say who it is") or 0)
if h.get("secret") != secret:
    sys.exit(print("it was started with another token secret (another clone, or .local/ was deleted)") or 0)
if h.get("binary") != binary:
    sys.exit(print(f"it runs {h.get('binary')}, not this checkout's {binary}") or 0)
if (h.get("binary_mtime") or 0) < mtime:
    sys.exit(print("its binary has been rebuilt since it started") or 0)
sys.exit(1)
PY
}

# build_start ARGS...: start `cargo build ARGS` in the background (build_wait follows it).
build_start() {
  BUILD_LOG="$LOGS/build.log" BUILD_STARTED=$SECONDS
  ( cd "$REPO" && exec cargo build "$@" --color never ) > "$BUILD_LOG" 2>&1 &
  BUILD_PID=$!
}

# build_wait WHAT: wait for the build build_start started, saying every 30 s how far it is.
build_wait() {
  local what=$1 n last i=0 total
  total=$(grep -c '^name = ' "$REPO/Cargo.lock" || echo "?")
  while kill -0 "$BUILD_PID" 2>/dev/null; do
    sleep 1; i=$((i + 1))
    if (( i % 30 == 0 )); then
      n=$(grep -c '^ *Compiling ' "$BUILD_LOG" || true)
      last=$(grep '^ *Compiling ' "$BUILD_LOG" | tail -n1 | awk '{print $2}' || true)
      if [ "$n" -gt 0 ]; then log "building $what: $n crates compiled so far (of at most $total)${last:+, now $last}, $((SECONDS - BUILD_STARTED)) s"
      elif grep -q 'Blocking waiting for file lock' "$BUILD_LOG"; then log "waiting for another cargo to release $CARGO_TARGET_DIR"
      elif grep -q 'Downloading\|Downloaded' "$BUILD_LOG"; then log "downloading crates for $what, $((SECONDS - BUILD_STARTED)) s"
      fi
    fi
  done
  if ! wait "$BUILD_PID"; then tail -n 40 "$BUILD_LOG" >&2; log "the build of $what failed; full log: $BUILD_LOG"; return 1; fi
  (( SECONDS - BUILD_STARTED < 5 )) || log "built $what in $((SECONDS - BUILD_STARTED)) s"
}

# build_with_progress WHAT ARGS...: build, saying what and how far.
build_with_progress() {
  local what=$1; shift
  build_start "$@"
  build_wait "$what"
}

# alive PID: running, and not a zombie (this machine's init may be slow to reap).
alive() { [ "$(ps -o stat= -p "$1" 2>/dev/null | cut -c1)" != "" ] && [ "$(ps -o stat= -p "$1" | cut -c1)" != Z ]; }

stop_pid() { # name
  local f="$PIDS/$1.pid"
  [ -f "$f" ] || return 0
  local pid; pid=$(cat "$f")
  if alive "$pid"; then
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
    kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

# The environment every local process and test shares.
stack_env() {
  local corpus
  corpus=$(corpus_dir) || return 1
  cat <<ENV
API_URL=http://127.0.0.1:$GATEWAY_PORT
AWS_ENDPOINT_URL_S3=http://127.0.0.1:$LS_PORT
AWS_ENDPOINT_URL_SQS=http://127.0.0.1:$LS_PORT
AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$MOTO_PORT
AWS_ENDPOINT_URL_DYNAMODB_STREAMS=http://127.0.0.1:$MOTO_PORT
AWS_ACCESS_KEY_ID=test
AWS_SECRET_ACCESS_KEY=test
AWS_REGION=us-east-1
BUCKET=ankicollab-media
MEDIA_TABLE=media
DECK_FILES_TABLE=deck-files
REFS_TABLE=refs
QUOTAS_TABLE=quotas
# Smaller pages than production's 2,000 keep the paging test quick on moto.
DOWNLOAD_PAGE_SIZE=500
# moto answers one request at a time, so under a test run's load a call may wait seconds in its
# queue; deployed, the template sets 2 s and 4-30 s.
SDK_CONNECT_TIMEOUT_SECS=5
SDK_OPERATION_TIMEOUT_SECS=30
DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres
JWT_SECRET=$(cat "$LOCAL/jwt-secret")
# Tests drive the API from many threads as a handful of users, far faster than people do: the
# rate limits here are production's x50, so every request still takes a token from a real bucket
# in moto (tests/e2e/security.rs drives a burst past production's own limits with an app of its own).
# The deny-list is read every 5 s instead of every 60, so the revocation test waits less.
RATE_LIMIT_UPLOADS=6000
RATE_LIMIT_DOWNLOADS=12000
RATE_LIMIT_REFERENCES=300000
RATE_LIMIT_MAINTAINER=30000
REVOCATION_REFRESH_SECS=5
# Downloads answer from memory for 2 s instead of an hour, so that a grace-0 sweep (which takes
# at least this long as its grace: shared/src/servable.rs) still deletes what a test just left.
READY_CACHE_SECS=2
GATEWAY_ADDR=127.0.0.1:$GATEWAY_PORT
# The maintainer page's browser tests embed it from this origin (a page they serve themselves).
MAINTAINER_PAGE_EMBED_ORIGINS=http://127.0.0.1:$((GATEWAY_PORT + 2))
CORPUS=$corpus
ENV
}
