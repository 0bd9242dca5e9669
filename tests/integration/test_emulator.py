"""Tests of the local Lambda emulator (tests/lambda_emulator.py) and the example functions.

The gateway's integration tests trust the emulator to reject what AWS would
reject, so its SigV4 checks are tested here with requests signed by botocore.
Run: /usr/bin/python3 -m pytest -q tests/integration/test_emulator.py
"""

import base64
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import emulator as E  # noqa: E402

TOKEN_KEY = ("ASIALAMBDAGATETEST02", "session/secret+key=0987654321", "FwoGZXIvYXdzEXAMPLE//token==")

CTX_FUNCTION = '''
"""ctx: returns the context object's fields and the event (emulator tests only)."""
def handler(event, context):
    return {
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "aws_request_id": context.aws_request_id,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining": context.get_remaining_time_in_millis(),
        "event": event,
    }
'''


def v2_event(path="/", query=None, method="GET", body=None, b64=False, headers=None):
    """A minimal API Gateway payload 2.0 event."""
    event = {"version": "2.0", "routeKey": "$default", "rawPath": path,
             "rawQueryString": "&".join(f"{k}={v}" for k, v in (query or {}).items()),
             "headers": headers or {},
             "requestContext": {"http": {"method": method, "path": path}},
             "isBase64Encoded": b64}
    if query:
        event["queryStringParameters"] = query
    if body is not None:
        event["body"] = body
    return event


def v1_event(path="/", query=None, method="GET", body=None, b64=False):
    """A minimal API Gateway payload 1.0 event."""
    return {"version": "1.0", "resource": path, "path": path, "httpMethod": method,
            "headers": {}, "multiValueHeaders": {}, "queryStringParameters": query,
            "multiValueQueryStringParameters": None, "pathParameters": None,
            "stageVariables": None, "requestContext": {}, "body": body,
            "isBase64Encoded": b64}


@pytest.fixture(scope="module")
def extra_functions(tmp_path_factory):
    d = tmp_path_factory.mktemp("functions")
    (d / "ctx.py").write_text(CTX_FUNCTION)
    return d


@pytest.fixture(scope="module")
def emu(extra_functions):
    e = E.start_emulator(functions=[E.FUNCTIONS, extra_functions],
                         credentials=[(E.ACCESS_KEY, E.SECRET_KEY, None), TOKEN_KEY])
    yield e
    assert e.stop() == 0
    log = e.log_text()
    # handler exceptions are answers, not emulator failures: no tracebacks here
    assert "Traceback" not in log and "internal error" not in log, log


@pytest.fixture(autouse=True)
def clean(request):
    if "emu" in request.fixturenames:
        emu = request.getfixturevalue("emu")
        emu.reset()
    yield


def last_record(emu):
    return emu.invocations()[-1]


def error_type(resp):
    return resp.headers.get("x-amzn-errortype")


# --------------------------------------------------------------------------
# Startup, control API
# --------------------------------------------------------------------------

def test_health_and_stats_shape(emu):
    assert emu.health() == {"ok": True}
    stats = emu.stats()
    for key in ("connections", "requests", "active"):
        assert isinstance(stats[key], int)


def test_unknown_control_endpoint_is_404(emu):
    resp = E.send(emu, "GET", "/_emulator/nope")
    assert resp.status == 404


def test_bad_mode_is_rejected(emu):
    resp = E.send(emu, "POST", "/_emulator/mode", b'{"throttle": "yes"}')
    assert resp.status == 400
    resp = E.send(emu, "POST", "/_emulator/mode", b'{"bogus": 1}')
    assert resp.status == 400
    resp = E.send(emu, "POST", "/_emulator/mode", b"not json")
    assert resp.status == 400
    assert emu.control("GET", "mode")["throttle"] is False


# --------------------------------------------------------------------------
# Correct invocations
# --------------------------------------------------------------------------

def test_signed_invoke_returns_handler_result(emu):
    resp = E.invoke(emu, "hello", v2_event("/hi", method="POST"))
    assert resp.status == 200, resp
    assert resp.headers["x-amz-executed-version"] == "$LATEST"
    assert "x-amz-function-error" not in resp.headers
    assert resp.headers["content-length"] == str(len(resp.body))
    result = resp.json()
    assert result["statusCode"] == 200
    assert result["headers"] == {"content-type": "application/json"}
    assert json.loads(result["body"]) == {"message": "hello", "path": "/hi", "method": "POST"}


