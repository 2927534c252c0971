#!/usr/bin/env bash
# Nothing lost, measured: TRIALS kill -9 trials of a 2-rank (1 x 2) training job during its
# checkpoint writes. Each trial starts the job (small model, a checkpoint every 2 steps, keep 2),
# waits for the k-th checkpoint's `.tmp` file to appear (k drawn from 2..4, so a previous
# checkpoint exists), sleeps a random delay in [0, 1.25 W) (W: the median write-and-publish
# window, from the appearance of the `.tmp` file to `latest` naming the new file, measured by an
# uninterrupted calibration run first), then SIGKILLs one rank drawn at random. After the job has
# ended it records where the kill landed, from what is on disk:
#   mid-write      the `.tmp` file is still there (killed while writing or before the rename)
#   pre-publish    the new file is renamed, `latest` still names the previous one
#   after-publish  `latest` names the new file (the kill came after the window: not counted in it)
# and checks that `latest` names a checkpoint that `tessera-ckpt verify` calls sound and that a
# resume from it runs 2 more steps to the end. A trial where either fails is a loss.
# Not a CI test (minutes to an hour). Prints one line per trial, then a summary; exits 1 on a
# loss. Also reports how long the surviving rank took to end after the kill.
# Usage: bench/run_kill_trials.sh [TRIALS (default 100)]   (TESSERA_BUILD_DIR=dir for a build other
# than build/; SEED=n for another draw; KEEP_WORK=1 keeps the scratch directory)
set -euo pipefail
cd "$(dirname "$0")/.."
trials=${1:-100}
bin=$(cd "${TESSERA_BUILD_DIR:-build}/apps" && pwd)
for app in tessera-train tessera-ckpt tessera-data; do
  [[ -x $bin/$app ]] || { echo "run_kill_trials: $bin/$app not found; build first" >&2; exit 1; }
