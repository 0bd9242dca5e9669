"""lambdagate's AWS credential chain, end to end (CONTRACT section 3, lambda.credentials).

The gateway's config has no lambda.credentials, so the daemon must find
them as the AWS SDKs do: environment variables, then the shared credentials
file (AWS_PROFILE), then the container endpoint, then IMDSv2. Fakes of the
container and IMDS endpoints run in the test; the emulator accepts only the
keys each source hands out and records which one signed each call.

gateway.start_gateway() runs the daemon with clean_aws_env(), which drops
every AWS_* variable, so the variables a test wants are added by wrapping
clean_aws_env for the duration of the test.
Run: /usr/bin/python3 -m pytest -q tests/integration/test_credentials.py
"""

import datetime
import http.server
import json
import os
import socket
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gateway as gateway_module  # noqa: E402
from emulator import start_emulator  # noqa: E402
from gateway import base_config, start_gateway  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FUNCTION_DIRS = [os.path.join(REPO, "examples", "functions")]
INTERNAL_ERROR = b'{"message":"Internal server error"}'

# (access key id, secret, session token) per source; the emulator accepts these.
ENV_KEY = ("AKIDENVTEST000000001", "env/secret+key=Aa0000000000000000000", None)
ENV_TOKEN_KEY = ("ASIAENVTEST000000002", "env/token/secret=Bb11111111111111111",
                 "EnvSessionToken//IQoJb3JpZ2luX2VjEXAMPLE+abc==")
FILE_KEY = ("AKIDFILETEST00000003", "file/secret+key=Cc2222222222222222222", None)
FILE_TOKEN_KEY = ("ASIAFILETEST00000006", "file/token/secret=Ff55555555555555555",
                  "FileSessionToken//EXAMPLE+fff==")
CONTAINER_KEY = ("ASIACONTAINER0000004", "container/secret=Dd333333333333333333",
                 "ContainerSessionToken//EXAMPLE+ddd==")
IMDS_KEY = ("ASIAIMDSTEST00000005", "imds/secret=Ee4444444444444444444444",
            "ImdsSessionToken//EXAMPLE+eee==")
ALL_KEYS = [ENV_KEY, ENV_TOKEN_KEY, FILE_KEY, FILE_TOKEN_KEY, CONTAINER_KEY, IMDS_KEY]

# Wrong keys that the emulator does not accept: using them fails loudly.
WRONG_KEY = ("AKIDWRONGDEFAULT0007", "wrong/default/secret=Zz99999999999999", None)
CONTAINER_AUTH = "Bearer container-auth-token-EXAMPLE-0123456789"
IMDS_SESSION = "imds-session-token-EXAMPLE-AQAEAexample=="

SECRETS = ([k[1] for k in ALL_KEYS + [WRONG_KEY]] + [k[2] for k in ALL_KEYS if k[2]]
           + [CONTAINER_AUTH.split(" ", 1)[1], IMDS_SESSION])

ROUTES = [{"method": "GET", "path": "/hello", "function": "hello"}]


@pytest.fixture(scope="module")
def cred_emu():
    e = start_emulator(functions=FUNCTION_DIRS, credentials=ALL_KEYS)
    yield e
    e.stop()


@pytest.fixture
def cemu(cred_emu):
    cred_emu.reset()
    yield cred_emu
    cred_emu.reset()


def chain_config(emu, timeout_ms=5000):
    """A config for emu with no lambda.credentials: the chain decides."""
    config = base_config(emu, ROUTES, throttle={"default": None}, limits={"per_ip": None})
    del config["lambda"]["credentials"]
    config["lambda"]["timeout_ms"] = timeout_ms
    return config


@pytest.fixture
def start_with_env(gateways, monkeypatch):
    """start(config, aws_env, unset=()) runs a gateway whose environment is
    the clean one plus aws_env, less the variables named in unset."""
    original = gateway_module.clean_aws_env

    def start(config, aws_env, unset=()):
        def patched(env=None):
            result = original(env)
            for name in unset:
                result.pop(name, None)
            result.update(aws_env)
            return result

        monkeypatch.setattr(gateway_module, "clean_aws_env", patched)
        try:
            return gateways.start(config)
        finally:
            monkeypatch.setattr(gateway_module, "clean_aws_env", original)

    return start


