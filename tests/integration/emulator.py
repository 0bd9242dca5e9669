"""Start the local Lambda emulator for tests, and send it signed Invoke requests.

    emu = start_emulator()                # port 0, --port-file, waits for READY
    resp = invoke(emu, "hello", {"rawPath": "/"})
    emu.stats(); emu.invocations(); emu.set_mode(throttle=True); emu.stop()

Everything here is generic so that daemon fixtures can build on it: the
gateway's config needs emu.endpoint, emu.region and emu.credentials.
Run with Debian's /usr/bin/python3 (botocore).
"""

import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from urllib.parse import quote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EMULATOR = os.path.join(REPO, "tests", "lambda_emulator.py")
FUNCTIONS = os.path.join(REPO, "examples", "functions")
PYTHON = "/usr/bin/python3"

# The access key the emulator accepts unless told otherwise.
ACCESS_KEY = "AKIDLAMBDAGATETEST01"
SECRET_KEY = "lambdagate/test+secret=key0123456789abcd"
REGION = "us-east-1"


class Response:
    """status, headers (lowercase names), body bytes, and .json()."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.headers} {self.body[:200]!r}>"


class Emulator:
    """A running emulator process.  stop() ends it; it is also a context manager."""

    def __init__(self, proc, port, scheme, host, log_path, workdir, credentials):
        self.proc = proc
        self.port = port
        self.scheme = scheme
        self.host = host
        self.log_path = log_path
        self.workdir = workdir
        self.credentials = credentials  # [(akid, secret, token or None)]
        self.region = REGION
        self._final_log = None

    @property
    def endpoint(self):
        return f"{self.scheme}://{self.host}:{self.port}"

    def log_text(self):
        """Everything the emulator wrote to stderr so far (kept after stop())."""
        if self._final_log is not None:
            return self._final_log
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Stop the process (SIGTERM by default); return its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        if self._final_log is None:
            self._final_log = self.log_text()
            shutil.rmtree(self.workdir, ignore_errors=True)
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # --- control API (plain JSON, unsigned) -----------------------------------

    def connection(self, timeout=30):
        if self.scheme == "https":
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=ctx)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def control(self, method, path, body=None):
        """One control request on a fresh connection; returns the decoded JSON."""
        conn = self.connection()
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, "/_emulator/" + path.lstrip("/"), body=data,
                         headers={"Content-Type": "application/json"} if data else {})
            resp = conn.getresponse()
            payload = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{method} /_emulator/{path}: {resp.status} {payload!r}")
            return json.loads(payload)
        finally:
            conn.close()

    def health(self):
        return self.control("GET", "health")

    def stats(self):
        return self.control("GET", "stats")

    def invocations(self, function=None, since=None):
        query = []
        if function is not None:
            query.append("function=" + quote(function, safe=""))
        if since is not None:
            query.append(f"since={since}")
        return self.control("GET", "invocations" + ("?" + "&".join(query) if query else ""))

    def clear(self):
        return self.control("DELETE", "invocations")

    def set_mode(self, **mode):
        return self.control("POST", "mode", mode)

    def reset(self):
        return self.control("POST", "reset")

    def wait_for_record(self, predicate, timeout=10):
        """The first invocation record for which predicate(record) holds, polling."""
        deadline = time.monotonic() + timeout
        while True:
            for record in self.invocations():
                if predicate(record):
                    return record
            if time.monotonic() > deadline:
                raise AssertionError("no matching invocation record within "
                                     f"{timeout}s; records: {self.invocations()!r}")
            time.sleep(0.05)


def start_emulator(functions=None, credentials=None, extra_args=(), tls=None,
                   host="127.0.0.1", timeout=15):
    """Start tests/lambda_emulator.py on a free port and wait until it listens.

    functions: list of directories (default examples/functions);
    credentials: list of (akid, secret, token or None) (default ACCESS_KEY/SECRET_KEY);
    tls: (cert_file, key_file) to serve HTTPS.  Returns an Emulator.
    """
    functions = functions or [FUNCTIONS]
    credentials = credentials or [(ACCESS_KEY, SECRET_KEY, None)]
    workdir = tempfile.mkdtemp(prefix="lambda-emulator-")
    port_file = os.path.join(workdir, "port")
    log_path = os.path.join(workdir, "emulator.log")
    args = [PYTHON, EMULATOR, "--host", host, "--port", "0", "--port-file", port_file]
    for d in functions:
        args += ["--functions", str(d)]
    for akid, secret, token in credentials:
        args += ["--credentials", f"{akid}:{secret}" + (f":{token}" if token else "")]
    if tls:
        args += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    args += list(extra_args)
    log_file = open(log_path, "w")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log_file,
                            stdin=subprocess.DEVNULL, text=True)
    log_file.close()
    deadline = time.monotonic() + timeout
    while not os.path.exists(port_file):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            proc.stdout.close()
            with open(log_path) as f:
                text = f.read()
            shutil.rmtree(workdir, ignore_errors=True)
            raise RuntimeError(f"emulator did not start (exit {proc.returncode}): {text}")
        time.sleep(0.02)
    with open(port_file) as f:
        port = int(f.read())
    ready = proc.stdout.readline()
    if ready.strip() != f"READY port={port}":
        proc.kill()
        raise RuntimeError(f"unexpected READY line {ready!r}")
    return Emulator(proc, port, "https" if tls else "http", host, log_path, workdir,
                    credentials)


# --------------------------------------------------------------------------
# Signed requests
# --------------------------------------------------------------------------

def invoke_path(function, qualifier=None, encode=True):
    """/2015-03-31/functions/{function}/invocations, the name encoded once as the gateway does."""
    name = quote(function, safe="") if encode else function
    path = f"/2015-03-31/functions/{name}/invocations"
    if qualifier is not None:
        path += "?Qualifier=" + quote(qualifier, safe="")
    return path


def sign(method, url, body, headers=None, access_key=ACCESS_KEY, secret_key=SECRET_KEY,
         token=None, region=REGION, service="lambda", timestamp=None, auth_class=SigV4Auth):
    """Sign a request with botocore; returns the headers to send (a dict).

    timestamp ("YYYYMMDDTHHMMSSZ") signs as of that time instead of now.
    """
    req = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    auth = auth_class(Credentials(access_key, secret_key, token), service, region)
    if timestamp is None:
        auth.add_auth(req)
    else:
        # add_auth() always uses the current time; this is the same sequence.
        req.context["timestamp"] = timestamp
        auth._modify_request_before_signing(req)
        canonical = auth.canonical_request(req)
        signature = auth.signature(auth.string_to_sign(req, canonical), req)
        auth._inject_signature_to_request(req, signature)
    return dict(req.headers.items())


def send(emu_or_conn, method, path, body=b"", headers=None):
    """Send one request; emu_or_conn is an Emulator (fresh connection) or an open connection."""
    if isinstance(emu_or_conn, Emulator):
        conn, own = emu_or_conn.connection(), True
    else:
        conn, own = emu_or_conn, False
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        if own:
            conn.close()


def invoke(emu, function, payload=None, *, body=None, qualifier=None, invocation_type=None,
           encode=True, conn=None, tamper=None, extra_headers=None, **sign_args):
    """A signed Invoke of function with payload (JSON-encoded) or raw body bytes.

    tamper(body) -> bytes changes the body after signing.  sign_args go to sign()
    (access_key, secret_key, token, region, service, timestamp, auth_class).
    """
    if body is None:
        body = json.dumps({} if payload is None else payload).encode()
    path = invoke_path(function, qualifier, encode)
    headers = {"Content-Type": "application/json"}
    if invocation_type:
        headers["X-Amz-Invocation-Type"] = invocation_type
    headers.update(extra_headers or {})
    signed = sign("POST", f"{emu.endpoint}{path}", body, headers, **sign_args)
    if tamper is not None:
        body = tamper(body)
    return send(conn or emu, "POST", path, body, signed)
