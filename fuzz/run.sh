#!/usr/bin/env bash
# Run one cargo-fuzz target for a while, seeded at run time; see README.md.
#   fuzz/run.sh TARGET [SECONDS] [extra libFuzzer options]
# TARGET: process_upload | api_request | filename. Corpora and crash artifacts live outside the
# clone ($CACHE/fuzz/TARGET/{corpus,artifacts}); only the small text seeds in fuzz/seeds are
# committed, the binary seeds are copied from ../shared/corpus.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
target="${1:?usage: fuzz/run.sh TARGET [SECONDS] [libFuzzer options]}"; secs="${2:-300}"; shift $(( $# < 2 ? $# : 2 ))
cache="${ANKICOLLAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ankicollab-media}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target-fuzz}"
# cargo-fuzz needs nightly-only flags; the stable toolchain accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
work="$cache/fuzz/$target"; corpus="$work/corpus"; artifacts="$work/artifacts"
mkdir -p "$corpus" "$artifacts"
seeds="$(cd "$here/../.." && pwd)/shared/corpus"
opts=(-max_total_time="$secs" -rss_limit_mb=1024 -print_final_stats=1 -artifact_prefix="$artifacts/")
case "$target" in
  process_upload)
    # Every hostile file, small containers of each audio kind the corpus lacks (WAV, FLAC, M4A,
    # Opus), the JPEG decoder's fixtures (each subsampling, CMYK, progressive, arithmetic...), and
    # the real files up to 256 KiB (bigger ones only slow the loop down).
    cp -n "$seeds"/hostile/* "$here"/seeds/process_upload/* "$here"/../shared/testdata/jpeg/*.jpg "$corpus/" 2>/dev/null || true
    find "$seeds/real" -type f -size -257k -exec cp -n {} "$corpus/" \;
    opts+=(-max_len=262144 -timeout=30) ;;
  api_request)
    cp -n "$here"/seeds/api_request/* "$corpus/" 2>/dev/null || true
    opts+=(-max_len=4096 -timeout=10 -dict="$here/api_request.dict") ;;
  filename)
    printf 'cell.png' > "$corpus/plain"; printf 'cafe\xcc\x81.mp3' > "$corpus/nfd"; printf '../etc/passwd' > "$corpus/traversal"
    opts+=(-max_len=512 -timeout=10) ;;
  *) echo "unknown target $target" >&2; exit 2 ;;
esac
cd "$here"
exec cargo fuzz run -s none "$target" "$corpus" -- "${opts[@]}" "$@"
