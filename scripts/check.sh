#!/usr/bin/env bash
# The project's test command (README): formatting, lints, every test, and a
# build of the benchmarks. Fails on the first problem.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (warnings denied)"
cargo clippy --all-targets -- -D warnings
echo "== cargo test"
cargo test --all-features
echo "== cargo bench --no-run (benches build; CI never times them)"
cargo bench --no-run --quiet
echo "== compare smoke run (N = 2,000): stops if Almanac's and SQLite's answers differ; times are not checked"
cargo bench --quiet --bench compare -- --quick
if [ -x fuzz/run.sh ] && [ "${ALMANAC_FUZZ_SECONDS:-0}" != "0" ]; then
  echo "== fuzz smoke run: ${ALMANAC_FUZZ_SECONDS}s per target"
  fuzz/run.sh "${ALMANAC_FUZZ_SECONDS}"
fi
echo "== all checks passed"
