"""The admin listener through the real daemon (issue 6 item 5; CONTRACT sections 6 and 8).

GET /healthz (200 {"status":"ok"} while serving, 503 {"status":"draining"}
from SIGTERM until exit), GET /metrics in the Prometheus text format 0.0.4,
checked by a parser written here (names, HELP/TYPE, label syntax and
escaping, no series twice, histogram buckets cumulative): requests by route
key and status (route="none" when nothing matched), the latency histogram,
Lambda invocations by function and outcome, refusals by reason, cache
results, the connection gauge, Redis errors; figures of all workers summed.
The admin address is never served by the public listener, nor the public
routes by the admin listener.

Counters move when a request finishes, which may be a moment after its
client has read the answer: tests wait for a figure to reach its expected
value, then check that it is exact (and stays so).
Run: /usr/bin/python3 -m pytest -q tests/integration/test_admin.py
"""

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gateway import (SANITIZER_MARKERS, base_config, free_port, read_response,  # noqa: E402
                     start_gateway)

NO_REFILL = 0.001  # tokens/s: no refill within a test
HELLO = {"method": "GET", "path": "/hello", "function": "hello"}
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The families of CONTRACT section 6 (and the ones the issue adds), with
# their types.
FAMILIES = {
    "lambdagate_requests_total": "counter",
    "lambdagate_request_duration_seconds": "histogram",
    "lambdagate_lambda_invocations_total": "counter",
    "lambdagate_throttled_total": "counter",
    "lambdagate_cache_requests_total": "counter",
    "lambdagate_connections": "gauge",
    "lambdagate_redis_errors_total": "counter",
    "lambdagate_redis_fallbacks_total": "counter",
    "lambdagate_draining": "gauge",
}
REASONS = ["identity", "api_key", "global", "quota", "per_ip", "deny", "max_inflight",
           "max_connections", "max_connections_per_ip", "lambda"]
CACHE_RESULTS = ["hit", "miss", "bypass", "stale"]
LE = ["0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
      "1", "2.5", "5", "10", "30", "+Inf"]


# --------------------------------------------------------------------------
# A parser of the Prometheus text format 0.0.4
# --------------------------------------------------------------------------

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE_RE = re.compile(r"(" + NAME + r")(?:\{(.*)\})? (\S+)")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
HELP_RE = re.compile(r"# HELP (" + NAME + r") (.*)")
TYPE_RE = re.compile(r"# TYPE (" + NAME + r") (counter|gauge|histogram|summary|untyped)")
UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def parse_labels(text, line):
    labels = {}
    pos = 0
    while pos < len(text):
        m = LABEL_RE.match(text, pos)
        assert m, f"bad label syntax at {text[pos:]!r} in {line!r}"
        name, raw = m.group(1), m.group(2)
        assert name not in labels, f"label {name} twice in {line!r}"
        labels[name] = re.sub(r'\\[\\"n]', lambda e: UNESCAPE[e.group(0)], raw)
        pos = m.end()
        if pos < len(text):
            assert text[pos] == ",", f"labels not separated by ',' in {line!r}"
            pos += 1
    return labels


