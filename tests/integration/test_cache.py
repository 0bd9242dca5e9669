"""The response cache through the real daemon (issue 5; CONTRACT sections 3, 5, 8).

Memory store (one instance, shared by its workers, bounded by max_bytes
with LRU eviction) and Redis store (a real redis-server shared by two
instances, killed, restarted and paused): X-Cache and Age, what is stored
and for how long, how keys are made (route, path parameters, key_query,
key_headers, per_user identity), HEAD sharing GET's entries, methods that
bypass, invalidation by Cache-Control per cache.invalidation, coalescing
of concurrent misses, stale-if-error, and throttling and authentication
coming before the cache.

The test-only function cache_probe (tests/integration/functions/) numbers
its calls: a HIT repeats the number of the answer that filled the entry.
Query parameters it reads (status, cc, cookie, pad, ms, fail, ...) are left
out of the routes' key_query, so they do not split the key.
Run: /usr/bin/python3 -m pytest -q tests/integration/test_cache.py
"""

import concurrent.futures
import hashlib
import http.client
import json
import os
import random
import re
import sys
import threading
import time
import uuid

import jwt
import pytest
import redis
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gateway import base_config, free_port, poll, read_response  # noqa: E402

PROBE = "cache_probe"
NO_REFILL = 0.001  # tokens/s: no refill within a test
ISSUER = "https://issuer.example.com/cache-tests"
AUDIENCE = "cache-tests"
KEY_ALICE = "lg-cache-alice-5d2f8a61c0e94b7d"
KEY_BOB = "lg-cache-bob-93c1e07a4b6f28d5"


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

def cached(path="/c", cache=None, method="GET", function=PROBE, **kw):
    """A route with a cache block (ttl 60 s unless given)."""
    r = {"method": method, "path": path, "function": function,
         "cache": {"ttl_s": 60} if cache is None else cache}
    r.update(kw)
    return r


def req(gw, path, method="GET", headers=None, source="127.0.0.1", body=None, index=0,
        timeout=15):
    """One request on its own connection from source."""
    host, port = gw.address(index)
    conn = http.client.HTTPConnection(host, port, timeout=timeout, source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        return read_response(conn.getresponse())
    finally:
        conn.close()


def xc(r):
    return r.header("x-cache")


def n_of(r):
    """The cache_probe call number of an answer."""
    if r.header("content-type", "").startswith("text/plain"):
        m = re.match(rb"n=(\d+);", r.body)
        assert m, r
        return int(m.group(1))
    return r.json()["n"]


def calls(emu, function=PROBE):
    return len(emu.invocations(function=function))


def assert_miss(r, status=200):
    assert r.status == status, r
    assert xc(r) == "MISS", r
    assert not r.has("age"), r


def assert_hit(r, like=None, status=200):
    """A HIT with a whole-second Age; with like, the same status, body bytes
    and function headers as the answer like."""
    assert r.status == status, r
    assert xc(r) == "HIT", r
    age = r.header("age")
    assert age is not None and age.isdigit(), r
    if like is not None:
        assert r.status == like.status, (r, like)
        assert r.body == like.body, (r, like)
        assert r.header("content-type") == like.header("content-type"), (r, like)
        assert r.header("x-request-id") and r.header("x-request-id") != like.header(
            "x-request-id"), (r, like)
    return int(age)


def assert_message(r, status, message):
    assert r.status == status, r
    assert r.header("content-type") == "application/json", r
    assert r.json() == {"message": message}, r


def write_json(path, doc):
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
    return str(path)


def sha256_hex(text):
    return hashlib.sha256(text.encode()).hexdigest()


def keys_file(tmp_path):
    return write_json(tmp_path / "api_keys.json", {"keys": [
        {"id": "alice-app", "sha256": sha256_hex(KEY_ALICE)},
        {"id": "bob-app", "sha256": sha256_hex(KEY_BOB)},
    ]})



def new_prefix():
    return f"lgc{uuid.uuid4().hex[:8]}:"


def redis_config(emu, routes, port, prefix, timeout_ms=100, **top):
    return base_config(emu, routes, cache={"store": "redis"},
                       redis={"host": "127.0.0.1", "port": port, "timeout_ms": timeout_ms,
                              "prefix": prefix}, **top)


def raw_redis(srv):
    """A client of srv that returns bytes (entries are binary)."""
    return redis.Redis(host=srv.host, port=srv.port, socket_timeout=5)


def stored(srv, prefix, count=1, old=None, timeout=3.0):
    """Wait until count entries are in Redis under prefix (and, with old =
    {key: value}, until those values changed); return {key: value}. A fill
    is written to Redis as the answer is sent: a request to another instance
    right after the answer may come first."""
    rc = raw_redis(srv)

    def check():
        keys = rc.keys(prefix.encode() + b"c:*")
        if len(keys) < count:
            return None
        values = {k.decode(): rc.get(k) for k in keys}
        if old and any(values.get(k) == v for k, v in old.items()):
            return None
        return values

    try:
        got = poll(check, timeout=timeout, interval=0.02)
        assert got, f"{count} entries not stored under {prefix} within {timeout}s: " \
                    f"{rc.keys(prefix.encode() + b'*')}"
        return got
    finally:
        rc.close()


def second_instance(config, **over):
    """The same config on another port."""
    return dict(config, listen=[{"address": f"127.0.0.1:{free_port()}"}], **over)


def at_once(n, fn):
    """Run fn(i) for i in range(n) at once (threads released together)."""
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait(10)
        return fn(i)

    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


@pytest.fixture(scope="module")
def jwt_keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("cache-jwt")
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="c-1", alg="ES256", use="sig")
    path = write_json(d / "jwks.json", {"keys": [jwk]})
    serial = iter(range(1, 1 << 30))

    def token(sub):
        now = int(time.time())
        return jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now,
                           "exp": now + 600, "jti": f"t{next(serial)}"}, key,
                          algorithm="ES256", headers={"kid": "c-1"})

    return {"jwks": path, "token": token,
            "auth": {"jwt": {"issuer": ISSUER, "audience": [AUDIENCE], "jwks_file": path}}}


