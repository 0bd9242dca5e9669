#!/usr/bin/python3
"""Local emulator of the AWS Lambda Invoke API, for lambdagate's tests and demo.

It serves

    POST /2015-03-31/functions/{FunctionName}/invocations[?Qualifier=q]

the way Lambda does, and checks every request's AWS Signature Version 4 with
botocore, so a signing bug in the gateway fails loudly instead of passing
against a lenient fake.  A function NAME is the file NAME.py in one of the
--functions directories, which must define handler(event, context); it is
imported the way the Lambda Python runtime imports it (by path, cached, and
re-imported when the file changes).

Test control lives under /_emulator/ on the same port, unsigned:

    GET    /_emulator/health        {"ok": true}
    GET    /_emulator/invocations   every invocation attempt, oldest first
                                    (?function=NAME, ?since=SEQ, ?limit=N filter)
    DELETE /_emulator/invocations   forget them
    GET    /_emulator/stats         {"connections": TCP connections accepted, not
                                     counting those whose first request was a
                                     control request (so polling stats does not
                                     disturb keep-alive checks),
                                     "tcp_connections": all of them,
                                     "open_connections": open now,
                                     "requests": Invoke API requests,
                                     "invocations": handler runs,
                                     "active": handlers running now,
                                     "max_active": the most at once}
    GET    /_emulator/mode          the current failure mode
    POST   /_emulator/mode          {"throttle": bool, "retry_after": int|null,
                                     "delay_ms": int, "status": int|null,
                                     "drop": bool}  (keys given are changed)
    DELETE /_emulator/mode          back to normal
    POST   /_emulator/reset         forget invocations and reset the mode

Each invocation attempt is recorded as {seq, time, request_id, method, path
(raw), query (raw), function (resolved name), function_arg (FunctionName as
sent, decoded once), qualifier, invocation_type, event, headers (lowercase
names), body_bytes, signature_ok, signature_error, region, access_key, status,
function_error, error, done, ...}; a rejected signature adds canonical_request
and string_to_sign (the expected ones), also logged to stderr.

Run only with Debian's /usr/bin/python3: it has python3-botocore.
    tests/lambda_emulator.py --port 0 --port-file /tmp/port \
        --functions examples/functions --credentials AKID:SECRET[:TOKEN]
prints "READY port=N" on stdout once it listens.
"""

import argparse
import base64
import collections
import datetime
import decimal
import hashlib
import hmac
import http.server
import importlib.util
import json
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
import traceback
import uuid
from urllib.parse import parse_qsl, quote, unquote, urlsplit

try:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    from botocore.utils import normalize_url_path
except ImportError:  # pragma: no cover - depends on the interpreter used
    sys.stderr.write(
        "lambda_emulator: botocore is missing; run it with /usr/bin/python3 "
        "(Debian's python3-botocore)\n")
    sys.exit(2)


# Lambda's payload limits (API_Invoke): request bodies, and the response a
# function may return (6 MB plus the 100 bytes Lambda allows for framing).
MAX_SYNC_REQUEST = 6291456
MAX_ASYNC_REQUEST = 1048576
MAX_RESPONSE = 6291556
# Bodies beyond this are not even read: the connection is closed after a 413.
HARD_BODY_CAP = 64 * 1024 * 1024

SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"
INVOKE_PATH = re.compile(r"^/2015-03-31/functions/([^/?]+)/invocations/?$")
# FunctionName forms accepted by Invoke: name, name:qualifier, partial ARN
# ACCOUNT:function:name[:qualifier], full ARN arn:PARTITION:lambda:REGION:
# ACCOUNT:function:name[:qualifier].
FUNCTION_NAME = re.compile(
    r"^(?:arn:(?P<partition>aws[a-zA-Z-]*):lambda:"
    r"(?P<region>[a-z]{2}(?:-gov|-iso[a-z]*)?-[a-z]+-\d):)?"
    r"(?:(?P<account>\d{12}):)?"
    r"(?:function:)?"
    r"(?P<name>[a-zA-Z0-9_.-]+)"
    r"(?::(?P<qualifier>\$LATEST|[a-zA-Z0-9_-]+))?$")
QUALIFIER = re.compile(r"^[a-zA-Z0-9$_-]{1,128}$")
INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")
DEFAULT_MODE = {"throttle": False, "retry_after": 1, "delay_ms": 0,
                "status": None, "drop": False}

SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you "
    "provided. Check your AWS Secret Access Key and signing method. Consult "
    "the service documentation for details.")


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def log(message):
    """One diagnostic line on stderr; never raises."""
    try:
        stamp = utcnow().strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        sys.stderr.write(f"{stamp} lambda_emulator {message}\n")
        sys.stderr.flush()
    except Exception:  # stderr closed: nothing sensible left to do
        pass


class ApiError(Exception):
    """An answer of the Invoke API that is not the function's own."""

    def __init__(self, status, error_type, message, extra=None, headers=None,
                 kind="User", reason=None):
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.body = {"Type": kind, "message": message}
        if error_type in ("InvalidSignatureException",
                          "MissingAuthenticationTokenException",
                          "IncompleteSignatureException",
                          "UnrecognizedClientException"):
            # AWS's authentication errors carry only a message.
            self.body = {"message": message}
        if extra:
            self.body.update(extra)
        self.headers = headers or {}
        self.reason = reason or message  # for the log and the record only
        self.canonical_request = None
        self.string_to_sign = None


# --------------------------------------------------------------------------
# Signature Version 4 verification
# --------------------------------------------------------------------------

