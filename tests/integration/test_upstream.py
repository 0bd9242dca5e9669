"""lambdagate's Invoke client against the emulator (CONTRACT sections 4, 5, 8).

Keep-alive reuse, async invocations, Lambda's payload limits, Lambda's
throttling, timeouts and failures, SigV4 for ARNs and qualifiers, and HTTPS
to the endpoint with chain and host name verification.
Run: /usr/bin/python3 -m pytest -q tests/integration/test_upstream.py
"""

import json
import os
import socket
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from emulator import start_emulator  # noqa: E402
from gateway import base_config  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FUNCTION_DIRS = [os.path.join(REPO, "examples", "functions"),
                 os.path.join(REPO, "tests", "integration", "functions")]

INTERNAL_ERROR = b'{"message":"Internal server error"}'
TOO_MANY = b'{"message":"Too Many Requests"}'
TIMED_OUT = b'{"message":"Endpoint request timed out"}'
SYNC_LIMIT = 6291456
ASYNC_LIMIT = 1048576

ROUTES = [
    {"method": "GET", "path": "/hello", "function": "hello"},
    {"method": "ANY", "path": "/echo", "function": "echo"},
    {"method": "POST", "path": "/binary", "function": "binary"},
    {"method": "POST", "path": "/events", "function": "async_sink", "invocation": "async"},
    {"method": "POST", "path": "/v1/events", "function": "async_sink", "invocation": "async",
     "payload_format": "1.0"},
    {"method": "GET", "path": "/slow", "function": "slow", "timeout_ms": 1000},
    {"method": "GET", "path": "/arn",
     "function": "arn:aws:lambda:us-west-2:123456789012:function:echo:prod"},
    {"method": "GET", "path": "/latest", "function": "echo", "qualifier": "$LATEST"},
    {"method": "GET", "path": "/alias", "function": "echo:live"},
    {"method": "GET", "path": "/partial", "function": "123456789012:function:echo"},
]


def config_for(emu, routes=ROUTES, **top):
    """base_config without gateway-side throttling, so that only Lambda's
    behaviour is seen however many requests a test sends."""
    top.setdefault("throttle", {"default": None})
    limits = {"per_ip": None}
    limits.update(top.pop("limits", {}))
    return base_config(emu, routes, limits=limits, **top)


def assert_message(r, status, body):
    assert r.status == status, r
    assert r.body == body
    assert r.header("content-type") == "application/json"
    assert r.has("x-request-id")


# --------------------------------------------------------------------------
# Keep-alive
# --------------------------------------------------------------------------

def test_keepalive_sequential(emu, gateways):
    gw = gateways.start(config_for(emu))
    assert gw.request("GET", "/hello").status == 200  # warm the pool
    before = emu.stats()["connections"]
    conn = gw.connection()
    try:
        for i in range(500):
            r = gw.request("GET", f"/hello?i={i}", conn=conn)
            assert r.status == 200, r
    finally:
        conn.close()
    grown = emu.stats()["connections"] - before
    assert grown <= 2, f"{grown} new upstream connections for 500 sequential requests"
    assert emu.stats()["requests"] >= 501


def test_keepalive_new_client_connections(emu, gateways):
    """Client connections come and go; upstream ones stay."""
    gw = gateways.start(config_for(emu))
    before = emu.stats()["connections"]
    for _ in range(50):
        assert gw.request("GET", "/hello").status == 200
    grown = emu.stats()["connections"] - before
    assert grown <= 2, grown


def test_keepalive_concurrent(emu, gateways):
    gw = gateways.start(config_for(emu))
    before = emu.stats()["connections"]
    errors = []
    statuses = []

    def client(k):
        conn = gw.connection()
        try:
            for i in range(50):
                r = gw.request("GET", f"/hello?c={k}&i={i}", conn=conn)
                statuses.append(r.status)
        except Exception as exc:  # reported below
            errors.append(repr(exc))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(statuses) == 500 and set(statuses) == {200}, set(statuses)
    grown = emu.stats()["connections"] - before
    assert grown <= 10, f"{grown} new upstream connections for 500 requests from 10 clients"


