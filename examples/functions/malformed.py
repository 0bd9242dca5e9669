"""malformed: answers a broken proxy response chosen by query kind=...

The gateway must answer 502 {"message":"Internal server error"} (or, where API
Gateway accepts the value, pass it on safely) and never crash, hang, split a
header or overflow its stack.  Kinds (KINDS below):

  status_string    statusCode "abc"
  status_huge      statusCode 99999999999999999999
  status_negative  statusCode -1
  status_zero      statusCode 0
  status_float     statusCode 200.5
  status_nan       statusCode NaN (the payload is then not valid JSON)
  crlf_header      a header value with CR LF and an injected header
  lf_header        a header value with a bare LF
  nul_header       a header value with a NUL byte
  bad_header_name  a header name with a space and a colon
  empty_header_name  a header named ""
  headers_string   headers is a string, not an object
  headers_nested   a header value that is an object
  multivalue_bad   multiValueHeaders values that are not lists
  cookies_bad      cookies is a string, not a list
  bad_base64       isBase64Encoded true with a body that is not base64
  body_object      body is a JSON object, not a string
  deep             a bare list nested `depth` deep (default 10000)
  deep_field       a valid response with a `depth`-deep list in an extra field
  huge_header      a 1 MiB header value
  many_headers     `count` headers (default 10000)
  string           a bare JSON string ("not a proxy response")
  number           a bare JSON number
  null             null (the handler returns None)
  empty_object     {}
  unserializable   a Python set: the runtime fails with Runtime.MarshalError
"""
import json

KINDS = [
    "status_string", "status_huge", "status_negative", "status_zero", "status_float",
    "status_nan", "crlf_header", "lf_header", "nul_header", "bad_header_name",
    "empty_header_name", "headers_string", "headers_nested", "multivalue_bad",
    "cookies_bad", "bad_base64", "body_object", "deep", "deep_field", "huge_header",
    "many_headers", "string", "number", "null", "empty_object", "unserializable",
]


def _ok(**extra):
    response = {"statusCode": 200, "headers": {"content-type": "text/plain"}, "body": "ok"}
    response.update(extra)
    return response


def _nested(depth):
    root = []
    node = root
    for _ in range(depth - 1):
        child = []
        node.append(child)
        node = child
    return root


def handler(event, context):
    query = (event.get("queryStringParameters") if isinstance(event, dict) else None) or {}
    kind = query.get("kind", "")
    depth = max(1, min(int(query.get("depth", 10000)), 1000000))
    if kind == "status_string":
        return _ok(statusCode="abc")
    if kind == "status_huge":
        return _ok(statusCode=99999999999999999999)
    if kind == "status_negative":
        return _ok(statusCode=-1)
    if kind == "status_zero":
        return _ok(statusCode=0)
    if kind == "status_float":
        return _ok(statusCode=200.5)
    if kind == "status_nan":
        return _ok(statusCode=float("nan"))
    if kind == "crlf_header":
        return _ok(headers={"content-type": "text/plain",
                            "x-evil": "a\r\nx-injected: yes\r\n\r\nsmuggled"})
    if kind == "lf_header":
        return _ok(headers={"content-type": "text/plain", "x-evil": "a\nx-injected: yes"})
    if kind == "nul_header":
        return _ok(headers={"content-type": "text/plain", "x-evil": "a\u0000b"})
    if kind == "bad_header_name":
        return _ok(headers={"content-type": "text/plain", "bad header:name": "x"})
    if kind == "empty_header_name":
        return _ok(headers={"content-type": "text/plain", "": "x"})
    if kind == "headers_string":
        return _ok(headers="content-type: text/plain")
    if kind == "headers_nested":
        return _ok(headers={"content-type": "text/plain", "x-obj": {"a": 1}})
    if kind == "multivalue_bad":
        return _ok(multiValueHeaders={"x-multi": "not-a-list", "x-num": 5})
    if kind == "cookies_bad":
        return _ok(cookies="a=1")
    if kind == "bad_base64":
        return _ok(isBase64Encoded=True, body="!!!not*base64***")
    if kind == "body_object":
        return _ok(body={"a": 1})
    if kind == "deep":
        return _nested(depth)
    if kind == "deep_field":
        return _ok(extra=_nested(depth))
    if kind == "huge_header":
        return _ok(headers={"content-type": "text/plain", "x-huge": "h" * (1024 * 1024)})
    if kind == "many_headers":
        count = max(0, min(int(query.get("count", 10000)), 100000))
        headers = {f"x-h{i}": str(i) for i in range(count)}
        headers["content-type"] = "text/plain"
        return _ok(headers=headers)
    if kind == "string":
        return "not a proxy response"
    if kind == "number":
        return 42
    if kind == "null":
        return None
    if kind == "empty_object":
        return {}
    if kind == "unserializable":
        return _ok(body={1, 2, 3})
    return {
        "statusCode": 400,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"message": f"unknown kind {kind!r}", "kinds": KINDS}),
    }
