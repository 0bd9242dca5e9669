"""A local HTTPS server that serves a JSON Web Key Set, for the auth tests.

    srv = JwksServer(cert_file, key_file, jwks={"keys": [...]})
    srv.url                      # https://127.0.0.1:PORT/.well-known/jwks.json
    srv.set_jwks(doc)            # what the next GET returns
    srv.set_mode("status", 500)  # answer 500; "close": close without answering;
                                 # "hang": answer after delay_s; "ok": normal
    srv.max_age = 1              # send Cache-Control: max-age=1 (None: no header)
    srv.fetches, srv.fetch_times # GETs received (any path, any mode)
    srv.stop(); srv.start()      # stop listening / listen again on the same port

make_ca_and_leaf(directory, names) makes a fresh CA and a server certificate
for names signed by it (for "a CA the daemon does not trust" and "a
certificate for another host name" cases).
Run with Debian's /usr/bin/python3 (python3-cryptography).
"""

import datetime
import http.server
import ipaddress
import json
import os
import socket
import socketserver
import ssl
import threading
import time


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "jwks-test"

    def log_message(self, fmt, *args):  # quiet
        pass

    def do_GET(self):
        owner = self.server.owner
        with owner.lock:
            owner.fetches += 1
            owner.fetch_times.append(time.monotonic())
            owner.paths.append(self.path)
            mode, status, delay = owner.mode, owner.status, owner.delay_s
            body = json.dumps(owner.jwks).encode()
            max_age = owner.max_age
        if mode == "close":
            self.close_connection = True
            return
        if mode == "hang":
            time.sleep(delay)
        code = status if mode == "status" else 200
        if code != 200:
            body = b'{"error":"unavailable"}'
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if max_age is not None and code == 200:
            self.send_header("Cache-Control", f"max-age={max_age}")
        self.end_headers()
        self.wfile.write(body)


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, owner):
        self.owner = owner
        super().__init__(addr, _Handler)

    def finish_request(self, request, client_address):
        # The TLS handshake runs on the request's thread, so that a client
        # that stalls or refuses the certificate blocks nobody else.
        with self.owner.lock:
            self.owner.connections += 1
        request.settimeout(10)
        try:
            tls = self.owner.ssl_ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            with self.owner.lock:
                self.owner.tls_failures += 1
            return
        try:
            _Handler(tls, client_address, self)
        except (ssl.SSLError, OSError):
            pass
        finally:
            try:
                tls.close()
            except OSError:
                pass


class JwksServer:
    def __init__(self, cert_file, key_file, jwks=None, host="127.0.0.1", port=0,
                 max_age=None):
        self.lock = threading.Lock()
        self.jwks = jwks if jwks is not None else {"keys": []}
        self.mode = "ok"
        self.status = 200
        self.delay_s = 0.0
        self.max_age = max_age
        self.fetches = 0
        self.fetch_times = []
        self.paths = []
        self.connections = 0
        self.tls_failures = 0
        self.host = host
        self.port = port
        self.ssl_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ssl_ctx.load_cert_chain(cert_file, key_file)
        self._server = None
        self._thread = None
        self.start()

    @property
    def url(self):
        return f"https://{self.host}:{self.port}/.well-known/jwks.json"

    def start(self):
        assert self._server is None
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self):
        """Stop listening: connections to the port are refused until start()."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self._server = None

    def set_jwks(self, doc):
        with self.lock:
            self.jwks = doc

    def set_mode(self, mode, status=500, delay_s=3.0):
        assert mode in ("ok", "status", "close", "hang")
        with self.lock:
            self.mode = mode
            self.status = status
            self.delay_s = delay_s

    def fetch_count(self):
        with self.lock:
            return self.fetches

    def last_fetch(self):
        with self.lock:
            return self.fetch_times[-1] if self.fetch_times else None

    def wait_fetches(self, n, timeout=5.0):
        """Wait until at least n GETs arrived; returns the count."""
        deadline = time.monotonic() + timeout
        while self.fetch_count() < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.fetch_count()


def make_ca_and_leaf(directory, names=("localhost", "127.0.0.1", "::1"), cn="unrelated CA"):
    """A new CA and a server certificate for names signed by it; returns
    {"ca", "cert", "key"} file paths in directory."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    os.makedirs(directory, exist_ok=True)
    now = datetime.datetime.utcnow()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    sans = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {"ca": os.path.join(directory, "ca.pem"),
             "cert": os.path.join(directory, "server.pem"),
             "key": os.path.join(directory, "server.key")}
    with open(paths["ca"], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["cert"], "wb") as f:
        f.write(leaf.public_bytes(serialization.Encoding.PEM))
    with open(paths["key"], "wb") as f:
        f.write(leaf_key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return paths


def free_tcp_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