def test_invocation_record(emu):
    event = v2_event("/rec")
    resp = E.invoke(emu, "echo", event)
    assert resp.status == 200
    rec = last_record(emu)
    assert rec["function"] == "echo"
    assert rec["qualifier"] is None
    assert rec["invocation_type"] == "RequestResponse"
    assert rec["event"] == event
    assert rec["signature_ok"] is True
    assert rec["region"] == E.REGION
    assert rec["access_key"] == E.ACCESS_KEY
    assert rec["status"] == 200
    assert rec["time"].endswith("Z")
    assert all(name == name.lower() for name in rec["headers"])
    assert rec["headers"]["x-amz-date"]
    assert rec["headers"]["authorization"].startswith("AWS4-HMAC-SHA256 ")
    # the echo function gives the event back inside the proxy response
    assert json.loads(resp.json()["body"]) == event


def test_context_object(emu):
    resp = E.invoke(emu, "ctx", {"k": "v"})
    ctx = resp.json()
    assert ctx["function_name"] == "ctx"
    assert ctx["function_version"] == "$LATEST"
    assert ctx["invoked_function_arn"] == "arn:aws:lambda:us-east-1:123456789012:function:ctx"
    assert ctx["memory_limit_in_mb"] == "128"
    assert len(ctx["aws_request_id"]) == 36
    assert ctx["log_group_name"] == "/aws/lambda/ctx"
    assert "[$LATEST]" in ctx["log_stream_name"]
    assert 0 < ctx["remaining"] <= 900000
    assert ctx["event"] == {"k": "v"}


def test_empty_body_is_empty_event(emu):
    resp = E.invoke(emu, "ctx", body=b"")
    assert resp.status == 200
    assert resp.json()["event"] == {}


def test_session_token(emu):
    akid, secret, token = TOKEN_KEY
    resp = E.invoke(emu, "hello", {}, access_key=akid, secret_key=secret, token=token)
    assert resp.status == 200, resp
    assert last_record(emu)["headers"]["x-amz-security-token"] == token
    # without the token, or with another one
    resp = E.invoke(emu, "hello", {}, access_key=akid, secret_key=secret)
    assert resp.status == 403 and error_type(resp) == "UnrecognizedClientException"
    resp = E.invoke(emu, "hello", {}, access_key=akid, secret_key=secret, token=token + "x")
    assert resp.status == 403 and error_type(resp) == "UnrecognizedClientException"
    # a token on a key that has none
    resp = E.invoke(emu, "hello", {}, token="unexpected")
    assert resp.status == 403 and error_type(resp) == "UnrecognizedClientException"


def test_query_is_canonicalised_like_aws(emu):
    # ?Qualifier=%24LATEST: signed by botocore from the URL as sent.
    resp = E.invoke(emu, "ctx", {}, qualifier="$LATEST")
    assert resp.status == 200, resp
    assert "%24LATEST" in last_record(emu)["query"]
    assert resp.json()["function_version"] == "$LATEST"


def test_signed_user_agent_header_is_verified(emu):
    # botocore leaves User-Agent out when it signs; AWS verifies whatever
    # SignedHeaders lists, and so must the emulator.
    class SignEverything(E.SigV4Auth):
        def headers_to_sign(self, request):
            headers = super().headers_to_sign(request)
            headers["user-agent"] = request.headers["User-Agent"]
            return headers

    headers = {"User-Agent": "lambdagate/0.1"}
    resp = E.invoke(emu, "hello", {}, extra_headers=headers, auth_class=SignEverything)
    assert resp.status == 200, resp
    assert "user-agent" in last_record(emu)["headers"]["authorization"]


# --------------------------------------------------------------------------
# Signature failures
# --------------------------------------------------------------------------

def test_body_changed_after_signing_is_rejected(emu):
    def flip_one_byte(body):
        return body[:-2] + bytes([body[-2] ^ 1]) + body[-1:]

    resp = E.invoke(emu, "echo", {"amount": 100}, tamper=flip_one_byte)
    assert resp.status == 403
    assert error_type(resp) == "InvalidSignatureException"
    assert resp.json()["message"].startswith(
        "The request signature we calculated does not match the signature you provided.")
    rec = last_record(emu)
    assert rec["signature_ok"] is False
    assert rec["status"] == 403
    assert rec["signature_error"]
    assert rec["canonical_request"].startswith("POST\n/2015-03-31/functions/echo/invocations\n")
    assert "expected canonical request" in emu.log_text()


