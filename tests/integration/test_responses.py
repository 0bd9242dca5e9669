"""How lambdagate maps a function's answer to the client (CONTRACT sections 4, 5, 8).

Proxy responses in both payload formats, cookies, non-string header values,
base64 and binary bodies, large bodies, malformed answers and function errors
(502 without leaking), hop-by-hop and invalid response headers, and CORS.
The test-only function tests/integration/functions/headers.py answers with
whatever proxy response the test POSTs to it.
Run: /usr/bin/python3 -m pytest -q tests/integration/test_responses.py
"""

import base64
import hashlib
import importlib.util
import json
import os
import random
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gateway import base_config, start_gateway  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_function(name):
    """An example function's module, for its constants (not on sys.path)."""
    path = os.path.join(REPO, "examples", "functions", name + ".py")
    spec = importlib.util.spec_from_file_location(f"lam_example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


big_fn = load_function("big")
binary_fn = load_function("binary")
cookies_fn = load_function("cookies")
fail_fn = load_function("fail")
malformed_fn = load_function("malformed")

INTERNAL_ERROR = b'{"message":"Internal server error"}'
APP_ORIGIN = "https://app.example.com"

CORS_FULL = {"allow_origins": [APP_ORIGIN, "https://Other.Example.com"],
             "allow_methods": ["GET", "POST"],
             "allow_headers": ["Authorization", "content-type"],
             "expose_headers": ["x-trace", "x-count"],
             "max_age_s": 600, "allow_credentials": True}
CORS_PLAIN = {"allow_origins": [APP_ORIGIN], "allow_methods": ["GET"]}
CORS_STAR = {"allow_origins": ["*"], "allow_methods": ["GET", "PUT"],
             "allow_headers": ["x-a"], "max_age_s": 60}

ROUTES = [
    {"method": "ANY", "path": "/headers", "function": "headers"},
    {"method": "ANY", "path": "/v1/headers", "function": "headers", "payload_format": "1.0"},
    {"method": "GET", "path": "/cookies", "function": "cookies"},
    {"method": "GET", "path": "/v1/cookies", "function": "cookies", "payload_format": "1.0"},
    {"method": "POST", "path": "/binary", "function": "binary"},
    {"method": "GET", "path": "/binary", "function": "binary"},
    {"method": "POST", "path": "/v1/binary", "function": "binary", "payload_format": "1.0"},
    {"method": "GET", "path": "/big", "function": "big"},
    {"method": "GET", "path": "/fail", "function": "fail"},
    {"method": "GET", "path": "/v1/fail", "function": "fail", "payload_format": "1.0"},
    {"method": "GET", "path": "/malformed", "function": "malformed"},
    {"method": "GET", "path": "/v1/malformed", "function": "malformed", "payload_format": "1.0"},
    {"method": "ANY", "path": "/cors/headers", "function": "headers", "cors": CORS_FULL},
    {"method": "GET", "path": "/cors/plain/{id}", "function": "hello", "cors": CORS_PLAIN},
    {"method": "GET", "path": "/cors/star", "function": "hello", "cors": CORS_STAR},
    {"method": "POST", "path": "/cors/events", "function": "async_sink", "invocation": "async",
     "cors": CORS_PLAIN},
]


@pytest.fixture(scope="module")
def gw(emulator):
    config = base_config(emulator, ROUTES, throttle={"default": None},
                         limits={"per_ip": None})
    g = start_gateway(config)
    yield g
    g.stop()


def answer(gw, response, path="/headers", headers=None):
    """POST a proxy response for the headers function to return."""
    body = json.dumps(response).encode()
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    return gw.request("POST", path, body=body, headers=h)


def raw_answer(gw, response, path="/headers"):
    """Like answer() but on a raw socket: (status line, [(name, value)], body)."""
    body = json.dumps(response).encode()
    data = gw.raw(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    return split_raw(data)


def split_raw(data):
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, data[:300]
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        assert colon and name == name.strip(), f"bad header line {line!r}"
        headers.append((name, value.strip()))
    return lines[0], headers, body


def names(headers):
    return [k.lower() for k, _ in headers]


def values(headers, name):
    return [v for k, v in headers if k.lower() == name.lower()]


def assert_internal_error(r):
    assert r.status == 502, r
    assert r.body == INTERNAL_ERROR
    assert r.header("content-type") == "application/json"
    assert r.has("x-request-id")


# --------------------------------------------------------------------------
# Proxy responses
# --------------------------------------------------------------------------

def test_v2_proxy_response_status_headers_cookies_body(gw, emu):
    r = answer(gw, {
        "statusCode": 201,
        "headers": {"content-type": "text/plain; charset=utf-8", "x-custom": "value 1",
                    "Location": "/things/9"},
        "cookies": ["a=1; Path=/; HttpOnly", "b=2; Max-Age=60", "c=3"],
        "body": "created \u00e9",
    })
    assert r.status == 201, r
    assert r.header("content-type") == "text/plain; charset=utf-8"
    assert r.header("x-custom") == "value 1"
    assert r.header("location") == "/things/9"
    assert r.header_all("set-cookie") == ["a=1; Path=/; HttpOnly", "b=2; Max-Age=60", "c=3"]
    assert r.body == "created \u00e9".encode()
    assert r.header("content-length") == str(len(r.body))
    assert r.has("x-request-id")


def test_v2_cookies_function(gw, emu):
    r = gw.request("GET", "/cookies")
    assert r.status == 200, r
    assert r.header_all("set-cookie") == cookies_fn.COOKIES
    assert r.header("x-count") == "3"
    assert r.header("x-flag") == "true"
    assert r.json() == {"cookies": 2}


def test_v1_multi_value_headers_two_set_cookies(gw, emu):
    r = gw.request("GET", "/v1/cookies")
    assert r.status == 200, r
    assert r.header_all("set-cookie") == cookies_fn.COOKIES
    assert r.header("x-count") == "3"
    assert r.header("x-flag") == "true"
    assert r.header("content-type") == "application/json"
    assert r.json() == {"cookies": 2}


def test_v1_multi_value_headers_replace_single_value(gw, emu):
    r = answer(gw, {"statusCode": 200,
                    "headers": {"x-a": "single", "x-b": "only-single"},
                    "multiValueHeaders": {"X-A": ["m1", "m2"], "x-c": ["c1"]},
                    "body": "x"}, path="/v1/headers")
    assert r.status == 200, r
    assert r.header_all("x-a") == ["m1", "m2"]
    assert r.header_all("x-b") == ["only-single"]
    assert r.header_all("x-c") == ["c1"]


def test_numeric_and_boolean_header_values_sent_as_text(gw, emu):
    r = answer(gw, {"statusCode": 200,
                    "headers": {"x-int": 3, "x-neg": -12, "x-float": 1.5, "x-true": True,
                                "x-false": False, "content-type": "text/plain"},
                    "body": "n"})
    assert r.status == 200, r
    assert r.header("x-int") == "3"
    assert r.header("x-neg") == "-12"
    assert r.header("x-float") == "1.5"
    assert r.header("x-true") == "true"
    assert r.header("x-false") == "false"
    r = answer(gw, {"statusCode": 200, "multiValueHeaders": {"x-n": [1, 2], "x-b": [True]},
                    "body": "n"}, path="/v1/headers")
    assert r.status == 200, r
    assert r.header_all("x-n") == ["1", "2"]
    assert r.header_all("x-b") == ["true"]


def test_status_code_as_string_and_missing_body(gw, emu):
    r = answer(gw, {"statusCode": "404", "headers": {"content-type": "text/plain"}})
    assert r.status == 404, r
    assert r.body == b""
    r = answer(gw, {"statusCode": 204})
    assert r.status == 204, r
    assert r.body == b""


@pytest.mark.parametrize("status", [100, 101, 103, 99, 600])
def test_informational_or_out_of_range_status_is_502(gw, emu, status):
    r = answer(gw, {"statusCode": status, "body": "x"})
    assert_internal_error(r)


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses_keep_framing(gw, emu, status):
    """A body the function gives a 204/304 is not sent, and the next
    pipelined request on the connection is answered correctly."""
    first = json.dumps({"statusCode": status, "headers": {"etag": "\"v1\""},
                        "body": "must not be sent"}).encode()
    second = json.dumps({"statusCode": 200, "body": "second"}).encode()
    data = gw.raw(
        b"POST /headers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(first)}\r\n\r\n".encode() + first
        + b"POST /headers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(second)}\r\nConnection: close\r\n\r\n".encode() + second)
    assert b"must not be sent" not in data
    head1, _, rest = data.partition(b"\r\n\r\n")
    assert head1.startswith(f"HTTP/1.1 {status} ".encode()), data[:300]
    assert b"etag: \"v1\"" in head1.lower()
    status2, headers2, body2 = split_raw(rest)
    assert status2 == "HTTP/1.1 200 OK"
    assert body2 == b"second"


@pytest.mark.parametrize("status", [299, 418, 599])
def test_unusual_status_codes_pass(gw, emu, status):
    r = answer(gw, {"statusCode": status, "body": "odd"})
    assert r.status == status, r
    assert r.body == b"odd"


def test_default_content_type_is_json(gw, emu):
    r = answer(gw, {"statusCode": 200, "body": '{"ok": true}'})
    assert r.status == 200
    assert r.header("content-type") == "application/json"
    assert r.body == b'{"ok": true}'


@pytest.mark.parametrize("path", ["/headers", "/v1/headers"])
def test_base64_body_decoded_byte_exact(gw, emu, path):
    data = bytes(range(256)) * 4 + b"\x00" * 17 + random.Random(7).randbytes(3000)
    r = answer(gw, {"statusCode": 200, "headers": {"content-type": "image/png"},
                    "isBase64Encoded": True, "body": base64.b64encode(data).decode()},
               path=path)
    assert r.status == 200, r
    assert r.header("content-type") == "image/png"
    assert r.body == data
    assert r.header("content-length") == str(len(data))


def test_v2_bare_json_object(gw, emu):
    value = {"a": [1, 2], "b": "x\u00e9", "c": None}
    r = answer(gw, value)
    assert r.status == 200, r
    assert r.header("content-type") == "application/json"
    # The body is the function's JSON as Lambda returned it.
    assert r.body == json.dumps(value).encode()
    assert r.json() == value


def test_v2_bare_json_string_is_its_contents(gw, emu):
    r = answer(gw, 'Hello "from" Lambda \u00e9!')
    assert r.status == 200, r
    assert r.header("content-type") == "application/json"
    assert r.body == 'Hello "from" Lambda \u00e9!'.encode()


@pytest.mark.parametrize("value, body", [([1, "two"], b'[1, "two"]'), (42, b"42"),
                                         (True, b"true")])
def test_v2_bare_json_other_values(gw, emu, value, body):
    r = answer(gw, value)
    assert r.status == 200, r
    assert r.header("content-type") == "application/json"
    assert r.body == body


@pytest.mark.parametrize("value", [{"a": 1}, "text", 42])
def test_v1_bare_json_is_malformed(gw, emu, value):
    r = answer(gw, value, path="/v1/headers")
    assert_internal_error(r)


# --------------------------------------------------------------------------
# Binary and large bodies
# --------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/binary", "/v1/binary"])
def test_binary_round_trip(gw, emu, path):
    data = (bytes(range(256)) + b"\x00" * 64 + bytes(range(255, -1, -1))
            + random.Random(1234).randbytes(1024 * 1024) + b"\x00\r\n\r\n\x00")
    r = gw.request("POST", path, body=data,
                   headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200, r
    assert r.header("content-type") == "application/octet-stream"
    assert len(r.body) == len(data)
    assert hashlib.sha256(r.body).hexdigest() == hashlib.sha256(data).hexdigest()
    (record,) = emu.invocations()
    assert record["event"]["isBase64Encoded"] is True


def test_binary_generated_by_function(gw, emu):
    n = 3 * 1024 * 1024 + 5
    r = gw.request("GET", f"/binary?size={n}")
    assert r.status == 200, r
    assert r.header("content-length") == str(n)
    assert r.body == binary_fn.random_bytes(n)


def test_five_mib_response(gw, emu):
    r = gw.request("GET", "/big")
    assert r.status == 200, r
    assert r.header("content-length") == str(big_fn.DEFAULT_SIZE)
    assert r.header("content-type") == "text/plain"
    assert len(r.body) == big_fn.DEFAULT_SIZE
    assert r.body == big_fn.body_of_size(big_fn.DEFAULT_SIZE).encode()


def test_response_too_large_for_lambda_is_502(gw, emu):
    r = gw.request("GET", "/big?size=7000000")
    assert_internal_error(r)


# --------------------------------------------------------------------------
# Malformed answers and function errors: 502 without leaking
# --------------------------------------------------------------------------

# In format 2.0 a JSON value without statusCode is a valid answer.
V2_BARE_KINDS = {"string": b"not a proxy response", "number": b"42", "null": b"null",
                 "empty_object": b"{}"}
# "huge_header" (a 1 MiB header value) is among the kinds: no client accepts
# such a header (nginx and Envoy answer 502 for far smaller ones), and the
# gateway bounds a function's header block at 64 KiB.


def malformed_params():
    out = []
    for fmt, path in (("v2", "/malformed"), ("v1", "/v1/malformed")):
        for kind in malformed_fn.KINDS:
            if fmt == "v2" and kind in V2_BARE_KINDS:
                continue
            out.append(pytest.param(path, kind, id=f"{fmt}-{kind}"))
    return out


@pytest.mark.parametrize("path, kind", malformed_params())
def test_malformed_answers_are_502(gw, emu, path, kind):
    status, headers, body = split_raw(gw.raw(
        f"GET {path}?kind={kind} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()))
    assert status == "HTTP/1.1 502 Bad Gateway", (status, body[:200])
    assert body == INTERNAL_ERROR
    assert values(headers, "content-type") == ["application/json"]
    assert values(headers, "content-length") == [str(len(INTERNAL_ERROR))]
    assert len(values(headers, "x-request-id")) == 1
    # Nothing of the function's answer: its headers, injected text, body.
    for name in names(headers):
        assert not name.startswith("x-h") and name not in ("x-evil", "x-injected", "x-huge",
                                                           "x-obj", "x-multi"), headers
    for text in (b"smuggled", b"x-injected", b"ok", b"abc", b"MarshalError"):
        assert text not in body
    (record,) = emu.invocations(function="malformed")
    assert record["event"]["queryStringParameters"]["kind"] == kind


@pytest.mark.parametrize("kind", sorted(V2_BARE_KINDS))
def test_v2_bare_values_from_malformed(gw, emu, kind):
    r = gw.request("GET", f"/malformed?kind={kind}")
    assert r.status == 200, r
    assert r.header("content-type") == "application/json"
    assert r.body == V2_BARE_KINDS[kind]


def test_malformed_deep_field_small_depth_passes(gw, emu):
    """A valid answer with a modest nested extra field is still an answer."""
    r = gw.request("GET", "/malformed?kind=deep_field&depth=5")
    assert r.status == 200, r
    assert r.body == b"ok"


@pytest.mark.parametrize("path", ["/fail", "/v1/fail"])
def test_function_error_is_502_without_leak(gw, emu, path):
    r = gw.request("GET", path)
    assert_internal_error(r)
    secret = b"sk_live_FAKE_SECRET"
    assert secret not in r.body
    for k, v in r.headers:
        assert "sk_live_FAKE_SECRET" not in v and "DatabaseError" not in v, (k, v)
    (record,) = emu.invocations(function="fail")
    assert record["function_error"] == "Unhandled"
    assert fail_fn.FAKE_SECRET in record["error"]  # the emulator did send it
    log = gw.log_text()
    assert "sk_live_FAKE_SECRET" not in log
    assert "DatabaseError" not in log
    assert "password authentication failed" not in log


# --------------------------------------------------------------------------
# Response headers: hop-by-hop, invalid, Content-Length
# --------------------------------------------------------------------------

HOP_BY_HOP = {"Connection": "X-Private, Keep-Alive", "Keep-Alive": "timeout=5, max=10",
              "Transfer-Encoding": "chunked", "Upgrade": "h2c", "TE": "trailers",
              "Trailer": "x-trailer", "Proxy-Authenticate": "Basic realm=x",
              "Proxy-Authorization": "Basic Zm9vOmJhcg==", "X-Private": "named-in-connection"}


@pytest.mark.parametrize("path", ["/headers", "/v1/headers"])
def test_hop_by_hop_response_headers_not_sent(gw, emu, path):
    headers = dict(HOP_BY_HOP)
    headers.update({"x-kept": "yes", "content-type": "text/plain", "Cache-Control": "no-store"})
    status, got, body = raw_answer(gw, {"statusCode": 200, "headers": headers, "body": "hop"},
                                   path=path)
    assert status == "HTTP/1.1 200 OK"
    assert body == b"hop"
    got_names = names(got)
    for name in ("keep-alive", "transfer-encoding", "upgrade", "te", "trailer",
                 "proxy-authenticate", "proxy-authorization", "x-private"):
        assert name not in got_names, (name, got)
    # The gateway may send its own Connection header, never the function's.
    for v in values(got, "connection"):
        assert v.lower() in ("close", "keep-alive"), got
    assert values(got, "x-kept") == ["yes"]
    assert values(got, "cache-control") == ["no-store"]
    assert values(got, "content-length") == ["3"]


def test_hop_by_hop_in_multi_value_headers(gw, emu):
    status, got, body = raw_answer(gw, {
        "statusCode": 200,
        "multiValueHeaders": {"Connection": ["x-a", "X-B"], "x-a": ["1"], "x-b": ["2"],
                              "x-c": ["3"], "Transfer-Encoding": ["gzip", "chunked"]},
        "body": "mv"}, path="/v1/headers")
    assert status == "HTTP/1.1 200 OK"
    assert body == b"mv"
    assert "x-a" not in names(got) and "x-b" not in names(got)
    assert "transfer-encoding" not in names(got)
    assert values(got, "x-c") == ["3"]


def test_function_connection_close_does_not_close_client_connection(gw, emu):
    conn = gw.connection()
    try:
        for i in range(3):
            conn.request("POST", "/headers", body=json.dumps(
                {"statusCode": 200, "headers": {"Connection": "close"}, "body": str(i)}),
                headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert resp.read() == str(i).encode()
            assert resp.getheader("connection") is None or \
                resp.getheader("connection").lower() == "keep-alive"
            assert not resp.will_close
    finally:
        conn.close()


@pytest.mark.parametrize("headers", [
    {"x-evil": "a\r\nx-injected: yes"},
    {"x-evil": "a\rb"},
    {"x-evil": "a\nb"},
    {"x-evil": "a\u0000b"},
    {"x-evil": "a\u007fb"},
    {"bad name": "x"},
    {"x-colon:": "x"},
    {"x(y)": "1"},
    {"x-\u00e9": "1"},
    {"": "empty"},
], ids=["crlf", "cr", "lf", "nul", "del", "space-in-name", "colon-in-name", "paren-in-name",
        "non-ascii-name", "empty-name"])
@pytest.mark.parametrize("path", ["/headers", "/v1/headers"])
def test_invalid_response_headers_are_502(gw, emu, path, headers):
    status, got, body = raw_answer(gw, {"statusCode": 200, "headers": headers, "body": "bad"},
                                   path=path)
    assert status == "HTTP/1.1 502 Bad Gateway", (status, got)
    assert body == INTERNAL_ERROR
    assert "x-injected" not in names(got)


def test_invalid_cookie_and_multi_value_are_502(gw, emu):
    r = answer(gw, {"statusCode": 200, "cookies": ["a=1\r\nx-injected: 1"], "body": ""})
    assert_internal_error(r)
    r = answer(gw, {"statusCode": 200, "multiValueHeaders": {"x-a": ["ok", "b\r\nc"]},
                    "body": ""}, path="/v1/headers")
    assert_internal_error(r)


def test_tab_and_obs_text_in_value_pass(gw, emu):
    status, got, body = raw_answer(gw, {"statusCode": 200, "headers": {"x-tab": "a\tb"},
                                        "body": "t"})
    assert status == "HTTP/1.1 200 OK"
    assert values(got, "x-tab") == ["a\tb"]


@pytest.mark.parametrize("declared", ["999", "0", 1, "abc"])
@pytest.mark.parametrize("path", ["/headers", "/v1/headers"])
def test_function_content_length_ignored(gw, emu, path, declared):
    status, got, body = raw_answer(gw, {"statusCode": 200,
                                        "headers": {"Content-Length": declared,
                                                    "content-type": "text/plain"},
                                        "body": "abcdef"}, path=path)
    assert status == "HTTP/1.1 200 OK"
    assert values(got, "content-length") == ["6"]
    assert body == b"abcdef"


# --------------------------------------------------------------------------
# CORS
# --------------------------------------------------------------------------

def acx(r):
    """The Access-Control-* headers of a response, lowercased names."""
    return {k.lower(): v for k, v in r.headers if k.lower().startswith("access-control-")}


@pytest.mark.parametrize("path", ["/cors/headers", "/cors/plain/17"])
def test_cors_preflight_allowed_origin(gw, emu, path):
    r = gw.request("OPTIONS", path, headers={"Origin": APP_ORIGIN,
                                              "Access-Control-Request-Method": "GET",
                                              "Access-Control-Request-Headers": "content-type"})
    assert r.status == 204, r
    assert r.body == b""
    assert r.has("x-request-id")
    assert r.header_all("vary") == ["Origin"]
    if path == "/cors/headers":
        assert acx(r) == {"access-control-allow-origin": APP_ORIGIN,
                          "access-control-allow-methods": "GET, POST",
                          "access-control-allow-headers": "authorization, content-type",
                          "access-control-max-age": "600",
                          "access-control-allow-credentials": "true"}
    else:
        assert acx(r) == {"access-control-allow-origin": APP_ORIGIN,
                          "access-control-allow-methods": "GET"}
    assert emu.invocations() == []


def test_cors_preflight_origin_case_insensitive_and_echoed(gw, emu):
    r = gw.request("OPTIONS", "/cors/headers", headers={
        "Origin": "https://other.example.com", "Access-Control-Request-Method": "POST"})
    assert r.status == 204, r
    assert acx(r)["access-control-allow-origin"] == "https://other.example.com"
    assert emu.invocations() == []


@pytest.mark.parametrize("origin", ["https://evil.example.com", "http://app.example.com",
                                    "https://app.example.com.evil.net", "null"])
def test_cors_preflight_disallowed_origin(gw, emu, origin):
    r = gw.request("OPTIONS", "/cors/headers", headers={
        "Origin": origin, "Access-Control-Request-Method": "GET"})
    assert r.status == 204, r
    assert acx(r) == {}
    assert r.body == b""
    assert emu.invocations() == []


def test_cors_preflight_star(gw, emu):
    r = gw.request("OPTIONS", "/cors/star", headers={
        "Origin": "https://anyone.example", "Access-Control-Request-Method": "PUT"})
    assert r.status == 204, r
    assert acx(r) == {"access-control-allow-origin": "*",
                      "access-control-allow-methods": "GET, PUT",
                      "access-control-allow-headers": "x-a",
                      "access-control-max-age": "60"}
    assert emu.invocations() == []


def test_options_without_preflight_headers_reaches_function(gw, emu):
    """An OPTIONS that is not a preflight (no Access-Control-Request-Method)
    is an ordinary request for the ANY route."""
    r = gw.request("OPTIONS", "/cors/headers", headers={"Origin": APP_ORIGIN})
    assert r.status == 200, r
    assert r.json()["event"]["requestContext"]["http"]["method"] == "OPTIONS"
    assert len(emu.invocations()) == 1


def test_preflight_on_route_without_cors_is_routed(gw, emu):
    r = gw.request("OPTIONS", "/headers", headers={"Origin": APP_ORIGIN,
                                                    "Access-Control-Request-Method": "GET"})
    assert r.status == 200, r
    assert acx(r) == {}
    assert len(emu.invocations()) == 1


def test_cors_ordinary_answer_allowed_origin(gw, emu):
    r = answer(gw, {"statusCode": 200, "headers": {"x-trace": "t1",
                                                    "content-type": "text/plain"},
                    "body": "hi"}, path="/cors/headers", headers={"Origin": APP_ORIGIN})
    assert r.status == 200, r
    assert r.body == b"hi"
    assert acx(r) == {"access-control-allow-origin": APP_ORIGIN,
                      "access-control-allow-credentials": "true",
                      "access-control-expose-headers": "x-trace, x-count"}
    assert "Origin" in [v.strip() for v in ",".join(r.header_all("vary")).split(",")]
    assert r.header("x-trace") == "t1"


def test_cors_ordinary_answer_plain_route(gw, emu):
    r = gw.request("GET", "/cors/plain/3", headers={"Origin": APP_ORIGIN})
    assert r.status == 200, r
    assert acx(r) == {"access-control-allow-origin": APP_ORIGIN}
    assert r.header_all("vary") == ["Origin"]


def test_cors_ordinary_answer_disallowed_origin(gw, emu):
    r = gw.request("GET", "/cors/plain/3", headers={"Origin": "https://evil.example.com"})
    assert r.status == 200, r
    assert acx(r) == {}
    assert r.header_all("vary") == ["Origin"]
    r = gw.request("GET", "/cors/plain/3")  # no Origin at all
    assert r.status == 200, r
    assert acx(r) == {}


def test_cors_function_headers_replaced(gw, emu):
    fn_headers = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "DELETE",
                  "access-control-allow-credentials": "false",
                  "Access-Control-Expose-Headers": "x-secret", "x-other": "kept"}
    r = answer(gw, {"statusCode": 200, "headers": fn_headers, "body": "c"},
               path="/cors/headers", headers={"Origin": APP_ORIGIN})
    assert r.status == 200, r
    assert acx(r) == {"access-control-allow-origin": APP_ORIGIN,
                      "access-control-allow-credentials": "true",
                      "access-control-expose-headers": "x-trace, x-count"}
    assert r.header("x-other") == "kept"
    # A disallowed origin gets none, not even the function's own.
    r = answer(gw, {"statusCode": 200, "headers": fn_headers, "body": "c"},
               path="/cors/headers", headers={"Origin": "https://evil.example.com"})
    assert r.status == 200, r
    assert acx(r) == {}
    # On a route without cors the function's own headers pass.
    r = answer(gw, {"statusCode": 200, "headers": fn_headers, "body": "c"},
               headers={"Origin": APP_ORIGIN})
    assert acx(r)["access-control-allow-origin"] == "*"
    assert acx(r)["access-control-allow-methods"] == "DELETE"


def test_cors_star_ordinary_answer(gw, emu):
    r = gw.request("GET", "/cors/star", headers={"Origin": "https://anyone.example"})
    assert r.status == 200, r
    assert acx(r) == {"access-control-allow-origin": "*"}


def test_cors_headers_on_gateway_errors(gw, emu):
    """Error answers on a cors route carry the CORS headers too, so that a
    browser can read the 502."""
    r = answer(gw, {"statusCode": "bad"}, path="/cors/headers", headers={"Origin": APP_ORIGIN})
    assert_internal_error(r)
    assert acx(r)["access-control-allow-origin"] == APP_ORIGIN


def test_cors_async_route_202(gw, emu):
    r = gw.request("POST", "/cors/events", body=b"{}",
                   headers={"Origin": APP_ORIGIN, "Content-Type": "application/json"})
    assert r.status == 202, r
    assert r.body == b""
    assert acx(r) == {"access-control-allow-origin": APP_ORIGIN}