class _VerifyingSigV4Auth(SigV4Auth):
    """botocore's SigV4 computation over exactly the headers the client signed.

    botocore leaves user-agent, expect and x-amzn-trace-id out when it signs;
    AWS verifies whatever SignedHeaders names, so the emulator must as well.
    """

    def headers_to_sign(self, request):
        header_map = super().headers_to_sign(request)
        for name, value in request.headers.items():
            lname = name.lower()
            if lname not in header_map:
                header_map[lname] = value
        return header_map


def parse_authorization(value):
    """Split an AWS4-HMAC-SHA256 Authorization header; raise ApiError if garbled."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != "AWS4-HMAC-SHA256":
        raise ApiError(403, "IncompleteSignatureException",
                       f"Unsupported Authorization algorithm {algorithm!r}; "
                       "expected AWS4-HMAC-SHA256")
    fields = {}
    for part in rest.split(","):
        key, sep, val = part.strip().partition("=")
        if not sep:
            raise ApiError(403, "IncompleteSignatureException",
                           f"Authorization header requires key=value pairs, got {part.strip()!r}")
        fields[key.strip()] = val.strip()
    missing = [k for k in ("Credential", "SignedHeaders", "Signature") if not fields.get(k)]
    if missing:
        raise ApiError(403, "IncompleteSignatureException",
                       " ".join(f"Authorization header requires '{k}' parameter." for k in missing))
    scope = fields["Credential"].split("/")
    if len(scope) != 5:
        raise ApiError(403, "IncompleteSignatureException",
                       "Credential must have exactly 5 slash-delimited elements, "
                       f"e.g. keyid/date/region/service/term, got '{fields['Credential']}'")
    return {"access_key": scope[0], "date": scope[1], "region": scope[2],
            "service": scope[3], "terminator": scope[4],
            "signed_headers": fields["SignedHeaders"], "signature": fields["Signature"]}


def canonical_query_params(raw_query):
    """The query as (name, value) pairs, percent-decoded once.

    AWS canonicalises the query from its decoded parameters, so the client must
    have signed the RFC 3986 encoding of each name and value whatever bytes it
    put on the wire.  None when the query cannot be decoded (then the raw query
    is used as it stands).
    """
    pairs = []
    for piece in raw_query.split("&"):
        if not piece:
            continue
        key, _, val = piece.partition("=")
        try:
            pairs.append((unquote(key, errors="strict"), unquote(val, errors="strict")))
        except UnicodeDecodeError:
            return None
    return pairs


class _PathEncodedOnce(_VerifyingSigV4Auth):
    def _normalize_url_path(self, path):
        return normalize_url_path(path)


class _PathDecoded(_VerifyingSigV4Auth):
    def _normalize_url_path(self, path):
        return quote(normalize_url_path(unquote(path)), safe="/~")


class _UnsignedPayload(_VerifyingSigV4Auth):
    def payload(self, request):
        return "UNSIGNED-PAYLOAD"


class _EmptyPayload(_VerifyingSigV4Auth):
    def payload(self, request):
        return hashlib.sha256(b"").hexdigest()


# Mistakes a SigV4 client is known to make, tried when a signature does not
# match so that the log names the bug instead of only showing the expected text.
_SIGNING_MISTAKES = [
    (_PathEncodedOnce, False, "the client signed the path encoded once (AWS encodes the "
                              "path as received again: %3A becomes %253A)"),
    (_PathDecoded, False, "the client signed the decoded path, encoded once"),
    (_VerifyingSigV4Auth, True, "the client signed the query string as sent on the wire, "
                                "not its canonical (decoded, RFC 3986 re-encoded, sorted) form"),
    (_UnsignedPayload, False, "the client signed UNSIGNED-PAYLOAD instead of the body hash"),
    (_EmptyPayload, False, "the client signed the hash of an empty body"),
]


def diagnose_mismatch(awsreq, creds, auth):
    """A sentence saying why the signature differs, as far as can be told."""
    wanted = auth["signature"].encode()
    for cls, raw_query, description in _SIGNING_MISTAKES:
        try:
            params = awsreq.params
            if raw_query:
                if not params:
                    continue
                awsreq.params = {}
            signer = cls(Credentials(creds.access_key, creds.secret_key, creds.token),
                         "lambda", auth["region"])
            canonical = signer.canonical_request(awsreq)
            candidate = signer.signature(signer.string_to_sign(awsreq, canonical), awsreq)
            awsreq.params = params
        except Exception:
            continue
        if hmac.compare_digest(candidate.encode(), wanted):
            return f"signature differs: {description}"
    return ("signature differs: the client's canonical request or string to sign differs "
            "from the expected ones (below), the body changed after signing, or the secret "
            "key is not the one configured for this access key")


def verify_signature(req, body, config):
    """Check req's SigV4 signature; return the scope on success, raise ApiError.

    req is the BaseHTTPRequestHandler (raw path in req.path, headers in
    req.headers).  The canonical request is rebuilt by botocore from the path
    exactly as received, so a FunctionName sent percent-encoded once is signed
    encoded twice, as AWS expects.
    """
    authorization = req.headers.get_all("Authorization") or []
    if not authorization:
        raise ApiError(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    if len(authorization) > 1:
        raise ApiError(403, "IncompleteSignatureException", "More than one Authorization header")
    auth = parse_authorization(authorization[0])
    info = {"access_key": auth["access_key"], "region": auth["region"]}
    req.record.update(info)

    amz_date = req.headers.get("X-Amz-Date")
    if not amz_date:
        raise ApiError(403, "IncompleteSignatureException",
                       "Authorization header requires existence of either a "
                       "'X-Amz-Date' or a 'Date' header.")
    try:
        signed_at = datetime.datetime.strptime(amz_date, SIGV4_TIMESTAMP).replace(
            tzinfo=datetime.timezone.utc)
    except ValueError:
        raise ApiError(403, "IncompleteSignatureException",
                       f"X-Amz-Date must be in the ISO8601 Long Format "
                       f"\"yyyyMMdd'T'HHmmss'Z'\", got {amz_date!r}")
    if auth["service"] != "lambda":
        raise ApiError(403, "InvalidSignatureException",
                       f"Credential should be scoped to correct service: 'lambda'. "
                       f"(got '{auth['service']}')")
    if auth["terminator"] != "aws4_request":
        raise ApiError(403, "InvalidSignatureException",
                       "Credential should be scoped with a valid terminator: 'aws4_request', "
                       f"not '{auth['terminator']}'.")
    if auth["date"] != amz_date[:8]:
        raise ApiError(403, "InvalidSignatureException",
                       f"Date in Credential scope does not match YYYYMMDD from ISO-8601 "
                       f"version of date from HTTP: '{auth['date']}' != '{amz_date[:8]}', "
                       f"from '{amz_date}'.")
    if config.region and auth["region"] != config.region:
        raise ApiError(403, "InvalidSignatureException",
                       f"Credential should be scoped to a valid region, not "
                       f"'{auth['region']}' (expected '{config.region}').")
    now = utcnow()
    skew = datetime.timedelta(seconds=config.max_skew)
    if signed_at < now - skew:
        raise ApiError(403, "InvalidSignatureException",
                       f"Signature expired: {amz_date} is now earlier than "
                       f"{(now - skew).strftime(SIGV4_TIMESTAMP)} "
                       f"({now.strftime(SIGV4_TIMESTAMP)} - {config.max_skew // 60} min.)")
    if signed_at > now + skew:
        raise ApiError(403, "InvalidSignatureException",
                       f"Signature not yet current: {amz_date} is still later than "
                       f"{(now + skew).strftime(SIGV4_TIMESTAMP)} "
                       f"({now.strftime(SIGV4_TIMESTAMP)} + {config.max_skew // 60} min.)")

    signed = [h for h in auth["signed_headers"].split(";")]
    if "host" not in signed:
        raise ApiError(403, "InvalidSignatureException",
                       "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
    if "x-amz-date" not in signed:
        raise ApiError(403, "InvalidSignatureException",
                       "'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization.")

    creds = config.credentials.get(auth["access_key"])
    token = req.headers.get("X-Amz-Security-Token")
    if creds is None:
        raise ApiError(403, "UnrecognizedClientException",
                       "The security token included in the request is invalid.",
                       reason=f"unknown access key id {auth['access_key']!r}")
    if creds.token is not None or token is not None:
        if creds.token is None or token is None or not hmac.compare_digest(
                creds.token.encode(), token.encode()):
            why = ("the request has no X-Amz-Security-Token" if token is None else
                   "this access key has no session token" if creds.token is None else
                   "X-Amz-Security-Token does not match the key's session token")
            raise ApiError(403, "UnrecognizedClientException",
                           "The security token included in the request is invalid.",
                           reason=why)
        if "x-amz-security-token" not in signed:
            raise ApiError(403, "InvalidSignatureException",
                           "'X-Amz-Security-Token' must be a 'SignedHeader' in the AWS "
                           "Authorization.")

    problems = []
    if signed != sorted(set(signed)) or any(h != h.lower() or not h for h in signed):
        problems.append(f"SignedHeaders {auth['signed_headers']!r} is not the sorted, "
                        "lowercase, duplicate-free list SigV4 requires")
    host = req.headers.get("Host")
    if host is None:
        problems.append("the request has no Host header")
        host = "missing-host"
    raw_path, _, raw_query = req.path.partition("?")
    if raw_path.startswith(("http://", "https://")):  # absolute-form request target
        raw_path = urlsplit(raw_path).path or "/"
    url = f"http://{host}{raw_path}" + (f"?{raw_query}" if raw_query else "")
    awsreq = AWSRequest(method=req.command, url=url, data=body)
    for name in signed:
        values = req.headers.get_all(name)
        if values is None:
            problems.append(f"signed header {name!r} is not in the request")
            continue
        for value in values:
            awsreq.headers[name] = value
    params = canonical_query_params(raw_query)
    if params:
        awsreq.params = params
    awsreq.context["timestamp"] = amz_date

    body_hash = hashlib.sha256(body).hexdigest()
    content_sha = req.headers.get("X-Amz-Content-SHA256")
    if content_sha is not None and content_sha != body_hash:
        problems.append(f"X-Amz-Content-SHA256 {content_sha!r} is not the SHA-256 of the "
                        f"body ({body_hash})")

    signer = _VerifyingSigV4Auth(
        Credentials(creds.access_key, creds.secret_key, creds.token), "lambda", auth["region"])
    canonical = signer.canonical_request(awsreq)
    string_to_sign = signer.string_to_sign(awsreq, canonical)
    expected = signer.signature(string_to_sign, awsreq)
    if not hmac.compare_digest(expected.encode(), auth["signature"].encode()) or problems:
        if not problems:
            problems.append(diagnose_mismatch(awsreq, creds, auth))
        err = ApiError(403, "InvalidSignatureException",
                       SIGNATURE_MISMATCH + "\n\nThe Canonical String for this request should "
                       f"have been\n'{canonical}'\n\nThe String-to-Sign should have been\n"
                       f"'{string_to_sign}'\n")
        err.reason = "; ".join(problems)
        err.canonical_request = canonical
        err.string_to_sign = string_to_sign
        raise err
    return info


# --------------------------------------------------------------------------
# Functions: resolution, loading, running
# --------------------------------------------------------------------------

class LambdaContext:
    """The context object of the Lambda Python runtime (awslambdaric)."""

    def __init__(self, function_name, version, arn, memory_mb, timeout_s,
                 client_context=None):
        self.function_name = function_name
        self.function_version = version
        self.invoked_function_arn = arn
        self.memory_limit_in_mb = str(memory_mb)  # a string in the real runtime
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = (f"{utcnow():%Y/%m/%d}/[{version}]"
                                f"{uuid.uuid4().hex}")
        self.identity = None
        self.client_context = client_context
        self.tenant_id = None
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def __repr__(self):
        return (f"LambdaContext([aws_request_id={self.aws_request_id},"
                f"function_name={self.function_name},"
                f"function_version={self.function_version}])")


class ClientContext:
    """context.client_context from X-Amz-Client-Context (base64 JSON)."""

    def __init__(self, data):
        self.client = data.get("client")
        self.custom = data.get("custom")
        self.env = data.get("env")


class _Raw(str):
    """A piece of already-encoded JSON text in the iterative encoder."""


def _json_default(obj):
    # The Python runtime serialises Decimal (as DynamoDB returns) as a number.
    if isinstance(obj, decimal.Decimal):
        return float(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _json_key(key):
    """A dict key as json.dumps turns it into a string (or raise TypeError)."""
    if key is True or key is False or key is None:
        return json.dumps(key)
    if isinstance(key, (int, float)):
        return json.dumps(key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _dumps_iterative(obj, max_nodes=50_000_000):
    """json.dumps for structures nested deeper than Python's recursion limit."""
    out = []
    stack = [obj]
    nodes = 0
    while stack:
        item = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            raise ValueError("Circular reference detected")
        if isinstance(item, _Raw):
            out.append(item)
        elif isinstance(item, (list, tuple)):
            out.append("[")
            stack.append(_Raw("]"))
            for i in range(len(item) - 1, -1, -1):
                stack.append(item[i])
                if i:
                    stack.append(_Raw(", "))
        elif isinstance(item, dict):
            out.append("{")
            stack.append(_Raw("}"))
            entries = list(item.items())
            for i in range(len(entries) - 1, -1, -1):
                key, value = entries[i]
                if not isinstance(key, str):
                    key = _json_key(key)
                stack.append(value)
                stack.append(_Raw(json.dumps(key) + ": "))
                if i:
                    stack.append(_Raw(", "))
        else:
            out.append(json.dumps(item, default=_json_default))
    return "".join(out)