def bearer(jwt_keys, sub):
    return {"Authorization": "Bearer " + jwt_keys["token"](sub)}


# --------------------------------------------------------------------------
# Hits, Age, bytes, HEAD
# --------------------------------------------------------------------------

def test_second_get_is_a_hit_with_age_and_identical_bytes(emu, gateways):
    gw = gateways.start(base_config(emu, [cached()]))
    first = req(gw, "/c?xh=probe-value")
    assert_miss(first)
    assert first.header("x-probe") == "probe-value", first
    assert first.json()["method"] == "GET"
    second = req(gw, "/c?xh=probe-value")
    assert assert_hit(second, like=first) == 0
    assert second.header("x-probe") == "probe-value", second
    assert second.header("content-length") == str(len(first.body)), second
    assert calls(emu) == 1
    time.sleep(1.1)
    third = req(gw, "/c?xh=probe-value")
    assert assert_hit(third, like=first) == 1
    assert calls(emu) == 1
    # the access log names the cache result of each request
    assert poll(lambda: len(gw.access_log()) >= 3, timeout=5)
    assert [e["cache"] for e in gw.access_log()[:3]] == ["MISS", "HIT", "HIT"]


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_binary_body_is_replayed_byte_for_byte(emu, gateways, request, store):
    size = 70000
    expected = random.Random(size).randbytes(size)
    assert b"\0" in expected
    routes = [cached("/binary", function="binary", cache={"ttl_s": 60, "key_query": ["size"]})]
    if store == "redis":
        srv = request.getfixturevalue("redis_server")
        prefix = new_prefix()
        config = redis_config(emu, routes, srv.port, prefix)
        a = gateways.start(config)
        b = gateways.start(second_instance(config))
    else:
        a = b = gateways.start(base_config(emu, routes))
    first = req(a, f"/binary?size={size}")
    assert_miss(first)
    if store == "redis":
        stored(srv, prefix)
    assert first.header("content-type") == "application/octet-stream", first
    assert first.body == expected
    second = req(b, f"/binary?size={size}")
    assert_hit(second, like=first)
    assert second.body == expected
    assert calls(emu, "binary") == 1


def test_head_after_get_is_a_hit_without_body(emu, gateways):
    gw = gateways.start(base_config(emu, [cached()]))
    first = req(gw, "/c")
    assert_miss(first)
    head = req(gw, "/c", method="HEAD")
    assert_hit(head)
    assert head.body == b""
    assert head.header("content-type") == "application/json", head
    # then GET again: the entry is still the first one
    again = req(gw, "/c")
    assert_hit(again, like=first)
    assert calls(emu) == 1


def test_head_fills_the_entry_that_get_then_hits(emu, gateways):
    gw = gateways.start(base_config(emu, [cached()]))
    head = req(gw, "/c", method="HEAD")
    assert_miss(head)
    assert head.body == b""
    get = req(gw, "/c")
    assert_hit(get)
    body = get.json()
    assert body["method"] == "GET", body  # a GET route invokes HEAD as GET
    assert int(get.header("content-length")) == len(get.body) > 0, get
    assert calls(emu) == 1


# --------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------

def test_key_query_splits_keys_other_params_and_order_do_not(emu, gateways):
    gw = gateways.start(base_config(emu, [cached(cache={"ttl_s": 60,
                                                        "key_query": ["lang", "page"]})]))
    en = req(gw, "/c?lang=en")
    assert_miss(en)
    fr = req(gw, "/c?lang=fr")
    assert_miss(fr)
    assert n_of(fr) != n_of(en)
    assert_hit(req(gw, "/c?lang=en"), like=en)
    assert_hit(req(gw, "/c?lang=fr"), like=fr)
    # a parameter not named does not split the key
    assert_hit(req(gw, "/c?lang=en&utm_source=mail&xh=1"), like=en)
    assert_hit(req(gw, "/c?utm_source=x&lang=en"), like=en)
    # a second named one does; their order in the URL does not matter
    p2 = req(gw, "/c?lang=en&page=2")
    assert_miss(p2)
    assert_hit(req(gw, "/c?page=2&lang=en"), like=p2)
    assert_hit(req(gw, "/c?page=2&x=y&lang=en"), like=p2)
    # absent, empty and present-with-value are three keys
    none = req(gw, "/c")
    assert_miss(none)
    empty = req(gw, "/c?lang=")
    assert_miss(empty)
    assert_hit(req(gw, "/c?other=1"), like=none)
    assert calls(emu) == 5


def test_key_headers_split_keys_names_case_insensitive(emu, gateways):
    gw = gateways.start(base_config(emu, [cached(cache={"ttl_s": 60,
                                                        "key_headers": ["Accept-Language"]})]))
    en = req(gw, "/c", headers={"accept-language": "en"})
    assert_miss(en)
    assert en.json()["lang"] == "en"
    assert_hit(req(gw, "/c", headers={"ACCEPT-LANGUAGE": "en"}), like=en)
    fr = req(gw, "/c", headers={"Accept-Language": "fr"})
    assert_miss(fr)
    assert fr.json()["lang"] == "fr"
    # a header not named does not split the key
    assert_hit(req(gw, "/c", headers={"accept-language": "en", "x-variant": "b"}), like=en)
    none = req(gw, "/c", headers={"x-variant": "b"})
    assert_miss(none)
    assert_hit(req(gw, "/c"), like=none)
    assert calls(emu) == 3


