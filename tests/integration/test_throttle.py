"""Throttling and DoS limits through the real daemon (issue 4; CONTRACT sections 3, 5, 8).

Token buckets per identity (API-key plan, else route "throttle", else
throttle.default; identity = JWT identity claim, else API key id, else client
IP), the global bucket, API-key quotas, RateLimit-* and Retry-After, the local
store shared by workers, the Redis store shared by instances (a real
redis-server started by the tests, killed, restarted, paused with SIGSTOP,
its scripts flushed, and replaced by a listener that never answers), and the
limits applied before a request exists:
allow/deny CIDRs, the per_ip bucket, connection caps, header and body
timeouts (slowloris, slow POST) and max_inflight.

Distinct client addresses come from binding the client socket to 127.0.0.x:
Linux routes all of 127/8 to lo.
base_config() turns throttle.default and limits.per_ip off; every test here
sets what it relies on explicitly. Rates of 0.001 tokens/s mean "no refill
within the test": Retry-After is then exactly 1000.
Run: /usr/bin/python3 -m pytest -q tests/integration/test_throttle.py
"""

import datetime
import hashlib
import http.client
import itertools
import json
import os
import re
import select
import signal
import socket
import statistics
import sys
import threading
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gateway import base_config, free_port, poll, read_response  # noqa: E402

NO_REFILL = 0.001  # the smallest rate the config accepts: 1000 s per token
ISSUER = "https://issuer.example.com/throttle-tests"
AUDIENCE = "throttle-tests"
HELLO = [{"method": "GET", "path": "/hello", "function": "hello"}]


# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------

class Client:
    """A keep-alive HTTP connection to a gateway from a chosen source address."""

    def __init__(self, gw, source="127.0.0.1", index=0, timeout=10):
        host, port = gw.address(index)
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout,
                                               source_address=(source, 0))

    def request(self, path, method="GET", headers=None, body=None):
        self.conn.request(method, path, body=body, headers=headers or {})
        return read_response(self.conn.getresponse())

    def get(self, path, **kw):
        return self.request(path, **kw)

    def close(self):
        self.conn.close()


def one(gw, path, source="127.0.0.1", **kw):
    """One request on its own connection."""
    c = Client(gw, source)
    try:
        return c.request(path, **kw)
    finally:
        c.close()


def at_once(gw, path, n, headers=None):
    """n GETs of path on n connections made first, sent together (a
    barrier); each answer, or the text of the exception a client got.
    path and headers may be lists: then request i sends path[i] with
    headers[i]."""
    barrier = threading.Barrier(n)
    results = [None] * n

    def run(i):
        c = Client(gw)
        try:
            c.conn.connect()
            barrier.wait(10)
            results[i] = c.get(path[i] if isinstance(path, list) else path,
                               headers=headers[i] if isinstance(headers, list) else headers)
        except Exception as e:  # noqa: BLE001 - reported by the caller
            results[i] = repr(e)
        finally:
            c.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def statuses(responses):
    return [r.status for r in responses]


def rl(r):
    """(RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset) as sent."""
    return (r.header("ratelimit-limit"), r.header("ratelimit-remaining"),
            r.header("ratelimit-reset"))


def assert_no_rl(r):
    assert not any(r.has(h) for h in ("ratelimit-limit", "ratelimit-remaining",
                                      "ratelimit-reset")), r


def assert_message(r, status, message):
    assert r.status == status, r
    assert r.header("content-type") == "application/json", r
    assert r.json() == {"message": message}, r


def assert_429(r, retry_after=None):
    assert_message(r, 429, "Too Many Requests")
    assert r.header("x-request-id"), r
    ra = r.header("retry-after")
    assert ra is not None and ra.isdigit() and int(ra) >= 1, r
    if retry_after is not None:
        assert ra == str(retry_after), r
    return int(ra)


def assert_forbidden(r):
    assert_message(r, 403, "Forbidden")
    assert r.header("x-request-id"), r



def no_answer(gw, source, index=0, timeout=3.0):
    """Connect from source, send a request, and return what came back before
    the server closed the connection (b"" when it closed without answering).
    Fails when the connection stays open without an answer for timeout."""
    host, port = gw.address(index)
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.bind((source, 0))
        s.connect((host, port))
        try:
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            return b""
        try:
            return s.recv(65536)  # b"" on a close; an answer makes the caller fail
        except ConnectionResetError:
            return b""
        except socket.timeout:
            raise AssertionError(f"connection from {source} neither answered nor closed "
                                 f"within {timeout}s")
    finally:
        s.close()


def sha256_hex(text):
    return hashlib.sha256(text.encode()).hexdigest()


def write_json(path, doc):
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
    return str(path)


def keys_file(tmp_path, entries):
    """entries: {key value: entry without sha256}; returns the keys file path."""
    doc = {"keys": [dict(e, sha256=sha256_hex(k)) for k, e in entries.items()]}
    return write_json(tmp_path / "api_keys.json", doc)


def throttle_config(emu, routes, default=None, glob=None, limits=None, **top):
    throttle = dict(top.pop("throttle", {}))
    throttle.setdefault("default", default)
    throttle.setdefault("global", glob)
    lim = {"per_ip": None}
    lim.update(limits or {})
    return base_config(emu, routes, throttle=throttle, limits=lim, **top)


def store_config(request, emu, routes, **kw):
    """A local-store config, or a Redis-store one on a fresh redis-server."""
    if request.param == "local":
        return throttle_config(emu, routes, **kw)
    srv = request.getfixturevalue("redis_server")
    return redis_config(emu, srv.port, new_prefix(), routes=routes, **kw)


STORES = pytest.mark.parametrize("store", ["local", "redis"], indirect=True)


@pytest.fixture
def store(request):
    return request


def assert_store_used(store):
    """With Redis, the decisions were Redis's, not the local fallback's."""
    if store.param == "redis":
        srv = store.getfixturevalue("redis_server")
        assert srv.client().dbsize() > 0, "nothing in redis"


# --------------------------------------------------------------------------
# Token buckets: arithmetic seen from outside
# --------------------------------------------------------------------------

@STORES
def test_rate_1_burst_5_exactly_five_of_eight_then_refill(emu, gateways, store):
    gw = gateways.start(store_config(store, emu, HELLO, default={"rate": 1, "burst": 5}))
    c = Client(gw)
    t0 = time.monotonic()
    got = [c.get("/hello") for _ in range(8)]
    elapsed = time.monotonic() - t0
    assert elapsed < 0.9, f"8 requests took {elapsed:.2f}s: too slow to test a 1/s refill"
    assert statuses(got) == [200] * 5 + [429] * 3, got
    for i, r in enumerate(got[:5]):
        assert rl(r) == ("5", str(4 - i), "1"), (i, r)
        assert r.json()["message"] == "hello", r
    for r in got[5:]:
        assert_429(r, retry_after=1)
        assert rl(r) == ("5", "0", "1"), r
    assert len(emu.invocations()) == 5

    time.sleep(1.1)
    again = c.get("/hello")
    assert again.status == 200, again
    assert rl(again) == ("5", "0", "1"), again
    after = c.get("/hello")
    assert_429(after, retry_after=1)
    assert len(emu.invocations()) == 6
    assert_store_used(store)
    c.close()
    # the access log tells the refusals apart (CONTRACT section 7)
    want = {r.header("x-request-id"): r.status == 429 for r in got + [again, after]}
    lines = poll(lambda: [ln for ln in gw.access_log() if ln.get("request_id") in want]
                 if len(gw.access_log()) >= len(want) else None)
    assert lines and {ln["request_id"]: ln["throttled"] for ln in lines} == want, lines