def assert_no_secrets(gw):
    log = gw.log_text()
    for secret in SECRETS:
        assert secret not in log, f"a secret is in the gateway's stderr:\n{log}"


def assert_source_logged(gw, source, key):
    """The clear stderr line saying where the credentials came from."""
    line = f"AWS credentials obtained source={source} access_key_id={key[0]}"
    assert line in gw.log_text(), gw.log_text()


def expiration(seconds=3600):
    when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def invoked_with(emu, key):
    (record,) = emu.invocations()
    assert record["signature_ok"] is True, record
    assert record["access_key"] == key[0]
    if key[2]:
        assert record["headers"]["x-amz-security-token"] == key[2]
    else:
        assert "x-amz-security-token" not in record["headers"]
    return record


# --------------------------------------------------------------------------
# Fake credential endpoints
# --------------------------------------------------------------------------

class FakeServer:
    """A small HTTP server in a thread; handler(req) -> (status, body, headers).
    Every request is recorded as (method, path, headers with lowercase names)."""

    def __init__(self, handler):
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                entry = (self.command, self.path,
                         {k.lower(): v for k, v in self.headers.items()})
                outer.requests.append(entry)
                status, body, headers = handler(entry)
                data = body.encode() if isinstance(body, str) else body
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = _any

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def container_endpoint():
    def handler(entry):
        method, path, headers = entry
        if path != "/creds":
            return 404, "not found", None
        if headers.get("authorization") != CONTAINER_AUTH:
            return 401, '{"message":"bad token"}', {"Content-Type": "application/json"}
        body = {"AccessKeyId": CONTAINER_KEY[0], "SecretAccessKey": CONTAINER_KEY[1],
                "Token": CONTAINER_KEY[2], "Expiration": expiration(),
                "RoleArn": "arn:aws:iam::123456789012:role/lg-task"}
        return 200, json.dumps(body), {"Content-Type": "application/json"}

    s = FakeServer(handler)
    yield s
    s.stop()


@pytest.fixture
def imds_endpoint():
    role = "lg-instance-role"

    def handler(entry):
        method, path, headers = entry
        if path == "/latest/api/token":
            if method != "PUT" or "x-aws-ec2-metadata-token-ttl-seconds" not in headers:
                return 400, "", None
            return 200, IMDS_SESSION, {"X-aws-ec2-metadata-token-ttl-seconds":
                                       headers["x-aws-ec2-metadata-token-ttl-seconds"]}
        if headers.get("x-aws-ec2-metadata-token") != IMDS_SESSION:
            return 401, "", None
        if path == "/latest/meta-data/iam/security-credentials/":
            return 200, role, {"Content-Type": "text/plain"}
        if path == f"/latest/meta-data/iam/security-credentials/{role}":
            body = {"Code": "Success", "LastUpdated": expiration(-60), "Type": "AWS-HMAC",
                    "AccessKeyId": IMDS_KEY[0], "SecretAccessKey": IMDS_KEY[1],
                    "Token": IMDS_KEY[2], "Expiration": expiration()}
            return 200, json.dumps(body), {"Content-Type": "text/plain"}
        return 404, "", None

    s = FakeServer(handler)
    s.role = role
    yield s
    s.stop()


# --------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------

def test_environment_credentials(cemu, start_with_env):
    gw = start_with_env(chain_config(cemu), {"AWS_ACCESS_KEY_ID": ENV_KEY[0],
                                             "AWS_SECRET_ACCESS_KEY": ENV_KEY[1]})
    r = gw.request("GET", "/hello")
    assert r.status == 200, (r, gw.log_text())
    invoked_with(cemu, ENV_KEY)
    assert_source_logged(gw, "environment", ENV_KEY)
    assert_no_secrets(gw)