def test_path_parameters_and_routes_split_keys(emu, gateways):
    routes = [cached("/items/{id}"), cached("/a"), cached("/b")]
    gw = gateways.start(base_config(emu, routes))
    one = req(gw, "/items/1")
    assert_miss(one)
    assert_miss(req(gw, "/items/2"))
    assert_hit(req(gw, "/items/1"), like=one)
    a = req(gw, "/a")
    assert_miss(a)
    assert_miss(req(gw, "/b"))  # same function, another route
    assert_hit(req(gw, "/a"), like=a)
    assert calls(emu) == 4


def test_per_user_separates_api_key_users(emu, gateways, tmp_path):
    routes = [cached(auth="api_key", cache={"ttl_s": 60, "per_user": True})]
    gw = gateways.start(base_config(emu, routes, auth={"api_keys": {"file": keys_file(tmp_path)}}))
    alice = req(gw, "/c", headers={"x-api-key": KEY_ALICE})
    assert_miss(alice)
    assert alice.json()["key_id"] == "alice-app"
    bob = req(gw, "/c", headers={"x-api-key": KEY_BOB})
    assert_miss(bob)
    assert bob.json()["key_id"] == "bob-app"
    r = req(gw, "/c", headers={"x-api-key": KEY_ALICE})
    assert_hit(r, like=alice)
    assert r.json()["key_id"] == "alice-app"
    r = req(gw, "/c", headers={"x-api-key": KEY_BOB})
    assert_hit(r, like=bob)
    assert r.json()["key_id"] == "bob-app"
    assert calls(emu) == 2


def test_without_per_user_an_authenticated_route_shares_entries(emu, gateways, tmp_path):
    routes = [cached(auth="api_key", cache={"ttl_s": 60, "per_user": False})]
    gw = gateways.start(base_config(emu, routes, auth={"api_keys": {"file": keys_file(tmp_path)}}))
    alice = req(gw, "/c", headers={"x-api-key": KEY_ALICE})
    assert_miss(alice)
    bob = req(gw, "/c", headers={"x-api-key": KEY_BOB})
    assert_hit(bob, like=alice)
    assert bob.json()["key_id"] == "alice-app"  # shared on purpose
    assert calls(emu) == 1


def test_per_user_separates_jwt_subjects_not_tokens(emu, gateways, jwt_keys):
    routes = [cached(auth="jwt", cache={"ttl_s": 60, "per_user": True})]
    gw = gateways.start(base_config(emu, routes, auth=jwt_keys["auth"]))
    alice = req(gw, "/c", headers=bearer(jwt_keys, "alice"))
    assert_miss(alice)
    assert alice.json()["sub"] == "alice"
    bob = req(gw, "/c", headers=bearer(jwt_keys, "bob"))
    assert_miss(bob)
    assert bob.json()["sub"] == "bob"
    # another token of the same subject is the same user
    assert_hit(req(gw, "/c", headers=bearer(jwt_keys, "alice")), like=alice)
    assert_hit(req(gw, "/c", headers=bearer(jwt_keys, "bob")), like=bob)
    assert calls(emu) == 2


def test_per_user_without_auth_uses_the_client_address(emu, gateways):
    gw = gateways.start(base_config(emu, [cached(cache={"ttl_s": 60, "per_user": True})]))
    a = req(gw, "/c", source="127.0.0.1")
    assert_miss(a)
    b = req(gw, "/c", source="127.0.0.2")
    assert_miss(b)
    assert_hit(req(gw, "/c", source="127.0.0.1"), like=a)
    assert_hit(req(gw, "/c", source="127.0.0.2"), like=b)
    assert calls(emu) == 2


# --------------------------------------------------------------------------
# What is stored, and for how long
# --------------------------------------------------------------------------

@pytest.mark.parametrize("query,status", [
    ("status=404", 404),
    ("status=500", 500),
    ("status=302", 302),
    ("status=400", 400),
    ("cookie=header", 200),
    ("cookie=cookies", 200),
    ("cookie=multi", 200),
    ("cc=no-store", 200),
    ("cc=private", 200),
    ("cc=no-cache", 200),
    ("cc=max-age%3D0", 200),
    ("cc=public%2C%20max-age%3D0", 200),
    ("cc=max-age%3D60%2C%20private", 200),
    ("cc=s-maxage%3D0%2C%20max-age%3D60", 200),
])
def test_not_stored(emu, gateways, query, status):
    gw = gateways.start(base_config(emu, [cached()]))
    first = req(gw, "/c?" + query)
    assert_miss(first, status)
    second = req(gw, "/c?" + query)
    assert_miss(second, status)
    assert n_of(second) == n_of(first) + 1
    assert calls(emu) == 2


@pytest.mark.parametrize("query,status", [
    ("status=201", 201),
    ("status=203", 203),
    ("cc=public", 200),
    ("cc=max-age%3D600", 200),
    ("cc=public%2C%20max-age%3D30", 200),
])
def test_stored(emu, gateways, query, status):
    gw = gateways.start(base_config(emu, [cached()]))
    first = req(gw, "/c?" + query)
    assert_miss(first, status)
    assert_hit(req(gw, "/c?" + query), like=first, status=status)
    assert calls(emu) == 1


def test_entry_size_limit_is_one_mib(emu, gateways):
    gw = gateways.start(base_config(emu, [cached(cache={"ttl_s": 60, "key_query": ["pad"]})]))
    at = req(gw, f"/c?pad={1024 * 1024}")
    assert_miss(at)
    assert len(at.body) == 1024 * 1024
    assert_hit(req(gw, f"/c?pad={1024 * 1024}"), like=at)
    over = f"/c?pad={1024 * 1024 + 1}"
    first = req(gw, over)
    assert_miss(first)
    assert len(first.body) == 1024 * 1024 + 1
    assert_miss(req(gw, over))
    assert calls(emu) == 3