def serialise_result(result):
    """The function's result as the runtime sends it, or raise TypeError/ValueError."""
    try:
        return json.dumps(result, default=_json_default)
    except RecursionError:
        return _dumps_iterative(result)


def error_document(exc, request_id, error_type=None, stack=None):
    """The Python runtime's error payload for an exception."""
    if stack is None:
        frames = traceback.extract_tb(exc.__traceback__)
        # Drop the emulator's own frames, as the runtime hides bootstrap.py.
        frames = [f for f in frames if os.path.abspath(f.filename) != os.path.abspath(__file__)]
        stack = traceback.format_list(frames)
    return {"errorMessage": str(exc), "errorType": error_type or type(exc).__name__,
            "requestId": request_id, "stackTrace": stack}


class FunctionRegistry:
    """Handler modules found in the --functions directories, imported by path."""

    def __init__(self, directories):
        self.directories = directories
        self.lock = threading.Lock()
        self.cache = {}  # path -> (mtime_ns, size, module)

    def find(self, name):
        for directory in self.directories:
            path = os.path.join(directory, name + ".py")
            if os.path.isfile(path):
                return path
        return None

    def load(self, path):
        """The module for path, re-imported when the file changed; raises on import errors."""
        st = os.stat(path)
        key = (st.st_mtime_ns, st.st_size)
        with self.lock:
            cached = self.cache.get(path)
            if cached and cached[0] == key:
                return cached[1]
            modname = "lambda_fn_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
            spec = importlib.util.spec_from_file_location(modname, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            self.cache[path] = (key, module)
            return module


# --------------------------------------------------------------------------
# Shared state
# --------------------------------------------------------------------------

class State:
    def __init__(self, max_records):
        self.lock = threading.Lock()
        self.records = collections.deque(maxlen=max_records)
        self.seq = 0
        self.mode = dict(DEFAULT_MODE)
        self.tcp_connections = 0
        self.control_connections = 0
        self.open_connections = 0
        self.requests = 0
        self.invocations = 0
        self.active = 0
        self.max_active = 0

    def new_record(self, **fields):
        with self.lock:
            self.seq += 1
            record = {"seq": self.seq}
            record.update(fields)
            self.records.append(record)
            return record

    def handler_started(self):
        with self.lock:
            self.invocations += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)

    def handler_finished(self):
        with self.lock:
            self.active -= 1

    def stats(self):
        with self.lock:
            return {"connections": self.tcp_connections - self.control_connections,
                    "tcp_connections": self.tcp_connections,
                    "control_connections": self.control_connections,
                    "open_connections": self.open_connections,
                    "requests": self.requests,
                    "invocations": self.invocations,
                    "active": self.active,
                    "max_active": self.max_active,
                    "records": len(self.records)}


