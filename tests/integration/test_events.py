"""The proxy events lambdagate sends to Lambda (CONTRACT sections 4 and 8).

Each test sends a real HTTP request through the daemon to the emulator's
echo function and reads back the event, either from the function's answer
or from the emulator's invocation record. The shapes follow AWS's samples in
/work/shared/reference/events/ and the parser models of AWS Powertools
(APIGatewayProxyEventV2Model, APIGatewayProxyEventModel), mirrored inline
below so that no third-party package is needed.
Run: /usr/bin/python3 -m pytest -q tests/integration/test_events.py
"""

import base64
import datetime
import ipaddress
import json
import os
import re
import socket
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gateway import base_config, start_gateway  # noqa: E402

ROUTES = [
    {"method": "ANY", "path": "/echo", "function": "echo"},
    {"method": "ANY", "path": "/echo/{proxy+}", "function": "echo"},
    {"method": "GET", "path": "/users/{id}", "function": "echo"},
    {"method": "GET", "path": "/users/{id}/posts/{post}", "function": "echo"},
    {"method": "ANY", "path": "/v1/echo", "function": "echo", "payload_format": "1.0"},
    {"method": "ANY", "path": "/v1/echo/{proxy+}", "function": "echo", "payload_format": "1.0"},
    {"method": "GET", "path": "/v1/users/{id}", "function": "echo", "payload_format": "1.0"},
    {"method": "GET", "path": "/arn/echo",
     "function": "arn:aws:lambda:us-east-1:123456789012:function:echo"},
]

# The Content-Types CONTRACT section 8 sends as text, and some it does not.
TEXT_TYPES = [
    "text/plain",
    "text/html; charset=utf-8",
    "text/csv",
    "application/json",
    "application/json; charset=UTF-8",
    "application/vnd.api+json",
    "application/xml",
    "application/atom+xml",
    "application/javascript",
    "application/x-www-form-urlencoded",
]
BINARY_TYPES = [
    "image/png",
    "application/octet-stream",
    "application/pdf",
    "multipart/form-data; boundary=xyz",
    None,  # no Content-Type at all
]

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
TIME_RE = re.compile(r"^(\d{2})/([A-Z][a-z]{2})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) \+0000$")
HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


# --------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gw(emulator):
    """One gateway for the module (events do not depend on gateway state);
    stopping it at the end asserts a clean exit and no sanitizer report."""
    config = base_config(emulator, ROUTES, throttle={"default": None},
                         limits={"per_ip": None})
    g = start_gateway(config)
    yield g
    g.stop()


def raw_request(gw, method, target, headers=(), body=b"", host=None):
    """Send one request with exactly these header lines (repeats allowed) on
    a new connection; returns (status, [(name, value)], body bytes)."""
    lines = [f"{method} {target} HTTP/1.1",
             f"Host: {host if host is not None else '127.0.0.1:%d' % gw.port}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    data = gw.raw(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body, timeout=30)
    return parse_response(data)


def parse_response(data):
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {data[:500]!r}"
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name, value.strip()))
    length = [v for k, v in headers if k.lower() == "content-length"]
    if length:
        assert len(body) == int(length[0]), (len(body), length)
    return status, headers, body


def echo_event(gw, method, target, headers=(), body=b"", host=None):
    """The event the echo function received (it answers with it)."""
    status, resp_headers, resp_body = raw_request(gw, method, target, headers, body, host)
    assert status == 200, (status, resp_body[:500])
    event = json.loads(resp_body)
    request_id = [v for k, v in resp_headers if k.lower() == "x-request-id"]
    return event, request_id[0] if request_id else None


def get_event(gw, target, headers=None, method="GET", body=None):
    r = gw.request(method, target, body=body, headers=headers or {})
    assert r.status == 200, r
    return r.json(), r


# --------------------------------------------------------------------------
# Inline mirror of AWS Powertools' parser models (required fields and types)
# --------------------------------------------------------------------------

class Opt:
    """A member that may be absent (or null, as pydantic's Optional allows)."""

    def __init__(self, spec):
        self.spec = spec


STR = str
BOOL = bool