@STORES
def test_fractional_rates_round_retry_after_up(emu, gateways, store):
    routes = [{"method": "GET", "path": "/half", "function": "hello",
               "throttle": {"rate": 0.5, "burst": 1}},
              {"method": "GET", "path": "/third", "function": "hello",
               "throttle": {"rate": 0.3, "burst": 2}}]
    gw = gateways.start(store_config(store, emu, routes))
    c = Client(gw)
    r = c.get("/half")
    assert r.status == 200 and rl(r) == ("1", "0", "2"), r
    r = c.get("/half")
    assert_429(r, retry_after=2)
    assert rl(r) == ("1", "0", "2"), r
    # 1 / 0.3 = 3.33 s per token: rounded up to 4
    r = c.get("/third")
    assert r.status == 200 and rl(r) == ("2", "1", "4"), r
    r = c.get("/third")
    assert r.status == 200 and rl(r) == ("2", "0", "4"), r
    r = c.get("/third")
    assert_429(r, retry_after=4)
    assert rl(r) == ("2", "0", "4"), r
    assert len(emu.invocations()) == 3
    assert_store_used(store)
    c.close()


def test_ratelimit_headers_on_every_answer_of_a_throttled_route(emu, gateways):
    routes = [{"method": "GET", "path": "/fail", "function": "fail",
               "throttle": {"rate": NO_REFILL, "burst": 3}},
              {"method": "GET", "path": "/free", "function": "hello", "throttle": None},
              {"method": "POST", "path": "/events", "function": "async_sink",
               "invocation": "async", "throttle": {"rate": NO_REFILL, "burst": 2}}]
    gw = gateways.start(throttle_config(emu, routes))
    c = Client(gw)
    r = c.get("/events", method="POST", body=b"{}", headers={"Content-Type": "application/json"})
    assert r.status == 202 and rl(r) == ("2", "1", "1000"), r
    r = c.get("/fail")
    assert_message(r, 502, "Internal server error")
    assert rl(r) == ("3", "2", "1000"), r
    r = c.get("/fail")
    assert r.status == 502 and rl(r) == ("3", "1", "1000"), r
    r = c.get("/free")
    assert r.status == 200, r
    assert_no_rl(r)
    c.close()


# --------------------------------------------------------------------------
# Identities
# --------------------------------------------------------------------------

def test_client_addresses_are_independent_identities(emu, gateways):
    gw = gateways.start(throttle_config(emu, HELLO, default={"rate": NO_REFILL, "burst": 2}))
    a, b = Client(gw, "127.0.0.1"), Client(gw, "127.0.0.2")
    assert statuses([a.get("/hello") for _ in range(2)]) == [200, 200]
    assert_429(a.get("/hello"), retry_after=1000)
    got = [b.get("/hello") for _ in range(3)]
    assert statuses(got) == [200, 200, 429], got
    assert [rl(r)[1] for r in got] == ["1", "0", "0"], got
    assert_429(a.get("/hello"), retry_after=1000)
    assert len(emu.invocations()) == 4
    a.close()
    b.close()


@pytest.fixture(scope="module")
def jwt_keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("throttle-jwt")
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="t-1", alg="ES256", use="sig")
    path = write_json(d / "jwks.json", {"keys": [jwk]})

    def token(sub):
        now = int(time.time())
        return jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now,
                           "exp": now + 600}, key, algorithm="ES256", headers={"kid": "t-1"})

    return {"jwks": path, "token": token}


def test_jwt_subject_is_the_identity_and_401s_consume_nothing(emu, gateways, jwt_keys):
    routes = [{"method": "GET", "path": "/me", "function": "hello", "auth": "jwt"}]
    gw = gateways.start(throttle_config(
        emu, routes, default={"rate": NO_REFILL, "burst": 2},
        auth={"jwt": {"issuer": ISSUER, "audience": [AUDIENCE], "jwks_file": jwt_keys["jwks"]}}))
    alice = {"Authorization": "Bearer " + jwt_keys["token"]("alice")}
    bob = {"Authorization": "Bearer " + jwt_keys["token"]("bob")}
    c1, c2 = Client(gw, "127.0.0.1"), Client(gw, "127.0.0.2")
    # refused by authentication before the throttle decision: never 429
    for _ in range(4):
        r = c1.get("/me")
        assert r.status == 401, r
    got = [c1.get("/me", headers=alice) for _ in range(3)]
    assert statuses(got) == [200, 200, 429], got
    assert [rl(r) for r in got] == [("2", "1", "1000"), ("2", "0", "1000"),
                                    ("2", "0", "1000")], got
    # same address, another subject: its own bucket
    got = [c1.get("/me", headers=bob) for _ in range(3)]
    assert statuses(got) == [200, 200, 429], got
    # the subject, not the address, is the identity
    assert_429(c2.get("/me", headers=alice), retry_after=1000)
    assert len(emu.invocations()) == 4
    c1.close()
    c2.close()


def test_unverified_headers_do_not_change_the_identity(emu, gateways):
    """On a route without authentication the identity is the address: an
    x-api-key, a token or a forwarding header chosen by the client must not
    open a new bucket (nor get around deny)."""
    gw = gateways.start(throttle_config(emu, HELLO, default={"rate": NO_REFILL, "burst": 2},
                                        limits={"deny": ["127.0.0.2/32"]}))
    c = Client(gw)
    got = []
    for i in range(6):
        got.append(c.get("/hello", headers={
            "x-api-key": f"spoofed-key-{i}", "Authorization": f"Bearer spoofed.token.{i}",
            "X-Forwarded-For": f"10.0.0.{i}", "X-Real-IP": f"10.0.1.{i}",
            "Forwarded": f"for=10.0.2.{i}"}))
    assert statuses(got) == [200, 200] + [429] * 4, got
    assert_forbidden(one(gw, "/hello", "127.0.0.2",
                         headers={"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1",
                                  "Forwarded": "for=127.0.0.1"}))
    c.close()


def test_route_throttle_overrides_default_and_null_exempts(emu, gateways):
    routes = [{"method": "GET", "path": "/a", "function": "hello"},
              {"method": "GET", "path": "/b", "function": "hello"},
              {"method": "GET", "path": "/own", "function": "hello",
               "throttle": {"rate": NO_REFILL, "burst": 4}},
              {"method": "GET", "path": "/free", "function": "hello", "throttle": None}]
    gw = gateways.start(throttle_config(emu, routes, default={"rate": NO_REFILL, "burst": 2}))
    c = Client(gw)
    got = [c.get("/a") for _ in range(3)]
    assert statuses(got) == [200, 200, 429], got
    assert all(rl(r)[0] == "2" for r in got), got
    # the default bucket is per route as well as per identity
    got = [c.get("/b") for _ in range(3)]
    assert statuses(got) == [200, 200, 429], got
    got = [c.get("/own") for _ in range(5)]
    assert statuses(got) == [200] * 4 + [429], got
    assert [rl(r) for r in got] == [("4", "3", "1000"), ("4", "2", "1000"), ("4", "1", "1000"),
                                    ("4", "0", "1000"), ("4", "0", "1000")], got
    got = [c.get("/free") for _ in range(8)]
    assert statuses(got) == [200] * 8, got
    for r in got:
        assert_no_rl(r)
    assert len(emu.invocations()) == 2 + 2 + 4 + 8
    c.close()