class Metrics:
    """A parsed exposition. samples: {(name, frozenset(labels.items())): float}."""

    def __init__(self, text):
        self.text = text
        self.types = {}
        self.help = {}
        self.samples = {}
        self.order = []  # (name, labels) in the order of the text
        assert text.endswith("\n"), "the exposition does not end with a newline"
        for line in text[:-1].split("\n"):
            assert line, "empty line in the exposition"
            if line.startswith("#"):
                m = HELP_RE.fullmatch(line)
                if m:
                    assert m.group(1) not in self.help, f"HELP twice: {line!r}"
                    self.help[m.group(1)] = m.group(2)
                    continue
                m = TYPE_RE.fullmatch(line)
                if m:
                    assert m.group(1) not in self.types, f"TYPE twice: {line!r}"
                    self.types[m.group(1)] = m.group(2)
                    continue
                assert not line.startswith(("# HELP", "# TYPE")), f"bad comment {line!r}"
                continue
            m = SAMPLE_RE.fullmatch(line)
            assert m, f"bad sample line {line!r}"
            name, labels_text, value = m.group(1), m.group(2), m.group(3)
            family = self.family_of(name)
            assert family is not None, f"sample before (or without) its TYPE: {line!r}"
            labels = parse_labels(labels_text, line) if labels_text else {}
            key = (name, frozenset(labels.items()))
            assert key not in self.samples, f"series twice: {line!r}"
            self.samples[key] = float(value)  # also checks the number
            self.order.append((name, labels))

    def family_of(self, name):
        if name in self.types:
            return name
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[:-len(suffix)]
            if name.endswith(suffix) and self.types.get(base) == "histogram":
                return base
        return None

    def get(self, name, **labels):
        """The value of one series, or None when absent."""
        return self.samples.get((name, frozenset(labels.items())))

    def series(self, name):
        """[(labels dict, value)] of every sample named name."""
        return [(dict(k[1]), v) for k, v in self.samples.items() if k[0] == name]

    def total(self, name):
        return sum(v for _, v in self.series(name))


# --------------------------------------------------------------------------
# The admin listener
# --------------------------------------------------------------------------

def admin_config(emu, routes, **top):
    config = base_config(emu, routes, **top)
    config["admin"] = {"address": f"127.0.0.1:{free_port()}"}
    return config


def admin_address(gw):
    host, _, port = gw.config["admin"]["address"].rpartition(":")
    return host.strip("[]"), int(port)


def start(gateways, config):
    """A gateway whose admin listener accepts (start_gateway waits only for
    the public listeners)."""
    gw = gateways.start(config)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(admin_address(gw), timeout=1):
                return gw
        except OSError:
            assert gw.proc.poll() is None, "lambdagate exited:\n" + gw.log_text()
            assert time.monotonic() < deadline, \
                "the admin listener does not accept:\n" + gw.log_text()
            time.sleep(0.05)


def admin(gw, path, method="GET", headers=None, body=None, timeout=10):
    host, port = admin_address(gw)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        return read_response(conn.getresponse())
    finally:
        conn.close()


def scrape(gw):
    r = admin(gw, "/metrics")
    assert r.status == 200, r
    assert r.header("Content-Type") == METRICS_TYPE
    return Metrics(r.body.decode("utf-8"))


def wait_metric(gw, name, want, timeout=5, gauge=False, **labels):
    """Scrape until the series reaches want (or time runs out); return the
    last scrape. A counter only grows, so one above want returns at once
    (and fails the caller's exact check); a gauge is waited for until it
    equals want."""
    deadline = time.monotonic() + timeout
    while True:
        m = scrape(gw)
        value = m.get(name, **labels)
        if value == want or (not gauge and value is not None and value > want) \
                or time.monotonic() > deadline:
            return m
        time.sleep(0.05)


def get(gw, path, conn=None, **kw):
    return gw.request("GET", path, conn=conn, **kw)


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------

def test_healthz_ok_while_serving(emu, gateways):
    gw = start(gateways, admin_config(emu, [HELLO]))
    r = admin(gw, "/healthz")
    assert r.status == 200
    assert r.header("Content-Type") == "application/json"
    assert r.json() == {"status": "ok"}
    assert r.body == b'{"status":"ok"}'
    # A query string does not change the path (load balancers add some).
    assert admin(gw, "/healthz?from=lb").status == 200
    # HEAD: the same head, no body.
    r = admin(gw, "/healthz", method="HEAD")
    assert r.status == 200
    assert r.body == b""
    assert r.header("Content-Length") == "15"