def test_keepalive_survives_upstream_closing_idle_connection(emu, gateways):
    """An idle pooled connection the upstream closed is not an error."""
    lonely = start_emulator(functions=FUNCTION_DIRS, extra_args=["--idle-timeout", "0.3"])
    try:
        gw = gateways.start(config_for(lonely))
        assert gw.request("GET", "/hello").status == 200
        time.sleep(0.8)  # the emulator closes the idle connection
        for _ in range(3):
            r = gw.request("GET", "/hello")
            assert r.status == 200, r
            time.sleep(0.4)
        assert lonely.stats()["invocations"] == 4
    finally:
        lonely.stop()


# --------------------------------------------------------------------------
# Async
# --------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/events", "/v1/events"])
def test_async_route(emu, gateways, path):
    gw = gateways.start(config_for(emu))
    r = gw.request("POST", path, body=b'{"order": 17}',
                   headers={"Content-Type": "application/json"})
    assert r.status == 202, r
    assert r.body == b""
    assert r.header("content-length") in ("0", None)
    assert r.has("x-request-id")
    record = emu.wait_for_record(lambda rec: rec["function"] == "async_sink" and rec["done"])
    assert record["invocation_type"] == "Event"
    assert record["headers"]["x-amz-invocation-type"] == "Event"
    assert record["signature_ok"] is True
    assert record["status"] == 202
    assert record["event"]["body"] == '{"order": 17}'
    rid = record["event"]["requestContext"]["requestId"]
    assert rid == r.header("x-request-id")


def test_sync_invocation_type_header(emu, gateways):
    gw = gateways.start(config_for(emu))
    assert gw.request("GET", "/hello").status == 200
    (record,) = emu.invocations()
    assert record["invocation_type"] == "RequestResponse"
    assert record["headers"].get("x-amz-invocation-type", "RequestResponse") == "RequestResponse"
    assert record["method"] == "POST"
    assert record["path"] == "/2015-03-31/functions/hello/invocations"
    assert record["query"] == ""


# --------------------------------------------------------------------------
# Lambda's payload limits (checked before invoking)
# --------------------------------------------------------------------------

def test_sync_payload_over_6mb_is_413(emu, gateways):
    gw = gateways.start(config_for(emu, limits={"max_body_bytes": SYNC_LIMIT}))
    # Binary bodies go base64: 4.8 MB of body is a 6.4 MB event.
    body = os.urandom(4_800_000)
    r = gw.request("POST", "/binary", body=body,
                   headers={"Content-Type": "application/octet-stream"})
    assert r.status == 413, r
    assert r.header("content-type") == "application/json"
    assert set(r.json()) == {"message"}
    assert r.has("x-request-id")
    assert emu.invocations() == []


@pytest.mark.parametrize("body, ctype", [
    (b"t" * (SYNC_LIMIT - 200), "text/plain"),        # the body fits, the event does not
    (b'"' * 3_500_000, "application/json"),            # JSON escaping doubles it
], ids=["text-near-limit", "escaped-quotes"])
def test_sync_event_over_6mb_from_text_body_is_413(emu, gateways, body, ctype):
    gw = gateways.start(config_for(emu, limits={"max_body_bytes": SYNC_LIMIT}))
    r = gw.request("POST", "/echo", body=body, headers={"Content-Type": ctype})
    assert r.status == 413, r
    assert set(r.json()) == {"message"}
    assert emu.invocations() == []