def test_wrong_secret_is_rejected(emu):
    resp = E.invoke(emu, "hello", {}, secret_key="not-the-secret")
    assert resp.status == 403
    assert error_type(resp) == "InvalidSignatureException"
    assert last_record(emu)["signature_ok"] is False


def test_unknown_access_key_is_rejected(emu):
    resp = E.invoke(emu, "hello", {}, access_key="AKIDUNKNOWN000000000")
    assert resp.status == 403
    assert error_type(resp) == "UnrecognizedClientException"


def test_missing_and_garbled_authorization(emu):
    path = E.invoke_path("hello")
    resp = E.send(emu, "POST", path, b"{}")
    assert resp.status == 403
    assert error_type(resp) == "MissingAuthenticationTokenException"
    assert last_record(emu)["signature_ok"] is False

    headers = E.sign("POST", emu.endpoint + path, b"{}")
    for garbled in ("AWS4-HMAC-SHA256 garbage",
                    "AWS4-HMAC-SHA256 Credential=AKID/20200101/us-east-1/lambda/aws4_request",
                    "AWS4-HMAC-SHA256 Credential=a/b, SignedHeaders=host, Signature=00",
                    "Bearer abc"):
        bad = dict(headers, Authorization=garbled)
        resp = E.send(emu, "POST", path, b"{}", bad)
        assert resp.status == 403, garbled
        assert error_type(resp) == "IncompleteSignatureException", garbled

    bad = {k: v for k, v in headers.items() if k.lower() != "x-amz-date"}
    resp = E.send(emu, "POST", path, b"{}", bad)
    assert resp.status == 403 and error_type(resp) == "IncompleteSignatureException"


def test_wrong_service_scope_is_rejected(emu):
    resp = E.invoke(emu, "hello", {}, service="execute-api")
    assert resp.status == 403
    assert error_type(resp) == "InvalidSignatureException"
    assert "lambda" in resp.json()["message"]


def test_expired_and_future_dates_are_rejected(emu):
    old = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 16 * 60))
    resp = E.invoke(emu, "hello", {}, timestamp=old)
    assert resp.status == 403 and "Signature expired" in resp.json()["message"]
    future = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() + 16 * 60))
    resp = E.invoke(emu, "hello", {}, timestamp=future)
    assert resp.status == 403 and "not yet current" in resp.json()["message"]
    recent = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 5 * 60))
    assert E.invoke(emu, "hello", {}, timestamp=recent).status == 200


def test_host_must_be_signed(emu):
    class NoHost(E.SigV4Auth):
        def headers_to_sign(self, request):
            headers = super().headers_to_sign(request)
            del headers["host"]
            return headers

    resp = E.invoke(emu, "hello", {}, auth_class=NoHost)
    assert resp.status == 403
    assert "Host" in resp.json()["message"]


def test_mismatch_names_common_signing_bugs(emu):
    # A client that forgets the second encoding of the path
    class PathEncodedOnce(E.SigV4Auth):
        def _normalize_url_path(self, path):
            return path

    arn = "arn:aws:lambda:us-east-1:123456789012:function:hello"
    resp = E.invoke(emu, arn, {}, auth_class=PathEncodedOnce)
    assert resp.status == 403
    assert "encoded once" in last_record(emu)["signature_error"]
    assert "arn%253Aaws" in last_record(emu)["canonical_request"]

    # A client that signs the query as sent instead of its canonical form
    path = E.invoke_path("hello") + "?Qualifier=$LATEST"
    headers = E.sign("POST", emu.endpoint + path, b"{}")
    resp = E.send(emu, "POST", path, b"{}", headers)
    assert resp.status == 403
    assert "query string as sent" in last_record(emu)["signature_error"]

    # A wrong secret is not blamed on any of those
    E.invoke(emu, "hello", {}, secret_key="wrong")
    assert "secret key" in last_record(emu)["signature_error"]


