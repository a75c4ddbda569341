# What `sam local` needs here (scripts/sam-local, scripts/sam-test); source after lib.sh.
#   - a Docker engine: the one running, else a dockerd this script starts (sam_cleanup stops it);
#   - the base image SAM layers its runtime emulator on, made from Debian with debootstrap, since
#     no image can be pulled (../shared/LOCAL-STACK.md, "sam local");
#   - a template derived from template.yaml whose CodeUris are folders holding the test build's
#     binaries as `bootstrap`, so nothing is compiled twice;
#   - --env-vars and --parameter-overrides pointing the functions at the local stack;
#   - forwarders from the Docker bridge to the emulators, which listen on 127.0.0.1 only.

SAM="$TOOLS_VENV/bin/sam"
export SAM_CLI_TELEMETRY=0
SAM_DIR="${SAM_DIR:-$LOCAL/sam}"      # generated: template, code folders, env, events
SAM_CACHE="$CACHE/sam"                # kept across clones and runs: the base image's tarball
SAM_API_PORT="${SAM_API_PORT:-$((GATEWAY_PORT + 10))}"   # sam local start-api
# The functions run on this machine's architecture (the test build's binaries); AWS gets arm64.
case "$(uname -m)" in aarch64 | arm64) SAM_ARCH=arm64 ;; *) SAM_ARCH=x86_64 ;; esac
SAM_BASE_IMAGE="public.ecr.aws/lambda/provided:al2023-$SAM_ARCH"
mkdir -p "$SAM_DIR" "$SAM_CACHE"
# Every sam local command first asks STS for the account id; offline that costs ~11 s of retries
# per call. moto answers it (with the account id SAM would use anyway).
export AWS_ENDPOINT_URL_STS="${AWS_ENDPOINT_URL_STS:-http://127.0.0.1:$MOTO_PORT}"

# Everything sam_* starts, stopped by sam_cleanup (by PID, in reverse order).
SAM_STARTED=()

