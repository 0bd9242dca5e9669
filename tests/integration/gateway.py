"""Start the real lambdagate daemon for tests and talk to it over real TCP/TLS.

    gw = start_gateway(config_dict)        # waits until every listener accepts
    r = gw.request("GET", "/hello")        # -> Response(status, headers, body)
    gw.stop()                              # SIGTERM; asserts exit 0, no sanitizer report

The daemon binary comes from $LG_BINARY (set by `make check`), else
build-test/src/lambdagate or build/src/lambdagate in the repository.
Run with Debian's /usr/bin/python3.
"""

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Sanitizer reports that fail a test when they appear in the daemon's stderr.
SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "SUMMARY: UndefinedBehaviorSanitizer",
)


def binary():
    env = os.environ.get("LG_BINARY")
    if env:
        return env
    for d in ("build-test", "build"):
        p = os.path.join(REPO, d, "src", "lambdagate")
        if os.path.exists(p):
            return p
    raise RuntimeError("lambdagate binary not found: set LG_BINARY or build first")


def free_port(family=socket.AF_INET, host="127.0.0.1"):
    """A port that was free a moment ago on host."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Response:
    """status, reason, headers (list of (name, value) as received), body bytes."""

    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def has(self, name):
        return self.header(name) is not None

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.headers} {self.body[:300]!r}>"


def poll(fn, timeout=5.0, interval=0.05):
    """Call fn() until it returns a true value or timeout; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


def read_response(conn_response):
    body = conn_response.read()
    return Response(conn_response.status, conn_response.reason,
                    list(conn_response.getheaders()), body)


def sanitizer_env(env=None):
    env = dict(env if env is not None else os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=23:"
                   "detect_stack_use_after_return=1:strict_string_checks=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    return env


def clean_aws_env(env=None):
    """The environment with no AWS settings of the machine running the tests,
    and IMDS off, so that only what a test sets is seen."""
    env = dict(env if env is not None else os.environ)
    for k in list(env):
        if k.startswith("AWS_"):
            del env[k]
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env["AWS_SHARED_CREDENTIALS_FILE"] = "/nonexistent/lambdagate-test-credentials"
    env["HOME"] = "/nonexistent-home"
    return env


def daemon_env(extra=None):
    """The daemon's environment: the runner's without AWS settings (see
    clean_aws_env), plus what the test gives in extra (AWS_* included)."""
    env = clean_aws_env()
    if extra:
        env.update(extra)
    return env


class Gateway:
    def __init__(self, proc, workdir, config_path, config, stderr_path, access_log_path):
        self.proc = proc
        self.workdir = workdir
        self.config_path = config_path
        self.config = config
        self.stderr_path = stderr_path
        self.access_log_path = access_log_path
        self.listen = [entry["address"] for entry in config["listen"]]
        self.stopped = False
        self.returncode = None

    # -- addresses -------------------------------------------------------
    def address(self, index=0):
        text = self.listen[index]
        host, _, port = text.rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def port(self):
        return self.address(0)[1]

    # -- requests --------------------------------------------------------
    def connection(self, index=0, timeout=30, tls_context=None, server_hostname=None):
        host, port = self.address(index)
        if tls_context is not None:
            return http.client.HTTPSConnection(host, port, timeout=timeout,
                                               context=tls_context)
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, index=0, timeout=30,
                tls_context=None, conn=None):
        own = conn is None
        if own:
            conn = self.connection(index, timeout, tls_context)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            return read_response(conn.getresponse())
        finally:
            if own:
                conn.close()

    def raw(self, data, index=0, timeout=10, read_until_close=True):
        """Send raw bytes on a new TCP connection; return everything read."""
        host, port = self.address(index)
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(data)
            chunks = []
            try:
                while True:
                    b = s.recv(65536)
                    if not b:
                        break
                    chunks.append(b)
                    if not read_until_close:
                        break
            except socket.timeout:
                pass
            return b"".join(chunks)

    # -- logs ------------------------------------------------------------
    def log_text(self):
        with open(self.stderr_path, "r", errors="replace") as f:
            return f.read()

    def access_log(self):
        if not self.access_log_path or not os.path.exists(self.access_log_path):
            return []
        with open(self.access_log_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def wait_for_log(self, text, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_text():
                return True
            time.sleep(0.05)
        return False

    # -- lifecycle -------------------------------------------------------
    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=40, check=True):
        if self.stopped:
            return self.returncode
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.returncode = self.proc.wait()
            if check:
                raise AssertionError(f"lambdagate did not stop within {timeout}s:\n"
                                     + self.log_text()[-4000:])
        if check:
            self.check_clean()
        return self.returncode

    def check_clean(self):
        log = self.log_text()
        for marker in SANITIZER_MARKERS:
            assert marker not in log, f"sanitizer report in lambdagate's stderr:\n{log[-8000:]}"
        assert self.returncode == 0, \
            f"lambdagate exited with {self.returncode}:\n{log[-4000:]}"


def start_gateway(config, env=None, workdir=None, timeout=15, access_log=True, args=()):
    """Write config to a file and run lambdagate on it until its listeners accept.
    env: variables added to the daemon's clean environment (see daemon_env)."""
    workdir = workdir or tempfile.mkdtemp(prefix="lambdagate-test-")
    config = dict(config)
    access_log_path = None
    if access_log and "access_log" not in config:
        access_log_path = os.path.join(workdir, "access.log")
        config["access_log"] = access_log_path
    elif isinstance(config.get("access_log"), str) and config["access_log"] not in ("-", "off"):
        access_log_path = config["access_log"]
    config_path = os.path.join(workdir, "lambdagate.json")
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)
    stderr_path = os.path.join(workdir, "stderr.log")
    stderr = open(stderr_path, "w")
    proc = subprocess.Popen([binary(), "-c", config_path, *args], stdout=subprocess.DEVNULL,
                            stderr=stderr, env=sanitizer_env(daemon_env(env)),
                            cwd=workdir)
    stderr.close()
    gw = Gateway(proc, workdir, config_path, config, stderr_path, access_log_path)
    deadline = time.monotonic() + timeout
    pending = list(range(len(gw.listen)))
    while pending:
        if proc.poll() is not None:
            gw.stopped = True
            raise RuntimeError(f"lambdagate exited with {proc.returncode}:\n{gw.log_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            gw.stopped = True
            raise RuntimeError("lambdagate did not start listening:\n" + gw.log_text())
        i = pending[0]
        host, port = gw.address(i)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                s.connect((host, port))
            pending.pop(0)
        except OSError:
            time.sleep(0.05)
    return gw


def base_config(emu, routes, port=None, **top):
    """A config for one plain HTTP listener in front of the emulator emu."""
    access_key, secret_key, token = emu.credentials[0]
    creds = {"access_key_id": access_key, "secret_access_key": secret_key}
    if token:
        creds["session_token"] = token
    config = {
        "listen": [{"address": f"127.0.0.1:{port or free_port()}"}],
        "workers": 1,
        "shutdown_timeout_ms": 5000,
        "lambda": {
            "region": emu.region,
            "endpoint": emu.endpoint,
            "credentials": creds,
            "timeout_ms": 10000,
        },
        "routes": routes,
        # Tests that are not about throttling must not be throttled by the
        # contract's defaults (10/s per identity, 100/s per IP).
        "throttle": {"default": None},
        "limits": {"per_ip": None},
    }
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            merged = dict(config[key])
            merged.update(value)
            config[key] = merged
        else:
            config[key] = value
    return config


def tls_client_context(cafile=None):
    ctx = ssl.create_default_context(cafile=cafile)
    return ctx
