#!/usr/bin/python3
"""Regenerate the JWKS test vectors of tests/unit/test_jwks.c.

Run with Debian's /usr/bin/python3 (it has python3-cryptography) from any
directory; the files are written next to this script. Keys are fresh on
every run: commit the outputs together.

  set.json        a JWKS with the usable keys below, in this order, plus
                  keys that must be skipped (see SKIPPED)
  <kid>.pem       the public key of each usable JWK, SubjectPublicKeyInfo PEM
  rsa-1024.json   a JWKS whose only key is a 1024-bit RSA key (too small)

Test-only material: the private keys are thrown away.
"""
import base64
import json
import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

HERE = os.path.dirname(os.path.abspath(__file__))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def uint(value: int, size: int = 0) -> bytes:
    """Big-endian bytes: minimal when size is 0, else exactly size."""
    if size == 0:
        size = max(1, (value.bit_length() + 7) // 8)
    return value.to_bytes(size, "big")


def rsa_jwk(kid, bits, alg):
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    nums = key.public_numbers()
    jwk = {"kty": "RSA", "kid": kid, "use": "sig", "n": b64url(uint(nums.n)),
           "e": b64url(uint(nums.e))}
    if alg:
        jwk["alg"] = alg
    return jwk, key


CURVES = {"P-256": (ec.SECP256R1(), 32), "P-384": (ec.SECP384R1(), 48),
          "P-521": (ec.SECP521R1(), 66)}


def ec_jwk(kid, crv, alg):
    curve, size = CURVES[crv]
    key = ec.generate_private_key(curve).public_key()
    nums = key.public_numbers()
    jwk = {"kty": "EC", "kid": kid, "crv": crv, "x": b64url(uint(nums.x, size)),
           "y": b64url(uint(nums.y, size))}
    if alg:
        jwk["alg"] = alg
    return jwk, key


def pem(key) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def main():
    usable = [
        rsa_jwk("rsa-2048", 2048, "RS256"),
        rsa_jwk("rsa-3072", 3072, None),
        rsa_jwk("rsa-4096", 4096, "PS512"),
        ec_jwk("ec-p256", "P-256", "ES256"),
        ec_jwk("ec-p384", "P-384", "ES384"),
        ec_jwk("ec-p521", "P-521", "ES512"),
    ]
    small, _ = rsa_jwk("rsa-1024", 1024, "RS256")
    # Interleaved with the usable keys: each must be skipped.
    skipped = [
        small,
        {"kty": "oct", "kid": "hmac", "k": b64url(os.urandom(32)), "alg": "HS256"},
        dict(usable[0][0], kid="enc-key", use="enc", alg="RSA-OAEP"),
        dict(usable[3][0], kid="ec-wrap", key_ops=["wrapKey"]),
        {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": b64url(os.urandom(32))},
    ]
    keys = []
    for i, (jwk, _) in enumerate(usable):
        keys.append(jwk)
        if i < len(skipped):
            keys.append(skipped[i])
    with open(os.path.join(HERE, "set.json"), "w") as f:
        json.dump({"keys": keys}, f, indent=2)
        f.write("\n")
    for jwk, key in usable:
        with open(os.path.join(HERE, jwk["kid"] + ".pem"), "wb") as f:
            f.write(pem(key))
    with open(os.path.join(HERE, "rsa-1024.json"), "w") as f:
        json.dump({"keys": [small]}, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
