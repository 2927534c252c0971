#!/usr/bin/env bash
# tessera-data's subcommands, checked against independent readers (Python: llm.c's shard header,
# GPT-2's vocab.json byte alphabet): `train-tokenizer` writes a vocabulary of exactly the size
# asked (256 bytes + merges + <|endoftext|> last) with one merge per learned token; `tokenize`
# splits at a line start near 1 - val_fraction, writes shards whose token counts are the ones it
# prints, whose ids (less the appended <|endoftext|>) decode back to the two parts of the text
# byte for byte and equal `encode`'s ids for those parts; `info` prints the shard's version, its
# token count and its first ids, decoded with the tokenizer.
source "$(dirname "$0")/lib.sh"
cd "$TESSERA_ROOT"
data="$TESSERA_BIN/tessera-data"
head -c 100000 data/shakespeare.txt > "$WORK/text.txt"
# A line of UTF-8 and runs of spaces, so the round trip covers more than ASCII words.
printf 'Ærøskøbing café — 日本語 🎉   spaced\n' >> "$WORK/text.txt"
# GPT-2's vocab.json alphabet, rebuilt independently: printable bytes stand for themselves, the
# other 68 for code points 256.. in byte order. token_bytes(vocab.json) -> {id: bytes}.
cat > "$WORK/gpt2_alphabet.py" <<'PY'
import json
_printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
_byte_of = {chr(b): b for b in _printable}
_byte_of.update({chr(256 + n): b for n, b in enumerate(b for b in range(256) if b not in _printable)})
def token_bytes(vocab_path):
    vocab = json.load(open(vocab_path, encoding="utf-8"))
    return {i: bytes(_byte_of[c] for c in s) for s, i in vocab.items() if s != "<|endoftext|>"}
PY
export PYTHONPATH="$WORK"

# ---- train-tokenizer ----
"$data" train-tokenizer --input "$WORK/text.txt" --vocab-size 400 --out "$WORK/tok" \
  > "$WORK/train.log" 2>&1 || { fail "train-tokenizer"; cat "$WORK/train.log"; }
grep -q "trained 400 tokens (143 merges) on $(stat -c %s "$WORK/text.txt") bytes" "$WORK/train.log" \
  && pass "train-tokenizer: $(head -1 "$WORK/train.log")" \
  || { fail "train-tokenizer log"; cat "$WORK/train.log"; }
out=$(/usr/bin/python3 - "$WORK/tok" <<'PY'
import json, sys
vocab = json.load(open(sys.argv[1] + ".vocab.json", encoding="utf-8"))
merges = [l for l in open(sys.argv[1] + ".merges.txt", encoding="utf-8").read().split("\n")
          if l and not l.startswith("#version")]
assert sorted(vocab.values()) == list(range(400)), "ids are not 0..399"
assert vocab["<|endoftext|>"] == 399, vocab["<|endoftext|>"]
assert len(merges) == 400 - 257, len(merges)
for m in merges:  # each merge joins two tokens of the vocabulary into a third
    a, b = m.split(" ")
    assert a in vocab and b in vocab and a + b in vocab, m
print(f"{len(vocab)} ids, <|endoftext|> = 399, {len(merges)} merges of known tokens")
PY
) && pass "train-tokenizer files: $out" || fail "train-tokenizer files: $out"

# ---- tokenize ----
"$data" tokenize --tokenizer "$WORK/tok" --input "$WORK/text.txt" --train-out "$WORK/train.bin" \
  --val-out "$WORK/val.bin" --val-fraction 0.2 > "$WORK/tokenize.log" 2>&1 \
  || { fail "tokenize"; cat "$WORK/tokenize.log"; }
train_n=$(sed -n 's/^train: \([0-9]*\) tokens.*/\1/p' "$WORK/tokenize.log")
val_n=$(sed -n 's/^val: *\([0-9]*\) tokens.*/\1/p' "$WORK/tokenize.log")
[[ -n $train_n && -n $val_n ]] && pass "tokenize: $train_n + $val_n tokens" \
  || { fail "tokenize log"; cat "$WORK/tokenize.log"; }