def test_content_sha256_must_match_body(emu):
    bad = {"X-Amz-Content-SHA256": "0" * 64}
    resp = E.invoke(emu, "hello", {}, extra_headers=bad)
    assert resp.status == 403
    assert error_type(resp) == "InvalidSignatureException"
    assert "X-Amz-Content-SHA256" in last_record(emu)["signature_error"]


# --------------------------------------------------------------------------
# Function names, ARNs and qualifiers
# --------------------------------------------------------------------------

def test_full_arn_sent_encoded_once_verifies(emu):
    """The gateway sends arn%3Aaws%3A... and signs arn%253Aaws%253A... (double encoding)."""
    arn = "arn:aws:lambda:eu-west-1:210987654321:function:ctx"
    resp = E.invoke(emu, arn, {"x": 1}, region="eu-west-1")
    assert resp.status == 200, resp
    assert resp.json()["invoked_function_arn"] == arn
    rec = last_record(emu)
    assert "arn%3Aaws%3Alambda%3Aeu-west-1" in rec["path"]
    assert rec["function"] == "ctx"
    assert rec["function_arg"] == arn
    assert rec["region"] == "eu-west-1"


def test_arn_with_alias_and_qualifier_parameter(emu):
    arn = "arn:aws:lambda:us-east-1:123456789012:function:ctx"
    resp = E.invoke(emu, arn + ":live", {})
    assert resp.status == 200, resp
    assert resp.json()["function_version"] == "live"
    assert resp.json()["invoked_function_arn"] == arn + ":live"
    assert last_record(emu)["qualifier"] == "live"

    resp = E.invoke(emu, arn, {}, qualifier="prod")
    assert resp.status == 200, resp
    assert resp.json()["function_version"] == "prod"
    assert resp.json()["invoked_function_arn"] == arn + ":prod"
    assert last_record(emu)["qualifier"] == "prod"

    resp = E.invoke(emu, "ctx", {}, qualifier="7")
    assert resp.headers["x-amz-executed-version"] == "7"

    # the same qualifier twice is fine, two different ones are not
    assert E.invoke(emu, arn + ":live", {}, qualifier="live").status == 200
    resp = E.invoke(emu, arn + ":live", {}, qualifier="prod")
    assert resp.status == 400
    assert error_type(resp) == "InvalidParameterValueException"


def test_name_alias_and_partial_arn(emu):
    resp = E.invoke(emu, "ctx:blue", {})
    assert resp.status == 200 and resp.json()["function_version"] == "blue"
    resp = E.invoke(emu, "123456789012:function:ctx", {})
    assert resp.status == 200 and resp.json()["function_name"] == "ctx"
    resp = E.invoke(emu, "123456789012:function:ctx:green", {})
    assert resp.status == 200 and resp.json()["function_version"] == "green"


def test_unknown_function_is_404(emu):
    resp = E.invoke(emu, "no-such-function", {})
    assert resp.status == 404
    assert error_type(resp) == "ResourceNotFoundException"
    body = resp.json()
    assert body["Type"] == "User"
    assert body["message"].startswith("Function not found: ")
    assert "no-such-function" in body["message"]
    resp = E.invoke(emu, "arn:aws:lambda:us-east-1:123456789012:function:nope:live", {})
    assert resp.status == 404
    assert last_record(emu)["signature_ok"] is True


def test_invalid_function_name_is_400(emu):
    resp = E.invoke(emu, "bad/name", {})
    assert resp.status in (400, 404)
    resp = E.invoke(emu, "x" * 65, {})
    assert resp.status == 400


# --------------------------------------------------------------------------
# Invocation types, payloads, function errors
# --------------------------------------------------------------------------

def test_event_invocation_is_202_and_runs_in_background(emu):
    event = v2_event("/async", method="POST", body='{"job": 1}')
    resp = E.invoke(emu, "async_sink", event, invocation_type="Event")
    assert resp.status == 202
    assert resp.body == b""
    rec = emu.wait_for_record(lambda r: r["function"] == "async_sink" and r["done"])
    assert rec["invocation_type"] == "Event"
    assert rec["event"] == event
    assert rec["status"] == 202
    assert rec["function_error"] is None


def test_event_invocation_of_slow_function_returns_at_once(emu):
    start = time.monotonic()
    resp = E.invoke(emu, "slow", v2_event(query={"ms": "1500"}), invocation_type="Event")
    assert resp.status == 202
    assert time.monotonic() - start < 1.0
    emu.wait_for_record(lambda r: r["function"] == "slow" and r["done"], timeout=10)


