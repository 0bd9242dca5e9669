#!/usr/bin/python3
"""Regenerate the JWT test vectors in this directory with PyJWT.

Run with Debian's interpreter, which has python3-jwt and python3-cryptography:

    /usr/bin/python3 tests/data/jwt/regen.py

tests/unit/test_jwt.c reads every file written here (see README.md for the
list). New keys are generated on every run and the private keys are not
kept: the tokens and the public keys (*.pem) are rewritten together. The
RFC 7515 examples (appendix A.2 and A.3) are written from the RFC's own
text below, and checked here with cryptography before they are written.

Every token minted here carries exp 4102444800 (2100-01-01), iat 1699999000
and nbf 1699999000; the C test verifies them at now = 1700000000.
"""

import base64
import hashlib
import hmac
import json
import os
import sys

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

HERE = os.path.dirname(os.path.abspath(__file__))

ISSUER = "https://issuer.example.com/pool-1"
CLAIMS = {
    "iss": ISSUER,
    "aud": "client-a",
    "sub": "user-1",
    "exp": 4102444800,
    "iat": 1699999000,
    "nbf": 1699999000,
    "scope": "read write",
    "token_use": "access",
}

# RFC 7515 appendix A.2 (RS256) and A.3 (ES256): the example tokens and the
# public halves of their keys, copied from the RFC.
RFC_A2_TOKEN = (
    "eyJhbGciOiJSUzI1NiJ9"
    ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
    ".cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5"
    "jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L0"
    "7Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipU"
    "TI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw"
)
RFC_A2_N = (
    "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4Q"
    "lL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYU"
    "sLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmo"
    "udF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ"
)
RFC_A2_E = "AQAB"
RFC_A3_TOKEN = (
    "eyJhbGciOiJFUzI1NiJ9"
    ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
    ".DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
)
RFC_A3_X = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"
RFC_A3_Y = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_int(text):
    return int.from_bytes(b64url_decode(text), "big")


def pem(public_key):
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write(name, data):
    if isinstance(data, str):
        data = data.encode("ascii")
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)


def rfc_examples():
    """Rebuild the RFC keys from their JWK numbers, check the RFC tokens
    against them, and write both."""
    a2 = rsa.RSAPublicNumbers(b64url_int(RFC_A2_E), b64url_int(RFC_A2_N)).public_key()
    signing_input, _, sig = RFC_A2_TOKEN.rpartition(".")
    a2.verify(
        b64url_decode(sig),
        signing_input.encode("ascii"),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )
    a3 = ec.EllipticCurvePublicNumbers(
        b64url_int(RFC_A3_X), b64url_int(RFC_A3_Y), ec.SECP256R1()
    ).public_key()
    signing_input, _, sig = RFC_A3_TOKEN.rpartition(".")
    raw = b64url_decode(sig)
    der = utils.encode_dss_signature(
        int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    )
    a3.verify(der, signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    write("rfc7515-a2.pem", pem(a2))
    write("rfc7515-a2.jwt", RFC_A2_TOKEN)
    write("rfc7515-a3.pem", pem(a3))
    write("rfc7515-a3.jwt", RFC_A3_TOKEN)


def main():
    rfc_examples()

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_keys = {
        "ec-256": ec.generate_private_key(ec.SECP256R1()),
        "ec-384": ec.generate_private_key(ec.SECP384R1()),
        "ec-521": ec.generate_private_key(ec.SECP521R1()),
    }
    rsa_pem = pem(rsa_key.public_key())
    write("rsa.pem", rsa_pem)
    for kid, key in ec_keys.items():
        write(kid.replace("-", "") + ".pem", pem(key.public_key()))

    # One token per algorithm, minted by PyJWT as a client library would.
    minted = {}
    for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"):
        minted[alg] = jwt.encode(CLAIMS, rsa_key, algorithm=alg, headers={"kid": "rsa-1"})
    for alg, kid in (("ES256", "ec-256"), ("ES384", "ec-384"), ("ES512", "ec-521")):
        minted[alg] = jwt.encode(CLAIMS, ec_keys[kid], algorithm=alg, headers={"kid": kid})
    for alg, token in minted.items():
        # PyJWT must accept its own token: a vector that is wrong from the
        # start would make the C test prove nothing.
        if alg.startswith("ES"):
            key = ec_keys[{"ES256": "ec-256", "ES384": "ec-384", "ES512": "ec-521"}[alg]]
        else:
            key = rsa_key
        key = key.public_key()
        jwt.decode(token, key, algorithms=[alg], audience="client-a", issuer=ISSUER)
        write(alg.lower() + ".jwt", token)

    payload = b64url(json.dumps(CLAIMS, separators=(",", ":")).encode())

    # Key confusion: HS256 "signed" with the RSA public key's PEM text as the
    # HMAC secret. PyJWT refuses to do this, so it is done by hand.
    header = b64url(b'{"alg":"HS256","kid":"rsa-1","typ":"JWT"}')
    signing_input = (header + "." + payload).encode()
    mac = hmac.new(rsa_pem, signing_input, hashlib.sha256).digest()
    write("hs256-confusion.jwt", header + "." + payload + "." + b64url(mac))

    # ES256 with a valid signature in DER (as OpenSSL and Java produce it)
    # rather than JWS's raw R || S.
    header = b64url(b'{"alg":"ES256","kid":"ec-256","typ":"JWT"}')
    signing_input = (header + "." + payload).encode()
    der = ec_keys["ec-256"].sign(signing_input, ec.ECDSA(hashes.SHA256()))
    assert len(der) != 64
    ec_keys["ec-256"].public_key().verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
    write("es256-der.jwt", header + "." + payload + "." + b64url(der))

    # PS256 signatures that RFC 7518 section 3.5 rules out: a salt longer
    # than the hash output, and MGF1 with another hash than the token's.
    header = b64url(b'{"alg":"PS256","kid":"rsa-1","typ":"JWT"}')
    signing_input = (header + "." + payload).encode()
    for name, pss in (
        ("ps256-salt-max.jwt", padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.MAX_LENGTH)),
        ("ps256-mgf1-sha1.jwt", padding.PSS(padding.MGF1(hashes.SHA1()), 32)),
    ):
        sig = rsa_key.sign(signing_input, pss, hashes.SHA256())
        rsa_key.public_key().verify(sig, signing_input, pss, hashes.SHA256())
        write(name, header + "." + payload + "." + b64url(sig))

    # A token that brings its own key in a "jwk" header and is signed with
    # it, naming the real key's kid: a verifier must not use the embedded key.
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = attacker.public_key().public_numbers()
    embedded = {
        "kty": "RSA",
        "n": b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
        "e": b64url(numbers.e.to_bytes(3, "big")),
    }
    write(
        "jwk-embedded.jwt",
        jwt.encode(CLAIMS, attacker, algorithm="RS256", headers={"kid": "rsa-1", "jwk": embedded}),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
