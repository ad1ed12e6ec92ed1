#!/bin/sh
# Builds the seed corpora of the query targets from grammar/ok (and grammar/err:
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
# The record target: record lines, one a seed, valid and near the rules.
mkdir -p "$here/corpus/record"
n=0
while IFS= read -r line; do
    n=$((n + 1))
    printf '%s' "$line" > "$here/corpus/record/line_$n"
done <<'JSONL'
{"kind":"ingestion_volume","target":{"source_id":"s","schema":"sc","table":"t","extras":{"k":1}},"payload":{"rows":5,"watermark":"2024-01-10T05:00:00+02:00","big":18446744073709551615,"f":-0.0,"e":1e300},"produced_at":"2024-01-10T05:00:00.123456789-03:00","producer_id":"p","context":{"job_id":"j","run_id":"r","namespace":"n","extras":{"tenant":"t"}},"version":1,"quality":0.5,"extras":{"window_start":"2024-01-09T00:00:00Z","window_end":"2024-01-10T00:00:00Z"}}
{"id":7,"kind":"recon_result","target":{"table":"t"},"payload":{"outcome":"fail","ingestion_run_ids":["a","b"]},"produced_at":"2016-12-31T23:59:60.5Z","producer_id":"r"}
{"kind":"k","target":{"table":"t"},"payload":{"n":123456789012345678901,"s":"x\"1"},"produced_at":"2024-01-10 05:00:00Z","producer_id":"p"}
{"kind":"schema_snapshot","target":{"table":"t"},"payload":{"columns":[{"name":"a","type":"int","nullable":true}]},"produced_at":"2024-01-10T05:00:00Z","producer_id":"p","version":1.0}
JSONL
echo "seeded $(ls "$here/corpus/parse" | wc -l) inputs per query target, $(ls "$here/corpus/record" | wc -l) record lines"
