#!/usr/bin/env bash
# Builds the fuzz targets the way cargo-fuzz does (nightly, SanitizerCoverage,
# AddressSanitizer) and runs each for a fixed time, starting from the
# checked-in seeds. No cargo-fuzz install needed.
#
#   bash fuzz/run.sh                        # every target, 30 s each
#   bash fuzz/run.sh 600 length_delimited   # one target, 10 minutes
#   FUZZ_JOBS=2 bash fuzz/run.sh 3600       # longer, two processes each
#
# New inputs go to fuzz/corpus/<target>/ (ignored by git), crashes to
# fuzz/artifacts/<target>/. With cargo-fuzz installed, `cargo +nightly fuzz
# run <target>` (from the repository root) is equivalent.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-30}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(length_delimited delimiter arena_program)
fi
triple=x86_64-unknown-linux-gnu
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Zsanitizer=address \
-Cdebug-assertions -Coverflow-checks -Cforce-frame-pointers"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo +nightly build --release --target "$triple" --bins
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "--- fuzzing $t for ${secs}s"
  jobs=()
  if [ -n "${FUZZ_JOBS:-}" ]; then jobs=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS"); fi
  "$CARGO_TARGET_DIR/$triple/release/$t" -max_total_time="$secs" -timeout=10 \
    -rss_limit_mb=2048 "${jobs[@]}" -print_final_stats=1 -artifact_prefix="artifacts/$t/" "corpus/$t" "seeds/$t"
done