# The parts as files, for encode: the split is the line start the shards imply (checked below).
out=$(/usr/bin/python3 - "$WORK" "$train_n" "$val_n" <<'PY'
import struct, sys
from gpt2_alphabet import token_bytes
w, train_n, val_n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
text = open(f"{w}/text.txt", "rb").read()
token_bytes = token_bytes(f"{w}/tok.vocab.json")

def shard(path):
    raw = open(path, "rb").read()
    magic, version, count = struct.unpack("<3i", raw[:12])
    assert (magic, version) == (20240520, 1), (magic, version)
    assert len(raw) == 1024 + 2 * count, "length is not header + count uint16"
    return list(struct.unpack(f"<{count}H", raw[1024:]))

train, val = shard(f"{w}/train.bin"), shard(f"{w}/val.bin")
assert (len(train), len(val)) == (train_n, val_n), f"shards hold {len(train)} + {len(val)}"
assert train[-1] == val[-1] == 399, "each shard ends with <|endoftext|>"
assert max(train[:-1] + val[:-1]) < 399, "<|endoftext|> inside a shard"
a, b = (b"".join(token_bytes[i] for i in ids[:-1]) for ids in (train, val))
assert a + b == text, "the shards do not decode to the text"
cut = len(a)
assert text[cut - 1:cut] == b"\n", "the split is not at a line start"
assert abs(cut / len(text) - 0.8) < 0.01, f"split at {cut / len(text):.3f} of the text"
open(f"{w}/part_train.txt", "wb").write(a)
open(f"{w}/part_val.txt", "wb").write(b)
open(f"{w}/train_ids.txt", "w").write(" ".join(map(str, train[:-1])) + "\n")
open(f"{w}/val_ids.txt", "w").write(" ".join(map(str, val[:-1])) + "\n")
print(f"shards of {train_n} + {val_n} tokens decode to the text, split at byte {cut} "
      f"({cut / len(text):.3f}) after a newline")
PY
) && pass "tokenize: $out" || fail "tokenize shards: $out"

# ---- encode: the ids of each part are the shard's ----
for part in train val; do
  "$data" encode --tokenizer "$WORK/tok" --input "$WORK/part_$part.txt" > "$WORK/enc_$part.txt" \
    2> "$WORK/enc.err" || { fail "encode $part"; cat "$WORK/enc.err"; continue; }
  cmp -s "$WORK/enc_$part.txt" "$WORK/${part}_ids.txt" \
    && pass "encode of the $part part = $part.bin's ids ($(wc -w < "$WORK/enc_$part.txt") ids)" \
    || fail "encode of the $part part differs from $part.bin"
done

# ---- info ----
"$data" info "$WORK/val.bin" --tokenizer "$WORK/tok" --count 6 > "$WORK/info.log" 2>&1 \
  || { fail "info"; cat "$WORK/info.log"; }
first=$(cut -d' ' -f1-6 "$WORK/val_ids.txt")
grep -qx "version: 1 (uint16 tokens)" "$WORK/info.log" \
  && grep -qx "tokens:  $val_n" "$WORK/info.log" \
  && grep -qx "first:   $first" "$WORK/info.log" \
  && pass "info: version 1, $val_n tokens, first ids $first" \
  || { fail "info output"; cat "$WORK/info.log"; }
# decoded: [bytes] of each first id, in order (a token's bytes may hold a newline).
out=$(/usr/bin/python3 - "$WORK" "$first" <<'PY'
import sys
from gpt2_alphabet import token_bytes
w, ids = sys.argv[1], [int(x) for x in sys.argv[2].split()]
log = open(f"{w}/info.log", "rb").read()
got = log[log.index(b"decoded: ") + 9:].rstrip(b"\n")
pieces = [token_bytes(f"{w}/tok.vocab.json")[i] for i in ids]
want = b"".join(b"[" + p + b"]" for p in pieces)
assert open(f"{w}/part_val.txt", "rb").read().startswith(b"".join(pieces)), "not the text's start"
assert got == want, f"info printed {got!r}, expected {want!r}"
print(repr(want.decode("utf-8", "replace")))
PY
) && pass "info --tokenizer decodes the first ids to the start of the text: $out" \
  || fail "info decoded line: $out"
finish