def test_sync_payload_just_under_6mb_passes(emu, gateways):
    gw = gateways.start(config_for(emu, limits={"max_body_bytes": SYNC_LIMIT}))
    # 4.6 MB of body: the event is about 6.13 MB, under 6291456 bytes.
    body = os.urandom(4_600_000)
    r = gw.request("POST", "/binary", body=body,
                   headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200, r
    assert r.body == body
    (record,) = emu.invocations()
    assert SYNC_LIMIT - 300_000 < record["body_bytes"] <= SYNC_LIMIT


def test_async_payload_over_1mb_is_413(emu, gateways):
    gw = gateways.start(config_for(emu))
    body = b"x" * (ASYNC_LIMIT + 10)
    r = gw.request("POST", "/events", body=body, headers={"Content-Type": "text/plain"})
    assert r.status == 413, r
    assert set(r.json()) == {"message"}
    assert emu.invocations() == []
    # A body whose event is just over the limit (the body alone is not).
    body = b"y" * (ASYNC_LIMIT - 500)
    r = gw.request("POST", "/events", body=body, headers={"Content-Type": "text/plain"})
    assert r.status == 413, r
    assert emu.invocations() == []
    # And one that fits.
    body = b"z" * (ASYNC_LIMIT - 4096)
    r = gw.request("POST", "/events", body=body, headers={"Content-Type": "text/plain"})
    assert r.status == 202, r
    record = emu.wait_for_record(lambda rec: rec["function"] == "async_sink")
    assert record["invocation_type"] == "Event"
    assert record["body_bytes"] <= ASYNC_LIMIT
    assert record["event"]["body"] == body.decode()


# --------------------------------------------------------------------------
# Lambda's failures
# --------------------------------------------------------------------------

def test_lambda_throttled_retry_after(emu, gateways):
    gw = gateways.start(config_for(emu))
    emu.set_mode(throttle=True, retry_after=3)
    r = gw.request("GET", "/hello")
    assert_message(r, 429, TOO_MANY)
    assert r.header("retry-after") == "3"
    emu.set_mode(retry_after=None)
    r = gw.request("GET", "/hello")
    assert_message(r, 429, TOO_MANY)
    assert r.header("retry-after") == "1"
    emu.set_mode(retry_after=0)
    r = gw.request("GET", "/hello")
    assert_message(r, 429, TOO_MANY)
    assert r.header("retry-after") == "1"  # at least 1
    emu.set_mode(throttle=False)
    assert gw.request("GET", "/hello").status == 200


def test_route_timeout_504(emu, gateways):
    gw = gateways.start(config_for(emu))
    started = time.monotonic()
    r = gw.request("GET", "/slow?ms=4000")
    elapsed = time.monotonic() - started
    assert_message(r, 504, TIMED_OUT)
    assert 0.9 <= elapsed <= 1.5, elapsed
    # The same connection pool serves the next request.
    r = gw.request("GET", "/slow?ms=10")
    assert r.status == 200, r
    assert r.json() == {"slept_ms": 10}


def test_lambda_timeout_ms_default_applies(emu, gateways):
    """A route without timeout_ms uses lambda.timeout_ms."""
    routes = [{"method": "GET", "path": "/slow2", "function": "slow"}]
    gw = gateways.start(config_for(emu, routes, **{"lambda": {"timeout_ms": 700}}))
    started = time.monotonic()
    r = gw.request("GET", "/slow2?ms=3000")
    elapsed = time.monotonic() - started
    assert_message(r, 504, TIMED_OUT)
    assert 0.6 <= elapsed <= 1.2, elapsed


@pytest.mark.parametrize("status", [500, 502, 503, 400, 404])
def test_lambda_error_status_is_502(emu, gateways, status):
    gw = gateways.start(config_for(emu))
    emu.set_mode(status=status)
    r = gw.request("GET", "/hello")
    assert_message(r, 502, INTERNAL_ERROR)
    assert b"Forced failure" not in r.body


def test_lambda_413_is_413(emu, gateways):
    """Lambda's own 413 (after our check let it through) stays a 413."""
    gw = gateways.start(config_for(emu))
    emu.set_mode(status=413)
    r = gw.request("GET", "/hello")
    assert r.status == 413, r
    assert set(r.json()) == {"message"}


def test_wrong_secret_is_502_and_signature_mismatch(emu, gateways):
    config = config_for(emu)
    config["lambda"]["credentials"] = {"access_key_id": emu.credentials[0][0],
                                       "secret_access_key": "wrong/secret+key=000000000000000"}
    gw = gateways.start(config)
    mismatch = "signature rejected InvalidSignatureException fn=hello"
    logged_before = emu.log_text().count(mismatch)
    r = gw.request("GET", "/hello")
    assert_message(r, 502, INTERNAL_ERROR)
    (record,) = emu.invocations()
    assert record["status"] == 403
    assert record["signature_ok"] is False
    assert record["signature_error"]
    assert "InvalidSignatureException" in record["error"]
    assert emu.log_text().count(mismatch) == logged_before + 1
    assert "Lambda answered 403" in gw.log_text()
    log = gw.log_text()
    assert "status=403" in log
    assert "wrong/secret" not in log


def test_unknown_access_key_is_502(emu, gateways):
    config = config_for(emu)
    config["lambda"]["credentials"] = {"access_key_id": "AKIDUNKNOWN000000000",
                                       "secret_access_key": "whatever"}
    gw = gateways.start(config)
    r = gw.request("GET", "/hello")
    assert_message(r, 502, INTERNAL_ERROR)
    (record,) = emu.invocations()
    assert record["status"] == 403
    assert record["access_key"] == "AKIDUNKNOWN000000000"


def test_lambda_unreachable_is_502_promptly(emu, gateways):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    # Nothing listens on closed_port now (the socket never listened).
    config = config_for(emu, **{"lambda": {"endpoint": f"http://127.0.0.1:{closed_port}"}})
    gw = gateways.start(config)
    started = time.monotonic()
    r = gw.request("GET", "/hello")
    elapsed = time.monotonic() - started
    assert_message(r, 502, INTERNAL_ERROR)
    assert elapsed < 2.0, elapsed
    assert "lambda invocation failed" in gw.log_text()


def test_lambda_drops_connection_is_502(emu, gateways):
    gw = gateways.start(config_for(emu))
    emu.set_mode(drop=True)
    started = time.monotonic()
    r = gw.request("GET", "/hello")
    elapsed = time.monotonic() - started
    assert_message(r, 502, INTERNAL_ERROR)
    assert elapsed < 5, elapsed
    emu.set_mode(drop=False)
    r = gw.request("GET", "/hello")
    assert r.status == 200, r


def test_function_not_found_is_502(emu, gateways):
    routes = [{"method": "GET", "path": "/ghost", "function": "no_such_function"}]
    gw = gateways.start(config_for(emu, routes))
    r = gw.request("GET", "/ghost")
    assert_message(r, 502, INTERNAL_ERROR)
    (record,) = emu.invocations()
    assert record["status"] == 404
    assert record["signature_ok"] is True


# --------------------------------------------------------------------------
# Function names, qualifiers, signing
# --------------------------------------------------------------------------

def test_full_arn_with_alias_signature(emu, gateways):
    gw = gateways.start(config_for(emu))
    r = gw.request("GET", "/arn")
    assert r.status == 200, r
    (record,) = emu.invocations()
    assert record["signature_ok"] is True, record
    assert record["region"] == "us-west-2"
    assert record["qualifier"] == "prod"
    assert record["function"] == "echo"
    assert record["function_arg"] == "arn:aws:lambda:us-west-2:123456789012:function:echo:prod"
    assert record["invoked_function_arn"] == \
        "arn:aws:lambda:us-west-2:123456789012:function:echo:prod"
    # The name is percent-encoded once on the wire (":" as %3A).
    assert record["path"] == ("/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-west-2%3A"
                              "123456789012%3Afunction%3Aecho%3Aprod/invocations")
    assert record["headers"]["authorization"].split("Credential=")[1].split("/")[2] == \
        "us-west-2"
    assert r.json()["requestContext"]["accountId"] == "123456789012"


def test_qualifier_latest_signature(emu, gateways):
    gw = gateways.start(config_for(emu))
    r = gw.request("GET", "/latest")
    assert r.status == 200, r
    (record,) = emu.invocations()
    assert record["signature_ok"] is True, record
    assert record["qualifier"] == "$LATEST"
    assert record["query"] == "Qualifier=%24LATEST"
    assert record["region"] == "us-east-1"
    assert record["function"] == "echo"


@pytest.mark.parametrize("path, qualifier, arg", [
    ("/alias", "live", "echo:live"),
    ("/partial", None, "123456789012:function:echo"),
])
def test_other_function_forms_signature(emu, gateways, path, qualifier, arg):
    gw = gateways.start(config_for(emu))
    r = gw.request("GET", path)
    assert r.status == 200, r
    (record,) = emu.invocations()
    assert record["signature_ok"] is True, record
    assert record["qualifier"] == qualifier
    assert record["function_arg"] == arg


def test_signed_headers_and_session_token(emu, gateways):
    token = "FwoGZXIvYXdzEXAMPLE//token+with/slashes=="
    other = start_emulator(functions=FUNCTION_DIRS,
                           credentials=[("ASIAITESTLAMBDA00001", "tok/secret+key=1", token)])
    try:
        gw = gateways.start(config_for(other))
        r = gw.request("GET", "/echo?a=b%20c&a=1", body=None)
        assert r.status == 200, r
        (record,) = other.invocations()
        assert record["signature_ok"] is True, record
        assert record["access_key"] == "ASIAITESTLAMBDA00001"
        assert record["headers"]["x-amz-security-token"] == token
        signed = record["headers"]["authorization"].split("SignedHeaders=")[1].split(",")[0]
        assert "x-amz-security-token" in signed.split(";")
        assert "host" in signed.split(";") and "x-amz-date" in signed.split(";")
        assert token not in gw.log_text()
        assert "tok/secret" not in gw.log_text()
    finally:
        other.stop()


# --------------------------------------------------------------------------
# HTTPS to the endpoint
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_emulator(certs):
    e = start_emulator(functions=FUNCTION_DIRS, tls=(certs["cert"], certs["key"]))
    yield e
    e.stop()


def tls_config(emu, endpoint, ca_file):
    lam = {"endpoint": endpoint}
    if ca_file is not None:
        lam["ca_file"] = ca_file
    return config_for(emu, **{"lambda": lam})


def test_https_endpoint_verified(tls_emulator, certs, gateways):
    gw = gateways.start(tls_config(tls_emulator, tls_emulator.endpoint, certs["ca"]))
    for _ in range(3):
        r = gw.request("GET", "/hello")
        assert r.status == 200, r
    assert r.json()["message"] == "hello"
    records = tls_emulator.invocations(function="hello")
    assert records and all(rec["signature_ok"] for rec in records[-3:])


def test_https_localhost_name_verified(tls_emulator, certs, gateways):
    endpoint = f"https://localhost:{tls_emulator.port}"
    gw = gateways.start(tls_config(tls_emulator, endpoint, certs["ca"]))
    r = gw.request("GET", "/hello")
    assert r.status == 200, r


@pytest.mark.parametrize("ca", ["other_ca", None])
def test_https_untrusted_chain_is_502(tls_emulator, certs, gateways, ca):
    before = len(tls_emulator.invocations())
    gw = gateways.start(tls_config(tls_emulator, tls_emulator.endpoint,
                                   certs[ca] if ca else None))
    r = gw.request("GET", "/hello")
    assert_message(r, 502, INTERNAL_ERROR)
    assert "TLS verification of 127.0.0.1 failed: unable to get local issuer certificate" \
        in gw.log_text(), gw.log_text()
    assert len(tls_emulator.invocations()) == before  # nothing reached Lambda


def test_https_host_name_mismatch_is_502(certs, gateways):
    """The certificate names localhost, 127.0.0.1 and ::1, not 127.0.0.2."""
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.2", 0))
    except OSError:
        pytest.skip("127.0.0.2 is not usable here")
    other = start_emulator(functions=FUNCTION_DIRS, tls=(certs["cert"], certs["key"]),
                           host="127.0.0.2")
    try:
        gw = gateways.start(tls_config(other, other.endpoint, certs["ca"]))
        r = gw.request("GET", "/hello")
        assert_message(r, 502, INTERNAL_ERROR)
        assert other.invocations() == []
        assert "TLS verification of 127.0.0.2 failed: IP address mismatch" in gw.log_text(), \
            gw.log_text()
    finally:
        other.stop()


def test_https_dns_name_mismatch_is_502(tls_emulator, certs, gateways):
    """A host name that resolves to the emulator but is not in its
    certificate (the machine's own name, when it maps to 127.0.0.1)."""
    name = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, None, socket.AF_INET)}
    except OSError:
        addresses = set()
    if name.lower() in ("localhost", "") or addresses != {"127.0.0.1"}:
        pytest.skip(f"host name {name!r} does not resolve to 127.0.0.1 only")
    before = len(tls_emulator.invocations())
    gw = gateways.start(tls_config(tls_emulator, f"https://{name}:{tls_emulator.port}",
                                   certs["ca"]))
    r = gw.request("GET", "/hello")
    assert_message(r, 502, INTERNAL_ERROR)
    assert len(tls_emulator.invocations()) == before
    assert f"TLS verification of {name} failed" in gw.log_text(), gw.log_text()


def test_https_to_plain_http_endpoint_is_502(emu, certs, gateways):
    endpoint = f"https://127.0.0.1:{emu.port}"
    gw = gateways.start(tls_config(emu, endpoint, certs["ca"]))
    started = time.monotonic()
    r = gw.request("GET", "/hello")
    assert_message(r, 502, INTERNAL_ERROR)
    assert time.monotonic() - started < 5


def test_request_id_in_invoke_and_event(emu, gateways):
    gw = gateways.start(config_for(emu))
    r = gw.request("GET", "/echo")
    assert r.status == 200
    rid = r.header("x-request-id")
    (record,) = emu.invocations()
    assert record["event"]["requestContext"]["requestId"] == rid
    assert json.loads(r.body)["requestContext"]["requestId"] == rid

