# Common paths for the scripts. Caches live outside the clone so repeated runs (and CI) reuse them.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${ANKICOLLAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ankicollab-media}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
LOCAL="$REPO/.local"
LS_VENV="$CACHE/venv-localstack"
TOOLS_VENV="$CACHE/venv-tools"
mkdir -p "$CACHE" "$LOCAL"
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
