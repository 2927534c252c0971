"""Shared HTTP helpers of the tessera-serve app tests' clients (serve_test.sh, serve_dp_test.sh,
serve_api_features_test.sh; serve_lib.sh puts this folder on PYTHONPATH): ok:/FAIL: lines,
requests, /metrics, concurrent calls, and the command dispatch. Standard library only."""
import http.client
import json
import sys
import threading
import time

PORT = 0  # set by main() from the command line
failed = False


def ok(msg):
    print("ok: " + msg, flush=True)


def fail(msg):
    global failed
    failed = True
    print("FAIL: " + msg, flush=True)


def check(cond, msg, detail=""):
    (ok if cond else fail)(msg if cond or not detail else f"{msg}: {detail}")
    return cond


def connect(timeout=30):
    return http.client.HTTPConnection("127.0.0.1", PORT, timeout=timeout)


def call(method, path, body=None, timeout=30):
    """(status, headers with lower-case names, text) of one request; body: dict (sent as JSON),
    str or bytes (sent as they are, as JSON)."""
    conn = connect(timeout)
    if isinstance(body, dict):
        body = json.dumps(body)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    text = r.read().decode("utf-8", "replace")
    conn.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, text


def parse_metrics(text):
    """Prometheus text -> {series: value}."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def metrics():
    return parse_metrics(call("GET", "/metrics")[2])


def wait_metric(name, want, seconds=10):
    """/metrics once `name` reads `want`, or the last reading after `seconds`."""
    m = {}
    for _ in range(int(seconds / 0.05)):
        m = metrics()
        if m.get(name) == want:
            return m
        time.sleep(0.05)
    return m


def concurrently(fn, args):
    """[fn(a) for a in args], each call on its own thread, all started at once."""
    results = [None] * len(args)

    def run(i):
        results[i] = fn(args[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(args))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def main(commands):
    """argv: COMMAND PORT ARGS...: runs commands[COMMAND](*ARGS); exits 1 if any check failed."""
    global PORT
    PORT = int(sys.argv[2])
    commands[sys.argv[1]](*sys.argv[3:])
    sys.exit(1 if failed else 0)