def INT(value, where):
    assert isinstance(value, int) and not isinstance(value, bool), f"{where}: not an int"


def SOURCE_IP(value, where):
    assert isinstance(value, str), f"{where}: not a string"
    ipaddress.ip_network(value)  # IPvAnyNetwork


def METHOD(value, where):
    assert value in HTTP_METHODS, f"{where}: {value!r} is not one of {HTTP_METHODS}"


def DICT_STR(value, where):
    assert isinstance(value, dict), f"{where}: not an object"
    for k, v in value.items():
        assert isinstance(k, str) and isinstance(v, str), f"{where}[{k!r}]: not a string"


def DICT_LIST_STR(value, where):
    assert isinstance(value, dict), f"{where}: not an object"
    for k, v in value.items():
        assert isinstance(v, list) and all(isinstance(x, str) for x in v), \
            f"{where}[{k!r}]: not a list of strings"


def LIST_STR(value, where):
    assert isinstance(value, list) and all(isinstance(x, str) for x in value), \
        f"{where}: not a list of strings"


V2_HTTP = {"method": METHOD, "path": STR, "protocol": STR, "sourceIp": SOURCE_IP,
           "userAgent": STR}
V2_REQUEST_CONTEXT = {
    "accountId": STR, "apiId": STR, "authorizer": Opt(dict), "domainName": STR,
    "domainPrefix": STR, "requestId": STR, "routeKey": STR, "stage": STR, "time": STR,
    "timeEpoch": INT, "http": V2_HTTP, "authentication": Opt(dict),
}
V2_EVENT = {  # APIGatewayProxyEventV2Model
    "version": STR, "routeKey": STR, "rawPath": STR, "rawQueryString": STR,
    "cookies": Opt(LIST_STR), "headers": DICT_STR, "queryStringParameters": Opt(DICT_STR),
    "pathParameters": Opt(DICT_STR), "stageVariables": Opt(DICT_STR),
    "requestContext": V2_REQUEST_CONTEXT, "body": Opt(STR), "isBase64Encoded": BOOL,
}
V1_IDENTITY = {  # APIGatewayEventIdentity
    "accessKey": Opt(STR), "accountId": Opt(STR), "apiKey": Opt(STR), "apiKeyId": Opt(STR),
    "caller": Opt(STR), "cognitoAuthenticationProvider": Opt(STR),
    "cognitoAuthenticationType": Opt(STR), "cognitoIdentityId": Opt(STR),
    "cognitoIdentityPoolId": Opt(STR), "principalOrgId": Opt(STR), "sourceIp": SOURCE_IP,
    "user": Opt(STR), "userAgent": Opt(STR), "userArn": Opt(STR), "clientCert": Opt(dict),
}
V1_REQUEST_CONTEXT = {  # APIGatewayEventRequestContext
    "accountId": STR, "apiId": STR, "authorizer": Opt(dict), "stage": STR, "protocol": STR,
    "identity": V1_IDENTITY, "requestId": STR, "requestTime": STR, "requestTimeEpoch": INT,
    "resourceId": Opt(STR), "resourcePath": STR, "domainName": Opt(STR),
    "domainPrefix": Opt(STR), "extendedRequestId": Opt(STR), "httpMethod": METHOD,
    "path": STR,
}
V1_EVENT = {  # APIGatewayProxyEventModel
    "version": Opt(STR), "resource": STR, "path": STR, "httpMethod": METHOD,
    "headers": Opt(DICT_STR), "multiValueHeaders": Opt(DICT_LIST_STR),
    "queryStringParameters": Opt(DICT_STR), "multiValueQueryStringParameters": Opt(DICT_LIST_STR),
    "requestContext": V1_REQUEST_CONTEXT, "pathParameters": Opt(DICT_STR),
    "stageVariables": Opt(DICT_STR), "isBase64Encoded": BOOL, "body": Opt(STR),
}


