"""Authentication through the real daemon (issue 3; CONTRACT sections 3, 4, 5, 7, 8).

JWTs are minted by an independent library (Debian's python3-jwt, PyJWT) with
keys made by python3-cryptography; hostile tokens are assembled by hand from
the same pieces. Key sets come from a jwks_file or from a local HTTPS JWKS
server (jwks_server.py) whose certificate is signed by the test CA. API keys
come from a keys file of SHA-256 digests.

The refetch of a jwks_url on an unknown kid is rate-limited to once per 30 s,
counted from the start of the previous fetch (include/lambdagate/jwks.h), the
initial one included. The tests that need a refetch therefore use gateways
started together when the module starts (url_gws) and wait out what is left
of those 30 s, all at once, near the end of the module.
Run: /usr/bin/python3 -m pytest -q tests/integration/test_auth.py
"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gateway import (SANITIZER_MARKERS, base_config, binary, clean_aws_env,  # noqa: E402
                     free_port, poll, sanitizer_env, start_gateway)
from jwks_server import JwksServer, make_ca_and_leaf  # noqa: E402

ISSUER = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_TESTPOOL"
AUDIENCE = ["app-client-1", "app-client-2"]
LEEWAY = 60
REFETCH_INTERVAL_S = 30

ROUTES = [
    {"method": "GET", "path": "/open", "function": "echo"},
    {"method": "ANY", "path": "/jwt", "function": "echo", "auth": "jwt"},
    {"method": "ANY", "path": "/v1/jwt", "function": "echo", "auth": "jwt",
     "payload_format": "1.0"},
    {"method": "GET", "path": "/scoped", "function": "echo", "auth": "jwt",
     "scopes": ["read:users", "admin"]},
    {"method": "GET", "path": "/key", "function": "echo", "auth": "api_key"},
    {"method": "GET", "path": "/v1/key", "function": "echo", "auth": "api_key",
     "payload_format": "1.0"},
]

JWT_ROUTES = ROUTES[:4]
KEY_ROUTES = ROUTES[:1] + ROUTES[4:]

ALGS = jwt.algorithms.get_default_algorithms()
DROP = object()  # a claim value meaning "leave this claim out"

# Every token and API key sent to a gateway of this module: none may appear in
# any gateway's access log or diagnostics (checked by the last test).
SENT = []
MODULE_GATEWAYS = []


# --------------------------------------------------------------------------
# Keys, key sets, tokens
# --------------------------------------------------------------------------

def b64u(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def compact(obj):
    return json.dumps(obj, separators=(",", ":"))


def jwk(public_key, kid, **extra):
    if isinstance(public_key, rsa.RSAPublicKey):
        d = json.loads(RSAAlgorithm.to_jwk(public_key))
    else:
        # PyJWT 2.6 writes EC coordinates without leading zeros; RFC 7518
        # section 6.2.1.2 wants the curve's full size (66 bytes for P-521).
        d = json.loads(ECAlgorithm.to_jwk(public_key))
        size = (public_key.curve.key_size + 7) // 8
        nums = public_key.public_numbers()
        d["x"] = b64u(nums.x.to_bytes(size, "big"))
        d["y"] = b64u(nums.y.to_bytes(size, "big"))
    if kid is not None:
        d["kid"] = kid
    d.update(extra)
    return d


class Keys:
    """Key material for the module, made once."""

    def __init__(self):
        self.rsa = rsa.generate_private_key(65537, 2048)
        self.rsa2 = rsa.generate_private_key(65537, 2048)
        self.attacker = rsa.generate_private_key(65537, 2048)  # in no key set
        self.ec256 = ec.generate_private_key(ec.SECP256R1())
        self.ec384 = ec.generate_private_key(ec.SECP384R1())
        self.ec521 = ec.generate_private_key(ec.SECP521R1())
        self.hmac_secret = os.urandom(32)
        self.jwks = {"keys": [
            jwk(self.rsa.public_key(), "rsa-1", use="sig"),
            jwk(self.rsa2.public_key(), "rsa-rs256", alg="RS256", use="sig"),
            jwk(self.rsa2.public_key(), "rsa-ps256", alg="PS256"),
            jwk(self.rsa.public_key(), "rsa-enc", use="enc"),
            jwk(self.ec256.public_key(), "ec-256", use="sig"),
            jwk(self.ec384.public_key(), "ec-384"),
            jwk(self.ec521.public_key(), "ec-521", alg="ES512"),
            {"kty": "oct", "kid": "hmac-1", "alg": "HS256", "k": b64u(self.hmac_secret)},
        ]}
        # The key sets a jwks_url serves (same key material, other kids).
        self.url_a = jwk(self.rsa.public_key(), "url-a", alg="RS256", use="sig")
        self.url_b = jwk(self.rsa2.public_key(), "url-b", alg="RS256", use="sig")
        self.url_ec = jwk(self.ec256.public_key(), "url-ec", use="sig")

    def default_key(self, alg):
        if alg.startswith(("RS", "PS")):
            return self.rsa
        return {"ES256": self.ec256, "ES384": self.ec384, "ES512": self.ec521}[alg]


def claims(**over):
    now = int(time.time())
    c = {"iss": ISSUER, "aud": AUDIENCE[0], "sub": "user-1", "iat": now, "exp": now + 600}
    for k, v in over.items():
        k = k.replace("__", ":")
        if v is DROP:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def mint(keys, alg="RS256", kid="rsa-1", key=None, headers=None, **over):
    """A token signed by PyJWT."""
    h = dict(headers or {})
    if kid is not None:
        h["kid"] = kid
    return jwt.encode(claims(**over), key or keys.default_key(alg), algorithm=alg,
                      headers=h or None)


def forge(header, payload, alg=None, key=None, sig=None):
    """A token built by hand: header and payload are dicts (JSON-encoded
    compactly) or str/bytes used as the JSON text; signed with PyJWT's
    algorithm object for alg and key unless sig (bytes) is given."""
    h = header if isinstance(header, (str, bytes)) else compact(header)
    p = payload if isinstance(payload, (str, bytes)) else compact(payload)
    signing_input = f"{b64u(h)}.{b64u(p)}"
    if sig is None:
        sig = ALGS[alg].sign(signing_input.encode(), key)
    return f"{signing_input}.{b64u(sig)}"


def parts(token):
    return token.split(".")


def with_signature(token, sig):
    h, p, _ = parts(token)
    return f"{h}.{p}.{b64u(sig)}"


def rsa_pem(keys):
    return keys.rsa.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)


def rsa_der(keys):
    return keys.rsa.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)


def hmac_token(header, payload, secret, digest=hashlib.sha256):
    h = compact(header)
    p = compact(payload)
    signing_input = f"{b64u(h)}.{b64u(p)}"
    return f"{signing_input}.{b64u(hmac.new(secret, signing_input.encode(), digest).digest())}"


def token_with_dash_in_signature(keys):
    """A valid RS256 token whose signature holds '-' or '_' (almost all do)."""
    for i in range(50):
        t = mint(keys, jti=str(i))
        if "-" in parts(t)[2] or "_" in parts(t)[2]:
            return t
    raise AssertionError("no signature with - or _ in 50 tries")


# --------------------------------------------------------------------------
# Requests and answers
# --------------------------------------------------------------------------

def call(gw, path, token=None, prefix="Bearer ", headers=None, method="GET", conn=None):
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = prefix + token
        SENT.append(token)
    return gw.request(method, path, headers=h, conn=conn)


def call_key(gw, path, key=None, headers=None):
    h = dict(headers or {})
    if key is not None:
        h["x-api-key"] = key
        if len(key) >= 8:
            SENT.append(key)
    return gw.request("GET", path, headers=h)


def assert_unauthorized(r, token_sent=True):
    assert r.status == 401, r
    assert r.header("content-type") == "application/json", r
    assert r.json() == {"message": "Unauthorized"}, r
    want = 'Bearer error="invalid_token"' if token_sent else "Bearer"
    assert r.header_all("www-authenticate") == [want], r
    assert r.header("x-request-id"), r


def assert_forbidden(r):
    assert r.status == 403, r
    assert r.header("content-type") == "application/json", r
    assert r.json() == {"message": "Forbidden"}, r
    assert r.header("x-request-id"), r


def event_of(r):
    assert r.status == 200, r
    assert r.header("x-request-id"), r
    return r.json()


def wait_access_entry(gw, request_id, timeout=5):
    deadline = time.monotonic() + timeout
    while True:
        for line in gw.access_log():
            if line.get("request_id") == request_id:
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no access log line for {request_id}: {gw.access_log()}")
        time.sleep(0.02)



def write_json(path, doc):
    """Replace path atomically (a reload never sees half a file)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2)
    os.replace(tmp, path)


