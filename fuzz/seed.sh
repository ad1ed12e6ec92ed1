#!/bin/sh
# Builds the seed corpora of both targets from grammar/ok (and grammar/err:
# inputs near the edges of the grammar are good seeds too).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
for target in parse roundtrip; do
    mkdir -p "$here/corpus/$target"
    for f in "$here"/../grammar/ok/*.q "$here"/../grammar/err/*.q; do
        name=$(basename "$(dirname "$f")")_$(basename "$f" .q)
        # The query without its final newline, as the golden test reads it.
        printf '%s' "$(cat "$f")" > "$here/corpus/$target/$name"
    done
done
echo "seeded $(ls "$here/corpus/parse" | wc -l) inputs per target"