def test_dry_run_is_204(emu):
    resp = E.invoke(emu, "hello", {}, invocation_type="DryRun")
    assert resp.status == 204
    assert resp.body == b""


def test_bad_invocation_type_is_400(emu):
    resp = E.invoke(emu, "hello", {}, invocation_type="Sometimes")
    assert resp.status == 400
    assert error_type(resp) == "InvalidParameterValueException"


def test_function_error_is_unhandled(emu):
    resp = E.invoke(emu, "fail", v2_event())
    assert resp.status == 200
    assert resp.headers["x-amz-function-error"] == "Unhandled"
    err = resp.json()
    assert err["errorType"] == "DatabaseError"
    assert "sk_live_FAKE_SECRET" in err["errorMessage"]
    assert isinstance(err["stackTrace"], list) and len(err["stackTrace"]) >= 3
    assert any("fail.py" in frame for frame in err["stackTrace"])
    assert not any("lambda_emulator.py" in frame for frame in err["stackTrace"])
    assert err["requestId"]
    rec = last_record(emu)
    assert rec["function_error"] == "Unhandled"


def test_unserialisable_result_is_marshal_error(emu):
    resp = E.invoke(emu, "malformed", v2_event(query={"kind": "unserializable"}))
    assert resp.status == 200
    assert resp.headers["x-amz-function-error"] == "Unhandled"
    assert resp.json()["errorType"] == "Runtime.MarshalError"


def test_log_tail(emu):
    resp = E.invoke(emu, "fail", {}, extra_headers={"X-Amz-Log-Type": "Tail"})
    tail = base64.b64decode(resp.headers["x-amz-log-result"]).decode()
    assert "START RequestId:" in tail and "DatabaseError" in tail


def test_body_must_be_json(emu):
    resp = E.invoke(emu, "echo", body=b"{not json")
    assert resp.status == 400
    assert error_type(resp) == "InvalidRequestContentException"
    assert last_record(emu)["event"] == "{not json"
    resp = E.invoke(emu, "echo", body=b'{"x": NaN}')
    assert resp.status == 400


def test_payload_limits(emu):
    # 6 MB for RequestResponse, 1 MB for Event, counted on the request body
    sync_ok = json.dumps("a" * (6291456 - 2)).encode()
    assert len(sync_ok) == 6291456
    resp = E.invoke(emu, "ctx", body=sync_ok)
    assert resp.status == 200 or resp.headers.get("x-amz-function-error"), resp
    too_big = json.dumps("a" * (6291456 - 1)).encode()
    resp = E.invoke(emu, "ctx", body=too_big)
    assert resp.status == 413
    assert error_type(resp) == "RequestTooLargeException"
    async_big = json.dumps("a" * (1048576 - 1)).encode()
    resp = E.invoke(emu, "async_sink", body=async_big, invocation_type="Event")
    assert resp.status == 413
    async_ok = json.dumps("a" * (1048576 - 2)).encode()
    resp = E.invoke(emu, "async_sink", body=async_ok, invocation_type="Event")
    assert resp.status == 202


def test_response_too_large_is_a_function_error(emu):
    resp = E.invoke(emu, "big", v2_event(query={"size": str(7 * 1024 * 1024)}))
    assert resp.status == 200
    assert resp.headers["x-amz-function-error"] == "Unhandled"
    assert resp.json()["errorType"] == "Function.ResponseSizeTooLarge"


# --------------------------------------------------------------------------
# Failure modes
# --------------------------------------------------------------------------

def test_throttle_mode(emu):
    emu.set_mode(throttle=True, retry_after=3)
    resp = E.invoke(emu, "hello", {})
    assert resp.status == 429
    assert resp.headers["retry-after"] == "3"
    assert error_type(resp) == "TooManyRequestsException"
    assert resp.json() == {"Reason": "ReservedFunctionConcurrentInvocationLimitExceeded",
                           "Type": "User", "message": "Rate Exceeded."}
    assert last_record(emu)["status"] == 429
    emu.set_mode(retry_after=None)
    resp = E.invoke(emu, "hello", {})
    assert resp.status == 429 and "retry-after" not in resp.headers
    emu.set_mode(throttle=False)
    assert E.invoke(emu, "hello", {}).status == 200