def sha256_hex(text):
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------

API_KEY_ANDROID = "lg-test-android-7f3c9a51e2b84d06a1c5"
API_KEY_IOS = "lg-test-ios-0b6d2e8f41c7a953e0d2"


def keys_doc(*entries):
    out = []
    for key_id, key in entries:
        e = {"id": key_id, "sha256": sha256_hex(key)}
        if key_id == "android-app":
            e["throttle"] = {"rate": 500, "burst": 1000}
            e["quota"] = {"limit": 100000, "period": "day"}
        out.append(e)
    return {"keys": out}


@pytest.fixture(scope="module")
def keys():
    return Keys()


@pytest.fixture(scope="module")
def url_gws(emulator, keys, certs):
    """Gateways on jwks_url, each in front of its own HTTPS JWKS server, all
    started now so that their refetch windows run out together:
    rot (rotation; its server sends Cache-Control: max-age=1), flood
    (unknown-kid flood), down500 (issuer answers 500), stopped (issuer
    gone), hang (issuer answers after 5 s)."""
    doc = {"keys": [keys.url_a, keys.url_ec]}
    envs = {}
    try:
        for name in ("rot", "flood", "down500", "stopped", "hang"):
            srv = JwksServer(certs["cert"], certs["key"], jwks=doc,
                             max_age=1 if name == "rot" else None)
            config = base_config(emulator, ROUTES[:2], auth={"jwt": {
                "issuer": ISSUER, "audience": AUDIENCE, "jwks_url": srv.url,
                "ca_file": certs["ca"], "leeway_s": LEEWAY}})
            envs[name] = [srv, None]
            envs[name][1] = start_gateway(config)
        for name, (srv, gw) in envs.items():
            assert srv.wait_fetches(1) == 1, name
        yield {name: (srv, gw) for name, (srv, gw) in envs.items()}
    finally:
        errors = []
        for name, (srv, gw) in envs.items():
            if gw is not None:
                try:
                    gw.stop()
                except AssertionError as e:
                    errors.append(f"{name}: {e}")
            srv.stop()
        assert not errors, "\n".join(errors)


@pytest.fixture(scope="module")
def auth_files(keys, tmp_path_factory):
    d = tmp_path_factory.mktemp("auth")
    jwks_path = str(d / "jwks.json")
    keys_path = str(d / "api_keys.json")
    write_json(jwks_path, keys.jwks)
    write_json(keys_path, keys_doc(("android-app", API_KEY_ANDROID), ("ios-app", API_KEY_IOS)))
    return {"jwks": jwks_path, "api_keys": keys_path, "dir": str(d)}


@pytest.fixture(scope="module")
def shared_gw(emulator, auth_files):
    """One gateway (jwks_file) for every JWT test that only sends requests;
    its exit status and sanitizer report are checked at the end."""
    config = base_config(emulator, JWT_ROUTES,
                         auth={"jwt": {"issuer": ISSUER, "audience": AUDIENCE,
                                       "jwks_file": auth_files["jwks"], "leeway_s": LEEWAY,
                                       "identity_claim": "sub"}},
                         # room for the 100 KiB token: it must reach the authenticator
                         limits={"max_header_bytes": 262144})
    g = start_gateway(config)
    MODULE_GATEWAYS.append(g)
    yield g
    g.stop()


@pytest.fixture
def gw(emu, shared_gw):
    assert shared_gw.proc.poll() is None, shared_gw.log_text()[-4000:]
    return shared_gw


@pytest.fixture(scope="module")
def shared_key_gw(emulator, auth_files):
    """The same for the API key tests (a keys file, no JWT)."""
    config = base_config(emulator, KEY_ROUTES,
                         auth={"api_keys": {"file": auth_files["api_keys"]}})
    g = start_gateway(config)
    MODULE_GATEWAYS.append(g)
    yield g
    g.stop()


@pytest.fixture
def key_gw(emu, shared_key_gw):
    assert shared_key_gw.proc.poll() is None, shared_key_gw.log_text()[-4000:]
    return shared_key_gw


@pytest.fixture(scope="module")
def shared_use_gw(emulator, auth_files):
    """token_use "access" and identity_claim "username" (Cognito access tokens)."""
    config = base_config(emulator, ROUTES[:3],
                         auth={"jwt": {"issuer": ISSUER, "audience": [AUDIENCE[0]],
                                       "jwks_file": auth_files["jwks"], "token_use": "access",
                                       "identity_claim": "username"}})
    g = start_gateway(config)
    MODULE_GATEWAYS.append(g)
    yield g
    g.stop()


@pytest.fixture
def use_gw(emu, shared_use_gw):
    assert shared_use_gw.proc.poll() is None, shared_use_gw.log_text()[-4000:]
    return shared_use_gw


# --------------------------------------------------------------------------
# jwks_url: the gateways start first (their refetch windows run meanwhile)
# --------------------------------------------------------------------------