def test_environment_credentials_with_session_token(cemu, start_with_env):
    gw = start_with_env(chain_config(cemu), {"AWS_ACCESS_KEY_ID": ENV_TOKEN_KEY[0],
                                             "AWS_SECRET_ACCESS_KEY": ENV_TOKEN_KEY[1],
                                             "AWS_SESSION_TOKEN": ENV_TOKEN_KEY[2]})
    r = gw.request("GET", "/hello")
    assert r.status == 200, (r, gw.log_text())
    invoked_with(cemu, ENV_TOKEN_KEY)
    assert_no_secrets(gw)


def test_environment_beats_shared_file(cemu, start_with_env, tmp_path):
    path = tmp_path / "credentials"
    path.write_text(f"[default]\naws_access_key_id = {FILE_KEY[0]}\n"
                    f"aws_secret_access_key = {FILE_KEY[1]}\n")
    gw = start_with_env(chain_config(cemu), {"AWS_ACCESS_KEY_ID": ENV_KEY[0],
                                             "AWS_SECRET_ACCESS_KEY": ENV_KEY[1],
                                             "AWS_SHARED_CREDENTIALS_FILE": str(path)})
    assert gw.request("GET", "/hello").status == 200
    invoked_with(cemu, ENV_KEY)


def test_shared_file_named_profile(cemu, start_with_env, tmp_path):
    path = tmp_path / "credentials"
    path.write_text(
        "# lambdagate test\n"
        "[default]\n"
        f"aws_access_key_id = {WRONG_KEY[0]}\n"
        f"aws_secret_access_key = {WRONG_KEY[1]}\n"
        "\n"
        "[other]\n"
        f"aws_access_key_id={FILE_KEY[0]}\n"
        f"aws_secret_access_key   =   {FILE_KEY[1]}\n"
        "region = us-west-2\n"
        "\n"
        "[third]\n"
        f"aws_access_key_id = {WRONG_KEY[0]}\n"
        f"aws_secret_access_key = {WRONG_KEY[1]}\n")
    gw = start_with_env(chain_config(cemu), {"AWS_SHARED_CREDENTIALS_FILE": str(path),
                                             "AWS_PROFILE": "other"})
    r = gw.request("GET", "/hello")
    assert r.status == 200, (r, gw.log_text())
    invoked_with(cemu, FILE_KEY)
    assert_source_logged(gw, "shared-file", FILE_KEY)
    assert_no_secrets(gw)


def test_shared_file_default_profile_with_token(cemu, start_with_env, tmp_path):
    path = tmp_path / "credentials"
    path.write_text("[default]\n"
                    f"aws_access_key_id = {FILE_TOKEN_KEY[0]}\n"
                    f"aws_secret_access_key = {FILE_TOKEN_KEY[1]}\n"
                    f"aws_session_token = {FILE_TOKEN_KEY[2]}\n")
    gw = start_with_env(chain_config(cemu), {"AWS_SHARED_CREDENTIALS_FILE": str(path)})
    r = gw.request("GET", "/hello")
    assert r.status == 200, (r, gw.log_text())
    invoked_with(cemu, FILE_TOKEN_KEY)
    assert_no_secrets(gw)


def test_shared_file_in_home(cemu, start_with_env, tmp_path):
    """Without AWS_SHARED_CREDENTIALS_FILE the file is $HOME/.aws/credentials."""
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text(
        f"[default]\naws_access_key_id = {FILE_KEY[0]}\naws_secret_access_key = {FILE_KEY[1]}\n")
    gw = start_with_env(chain_config(cemu), {"HOME": str(tmp_path)},
                        unset=["AWS_SHARED_CREDENTIALS_FILE"])
    r = gw.request("GET", "/hello")
    assert r.status == 200, (r, gw.log_text())
    invoked_with(cemu, FILE_KEY)
    assert_no_secrets(gw)


def test_container_credentials(cemu, start_with_env, container_endpoint):
    gw = start_with_env(chain_config(cemu), {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{container_endpoint.base}/creds",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN": CONTAINER_AUTH})
    r = gw.request("GET", "/hello")
    assert r.status == 200, (r, gw.log_text())
    invoked_with(cemu, CONTAINER_KEY)
    assert_source_logged(gw, "container", CONTAINER_KEY)
    assert container_endpoint.requests, "the container endpoint was not asked"
    method, path, headers = container_endpoint.requests[0]
    assert (method, path) == ("GET", "/creds")
    assert headers["authorization"] == CONTAINER_AUTH
    # Credentials valid for an hour are fetched once, not per request.
    for _ in range(3):
        assert gw.request("GET", "/hello").status == 200
    assert len(container_endpoint.requests) == 1
    assert_no_secrets(gw)