def test_forced_status_mode(emu):
    emu.set_mode(status=500)
    resp = E.invoke(emu, "hello", {})
    assert resp.status == 500
    assert error_type(resp) == "ServiceException"
    assert "message" in resp.json()
    emu.set_mode(status=502)
    assert E.invoke(emu, "hello", {}).status == 502
    emu.control("DELETE", "mode")
    assert E.invoke(emu, "hello", {}).status == 200


def test_delay_mode(emu):
    emu.set_mode(delay_ms=400)
    start = time.monotonic()
    resp = E.invoke(emu, "hello", {})
    assert resp.status == 200
    assert time.monotonic() - start >= 0.4


def test_drop_mode_closes_without_answer(emu):
    emu.set_mode(drop=True)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        E.invoke(emu, "hello", {})
    emu.set_mode(drop=False)
    assert E.invoke(emu, "hello", {}).status == 200


def test_signature_is_checked_before_modes(emu):
    emu.set_mode(throttle=True)
    resp = E.invoke(emu, "hello", {}, secret_key="wrong")
    assert resp.status == 403


# --------------------------------------------------------------------------
# Connections and concurrency
# --------------------------------------------------------------------------

def test_keep_alive_reuses_one_connection(emu):
    before = emu.stats()
    conn = http.client.HTTPConnection(emu.host, emu.port, timeout=10)
    try:
        for i in range(20):
            resp = E.invoke(emu, "echo", {"i": i}, conn=conn)
            assert resp.status == 200
            assert resp.headers.get("connection", "").lower() != "close"
    finally:
        conn.close()
    after = emu.stats()
    assert after["connections"] == before["connections"] + 1
    assert after["requests"] == before["requests"] + 20


def test_keep_alive_survives_errors(emu):
    conn = http.client.HTTPConnection(emu.host, emu.port, timeout=10)
    before = emu.stats()
    try:
        assert E.invoke(emu, "nope", {}, conn=conn).status == 404
        assert E.invoke(emu, "hello", {}, conn=conn, secret_key="x").status == 403
        assert E.invoke(emu, "fail", {}, conn=conn).status == 200
        assert E.invoke(emu, "hello", {}, conn=conn).status == 200
    finally:
        conn.close()
    assert emu.stats()["connections"] == before["connections"] + 1


def test_active_counts_handlers_in_flight(emu):
    results = []

    def call():
        results.append(E.invoke(emu, "slow", v2_event(query={"ms": "800"})).status)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    peak = 0
    while time.monotonic() < deadline and peak < 3:
        peak = max(peak, emu.stats()["active"])
        time.sleep(0.02)
    for t in threads:
        t.join()
    assert peak == 3
    assert results == [200, 200, 200]
    assert emu.stats()["active"] == 0


def test_bad_input_does_not_kill_the_server(emu):
    garbage = [b"\x16\x03\x01\x00\xa5garbage\r\n\r\n",
               b"POST /2015-03-31/functions/hello/invocations HTTP/1.1\r\nHost: x\r\n"
               b"Content-Length: abc\r\n\r\n",
               b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
               b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n",
               b"\r\n\r\n"]
    for data in garbage:
        with socket.create_connection((emu.host, emu.port), timeout=5) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            try:
                while s.recv(65536):
                    pass
            except OSError:
                pass
    # a client that disconnects half way through a body
    with socket.create_connection((emu.host, emu.port), timeout=5) as s:
        s.sendall(b"POST /2015-03-31/functions/hello/invocations HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 100\r\n\r\n{\"a\"")
    assert emu.health() == {"ok": True}
    assert E.invoke(emu, "hello", {}).status == 200


def test_chunked_request_body(emu):
    body = json.dumps(v2_event("/chunked")).encode()
    path = E.invoke_path("echo")
    headers = E.sign("POST", emu.endpoint + path, body, {"Content-Type": "application/json"})
    conn = emu.connection()
    try:
        conn.putrequest("POST", path)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for i in range(0, len(body), 7):
            piece = body[i:i + 7]
            conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        assert json.loads(json.loads(resp.read())["body"])["rawPath"] == "/chunked"
    finally:
        conn.close()


# --------------------------------------------------------------------------
# The example functions
# --------------------------------------------------------------------------

