#!/usr/bin/python3
"""The bad-input catalogue (issue 15): one table of bad inputs to the five apps, each run end to
end, at 1 rank and (where a grid matters) at 4 under mpirun. Every row asserts:
  - a non-zero exit, not by a signal (no crash), and not the 60 s guard's kill (no hang);
  - every rank ended within 10 s of the start (mpirun returns only when all have ended);
  - stderr holds the row's message: a regex naming the thing and the fix;
  - no rank printed a different error (a rank that failed elsewhere, e.g. in a collective, shows
    a check that was not made on every rank);
  - a single-rank run prints exactly one stderr line (docs/USAGE.md: every error is one line);
  - the row's own after-check, if any (e.g. `latest` still verifies after a full disk).
The full-disk rows need a tmpfs (mount needs root): without one they are reported NOT RUN, the
other rows still run, and the test exits 77 (ctest: Not Run) if nothing failed, 1 if anything
did. Run: TESSERA_BIN=build/apps TESSERA_ROOT=. /usr/bin/python3 tests/apps/bad_input_catalogue.py
[--only REGEX] [--ranks single|grid] [--list]. `--ranks single` runs only the 1-rank runs of the
rows, `--ranks grid` only their runs under mpirun: ctest runs the two halves as two tests
(bad_input_catalogue_test.sh, bad_input_catalogue_grid_test.sh), the first beside other tests,
the second under the lock of the tests that start mpirun (tests/CMakeLists.txt)."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

BIN = os.environ["TESSERA_BIN"]
ROOT = os.environ["TESSERA_ROOT"]
LIMIT_S = 10.0  # every rank must have ended by then
GUARD_S = 60    # the hang guard (timeout's kill)
ENV = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1",
           OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
MPIRUN = ["mpirun", "--oversubscribe", "--bind-to", "none"]
W = tempfile.mkdtemp(prefix="tessera-catalogue.")
MOUNTS = []


def app(name):
    return os.path.join(BIN, "tessera-" + name)


def sets(**kv):
    """--set pairs from keyword arguments: sets(train__steps=5) -> --set train.steps=5."""
    out = []
    for k, v in kv.items():
        out += ["--set", k.replace("__", ".") + "=" + str(v)]
    return out


def small(out, **kv):
    """The small model of tests/apps/lib.sh on the fixture data, writing into W/out/<out>."""
    base = dict(model__vocab_size=512, model__n_layer=2, model__n_embd=64, model__n_head=4,
                model__max_seq_len=64, train__seq_len=32, train__batch_size=8,
                train__steps=2, train__val_every=0, train__val_batches=2, train__log_every=1,
                data__train=f"{W}/data/train.bin", data__val=f"{W}/data/val.bin",
                data__tokenizer=f"{W}/data/tokenizer", train__out_dir=f"{W}/out/{out}")
    base.update(kv)
    return sets(**base)


def train(out, *extra, **kv):
    return [app("train"), f"{ROOT}/configs/tiny.yaml"] + small(out, **kv) + list(extra)


def gen(*extra, model=None):
    return [app("generate"), model or f"{W}/out/run/model.h5", "--prompt", "ROMEO:", "-n", "4"] + \
        list(extra)


def write(path, data, mode="w"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode) as f:
        f.write(data)


def run_quiet(argv, what):
    r = subprocess.run(argv, env=ENV, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"fixture failed: {what}: exit {r.returncode}\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return r


def fixtures():
    """Once per run: data (vocab 512), a 300-token tokenizer, a trained 4-step checkpoint dir
    (step 2 and 4, latest) and its model.h5, and a few broken files."""
    with open(f"{ROOT}/data/shakespeare.txt", "rb") as f:
        text = f.read(200000)
    write(f"{W}/small.txt", text, "wb")
    run_quiet([app("data"), "prepare", "--input", f"{W}/small.txt", "--vocab-size", "512",
               "--out-dir", f"{W}/data"], "tessera-data prepare")
    os.makedirs(f"{W}/tok300")
    run_quiet([app("data"), "train-tokenizer", "--input", f"{W}/small.txt", "--vocab-size", "300",
               "--out", f"{W}/tok300/tokenizer"], "tessera-data train-tokenizer (300)")
    os.makedirs(f"{W}/tok600")
    run_quiet([app("data"), "train-tokenizer", "--input", f"{W}/small.txt", "--vocab-size", "600",
               "--out", f"{W}/tok600/tokenizer"], "tessera-data train-tokenizer (600)")
    run_quiet(train("run", train__steps=4, checkpoint__dir=f"{W}/ck", checkpoint__every=2),
              "4-step training run")
    # vocab 600 (Vp 640): a model the same shape as one with vocab 520
    run_quiet(train("run600", train__steps=2, model__vocab_size=600,
                    checkpoint__dir=f"{W}/ck600"), "2-step training run, vocab 600")
    ck = f"{W}/ck/step_00000004.h5"
    size = os.path.getsize(ck)
    with open(ck, "rb") as f:
        write(f"{W}/truncated.h5", f.read(size // 2), "wb")
    write(f"{W}/notes.h5", "these are notes, not an HDF5 file\n" * 100)
    write(f"{W}/garbage.bin", os.urandom(4096), "wb")
    write(f"{W}/regular_file", "a regular file\n")
    write(f"{W}/empty.txt", "")
    os.makedirs(f"{W}/adir", exist_ok=True)


def copy_ck(name, latest=None):
    """A copy of the trained checkpoint dir as W/<name>, optionally with `latest` replaced."""
    d = f"{W}/{name}"
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(f"{W}/ck", d)
    if latest is not None:
        write(f"{d}/latest", latest, "wb" if isinstance(latest, bytes) else "w")
    return d


def tmpfs(path, size):
    """A fresh tmpfs of `size` at `path`; False when mount fails (not root)."""
    if os.path.ismount(path):
        subprocess.run(["umount", path], capture_output=True)
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                       capture_output=True)
    if r.returncode == 0:
        MOUNTS.append(path)
    return r.returncode == 0


def verify_latest(d, expected):
    """After-check: `latest` in d names `expected`, which tessera-ckpt verify accepts, and no
    .tmp file is left."""
    try:
        latest = open(f"{d}/latest").read().strip()
    except OSError as e:
        return f"no latest: {e}"
    if latest != expected:
        return f"latest names '{latest}', expected {expected}"
    tmp = [n for n in os.listdir(d) if n.endswith(".tmp")]
    if tmp:
        return f".tmp files left: {tmp}"
    r = subprocess.run([app("ckpt"), "verify", f"{d}/{latest}"], env=ENV, capture_output=True,
                       text=True)
    if r.returncode != 0 or ": sound (" not in r.stdout + r.stderr:
        return f"tessera-ckpt verify {latest}: exit {r.returncode}: {(r.stdout + r.stderr).strip()}"
    return None


def nothing_left(d, *names):
    left = [n for n in names if os.path.exists(f"{d}/{n}")]
    return f"files left: {left}" if left else None


# ---- The catalogue -------------------------------------------------------------------------------
# Each row: name, input (what a reader of the docs sees), ranks, argv (a function of the rank
# count n, so setup runs per run), the message regex, and optionally an after-check returning an
# error string or None, and needs="tmpfs". The words the regex names are the thing and the fix.
FULL = r"no space left on device \(the disk is full"
CASES = []


def case(name, given, ranks, argv, expect, after=None, needs=None):
    CASES.append(dict(name=name, given=given, ranks=ranks, argv=argv, expect=expect, after=after,
                      needs=needs))


# -- tessera-train: the config file and --set ------------------------------------------------------
write(f"{W}/tab.yaml", "train:\n\tsteps: 5\n")
case("yaml_tab", "a config indented with a tab", [1],
     lambda n: [app("train"), f"{W}/tab.yaml"],
     r"tab.yaml:2: line 2 is indented with a tab; YAML indents with spaces only: replace the "
     r"tab with spaces")
write(f"{W}/syntax.yaml", "train: [steps: 5\n")
case("yaml_syntax", "a config with an unclosed '['", [1],
     lambda n: [app("train"), f"{W}/syntax.yaml"],
     r"syntax.yaml:2:1: YAML syntax error: .*; fix the file at that line and column")
case("config_missing", "a config path that does not exist", [1],
     lambda n: [app("train"), f"{W}/nope.yaml"], r"config file '.*nope.yaml' not found; check the path")
case("unknown_key_set", "--set modle.n_layer=2 (misspelt section)", [1],
     lambda n: train("k") + sets(modle__n_layer=2),
     r"override 'modle.n_layer=2': unknown key 'modle.n_layer'; did you mean 'model.n_layer'\?")
case("unknown_key_file", "a config file with train.stepz", [1],
     lambda n: [app("train"), f"{W}/stepz.yaml"],
     r"stepz.yaml:2: unknown key 'train.stepz'; did you mean 'train.steps'\?")
write(f"{W}/stepz.yaml", "train:\n  stepz: 5\n")
case("wrong_type", "--set train.steps=ten", [1],
     lambda n: train("t") + sets(train__steps="ten"), r"key 'train.steps' expects an integer, got 'ten'")
case("wrong_type_bool", "--set parallel.overlap=maybe", [1],
     lambda n: train("t") + sets(parallel__overlap="maybe"), r"key 'parallel.overlap' expects true or false, got 'maybe'")
case("set_without_equals", "--set train.steps (no '=')", [1],
     lambda n: train("t") + ["--set", "train.steps"], r"override 'train.steps': no '='; write it as key=value, e.g. --set train.steps=100")
case("negative_steps", "--set train.steps=-5", [1, 4],
     lambda n: train("t") + sets(train__steps=-5), r"key 'train.steps' = -5 must be > 0; set it to a positive number of steps")
case("zero_batch", "--set train.batch_size=0", [1],
     lambda n: train("t") + sets(train__batch_size=0), r"key 'train.batch_size' = 0 must be > 0; set it to a positive number")
case("negative_lr", "--set optim.lr=-1", [1],
     lambda n: train("t") + sets(optim__lr=-1), r"key 'optim.lr' = -1.0 must be > 0; e.g. 1e-3")
case("embd_not_multiple_of_heads", "model.n_embd=60 with model.n_head=8", [1],
     lambda n: train("t") + sets(model__n_embd=60, model__n_head=8),
     r"key 'model.n_embd' = 60 is not divisible by model.n_head = 8; set model.n_embd to a "
     r"multiple of model.n_head \(56 or 64\)")
case("seq_len_over_context", "train.seq_len=128 > model.max_seq_len=64", [1],
     lambda n: train("t") + sets(train__seq_len=128), r"key 'train.seq_len' = 128 exceeds model.max_seq_len = 64; lower train.seq_len or raise "
     r"model.max_seq_len")
case("bad_cli_flag", "tessera-train --no-such-flag", [1],
     lambda n: [app("train"), "--no-such-flag"], r"command line: The following argument was not expected: --no-such-flag; see --help")
case("unknown_device", "--set train.device=tpu", [1],
     lambda n: train("t") + sets(train__device="tpu"), r"key 'train.device' = \"tpu\" is not a device; use cpu or cuda")

# -- tessera-train: the grid -----------------------------------------------------------------------
case("tp_not_dividing_heads", "parallel.tp=4, model.n_head=2 (n_embd 64)", [4],
     lambda n: train("g") + sets(parallel__tp=4, model__n_head=2),
     r"grid: model.n_head 2 is not divisible by parallel.tp 4.*change parallel.tp")
case("tp_not_dividing_world", "parallel.tp=3 on 4 ranks", [4],
     lambda n: train("g") + sets(parallel__tp=3),
     r"grid: world size 4 is not divisible by parallel.tp 3; run on a multiple of 3")
case("seq_len_not_dividing_tp_with_sequence_parallel",
     "parallel.sequence_parallel=true, train.seq_len=30 on tp 4", [4],
     lambda n: train("g") + sets(parallel__tp=4, parallel__sequence_parallel="true",
                                 train__seq_len=30),
     r"grid: train.seq_len 30 is not divisible by parallel.tp 4 with parallel.sequence_parallel "
     r"true .*change train.seq_len to a multiple of 4, or set parallel.sequence_parallel=false")
case("tp_over_world", "parallel.tp=2 on 1 rank", [1],
     lambda n: train("g") + sets(parallel__tp=2),
     r"grid: world size 1 is not divisible by parallel.tp 2")
case("batch_not_dividing_dp", "train.batch_size=6 on dp 4", [4],
     lambda n: train("g") + sets(train__batch_size=6), r"grid: train.batch_size 6 is not divisible by dp 4 .*change train.batch_size to a "
     r"multiple of 4")
case("zero_stage", "optim.zero=2", [1, 4],
     lambda n: train("g") + sets(optim__zero=2),
     r"key 'optim.zero' = 2 is not a ZeRO stage; use 0 \(every dp rank holds all AdamW state\) or "
     r"1 \(moments sharded over dp\)")
case("zero_with_bf16_wire", "optim.zero=1 with parallel.compress_bf16=true", [4],
     lambda n: train("g") + sets(optim__zero=1, parallel__compress_bf16="true"),
     r"key 'optim.zero' = 1 does not combine with parallel.compress_bf16 yet; set optim.zero=0 or "
     r"parallel.compress_bf16=false")
case("tp_zero", "parallel.tp=0", [1, 4],
     lambda n: train("g") + sets(parallel__tp=0), r"key 'parallel.tp' = 0 must be >= 1; use 1 for no tensor parallelism")

# -- tessera-train: data and tokenizer -------------------------------------------------------------
case("data_missing", "data.val=/nonexistent/val.bin (validation on)", [1, 4],
     lambda n: train("d") + sets(data__val="/nonexistent/val.bin", train__val_every=1),
     r"data.val: .*'/nonexistent/val.bin'.*(not found|No such file)")
case("data_garbage", "data.train = 4 kB of random bytes", [1],
     lambda n: train("d") + sets(data__train=f"{W}/garbage.bin"), 
     r"data.train: data file '.*garbage.bin': bad magic -?[0-9]+ \(expected 20240520\); is it a "
     r"token shard written by tessera-data or llm.c\?")
case("data_directory", "data.train = a directory", [1],
     lambda n: train("d") + sets(data__train=f"{W}/adir"),
     r"data.train: .*adir' is a directory, not a token file; give a .bin written by tessera-data")
case("tokens_over_vocab", "512-token shards, model.vocab_size=300, no data.tokenizer", [1, 4],
     lambda n: train("d") + sets(model__vocab_size=300, data__tokenizer=""),
     r"holds token id [0-9]+ at position [0-9]+, outside model.vocab_size 300; tokenize with "
     r"the tokenizer the model was configured for or raise model.vocab_size")
case("tokenizer_vocab_differs", "data.tokenizer of 600 tokens, model.vocab_size=512", [1, 4],
     lambda n: train("d") + sets(data__tokenizer=f"{W}/tok600/tokenizer"),
     r"data.tokenizer '.*tok600/tokenizer' has 600 tokens, more than model.vocab_size 512; set "
     r"model.vocab_size: 600, or data.tokenizer to the tokenizer that wrote data.train")
case("tokenizer_missing", "data.tokenizer=/nonexistent/tok", [1],
     lambda n: train("d") + sets(data__tokenizer="/nonexistent/tok"),
     r"data.tokenizer: cannot open tokenizer vocabulary '/nonexistent/tok.vocab.json': No such "
     r"file or directory; check the path")

# -- tessera-train: output and checkpoint directories ----------------------------------------------
case("out_dir_under_file", "train.out_dir=<a regular file>/run", [1, 4],
     lambda n: train("o") + sets(train__out_dir=f"{W}/regular_file/run"),
     r"train.out_dir '.*regular_file/run': '.*regular_file' is a file, not a directory; set "
     r"train.out_dir to a directory path, or move that file away")
case("ckpt_dir_under_file", "checkpoint.dir=<a regular file>/ck", [1, 4],
     lambda n: train("o") + sets(checkpoint__dir=f"{W}/regular_file/ck", train__steps=2),
     r"checkpoint.dir '.*regular_file/ck': '.*regular_file' is a file, not a directory; set "
     r"checkpoint.dir to a directory path")

# -- tessera-train: resume and init_from -----------------------------------------------------------
case("latest_garbage", "checkpoint.dir whose latest holds random bytes, --resume", [1, 4],
     lambda n: train("r", "--resume", checkpoint__dir=copy_ck("ck_garbage", b"\x89\x01HDF\x00\xff\x1a" * 5),
                     train__steps=8),
     r"latest' does not hold a checkpoint file name \(binary bytes: a damaged file\); delete it "
     r"and resume from a checkpoint path, e.g. --set checkpoint.resume=.*ck_garbage/"
     r"step_00000004.h5 \(the newest there")
case("latest_names_missing", "latest names step_00000099.h5, which is not there", [1],
     lambda n: train("r", "--resume", checkpoint__dir=copy_ck("ck_missing", "step_00000099.h5"),
                     train__steps=8),
     r"'latest' names 'step_00000099.h5', which does not exist \(deleted or moved\?\); resume "
     r"from an existing checkpoint path instead")
case("resume_no_latest", "--resume with an empty checkpoint.dir", [1],
     lambda n: train("r", "--resume", checkpoint__dir=f"{W}/adir", train__steps=8),
     r"checkpoint dir '.*adir' has no 'latest' file .*; check checkpoint.dir, or start "
     r"without checkpoint.resume")
case("resume_without_dir", "--resume with no checkpoint.dir", [1],
     lambda n: train("r", "--resume", train__steps=8),
     r"key 'checkpoint.resume' = \"latest\" needs checkpoint.dir to look in; set checkpoint.dir")
case("resume_vocab_differs", "resume a vocab 600 checkpoint with model.vocab_size=520 "
     "(both padded to 640: same shapes)", [1, 4],
     lambda n: train("r", "--resume", checkpoint__dir=f"{W}/ck600", train__steps=8,
                     model__vocab_size=520),
     r"checkpoint '.*step_00000002.h5' was written with another model config \(model.vocab_size "
     r"600 in the checkpoint, 520 in this model\); set model.vocab_size: 600 to load it")
case("resume_vocab_shape", "resume a vocab 512 checkpoint with model.vocab_size=640", [1],
     lambda n: train("r", "--resume", checkpoint__dir=copy_ck("ck_vocab"), train__steps=8,
                     model__vocab_size=640),
     r"\(model.vocab_size 512 in the checkpoint, 640 in this model\); set model.vocab_size: 512 "
     r"to load it")
case("resume_heads_differ", "resume an n_head 4 checkpoint with model.n_head=2", [1, 4],
     lambda n: train("r", "--resume", checkpoint__dir=copy_ck("ck_heads"), train__steps=8,
                     model__n_head=2),
     r"checkpoint '.*step_00000004.h5' was written with another model config \(model.n_head 4 in "
     r"the checkpoint, 2 in this model\); set model.n_head: 4 to load it")
case("init_from_heads_differ", "train.init_from an n_head 4 model.h5 with model.n_head=2", [1],
     lambda n: train("i", train__init_from=f"{W}/out/run/model.h5", model__n_head=2),
     r"train.init_from: checkpoint '.*model.h5' was written with another model config "
     r"\(model.n_head 4 in the checkpoint, 2 in this model\); set model.n_head: 4 to load it")
case("resume_batch_differs", "resume a batch 8 checkpoint with train.batch_size=16", [1, 4],
     lambda n: train("r", "--resume", checkpoint__dir=copy_ck("ck_batch"), train__steps=8,
                     train__batch_size=16),
     r"was written with another data order \(train.batch_size 8 in the checkpoint, 16 in this "
     r"run\); .*set train.batch_size: 8 to resume it, or start a new run from its weights with "
     r"--set train.init_from=")
case("resume_data_differs", "resume with data.train set to another file", [1, 4],
     lambda n: train("r", "--resume", checkpoint__dir=copy_ck("ck_data"), train__steps=8,
                     data__train=f"{W}/data/val.bin"),
     r"was written with another data order \(data.train '.*/train.bin' in the checkpoint, "
     r"'.*/val.bin' in this run\); .*set data.train: '.*/train.bin' to resume it, or start a new "
     r"run from its weights")
case("resume_truncated", "checkpoint.resume = a checkpoint cut in half", [1, 4],
     lambda n: train("r", train__steps=8, checkpoint__dir=f"{W}/out/rt",
                     checkpoint__resume=f"{W}/truncated.h5"),
     r"checkpoint '.*truncated.h5': cannot be opened as an HDF5 file \(truncated, corrupt, or "
     r"not a checkpoint\); use an earlier checkpoint")
case("resume_not_hdf5", "checkpoint.resume = a text file", [1],
     lambda n: train("r", train__steps=8, checkpoint__dir=f"{W}/out/rn",
                     checkpoint__resume=f"{W}/notes.h5"),
     r"checkpoint '.*notes.h5': cannot be opened as an HDF5 file")
case("resume_done", "resume a step-4 checkpoint with train.steps=4", [1],
     lambda n: train("r", "--resume", checkpoint__dir=copy_ck("ck_done"), train__steps=4),
     r"is at step 4, train.steps is 4: nothing to do; raise train.steps")

# -- tessera-train: a full disk (tmpfs), at 1, 2 (tp 2) and 4 ranks (dp 2 x tp 2) ------------------
def full_ckpt(n):
    d = f"{W}/full_ck{n}"
    if not tmpfs(d, "2500k"):
        return None
    tp = 1 if n == 1 else 2
    return train(f"full_ck{n}", train__steps=10, checkpoint__dir=d, checkpoint__every=5,
                 parallel__tp=tp)


def full_final(n):
    d = f"{W}/full_out{n}"
    if not tmpfs(d, "256k"):
        return None
    tp = 1 if n == 1 else 2
    return train("x", train__steps=10, train__out_dir=d, parallel__tp=tp)


for n in (1, 2, 4):
    case(f"full_disk_checkpoint_{n}", f"checkpoint.dir on a 2.5 MB tmpfs (2nd checkpoint fails)",
         [n], full_ckpt, r"step_00000010.h5.tmp' failed on world rank 0: " + FULL +
         r": the file system holding .* cannot take this 1.7 MB file\); free space there, or set "
         r"checkpoint.dir",
         after=lambda n: verify_latest(f"{W}/full_ck{n}", "step_00000005.h5"), needs="tmpfs")
    case(f"full_disk_final_{n}", "train.out_dir on a 256 kB tmpfs (model.h5 fails)", [n],
         full_final, r"model.h5.tmp' failed on world rank 0: " + FULL + r".*; free space "
         r"there, or set .*train.out_dir",
         after=lambda n: nothing_left(f"{W}/full_out{n}", "model.h5", "model.h5.tmp"),
         needs="tmpfs")

# -- tessera-data ----------------------------------------------------------------------------------
case("data_empty_corpus", "prepare --input <empty file>", [1],
     lambda n: [app("data"), "prepare", "--input", f"{W}/empty.txt", "--vocab-size", "512",
                "--out-dir", f"{W}/out/de"],
     r"--input '.*empty.txt' is empty \(0 bytes\); give a text corpus")
case("data_vocab_256", "prepare --vocab-size 256", [1],
     lambda n: [app("data"), "prepare", "--input", f"{W}/small.txt", "--vocab-size", "256",
                "--out-dir", f"{W}/out/dv"],
     r"--vocab-size 256 is too small: .*at least 257; give e.g. --vocab-size 4096")
case("data_missing_input", "prepare --input /nonexistent.txt", [1],
     lambda n: [app("data"), "prepare", "--input", "/nonexistent.txt", "--vocab-size", "512",
                "--out-dir", f"{W}/out/dm"], r"cannot read --input '/nonexistent.txt': No such file or directory; check the path")
write(f"{W}/badjson.vocab.json", '{"a": 1,')
case("data_malformed_vocab_json", "tokenize --tokenizer <prefix whose vocab.json is cut short>",
     [1], lambda n: (shutil.copy(f"{W}/data/tokenizer.merges.txt", f"{W}/badjson.merges.txt"),
                     [app("data"), "tokenize", "--tokenizer", f"{W}/badjson", "--input",
                      f"{W}/small.txt", "--train-out", f"{W}/out/t.bin", "--val-out",
                      f"{W}/out/v.bin"])[1],
     r"tokenizer vocabulary '.*badjson.vocab.json' is not valid JSON .*expected GPT-2's vocab.json")
case("data_info_garbage", "info <random bytes>", [1],
     lambda n: [app("data"), "info", f"{W}/garbage.bin"],
     r"data file '.*garbage.bin': bad magic -?[0-9]+ \(expected 20240520\)")
case("data_unknown_command", "tessera-data frobnicate", [1],
     lambda n: [app("data"), "frobnicate"],
     r"command line: unknown command 'frobnicate'; use one of .*prepare.* \(see --help\)")
case("data_val_fraction", "tokenize --val-fraction 1.5", [1],
     lambda n: [app("data"), "tokenize", "--tokenizer", f"{W}/data/tokenizer", "--input",
                f"{W}/small.txt", "--train-out", f"{W}/out/t.bin", "--val-out", f"{W}/out/v.bin",
                "--val-fraction", "1.5"],
     r"--val-fraction 1.5 must lie strictly between 0 and 1, e.g. 0.1")

# -- tessera-generate ------------------------------------------------------------------------------
case("gen_empty_prompt", "--prompt ''", [1],
     lambda n: [app("generate"), f"{W}/out/run/model.h5", "--prompt", ""],
     r"--prompt is empty; give the text to continue")
case("gen_temperature", "--temperature -1", [1, 4],
     lambda n: gen("--temperature", "-1"),
     r"--temperature -1 is out of range: it must be a finite number >= 0")
case("gen_temperature_text", "--temperature warm", [1],
     lambda n: gen("--temperature", "warm"), r"command line: Could not convert: --temperature = warm; see --help")
case("gen_top_p", "--top-p 1.5", [1, 4],
     lambda n: gen("--top-p", "1.5"), r"--top-p 1.5 is out of range: it must satisfy 0 < top_p <= 1")
case("gen_top_k", "--top-k -3", [1, 4],
     lambda n: gen("--top-k", "-3"), r"--top-k -3 is out of range: it must be >= 0")
case("gen_missing_model", "a weights path that does not exist", [1],
     lambda n: gen(model="/nonexistent/model.h5"),
     r"checkpoint '/nonexistent/model.h5': not found; check the path")
case("gen_truncated", "a checkpoint cut in half", [1, 4],
     lambda n: gen(model=f"{W}/truncated.h5"),
     r"checkpoint '.*truncated.h5': cannot be opened as an HDF5 file")
case("gen_not_hdf5", "a text file as the checkpoint", [1],
     lambda n: gen(model=f"{W}/notes.h5"),
     r"checkpoint '.*notes.h5': cannot be opened as an HDF5 file")
case("gen_tokenizer_vocab_differs", "--tokenizer of 300 tokens for a 512-token model", [1, 4],
     lambda n: gen("--tokenizer", f"{W}/tok300/tokenizer"),
     r"tokenizer '.*tok300/tokenizer' has 300 tokens, the model 512; pass the tokenizer the "
     r"model was trained with \(--tokenizer\)")
case("gen_malformed_tokenizer", "--tokenizer whose vocab.json is cut short", [1],
     lambda n: gen("--tokenizer", f"{W}/badjson"),
     r"tokenizer vocabulary '.*badjson.vocab.json' is not valid JSON")
case("gen_tp_not_dividing", "--tp 3 on 4 ranks", [4],
     lambda n: gen("--tp", "3"), r"--tp 3 does not divide the 4 ranks; pick a divisor")
case("gen_device", "--device tpu", [1], lambda n: gen("--device", "tpu"),
     r"--device 'tpu' is not a backend; use cpu or cuda")

# -- tessera-ckpt ----------------------------------------------------------------------------------
case("ckpt_verify_missing", "verify /nonexistent.h5", [1],
     lambda n: [app("ckpt"), "verify", "/nonexistent.h5"], r"checkpoint '/nonexistent.h5': not found; check the path")
case("ckpt_verify_truncated", "verify a checkpoint cut in half", [1, 4],
     lambda n: [app("ckpt"), "verify", f"{W}/truncated.h5"],
     r"checkpoint '.*truncated.h5': cannot be opened as an HDF5 file")
case("ckpt_inspect_not_hdf5", "inspect a text file", [1],
     lambda n: [app("ckpt"), "inspect", f"{W}/notes.h5"],
     r"checkpoint '.*notes.h5' cannot be opened as an HDF5 file")
case("ckpt_convert_exists", "convert onto an existing output without --force", [1],
     lambda n: [app("ckpt"), "convert", f"{W}/ck/step_00000004.h5", f"{W}/regular_file"],
     r"convert: output '.*regular_file' exists; remove it, choose another name, or pass --force")
case("ckpt_convert_bad_to", "convert --to fp8", [1],
     lambda n: [app("ckpt"), "convert", f"{W}/ck/step_00000004.h5", f"{W}/out/c.h5", "--to",
                "fp8"], r"--to 'fp8' is not a target; use hdf5, bf16, llmc")

# -- tessera-serve ---------------------------------------------------------------------------------
case("serve_missing_model", "a weights path that does not exist", [1],
     lambda n: [app("serve"), "/nonexistent/model.h5", "--port", "0"],
     r"checkpoint '/nonexistent/model.h5': not found; check the path")
case("serve_bad_port", "--port 70000", [1],
     lambda n: [app("serve"), f"{W}/out/run/model.h5", "--port", "70000"],
     r"--port 70000: key 'serve.port' = 70000 is not a TCP port; pick 1-65535")
case("serve_max_sequences", "--max-sequences 0", [1],
     lambda n: [app("serve"), f"{W}/out/run/model.h5", "--port", "0", "--max-sequences", "0"],
     r"--max-sequences 0: key 'serve.max_sequences' = 0 must be >= 1; at least one sequence must "
     r"decode")
write(f"{W}/serve_queue.yaml", "serve:\n  max_queue: 0\n")
case("serve_config_max_queue", "a serve config with max_queue: 0", [1],
     lambda n: [app("serve"), f"{W}/out/run/model.h5", "--config", f"{W}/serve_queue.yaml"],
     r"serve_queue.yaml: key 'serve.max_queue' = 0 must be >= 1; a request that finds every slot "
     r"busy waits in the queue")
case("serve_set_kv_cache_mb", "--set serve.kv_cache_mb=-1", [1],
     lambda n: [app("serve"), f"{W}/out/run/model.h5", "--set", "serve.kv_cache_mb=-1"],
     r"key 'serve.kv_cache_mb' = -1.0 must be >= 0; give a budget in MiB, or 0 for none")
write(f"{W}/serve_typo.yaml", "serve:\n  max_queu: 4\n")
case("serve_config_unknown_key", "a serve config with max_queu", [1],
     lambda n: [app("serve"), f"{W}/out/run/model.h5", "--config", f"{W}/serve_typo.yaml"],
     r"serve_typo.yaml:2: unknown key 'serve.max_queu'; did you mean 'serve.max_queue'\?")
write(f"{W}/serve_model.yaml", "serve:\n  port: 0\nmodel:\n  n_layer: 2\n")
case("serve_config_other_section", "a serve config that also sets model.n_layer", [1],
     lambda n: [app("serve"), f"{W}/out/run/model.h5", "--config", f"{W}/serve_model.yaml"],
     r"config file '.*serve_model.yaml' sets keys outside the serve section; tessera-serve reads "
     r"only serve.\* keys")
case("serve_config_device", "--set serve.device=tpu", [4],
     lambda n: [app("serve"), f"{W}/out/run/model.h5", "--set", "serve.device=tpu"],
     r"key 'serve.device' = \"tpu\" is not a device; use cpu or cuda")
case("serve_tp_not_dividing", "--tp 3 on 4 ranks", [4],
     lambda n: [app("serve"), f"{W}/out/run/model.h5", "--port", "0", "--tp", "3"],
     r"--tp 3 does not divide the 4 ranks; pick a divisor")
case("serve_tokenizer_vocab_differs", "--tokenizer of 300 tokens for a 512-token model", [1],
     lambda n: [app("serve"), f"{W}/out/run/model.h5", "--port", "0", "--tokenizer",
                f"{W}/tok300/tokenizer"],
     r"tokenizer '.*tok300/tokenizer' has 300 tokens, the model 512; pass the tokenizer")


# ---- The runner ----------------------------------------------------------------------------------
ERROR_LINE = re.compile(r"tessera-[a-z]+: ")


def run_case(c, n):
    """Returns (status, detail): status is 'ok', 'FAIL' or 'NOT RUN'."""
    argv = c["argv"](n)
    if argv is None:
        return "NOT RUN", "cannot mount a tmpfs (needs root)"
    if n > 1:
        argv = MPIRUN + ["-n", str(n)] + argv
    start = time.monotonic()
    try:
        r = subprocess.run(["timeout", str(GUARD_S)] + argv, env=ENV, capture_output=True,
                           text=True, errors="replace")
    except OSError as e:
        return "FAIL", f"could not start: {e}"
    elapsed = time.monotonic() - start
    rc = r.returncode
    err = r.stderr
    lines = [l for l in err.splitlines() if l.strip()]
    errors = [l for l in lines if ERROR_LINE.search(l)]
    hits = [l for l in errors if re.search(c["expect"], l)]
    where = f"exit {rc} in {elapsed:.1f} s"
    if rc == 0:
        return "FAIL", f"exit 0 ({elapsed:.1f} s); stderr: {err.strip()[-400:]}"
    if rc in (124, 137):
        return "FAIL", f"hung: killed by the {GUARD_S} s guard"
    if rc > 128 or "Segmentation fault" in err or "signal 11" in err:
        return "FAIL", f"crashed ({where}): {err.strip()[-400:]}"
    if elapsed >= LIMIT_S:
        return "FAIL", f"the last rank ended after {elapsed:.1f} s (limit {LIMIT_S:.0f} s)"
    if not hits:
        return "FAIL", f"{where}; no line matches /{c['expect']}/: " + " | ".join(lines[-4:])
    others = [l for l in errors if l not in hits]
    if others:
        return "FAIL", f"{where}; a rank printed another error: {others[0]}"
    if n == 1 and len(lines) != 1:
        return "FAIL", f"{where}; {len(lines)} stderr lines, expected one: " + " | ".join(lines)
    if c["after"]:
        problem = c["after"](n)
        if problem:
            return "FAIL", f"{where}; after-check: {problem}"
    ranks = len({l.split("]")[0] for l in hits})
    return "ok", f"{where}, {ranks} rank(s) printed it: {hits[0]}"


def main():
    only = None
    if "--only" in sys.argv:
        only = re.compile(sys.argv[sys.argv.index("--only") + 1])
    if "--list" in sys.argv:
        for c in CASES:  # a Markdown table for docs/RELIABILITY.md
            ranks = ", ".join(str(n) for n in c["ranks"])
            words = c["expect"].replace("|", "\\|")
            print(f"| `{c['name']}` | {c['given']} | {ranks} | `{words}` |")
        return 0
    wanted = lambda n: True
    if "--ranks" in sys.argv:
        half = sys.argv[sys.argv.index("--ranks") + 1]
        if half not in ("single", "grid"):
            print(f"--ranks {half}: expected single or grid", file=sys.stderr)
            return 2
        wanted = (lambda n: n == 1) if half == "single" else (lambda n: n > 1)
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    t0 = time.monotonic()
    fixtures()
    print(f"fixtures ready in {time.monotonic() - t0:.1f} s")
    counts = {"ok": 0, "FAIL": 0, "NOT RUN": 0}
    cases_run = 0
    for c in CASES:
        if only and not only.search(c["name"]):
            continue
        runs = [n for n in c["ranks"] if wanted(n)]
        if not runs:
            continue
        cases_run += 1
        for n in runs:
            status, detail = run_case(c, n)
            counts[status] += 1
            print(f"{status}: {c['name']} [{n} rank{'s' if n > 1 else ''}]: {detail}", flush=True)
    total = sum(counts.values())
    print(f"{cases_run} cases, {total} runs: {counts['ok']} passed, {counts['FAIL']} failed, "
          f"{counts['NOT RUN']} not run; {time.monotonic() - t0:.0f} s")
    if counts["FAIL"]:
        return 1
    if counts["NOT RUN"]:
        print("NOT RUN rows make the whole test Not Run (exit 77): it passed only in part")
        return 77
    return 0


if __name__ == "__main__":
    try:
        code = main()
    finally:
        for m in reversed(MOUNTS):
            if subprocess.run(["umount", m], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", m], capture_output=True)
        shutil.rmtree(W, ignore_errors=True)
    sys.exit(code)
