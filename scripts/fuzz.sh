#!/usr/bin/env bash
# cargo-fuzz (libFuzzer + AddressSanitizer, nightly Rust) over the parsers that meet hostile
# input: guest frames, OCI layers, root patches, the CRDs' validate(), the resolver's answers.
# Each target runs for a bounded time; its corpus is fuzz/corpus/<target> (inputs that grow
# coverage are added there: commit them), crashes land in fuzz/artifacts/<target>.
#
# Usage: scripts/fuzz.sh [SECONDS per target (default 60)] [TARGET...]
# With FUZZ_GROW=1 (make fuzz) new inputs go into fuzz/corpus/<target>, minimized after the run;
# otherwise (the bounded run in make test) the kept corpus only seeds and the tree stays clean.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECS="${1:-${MSB_FUZZ_SECONDS:-60}}"
shift || true
CARGO_FUZZ_VERSION=0.13.1
if ! cargo +nightly --version >/dev/null 2>&1 &&
   ! rustup toolchain install nightly --profile minimal >/dev/null 2>&1; then
  echo "fuzz: needs the nightly toolchain (libFuzzer's sanitizer flags); 'rustup toolchain install nightly' failed" >&2
  exit 1
fi
if [[ $(cargo fuzz --version 2>/dev/null) != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
  cargo install -q cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
# Its own target directory: sanitizer flags would invalidate the workspace's builds.
export CARGO_TARGET_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/microsandbox/fuzz-target"
cd "$ROOT/fuzz"
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || mapfile -t targets < <(cargo +nightly fuzz list)
cargo +nightly fuzz build -O
status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log="$CARGO_TARGET_DIR/$t.log"
  if [[ ${FUZZ_GROW:-0} == 1 ]]; then dirs=("corpus/$t"); else
    grown="$CARGO_TARGET_DIR/grown/$t"; rm -rf "$grown"; mkdir -p "$grown"; dirs=("$grown" "corpus/$t")
  fi
  if cargo +nightly fuzz run -O "$t" "${dirs[@]}" -- -max_total_time="$SECS" -rss_limit_mb=2048 \
      -artifact_prefix="artifacts/$t/" >"$log" 2>&1; then
    runs=$(grep -Eo 'Done [0-9]+ runs' "$log" | grep -Eo '[0-9]+')
    cov=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | grep -Eo 'cov: [0-9]+ ft: [0-9]+' | tail -1)
    [[ ${FUZZ_GROW:-0} != 1 ]] || cargo +nightly fuzz cmin -O "$t" "corpus/$t" >"$log.cmin" 2>&1
    echo "fuzz $t: $runs runs in $SECS s, $cov, corpus $(find "corpus/$t" -type f | wc -l) inputs, no crash"
  else
    status=1
    echo "fuzz $t: FAILED; the input is in fuzz/artifacts/$t:" >&2
    grep -E 'panicked|ERROR|SUMMARY' "$log" | head -5 >&2
  fi
done
exit $status