@pytest.mark.parametrize("cc", ["max-age%3D1", "public%2C%20s-maxage%3D1%2C%20max-age%3D600"])
def test_function_max_age_shorter_than_ttl_expires_sooner(emu, gateways, cc):
    gw = gateways.start(base_config(emu, [cached(cache={"ttl_s": 60})]))
    first = req(gw, "/c?cc=" + cc)
    assert_miss(first)
    assert_hit(req(gw, "/c?cc=" + cc), like=first)
    time.sleep(1.1)
    again = req(gw, "/c?cc=" + cc)
    assert_miss(again)
    assert n_of(again) == n_of(first) + 1
    assert calls(emu) == 2


def test_function_max_age_longer_than_ttl_does_not_extend_it(emu, gateways):
    gw = gateways.start(base_config(emu, [cached(cache={"ttl_s": 1})]))
    first = req(gw, "/c?cc=max-age%3D600")
    assert_miss(first)
    assert_hit(req(gw, "/c?cc=max-age%3D600"), like=first)
    time.sleep(1.1)
    assert_miss(req(gw, "/c?cc=max-age%3D600"))
    assert calls(emu) == 2


def test_ttl_expiry_then_refilled(emu, gateways):
    gw = gateways.start(base_config(emu, [cached(cache={"ttl_s": 1})]))
    first = req(gw, "/c")
    assert_miss(first)
    assert assert_hit(req(gw, "/c"), like=first) == 0
    time.sleep(1.1)
    second = req(gw, "/c")
    assert_miss(second)
    assert n_of(second) == n_of(first) + 1
    assert_hit(req(gw, "/c"), like=second)
    assert calls(emu) == 2


def test_route_without_ttl_uses_cache_ttl_s(emu, gateways):
    gw = gateways.start(base_config(emu, [cached(cache={})], cache={"ttl_s": 1}))
    first = req(gw, "/c")
    assert_miss(first)
    assert_hit(req(gw, "/c"), like=first)
    time.sleep(1.1)
    assert_miss(req(gw, "/c"))
    assert calls(emu) == 2


def test_other_methods_bypass_and_neither_fill_nor_read(emu, gateways):
    gw = gateways.start(base_config(emu, [cached(method="ANY")]))
    for i, method in enumerate(["POST", "POST", "PUT", "DELETE", "PATCH"]):
        r = req(gw, "/c", method=method, body=b"{}" if method != "DELETE" else None)
        assert r.status == 200, r
        assert xc(r) == "BYPASS", r
        assert not r.has("age"), r
        assert r.json()["method"] == method
        assert calls(emu) == i + 1
    get = req(gw, "/c")
    assert_miss(get)  # nothing was stored by the POSTs
    assert_hit(req(gw, "/c"), like=get)
    post = req(gw, "/c", method="POST", body=b"{}")
    assert xc(post) == "BYPASS", post  # and a filled entry is not served to a POST
    assert n_of(post) == n_of(get) + 1
    assert calls(emu) == 7


# --------------------------------------------------------------------------
# Invalidation
# --------------------------------------------------------------------------

def test_invalidation_anyone_refetches_and_replaces(emu, gateways):
    gw = gateways.start(base_config(emu, [cached()], cache={"invalidation": "anyone"}))
    first = req(gw, "/c")
    assert_miss(first)
    refetched = req(gw, "/c", headers={"Cache-Control": "max-age=0"})
    assert_miss(refetched)
    assert n_of(refetched) == n_of(first) + 1
    assert_hit(req(gw, "/c"), like=refetched)  # the entry was replaced
    nocache = req(gw, "/c", headers={"Cache-Control": "no-cache"})
    assert_miss(nocache)
    assert n_of(nocache) == n_of(first) + 2
    assert_hit(req(gw, "/c"), like=nocache)
    # a request max-age other than 0 is no refetch
    assert_hit(req(gw, "/c", headers={"Cache-Control": "max-age=60"}), like=nocache)
    assert calls(emu) == 3


@pytest.mark.parametrize("query", ["cc=no-store", "status=404"])
def test_invalidation_with_an_answer_that_may_not_be_stored_removes_the_entry(emu, gateways,
                                                                             query):
    """A refetch replaces the entry: with an uncacheable answer, by nothing."""
    gw = gateways.start(base_config(emu, [cached()], cache={"invalidation": "anyone"}))
    assert_miss(req(gw, "/c"))
    assert xc(req(gw, "/c")) == "HIT"
    r = req(gw, "/c?" + query, headers={"Cache-Control": "max-age=0"})
    assert xc(r) == "MISS", r
    after = req(gw, "/c")
    assert_miss(after)
    assert calls(emu) == 3


def test_invalidation_never_is_ignored(emu, gateways, tmp_path):
    routes = [cached(), cached("/k", auth="api_key")]
    gw = gateways.start(base_config(emu, routes, cache={"invalidation": "never"},
                                    auth={"api_keys": {"file": keys_file(tmp_path)}}))
    first = req(gw, "/c")
    assert_miss(first)
    for cc in ("max-age=0", "no-cache"):
        assert_hit(req(gw, "/c", headers={"Cache-Control": cc}), like=first)
    # not even for an authenticated caller
    k = req(gw, "/k", headers={"x-api-key": KEY_ALICE})
    assert_miss(k)
    assert_hit(req(gw, "/k", headers={"x-api-key": KEY_ALICE, "Cache-Control": "max-age=0"}),
               like=k)
    assert calls(emu) == 2


