#!/usr/bin/env bash
# Instructions per message of each data-phase stage on each message shape, counted by callgrind
# (benches/stages.rs under valgrind): the same figure on every run of the same build, whatever
# else the machine is doing, so a change of a few percent in one stage shows. Not part of CI.
#
#   bench/stage_instructions.sh            # every stage, every shape
#   STAGES=virus SHAPES=alternative bench/stage_instructions.sh
#   BIN=/tmp/stages-old bench/stage_instructions.sh   # another build of the bench, to compare
#
# Each figure is (a run of N messages − a run of none) / N, so start-up and the model's loading
# cancel out. Needs valgrind (Debian's package).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-50}
STAGES=${STAGES:-"limits virus spam"}
SHAPES=${SHAPES:-"text alternative attachment"}
command -v valgrind >/dev/null || { echo "stage_instructions: install valgrind" >&2; exit 1; }
if [ -z "${BIN:-}" ]; then
    BIN=$(cargo bench --bench stages --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="stages" and m.get("executable"): print(m["executable"])' | tail -1)
fi
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
count() { # messages stage shape -> instructions in total
    ROUNDS=1 PER_ROUND=$1 STAGES=$2 SHAPE=$3 valgrind --tool=callgrind \
        --callgrind-out-file="$OUT/cg" "$BIN" --bench >/dev/null 2>&1
    callgrind_annotate "$OUT/cg" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
}
echo "instructions per message ($BIN, $N messages a run)"
for shape in $SHAPES; do
    line=$(printf '%-12s' "$shape")
    for stage in $STAGES; do
        none=$(count 0 "$stage" "$shape")
        some=$(count "$N" "$stage" "$shape")
        line+=$(printf '  %s %6dk' "$stage" $(((some - none) / N / 1000)))
    done
    echo "$line"
done
