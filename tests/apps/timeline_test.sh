#!/usr/bin/env bash
# train.timeline writes a Chrome-trace JSON per rank; with parallel.overlap the gradient
# reducer's bucket all-reduces start while backward is still running, without it they start
# after backward ends.
source "$(dirname "$0")/lib.sh"
cd "$TESSERA_ROOT"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
make_small_data "$WORK/data"
sets=$(small_sets "$WORK/data")

for overlap in true false; do
  mpirun --oversubscribe --bind-to none -n 2 "$TESSERA_BIN/tessera-train" configs/tiny.yaml $sets \
    --set train.steps=6 --set parallel.bucket_mb=0.05 --set parallel.overlap=$overlap \
    --set train.timeline="$WORK/tl-$overlap.json" > "$WORK/train.log" 2>&1 \
    || { cat "$WORK/train.log"; fail "training with a timeline (overlap $overlap)"; continue; }
  result=$(/usr/bin/python3 - "$WORK/tl-$overlap.json.rank0" <<'PY'
import json, sys
events = json.load(open(sys.argv[1]))["traceEvents"]
complete = [e for e in events if e.get("ph") == "X"]
backward = [(e["ts"], e["ts"] + e["dur"]) for e in complete if e["cat"] == "backward"]
buckets = [(e["ts"], e["ts"] + e["dur"]) for e in complete
           if e["name"].startswith("bucket ") and e["name"].endswith(" allreduce")]
names = {e["name"] for e in complete}
assert backward and buckets, f"no backward or bucket events in {sorted(names)[:20]}"
assert any(n == "forward" for n in names) and any(n == "optimizer" for n in names)
# A bucket overlaps backward when backward work of the same step (before the step's optimizer
# event) starts after the bucket's all-reduce was started.
optimizer = sorted(e["ts"] for e in complete if e["name"] == "optimizer")
def overlapped(s):
    o = next((t for t in optimizer if t > s), float("inf"))
    return any(s < b0 < o for b0, _ in backward)
started_inside = sum(overlapped(s) for s, _ in buckets)
print(f"{len(buckets)} {started_inside}")
PY
  ) || { fail "timeline (overlap $overlap) does not parse or lacks events: $result"; continue; }
  read -r n inside <<< "$result"
  if [[ $overlap == true ]]; then
    [[ $inside -gt 0 ]] && pass "overlap on: $inside of $n bucket all-reduces run while backward goes on" \
      || fail "overlap on, but none of $n bucket all-reduces runs while backward goes on"
  else
    [[ $inside -eq 0 ]] && pass "overlap off: none of $n bucket all-reduces starts before backward ends" \
      || fail "overlap off, but $inside of $n bucket all-reduces start before backward ends"
  fi
done
finish