def test_invalidation_authenticated_with_and_without_api_key(emu, gateways, tmp_path):
    # "authenticated" is the default
    routes = [cached(), cached("/k", auth="api_key")]
    gw = gateways.start(base_config(emu, routes,
                                    auth={"api_keys": {"file": keys_file(tmp_path)}}))
    # a route without auth: nobody may invalidate
    first = req(gw, "/c")
    assert_miss(first)
    assert_hit(req(gw, "/c", headers={"Cache-Control": "max-age=0"}), like=first)
    assert calls(emu) == 1
    # an api_key route: a caller with a valid key may; without one: 403
    k = req(gw, "/k", headers={"x-api-key": KEY_ALICE})
    assert_miss(k)
    denied = req(gw, "/k", headers={"Cache-Control": "max-age=0"})
    assert_message(denied, 403, "Forbidden")
    assert not denied.has("age"), denied
    assert calls(emu) == 2
    refetched = req(gw, "/k", headers={"x-api-key": KEY_BOB, "Cache-Control": "max-age=0"})
    assert_miss(refetched)
    assert n_of(refetched) == n_of(k) + 1
    # the shared entry (per_user false) was replaced for everyone
    r = req(gw, "/k", headers={"x-api-key": KEY_ALICE})
    assert_hit(r, like=refetched)
    assert r.json()["key_id"] == "bob-app"
    assert calls(emu) == 3


def test_invalidation_authenticated_with_jwt(emu, gateways, jwt_keys):
    gw = gateways.start(base_config(emu, [cached(auth="jwt")], auth=jwt_keys["auth"]))
    first = req(gw, "/c", headers=bearer(jwt_keys, "alice"))
    assert_miss(first)
    refetched = req(gw, "/c", headers=dict(bearer(jwt_keys, "alice"),
                                           **{"Cache-Control": "max-age=0"}))
    assert_miss(refetched)
    assert n_of(refetched) == n_of(first) + 1
    assert_hit(req(gw, "/c", headers=bearer(jwt_keys, "bob")), like=refetched)
    assert calls(emu) == 2


# --------------------------------------------------------------------------
# Coalescing
# --------------------------------------------------------------------------

def test_concurrent_cold_requests_one_invocation_memory(emu, gateways):
    routes = [cached("/slow", function="slow")]
    gw = gateways.start(base_config(emu, routes, workers=2))
    got = at_once(50, lambda i: req(gw, "/slow?ms=300"))
    assert [r.status for r in got] == [200] * 50, got
    results = sorted(xc(r) for r in got)
    assert results == ["HIT"] * 49 + ["MISS"], results
    assert len({r.body for r in got}) == 1, {r.body for r in got}
    assert json.loads(got[0].body) == {"slept_ms": 300}
    assert calls(emu, "slow") == 1


def test_concurrent_cold_requests_two_instances_redis(emu, gateways, redis_server):
    routes = [cached("/slow", function="slow")]
    config = redis_config(emu, routes, redis_server.port, new_prefix())
    a = gateways.start(config)
    b = gateways.start(second_instance(config, workers=2))
    got = at_once(50, lambda i: req((a, b)[i % 2], "/slow?ms=300"))
    assert [r.status for r in got] == [200] * 50, got
    results = [xc(r) for r in got]
    assert set(results) <= {"HIT", "MISS"}, results
    invoked = calls(emu, "slow")
    assert 1 <= invoked <= 2, (invoked, results)
    assert results.count("MISS") == invoked, results
    # afterwards both instances hit the same entry
    ra, rb = req(a, "/slow?ms=300"), req(b, "/slow?ms=300")
    assert_hit(ra)
    assert_hit(rb, like=ra)
    assert calls(emu, "slow") == invoked


@pytest.mark.parametrize("query,status", [("cc=no-store", 200), ("fail=1", 502)])
def test_waiters_are_not_serialized_when_the_fill_stores_nothing(emu, gateways, query, status):
    gw = gateways.start(base_config(emu, [cached(cache={"ttl_s": 60})], workers=2))
    t0 = time.monotonic()
    got = at_once(6, lambda i: (req(gw, "/c?ms=400&" + query), time.monotonic() - t0))
    assert [r.status for r, _ in got] == [status] * 6, got
    assert [xc(r) for r, _ in got] == ["MISS"] * 6, got
    assert calls(emu) == 6
    # one fill, then the five waiters at once: about 0.8 s, not 6 x 0.4 s
    assert max(t for _, t in got) < 1.5, sorted(t for _, t in got)


def test_redis_fill_lock_held_during_the_fill_then_released(emu, gateways, redis_server):
    prefix = new_prefix()
    routes = [cached(cache={"ttl_s": 30})]
    gw = gateways.start(redis_config(emu, routes, redis_server.port, prefix))
    rc = redis_server.client()
    out = []
    t = threading.Thread(target=lambda: out.append(req(gw, "/c?ms=600")))
    t.start()
    try:
        locks = poll(lambda: rc.keys(prefix + "cl:*"), timeout=0.5, interval=0.02)
    finally:
        t.join(10)
    assert locks and len(locks) == 1, locks
    assert re.fullmatch(re.escape(prefix) + "cl:[0-9a-f]{64}", locks[0]), locks
    assert_miss(out[0])
    entries = list(stored(redis_server, prefix))
    assert poll(lambda: rc.keys(prefix + "cl:*") == [], timeout=2, interval=0.02), \
        rc.keys(prefix + "cl:*")
    assert entries == [prefix + "c:" + locks[0][len(prefix) + 3:]], (entries, locks)
    pttl = rc.pttl(entries[0])
    assert 25000 < pttl <= 30000, pttl


