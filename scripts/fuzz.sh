#!/usr/bin/env bash
# cargo-fuzz targets of the gateway (fuzz/): frame_dispatch (frame decoding + the pure request step
# ops::from_frame/ops::check) and login_verify (auth::verify_login, both schemes). README "Fuzzing".
#
#   scripts/fuzz.sh smoke                 every target for FUZZ_SMOKE_SECONDS (default 30) from the
#                                         committed corpus (what .ci/run does)
#   scripts/fuzz.sh run <target> <secs>   one long run (what it finds grows fuzz/work/<target>,
#                                         not committed; crashes land in fuzz/artifacts/<target>)
#   scripts/fuzz.sh corpus                rewrite the committed seed corpus (after protocol changes)
#
# Only the stable toolchain is assumed: RUSTC_BOOTSTRAP=1 lets it take the nightly-only flags
# cargo-fuzz passes (-Zsanitizer=address, sanitizer-coverage options). AddressSanitizer is used
# unless FUZZ_SANITIZER=none. Optimized, with debug assertions and overflow checks on.
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`; installed here if missing).
set -Eeuo pipefail
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
TARGETS=(frame_dispatch login_verify)
SAN="${FUZZ_SANITIZER:-address}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

run() { # target seconds: grows fuzz/work/<target> (not committed) from the committed seeds
  local t=$1 secs=$2
  mkdir -p "fuzz/work/$t" "fuzz/artifacts/$t"
  cargo fuzz run --sanitizer "$SAN" --release --debug-assertions "$t" "fuzz/work/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$t/"
}

case "${1:-}" in
  smoke)
    secs="${FUZZ_SMOKE_SECONDS:-30}"
    started=$SECONDS
    cargo fuzz build --sanitizer "$SAN" --release --debug-assertions
    echo "fuzz.sh: fuzz crate built in $((SECONDS - started))s" >&2
    for t in "${TARGETS[@]}"; do
      scratch=$(mktemp -d); mkdir -p "$scratch/corpus"
      echo "fuzz.sh: $t for ${secs}s" >&2
      status=0
      cargo fuzz run --sanitizer "$SAN" --release --debug-assertions "$t" "$scratch/corpus" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 -artifact_prefix="$scratch/" \
        >"$scratch/log" 2>&1 || status=$?
      grep -E "^(stat::number_of_executed_units|stat::average_exec_per_sec|Done)" "$scratch/log" >&2 || true
      if [[ $status -ne 0 ]]; then
        tail -n 60 "$scratch/log" >&2
        echo "fuzz.sh: $t failed (exit $status); the crashing input is in the log above" >&2
        rm -rf "$scratch"
        exit "$status"
      fi
      rm -rf "$scratch"
    done
    echo "fuzz.sh: smoke run done in $((SECONDS - started))s" >&2
    ;;
  run)
    [[ $# -eq 3 ]] || { echo "usage: scripts/fuzz.sh run <target> <seconds>" >&2; exit 2; }
    run "$2" "$3"
    ;;
  corpus)
    cargo fuzz build --sanitizer "$SAN" --release --debug-assertions >/dev/null
    "${CARGO_TARGET_DIR:-fuzz/target}/$(rustc -vV | sed -n 's/^host: //p')/release/seed_corpus"
    ;;
  *)
    echo "usage: scripts/fuzz.sh smoke | run <target> <seconds> | corpus" >&2
    exit 2
    ;;
esac