def check_model(value, spec, where="event"):
    """Validate value against a model: a dict of member -> spec, a type, a
    check function, or Opt(spec)."""
    if isinstance(spec, dict):
        assert isinstance(value, dict), f"{where}: expected an object, got {value!r}"
        for name, member in spec.items():
            if isinstance(member, Opt):
                if value.get(name) is not None:
                    check_model(value[name], member.spec, f"{where}.{name}")
            else:
                assert name in value, f"{where}.{name}: required member missing"
                check_model(value[name], member, f"{where}.{name}")
    elif isinstance(spec, type):
        assert isinstance(value, spec) and not (spec is not bool and isinstance(value, bool)), \
            f"{where}: expected {spec.__name__}, got {value!r}"
    else:
        spec(value, where)


def check_v2(event):
    check_model(event, V2_EVENT)
    # Members AWS leaves out when empty are never null (CONTRACT section 4).
    for name in ("body", "cookies", "queryStringParameters", "pathParameters",
                 "stageVariables"):
        assert name not in event or event[name] is not None, f"{name} is null"
    assert event["version"] == "2.0"


def check_v1(event):
    check_model(event, V1_EVENT)
    for name in ("queryStringParameters", "multiValueQueryStringParameters", "pathParameters",
                 "stageVariables", "body", "headers", "multiValueHeaders"):
        assert name in event, f"{name} missing (1.0 has it, null when empty)"


def parse_time(text):
    m = TIME_RE.match(text)
    assert m, f"time {text!r} is not DD/Mon/YYYY:HH:MM:SS +0000"
    day, mon, year, hh, mm, ss = m.groups()
    return datetime.datetime(int(year), MONTHS.index(mon) + 1, int(day), int(hh), int(mm),
                             int(ss), tzinfo=datetime.timezone.utc)