KEY_PLANNED = "lg-throttle-planned-5b0f1c2d3e4a"
KEY_PLAIN = "lg-throttle-plain-9c8d7e6f5a4b"
KEY_UNLIMITED = "lg-throttle-unlimited-1a2b3c4d"
KEY_PLAIN2 = "lg-throttle-plain2-77e1f0aa"


def test_api_key_plan_bucket_is_shared_across_routes(emu, gateways, tmp_path):
    path = keys_file(tmp_path, {
        KEY_PLANNED: {"id": "planned", "throttle": {"rate": NO_REFILL, "burst": 3}},
        KEY_PLAIN: {"id": "plain"},
        KEY_PLAIN2: {"id": "plain2"},
        KEY_UNLIMITED: {"id": "unlimited", "throttle": None},
    })
    routes = [{"method": "GET", "path": "/k1", "function": "hello", "auth": "api_key"},
              {"method": "GET", "path": "/k2", "function": "hello", "auth": "api_key"},
              {"method": "GET", "path": "/k3", "function": "hello", "auth": "api_key",
               "throttle": {"rate": NO_REFILL, "burst": 1}}]
    gw = gateways.start(throttle_config(emu, routes, default={"rate": NO_REFILL, "burst": 2},
                                        auth={"api_keys": {"file": path}}))
    c = Client(gw)

    def k(key):
        return {"x-api-key": key}

    # an unknown key is refused by authentication, never by a bucket
    for _ in range(3):
        assert_forbidden(c.get("/k1", headers=k("not-a-key-0000")))
    # the plan's bucket: one for the key, over every route, over the route's own
    got = [c.get(p, headers=k(KEY_PLANNED)) for p in ("/k1", "/k2", "/k1", "/k2", "/k3")]
    assert statuses(got) == [200, 200, 200, 429, 429], got
    assert [rl(r) for r in got[:3]] == [("3", "2", "1000"), ("3", "1", "1000"),
                                        ("3", "0", "1000")], got
    assert_429(got[3], retry_after=1000)
    # no plan throttle: the route's, else the default, per route, with the key id as identity
    got = [c.get("/k1", headers=k(KEY_PLAIN)) for _ in range(3)]
    assert statuses(got) == [200, 200, 429], got
    got = [c.get("/k2", headers=k(KEY_PLAIN)) for _ in range(3)]
    assert statuses(got) == [200, 200, 429], got
    got = [c.get("/k3", headers=k(KEY_PLAIN)) for _ in range(2)]
    assert statuses(got) == [200, 429], got
    assert rl(got[0]) == ("1", "0", "1000"), got
    # another key from the same address is another identity
    got = [c.get("/k1", headers=k(KEY_PLAIN2)) for _ in range(3)]
    assert statuses(got) == [200, 200, 429], got
    # plan throttle null: no per-identity bucket at all
    got = [c.get(p, headers=k(KEY_UNLIMITED)) for p in ("/k1", "/k3") * 4]
    assert statuses(got) == [200] * 8, got
    for r in got:
        assert_no_rl(r)
    assert len(emu.invocations()) == 3 + 2 + 2 + 1 + 2 + 8
    c.close()


def test_global_bucket_caps_all_identities(emu, gateways):
    gw = gateways.start(throttle_config(emu, HELLO, glob={"rate": NO_REFILL, "burst": 3}))
    got = [one(gw, "/hello", f"127.0.0.{i}") for i in (1, 2, 3, 4, 1)]
    assert statuses(got) == [200, 200, 200, 429, 429], got
    assert [rl(r) for r in got] == [("3", "2", "1000"), ("3", "1", "1000"), ("3", "0", "1000"),
                                    ("3", "0", "1000"), ("3", "0", "1000")], got
    assert_429(got[3], retry_after=1000)
    assert len(emu.invocations()) == 3


def test_refused_request_consumes_nothing_from_the_global_bucket(emu, gateways):
    gw = gateways.start(throttle_config(emu, HELLO, default={"rate": NO_REFILL, "burst": 2},
                                        glob={"rate": NO_REFILL, "burst": 4}))
    a = Client(gw, "127.0.0.1")
    got = [a.get("/hello") for _ in range(4)]
    assert statuses(got) == [200, 200, 429, 429], got
    # the two refusals above took nothing from the global bucket: 2 left
    b = Client(gw, "127.0.0.2")
    got = [b.get("/hello") for _ in range(2)]
    assert statuses(got) == [200, 200], got
    assert_429(one(gw, "/hello", "127.0.0.3"), retry_after=1000)
    assert len(emu.invocations()) == 4
    a.close()
    b.close()


def test_unrouted_requests_are_not_throttled_per_identity(emu, gateways):
    gw = gateways.start(throttle_config(emu, HELLO, default={"rate": NO_REFILL, "burst": 1}))
    c = Client(gw)
    for _ in range(3):
        assert_message(c.get("/nope"), 404, "Not Found")
    r = c.get("/hello", method="POST")
    assert r.status == 405, r
    assert c.get("/hello").status == 200
    assert_429(c.get("/hello"), retry_after=1000)
    c.close()


# --------------------------------------------------------------------------
# Workers share the local store exactly
# --------------------------------------------------------------------------

def test_two_workers_share_one_bucket_exactly(emu, gateways):
    config = throttle_config(emu, HELLO, default={"rate": NO_REFILL, "burst": 10})
    config["workers"] = 2
    gw = gateways.start(config)
    n = 20
    results = [r if isinstance(r, str) else r.status for r in at_once(gw, "/hello", n)]
    assert sorted(results, key=str) == [200] * 10 + [429] * 10, results
    assert len(emu.invocations()) == 10


def test_two_workers_share_the_per_ip_bucket_exactly(emu, gateways):
    config = throttle_config(emu, HELLO, limits={"per_ip": {"rate": NO_REFILL, "burst": 5}})
    config["workers"] = 2
    gw = gateways.start(config)
    n = 12
    results = [r if isinstance(r, str) else r.status for r in at_once(gw, "/nope", n)]
    assert sorted(results, key=str) == [404] * 5 + [429] * 7, results


# --------------------------------------------------------------------------
# Quotas
# --------------------------------------------------------------------------

def seconds_until(boundary):
    return (boundary - datetime.datetime.now(datetime.timezone.utc)).total_seconds()


def next_midnight():
    now = datetime.datetime.now(datetime.timezone.utc)
    return datetime.datetime(now.year, now.month, now.day,
                             tzinfo=datetime.timezone.utc) + datetime.timedelta(days=1)


def next_month():
    now = datetime.datetime.now(datetime.timezone.utc)
    y, m = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return datetime.datetime(y, m, 1, tzinfo=datetime.timezone.utc)


def next_monday():
    """The next Monday 00:00 UTC (weeks start on Monday, as ISO 8601 and
    lg_apikey_period_bounds count them)."""
    today = next_midnight() - datetime.timedelta(days=1)
    return today + datetime.timedelta(days=7 - today.weekday())


KEY_DAILY = "lg-quota-daily-41f0e9d8c7b6"
KEY_WEEKLY = "lg-quota-weekly-a5b4c3d2e1f0"
KEY_MONTHLY = "lg-quota-monthly-0f1e2d3c4b5a"
KEY_DAILY_THROTTLED = "lg-quota-daily-throttled-6e5d4c"