def test_metrics_exposition_has_every_family(emu, gateways):
    gw = start(gateways, admin_config(emu, [HELLO]))
    m = scrape(gw)
    for name, kind in FAMILIES.items():
        assert m.types.get(name) == kind, f"{name}: TYPE {m.types.get(name)!r}, want {kind}"
        assert m.help.get(name), f"{name} has no HELP text"
    # Every reason and every cache result, at zero before anything happens.
    assert {l["reason"]: v for l, v in m.series("lambdagate_throttled_total")} == \
        {reason: 0 for reason in REASONS}
    assert {l["result"]: v for l, v in m.series("lambdagate_cache_requests_total")} == \
        {result: 0 for result in CACHE_RESULTS}
    assert [l["le"] for l, _ in m.series("lambdagate_request_duration_seconds_bucket")] == LE
    assert m.get("lambdagate_request_duration_seconds_count") == 0
    assert m.get("lambdagate_draining") == 0
    assert m.get("lambdagate_redis_errors_total") == 0
    assert m.get("lambdagate_requests_total", route="GET /hello", status="200") is None


def test_requests_and_invocations_counted(emu, gateways):
    routes = [HELLO, {"method": "GET", "path": "/fail", "function": "fail"}]
    gw = start(gateways, admin_config(emu, routes))
    for _ in range(3):
        r = get(gw, "/hello")
        assert r.status == 200, r
    assert get(gw, "/nope").status == 404
    assert get(gw, "/fail").status == 502

    m = wait_metric(gw, "lambdagate_request_duration_seconds_count", 5)
    assert m.get("lambdagate_requests_total", route="GET /hello", status="200") == 3
    assert m.get("lambdagate_requests_total", route="none", status="404") == 1
    assert m.get("lambdagate_requests_total", route="GET /fail", status="502") == 1
    assert m.total("lambdagate_requests_total") == 5
    m = wait_metric(gw, "lambdagate_lambda_invocations_total", 1,
                    function="fail", outcome="function_error")
    assert m.get("lambdagate_lambda_invocations_total", function="hello", outcome="ok") == 3
    assert m.get("lambdagate_lambda_invocations_total",
                 function="fail", outcome="function_error") == 1
    # The 404 never reached Lambda.
    assert m.total("lambdagate_lambda_invocations_total") == 4

    # The histogram: one observation per request, buckets cumulative.
    assert m.get("lambdagate_request_duration_seconds_count") == 5
    buckets = [v for _, v in m.series("lambdagate_request_duration_seconds_bucket")]
    assert buckets == sorted(buckets), buckets
    assert m.get("lambdagate_request_duration_seconds_bucket", le="+Inf") == 5
    total_s = m.get("lambdagate_request_duration_seconds_sum")
    assert 0 < total_s < 30, total_s

    # Exact, and stays so: scrapes themselves are not requests.
    time.sleep(0.3)
    m = scrape(gw)
    assert m.get("lambdagate_requests_total", route="GET /hello", status="200") == 3
    assert m.get("lambdagate_request_duration_seconds_count") == 5


def test_slow_request_lands_in_its_bucket(emu, gateways):
    routes = [{"method": "GET", "path": "/slow", "function": "slow", "timeout_ms": 5000}]
    gw = start(gateways, admin_config(emu, routes))
    r = get(gw, "/slow?ms=300")
    assert r.status == 200, r
    m = wait_metric(gw, "lambdagate_request_duration_seconds_count", 1)
    assert m.get("lambdagate_request_duration_seconds_count") == 1
    took = m.get("lambdagate_request_duration_seconds_sum")
    assert 0.3 <= took < 5, took
    # The one observation is in every bucket from the first le >= took on.
    for le in LE:
        want = 1 if le == "+Inf" or took <= float(le) else 0
        assert m.get("lambdagate_request_duration_seconds_bucket", le=le) == want, (le, took)
    assert m.get("lambdagate_request_duration_seconds_bucket", le="0.25") == 0