def check_time_pair(text, epoch_ms, before, after):
    """text names the second of epoch_ms, which lies within the request."""
    assert before - 1000 <= epoch_ms <= after + 1000, (before, epoch_ms, after)
    assert abs(epoch_ms - time.time() * 1000) < 1000 + (after - before)
    assert parse_time(text) == datetime.datetime.fromtimestamp(
        epoch_ms // 1000, datetime.timezone.utc), (text, epoch_ms)


# --------------------------------------------------------------------------
# Format 2.0
# --------------------------------------------------------------------------

def test_v2_query_raw_and_decoded(gw, emu):
    event, _ = get_event(gw, "/echo?a=1&a=2&b=x+y%21&c")
    check_v2(event)
    assert event["rawQueryString"] == "a=1&a=2&b=x+y%21&c"
    assert event["queryStringParameters"] == {"a": "1,2", "b": "x y!", "c": ""}
    assert event["rawPath"] == "/echo"
    # The emulator's record holds the same event the function saw.
    (record,) = emu.invocations()
    assert record["event"] == event
    assert record["signature_ok"] is True


def test_v2_query_percent_decoding_of_names_and_utf8(gw, emu):
    event, _ = get_event(gw, "/echo?na%6De=%E2%82%AC%20%26%3D&empty=&x=a%2Bb")
    assert event["rawQueryString"] == "na%6De=%E2%82%AC%20%26%3D&empty=&x=a%2Bb"
    assert event["queryStringParameters"] == {"name": "\u20ac &=", "empty": "", "x": "a+b"}


def test_v2_headers_lowercase_and_repeats_joined(gw, emu):
    event, _ = echo_event(gw, "GET", "/echo", headers=[
        ("X-Custom-Header", "One"),
        ("X-Multi", "a"),
        ("x-multi", "b"),
        ("X-MULTI", "c d"),
        ("Accept", "text/plain"),
        ("User-Agent", "itest-agent/1.0"),
    ])
    check_v2(event)
    h = event["headers"]
    assert all(k == k.lower() for k in h), h
    assert h["x-custom-header"] == "One"
    assert h["x-multi"] == "a,b,c d"
    assert h["accept"] == "text/plain"
    assert h["user-agent"] == "itest-agent/1.0"
    assert h["host"] == f"127.0.0.1:{gw.port}"
    # Hop-by-hop request headers never reach the function.
    assert "connection" not in h
    assert event["requestContext"]["http"]["userAgent"] == "itest-agent/1.0"


def test_v2_hop_by_hop_request_headers_dropped(gw, emu):
    event, _ = echo_event(gw, "GET", "/echo", headers=[
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Upgrade", "websocket"),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("Trailer", "x-t"),
        ("X-Named-By-Connection", "secret"),
        ("Connection", "X-Named-By-Connection"),
        ("X-Kept", "yes"),
    ])
    h = event["headers"]
    for name in ("keep-alive", "te", "upgrade", "proxy-authorization", "trailer",
                 "x-named-by-connection", "connection"):
        assert name not in h, (name, h)
    assert h["x-kept"] == "yes"


def test_v2_cookies_split_and_not_in_headers(gw, emu):
    event, _ = echo_event(gw, "GET", "/echo", headers=[
        ("Cookie", "session=abc; theme=dark"),
        ("Cookie", "  lang=en  "),
    ])
    check_v2(event)
    assert event["cookies"] == ["session=abc", "theme=dark", "lang=en"]
    assert "cookie" not in event["headers"]


def test_v2_forwarded_headers(gw, emu):
    event, _ = echo_event(gw, "GET", "/echo", headers=[
        ("X-Forwarded-For", "203.0.113.7, 198.51.100.2"),
        ("X-Forwarded-Proto", "https"),  # the client's claims are replaced
        ("X-Forwarded-Port", "443"),
    ])
    h = event["headers"]
    assert h["x-forwarded-for"] == "203.0.113.7, 198.51.100.2, 127.0.0.1"
    assert h["x-forwarded-proto"] == "http"
    assert h["x-forwarded-port"] == str(gw.port)
    # sourceIp is the peer, not what the client claims.
    assert event["requestContext"]["http"]["sourceIp"] == "127.0.0.1"

    event, _ = echo_event(gw, "GET", "/echo")
    assert event["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert event["headers"]["x-forwarded-proto"] == "http"
    assert event["headers"]["x-forwarded-port"] == str(gw.port)


def test_v2_request_context(gw, emu):
    before = int(time.time() * 1000)
    event, request_id = echo_event(gw, "GET", "/users/42?x=1",
                                   headers=[("User-Agent", "curl/8.0")])
    after = int(time.time() * 1000)
    check_v2(event)
    assert event["routeKey"] == "GET /users/{id}"
    assert event["rawPath"] == "/users/42"
    assert event["pathParameters"] == {"id": "42"}
    ctx = event["requestContext"]
    assert ctx["accountId"] == "anonymous"  # a bare function name names no account
    assert isinstance(ctx["apiId"], str) and ctx["apiId"]
    assert ctx["domainName"] == "127.0.0.1"
    assert ctx["domainPrefix"] == "127"
    assert ctx["http"] == {"method": "GET", "path": "/users/42", "protocol": "HTTP/1.1",
                           "sourceIp": "127.0.0.1", "userAgent": "curl/8.0"}
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                        ctx["requestId"]), ctx["requestId"]
    assert ctx["requestId"] == request_id
    assert ctx["routeKey"] == "GET /users/{id}"
    assert ctx["stage"] == "$default"
    check_time_pair(ctx["time"], ctx["timeEpoch"], before, after)
    assert "authorizer" not in ctx


def test_v2_request_context_domain_from_host(gw, emu):
    event, _ = echo_event(gw, "GET", "/echo", host="api.example.com:8443")
    ctx = event["requestContext"]
    assert ctx["domainName"] == "api.example.com"
    assert ctx["domainPrefix"] == "api"
    assert event["headers"]["host"] == "api.example.com:8443"


def test_v2_request_context_account_from_arn(gw, emu):
    event, _ = get_event(gw, "/arn/echo")
    assert event["requestContext"]["accountId"] == "123456789012"
    assert event["routeKey"] == "GET /arn/echo"


def test_v2_user_agent_empty_when_absent(gw, emu):
    event, _ = echo_event(gw, "GET", "/echo")
    assert "user-agent" not in event["headers"]
    assert event["requestContext"]["http"]["userAgent"] == ""


def test_v2_two_path_parameters(gw, emu):
    event, _ = get_event(gw, "/users/u%201/posts/p-2")
    assert event["routeKey"] == "GET /users/{id}/posts/{post}"
    assert event["rawPath"] == "/users/u%201/posts/p-2"
    assert event["pathParameters"] == {"id": "u 1", "post": "p-2"}


def test_v2_greedy_path_parameter(gw, emu):
    event, _ = get_event(gw, "/echo/a/b/c.txt")
    assert event["routeKey"] == "ANY /echo/{proxy+}"
    assert event["pathParameters"] == {"proxy": "a/b/c.txt"}
    assert event["requestContext"]["http"]["path"] == "/echo/a/b/c.txt"


def test_v2_empty_members_are_absent(gw, emu):
    event, _ = echo_event(gw, "GET", "/echo")
    check_v2(event)
    for name in ("body", "cookies", "queryStringParameters", "pathParameters",
                 "stageVariables"):
        assert name not in event, (name, event.get(name))
    assert event["rawQueryString"] == ""
    assert event["isBase64Encoded"] is False
    assert event["routeKey"] == "ANY /echo"
    assert isinstance(event["headers"], dict)

    # A "?" with nothing after it is no query either.
    event, _ = echo_event(gw, "GET", "/echo?")
    assert event["rawQueryString"] == ""
    assert "queryStringParameters" not in event

    # An empty POST body is no body.
    event, _ = echo_event(gw, "POST", "/echo", headers=[("Content-Type", "text/plain")])
    assert "body" not in event
    assert event["isBase64Encoded"] is False


def test_v2_headers_object_even_with_only_added_headers(gw, emu):
    """Even a request whose every header is dropped still gets a headers object."""
    data = gw.raw(b"GET /echo HTTP/1.0\r\n\r\n")
    status, _, body = parse_response(data)
    assert status == 200
    event = json.loads(body)
    check_v2(event)
    assert isinstance(event["headers"], dict)
    assert event["requestContext"]["http"]["protocol"] == "HTTP/1.0"
    assert event["requestContext"]["domainName"] == "localhost"


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_v2_any_route_has_real_method(gw, emu, method):
    r = gw.request(method, "/echo/x", body=b"" if method in ("POST", "PUT", "PATCH") else None)
    assert r.status == 200, r
    event = r.json()
    check_v2(event)
    assert event["requestContext"]["http"]["method"] == method
    assert event["routeKey"] == "ANY /echo/{proxy+}"
    assert event["requestContext"]["routeKey"] == "ANY /echo/{proxy+}"


def test_v2_head_on_any_route(gw, emu):
    r = gw.request("HEAD", "/echo")
    assert r.status == 200
    assert r.body == b""
    (record,) = emu.invocations()
    assert record["event"]["requestContext"]["http"]["method"] == "HEAD"


# --------------------------------------------------------------------------
# Bodies (CONTRACT section 8)
# --------------------------------------------------------------------------

TEXT_BODY = '{"name": "Zo\u00eb", "emoji": "\U0001f600", "amp": "a&b=c"}\n'.encode()


@pytest.mark.parametrize("ctype", TEXT_TYPES)
@pytest.mark.parametrize("path", ["/echo", "/v1/echo"])
def test_text_bodies(gw, emu, ctype, path):
    event, _ = get_event(gw, path, method="POST", body=TEXT_BODY,
                         headers={"Content-Type": ctype})
    assert event["body"] == TEXT_BODY.decode()
    assert event["isBase64Encoded"] is False
    (check_v2 if path == "/echo" else check_v1)(event)


@pytest.mark.parametrize("ctype", BINARY_TYPES)
@pytest.mark.parametrize("path", ["/echo", "/v1/echo"])
def test_binary_bodies(gw, emu, ctype, path):
    body = bytes(range(256)) + b"\x00\x00\xff" + TEXT_BODY
    headers = [("Content-Type", ctype)] if ctype else []
    event, _ = echo_event(gw, "POST", path, headers=headers, body=body)
    assert event["isBase64Encoded"] is True
    assert event["body"] == base64.b64encode(body).decode()
    assert base64.b64decode(event["body"]) == body
    (check_v2 if path == "/echo" else check_v1)(event)


def test_text_body_without_content_type_is_base64(gw, emu):
    event, _ = echo_event(gw, "POST", "/echo", body=b"plain words")
    assert event["isBase64Encoded"] is True
    assert event["body"] == base64.b64encode(b"plain words").decode()


@pytest.mark.parametrize("path", ["/echo", "/v1/echo"])
def test_json_body_with_invalid_utf8_is_base64(gw, emu, path):
    body = b'{"name": "\xff\xfe broken \xc3"}'
    event, _ = get_event(gw, path, method="POST", body=body,
                         headers={"Content-Type": "application/json"})
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == body


def test_text_body_with_control_characters(gw, emu):
    body = "a\x01b\x1fc\u2028d\"e\\f\tg".encode()
    event, _ = get_event(gw, "/echo", method="POST", body=body,
                         headers={"Content-Type": "text/plain; charset=utf-8"})
    assert event["isBase64Encoded"] is False
    assert event["body"] == body.decode()


def test_text_body_with_nul_is_base64_and_exact(gw, emu):
    """A NUL in a text body is sent base64 (lossless; handlers that read the
    body as a C string cannot lose the rest)."""
    body = b"before\x00after"
    event, _ = get_event(gw, "/echo", method="POST", body=body,
                         headers={"Content-Type": "text/plain"})
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == body


def test_chunked_request_body(gw, emu):
    status, _, body = parse_response(gw.raw(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"))
    assert status == 200, body
    event = json.loads(body)
    assert event["body"] == "hello world"
    assert event["isBase64Encoded"] is False
    assert "transfer-encoding" not in event["headers"]


# --------------------------------------------------------------------------
# Format 1.0
# --------------------------------------------------------------------------

def test_v1_event_without_query_or_body(gw, emu):
    before = int(time.time() * 1000)
    event, request_id = echo_event(gw, "GET", "/v1/users/7",
                                   headers=[("User-Agent", "itest/1")])
    after = int(time.time() * 1000)
    check_v1(event)
    assert event["version"] == "1.0"
    assert event["resource"] == "/v1/users/{id}"
    assert event["path"] == "/v1/users/7"
    assert event["httpMethod"] == "GET"
    assert event["queryStringParameters"] is None
    assert event["multiValueQueryStringParameters"] is None
    assert event["pathParameters"] == {"id": "7"}
    assert event["stageVariables"] is None
    assert event["body"] is None
    assert event["isBase64Encoded"] is False
    ctx = event["requestContext"]
    assert ctx["resourcePath"] == "/v1/users/{id}"
    assert ctx["path"] == "/v1/users/7"
    assert ctx["httpMethod"] == "GET"
    assert ctx["protocol"] == "HTTP/1.1"
    assert ctx["stage"] == "$default"
    assert ctx["requestId"] == request_id
    assert ctx["accountId"] == "anonymous"
    assert ctx["identity"]["sourceIp"] == "127.0.0.1"
    assert ctx["identity"]["userAgent"] == "itest/1"
    check_time_pair(ctx["requestTime"], ctx["requestTimeEpoch"], before, after)


def test_v1_no_path_parameters_is_null(gw, emu):
    event, _ = echo_event(gw, "GET", "/v1/echo")
    check_v1(event)
    assert event["pathParameters"] is None
    assert event["resource"] == "/v1/echo"
    assert event["requestContext"]["resourcePath"] == "/v1/echo"


def test_v1_query_single_and_multi_value(gw, emu):
    event, _ = get_event(gw, "/v1/echo/x?a=1&a=2&b=x+y%21&c")
    check_v1(event)
    # The single-value map keeps the last value, the multi-value map all.
    assert event["queryStringParameters"] == {"a": "2", "b": "x y!", "c": ""}
    assert event["multiValueQueryStringParameters"] == {"a": ["1", "2"], "b": ["x y!"],
                                                        "c": [""]}
    assert event["pathParameters"] == {"proxy": "x"}
    assert event["resource"] == "/v1/echo/{proxy+}"


def test_v1_headers_and_multi_value_headers(gw, emu):
    event, _ = echo_event(gw, "GET", "/v1/echo/h", headers=[
        ("X-Multi", "a"),
        ("X-Multi", "b"),
        ("X-Single", "one"),
        ("Cookie", "a=1; b=2"),
    ])
    check_v1(event)
    h, mh = event["headers"], event["multiValueHeaders"]
    assert h["X-Multi"] == "b"
    assert mh["X-Multi"] == ["a", "b"]
    assert h["X-Single"] == "one"
    assert mh["X-Single"] == ["one"]
    # 1.0 has no cookies member: the Cookie header stays a header.
    assert h["Cookie"] == "a=1; b=2"
    assert "cookies" not in event
    assert h["X-Forwarded-For"] == "127.0.0.1"
    assert mh["X-Forwarded-For"] == ["127.0.0.1"]
    assert h["X-Forwarded-Proto"] == "http"
    assert h["X-Forwarded-Port"] == str(gw.port)
    # Every single-value header is also in the multi-value map.
    assert set(h) == set(mh)
    for name, value in h.items():
        assert mh[name][-1] == value


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "PATCH"])
def test_v1_any_route_has_real_method(gw, emu, method):
    r = gw.request(method, "/v1/echo/m", body=b"" if method in ("POST", "PATCH") else None)
    assert r.status == 200, r
    event = r.json()
    check_v1(event)
    assert event["httpMethod"] == method
    assert event["requestContext"]["httpMethod"] == method
    assert event["resource"] == "/v1/echo/{proxy+}"


def test_v1_text_body(gw, emu):
    event, _ = get_event(gw, "/v1/echo", method="POST", body=b"k=v&x=%20",
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    check_v1(event)
    assert event["body"] == "k=v&x=%20"
    assert event["isBase64Encoded"] is False


# --------------------------------------------------------------------------
# The AWS samples themselves pass the inline models (the models are right)
# --------------------------------------------------------------------------

REFERENCE = "/work/shared/reference/events"


@pytest.mark.skipif(not os.path.isdir(REFERENCE), reason="AWS samples not present")
def test_models_accept_aws_samples():
    with open(os.path.join(REFERENCE, "awsdocs__http-api-payload-2.0-event.json")) as f:
        check_v2(json.load(f))
    with open(os.path.join(REFERENCE, "awsdocs__rest-api-proxy-1.0-event.json")) as f:
        sample = json.load(f)
    sample["requestContext"]["identity"]["sourceIp"] = "192.0.2.1"  # "IP" is a placeholder
    check_v1(sample)
    with open(os.path.join(REFERENCE, "aws-lambda-go__apigw-v2-request-no-authorizer.json")) as f:
        check_v2(json.load(f))
    # And they reject what they should.
    with pytest.raises(AssertionError):
        check_v2({"version": "2.0", "routeKey": "$default", "rawPath": "/",
                  "rawQueryString": "", "headers": {}, "isBase64Encoded": False,
                  "body": None, "requestContext": {}})


def test_event_member_order_does_not_matter_but_keys_are_unique(gw, emu):
    """The payload is one JSON object with no duplicate keys at any level."""
    r = gw.request("GET", "/echo/x?a=1", headers={"Cookie": "k=v"})
    assert r.status == 200

    def no_dupes(pairs):
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), keys
        return dict(pairs)

    (record,) = emu.invocations()
    # The record holds the decoded event; re-encode what the function saw.
    json.loads(json.dumps(record["event"]), object_pairs_hook=no_dupes)
    json.loads(r.body, object_pairs_hook=no_dupes)


def test_ipv6_listener_source_ip(emu, gateways):
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    from gateway import free_port
    port = free_port(socket.AF_INET6, "::1")
    config = base_config(emu, ROUTES, throttle={"default": None}, limits={"per_ip": None})
    config["listen"] = [{"address": f"[::1]:{port}"}]
    g = gateways.start(config)
    r = g.request("GET", "/echo")
    assert r.status == 200, r
    event = r.json()
    check_v2(event)
    assert event["requestContext"]["http"]["sourceIp"] == "::1"
    assert event["headers"]["x-forwarded-for"] == "::1"
    r = g.request("GET", "/v1/echo")
    assert r.json()["requestContext"]["identity"]["sourceIp"] == "::1"