def test_quotas_until_the_period_ends(emu, gateways, tmp_path):
    path = keys_file(tmp_path, {
        KEY_DAILY: {"id": "daily", "quota": {"limit": 3, "period": "day"}},
        KEY_WEEKLY: {"id": "weekly", "quota": {"limit": 1, "period": "week"}},
        KEY_MONTHLY: {"id": "monthly", "quota": {"limit": 1, "period": "month"}},
    })
    routes = [{"method": "GET", "path": "/q", "function": "hello", "auth": "api_key"},
              {"method": "GET", "path": "/q2", "function": "hello", "auth": "api_key"}]
    gw = gateways.start(throttle_config(emu, routes, auth={"api_keys": {"file": path}}))
    c = Client(gw)
    # the quota counts the key's requests on every route
    got = [c.get(p, headers={"x-api-key": KEY_DAILY}) for p in ("/q", "/q2", "/q")]
    assert statuses(got) == [200, 200, 200], got
    for p in ("/q", "/q2"):
        ra = assert_429(c.get(p, headers={"x-api-key": KEY_DAILY}))
        assert abs(ra - seconds_until(next_midnight())) <= 2, (ra, seconds_until(next_midnight()))
    for key, boundary in ((KEY_WEEKLY, next_monday()), (KEY_MONTHLY, next_month())):
        assert c.get("/q", headers={"x-api-key": key}).status == 200
        ra = assert_429(c.get("/q", headers={"x-api-key": key}))
        assert abs(ra - seconds_until(boundary)) <= 2, (key, ra, seconds_until(boundary))
    assert len(emu.invocations()) == 5
    c.close()


@STORES
def test_bucket_refusals_do_not_count_against_the_quota(emu, gateways, tmp_path, store):
    path = keys_file(tmp_path, {KEY_DAILY_THROTTLED: {
        "id": "daily-throttled", "throttle": {"rate": 2, "burst": 1},
        "quota": {"limit": 3, "period": "day"}}})
    routes = [{"method": "GET", "path": "/q", "function": "hello", "auth": "api_key"}]
    gw = gateways.start(store_config(store, emu, routes, auth={"api_keys": {"file": path}}))
    c = Client(gw)
    h = {"x-api-key": KEY_DAILY_THROTTLED}
    for i in range(3):
        assert c.get("/q", headers=h).status == 200
        if i < 2:  # (after the third pass the quota is spent too)
            assert_429(c.get("/q", headers=h), retry_after=1)  # the plan's bucket, 0.5 s/token
            assert_429(c.get("/q", headers=h), retry_after=1)
        time.sleep(0.6)
    ra = assert_429(c.get("/q", headers=h))  # now the quota: 3 counted, not 7
    assert abs(ra - seconds_until(next_midnight())) <= 2, ra
    assert len(emu.invocations()) == 3
    assert_store_used(store)
    c.close()


@STORES
def test_global_refusals_do_not_count_against_the_quota(emu, gateways, tmp_path, store):
    path = keys_file(tmp_path, {KEY_DAILY: {"id": "daily", "throttle": None,
                                            "quota": {"limit": 3, "period": "day"}}})
    routes = [{"method": "GET", "path": "/q", "function": "hello", "auth": "api_key"}]
    gw = gateways.start(store_config(store, emu, routes, glob={"rate": 2, "burst": 1},
                                     auth={"api_keys": {"file": path}}))
    c = Client(gw)
    h = {"x-api-key": KEY_DAILY}
    for i in range(3):
        assert c.get("/q", headers=h).status == 200
        if i < 2:
            assert_429(c.get("/q", headers=h), retry_after=1)  # the global bucket
            assert_429(c.get("/q", headers=h), retry_after=1)
        time.sleep(0.6)
    ra = assert_429(c.get("/q", headers=h))
    assert abs(ra - seconds_until(next_midnight())) <= 2, ra
    assert len(emu.invocations()) == 3
    assert_store_used(store)
    c.close()


def test_sighup_applies_new_limits_and_keeps_the_counters(emu, gateways, tmp_path):
    path = keys_file(tmp_path, {KEY_DAILY: {"id": "daily", "throttle": None,
                                            "quota": {"limit": 2, "period": "day"}}})
    routes = HELLO + [{"method": "GET", "path": "/q", "function": "hello", "auth": "api_key"}]
    gw = gateways.start(throttle_config(emu, routes, default={"rate": NO_REFILL, "burst": 2},
                                        auth={"api_keys": {"file": path}}))
    c = Client(gw)
    h = {"x-api-key": KEY_DAILY}
    assert statuses([c.get("/hello") for _ in range(3)]) == [200, 200, 429]
    assert statuses([c.get("/q", headers=h) for _ in range(3)]) == [200, 200, 429]
    config = dict(gw.config)
    config["limits"] = dict(config["limits"], deny=["127.0.0.2/32"])
    config["throttle"] = dict(config["throttle"], default={"rate": NO_REFILL, "burst": 5})
    write_json(gw.config_path, config)
    gw.send_signal(signal.SIGHUP)
    assert gw.wait_for_log("configuration reloaded"), gw.log_text()[-2000:]
    assert_forbidden(one(gw, "/hello", "127.0.0.2"))
    r = c.get("/hello")
    assert rl(r)[0] == "5", r
    # the day's quota counted before the reload still counts after it
    ra = assert_429(c.get("/q", headers=h))
    assert abs(ra - seconds_until(next_midnight())) <= 2, ra
    c.close()


# --------------------------------------------------------------------------
# The Redis store
# --------------------------------------------------------------------------

def redis_config(emu, port, prefix, routes=HELLO, timeout_ms=100, **kw):
    return throttle_config(emu, routes, throttle={"store": "redis"},
                           redis={"host": "127.0.0.1", "port": port, "timeout_ms": timeout_ms,
                                  "prefix": prefix}, **kw)


def new_prefix():
    return f"lgt{uuid.uuid4().hex[:8]}:"


def second_instance(config, **over):
    """The same config on another port."""
    return dict(config, listen=[{"address": f"127.0.0.1:{free_port()}"}], **over)


SOURCES = (f"127.0.{i // 250 + 1}.{i % 250 + 1}" for i in itertools.count())


def wait_redis_used(gw, rc, path="/hello", timeout=20):
    """Poll until a request to gw from a never-seen address adds a key to
    Redis (gw decides with Redis again, not with its local fallback)."""
    def uses_redis():
        before = rc.dbsize()
        r = one(gw, path, next(SOURCES))
        assert r.status == 200, r
        return rc.dbsize() > before

    assert poll(uses_redis, timeout=timeout, interval=0.2), \
        f"no use of redis within {timeout} s:\n" + gw.log_text()[-3000:]


def interleave(gws, path, n, source, headers=None):
    """n requests from source, sent to each of gws in turn (keep-alive)."""
    clients = [Client(g, source) for g in gws]
    try:
        return [clients[i % len(clients)].get(path, headers=headers) for i in range(n)]
    finally:
        for c in clients:
            c.close()