def test_counters_summed_over_workers(emu, gateways):
    gw = start(gateways, admin_config(emu, [HELLO], workers=2))
    n = 12
    for _ in range(n):  # a new connection each: spread over the workers
        assert get(gw, "/hello").status == 200
    m = wait_metric(gw, "lambdagate_requests_total", n, route="GET /hello", status="200")
    assert m.get("lambdagate_requests_total", route="GET /hello", status="200") == n
    assert m.get("lambdagate_lambda_invocations_total", function="hello", outcome="ok") == n
    assert m.get("lambdagate_request_duration_seconds_count") == n


def test_per_ip_refusals_counted(emu, gateways):
    config = admin_config(emu, [HELLO], limits={"per_ip": {"rate": NO_REFILL, "burst": 2}})
    gw = start(gateways, config)
    statuses = [get(gw, "/hello").status for _ in range(5)]
    assert statuses == [200, 200, 429, 429, 429]
    m = wait_metric(gw, "lambdagate_throttled_total", 3, reason="per_ip")
    assert m.get("lambdagate_throttled_total", reason="per_ip") == 3
    for reason in REASONS:
        if reason != "per_ip":
            assert m.get("lambdagate_throttled_total", reason=reason) == 0, reason
    assert m.get("lambdagate_lambda_invocations_total", function="hello", outcome="ok") == 2
    # The admin listener is not subject to the public limits.
    for _ in range(5):
        assert admin(gw, "/healthz").status == 200


def test_cache_results_counted(emu, gateways):
    route = dict(HELLO, cache={"ttl_s": 60})
    gw = start(gateways, admin_config(emu, [route]))
    caches = []
    for _ in range(3):
        r = get(gw, "/hello")
        assert r.status == 200, r
        caches.append(r.header("X-Cache"))
    assert caches == ["MISS", "HIT", "HIT"]
    m = wait_metric(gw, "lambdagate_cache_requests_total", 2, result="hit")
    assert m.get("lambdagate_cache_requests_total", result="hit") == 2
    assert m.get("lambdagate_cache_requests_total", result="miss") == 1
    assert m.get("lambdagate_cache_requests_total", result="bypass") == 0
    assert m.get("lambdagate_cache_requests_total", result="stale") == 0
    # Hits are requests too, but not invocations.
    m = wait_metric(gw, "lambdagate_requests_total", 3, route="GET /hello", status="200")
    assert m.get("lambdagate_requests_total", route="GET /hello", status="200") == 3
    assert m.get("lambdagate_lambda_invocations_total", function="hello", outcome="ok") == 1


def test_connections_gauge(emu, gateways):
    gw = start(gateways, admin_config(emu, [HELLO]))
    # The start-up probe's connection may take a moment to be seen closed.
    m = wait_metric(gw, "lambdagate_connections", 0, gauge=True)
    assert m.get("lambdagate_connections") == 0
    conns = [gw.connection() for _ in range(2)]
    try:
        for c in conns:  # keep-alive: the connections stay open afterwards
            assert get(gw, "/hello", conn=c).status == 200
        m = wait_metric(gw, "lambdagate_connections", 2, gauge=True)
        assert m.get("lambdagate_connections") == 2
        # The admin connection of the scrape is not a client connection.
    finally:
        for c in conns:
            c.close()
    m = wait_metric(gw, "lambdagate_connections", 0, gauge=True)
    assert m.get("lambdagate_connections") == 0, "the gauge does not return to 0"