# --------------------------------------------------------------------------
# Redis store
# --------------------------------------------------------------------------

def test_two_instances_share_entries_in_redis(emu, gateways, redis_server):
    prefix = new_prefix()
    routes = [cached(cache={"ttl_s": 60, "key_query": ["lang"]})]
    config = redis_config(emu, routes, redis_server.port, prefix)
    a = gateways.start(config)
    b = gateways.start(second_instance(config))
    first = req(a, "/c?lang=en&xh=v")
    assert_miss(first)
    stored(redis_server, prefix)
    hit = req(b, "/c?lang=en&xh=v")
    assert_hit(hit, like=first)
    assert hit.header("x-probe") == "v", hit
    assert_hit(req(a, "/c?lang=en"), like=first)
    fr = req(b, "/c?lang=fr")
    assert_miss(fr)
    stored(redis_server, prefix, count=2)
    assert_hit(req(a, "/c?lang=fr"), like=fr)
    assert calls(emu) == 2
    rc = redis_server.client()
    keys = sorted(rc.keys("*"))
    assert len(keys) == 2, keys
    for k in keys:
        assert re.fullmatch(re.escape(prefix) + "c:[0-9a-f]{64}", k), k
        assert 55000 < rc.pttl(k) <= 60000, (k, rc.pttl(k))


def test_redis_unreachable_bypasses(emu, gateways):
    config = redis_config(emu, [cached()], free_port(), new_prefix())
    gw = gateways.start(config)
    for i in range(3):
        r = req(gw, "/c")
        assert r.status == 200, r
        assert xc(r) == "BYPASS", r
        assert not r.has("age"), r
    assert calls(emu) == 3


def test_redis_killed_bypasses_then_recovers_after_restart(emu, gateways, redis_server):
    prefix = new_prefix()
    config = redis_config(emu, [cached()], redis_server.port, prefix)
    gw = gateways.start(config)
    first = req(gw, "/c")
    assert_miss(first)
    stored(redis_server, prefix)
    assert_hit(req(gw, "/c"), like=first)
    redis_server.kill()
    got = []
    for _ in range(6):
        t0 = time.monotonic()
        got.append(req(gw, "/c"))
        assert time.monotonic() - t0 < 1.0, got[-1]
    assert [r.status for r in got] == [200] * 6, got
    assert [xc(r) for r in got] == ["BYPASS"] * 6, got
    assert not any(r.has("age") for r in got), got
    assert [n_of(r) for r in got] == [n_of(first) + 1 + i for i in range(6)]
    assert calls(emu) == 7

    redis_server.restart()
    seen = []

    def stored_again():
        r = req(gw, "/c")
        assert r.status == 200, r
        seen.append(r)
        return xc(r) == "MISS"

    assert poll(stored_again, timeout=10, interval=0.2), [xc(r) for r in seen]
    assert [xc(r) for r in seen[:-1]] == ["BYPASS"] * (len(seen) - 1), seen
    stored(redis_server, prefix)
    assert_hit(req(gw, "/c"), like=seen[-1])
    assert calls(emu) == 7 + len(seen)


def test_redis_paused_bypasses_within_its_deadline(emu, gateways, redis_server):
    prefix = new_prefix()
    config = redis_config(emu, [cached()], redis_server.port, prefix, timeout_ms=100)
    gw = gateways.start(config)
    first = req(gw, "/c")
    assert_miss(first)
    stored(redis_server, prefix)
    redis_server.pause()
    try:
        took, got = [], []
        for _ in range(4):
            t0 = time.monotonic()
            got.append(req(gw, "/c"))
            took.append(time.monotonic() - t0)
    finally:
        redis_server.resume()
    assert [r.status for r in got] == [200] * 4, got
    assert [xc(r) for r in got] == ["BYPASS"] * 4, got
    assert max(took) < 0.1 + 0.4, took
    # late replies are not taken for later answers: the entry is found again
    assert poll(lambda: xc(req(gw, "/c")) == "HIT", timeout=10, interval=0.2)
    r = req(gw, "/c")
    assert_hit(r, like=first)


def test_redis_garbage_entry_is_a_miss_and_replaced(emu, gateways, redis_server):
    prefix = new_prefix()
    gw = gateways.start(redis_config(emu, [cached()], redis_server.port, prefix))
    first = req(gw, "/c")
    assert_miss(first)
    (key,) = stored(redis_server, prefix)
    rc = raw_redis(redis_server)
    for garbage in (b"\x01garbage", b"", b"\xff" * 100, b"\x01" + b"\xff" * 4 + b"x" * 50):
        rc.set(key, garbage)
        r = req(gw, "/c")
        assert_miss(r)
        assert n_of(r) > n_of(first)
        stored(redis_server, prefix, old={key: garbage})
        assert_hit(req(gw, "/c"), like=r)
    assert calls(emu) == 5


def test_redis_lock_of_a_dead_filler_delays_at_most_the_route_timeout(emu, gateways,
                                                                      redis_server):
    prefix = new_prefix()
    routes = [cached(timeout_ms=800)]
    gw = gateways.start(redis_config(emu, routes, redis_server.port, prefix))
    assert_miss(req(gw, "/c"))
    (key,) = stored(redis_server, prefix)
    rc = redis_server.client()
    rc.delete(key)
    rc.set(prefix + "cl:" + key[len(prefix) + 2:], "1", px=60000)  # a filler that died
    t0 = time.monotonic()
    r = req(gw, "/c")
    took = time.monotonic() - t0
    assert_miss(r)
    assert 0.7 <= took < 2.5, took
    assert calls(emu) == 2


# --------------------------------------------------------------------------
# Memory store bounds
# --------------------------------------------------------------------------