def test_redis_two_instances_share_a_bucket_exactly(emu, gateways, redis_server):
    prefix = new_prefix()
    config = redis_config(emu, redis_server.port, prefix,
                          default={"rate": NO_REFILL, "burst": 10})
    a = gateways.start(config)
    b = gateways.start(second_instance(config, workers=2))
    ca = Client(a)
    # b: a new connection each time, so that both of its workers (each with
    # its own Redis client) take part
    got = [ca.get("/hello") if i % 2 == 0 else one(b, "/hello") for i in range(20)]
    assert statuses(got).count(200) == 10, got
    assert statuses(got) == [200] * 10 + [429] * 10, got
    assert [rl(r)[1] for r in got[:10]] == [str(9 - i) for i in range(10)], got
    for r in got[10:]:
        assert_429(r, retry_after=1000)
    assert len(emu.invocations()) == 10

    rc = redis_server.client()
    keys = rc.keys("*")
    assert keys, "no key in redis"
    assert all(k.startswith(prefix) for k in keys), keys
    for k in keys:
        assert rc.ttl(k) > 0, f"{k} has no expiry (ttl {rc.ttl(k)})"
    ca.close()


def test_redis_concurrent_requests_on_one_bucket_are_exact(emu, gateways, redis_server):
    """Decisions that arrive together are sent to Redis together (one script
    call per loop turn); each must see the ones before it: 30 requests at
    once on a bucket of 10 (one caller, one worker) let exactly 10 through,
    with RateLimit-Remaining 9..0 each given once."""
    prefix = new_prefix()
    config = redis_config(emu, redis_server.port, prefix,
                          default={"rate": NO_REFILL, "burst": 10})
    gw = gateways.start(config)
    rc = redis_server.client()
    wait_redis_used(gw, rc)

    def script_calls():
        stats = rc.info("commandstats")
        return sum(stats.get(k, {}).get("calls", 0) for k in ("cmdstat_evalsha", "cmdstat_eval"))

    calls_before = script_calls()
    n = 30
    results = at_once(gw, "/hello", n)
    assert all(not isinstance(r, str) for r in results), results
    got = statuses(results)
    assert sorted(got) == [200] * 10 + [429] * 20, got
    remaining = sorted(int(rl(r)[1]) for r in results if r.status == 200)
    assert remaining == list(range(10)), remaining
    for r in results:
        if r.status == 429:
            assert_429(r, retry_after=1000)
    assert "falling back" not in gw.log_text() and "unusable" not in gw.log_text(), \
        gw.log_text()[-2000:]
    calls = script_calls() - calls_before
    print(f"script calls for {n} requests: {calls}")
    assert 1 <= calls < n, f"{calls} script calls for {n} requests at once: no batching"


def test_redis_concurrent_mixed_buckets_and_quota_are_exact(emu, gateways, redis_server,
                                                            tmp_path):
    """One script call decides requests of several callers that share the
    global bucket (and a quota): sent at once, 6 requests with an API key
    planned at burst 4, 5 with a key whose daily quota is 3 (no bucket of
    its own) and 6 from a plain caller (default burst 5), under a global
    burst of 10: exactly 10 pass, no caller beyond its own limit, and each
    RateLimit-Remaining value of a bucket is given once."""
    path = keys_file(tmp_path, {
        KEY_PLANNED: {"id": "planned", "throttle": {"rate": NO_REFILL, "burst": 4}},
        KEY_DAILY: {"id": "daily", "quota": {"limit": 3, "period": "day"}, "throttle": None},
    })
    routes = HELLO + [{"method": "GET", "path": "/k", "function": "hello", "auth": "api_key"}]
    prefix = new_prefix()
    config = redis_config(emu, redis_server.port, prefix, routes=routes,
                          default={"rate": NO_REFILL, "burst": 5},
                          glob={"rate": NO_REFILL, "burst": 10},
                          auth={"api_keys": {"file": path}})
    gw = gateways.start(config)
    rc = redis_server.client()
    who = ["planned"] * 6 + ["daily"] * 5 + ["plain"] * 6
    paths = ["/hello" if w == "plain" else "/k" for w in who]
    headers = [{"x-api-key": {"planned": KEY_PLANNED, "daily": KEY_DAILY}[w]}
               if w != "plain" else {} for w in who]
    results = at_once(gw, paths, len(who), headers)
    assert all(not isinstance(r, str) for r in results), results
    assert statuses(results).count(200) == 10, list(zip(who, statuses(results)))
    passed = {w: [r for w2, r in zip(who, results) if w2 == w and r.status == 200]
              for w in ("planned", "daily", "plain")}
    assert len(passed["planned"]) <= 4 and len(passed["daily"]) <= 3 \
        and len(passed["plain"]) <= 5, {w: len(v) for w, v in passed.items()}
    # the caller's own bucket in the headers; for "daily", the global one
    for w, burst in (("planned", 4), ("plain", 5)):
        got = sorted(int(rl(r)[1]) for r in passed[w])
        assert got == list(range(burst - len(passed[w]), burst)), (w, got)
        assert all(rl(r)[0] == str(burst) for r in passed[w]), w
    got = [int(rl(r)[1]) for r in passed["daily"]]
    assert len(set(got)) == len(got) and all(0 <= v <= 9 for v in got), got
    for r in results:
        if r.status == 429:
            assert_429(r)
    assert len(emu.invocations()) == 10
    # the quota counter counts exactly the daily key's passes
    counters = [k for k in rc.keys(prefix + "*") if rc.type(k) == "string"
                and rc.get(k).isdigit()]
    assert [int(rc.get(k)) for k in counters] == [len(passed["daily"])], counters
    assert "unusable" not in gw.log_text(), gw.log_text()[-2000:]


def test_redis_key_of_another_type_is_a_full_bucket(emu, gateways, redis_server):
    """A bucket key holding something else (an older version's hash) counts
    as a full bucket and is replaced by a bucket again."""
    prefix = new_prefix()
    config = redis_config(emu, redis_server.port, prefix,
                          default={"rate": NO_REFILL, "burst": 3})
    gw = gateways.start(config)
    rc = redis_server.client()
    c = Client(gw)
    got = [c.get("/hello") for _ in range(3)]
    assert [rl(r)[1] for r in got] == ["2", "1", "0"], got
    keys = rc.keys(prefix + "*")
    assert len(keys) == 1 and rc.type(keys[0]) == "string", keys
    rc.delete(keys[0])
    rc.hset(keys[0], mapping={"tokens": "0", "ts": "0"})
    got = [c.get("/hello") for _ in range(4)]
    assert statuses(got) == [200, 200, 200, 429], got
    assert [rl(r)[1] for r in got[:3]] == ["2", "1", "0"], got
    assert rc.type(keys[0]) == "string", rc.type(keys[0])
    assert "unusable" not in gw.log_text(), gw.log_text()[-2000:]
    c.close()