def proxy(emu, function, event):
    resp = E.invoke(emu, function, event)
    assert resp.status == 200, resp
    assert "x-amz-function-error" not in resp.headers, resp
    return resp.json()


def test_hello_both_formats(emu):
    out = proxy(emu, "hello", v1_event("/v1path", method="PUT"))
    assert json.loads(out["body"]) == {"message": "hello", "path": "/v1path", "method": "PUT"}
    out = proxy(emu, "hello", v2_event("/v2path", method="GET"))
    assert json.loads(out["body"]) == {"message": "hello", "path": "/v2path", "method": "GET"}


def test_users(emu):
    event = v2_event("/users/42")
    event["pathParameters"] = {"id": "42"}
    out = proxy(emu, "users", event)
    assert out["statusCode"] == 200 and json.loads(out["body"])["id"] == "42"
    event = v1_event("/users/missing")
    event["pathParameters"] = {"id": "missing"}
    out = proxy(emu, "users", event)
    assert out["statusCode"] == 404
    assert json.loads(out["body"])["message"] == "user not found"


def test_binary_echo_and_sized(emu):
    data = bytes(range(256)) * 3
    b64 = base64.b64encode(data).decode()
    out = proxy(emu, "binary", v2_event(method="POST", body=b64, b64=True))
    assert out["isBase64Encoded"] is True
    assert out["headers"]["content-type"] == "application/octet-stream"
    assert base64.b64decode(out["body"]) == data
    out = proxy(emu, "binary", v1_event(method="POST", body="plain text"))
    assert out["isBase64Encoded"] is False and out["body"] == "plain text"
    for n in (0, 1, 1000, 65537):
        for event in (v2_event(query={"size": str(n)}), v1_event(query={"size": str(n)})):
            out = proxy(emu, "binary", event)
            assert base64.b64decode(out["body"]) == random.Random(n).randbytes(n)


def test_big(emu):
    import importlib.util
    spec = importlib.util.spec_from_file_location("example_big", os.path.join(E.FUNCTIONS, "big.py"))
    big = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(big)
    out = proxy(emu, "big", v2_event())
    assert len(out["body"]) == 5 * 1024 * 1024
    assert out["body"] == big.body_of_size(5 * 1024 * 1024)
    out = proxy(emu, "big", v1_event(query={"size": "100"}))
    assert out["body"] == big.body_of_size(100) and len(out["body"]) == 100


def test_slow(emu):
    start = time.monotonic()
    out = proxy(emu, "slow", v2_event(query={"ms": "300"}))
    assert time.monotonic() - start >= 0.3
    assert json.loads(out["body"]) == {"slept_ms": 300}


def test_cookies(emu):
    out = proxy(emu, "cookies", v2_event())
    assert len(out["cookies"]) == 2 and "multiValueHeaders" not in out
    assert out["headers"]["x-count"] == 3 and out["headers"]["x-flag"] is True
    out = proxy(emu, "cookies", v1_event())
    assert len(out["multiValueHeaders"]["Set-Cookie"]) == 2 and "cookies" not in out
    out = proxy(emu, "cookies", v2_event(query={"both": "1"}))
    assert "cookies" in out and "multiValueHeaders" in out


@pytest.mark.parametrize("kind", ["status_string", "status_huge", "crlf_header",
                                  "bad_header_name", "bad_base64", "string", "null",
                                  "headers_string", "body_object", "many_headers"])
def test_malformed_kinds_are_delivered(emu, kind):
    resp = E.invoke(emu, "malformed", v2_event(query={"kind": kind}))
    assert resp.status == 200 and "x-amz-function-error" not in resp.headers, resp
    json.loads(resp.body)  # valid JSON, just not a valid proxy response


def test_malformed_deep_and_nan(emu):
    resp = E.invoke(emu, "malformed", v2_event(query={"kind": "deep"}))
    assert resp.status == 200 and "x-amz-function-error" not in resp.headers
    assert resp.body == b"[" * 10000 + b"]" * 10000
    resp = E.invoke(emu, "malformed", v1_event(query={"kind": "deep_field", "depth": "5000"}))
    assert resp.body.count(b"[") == 5000
    resp = E.invoke(emu, "malformed", v2_event(query={"kind": "status_nan"}))
    assert b"NaN" in resp.body