done
if [[ $EUID -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
work=$(mktemp -d /tmp/tessera-kill-trials.XXXXXX)
[[ ${KEEP_WORK:-0} == 1 ]] || trap 'rm -rf "$work"' EXIT

head -c 200000 data/shakespeare.txt > "$work/small.txt"
"$bin/tessera-data" prepare --input "$work/small.txt" --vocab-size 512 --out-dir "$work/data" \
  > "$work/prepare.log" 2>&1 || { cat "$work/prepare.log"; exit 1; }

/usr/bin/python3 - "$trials" "$bin" "$work" "${SEED:-20261205}" <<'PY'
import os, random, signal, statistics, subprocess, sys, time

trials, bin_dir, work, seed = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
rng = random.Random(seed)
data = f"{work}/data"
ck = f"{work}/ckpt"
EVERY, STEPS = 2, 10
base = ["mpirun", "--oversubscribe", "--bind-to", "none", "-n", "2", f"{bin_dir}/tessera-train",
        "configs/tiny.yaml"]
for kv in ("model.vocab_size=512", "model.n_layer=2", "model.n_embd=64", "model.n_head=4",
           "model.max_seq_len=64", "train.seq_len=32", "train.batch_size=8", "train.val_every=0",
           f"data.train={data}/train.bin", f"data.val={data}/val.bin",
           f"data.tokenizer={data}/tokenizer", f"train.out_dir={work}/run", "parallel.tp=2",
           f"checkpoint.dir={ck}", f"checkpoint.every={EVERY}", "checkpoint.keep=2"):
    base += ["--set", kv]


def latest():
    try:
        return open(f"{ck}/latest").read().strip()
    except OSError:
        return None


def tmp_files():
    try:
        return sorted(f for f in os.listdir(ck) if f.endswith(".h5.tmp"))
    except OSError:
        return []


def rank_pids(mpirun_pid):
    """World rank -> pid of the tessera-train children of mpirun."""
    out = {}
    kids = subprocess.run(["pgrep", "-P", str(mpirun_pid)], capture_output=True, text=True).stdout
    for pid in map(int, kids.split()):
        try:
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        for e in env:
            if e.startswith(b"OMPI_COMM_WORLD_RANK="):
                out[int(e.split(b"=")[1])] = pid
    return out


def start(log):
    subprocess.run(["rm", "-rf", ck, f"{work}/run"], check=True)
    os.makedirs(ck)
    return subprocess.Popen(base + ["--set", f"train.steps={STEPS}"], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_tmp(proc, k):
    """Polls until the k-th checkpoint's .tmp file appears; its name and the time, or None."""
    name = f"step_{k * EVERY:08d}.h5.tmp"
    while proc.poll() is None:
        if name in tmp_files():
            return name, time.monotonic()
        time.sleep(0.0005)
    return None


# Calibration: the write-and-publish window of each checkpoint of an uninterrupted run.
windows = []
with open(f"{work}/calibrate.log", "w") as log:
    proc = start(log)
    for k in range(1, STEPS // EVERY):
        seen = wait_tmp(proc, k)
        if seen is None:
            break
        want = seen[0][:-4]
        while proc.poll() is None and latest() != want:
            time.sleep(0.0005)
        windows.append(time.monotonic() - seen[1])
    proc.wait()
if proc.returncode != 0 or not windows:
    sys.exit(f"run_kill_trials: calibration run failed (exit {proc.returncode}); see {work}/calibrate.log")
W = statistics.median(windows)
print(f"calibration: write-and-publish window median {W * 1e3:.1f} ms "
      f"(min {min(windows) * 1e3:.1f}, max {max(windows) * 1e3:.1f}, {len(windows)} checkpoints)",
      flush=True)

counts = {"mid-write": 0, "pre-publish": 0, "after-publish": 0}
losses, skipped, end_times = [], 0, []
for t in range(1, trials + 1):
    k = rng.randint(2, 4)
    delay = rng.uniform(0, 1.25 * W)
    victim = rng.randint(0, 1)
    with open(f"{work}/trial.log", "w") as log:
        proc = start(log)
        seen = wait_tmp(proc, k)
        pids = rank_pids(proc.pid)
        if seen is None or victim not in pids:
            proc.wait()
            skipped += 1
            print(f"trial {t}: no kill (the job ended first or rank {victim} was not found)")
            continue
        time.sleep(max(0.0, delay - (time.monotonic() - seen[1])))
        killed_at = time.monotonic()
        os.kill(pids[victim], signal.SIGKILL)
        try:
            proc.wait(timeout=60)
            end_times.append(time.monotonic() - killed_at)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            losses.append(f"trial {t}: the job did not end within 60 s of the kill")
    new = seen[0][:-4]
    if os.path.exists(f"{ck}/{seen[0]}"):
        where = "mid-write"
    elif latest() == new:
        where = "after-publish"
    else:
        where = "pre-publish"
    counts[where] += 1
    name = latest()
    verdict = "ok"
    if name is None:
        verdict = "LOSS: no latest"
    else:
        v = subprocess.run([f"{bin_dir}/tessera-ckpt", "verify", f"{ck}/{name}"],
                           capture_output=True, text=True)
        if v.returncode != 0:
            verdict = f"LOSS: latest {name} does not verify: {(v.stdout + v.stderr).strip()[-300:]}"
        else:
            step = int(name[len("step_"):-len(".h5")])
            r = subprocess.run(base + ["--set", f"train.steps={step + 2}", "--resume"],
                               capture_output=True, text=True, timeout=300)
            if r.returncode != 0 or f"resumed from {ck}/{name}" not in r.stdout:
                verdict = f"LOSS: resume from {name} failed (exit {r.returncode}): " + \
                          (r.stdout + r.stderr).strip()[-300:]
    if verdict != "ok":
        losses.append(f"trial {t}: {verdict}")
    print(f"trial {t}: checkpoint {k} (step {k * EVERY}), kill rank {victim} "
          f"{delay * 1e3:.1f} ms after its .tmp appeared: {where}; latest={name}; {verdict}; "
          f"job ended {end_times[-1]:.2f} s after the kill", flush=True)

done = trials - skipped
inside = counts["mid-write"] + counts["pre-publish"]
print(f"\nsummary: {done} kill -9 trials ({skipped} without a kill), {inside} inside the "
      f"write-and-publish window ({counts['mid-write']} mid-write, {counts['pre-publish']} "
      f"between rename and publish), {counts['after-publish']} just after it; "
      f"losses: {len(losses)}")
if end_times:
    print(f"job end after the kill: median {statistics.median(end_times):.2f} s, "
          f"max {max(end_times):.2f} s")
for line in losses:
    print(line)
sys.exit(1 if losses else 0)
PY