def test_redis_killed_fails_open_then_restarted_shares_again(emu, gateways, redis_server):
    prefix = new_prefix()
    config = redis_config(emu, redis_server.port, prefix,
                          default={"rate": NO_REFILL, "burst": 4})
    a = gateways.start(config)
    b = gateways.start(second_instance(config))
    results = {"a": [], "b": []}
    stop = threading.Event()

    def flood(name, gw):
        c = Client(gw, timeout=5)
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                r = c.get("/hello")
                results[name].append((r.status, time.monotonic() - t0))
            except Exception as e:  # noqa: BLE001 - a request not answered is the failure
                results[name].append((repr(e), time.monotonic() - t0))
                c.close()
                c = Client(gw, timeout=5)
        c.close()

    threads = [threading.Thread(target=flood, args=(n, g)) for n, g in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    time.sleep(0.4)
    logs_before = (len(a.log_text()), len(b.log_text()))
    redis_server.kill()
    time.sleep(1.2)
    stop.set()
    for t in threads:
        t.join(15)
    for name, res in results.items():
        assert len(res) >= 10, (name, res)
        bad = [x for x in res if x[0] not in (200, 429)]
        assert not bad, (name, bad[:10])
    # once per state change, not once per failed request
    for gw, before in zip((a, b), logs_before):
        lines = [ln for ln in gw.log_text()[before:].splitlines() if "redis" in ln.lower()]
        assert 1 <= len(lines) <= 2, lines

    redis_server.restart()
    rc = redis_server.client()
    for gw in (a, b):
        wait_redis_used(gw, rc)
    # a fresh identity's bucket is shared exactly again
    got = interleave((a, b), "/hello", 8, "127.0.9.1")
    assert statuses(got) == [200] * 4 + [429] * 4, got
    assert [rl(r)[1] for r in got[:4]] == ["3", "2", "1", "0"], got


def test_redis_paused_answers_within_the_deadline_then_shares_again(emu, gateways,
                                                                   redis_server):
    timeout_s = 0.100
    config = redis_config(emu, redis_server.port, new_prefix(), timeout_ms=100,
                          default={"rate": NO_REFILL, "burst": 4})
    a = gateways.start(config)
    b = gateways.start(second_instance(config))
    rc = redis_server.client()
    assert statuses(interleave((a, b), "/hello", 2, "127.0.8.1")) == [200, 200]
    # Redis hangs with the connections open: replies come late, after resume
    redis_server.pause()
    try:
        got, took = [], []
        for i in range(8):
            t0 = time.monotonic()
            got.append(one((a, b)[i % 2], "/hello", "127.0.8.2"))
            took.append(time.monotonic() - t0)
    finally:
        redis_server.resume()
    assert all(r.status in (200, 429) for r in got), got
    assert max(took) < timeout_s + 0.250, took
    assert statistics.median(took) < timeout_s + 0.050, took
    # the late replies must not be taken for the answers of later commands
    for gw in (a, b):
        wait_redis_used(gw, rc)
    got = interleave((a, b), "/hello", 8, "127.0.8.3")
    assert statuses(got) == [200] * 4 + [429] * 4, got
    assert [rl(r)[1] for r in got[:4]] == ["3", "2", "1", "0"], got


def test_redis_script_flushed_is_loaded_again(emu, gateways, redis_server):
    config = redis_config(emu, redis_server.port, new_prefix(),
                          default={"rate": NO_REFILL, "burst": 6})
    a = gateways.start(config)
    b = gateways.start(second_instance(config))
    first = interleave((a, b), "/hello", 3, "127.0.0.1")
    assert statuses(first) == [200] * 3, first
    redis_server.client().script_flush()  # EVALSHA now answers NOSCRIPT
    rest = interleave((a, b), "/hello", 9, "127.0.0.1")
    assert statuses(rest) == [200] * 3 + [429] * 6, rest
    assert [rl(r)[1] for r in first + rest[:3]] == ["5", "4", "3", "2", "1", "0"], first + rest


def test_redis_plan_global_and_quota_shared_across_instances(emu, gateways, redis_server,
                                                             tmp_path):
    path = keys_file(tmp_path, {
        KEY_DAILY: {"id": "daily", "quota": {"limit": 3, "period": "day"}, "throttle": None},
        KEY_PLANNED: {"id": "planned", "throttle": {"rate": NO_REFILL, "burst": 4}},
    })
    routes = HELLO + [{"method": "GET", "path": "/k1", "function": "hello", "auth": "api_key"},
                      {"method": "GET", "path": "/k2", "function": "hello", "auth": "api_key"}]
    config = redis_config(emu, redis_server.port, new_prefix(), routes=routes,
                          glob={"rate": NO_REFILL, "burst": 6},
                          auth={"api_keys": {"file": path}})
    a = gateways.start(config)
    b = gateways.start(second_instance(config))
    # the API key plan: one bucket for the key, over routes and instances
    got = [one((a, b)[i % 2], ("/k1", "/k2")[i // 2 % 2], headers={"x-api-key": KEY_PLANNED})
           for i in range(6)]
    assert statuses(got) == [200] * 4 + [429] * 2, got
    assert_429(got[4], retry_after=1000)
    # the quota over instances; the global bucket (6) has 2 tokens left
    got = interleave((a, b), "/k1", 3, "127.0.0.1", headers={"x-api-key": KEY_DAILY})
    assert statuses(got) == [200, 200, 429], got
    assert_429(got[2], retry_after=1000)  # the global bucket, not the quota
    got = [one((a, b)[i % 2], "/hello", f"127.0.7.{i + 1}") for i in range(4)]
    assert statuses(got) == [429] * 4, got
    assert len(emu.invocations()) == 6


def test_redis_quota_shared_across_instances(emu, gateways, redis_server, tmp_path):
    path = keys_file(tmp_path, {KEY_DAILY: {"id": "daily",
                                            "quota": {"limit": 3, "period": "day"}}})
    routes = [{"method": "GET", "path": "/q", "function": "hello", "auth": "api_key"}]
    prefix = new_prefix()
    config = redis_config(emu, redis_server.port, prefix, routes=routes,
                          auth={"api_keys": {"file": path}})
    a = gateways.start(config)
    b = gateways.start(second_instance(config))
    got = interleave((a, b), "/q", 6, "127.0.0.1", headers={"x-api-key": KEY_DAILY})
    assert statuses(got) == [200] * 3 + [429] * 3, got
    for r in got[3:]:
        ra = assert_429(r)
        assert abs(ra - seconds_until(next_midnight())) <= 2, ra
    rc = redis_server.client()
    keys = rc.keys("*")
    assert keys and all(k.startswith(prefix) for k in keys), keys
    for k in keys:  # a quota counter lives at least until its period ends
        assert rc.ttl(k) >= seconds_until(next_midnight()) - 2, (k, rc.ttl(k))


def test_reload_to_another_redis_keeps_waiting_requests(emu, gateways, redis_server,
                                                        blackhole):
    """A reload that moves Redis: a request already waiting on the old
    connection (a Redis that never answers) still gets its answer when that
    command times out (fail open), and later requests use the new Redis."""
    prefix = new_prefix()
    config = redis_config(emu, blackhole.port, prefix, timeout_ms=1500,
                          default={"rate": NO_REFILL, "burst": 5})
    gw = gateways.start(config)
    pending = {}

    def run():
        t0 = time.monotonic()
        try:
            pending["r"] = one(gw, "/hello", "127.0.8.1")
        except Exception as e:  # noqa: BLE001 - reported below
            pending["r"] = repr(e)
        pending["s"] = time.monotonic() - t0

    th = threading.Thread(target=run)
    th.start()
    assert poll(lambda: blackhole.accepted > 0, timeout=5, interval=0.05)
    time.sleep(0.3)  # the request's decision is now waiting on the blackhole
    moved = dict(gw.config, redis=dict(gw.config["redis"], port=redis_server.port,
                                       timeout_ms=100))
    write_json(gw.config_path, moved)
    gw.send_signal(signal.SIGHUP)
    assert gw.wait_for_log("configuration reloaded"), gw.log_text()[-2000:]
    # this request makes the worker switch to the new Redis
    rc = redis_server.client()
    wait_redis_used(gw, rc)
    th.join(10)
    assert not th.is_alive(), "the request waiting on the old Redis never got an answer"
    r = pending["r"]
    assert not isinstance(r, str), r
    assert r.status == 200, r
    assert pending["s"] < 1.5 + 1.0, pending["s"]
    assert any(k.startswith(prefix) for k in rc.keys("*"))


def test_redis_password_and_db(emu, gateways):
    from redis_server import RedisServer
    srv = RedisServer(password="lg-test-redis-pw")
    try:
        prefix = new_prefix()
        config = redis_config(emu, srv.port, prefix, default={"rate": NO_REFILL, "burst": 3})
        config["redis"].update(password="lg-test-redis-pw", db=3)
        gw = gateways.start(config)
        got = interleave((gw,), "/hello", 4, "127.0.0.1")
        assert statuses(got) == [200, 200, 200, 429], got
        assert srv.client(db=3).keys("*"), "nothing in db 3"
        assert srv.client(db=0).keys("*") == []
        # a wrong password: refused by Redis, so the gateway fails open
        bad = dict(config, redis=dict(config["redis"], password="wrong", prefix=new_prefix()))
        gw2 = gateways.start(second_instance(bad))
        got = interleave((gw2,), "/hello", 4, "127.0.0.1")
        assert statuses(got) == [200, 200, 200, 429], got
        assert all(k.startswith(prefix) for k in srv.client(db=3).keys("*"))
        gw.stop()
        gw2.stop()
    finally:
        srv.close()


def test_redis_down_at_start_fails_open_with_local_buckets(emu, gateways):
    dead_port = free_port()  # nothing listens there
    gw = gateways.start(redis_config(emu, dead_port, new_prefix(),
                                     default={"rate": NO_REFILL, "burst": 3}))
    c = Client(gw)
    got = [c.get("/hello") for _ in range(5)]
    assert statuses(got) == [200, 200, 200, 429, 429], got
    assert [rl(r)[1] for r in got] == ["2", "1", "0", "0", "0"], got
    c.close()


def test_redis_blackholed_answers_within_the_deadline(emu, gateways, blackhole):
    timeout_s = 0.100
    routes = HELLO + [{"method": "GET", "path": "/limited", "function": "hello",
                       "throttle": {"rate": NO_REFILL, "burst": 3}}]
    r_gw = gateways.start(redis_config(emu, blackhole.port, new_prefix(), routes=routes,
                                       timeout_ms=100,
                                       default={"rate": 1000, "burst": 1000}))
    l_gw = gateways.start(throttle_config(emu, routes, default={"rate": 1000, "burst": 1000}))
    rc, lc = Client(r_gw), Client(l_gw)
    slow, fast = [], []
    for _ in range(10):
        t0 = time.monotonic()
        r = rc.get("/hello")
        slow.append(time.monotonic() - t0)
        assert r.status == 200, r
        t0 = time.monotonic()
        r = lc.get("/hello")
        fast.append(time.monotonic() - t0)
        assert r.status == 200, r
    assert blackhole.accepted >= 1, "the gateway never tried to reach redis"
    assert max(slow) < timeout_s + 0.250, slow
    base = statistics.median(fast)
    extra = statistics.median([s - base for s in slow])
    assert extra < timeout_s + 0.050, (extra, slow, fast)
    # failing open falls back to the local buckets: limits still hold
    got = [rc.get("/limited") for _ in range(5)]
    assert statuses(got) == [200, 200, 200, 429, 429], got
    rc.close()
    lc.close()


# --------------------------------------------------------------------------
# Refusals before a request exists
# --------------------------------------------------------------------------

def test_deny_list(emu, gateways):
    gw = gateways.start(throttle_config(emu, HELLO, limits={"deny": ["127.0.0.2/32"]}))
    assert_forbidden(one(gw, "/hello", "127.0.0.2"))
    assert_forbidden(one(gw, "/nope", "127.0.0.2"))  # before routing
    assert one(gw, "/hello", "127.0.0.1").status == 200
    assert one(gw, "/hello", "127.0.0.5").status == 200  # an empty allow allows all
    assert len(emu.invocations()) == 2


def test_allow_list_and_deny_inside_it(emu, gateways):
    gw = gateways.start(throttle_config(emu, HELLO, limits={"allow": ["127.0.0.0/30"],
                                                            "deny": ["127.0.0.2/32"]}))
    assert one(gw, "/hello", "127.0.0.1").status == 200
    assert_forbidden(one(gw, "/hello", "127.0.0.2"))  # deny wins over allow
    assert one(gw, "/hello", "127.0.0.3").status == 200
    assert_forbidden(one(gw, "/hello", "127.0.0.4"))  # outside 127.0.0.0/30
    assert_forbidden(one(gw, "/hello", "127.0.1.1"))
    assert len(emu.invocations()) == 2

    only = gateways.start(throttle_config(emu, HELLO, limits={"allow": ["127.0.0.1/32"]}))
    assert one(only, "/hello", "127.0.0.1").status == 200
    assert_forbidden(one(only, "/hello", "127.0.0.3"))


def test_ipv6_cidrs(emu, gateways):
    def v6(limits):
        config = throttle_config(emu, HELLO, limits=limits)
        config["listen"] = [{"address": f"[::1]:{free_port(socket.AF_INET6, '::1')}"}]
        return gateways.start(config)

    denied = v6({"deny": ["::/64"]})
    assert_forbidden(one(denied, "/hello", "::1"))
    other = v6({"deny": ["::2/127", "0.0.0.0/0"]})
    assert one(other, "/hello", "::1").status == 200
    allowed = v6({"allow": ["::1/128"]})
    assert one(allowed, "/hello", "::1").status == 200
    not_allowed = v6({"allow": ["127.0.0.1/32", "fe80::/10"]})
    assert_forbidden(one(not_allowed, "/hello", "::1"))


def test_per_ip_bucket_applies_before_routing_and_after_deny(emu, gateways):
    gw = gateways.start(throttle_config(emu, HELLO, limits={"per_ip": {"rate": 1, "burst": 3},
                                                            "deny": ["127.0.0.3/32"]}))
    c = Client(gw)
    for _ in range(3):
        assert_message(c.get("/nope"), 404, "Not Found")
    assert_429(c.get("/nope"), retry_after=1)
    assert_429(c.get("/hello"), retry_after=1)
    assert one(gw, "/hello", "127.0.0.2").status == 200
    # deny comes first: a denied address is always 403, never 429
    for _ in range(5):
        assert_forbidden(one(gw, "/hello", "127.0.0.3"))
    assert len(emu.invocations()) == 1
    time.sleep(1.1)
    assert c.get("/hello").status == 200
    c.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_max_connections_per_ip(emu, gateways, workers):
    gw = gateways.start(throttle_config(emu, HELLO, limits={"max_connections_per_ip": 5},
                                        workers=workers))
    held = [Client(gw, "127.0.0.1") for _ in range(5)]
    for c in held:
        assert c.get("/hello").status == 200
    for _ in range(4):  # the cap is the instance's, whichever worker accepts
        assert no_answer(gw, "127.0.0.1") == b""
    assert one(gw, "/hello", "127.0.0.2").status == 200
    for c in held:  # the refusal did not disturb the others
        assert c.get("/hello").status == 200
    held.pop().close()

    def served():
        try:
            return one(gw, "/hello", "127.0.0.1").status == 200
        except (ConnectionError, http.client.HTTPException):
            return False

    assert poll(served, timeout=3), "a closed connection was not given back to its address"
    for c in held:
        c.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_max_connections(emu, gateways, workers):
    gw = gateways.start(throttle_config(emu, HELLO, limits={"max_connections": 4},
                                        workers=workers))
    held = [Client(gw, src) for src in ("127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.2")]
    for c in held:
        assert c.get("/hello").status == 200
    for src in ("127.0.0.3", "127.0.0.4", "127.0.0.3", "127.0.0.5"):
        assert no_answer(gw, src) == b""
    held.pop().close()

    def served():
        try:
            return one(gw, "/hello", "127.0.0.3").status == 200
        except (ConnectionError, http.client.HTTPException):
            return False

    assert poll(served, timeout=3), "a closed connection was not given back"
    for c in held:
        c.close()


def test_slowloris_connections_are_dropped_while_others_are_served(emu, gateways):
    header_timeout = 2.0
    gw = gateways.start(throttle_config(emu, HELLO, limits={
        "header_timeout_ms": int(header_timeout * 1000), "max_connections_per_ip": 1000}))
    host, port = gw.address()
    slow = {}  # socket -> [opened, ended or None, what was received, trickles]
    for i in range(300):
        s = socket.create_connection((host, port), timeout=5, source_address=("127.0.0.1", 0))
        trickles = i % 4 != 0  # a quarter only connect and never send a byte
        if trickles:
            s.sendall(b"GET /hello HTTP/1.1\r\n")
        s.setblocking(False)
        slow[s] = [time.monotonic(), None, b"", trickles]

    normal = []
    stop = threading.Event()

    def normal_client():
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                status = one(gw, "/hello", "127.0.0.2").status
            except Exception as e:  # noqa: BLE001 - reported below
                status = repr(e)
            normal.append((status, time.monotonic() - t0))
            time.sleep(0.1)

    t = threading.Thread(target=normal_client)
    t.start()
    deadline = time.monotonic() + header_timeout + 2.0
    next_trickle = time.monotonic() + 0.5
    try:
        while time.monotonic() < deadline and any(v[1] is None for v in slow.values()):
            live = [s for s, v in slow.items() if v[1] is None]
            readable, _, _ = select.select(live, [], [], 0.05)
            for s in readable:
                v = slow[s]
                try:
                    data = s.recv(65536)
                except ConnectionResetError:
                    data = b""
                except BlockingIOError:
                    continue
                v[2] += data
                if not data or v[2].startswith(b"HTTP/1.1 408"):
                    v[1] = time.monotonic()
            if time.monotonic() >= next_trickle:
                next_trickle += 0.5
                for s in live:
                    if slow[s][1] is None and slow[s][3]:
                        try:
                            s.send(b"X-a: b\r\n")
                        except (BrokenPipeError, ConnectionResetError):
                            slow[s][1] = time.monotonic()
                        except BlockingIOError:
                            pass
    finally:
        stop.set()
        t.join(10)
        for s in slow:
            s.close()
    alive = [v for v in slow.values() if v[1] is None]
    assert not alive, f"{len(alive)} of 300 trickling connections still open after " \
                      f"{header_timeout + 2.0}s"
    lifetimes = sorted(v[1] - v[0] for v in slow.values())
    assert lifetimes[0] >= header_timeout - 0.5, lifetimes[:10]
    answers = {v[2][:12] for v in slow.values()}
    assert answers <= {b"", b"HTTP/1.1 408"}, answers
    assert len(normal) >= 10, normal
    assert all(st == 200 for st, _ in normal), normal
    assert max(d for _, d in normal) < 1.0, normal


def trickle(s, piece, interval, limit):
    """Send piece every interval on s until the server answers or closes;
    returns (seconds until then or None after limit, bytes received)."""
    t0 = time.monotonic()
    got = b""
    s.settimeout(interval)
    while time.monotonic() - t0 < limit:
        try:
            s.send(piece)
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - t0, got
        try:
            data = s.recv(65536)
            got += data
            if not data or got.startswith(b"HTTP/1.1 408"):
                return time.monotonic() - t0, got
        except socket.timeout:
            pass
        except ConnectionResetError:
            return time.monotonic() - t0, got
    return None, got


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_slow_post_body_times_out_without_invoking(emu, gateways, framing):
    routes = [{"method": "POST", "path": "/echo", "function": "echo"}]
    gw = gateways.start(throttle_config(emu, routes, limits={"body_timeout_ms": 1000}))
    head = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n"
    if framing == "chunked":
        head += b"Transfer-Encoding: chunked\r\n\r\n"
        piece = b"1\r\nx\r\n"
    else:
        head += b"Content-Length: 100\r\n\r\n"
        piece = b"x"
    with socket.create_connection(gw.address(), timeout=5) as s:
        s.sendall(head)
        ended, got = trickle(s, piece, 0.2, 4.0)
    assert ended is not None, f"a body trickled for 4 s was still being read (got {got!r})"
    assert 0.8 <= ended <= 2.5, ended
    assert got == b"" or got.startswith(b"HTTP/1.1 408 "), got
    time.sleep(0.2)
    assert emu.invocations() == []


def test_header_timeout_on_a_keep_alive_connection(emu, gateways):
    gw = gateways.start(throttle_config(emu, HELLO, limits={"header_timeout_ms": 1000,
                                                            "idle_timeout_ms": 60000}))
    with socket.create_connection(gw.address(), timeout=5) as s:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        first = b""
        while b"\r\n\r\n" not in first or len(first.partition(b"\r\n\r\n")[2]) < int(
                re.search(rb"(?i)content-length: *(\d+)", first).group(1)):
            data = s.recv(65536)
            assert data, first
            first += data
        assert first.startswith(b"HTTP/1.1 200 "), first
        # the next request's header block trickles in
        s.sendall(b"GET /hello HTTP/1.1\r\n")
        ended, got = trickle(s, b"X-a: b\r\n", 0.25, 4.0)
    assert ended is not None, f"headers trickled for 4 s were still being read (got {got!r})"
    assert ended <= 2.0, ended
    assert got == b"" or got.startswith(b"HTTP/1.1 408 "), got
    assert len(emu.invocations()) == 1


def test_max_inflight_is_503_with_retry_after(emu, gateways):
    routes = [{"method": "GET", "path": "/slow", "function": "slow", "timeout_ms": 10000}]
    gw = gateways.start(throttle_config(emu, routes, limits={"max_inflight": 2}))
    results = [None, None]

    def slow_call(i):
        results[i] = one(gw, "/slow?ms=1500", f"127.0.0.{i + 1}")

    threads = [threading.Thread(target=slow_call, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    assert poll(lambda: emu.stats()["active"] == 2, timeout=5), emu.stats()
    t0 = time.monotonic()
    r = one(gw, "/slow?ms=1", "127.0.0.3")
    assert time.monotonic() - t0 < 0.5, "the refusal waited for a slot"
    assert_message(r, 503, "Service Unavailable")
    ra = r.header("retry-after")
    assert ra is not None and ra.isdigit() and int(ra) >= 1, r
    assert r.header("x-request-id"), r
    for t in threads:
        t.join(10)
    assert [x.status for x in results] == [200, 200], results
    assert one(gw, "/slow?ms=1").status == 200  # the slots came back
    assert len(emu.invocations()) == 3