def test_healthz_503_while_draining(emu, gateways):
    routes = [HELLO, {"method": "GET", "path": "/slow", "function": "slow", "timeout_ms": 10000}]
    gw = start(gateways, admin_config(emu, routes, shutdown_timeout_ms=10000))
    assert admin(gw, "/healthz").status == 200

    result = {}

    def slow():
        try:
            result["response"] = get(gw, "/slow?ms=2000", timeout=15)
        except Exception as e:  # noqa: BLE001 - reported below
            result["error"] = e

    t = threading.Thread(target=slow)
    t.start()
    deadline = time.monotonic() + 5
    while emu.stats()["active"] < 1:
        assert time.monotonic() < deadline, "the slow request never reached the function"
        time.sleep(0.02)

    gw.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 1.5
    while True:
        r = admin(gw, "/healthz")
        if r.status == 503:
            break
        assert r.status == 200, r
        assert time.monotonic() < deadline, "/healthz still 200 1.5 s after SIGTERM"
        time.sleep(0.02)
    assert t.is_alive(), "the slow request finished before /healthz turned 503"
    assert r.header("Content-Type") == "application/json"
    assert r.json() == {"status": "draining"}
    assert r.body == b'{"status":"draining"}'
    m = scrape(gw)
    assert m.get("lambdagate_draining") == 1
    # Still 503 (and still answering) a moment later.
    time.sleep(0.2)
    assert admin(gw, "/healthz").status == 503

    t.join(15)
    assert not t.is_alive()
    assert "error" not in result, result
    assert result["response"].status == 200, result["response"]
    assert result["response"].json() == {"slept_ms": 2000}
    # The process then exits 0, clean (checked by the fixture at teardown
    # too); the admin listener went with it.
    assert gw.proc.wait(timeout=15) == 0, gw.log_text()[-3000:]
    with pytest.raises(OSError):
        socket.create_connection(admin_address(gw), timeout=1).close()


def test_admin_not_served_on_public_listener(emu, gateways):
    gw = start(gateways, admin_config(emu, [HELLO]))
    for path in ("/metrics", "/healthz"):
        r = get(gw, path)
        assert r.status == 404, r
        assert r.json() == {"message": "Not Found"}
        assert r.has("x-request-id")  # an answer from routing, not the admin
    # Nor the public routes on the admin listener.
    r = admin(gw, "/hello")
    assert r.status == 404
    assert r.json() == {"message": "Not Found"}
    assert emu.invocations() == []


def test_admin_unknown_path_and_method(emu, gateways):
    gw = start(gateways, admin_config(emu, [HELLO]))
    for path in ("/nope", "/", "/metrics/x", "/healthz/"):
        r = admin(gw, path)
        assert r.status == 404, (path, r)
        assert r.header("Content-Type") == "application/json"
        assert r.json() == {"message": "Not Found"}
    for method, path in (("POST", "/healthz"), ("PUT", "/metrics"), ("DELETE", "/healthz")):
        r = admin(gw, path, method=method, headers={"Content-Length": "0"})
        assert r.status == 405, (method, path, r)
        assert r.header("Allow") == "GET, HEAD"
        assert r.json() == {"message": "Method Not Allowed"}


def test_admin_keep_alive(emu, gateways):
    gw = start(gateways, admin_config(emu, [HELLO]))
    host, port = admin_address(gw)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        for path, status in (("/healthz", 200), ("/metrics", 200), ("/nope", 404),
                             ("/healthz", 200)):
            conn.request("GET", path)
            r = read_response(conn.getresponse())
            assert r.status == status, (path, r)
        conn.request("HEAD", "/metrics")
        r = read_response(conn.getresponse())
        assert r.status == 200 and r.body == b""
        conn.request("GET", "/healthz")
        assert read_response(conn.getresponse()).json() == {"status": "ok"}
    finally:
        conn.close()


def test_admin_address_in_use_is_an_error(emu):
    """An admin address that cannot be bound (here: the public listener's)
    stops the start with an error naming it. Whichever of the two is bound
    first, the process exits non-zero."""
    config = admin_config(emu, [HELLO])
    config["admin"]["address"] = config["listen"][0]["address"]
    try:
        gw = start_gateway(config)
    except RuntimeError as e:
        log = str(e)
    else:  # the probe met the first socket before the second bind failed
        try:
            gw.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            gw.stop(check=False)
            pytest.fail("lambdagate serves with its admin address taken:\n" + gw.log_text())
        gw.stopped = True
        log = gw.log_text()
        assert gw.proc.returncode != 0
    assert config["admin"]["address"] in log, log
    for marker in SANITIZER_MARKERS:
        assert marker not in log, log
