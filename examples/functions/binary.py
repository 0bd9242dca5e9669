"""binary: echoes the request body byte for byte, or returns N known bytes.

- query size=N: N pseudo-random bytes, reproducible by tests with
  random.Random(N).randbytes(N), sent base64 with isBase64Encoded true and
  content-type application/octet-stream (N is capped at 4 MiB, so the
  base64 stays under Lambda's 6 MB response limit).
- otherwise a base64 request body (isBase64Encoded true) comes back as the same
  base64 with content-type application/octet-stream, and a text body comes back
  as text with the request's content-type (text/plain if it had none).
"""
import base64
import random


def _query(event):
    # 2.0 leaves queryStringParameters out when empty; 1.0 sets it to null.
    return event.get("queryStringParameters") or {}


def _header(event, name):
    for key, value in (event.get("headers") or {}).items():
        if key.lower() == name:
            return value
    return None


def random_bytes(n):
    """The bytes returned for size=n."""
    return random.Random(n).randbytes(n)


def handler(event, context):
    size = _query(event).get("size")
    if size is not None:
        n = max(0, min(int(size), 4 * 1024 * 1024))
        return {
            "statusCode": 200,
            "headers": {"content-type": "application/octet-stream"},
            "isBase64Encoded": True,
            "body": base64.b64encode(random_bytes(n)).decode("ascii"),
        }
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        return {
            "statusCode": 200,
            "headers": {"content-type": "application/octet-stream"},
            "isBase64Encoded": True,
            "body": body,
        }
    return {
        "statusCode": 200,
        "headers": {"content-type": _header(event, "content-type") or "text/plain"},
        "isBase64Encoded": False,
        "body": body,
    }