def test_memory_store_stays_under_max_bytes_with_lru(emu, gateways):
    size = 100 * 1024  # two fit in 300000 bytes, three do not
    routes = [cached(cache={"ttl_s": 60, "key_query": ["k"]})]
    gw = gateways.start(base_config(emu, routes, cache={"max_bytes": 300000}, workers=2))

    def get(k, pad=size):
        r = req(gw, f"/c?k={k}&pad={pad}")
        assert r.status == 200 and len(r.body) == pad, r
        return xc(r)

    assert [get(k) for k in range(10)] == ["MISS"] * 10
    assert calls(emu) == 10
    # only the two latest are left
    assert get(9) == "HIT"
    assert get(8) == "HIT"
    # 8 was used last: filling 0 evicts 9, the least recently used
    assert get(0) == "MISS"
    assert get(8) == "HIT"
    assert get(9) == "MISS"
    assert get(5) == "MISS"
    assert calls(emu) == 13
    # an answer larger than the whole store is not stored and evicts nothing
    assert get("big", 400000) == "MISS"
    assert get("big", 400000) == "MISS"
    assert get(9) == "HIT"
    assert get(5) == "HIT"
    assert calls(emu) == 15


# --------------------------------------------------------------------------
# Stale-if-error
# --------------------------------------------------------------------------

