#!/usr/bin/env bash
# tessera-plan's predicted step time against the measured one, for every 1-, 2- and 4-rank
# dp x tp layout (zero 0 and 1, ZeRO-1 node-shared as the trainer runs it on one node; sequence
# parallelism off and on; micro-batch = the whole per-rank batch)
# of the tiny model and GPT-2 124M on this machine. The run is ROUNDS rounds; each round, at each
# world size, the planner measures the machine on the spot (mpirun -n N tessera-plan --measure
# --json), then bench_grid times every layout once (median of STEPS steps after a warm-up) with
# the same threads per rank. Interleaving the layouts over rounds spreads the shared machine's
# slow minutes over all of them instead of landing on a few. A layout's predicted and measured
# times are the medians over rounds. Prints the rows, then a markdown table with each model's
# median relative error and the Spearman rank correlation of predicted and measured step times,
# over the medians and in each round alone.
# Usage: bench/run_plan_bench.sh   (after scripts/build.sh; TESSERA_BUILD_DIR=build-x for another
# build; ROUNDS=3; STEPS=3 (124M) and STEPS_TINY=15 steps timed per round; TINY="batch seq" and
# BIG="batch seq" set the workloads, "16 64" and "4 64"; MODELS="tiny gpt2-124m" picks models;
# ROWS=FILE keeps every predicted and measured row as JSON lines)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${TESSERA_BUILD_DIR:-build}
for exe in "$build/apps/tessera-plan" "$build/bench/bench_grid"; do
  [[ -x $exe ]] || { echo "run_plan_bench: $exe not found; run scripts/build.sh" >&2; exit 1; }
done
if [[ $EUID -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMP_WAIT_POLICY=PASSIVE
steps_big=${STEPS:-3}
# The tiny model's steps last ~60 ms, where a few ms of noise reorder its layouts: more steps.
steps_tiny=${STEPS_TINY:-15}
read -r tiny_b tiny_t <<< "${TINY:-16 64}"
read -r big_b big_t <<< "${BIG:-4 64}"
out=$(mktemp -d)
trap '[[ -n ${ROWS:-} ]] && cp "$out/rows.jsonl" "$ROWS"; rm -rf "$out"' EXIT
echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo '?'), load average $(cut -d' ' -f1-3 /proc/loadavg), OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}"

rounds=${ROUNDS:-3}
models=${MODELS:-tiny gpt2-124m}
for r in $(seq "$rounds"); do
for spec in "tiny configs/tiny.yaml $tiny_b $tiny_t" "gpt2-124m configs/gpt2-124m.yaml $big_b $big_t"; do
  read -r name cfg b t <<< "$spec"
  [[ " $models " == *" $name "* ]] || continue
  echo "# round $r, $name, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%T) UTC"
  steps=$steps_big
  [[ $name == tiny ]] && steps=$steps_tiny
  tag="\"model\":\"$name\",\"round\":$r"
  for n in 1 2 4; do
    sets=(--set "train.batch_size=$b" --set "train.seq_len=$t")
    mpirun -n "$n" --oversubscribe --bind-to none "$build/apps/tessera-plan" "$cfg" "${sets[@]}" \
      --measure --json | sed "s/^{/{$tag,\"world\":$n,\"kind\":\"predicted\",/" \
      >> "$out/rows.jsonl"
    for tp in 1 2 4; do
      ((n % tp == 0)) || continue
      dp=$((n / tp))
      for zero in 0 1; do
        ((dp == 1 && zero == 1)) && continue
        for sp in "" --sequence-parallel; do
          [[ -n $sp && $tp == 1 ]] && continue
          mpirun -n "$n" --oversubscribe --bind-to none "$build/bench/bench_grid" --config "$cfg" \
            --batch-per-rank $((b / dp)) --seq "$t" --tp "$tp" --threads 0 --steps "$steps" \
            --warmup 1 --zero "$zero" $( ((zero == 1)) && echo --node-shared) $sp |
            sed "s/^{/{$tag,\"kind\":\"measured\",/" | tee -a "$out/rows.jsonl"
        done
      done
    done
  done
done
done
echo "# end: load average $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$out/rows.jsonl" "$tiny_b" "$big_b" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
batch = {"tiny": int(sys.argv[2]), "gpt2-124m": int(sys.argv[3])}
def ranks(xs):
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):  # average ranks of ties
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2
        i = j + 1
    return r
def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    n = len(a)
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra) ** 0.5
    vb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return cov / (va * vb) if va and vb else float("nan")
def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
def layouts(model):
    """{(dp, tp, zero, sp): {round: (predicted ms, measured ms)}}"""
    out = {}
    for m in [r for r in rows if r["model"] == model and r["kind"] == "measured"]:
        dp, tp, zero, sp = m["dp"], m["tp"], m.get("zero", 0), m.get("sequence_parallel", False)
        micro = batch[model] // dp
        p = [r for r in rows if r["model"] == model and r["kind"] == "predicted"
             and r["round"] == m["round"] and r["world"] == dp * tp and r["dp"] == dp
             and r["tp"] == tp and r["zero"] == zero and r["micro"] == micro
             and r["sequence_parallel"] == sp]
        if p:
            out.setdefault((dp, tp, zero, sp), {})[m["round"]] = (p[0]["step_s"] * 1e3,
                                                                 m["step_ms_median"])
    return out
print("\n| model | ranks | dp x tp | zero | sp | predicted ms | measured ms (rounds' min-max) | error |")
print("|---|---|---|---|---|---|---|---|")
summary = []
for model in ("tiny", "gpt2-124m"):
    lay = layouts(model)
    if not lay:
        continue
    pred, meas, errs = [], [], []
    for (dp, tp, zero, sp), by_round in lay.items():
        ps = median([v[0] for v in by_round.values()])
        ms_all = [v[1] for v in by_round.values()]
        ms = median(ms_all)
        err = (ps - ms) / ms
        pred.append(ps); meas.append(ms); errs.append(abs(err))
        print(f"| {model} | {dp * tp} | {dp} x {tp} | {zero} | {'on' if sp else 'off'} | {ps:.1f} | "
              f"{ms:.1f} ({min(ms_all):.0f}-{max(ms_all):.0f}) | {100*err:+.0f}% |")
    print(f"| **{model}** | | {len(errs)} layouts, {len(next(iter(lay.values())))} rounds | | | | "
          f"median abs error **{100*median(errs):.0f}%** | Spearman **{spearman(pred, meas):.2f}** |")
    per_round = []
    for r in sorted({r for v in lay.values() for r in v}):
        pr = [v[r] for v in lay.values() if r in v]
        per_round.append((r, median([abs(a - b) / b for a, b in pr]), spearman([a for a, _ in pr], [b for _, b in pr])))
    summary.append((model, per_round))
print("\nEach round alone (that round's predictions against that round's measurements):\n")
print("| model | round | median abs error | Spearman |")
print("|---|---|---|---|")
for model, per_round in summary:
    for r, e, s in per_round:
        print(f"| {model} | {r} | {100*e:.0f}% | {s:.2f} |")
PY