# --------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------

class EmulatorHandler(http.server.BaseHTTPRequestHandler):
    # Headers and body go out in separate writes: without TCP_NODELAY the
    # second waits for the peer's delayed ACK (about 40 ms per invocation).
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server_version = "lambda-emulator/1.0"

    def version_string(self):
        return self.server_version

    # --- connection bookkeeping -------------------------------------------------

    def setup(self):
        server = self.server
        if server.config.idle_timeout:
            self.timeout = server.config.idle_timeout
        with server.state.lock:
            server.state.tcp_connections += 1
            server.state.open_connections += 1
        self._counted_open = True
        self._first_request = True
        if server.ssl_context is not None:
            try:
                self.request.settimeout(10)
                self.request = server.ssl_context.wrap_socket(self.request, server_side=True)
                self.request.settimeout(self.timeout)
            except Exception:
                # finish() will not run: undo the open count here.
                with server.state.lock:
                    server.state.open_connections -= 1
                self._counted_open = False
                raise
        super().setup()

    def finish(self):
        try:
            super().finish()
        finally:
            if getattr(self, "_counted_open", False):
                with self.server.state.lock:
                    self.server.state.open_connections -= 1
                self._counted_open = False

    def log_request(self, code="-", size="-"):
        pass  # invocations are logged by us, one line each

    def log_error(self, fmt, *args):
        log(f"http error client={self.client_address[0]} " + (fmt % args))

    # --- dispatch -------------------------------------------------------------

    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_GET

    def _dispatch(self):
        state = self.server.state
        control = self.path.startswith("/_emulator/") or self.path == "/_emulator"
        if self._first_request:
            self._first_request = False
            if control:
                with state.lock:
                    state.control_connections += 1
        try:
            if control:
                self._control()
            else:
                with state.lock:
                    state.requests += 1
                self._invoke()
        except (BrokenPipeError, ConnectionResetError, socket.timeout, ssl.SSLError):
            self.close_connection = True
        except Exception as exc:  # never let a bug kill the connection thread silently
            log(f"internal error on {self.command} {self.path}: {exc!r}\n"
                + traceback.format_exc())
            self.close_connection = True
            try:
                self._send_json(500, {"Type": "Service", "message": f"emulator bug: {exc!r}"},
                                {"X-Amzn-Errortype": "ServiceException"})
            except Exception:
                pass

    def _read_body(self):
        """The request body (Content-Length or chunked); raise ApiError if unusable."""
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    self.close_connection = True
                    raise ApiError(400, "InvalidRequestContentException", "bad chunked encoding")
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                total += size
                if total > HARD_BODY_CAP:
                    self.close_connection = True
                    raise ApiError(413, "RequestTooLargeException", "Request body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
            return b"".join(chunks)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
            if n < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise ApiError(400, "InvalidRequestContentException",
                           f"invalid Content-Length {length!r}")
        if n > HARD_BODY_CAP:
            self.close_connection = True
            raise ApiError(413, "RequestTooLargeException",
                           f"Request must be smaller than {MAX_SYNC_REQUEST} bytes for the "
                           "InvokeFunction operation")
        body = self.rfile.read(n)
        if len(body) != n:
            self.close_connection = True
            raise ConnectionResetError("client closed before sending the whole body")
        return body

    def _send(self, status, body=b"", headers=None, content_type="application/json"):
        self.send_response(status)
        request_id = getattr(self, "amzn_request_id", None) or str(uuid.uuid4())
        self.send_header("x-amzn-RequestId", request_id)
        if status != 204:
            if content_type and body is not None:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, str(value))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body and self.command != "HEAD" and status != 204:
            self.wfile.write(body)
        self.wfile.flush()

    def _send_json(self, status, obj, headers=None):
        self._send(status, json.dumps(obj).encode(), headers)

    # --- control API ----------------------------------------------------------

    def _control(self):
        state = self.server.state
        try:
            body = self._read_body()
        except ApiError as err:
            return self._send_json(err.status, {"message": err.reason})
        path, _, query = self.path.partition("?")
        path = path.rstrip("/")
        args = dict(parse_qsl(query))
        method = self.command
        if path == "/_emulator/health" and method in ("GET", "HEAD"):
            return self._send_json(200, {"ok": True})
        if path == "/_emulator/stats" and method == "GET":
            return self._send_json(200, state.stats())
        if path == "/_emulator/invocations":
            if method == "GET":
                with state.lock:
                    records = [dict(r) for r in state.records]
                if "function" in args:
                    records = [r for r in records
                               if args["function"] in (r.get("function"), r.get("function_arg"))]
                if "since" in args:
                    since = int(args["since"]) if args["since"].isdigit() else 0
                    records = [r for r in records if r["seq"] > since]
                if args.get("limit", "").isdigit():
                    records = records[-int(args["limit"]):] if int(args["limit"]) else []
                return self._send(200, json.dumps(records, default=str).encode())
            if method == "DELETE":
                with state.lock:
                    state.records.clear()
                return self._send_json(200, {"ok": True})
        if path == "/_emulator/mode":
            if method == "GET":
                with state.lock:
                    return self._send_json(200, dict(state.mode))
            if method == "DELETE":
                with state.lock:
                    state.mode = dict(DEFAULT_MODE)
                    mode = dict(state.mode)
                log(f"mode reset {json.dumps(mode)}")
                return self._send_json(200, mode)
            if method in ("POST", "PUT"):
                try:
                    change = json.loads(body or b"{}")
                    mode = validate_mode(change)
                except ValueError as exc:
                    return self._send_json(400, {"message": f"bad mode: {exc}"})
                with state.lock:
                    state.mode.update(mode)
                    mode = dict(state.mode)
                log(f"mode set {json.dumps(mode)}")
                return self._send_json(200, mode)
        if path == "/_emulator/reset" and method == "POST":
            with state.lock:
                state.records.clear()
                state.mode = dict(DEFAULT_MODE)
            return self._send_json(200, {"ok": True})
        return self._send_json(404, {"message": f"no control endpoint {method} {path}"})

    # --- Invoke API -------------------------------------------------------------

    def _invoke(self):
        config, state = self.server.config, self.server.state
        self.amzn_request_id = str(uuid.uuid4())
        started = time.monotonic()
        raw_path, _, raw_query = self.path.partition("?")
        query = dict(parse_qsl(raw_query, keep_blank_values=True))
        headers = {}
        for name, value in self.headers.items():
            lname = name.lower()
            headers[lname] = headers[lname] + ", " + value if lname in headers else value
        record = state.new_record(
            time=utcnow().isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            request_id=self.amzn_request_id, method=self.command, path=raw_path,
            query=raw_query, function=None, function_arg=None, qualifier=query.get("Qualifier"),
            invocation_type=self.headers.get("X-Amz-Invocation-Type") or "RequestResponse",
            event=None, headers=headers, body_bytes=0, signature_ok=False,
            signature_error=None, region=None, access_key=None, status=None,
            function_error=None, error=None, done=False)
        self.record = record
        try:
            self._invoke_inner(record, raw_path, raw_query, query)
        except ApiError as err:
            record.update(status=err.status, error=f"{err.error_type}: {err.reason}",
                          done=True)
            if err.canonical_request is not None:
                record["canonical_request"] = err.canonical_request
                record["string_to_sign"] = err.string_to_sign
            if err.status == 403:
                record["signature_error"] = err.reason
                log(f"signature rejected {err.error_type} fn={record['function']} "
                    f"reason={err.reason}" + (
                        f"\n--- expected canonical request ---\n{err.canonical_request}"
                        f"\n--- expected string to sign ---\n{err.string_to_sign}\n---"
                        if err.canonical_request else ""))
            headers = {"X-Amzn-Errortype": err.error_type}
            headers.update(err.headers)
            self._send_json(err.status, err.body, headers)
        finally:
            if record.get("status") is not None and not config.quiet:
                log(f"invoke fn={record['function']} qualifier={record['qualifier']} "
                    f"type={record['invocation_type']} status={record['status']} "
                    f"sig={'ok' if record['signature_ok'] else 'FAIL'} "
                    f"function_error={record['function_error']} bytes={record['body_bytes']} "
                    f"ms={int((time.monotonic() - started) * 1000)} "
                    f"request_id={record['request_id']}")

    def _invoke_inner(self, record, raw_path, raw_query, query):
        config, state = self.server.config, self.server.state
        match = INVOKE_PATH.match(raw_path)
        if match:
            # FunctionName as sent (decoded once); "function" becomes the
            # resolved name below.
            record["function"] = record["function_arg"] = unquote(match.group(1))
        body = self._read_body()
        record["body_bytes"] = len(body)
        try:
            record["event"] = json.loads(body) if body else {}
        except (ValueError, RecursionError):
            record["event"] = body.decode("utf-8", "replace")

        verify_signature(self, body, config)
        record["signature_ok"] = True

        if not match or self.command != "POST":
            raise ApiError(404, "UnknownOperationException",
                           f"No operation for {self.command} {raw_path}")

        with state.lock:
            mode = dict(state.mode)
        if mode["delay_ms"]:
            time.sleep(mode["delay_ms"] / 1000.0)
        if mode["drop"]:
            record.update(status="dropped", done=True)
            self.close_connection = True
            try:
                self.request.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if mode["throttle"]:
            headers = {}
            if mode["retry_after"] is not None:
                headers["Retry-After"] = str(mode["retry_after"])
            raise ApiError(429, "TooManyRequestsException", "Rate Exceeded.",
                           extra={"Reason": "ReservedFunctionConcurrentInvocationLimitExceeded"},
                           headers=headers)
        if mode["status"] is not None:
            raise ApiError(mode["status"], "ServiceException",
                           f"Forced failure: the emulator answers {mode['status']} "
                           "(POST /_emulator/mode)", kind="Service")

        invocation_type = self.headers.get("X-Amz-Invocation-Type") or "RequestResponse"
        if invocation_type not in INVOCATION_TYPES:
            raise ApiError(400, "InvalidParameterValueException",
                           f"1 validation error detected: Value '{invocation_type}' at "
                           "'invocationType' failed to satisfy constraint: Member must satisfy "
                           "enum value set: [Event, RequestResponse, DryRun]")
        limit = MAX_ASYNC_REQUEST if invocation_type == "Event" else MAX_SYNC_REQUEST
        if len(body) > limit:
            raise ApiError(413, "RequestTooLargeException",
                           f"Request must be smaller than {limit} bytes for the "
                           "InvokeFunction operation")

        # Resolve the function: FunctionName was percent-decoded once above.
        fmatch = FUNCTION_NAME.match(record["function_arg"] or "")
        if not fmatch or (not fmatch.group("account") and not fmatch.group("region")
                          and len(fmatch.group("name")) > 64):
            raise ApiError(400, "InvalidParameterValueException",
                           f"1 validation error detected: Value '{record['function_arg']}' at "
                           "'functionName' failed to satisfy constraint: Member must satisfy "
                           "regular expression pattern")
        name = fmatch.group("name")
        record["function"] = name
        qualifier = fmatch.group("qualifier")
        query_qualifier = query.get("Qualifier")
        if query_qualifier is not None:
            if not QUALIFIER.match(query_qualifier):
                raise ApiError(400, "InvalidParameterValueException",
                               f"1 validation error detected: Value '{query_qualifier}' at "
                               "'qualifier' failed to satisfy constraint: Member must satisfy "
                               "regular expression pattern: (|[a-zA-Z0-9$_-]+)")
            if qualifier is not None and qualifier != query_qualifier:
                raise ApiError(400, "InvalidParameterValueException",
                               "The derived qualifier from the function name does not match "
                               "the specified qualifier.")
            qualifier = query_qualifier
        record["qualifier"] = qualifier
        region = fmatch.group("region") or record["region"] or "us-east-1"
        account = fmatch.group("account") or config.account_id
        unqualified_arn = f"arn:aws:lambda:{region}:{account}:function:{name}"
        invoked_arn = unqualified_arn + (f":{qualifier}" if qualifier else "")
        path = self.server.functions.find(name)
        if path is None:
            raise ApiError(404, "ResourceNotFoundException",
                           f"Function not found: {invoked_arn}")

        if invocation_type != "DryRun" and body:
            try:
                json.loads(body, parse_constant=_reject_constant)
            except (ValueError, RecursionError) as exc:
                raise ApiError(400, "InvalidRequestContentException",
                               f"Could not parse request body into json: {exc}")
        event = record["event"]
        record["invocation_type"] = invocation_type

        version = qualifier if qualifier else "$LATEST"
        executed = qualifier if qualifier and qualifier.isdigit() else "$LATEST"
        record["function_version"] = version
        record["invoked_function_arn"] = invoked_arn
        if invocation_type == "DryRun":
            record.update(status=204, done=True)
            self._send(204, b"", {"X-Amz-Executed-Version": executed})
            return

        client_context = None
        raw_cc = self.headers.get("X-Amz-Client-Context")
        if raw_cc:
            try:
                client_context = ClientContext(json.loads(base64.b64decode(raw_cc)))
            except Exception:
                raise ApiError(400, "InvalidParameterValueException",
                               "Client context must be a valid Base64-encoded JSON object.")
        context = LambdaContext(name, version, invoked_arn, config.memory,
                                config.timeout, client_context)
        record["aws_request_id"] = context.aws_request_id

        if invocation_type == "Event":
            record["status"] = 202
            self._send(202, b"", {}, content_type=None)
            thread = threading.Thread(target=self._run_async, name=f"event-{name}",
                                      args=(path, event, context, record), daemon=True)
            thread.start()
            return

        payload, function_error = run_function(self.server, path, event, context, record)
        record.update(status=200, function_error=function_error, done=True)
        headers = {"X-Amz-Executed-Version": executed}
        if function_error:
            headers["X-Amz-Function-Error"] = function_error
        if (self.headers.get("X-Amz-Log-Type") or "") == "Tail":
            headers["X-Amz-Log-Result"] = base64.b64encode(
                record.get("log", "").encode()[-4096:]).decode()
        self._send(200, payload, headers)

    def _run_async(self, path, event, context, record):
        try:
            run_function(self.server, path, event, context, record)
        except Exception as exc:  # run_function reports handler errors itself
            log(f"async invocation failed inside the emulator: {exc!r}")
        finally:
            record["done"] = True
            log(f"event done fn={record['function']} function_error={record['function_error']} "
                f"request_id={record['request_id']}")


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def run_function(server, path, event, context, record):
    """Run the handler in path; return (payload bytes, X-Amz-Function-Error or None).

    The handler runs in its own thread so that --timeout can answer the
    caller the way Lambda does when a function overruns, while the thread
    finishes in the background.
    """
    state, config = server.state, server.config
    outcome = {}
    request_id = context.aws_request_id
    began = time.monotonic()

    def target():
        state.handler_started()
        try:
            try:
                module = server.functions.load(path)
            except Exception as exc:
                outcome["error"] = error_document(
                    exc, request_id, "Runtime.ImportModuleError",
                    stack=traceback.format_exception_only(type(exc), exc))
                outcome["error"]["errorMessage"] = (
                    f"Unable to import module '{context.function_name}': {exc}")
                return
            handler = getattr(module, "handler", None)
            if not callable(handler):
                outcome["error"] = {
                    "errorMessage": f"Handler 'handler' missing on module "
                                    f"'{context.function_name}'",
                    "errorType": "Runtime.HandlerNotFound", "requestId": request_id,
                    "stackTrace": []}
                return
            try:
                result = handler(event, context)
            except Exception as exc:
                outcome["error"] = error_document(exc, request_id)
                return
            try:
                outcome["payload"] = serialise_result(result).encode()
            except (TypeError, ValueError, OverflowError) as exc:
                outcome["error"] = {"errorMessage": f"Unable to marshal response: {exc}",
                                    "errorType": "Runtime.MarshalError",
                                    "requestId": request_id, "stackTrace": []}
        except BaseException as exc:  # SystemExit and friends end the "process"
            outcome["error"] = error_document(exc, request_id, "Runtime.ExitError")
        finally:
            state.handler_finished()

    thread = threading.Thread(target=target, name=f"fn-{context.function_name}", daemon=True)
    thread.start()
    thread.join(config.timeout)
    elapsed = time.monotonic() - began
    if thread.is_alive():
        outcome = {"error": {
            "errorMessage": f"RequestId: {request_id} Error: Task timed out after "
                            f"{config.timeout:.2f} seconds",
            "errorType": "Sandbox.Timedout", "requestId": request_id, "stackTrace": []}}
    elif "payload" in outcome and len(outcome["payload"]) > MAX_RESPONSE:
        outcome = {"error": {
            "errorMessage": f"Response payload size ({len(outcome['payload'])} bytes) exceeded "
                            f"maximum allowed payload size ({MAX_RESPONSE} bytes).",
            "errorType": "Function.ResponseSizeTooLarge", "requestId": request_id,
            "stackTrace": []}}
    lines = [f"START RequestId: {request_id} Version: {context.function_version}"]
    if "error" in outcome:
        err = outcome["error"]
        lines.append(f"[ERROR] {err['errorType']}: {err['errorMessage']}")
        lines.extend(s.rstrip("\n") for s in err.get("stackTrace", []))
        record["function_error"] = "Unhandled"
        record["error"] = f"{err['errorType']}: {err['errorMessage']}"
        payload = json.dumps(err).encode()
        function_error = "Unhandled"
    else:
        payload = outcome["payload"]
        function_error = None
    lines.append(f"END RequestId: {request_id}")
    lines.append(f"REPORT RequestId: {request_id}\tDuration: {elapsed * 1000:.2f} ms\t"
                 f"Memory Size: {config.memory} MB")
    record["log"] = "\n".join(lines) + "\n"
    record["duration_ms"] = round(elapsed * 1000, 3)
    return payload, function_error