FAILURES = {
    "function_error": ("?fail=1", None),
    "malformed": ("?malformed=1", None),
    "timeout": ("?ms=1500", None),
    "lambda_500": ("", {"status": 500}),
    "lambda_throttled": ("", {"throttle": True}),
    "lambda_dropped": ("", {"drop": True}),
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_stale_if_error_serves_the_expired_entry(emu, gateways, failure):
    query, mode = FAILURES[failure]
    routes = [cached(cache={"ttl_s": 1, "stale_if_error_s": 30}, timeout_ms=600)]
    gw = gateways.start(base_config(emu, routes))
    first = req(gw, "/c")
    assert_miss(first)
    time.sleep(1.2)
    if mode:
        emu.set_mode(**mode)
    try:
        stale = req(gw, "/c" + query)
    finally:
        emu.reset()
    assert stale.status == 200, stale
    assert xc(stale) == "STALE", stale
    assert stale.body == first.body
    assert stale.header("content-type") == first.header("content-type"), stale
    age = stale.header("age")
    assert age is not None and age.isdigit() and int(age) >= 1, stale
    # serving stale stored nothing: the next good answer refills
    fresh = req(gw, "/c")
    assert_miss(fresh)
    assert n_of(fresh) > n_of(first)
    assert_hit(req(gw, "/c"), like=fresh)


def test_stale_if_error_in_redis(emu, gateways, redis_server):
    routes = [cached(cache={"ttl_s": 1, "stale_if_error_s": 30})]
    prefix = new_prefix()
    config = redis_config(emu, routes, redis_server.port, prefix)
    a = gateways.start(config)
    b = gateways.start(second_instance(config))
    first = req(a, "/c")
    assert_miss(first)
    stored(redis_server, prefix)
    time.sleep(1.2)
    stale = req(b, "/c?fail=1")
    assert stale.status == 200, stale
    assert xc(stale) == "STALE", stale
    assert stale.body == first.body
    assert int(stale.header("age")) >= 1, stale


def test_without_stale_if_error_a_failure_is_502(emu, gateways):
    gw = gateways.start(base_config(emu, [cached(cache={"ttl_s": 1})]))
    assert_miss(req(gw, "/c"))
    time.sleep(1.2)
    r = req(gw, "/c?fail=1")
    assert_message(r, 502, "Internal server error")
    assert xc(r) == "MISS", r
    assert not r.has("age"), r


def test_stale_window_ends_after_ttl_plus_stale_if_error(emu, gateways):
    gw = gateways.start(base_config(emu, [cached(cache={"ttl_s": 1, "stale_if_error_s": 1})]))
    first = req(gw, "/c")
    assert_miss(first)
    t0 = time.monotonic()
    time.sleep(1.2)
    stale = req(gw, "/c?fail=1")
    assert xc(stale) == "STALE" and stale.body == first.body, stale
    time.sleep(max(0.0, 2.2 - (time.monotonic() - t0)))
    r = req(gw, "/c?fail=1")
    assert_message(r, 502, "Internal server error")
    assert xc(r) == "MISS", r


def test_a_fresh_entry_is_a_hit_even_when_the_function_would_fail(emu, gateways):
    gw = gateways.start(base_config(emu, [cached(cache={"ttl_s": 60, "stale_if_error_s": 30,
                                                        "key_query": ["lang"]})]))
    first = req(gw, "/c")
    assert_miss(first)
    assert_hit(req(gw, "/c?fail=1"), like=first)
    assert calls(emu) == 1
    # and a cold key with a failing function is a plain 502
    cold = req(gw, "/c?lang=x&fail=1")
    assert_message(cold, 502, "Internal server error")
    assert xc(cold) == "MISS", cold


# --------------------------------------------------------------------------
# Throttling and authentication come first
# --------------------------------------------------------------------------

def test_throttled_caller_gets_429_not_a_hit(emu, gateways):
    routes = [cached(throttle={"rate": NO_REFILL, "burst": 1})]
    gw = gateways.start(base_config(emu, routes))
    first = req(gw, "/c", source="127.0.0.2")
    assert_miss(first)
    hit = req(gw, "/c", source="127.0.0.3")  # another identity's bucket
    assert_hit(hit, like=first)
    assert (hit.header("ratelimit-limit"), hit.header("ratelimit-remaining")) == ("1", "0"), hit
    for source in ("127.0.0.2", "127.0.0.3"):
        r = req(gw, "/c", source=source)
        assert_message(r, 429, "Too Many Requests")
        assert r.header("retry-after") == "1000", r
        assert xc(r) not in ("HIT", "STALE"), r
        assert not r.has("age"), r
    assert calls(emu) == 1


def test_unauthenticated_caller_gets_401_not_a_hit(emu, gateways, jwt_keys):
    gw = gateways.start(base_config(emu, [cached(auth="jwt")], auth=jwt_keys["auth"]))
    first = req(gw, "/c", headers=bearer(jwt_keys, "alice"))
    assert_miss(first)
    assert_hit(req(gw, "/c", headers=bearer(jwt_keys, "bob")), like=first)
    for headers in ({}, {"Authorization": "Bearer not.a.token"},
                    {"Authorization": "Bearer " + jwt_keys["token"]("eve")[:-4] + "AAAA"}):
        r = req(gw, "/c", headers=headers)
        assert_message(r, 401, "Unauthorized")
        assert r.header("www-authenticate", "").startswith("Bearer"), r
        assert xc(r) not in ("HIT", "STALE"), r
        assert not r.has("age"), r
    assert calls(emu) == 1


def test_unknown_api_key_gets_403_not_a_hit(emu, gateways, tmp_path):
    gw = gateways.start(base_config(emu, [cached(auth="api_key")],
                                    auth={"api_keys": {"file": keys_file(tmp_path)}}))
    first = req(gw, "/c", headers={"x-api-key": KEY_ALICE})
    assert_miss(first)
    for headers in ({}, {"x-api-key": "lg-cache-nobody"}):
        r = req(gw, "/c", headers=headers)
        assert_message(r, 403, "Forbidden")
        assert xc(r) not in ("HIT", "STALE"), r
        assert not r.has("age"), r
    assert calls(emu) == 1


def test_no_x_cache_on_routes_without_cache(emu, gateways):
    routes = [cached(), {"method": "GET", "path": "/plain", "function": PROBE}]
    gw = gateways.start(base_config(emu, routes))
    for _ in range(2):
        r = req(gw, "/plain")
        assert r.status == 200, r
        assert not r.has("x-cache") and not r.has("age"), r
    r = req(gw, "/nowhere")
    assert_message(r, 404, "Not Found")
    assert not r.has("x-cache"), r
    assert calls(emu) == 2
    assert_miss(req(gw, "/c"))


# --------------------------------------------------------------------------
# Headers of cached answers
# --------------------------------------------------------------------------

def test_function_x_cache_and_age_are_not_replayed_from_the_cache(emu, gateways):
    gw = gateways.start(base_config(emu, [cached()]))
    q = "/c?xcache=Hit%20from%20cloudfront&age=100"
    first = req(gw, q)
    assert first.status == 200, first
    hit = req(gw, q)
    assert hit.header_all("x-cache") == ["HIT"], hit
    assert hit.header_all("age") == ["0"], hit
    assert hit.body == first.body
    assert calls(emu) == 1


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_function_x_cache_does_not_duplicate_ours_on_miss_and_bypass(emu, gateways, method):
    gw = gateways.start(base_config(emu, [cached(method="ANY")]))
    r = req(gw, "/c?xcache=Hit%20from%20cloudfront", method=method)
    assert r.status == 200, r
    assert r.header_all("x-cache") == ["MISS" if method == "GET" else "BYPASS"], r


def test_head_on_an_any_route_does_not_fill_get_with_a_head_answer(emu, gateways):
    gw = gateways.start(base_config(emu, [cached(method="ANY")]))
    head = req(gw, "/c?headempty=1", method="HEAD")
    assert head.status == 200, head
    assert head.body == b""
    get = req(gw, "/c?headempty=1")
    assert get.status == 200, get
    assert xc(get) in ("HIT", "MISS"), get
    assert get.body != b"", get
    assert get.json()["method"] == "GET", get


def test_head_hit_has_the_content_length_of_the_get(emu, gateways):
    gw = gateways.start(base_config(emu, [cached()]))
    first = req(gw, "/c")
    assert_miss(first)
    head = req(gw, "/c", method="HEAD")
    assert_hit(head)
    assert head.body == b""
    assert head.header("content-length") == str(len(first.body)), (first, head)


def test_cors_headers_follow_the_request_not_the_entry(emu, gateways):
    cors = {"allow_origins": ["https://a.example", "https://b.example"]}
    gw = gateways.start(base_config(emu, [cached(cors=cors)]))
    a = req(gw, "/c", headers={"Origin": "https://a.example"})
    assert_miss(a)
    assert a.header("access-control-allow-origin") == "https://a.example", a
    b = req(gw, "/c", headers={"Origin": "https://b.example"})
    assert_hit(b, like=a)
    assert b.header_all("access-control-allow-origin") == ["https://b.example"], b
    assert b.header_all("vary") == ["Origin"], b
    evil = req(gw, "/c", headers={"Origin": "https://evil.example"})
    assert_hit(evil, like=a)
    assert not evil.has("access-control-allow-origin"), evil
    assert calls(emu) == 1


def test_invalidation_in_redis_replaces_the_shared_entry(emu, gateways, redis_server):
    prefix = new_prefix()
    config = redis_config(emu, [cached()], redis_server.port, prefix)
    config["cache"]["invalidation"] = "anyone"
    a = gateways.start(config)
    b = gateways.start(second_instance(config))
    first = req(a, "/c")
    assert_miss(first)
    old = stored(redis_server, prefix)
    refetched = req(b, "/c", headers={"Cache-Control": "max-age=0"})
    assert_miss(refetched)
    stored(redis_server, prefix, old=old)
    assert n_of(refetched) == n_of(first) + 1
    assert_hit(req(a, "/c"), like=refetched)
    assert calls(emu) == 2