def test_container_credentials_token_file(cemu, start_with_env, container_endpoint, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(CONTAINER_AUTH + "\n")
    gw = start_with_env(chain_config(cemu), {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{container_endpoint.base}/creds",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token_file),
        "AWS_CONTAINER_AUTHORIZATION_TOKEN": "Bearer ignored-when-a-file-is-given"})
    r = gw.request("GET", "/hello")
    assert r.status == 200, (r, gw.log_text())
    invoked_with(cemu, CONTAINER_KEY)
    assert container_endpoint.requests[0][2]["authorization"] == CONTAINER_AUTH
    assert_no_secrets(gw)


def test_container_endpoint_refusing_is_502(cemu, start_with_env, container_endpoint):
    gw = start_with_env(chain_config(cemu, timeout_ms=1500), {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{container_endpoint.base}/creds",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN": "Bearer wrong"})
    r = gw.request("GET", "/hello")
    assert r.status == 502, r
    assert r.body == INTERNAL_ERROR
    assert cemu.invocations() == []
    assert "credentials" in gw.log_text().lower()
    assert "Bearer wrong" not in gw.log_text()


def test_imds_v2_credentials(cemu, start_with_env, imds_endpoint):
    gw = start_with_env(chain_config(cemu), {
        "AWS_EC2_METADATA_DISABLED": "false",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds_endpoint.base})
    r = gw.request("GET", "/hello")
    assert r.status == 200, (r, gw.log_text())
    invoked_with(cemu, IMDS_KEY)
    assert_source_logged(gw, "imds", IMDS_KEY)
    steps = [(m, p) for m, p, _ in imds_endpoint.requests]
    assert steps[:3] == [
        ("PUT", "/latest/api/token"),
        ("GET", "/latest/meta-data/iam/security-credentials/"),
        ("GET", f"/latest/meta-data/iam/security-credentials/{imds_endpoint.role}"),
    ], steps
    assert_no_secrets(gw)


def test_imds_unreachable_is_502(cemu, start_with_env):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    gw = start_with_env(chain_config(cemu, timeout_ms=1000), {
        "AWS_EC2_METADATA_DISABLED": "false",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": f"http://127.0.0.1:{closed}"})
    started = time.monotonic()
    r = gw.request("GET", "/hello")
    elapsed = time.monotonic() - started
    assert r.status == 502, r
    assert r.body == INTERNAL_ERROR
    assert elapsed < 2.5, elapsed
    assert cemu.invocations() == []
    assert "AWS credentials fetch failed source=imds" in gw.log_text(), gw.log_text()


def test_no_credentials_is_502(cemu):
    # Started and checked here rather than by the gateways fixture, so that a
    # crash fails the test itself. (It found a use-after-free in lambda.c's
    # deferred-failure path: the failure's detail pointed into the freed call.)
    gw = start_gateway(chain_config(cemu, timeout_ms=1500))
    try:
        started = time.monotonic()
        r = gw.request("GET", "/hello")
        elapsed = time.monotonic() - started
        assert r.status == 502, r
        assert r.body == INTERNAL_ERROR
        assert elapsed < 2.5, elapsed
        r = gw.request("GET", "/hello")  # and again: nothing changed
        assert r.status == 502, r
    finally:
        gw.stop(check=False)
    gw.check_clean()
    assert cemu.invocations() == []
    log = gw.log_text()
    assert "no AWS credentials" in log, log
    assert_no_secrets(gw)


def test_half_set_environment_refuses_to_start(cemu, start_with_env):
    with pytest.raises(RuntimeError) as info:
        start_with_env(chain_config(cemu), {"AWS_ACCESS_KEY_ID": ENV_KEY[0]})
    assert "AWS_SECRET_ACCESS_KEY" in str(info.value)