sam_cleanup() {
  local i pid
  for ((i = ${#SAM_STARTED[@]} - 1; i >= 0; i--)); do
    pid=${SAM_STARTED[$i]}
    # SIGTERM: background jobs of a script ignore SIGINT. dockerd stops its containers first.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 200); do sam_alive "$pid" || break; sleep 0.1; done
    sam_alive "$pid" && { log "PID $pid did not stop in 20 s: killing it"; kill -KILL -- "-$pid" 2>/dev/null || true; }
    wait "$pid" 2>/dev/null || true
  done
  SAM_STARTED=()
}

# A child that exited stays a zombie until it is waited for; that is not alive.
sam_alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

# sam_spawn NAME COMMAND...: start COMMAND in its own process group, logging to .local/logs/NAME.log.
sam_spawn() {
  local name=$1; shift
  setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  SAM_STARTED+=("$!")
  echo "$!" >"$PIDS/$name.pid"
}

# A Docker engine: reuse one that answers, else start dockerd with its state in the cache (so the
# base image survives between runs) and stop it in sam_cleanup.
sam_docker() {
  if docker info >/dev/null 2>&1; then return 0; fi
  command -v dockerd >/dev/null || { log "dockerd is missing: apt-get install -y docker.io debootstrap"; return 1; }
  [ "$(id -u)" = 0 ] || { log "no Docker engine answers, and starting dockerd needs root"; return 1; }
  # containerd's socket path must stay short, so the exec root is not under the cache.
  local run=/run/ankicollab-media-docker
  mkdir -p "$CACHE/docker" "$run"
  log "starting dockerd (data in $CACHE/docker)"
  sam_spawn dockerd dockerd --data-root "$CACHE/docker" --exec-root "$run" --pidfile "$run/dockerd.pid"
  local i
  for ((i = 0; i < 150; i++)); do docker info >/dev/null 2>&1 && return 0; sleep 0.2; done
  log "dockerd did not answer in 30 s; its log: $LOGS/dockerd.log"; tail -n 20 "$LOGS/dockerd.log" >&2
  return 1
}

# The base image SAM expects for provided.al2023, made once from a Debian root file system; the
# tarball is cached, so a new Docker engine only imports it again (seconds). Amazon Linux's image
# has CA certificates, and the functions' TLS stack refuses to start without any (it panics), so
# this one has them too. Bump SAM_BASE_VERSION when what goes into the image changes.
SAM_BASE_VERSION=2
sam_base_image() {
  local have
  have=$(docker image inspect -f '{{index .Config.Labels "ankicollab.base"}}' "$SAM_BASE_IMAGE" 2>/dev/null || true)
  [ "$have" = "$SAM_BASE_VERSION" ] && return 0
  local tarball="$SAM_CACHE/lambda-base-bookworm-v$SAM_BASE_VERSION-$SAM_ARCH.tar"
  if [ ! -s "$tarball" ]; then
    command -v debootstrap >/dev/null || { log "debootstrap is missing: apt-get install -y debootstrap"; return 1; }
    local root="$SAM_CACHE/rootfs.tmp"
    log "making the Lambda base image from Debian bookworm (debootstrap, about a minute, once)"
    rm -rf "$root"
    nice debootstrap --variant=minbase --include=ca-certificates bookworm "$root" http://deb.debian.org/debian \
      >"$LOGS/debootstrap.log" 2>&1 || { tail -n 20 "$LOGS/debootstrap.log" >&2; return 1; }
    # SAM's runtime layer moves its emulator into /var/runtime; the code is mounted at /var/task.
    mkdir -p "$root/var/task" "$root/var/runtime" "$root/opt"
    tar -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
  fi
  log "importing $tarball as $SAM_BASE_IMAGE"
  docker import -c 'WORKDIR /var/task' -c "LABEL ankicollab.base=$SAM_BASE_VERSION" "$tarball" "$SAM_BASE_IMAGE" >/dev/null
  # SAM layers its emulator on the base once (tag "…-rapid-ARCH") and, with --skip-pull-image,
  # keeps using that layer: drop the one made from an older base.
  docker image rm "${SAM_BASE_IMAGE/al2023-/al2023-rapid-}" >/dev/null 2>&1 || true
}

# The Docker bridge's address on this host: what containers use to reach it. (The network's IPAM
# config names the gateway only when it was configured, so ask the bridge interface itself.)
sam_docker_host_ip() {
  local dev ip
  dev=$(docker network inspect bridge -f '{{index .Options "com.docker.network.bridge.name"}}')
  ip=$(ip -4 -o addr show dev "${dev:-docker0}" | awk '{print $4}' | cut -d/ -f1 | head -n1)
  [ -n "$ip" ] || { log "no IPv4 address on Docker's bridge ${dev:-docker0}"; return 1; }
  echo "$ip"
}

# Forward the bridge address's ports of the emulators to 127.0.0.1, where they listen: those that
# do not answer there already (LocalStack listens on every address; another sam-local or sam-test
# may be forwarding the others).
sam_forward() {
  SAM_HOST_IP=$(sam_docker_host_ip) || return 1
  local port ports=()
  for port in "$LS_PORT" "$MOTO_PORT" "$PG_PORT"; do
    (exec 3<>"/dev/tcp/$SAM_HOST_IP/$port") 2>/dev/null || ports+=("$port")
  done
  [ "${#ports[@]}" -gt 0 ] || return 0
  rm -f "$LOGS/sam-forward.log"
  sam_spawn sam-forward "$TOOLS_VENV/bin/python" "$REPO/scripts/sam_forward.py" "$SAM_HOST_IP" "${ports[@]}"
  local i
  for ((i = 0; i < 50; i++)); do
    grep -q '^forwarding' "$LOGS/sam-forward.log" 2>/dev/null && return 0
    kill -0 "${SAM_STARTED[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  log "the port forwarder did not start; its log: $LOGS/sam-forward.log"; cat "$LOGS/sam-forward.log" >&2
  return 1
}

# sam_prepare [RESOURCE-PREFIX]: build (a no-op when the tests built already), then write
# .local/sam/template.yaml, its code folders, env.json and the parameter overrides. With a
# prefix, the functions use their own bucket, tables and database (scripts/sam-test).
sam_prepare() {
  local prefix=${1:-}
  log "building the functions (the tests' build; a no-op when it is current)"
  ( cd "$REPO" && cargo build -q "${ALL_BUILD[@]}" )
  "$TOOLS_VENV/bin/python" "$REPO/scripts/sam_prepare.py" \
    --template "$REPO/template.yaml" --out "$SAM_DIR" --binaries "$CARGO_TARGET_DIR/debug" \
    --stack-env "$STACK_ENV" --docker-host "$SAM_HOST_IP" --prefix "$prefix"
  # One line per override, as `sam --parameter-overrides` takes them.
  mapfile -t SAM_PARAMS <"$SAM_DIR/parameters"
  SAM_ARGS=(--template "$SAM_DIR/template.yaml" --env-vars "$SAM_DIR/env.json"
    --parameter-overrides "${SAM_PARAMS[@]}" --region "${AWS_REGION:-us-east-1}" --skip-pull-image)
}
