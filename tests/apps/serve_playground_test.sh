#!/usr/bin/env bash
# tessera-serve's playground page (GET /, src/serve/playground.html compiled into the binary) in
# headless Chromium: the page, opened with a seeded request in its URL and autorun=1, streams the
# completion through fetch() and the SSE events; the text in its DOM equals the API's text for the
# same request, and its status reads done. A screenshot of the page after the stream is checked
# too: a valid PNG, not blank, whose output panel holds dark text pixels, where a screenshot of the
# same page before generating has none. Needs Debian's chromium (scripts/setup.sh installs it); without it the test
# reports "not run" (exit 77).
source "$(dirname "$0")/lib.sh"
cd "$TESSERA_ROOT"
SERVE="$TESSERA_BIN/tessera-serve"
PY=/usr/bin/python3
CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
if [[ -z $CHROMIUM ]]; then
  echo "chromium is not installed (apt-get install chromium; scripts/setup.sh does): not run"
  exit 77
fi

server=""
cleanup() {
  [[ -n $server ]] && kill -KILL "$server" 2> /dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

make_small_data "$WORK/data"
sets=$(small_sets "$WORK/data")
timeout 120 "$TESSERA_BIN/tessera-train" configs/tiny.yaml $sets --set train.steps=60 \
  --set optim.warmup_steps=5 > "$WORK/train.log" 2>&1 \
  || { cat "$WORK/train.log"; fail "training run"; finish; exit 1; }

timeout -k 5 120 "$SERVE" "$WORK/run/model.h5" --port 0 > "$WORK/serve.log" 2>&1 &
server=$!
port=""
for _ in $(seq 1 300); do
  port=$(sed -n 's/^tessera-serve: ready on http:\/\/[^:]*:\([0-9][0-9]*\) .*/\1/p' "$WORK/serve.log")
  [[ -n $port ]] && break
  kill -0 "$server" 2> /dev/null || break
  sleep 0.1
done
[[ -n $port ]] || { cat "$WORK/serve.log"; fail "server did not become ready"; finish; exit 1; }
pass "server ready on port $port"

# chromium URL OUT-ARGS...: headless, its own profile; virtual time lets the page's scripts and
# the streamed fetch run to the end (at most 20 s of page time).
chrome() {
  local url=$1
  shift
  timeout -k 5 60 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
    --no-first-run --user-data-dir="$WORK/profile" --window-size=900,700 \
    --virtual-time-budget=20000 "$@" "$url" 2>> "$WORK/chromium.log"
}

query="prompt=ROMEO:&max_tokens=24&temperature=0.9&top_k=40&top_p=1&seed=11"
chrome "http://127.0.0.1:$port/?$query&autorun=1" --dump-dom > "$WORK/dom.html" \
  || fail "chromium --dump-dom exited $?"
chrome "http://127.0.0.1:$port/?$query&autorun=1" --screenshot="$WORK/after.png" > /dev/null \
  || fail "chromium --screenshot (after) exited $?"
chrome "http://127.0.0.1:$port/?$query" --screenshot="$WORK/before.png" > /dev/null \
  || fail "chromium --screenshot (before) exited $?"

out=$(timeout 60 $PY - "$port" "$WORK" << 'PY'
import html
import http.client
import json
import re
import struct
import sys
import zlib

port, work = int(sys.argv[1]), sys.argv[2]
failed = False


def check(cond, msg):
    global failed
    failed |= not cond
    print(("ok: " if cond else "FAIL: ") + msg)


def call(method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, path, json.dumps(body) if body else None,
              {"Content-Type": "application/json"} if body else {})
    r = c.getresponse()
    return r.status, r.getheader("Content-Type"), r.read().decode("utf-8")


status, ctype, page = call("GET", "/")
check(status == 200 and ctype.startswith("text/html") and "Tessera playground" in page
      and "fetch(\"/v1/completions\"" in page, f"GET / serves the playground ({len(page)} bytes)")

status, _, body = call("POST", "/v1/completions", {"prompt": "ROMEO:", "max_tokens": 24,
                                                   "temperature": 0.9, "top_k": 40, "top_p": 1,
                                                   "seed": 11})
want = json.loads(body)["choices"][0]["text"]
dom = open(f"{work}/dom.html", encoding="utf-8").read()
m = re.search(r'<span id="completion">(.*?)</span>', dom, re.S)
got = html.unescape(m.group(1)) if m else None
state = re.search(r'<div id="status">(.*?)</div>', dom)
check(got == want and want != "",
      f"the page streamed the API's text for the same seeded request ({len(want)} characters)"
      + ("" if got == want else f": page {got!r}, API {want!r}"))
check(state is not None and state.group(1) == "done (length)" and 'data-state="done"' in dom,
      f"the page's status reads {state.group(1) if state else None!r}")


def png_pixels(path):
    """(width, height, rows of (r, g, b)) of an 8-bit RGB or RGBA PNG, non-interlaced."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + n
    w, h, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, f"PNG type {header}"
    bpp = 3 if color == 2 else 4
    raw, stride, rows, prev = zlib.decompress(idat), w * bpp, [], bytearray(w * bpp)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append([tuple(line[x * bpp:x * bpp + 3]) for x in range(w)])
        prev = line
    return w, h, rows


def box(rows):
    """The bounding box of the output panel: the pixels of its background, #f4f4f0."""
    ys = [y for y, row in enumerate(rows) if (244, 244, 240) in row]
    xs = [x for x, p in enumerate(rows[ys[len(ys) // 2]]) if p == (244, 244, 240)] if ys else []
    assert ys and xs, "no output panel (background #f4f4f0) in the screenshot"
    return ys[0], ys[-1], xs[0], xs[-1]


def dark(rows, b):
    """Dark (text) pixels inside box b: the completion is drawn in #222, the prompt in #777."""
    y0, y1, x0, x1 = b
    return sum(1 for row in rows[y0:y1 + 1] for p in row[x0:x1 + 1] if sum(p) < 3 * 100)


try:
    w, h, after = png_pixels(f"{work}/after.png")
    _, _, before = png_pixels(f"{work}/before.png")
    colours = len({p for row in after for p in row})
    b = box(after)
    d_after, d_before = dark(after, b), dark(before, box(before))
    check(w == 900 and h == 700 and colours > 2,
          f"the screenshot is a {w}x{h} PNG with {colours} colours (not blank)")
    # The streamed text is drawn in dark monospace inside the panel, empty before generating.
    check(d_before == 0 and d_after > 200,
          f"the screenshot's output panel (rows {b[0]}-{b[1]}) holds {d_after} dark text pixels "
          f"after streaming, {d_before} before")
except (AssertionError, OSError, zlib.error, TypeError) as e:
    check(False, f"screenshot: {e}")
sys.exit(1 if failed else 0)
PY
)
rc=$?
echo "$out"
passes=$((passes + $(grep -c '^ok: ' <<< "$out")))
failures=$((failures + $(grep -c '^FAIL: ' <<< "$out")))
[[ $rc -ne 0 && $(grep -c '^FAIL: ' <<< "$out") -eq 0 ]] && fail "the checker exited $rc"
kill -TERM "$server"
wait "$server" 2> /dev/null
finish
