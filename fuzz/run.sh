#!/bin/sh
# Runs each fuzz target for SECONDS (default 60) seconds, one after the other.
#   fuzz/run.sh 600
# cargo-fuzz needs nightly compiler flags; on a stable toolchain
# RUSTC_BOOTSTRAP=1 enables them. Install it with `cargo install cargo-fuzz --locked`.
set -eu
seconds=${1:-60}
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
"$here/seed.sh"
for target in parse roundtrip record; do
    echo "== fuzzing $target for ${seconds}s"
    RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir "$here" "$target" "$here/corpus/$target" -- \
        -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048
done