def validate_mode(change):
    """The subset of mode keys in change, type-checked; raise ValueError."""
    if not isinstance(change, dict):
        raise ValueError("expected a JSON object")
    mode = {}
    for key, value in change.items():
        if key not in DEFAULT_MODE:
            raise ValueError(f"unknown key {key!r}; known: {sorted(DEFAULT_MODE)}")
        if key in ("throttle", "drop"):
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false")
        elif key == "delay_ms":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError("delay_ms must be a number >= 0")
        elif key == "retry_after":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 0):
                raise ValueError("retry_after must be an integer >= 0 or null")
        elif key == "status":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 100 <= value <= 599):
                raise ValueError("status must be an HTTP status 100-599 or null")
        mode[key] = value
    return mode


class EmulatorServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, address, config):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.config = config
        self.state = State(config.max_records)
        self.functions = FunctionRegistry(config.functions)
        self.ssl_context = None
        if config.tls_cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(config.tls_cert, config.tls_key)
            self.ssl_context = ctx
        super().__init__(address, EmulatorHandler)

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ssl.SSLError, ConnectionError, socket.timeout, OSError)):
            log(f"connection from {client_address[0]} ended: {exc!r}")
        else:
            log(f"error on connection from {client_address[0]}:\n{traceback.format_exc()}")


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