def test_malformed_unknown_kind_lists_kinds(emu):
    out = proxy(emu, "malformed", v2_event())
    assert out["statusCode"] == 400
    assert "crlf_header" in json.loads(out["body"])["kinds"]


# --------------------------------------------------------------------------
# Separate emulator processes
# --------------------------------------------------------------------------

def test_handler_reloads_when_file_changes(tmp_path):
    fn = tmp_path / "ver.py"
    fn.write_text("def handler(event, context):\n    return 1\n")
    with E.start_emulator(functions=[tmp_path]) as emu:
        assert E.invoke(emu, "ver", {}).json() == 1
        fn.write_text("def handler(event, context):\n    return 2  # changed\n")
        assert E.invoke(emu, "ver", {}).json() == 2
        (tmp_path / "broken.py").write_text("def handler(:\n")
        resp = E.invoke(emu, "broken", {})
        assert resp.headers["x-amz-function-error"] == "Unhandled"
        assert resp.json()["errorType"] == "Runtime.ImportModuleError"
        (tmp_path / "nohandler.py").write_text("x = 1\n")
        resp = E.invoke(emu, "nohandler", {})
        assert resp.json()["errorType"] == "Runtime.HandlerNotFound"


def test_function_timeout(tmp_path):
    with E.start_emulator(extra_args=["--timeout", "0.5"]) as emu:
        start = time.monotonic()
        resp = E.invoke(emu, "slow", v2_event(query={"ms": "3000"}))
        assert time.monotonic() - start < 2.5
        assert resp.headers["x-amz-function-error"] == "Unhandled"
        assert resp.json()["errorType"] == "Sandbox.Timedout"


def test_region_option(tmp_path):
    with E.start_emulator(extra_args=["--region", "eu-central-1"]) as emu:
        assert E.invoke(emu, "hello", {}, region="eu-central-1").status == 200
        resp = E.invoke(emu, "hello", {}, region="us-east-1")
        assert resp.status == 403


def test_sigterm_exits_cleanly():
    emu = E.start_emulator()
    assert E.invoke(emu, "hello", {}).status == 200
    # an idle keep-alive connection must not hold up the exit
    conn = http.client.HTTPConnection(emu.host, emu.port, timeout=5)
    E.invoke(emu, "hello", {}, conn=conn)
    start = time.monotonic()
    assert emu.stop(signal.SIGTERM) == 0
    assert time.monotonic() - start < 5
    conn.close()
    assert "stopped" in emu.log_text()


def test_port_file_and_ready_line(tmp_path):
    port_file = tmp_path / "port"
    proc = subprocess.Popen([E.PYTHON, E.EMULATOR, "--port", "0", "--port-file", str(port_file),
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY port=")
        assert int(line.split("=")[1]) == int(port_file.read_text())
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        proc.stdout.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    with E.start_emulator(tls=(cert, key)) as emu:
        assert emu.endpoint.startswith("https://")
        resp = E.invoke(emu, "hello", v2_event("/tls"))
        assert resp.status == 200, resp
        assert json.loads(resp.json()["body"])["path"] == "/tls"
        # a client that does not trust the certificate fails the handshake,
        # and the emulator keeps serving
        import ssl
        strict = ssl.create_default_context()
        with pytest.raises(ssl.SSLError):
            with socket.create_connection((emu.host, emu.port), timeout=5) as s:
                strict.wrap_socket(s, server_hostname="127.0.0.1")
        # the right CA works with full verification
        trusting = ssl.create_default_context(cafile=str(cert))
        conn = http.client.HTTPSConnection(emu.host, emu.port, context=trusting, timeout=5)
        assert E.invoke(emu, "hello", {}, conn=conn).status == 200
        conn.close()
        assert emu.health() == {"ok": True}


def test_idle_timeout_closes_keep_alive_connections():
    with E.start_emulator(extra_args=["--idle-timeout", "0.3"]) as emu:
        conn = http.client.HTTPConnection(emu.host, emu.port, timeout=5)
        assert E.invoke(emu, "hello", {}, conn=conn).status == 200
        assert emu.stats()["open_connections"] == 2  # conn and the stats query's own
        time.sleep(0.8)
        assert emu.stats()["open_connections"] == 1
        conn.sock.settimeout(2)
        assert conn.sock.recv(1) == b""  # closed by the emulator
        conn.close()