def test_jwks_url_fetched_once_at_start_and_its_keys_accepted(emu, keys, url_gws):
    for name, (srv, g) in url_gws.items():
        for alg, kid in (("RS256", "url-a"), ("ES256", "url-ec")):
            r = call(g, "/jwt", mint(keys, alg=alg, kid=kid, sub=f"url-{name}"))
            ev = event_of(r)
            assert ev["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] == f"url-{name}"
        assert srv.paths[0] == "/.well-known/jwks.json", name
        assert srv.fetch_count() == 1, (name, srv.fetch_count())


# --------------------------------------------------------------------------
# Accepted tokens
# --------------------------------------------------------------------------

@pytest.mark.parametrize("alg,kid", [
    ("RS256", "rsa-1"), ("RS384", "rsa-1"), ("RS512", "rsa-1"),
    ("PS256", "rsa-1"), ("PS384", "rsa-1"), ("PS512", "rsa-1"),
    ("ES256", "ec-256"), ("ES384", "ec-384"), ("ES512", "ec-521"),
])
def test_accepted_algorithms(gw, emu, keys, alg, kid):
    t = mint(keys, alg=alg, kid=kid, sub=f"alg-{alg}")
    ev = event_of(call(gw, "/jwt", t))
    assert ev["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] == f"alg-{alg}"
    assert len(emu.invocations()) == 1


def test_jwk_with_matching_alg_accepted(gw, emu, keys):
    event_of(call(gw, "/jwt", mint(keys, alg="RS256", kid="rsa-rs256", key=keys.rsa2)))
    event_of(call(gw, "/jwt", mint(keys, alg="PS256", kid="rsa-ps256", key=keys.rsa2)))


@pytest.mark.parametrize("prefix", ["Bearer ", "bearer ", "BEARER ", "BeArEr ", ""],
                         ids=["Bearer", "bearer", "BEARER", "BeArEr", "bare"])
def test_token_in_authorization_bare_or_after_bearer(gw, emu, keys, prefix):
    ev = event_of(call(gw, "/jwt", mint(keys), prefix=prefix))
    assert ev["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] == "user-1"


def now():
    return int(time.time())


ACCEPTED_CLAIMS = {
    "second_audience": lambda: {"aud": AUDIENCE[1]},
    "aud_array_with_audience": lambda: {"aud": ["someone-else", AUDIENCE[0]]},
    "client_id_without_aud": lambda: {"aud": DROP, "client_id": AUDIENCE[1]},
    "exp_within_leeway": lambda: {"exp": now() - 20},
    "nbf_past": lambda: {"nbf": now() - 10},
    "nbf_within_leeway": lambda: {"nbf": now() + 20},
    "iat_within_leeway": lambda: {"iat": now() + 20},
    "no_iat": lambda: {"iat": DROP},
}


@pytest.mark.parametrize("case", list(ACCEPTED_CLAIMS))
def test_accepted_claims(gw, emu, keys, case):
    t = mint(keys, **ACCEPTED_CLAIMS[case]())
    event_of(call(gw, "/jwt", t))
    assert len(emu.invocations()) == 1


# --------------------------------------------------------------------------
# Refused tokens: 401, WWW-Authenticate: Bearer error="invalid_token",
# the function not invoked
# --------------------------------------------------------------------------

def _hostile(keys):
    """name -> a function of keys returning the token."""
    k = keys
    rs = lambda **o: mint(k, **o)  # noqa: E731
    h_rs = {"alg": "RS256", "kid": "rsa-1", "typ": "JWT"}

    def signed(header, payload_text, alg="RS256", key=None):
        return forge(header, payload_text, alg, key or k.rsa)

    def es256_raw(t):
        return b64u_decode(parts(t)[2])

    def der_es256():
        t = mint(k, alg="ES256", kid="ec-256")
        h, p, _ = parts(t)
        der = k.ec256.sign(f"{h}.{p}".encode(), ec.ECDSA(hashes.SHA256()))
        return f"{h}.{p}.{b64u(der)}"

    def tampered_payload():
        t = rs()
        h, _, s = parts(t)
        return f"{h}.{b64u(compact(claims(sub='admin')))}.{s}"

    def tampered_header():
        t = rs()
        _, p, s = parts(t)
        return f"{b64u(compact({'alg': 'RS384', 'kid': 'rsa-1', 'typ': 'JWT'}))}.{p}.{s}"

    def tampered_signature():
        t = rs()
        sig = bytearray(b64u_decode(parts(t)[2]))
        sig[len(sig) // 2] ^= 0x01
        return with_signature(t, bytes(sig))

    def std_alphabet():
        t = token_with_dash_in_signature(k)
        h, p, s = parts(t)
        return f"{h}.{p}.{s.replace('-', '+').replace('_', '/')}"

    return {
        # algorithm confusion
        "alg_none_empty_signature":
            lambda: forge({"alg": "none", "kid": "rsa-1"}, claims(), sig=b""),
        "alg_none_with_rsa_signature":
            lambda: forge({"alg": "none", "kid": "rsa-1"}, claims(), sig=b64u_decode(
                parts(rs())[2])),
        "alg_NONE_uppercase": lambda: forge({"alg": "NONE", "kid": "rsa-1"}, claims(),
                                            sig=b"\x01" * 32),
        "alg_missing": lambda: signed({"kid": "rsa-1", "typ": "JWT"}, compact(claims())),
        "alg_unsupported_EdDSA":
            lambda: forge({"alg": "EdDSA", "kid": "rsa-1"}, claims(), "RS256", k.rsa),
        "hs256_with_rsa_public_pem": lambda: hmac_token(
            {"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}, claims(), rsa_pem(k)),
        "hs256_with_rsa_public_der": lambda: hmac_token(
            {"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}, claims(), rsa_der(k)),
        "hs512_with_rsa_public_pem": lambda: hmac_token(
            {"alg": "HS512", "kid": "rsa-1", "typ": "JWT"}, claims(), rsa_pem(k), hashlib.sha512),
        "hs256_with_oct_key_of_the_set": lambda: hmac_token(
            {"alg": "HS256", "kid": "hmac-1", "typ": "JWT"}, claims(), k.hmac_secret),
        "crit_header": lambda: signed({"alg": "RS256", "kid": "rsa-1", "crit": ["exp"],
                                       "exp": now() + 600}, compact(claims())),
        "crit_unknown_extension": lambda: signed(
            {"alg": "RS256", "kid": "rsa-1", "crit": ["urn:example:x"], "urn:example:x": 1},
            compact(claims())),
        # kid
        "kid_missing": lambda: mint(k, kid=None),
        "kid_unknown": lambda: mint(k, kid="no-such-kid"),
        "kid_path": lambda: mint(k, kid="../../../../etc/passwd"),
        "kid_sql": lambda: mint(k, kid="' OR '1'='1"),
        "kid_not_a_string": lambda: signed({"alg": "RS256", "kid": 1}, compact(claims())),
        "kid_of_enc_key": lambda: mint(k, kid="rsa-enc"),
        "signed_by_a_key_not_in_the_set": lambda: mint(k, key=k.attacker),
        # key type / alg / curve that does not fit the token's alg
        "rs256_with_ec_kid": lambda: mint(k, alg="RS256", kid="ec-256", key=k.rsa),
        "es256_with_rsa_kid": lambda: mint(k, alg="ES256", kid="rsa-1", key=k.ec256),
        "es384_with_p256_kid": lambda: mint(k, alg="ES384", kid="ec-256", key=k.ec256),
        "es256_with_p384_kid": lambda: mint(k, alg="ES256", kid="ec-384", key=k.ec384),
        "es512_with_p384_kid": lambda: mint(k, alg="ES512", kid="ec-384", key=k.ec384),
        "rs512_with_jwk_alg_rs256": lambda: mint(k, alg="RS512", kid="rsa-rs256", key=k.rsa2),
        "ps256_with_jwk_alg_rs256": lambda: mint(k, alg="PS256", kid="rsa-rs256", key=k.rsa2),
        "rs256_with_jwk_alg_ps256": lambda: mint(k, alg="RS256", kid="rsa-ps256", key=k.rsa2),
        "es256_with_jwk_alg_es512": lambda: mint(k, alg="ES256", kid="ec-521", key=k.ec521),
        # claims
        "iss_wrong": lambda: rs(iss="https://evil.example.com/pool"),
        "iss_trailing_slash": lambda: rs(iss=ISSUER + "/"),
        "iss_missing": lambda: rs(iss=DROP),
        "aud_wrong": lambda: rs(aud="other-client"),
        "aud_array_without_audience": lambda: rs(aud=["a", "b"]),
        "aud_empty_array": lambda: rs(aud=[]),
        "aud_and_client_id_missing": lambda: rs(aud=DROP),
        "client_id_wrong_without_aud": lambda: rs(aud=DROP, client_id="other-client"),
        "aud_wrong_client_id_right": lambda: rs(aud="other-client", client_id=AUDIENCE[0]),
        # a decoded \u0000 must not end a compared string early
        "aud_with_nul_suffix": lambda: rs(aud=AUDIENCE[0] + "\u0000.evil"),
        "aud_array_with_nul_suffix": lambda: rs(aud=["x", AUDIENCE[0] + "\u0000"]),
        "client_id_with_nul_suffix": lambda: rs(aud=DROP, client_id=AUDIENCE[0] + "\u0000x"),
        "iss_with_nul_suffix": lambda: rs(iss=ISSUER + "\u0000/other-tenant"),
        "exp_past_beyond_leeway": lambda: rs(exp=now() - LEEWAY - 60),
        "exp_missing": lambda: rs(exp=DROP),
        "exp_a_string": lambda: rs(exp=str(now() + 600)),
        "nbf_future_beyond_leeway": lambda: rs(nbf=now() + LEEWAY + 240),
        "iat_future_beyond_leeway": lambda: rs(iat=now() + LEEWAY + 240),
        # structure and encoding
        "tampered_payload": tampered_payload,
        "tampered_header_alg": tampered_header,
        "tampered_signature": tampered_signature,
        "truncated_signature": lambda: rs()[:-10],
        "signature_removed": lambda: ".".join(parts(rs())[:2]) + ".",
        "two_parts": lambda: ".".join(parts(rs())[:2]),
        "four_parts": lambda: rs() + "." + b64u(b"x"),
        "empty_parts": lambda: "..",
        "padding_on_signature": lambda: rs() + "==",
        "padding_on_payload": lambda: (lambda h, p, s: f"{h}.{p}{'=' * (-len(p) % 4 or 4)}.{s}")(
            *parts(rs())),
        "standard_base64_alphabet": std_alphabet,
        "invalid_base64_character": lambda: (lambda t: t[:20] + "!" + t[21:])(rs()),
        "space_inside": lambda: (lambda h, p, s: f"{h}.{p[:10]} {p[10:]}.{s}")(*parts(rs())),
        "header_not_json": lambda: signed("not json", compact(claims())),
        "header_not_object": lambda: signed('["RS256"]', compact(claims())),
        "duplicate_claim_sub": lambda: signed(
            h_rs, compact(claims())[:-1] + ',"sub":"admin"}'),
        "duplicate_claim_exp": lambda: signed(
            h_rs, compact(claims(exp=now() - 3600))[:-1] + f',"exp":{now() + 600}}}'),
        "duplicate_header_alg": lambda: signed(
            '{"alg":"none","kid":"rsa-1","alg":"RS256"}', compact(claims())),
        "payload_array": lambda: signed(h_rs, "[1,2,3]"),
        "payload_string": lambda: signed(h_rs, '"hello"'),
        "payload_null": lambda: signed(h_rs, "null"),
        "payload_trailing_garbage": lambda: signed(h_rs, compact(claims()) + "x"),
        "payload_not_json": lambda: signed(h_rs, "sub=admin"),
        # signature lengths
        "es256_der_signature": der_es256,
        "es256_signature_one_byte_long":
            lambda: (lambda t: with_signature(t, es256_raw(t) + b"\x00"))(
                mint(k, alg="ES256", kid="ec-256")),
        "es256_signature_one_byte_short":
            lambda: (lambda t: with_signature(t, es256_raw(t)[:-1]))(
                mint(k, alg="ES256", kid="ec-256")),
        "es256_signature_zero": lambda: with_signature(mint(k, alg="ES256", kid="ec-256"),
                                                       b"\x00" * 64),
        "es512_signature_of_p256_size":
            lambda: (lambda t: with_signature(t, es256_raw(t)[:64]))(
                mint(k, alg="ES512", kid="ec-521")),
        "rs256_signature_leading_zero":
            lambda: (lambda t: with_signature(t, b"\x00" + b64u_decode(parts(t)[2])))(rs()),
    }


@pytest.mark.parametrize("case", list(_hostile(None)))  # the names only; nothing is built
def test_refused_token(gw, emu, keys, case):
    token = _hostile(keys)[case]()
    r = call(gw, "/jwt", token)
    assert_unauthorized(r)
    assert emu.invocations() == []


def test_kid_cannot_forge_log_lines(gw, emu, keys):
    """The kid reaches the diagnostic log (sanitised): quotes, newlines and
    control characters in it must not make a line of their own."""
    marker = "FORGED-LINE-7c1e"
    for kid in (f'x"\nERROR {marker} key=1', f"x\r\nINFO {marker}", f"x\u2028{marker}\x1b[2J"):
        assert_unauthorized(call(gw, "/jwt", mint(keys, kid=kid)))
    time.sleep(0.2)
    for line in gw.log_text().splitlines():
        assert not line.startswith(("ERROR " + marker, "INFO " + marker, marker)), line
        assert "\x1b" not in line, line
    assert emu.invocations() == []


LOGFMT_PAIR = re.compile(r'([A-Za-z_][A-Za-z0-9_.]*)=("(?:[^"\\]|\\.)*"|[^\s"]*)(?=\s|$)')


def logfmt_keys(line):
    """The keys of a `LEVEL message key=value ...` line, values bare or
    double-quoted with backslash escapes; a stray quote ends the parse."""
    return [m.group(1) for m in LOGFMT_PAIR.finditer(line)]


def test_kid_cannot_add_fields_to_log_lines(gw, emu, keys):
    r = call(gw, "/jwt", mint(keys, kid="k1 request_id=forged status=200"))
    assert_unauthorized(r)
    rid = r.header("x-request-id")
    assert gw.wait_for_log(rid, timeout=5)
    lines = [line for line in gw.log_text().splitlines() if rid in line]
    for line in lines:
        keys_ = logfmt_keys(line)
        assert keys_.count("request_id") == 1 and "status" not in keys_, line


def test_refused_tokens_on_v1_route_too(gw, emu, keys):
    for t in (mint(keys, exp=now() - 3600), mint(keys, kid="nope"), mint(keys, key=keys.attacker)):
        assert_unauthorized(call(gw, "/v1/jwt", t))
    assert emu.invocations() == []


def test_no_authorization_header(gw, emu):
    r = call(gw, "/jwt")
    assert_unauthorized(r, token_sent=False)
    r = call(gw, "/v1/jwt", method="POST")
    assert_unauthorized(r, token_sent=False)
    assert emu.invocations() == []


@pytest.mark.parametrize("value", ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz",
                                   "Bearer not-a-token"],
                         ids=["empty", "Bearer", "Bearer-space", "Basic", "garbage"])
def test_authorization_without_usable_token(gw, emu, value):
    r = gw.request("GET", "/jwt", headers={"Authorization": value})
    assert r.status == 401, r
    assert r.json() == {"message": "Unauthorized"}, r
    assert r.header("www-authenticate", "").startswith("Bearer"), r
    assert r.header("x-request-id"), r
    assert emu.invocations() == []


def test_api_key_does_not_open_a_jwt_route(gw, emu):
    r = call_key(gw, "/jwt", API_KEY_ANDROID)
    assert_unauthorized(r, token_sent=False)
    assert emu.invocations() == []


def test_token_over_8_kib_refused_and_under_accepted(gw, emu, keys):
    small = mint(keys, pad="x" * 5000)
    assert len(small) < 8000
    event_of(call(gw, "/jwt", small))
    big = mint(keys, pad="x" * 7000)
    assert len(big) > 8192
    assert_unauthorized(call(gw, "/jwt", big))
    assert len(emu.invocations()) == 1


def test_100_kib_token_refused_and_daemon_keeps_serving(gw, emu, keys):
    huge = mint(keys, pad="A" * (100 * 1024))
    assert len(huge) > 100 * 1024
    for prefix in ("Bearer ", ""):
        assert_unauthorized(call(gw, "/jwt", huge, prefix=prefix))
    garbage = "a" * (100 * 1024)
    assert_unauthorized(call(gw, "/jwt", garbage))
    assert emu.invocations() == []
    ev = event_of(call(gw, "/jwt", mint(keys, sub="after-huge")))
    assert ev["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] == "after-huge"
    assert gw.proc.poll() is None


def test_open_route_ignores_a_bad_token(gw, emu):
    r = call(gw, "/open", "garbage.token.here")
    ev = event_of(r)
    assert "authorizer" not in ev["requestContext"] or not ev["requestContext"]["authorizer"]


# --------------------------------------------------------------------------
# Scopes
# --------------------------------------------------------------------------

@pytest.mark.parametrize("over", [
    {"scope": "read:users"},
    {"scope": "profile read:users email"},
    {"scope": "admin"},
    {"scp": ["admin"]},
    {"scp": ["x", "read:users"]},
    {"scp": "email read:users"},
], ids=["scope", "scope-among-many", "second-route-scope", "scp-array", "scp-array-many",
        "scp-string"])
def test_scope_present(gw, emu, keys, over):
    event_of(call(gw, "/scoped", mint(keys, **over)))
    assert len(emu.invocations()) == 1


@pytest.mark.parametrize("over", [
    {},
    {"scope": "write:users"},
    {"scope": "read:users:all"},
    {"scope": "READ:USERS"},
    {"scope": "xread:users"},
    {"scope": ""},
    {"scp": []},
    {"scp": ["write:users"]},
    {"scope": "read:users,admin"},
], ids=["none", "other", "longer", "case", "prefix", "empty", "scp-empty", "scp-other",
        "comma"])
def test_scope_missing_is_403(gw, emu, keys, over):
    r = call(gw, "/scoped", mint(keys, **over))
    assert_forbidden(r)
    assert emu.invocations() == []


@pytest.mark.parametrize("over", [{"scope": "admin\u0000junk"},
                                  {"scp": ["read:users\u0000junk"]}],
                         ids=["scope", "scp"])
def test_scope_with_nul_does_not_match(gw, emu, keys, over):
    """A decoded \\u0000 must not end the scope early: refused as a bad
    token (401) or as lacking the scope (403), never let through."""
    r = call(gw, "/scoped", mint(keys, **over))
    assert r.status in (401, 403), r
    assert r.json() == {"message": "Unauthorized" if r.status == 401 else "Forbidden"}
    assert emu.invocations() == []


def test_invalid_token_on_scoped_route_is_401_not_403(gw, emu, keys):
    assert_unauthorized(call(gw, "/scoped", mint(keys, scope="admin", exp=now() - 3600)))
    assert_unauthorized(call(gw, "/scoped"), token_sent=False)
    assert emu.invocations() == []


# --------------------------------------------------------------------------
# Claims in the event
# --------------------------------------------------------------------------

RICH = {
    "email": "alice@example.com",
    "email_verified": True,
    "disabled": False,
    "count": 42,
    "ratio": 1.5,
    "groups": ["admin", "dev"],
    "levels": [1, 2],
    "cognito__username": "alice",
    "unicode": "\u017elu\u0165ou\u010dk\u00fd k\u016f\u0148",
    "quote": 'say "hi"\\',
    "obj": {"k": "v", "n": 1},
    "nothing": None,
    "scope": "read:users write:users",
}


def rich_expected(c):
    exp = {}
    for k, v in c.items():
        if isinstance(v, bool):
            exp[k] = "true" if v else "false"
        elif isinstance(v, (int, float)):
            exp[k] = json.dumps(v)
        elif isinstance(v, list):
            exp[k] = "[" + " ".join(str(x) for x in v) + "]"
        elif isinstance(v, dict):
            exp[k] = compact(v)
        elif v is None:
            exp[k] = ""
        else:
            exp[k] = v
    return exp


def test_claims_v2(gw, emu, keys):
    c = claims(**RICH)
    t = jwt.encode(c, keys.rsa, algorithm="RS256", headers={"kid": "rsa-1"})
    SENT.append(t)
    ev = event_of(gw.request("GET", "/jwt", headers={"Authorization": "Bearer " + t}))
    authz = ev["requestContext"]["authorizer"]
    assert set(authz) == {"jwt"}, authz
    assert authz["jwt"]["claims"] == rich_expected(c)
    assert authz["jwt"]["claims"]["exp"] == str(c["exp"])
    assert authz["jwt"]["claims"]["email_verified"] == "true"
    assert authz["jwt"]["claims"]["groups"] == "[admin dev]"
    assert authz["jwt"]["scopes"] == ["read:users", "write:users"]
    # the function got exactly this event
    assert emu.invocations()[-1]["event"]["requestContext"]["authorizer"] == authz


def test_claims_v1(gw, emu, keys):
    c = claims(**RICH)
    t = jwt.encode(c, keys.rsa, algorithm="RS256", headers={"kid": "rsa-1"})
    SENT.append(t)
    ev = event_of(gw.request("POST", "/v1/jwt", body=b"{}",
                             headers={"Authorization": t, "Content-Type": "application/json"}))
    assert ev["requestContext"]["authorizer"]["claims"] == rich_expected(c)
    assert ev["requestContext"]["identity"]["apiKey"] is None
    assert ev["requestContext"]["identity"]["apiKeyId"] is None


def test_aud_array_rendered_as_claim(gw, emu, keys):
    ev = event_of(call(gw, "/jwt", mint(keys, aud=[AUDIENCE[1], "other"])))
    assert ev["requestContext"]["authorizer"]["jwt"]["claims"]["aud"] == f"[{AUDIENCE[1]} other]"


@pytest.mark.parametrize("over,scopes", [
    ({}, None),
    ({"scope": "a b"}, ["a", "b"]),
    ({"scp": ["c", "d"]}, ["c", "d"]),
    ({"scp": "e f"}, ["e", "f"]),
    ({"scope": "g", "scp": ["h"]}, ["g"]),
], ids=["neither", "scope", "scp-array", "scp-string", "scope-wins"])
def test_scopes_in_event(gw, emu, keys, over, scopes):
    ev = event_of(call(gw, "/jwt", mint(keys, **over)))
    assert ev["requestContext"]["authorizer"]["jwt"]["scopes"] == scopes


# --------------------------------------------------------------------------
# token_use and identity_claim (a Cognito-like setup)
# --------------------------------------------------------------------------

def cognito_access(keys, **over):
    c = {"sub": "5f1e0c8a-0000-4000-8000-00000000abcd", "token_use": "access",
         "scope": "aws.cognito.signin.user.admin", "client_id": AUDIENCE[0],
         "username": "alice", "auth_time": now() - 5, "jti": "j-1", "origin_jti": "o-1",
         "event_id": "e-1", "version": 2, "aud": DROP}
    c.update(over)
    return mint(keys, **c)


def test_token_use_access_accepted_identity_claim_logged(use_gw, emu, keys):
    r = call(use_gw, "/jwt", cognito_access(keys))
    ev = event_of(r)
    got = ev["requestContext"]["authorizer"]["jwt"]
    assert got["claims"]["token_use"] == "access"
    assert got["claims"]["client_id"] == AUDIENCE[0]
    assert got["claims"]["version"] == "2"
    assert got["scopes"] == ["aws.cognito.signin.user.admin"]
    line = wait_access_entry(use_gw, r.header("x-request-id"))
    assert line["identity"] == "alice"


@pytest.mark.parametrize("token_use", ["id", "refresh", "", DROP, "access\u0000"],
                         ids=["id", "refresh", "empty", "missing", "access-nul"])
def test_token_use_mismatch_refused(use_gw, emu, keys, token_use):
    over = {"token_use": token_use}
    if token_use == "id":
        over.update(aud=AUDIENCE[0], client_id=DROP)  # a Cognito ID token
    assert_unauthorized(call(use_gw, "/jwt", cognito_access(keys, **over)))
    assert emu.invocations() == []


def test_token_use_gateway_still_checks_audience(use_gw, emu, keys):
    # AUDIENCE[1] is not configured on this gateway
    assert_unauthorized(call(use_gw, "/jwt", cognito_access(keys, client_id=AUDIENCE[1])))


# --------------------------------------------------------------------------
# API keys
# --------------------------------------------------------------------------

def test_api_key_valid_v2(key_gw, emu):
    r = call_key(key_gw, "/key", API_KEY_ANDROID)
    ev = event_of(r)
    assert ev["requestContext"]["authorizer"] == {"lambda": {"apiKeyId": "android-app"}}
    line = wait_access_entry(key_gw, r.header("x-request-id"))
    assert line["identity"] == "android-app"
    assert line["status"] == 200


def test_api_key_valid_v1(key_gw, emu):
    r = call_key(key_gw, "/v1/key", API_KEY_IOS)
    ev = event_of(r)
    ident = ev["requestContext"]["identity"]
    assert ident["apiKey"] == API_KEY_IOS
    assert ident["apiKeyId"] == "ios-app"
    assert ev["requestContext"]["identity"]["sourceIp"] == "127.0.0.1"
    line = wait_access_entry(key_gw, r.header("x-request-id"))
    assert line["identity"] == "ios-app"


@pytest.mark.parametrize("key", [
    None, "", "wrong-key", API_KEY_ANDROID.upper(), API_KEY_ANDROID[:-1],
    API_KEY_ANDROID + "x", sha256_hex(API_KEY_ANDROID), "k" * 5000,
], ids=["missing", "empty", "wrong", "uppercased", "truncated", "extended",
        "the-digest-itself", "5000-chars"])
def test_api_key_refused(key_gw, emu, key):
    for path in ("/key", "/v1/key"):
        assert_forbidden(call_key(key_gw, path, key))
    assert emu.invocations() == []


def test_jwt_does_not_open_an_api_key_route(key_gw, emu, keys):
    assert_forbidden(call(key_gw, "/key", mint(keys)))
    assert emu.invocations() == []


# --------------------------------------------------------------------------
# Identity in the access log; no token in any log
# --------------------------------------------------------------------------

def test_access_log_identity_is_sub(gw, emu, keys):
    t = mint(keys, sub="user-log-42", email="x@example.com")
    r = call(gw, "/jwt", t)
    event_of(r)
    line = wait_access_entry(gw, r.header("x-request-id"))
    assert line["identity"] == "user-log-42"
    assert line["status"] == 200
    r401 = call(gw, "/jwt", mint(keys, sub="user-refused", exp=now() - 3600))
    assert_unauthorized(r401)
    line = wait_access_entry(gw, r401.header("x-request-id"))
    assert line["status"] == 401
    assert line["identity"] != "user-refused"
    with open(gw.access_log_path) as f:
        text = f.read()
    assert t not in text and parts(t)[2] not in text
    assert t not in gw.log_text()


def test_verified_token_still_expires(emu, gateways, keys, auth_files):
    """A token verified once (and cached) stops working at its exp."""
    g = gateways.start(base_config(emu, ROUTES[:2], auth={"jwt": {
        "issuer": ISSUER, "audience": AUDIENCE, "jwks_file": auth_files["jwks"],
        "leeway_s": 0}}))
    exp = int(time.time()) + 3
    t = mint(keys, exp=exp, sub="short-lived")
    for _ in range(3):
        event_of(call(g, "/jwt", t))
    time.sleep(max(0.0, exp + 1.2 - time.time()))
    assert_unauthorized(call(g, "/jwt", t))
    assert len(emu.invocations()) == 3


# --------------------------------------------------------------------------
# SIGHUP: keys file and jwks_file
# --------------------------------------------------------------------------

def test_sighup_reloads_api_keys(emu, gateways, tmp_path):
    keys_path = str(tmp_path / "keys.json")
    write_json(keys_path, keys_doc(("android-app", API_KEY_ANDROID)))
    g = gateways.start(base_config(emu, ROUTES[4:5], auth={"api_keys": {"file": keys_path}}))
    event_of(call_key(g, "/key", API_KEY_ANDROID))
    assert_forbidden(call_key(g, "/key", API_KEY_IOS))

    write_json(keys_path, keys_doc(("ios-app", API_KEY_IOS)))
    g.send_signal(signal.SIGHUP)
    r = poll(lambda: (lambda r: r if r.status == 200 else None)(call_key(g, "/key", API_KEY_IOS)))
    assert r, "new key not accepted within 5 s of SIGHUP"
    line = wait_access_entry(g, r.header("x-request-id"))
    assert line["identity"] == "ios-app"
    assert_forbidden(call_key(g, "/key", API_KEY_ANDROID))


def test_sighup_with_a_bad_keys_file_keeps_the_old_keys(emu, gateways, tmp_path):
    keys_path = str(tmp_path / "keys.json")
    write_json(keys_path, keys_doc(("android-app", API_KEY_ANDROID)))
    g = gateways.start(base_config(emu, ROUTES[4:5], auth={"api_keys": {"file": keys_path}}))
    event_of(call_key(g, "/key", API_KEY_ANDROID))
    write_json(keys_path, {"keys": [{"id": "ios-app", "sha256": "zz" * 32}]})
    g.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        event_of(call_key(g, "/key", API_KEY_ANDROID))
        time.sleep(0.1)
    assert g.proc.poll() is None
    # a later good file is still picked up
    write_json(keys_path, keys_doc(("ios-app", API_KEY_IOS)))
    g.send_signal(signal.SIGHUP)
    assert poll(lambda: call_key(g, "/key", API_KEY_IOS).status == 200)
    assert_forbidden(call_key(g, "/key", API_KEY_ANDROID))


def test_sighup_reloads_jwks_file(emu, gateways, keys, tmp_path):
    jwks_path = str(tmp_path / "jwks.json")
    write_json(jwks_path, {"keys": [jwk(keys.rsa.public_key(), "old-1")]})
    g = gateways.start(base_config(emu, ROUTES[:2], auth={"jwt": {
        "issuer": ISSUER, "audience": AUDIENCE, "jwks_file": jwks_path}}))
    old = mint(keys, kid="old-1", sub="old-user")
    new = mint(keys, alg="ES256", kid="new-1", key=keys.ec256, sub="new-user")
    event_of(call(g, "/jwt", old))
    assert_unauthorized(call(g, "/jwt", new))

    write_json(jwks_path, {"keys": [jwk(keys.rsa.public_key(), "old-1"),
                                    jwk(keys.ec256.public_key(), "new-1")]})
    g.send_signal(signal.SIGHUP)
    assert poll(lambda: call(g, "/jwt", new).status == 200), "new kid refused after SIGHUP"
    event_of(call(g, "/jwt", old))

    # the old key leaves: the same token (verified and cached before) is refused
    write_json(jwks_path, {"keys": [jwk(keys.ec256.public_key(), "new-1")]})
    g.send_signal(signal.SIGHUP)
    assert poll(lambda: call(g, "/jwt", old).status == 401), "removed kid still accepted"
    assert_unauthorized(call(g, "/jwt", old))
    event_of(call(g, "/jwt", new))


def test_sighup_with_a_bad_jwks_file_keeps_the_old_keys(emu, gateways, keys, tmp_path):
    jwks_path = str(tmp_path / "jwks.json")
    write_json(jwks_path, {"keys": [jwk(keys.rsa.public_key(), "old-1")]})
    g = gateways.start(base_config(emu, ROUTES[:2], auth={"jwt": {
        "issuer": ISSUER, "audience": AUDIENCE, "jwks_file": jwks_path}}))
    old = mint(keys, kid="old-1")
    event_of(call(g, "/jwt", old))
    for bad in ('{"keys": [', '{"keys": []}', '{"keys": [{"kty": "oct", "k": "AAAA"}]}'):
        with open(jwks_path, "w") as f:
            f.write(bad)
        g.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            event_of(call(g, "/jwt", old))
            time.sleep(0.1)
    assert g.proc.poll() is None


def test_sighup_refetches_jwks_url(emu, gateways, keys, certs):
    """SIGHUP reloads the JWKS (CONTRACT section 2), even within the 30 s
    that limit refetches on unknown kids."""
    srv = JwksServer(certs["cert"], certs["key"], jwks={"keys": [keys.url_a]})
    try:
        g = gateways.start(base_config(emu, ROUTES[:2], auth={"jwt": {
            "issuer": ISSUER, "audience": AUDIENCE, "jwks_url": srv.url,
            "ca_file": certs["ca"]}}))
        assert srv.wait_fetches(1) == 1
        event_of(call(g, "/jwt", mint(keys, kid="url-a")))
        srv.set_jwks({"keys": [keys.url_b]})
        g.send_signal(signal.SIGHUP)
        assert srv.wait_fetches(2) >= 2, "no fetch after SIGHUP"
        new = mint(keys, kid="url-b", key=keys.rsa2)
        assert poll(lambda: call(g, "/jwt", new).status == 200), "new key refused after SIGHUP"
        # url-a left the set
        assert poll(lambda: call(g, "/jwt", mint(keys, kid="url-a")).status == 401)
    finally:
        srv.stop()


# --------------------------------------------------------------------------
# Configuration checks (lambdagate -t)
# --------------------------------------------------------------------------

def run_check(path):
    p = subprocess.run([binary(), "-t", "-c", path], capture_output=True, text=True,
                       timeout=20, env=sanitizer_env(clean_aws_env()))
    for marker in SANITIZER_MARKERS:
        assert marker not in p.stderr, p.stderr
    return p


def write_config(tmp_path, auth, routes):
    config = {"listen": [{"address": f"127.0.0.1:{free_port()}"}], "auth": auth,
              "routes": routes}
    path = str(tmp_path / "lambdagate.json")
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
    with open(path) as f:
        lines = f.read().splitlines()
    return path, lines


def line_of(lines, text):
    found = [i + 1 for i, line in enumerate(lines) if text in line]
    assert len(found) == 1, (text, lines)
    return found[0]


JWT_ROUTE = [{"method": "GET", "path": "/x", "function": "f", "auth": "jwt",
              "scopes": ["a"]}]
KEY_ROUTE = [{"method": "GET", "path": "/k", "function": "f", "auth": "api_key"}]


@pytest.mark.parametrize("variant", [
    "jwks_file",
    "jwks_url",
    "api_keys",
])
def test_check_good_auth_config(tmp_path, keys, auth_files, certs, variant):
    srv = JwksServer(certs["cert"], certs["key"], jwks={"keys": [keys.url_a]})
    try:
        auth, routes = {}, JWT_ROUTE
        if variant == "jwks_file":
            auth["jwt"] = {"jwks_file": auth_files["jwks"], "token_use": "id",
                           "identity_claim": "email", "leeway_s": 0}
        elif variant == "jwks_url":
            auth["jwt"] = {"jwks_url": srv.url, "ca_file": certs["ca"], "token_use": None}
        else:
            auth["api_keys"] = {"file": auth_files["api_keys"]}
            routes = KEY_ROUTE
        if "jwt" in auth:
            auth["jwt"].update(issuer=ISSUER, audience=AUDIENCE)
        path, _ = write_config(tmp_path, auth, routes)
        p = run_check(path)
        assert p.returncode == 0, p.stderr
        assert p.stdout == "configuration OK\n"
    finally:
        srv.stop()


def test_check_keys_file_bad_digest(tmp_path):
    keys_path = str(tmp_path / "keys.json")
    with open(keys_path, "w") as f:
        f.write('{\n  "keys": [\n    {\n      "id": "android-app",\n'
                f'      "sha256": "{"zz" * 32}"\n    }}\n  ]\n}}\n')
    path, _ = write_config(tmp_path, {"api_keys": {"file": keys_path}}, KEY_ROUTE)
    p = run_check(path)
    assert p.returncode == 1, p
    assert p.stdout == ""
    assert f"{keys_path}:5:" in p.stderr, p.stderr
    for line in p.stderr.splitlines():
        assert re.match(r"^\S+:\d+: \S", line), p.stderr


def test_check_missing_jwks_file(tmp_path):
    missing = str(tmp_path / "no-such-jwks.json")
    path, lines = write_config(tmp_path, {"jwt": {"issuer": ISSUER, "audience": AUDIENCE,
                                                  "jwks_file": missing}}, JWT_ROUTE)
    p = run_check(path)
    assert p.returncode == 1, p
    assert p.stdout == ""
    assert re.search(rf"^{re.escape(path)}:{line_of(lines, 'jwks_file')}: \S", p.stderr,
                     re.M), p.stderr


def test_check_jwks_url_must_be_https(tmp_path):
    path, lines = write_config(tmp_path, {"jwt": {"issuer": ISSUER, "audience": AUDIENCE,
                                                  "jwks_url": "http://127.0.0.1:9/jwks.json"}},
                               JWT_ROUTE)
    p = run_check(path)
    assert p.returncode == 1, p
    assert p.stdout == ""
    assert re.search(rf"^{re.escape(path)}:{line_of(lines, 'jwks_url')}: \S", p.stderr,
                     re.M), p.stderr


# --------------------------------------------------------------------------
# jwks_url served by a CA the daemon does not trust, or for another name
# --------------------------------------------------------------------------

def _untrusted_case(emu, gateways, keys, tmp_path, server_paths, ca_file):
    srv = JwksServer(server_paths["cert"], server_paths["key"],
                     jwks={"keys": [keys.url_a]})
    try:
        g = gateways.start(base_config(emu, ROUTES[:2], auth={"jwt": {
            "issuer": ISSUER, "audience": AUDIENCE, "jwks_url": srv.url, "ca_file": ca_file}}))
        assert poll(lambda: srv.tls_failures >= 1), "the daemon never tried the issuer"
        assert_unauthorized(call(g, "/jwt", mint(keys, kid="url-a")))
        event_of(g.request("GET", "/open"))  # still serving
        assert srv.fetch_count() == 0
        assert g.proc.poll() is None
        assert emu.invocations()[-1]["event"]["rawPath"] == "/open"
        assert len(emu.invocations()) == 1
    finally:
        srv.stop()


def test_jwks_url_with_untrusted_ca(emu, gateways, keys, certs, tmp_path):
    unrelated = make_ca_and_leaf(str(tmp_path / "unrelated"))
    _untrusted_case(emu, gateways, keys, tmp_path, unrelated, certs["ca"])


def test_jwks_url_with_certificate_for_another_name(emu, gateways, keys, tmp_path):
    other = make_ca_and_leaf(str(tmp_path / "wrongname"), names=("wrong.example",))
    _untrusted_case(emu, gateways, keys, tmp_path, other, other["ca"])


# --------------------------------------------------------------------------
# jwks_url: rotation, flood, issuer failures (after the refetch window)
# --------------------------------------------------------------------------

def wait_refetch_window(srv):
    delay = srv.last_fetch() + REFETCH_INTERVAL_S + 0.5 - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def test_jwks_rotation_accepted_on_first_request(emu, keys, url_gws):
    srv, g = url_gws["rot"]
    old = mint(keys, kid="url-a", sub="before-rotation")
    event_of(call(g, "/jwt", old))
    # max-age=1 from the issuer is bounded to at least 5 minutes: no refetches
    assert srv.fetch_count() == 1
    srv.set_jwks({"keys": [keys.url_a, keys.url_b]})
    wait_refetch_window(srv)
    assert srv.fetch_count() == 1
    new = mint(keys, kid="url-b", key=keys.rsa2, sub="after-rotation")
    ev = event_of(call(g, "/jwt", new))
    assert ev["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] == "after-rotation"
    assert srv.fetch_count() == 2
    event_of(call(g, "/jwt", old))
    event_of(call(g, "/jwt", new))
    assert srv.fetch_count() == 2


def _flood(g, tokens, nthreads=4):
    statuses = []
    lock = threading.Lock()

    def run(chunk):
        conn = g.connection(timeout=30)
        got = []
        for t in chunk:
            h = {"Authorization": "Bearer " + t}
            try:
                r = g.request("GET", "/jwt", headers=h, conn=conn)
            except (http.client.HTTPException, OSError):
                conn.close()
                conn = g.connection(timeout=30)
                r = g.request("GET", "/jwt", headers=h, conn=conn)
            got.append((r.status, r.header("www-authenticate"), r.body))
        conn.close()
        with lock:
            statuses.extend(got)

    threads = [threading.Thread(target=run, args=(tokens[i::nthreads],))
               for i in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return statuses


def test_unknown_kid_flood_fetches_at_most_twice(emu, keys, url_gws):
    srv, g = url_gws["flood"]
    wait_refetch_window(srv)
    before = srv.fetch_count()
    signing_key = keys.ec256
    tokens = []
    for i in range(1000):
        kid = b64u(os.urandom(9))
        tokens.append(mint(keys, alg="ES256", kid=kid, key=signing_key, jti=str(i)))
    SENT.extend(tokens[:50])
    start = time.monotonic()
    got = _flood(g, tokens)
    elapsed = time.monotonic() - start
    assert len(got) == 1000
    bad = [x for x in got if x != (401, 'Bearer error="invalid_token"',
                                    b'{"message":"Unauthorized"}')]
    assert bad == [], bad[:5]
    extra = srv.fetch_count() - before
    assert 1 <= extra <= 2, f"{extra} fetches for 1000 unknown kids in {elapsed:.1f}s"
    assert emu.invocations() == []
    event_of(call(g, "/jwt", mint(keys, kid="url-a")))


def test_issuer_answering_500_keeps_the_last_keys(emu, keys, url_gws):
    srv, g = url_gws["down500"]
    srv.set_mode("status", 500)
    wait_refetch_window(srv)
    before = srv.fetch_count()
    # an unknown kid makes the daemon ask the issuer, which fails
    assert_unauthorized(call(g, "/jwt", mint(keys, kid="url-b", key=keys.rsa2)))
    assert srv.fetch_count() > before
    for kid, alg in (("url-a", "RS256"), ("url-ec", "ES256")):
        event_of(call(g, "/jwt", mint(keys, alg=alg, kid=kid, sub=f"still-{kid}")))
    time.sleep(1.5)  # background retries fail too: still serving
    event_of(call(g, "/jwt", mint(keys, kid="url-a")))


def test_issuer_gone_keeps_the_last_keys(emu, keys, url_gws):
    srv, g = url_gws["stopped"]
    wait_refetch_window(srv)
    srv.stop()
    assert_unauthorized(call(g, "/jwt", mint(keys, kid="url-b", key=keys.rsa2)))
    for kid, alg in (("url-a", "RS256"), ("url-ec", "ES256")):
        event_of(call(g, "/jwt", mint(keys, alg=alg, kid=kid)))
    time.sleep(1.5)
    event_of(call(g, "/jwt", mint(keys, kid="url-a")))


def test_hanging_issuer_bounded_and_known_kids_not_delayed(emu, keys, url_gws):
    srv, g = url_gws["hang"]
    srv.set_mode("hang", delay_s=5.0)
    wait_refetch_window(srv)
    before = srv.fetch_count()
    result = {}

    def unknown():
        t0 = time.monotonic()
        result["r"] = call(g, "/jwt", mint(keys, kid="url-b", key=keys.rsa2))
        result["t"] = time.monotonic() - t0

    th = threading.Thread(target=unknown)
    th.start()
    assert poll(lambda: srv.fetch_count() > before, timeout=3), "no refetch for an unknown kid"
    # a token with a known kid does not wait for the issuer
    t0 = time.monotonic()
    event_of(call(g, "/jwt", mint(keys, kid="url-a")))
    known_t = time.monotonic() - t0
    th.join(10)
    assert not th.is_alive()
    assert_unauthorized(result["r"])
    # the fetch deadline is 1500 ms: the request does not wait for the 5 s issuer
    assert result["t"] < 4.0, result["t"]
    assert known_t < 1.0, known_t


# --------------------------------------------------------------------------
# Last: no token or key in any log of this module's shared gateways
# --------------------------------------------------------------------------

def test_no_token_or_key_in_logs(gw, url_gws, shared_use_gw):
    gws = list(MODULE_GATEWAYS) + [g for _, g in url_gws.values()]
    secrets = set()
    for t in SENT:
        if len(t) >= 20:  # ".." and the like occur in any text
            secrets.add(t)
        if t.count(".") == 2 and len(parts(t)[2]) >= 20:
            secrets.add(parts(t)[2])
    assert secrets
    for g in gws:
        texts = [g.log_text()]
        if g.access_log_path and os.path.exists(g.access_log_path):
            with open(g.access_log_path) as f:
                texts.append(f.read())
        for text in texts:
            leaked = [s[:40] for s in secrets if s in text]
            assert leaked == [], leaked[:3]