class Creds:
    def __init__(self, access_key, secret_key, token=None):
        self.access_key, self.secret_key, self.token = access_key, secret_key, token


def parse_args(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    default_functions = os.path.join(os.path.dirname(here), "examples", "functions")
    p = argparse.ArgumentParser(
        description="Local emulator of the AWS Lambda Invoke API with SigV4 verification.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=9000,
                   help="port to bind; 0 picks a free one (default 9000)")
    p.add_argument("--port-file", help="write the bound port to this file once listening")
    p.add_argument("--functions", action="append", metavar="DIR",
                   help="directory of NAME.py handlers; repeatable, searched in order "
                        f"(default {default_functions})")
    p.add_argument("--credentials", action="append", metavar="AKID:SECRET[:TOKEN]",
                   help="an accepted access key; repeatable (default "
                        "AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY)")
    p.add_argument("--region", help="require this signing region (default: any)")
    p.add_argument("--account-id", default="123456789012",
                   help="account id in ARNs built from bare names")
    p.add_argument("--max-skew", type=int, default=900,
                   help="accepted X-Amz-Date skew in seconds (default 900)")
    p.add_argument("--timeout", type=float, default=900.0,
                   help="function timeout in seconds (default 900, Lambda's maximum)")
    p.add_argument("--memory", type=int, default=128, help="memory_limit_in_mb (default 128)")
    p.add_argument("--idle-timeout", type=float, default=0,
                   help="close connections idle this many seconds (default 0 = never)")
    p.add_argument("--max-records", type=int, default=10000,
                   help="invocation records kept (default 10000)")
    p.add_argument("--tls-cert", help="serve HTTPS with this certificate chain (PEM)")
    p.add_argument("--tls-key", help="private key for --tls-cert (PEM)")
    p.add_argument("--reload", action="store_true",
                   help="accepted for compatibility: handlers are always re-imported "
                        "when their file changes")
    p.add_argument("--quiet", action="store_true", help="no per-invocation log lines")
    args = p.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")
    args.functions = [os.path.abspath(d) for d in (args.functions or [default_functions])]
    for d in args.functions:
        if not os.path.isdir(d):
            p.error(f"--functions {d}: not a directory")
    creds = {}
    for spec in args.credentials or ["AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"]:
        parts = spec.split(":", 2)
        if len(parts) < 2 or not parts[0] or not parts[1]:
            p.error(f"--credentials {spec!r}: expected AKID:SECRET[:TOKEN]")
        creds[parts[0]] = Creds(parts[0], parts[1], parts[2] if len(parts) == 3 else None)
    args.credentials = creds
    return args


def main(argv=None):
    config = parse_args(sys.argv[1:] if argv is None else argv)
    # Keep __pycache__ out of the functions directories (they are shipped in
    # the dist tarball and may be read-only under make distcheck).
    sys.dont_write_bytecode = True
    try:
        server = EmulatorServer((config.host, config.port), config)
    except OSError as exc:
        log(f"cannot listen on {config.host}:{config.port}: {exc}")
        return 1
    port = server.server_address[1]

    def stop(signum, frame):
        # shutdown() waits for serve_forever() to return, so not from this
        # (the main) thread; it also works if serve_forever() has not started.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if config.port_file:
        tmp = config.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, config.port_file)
    scheme = "https" if config.tls_cert else "http"
    log(f"listening on {scheme}://{config.host}:{port} functions={':'.join(config.functions)} "
        f"access_keys={','.join(sorted(config.credentials))}")
    sys.stdout.write(f"READY port={port}\n")
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
