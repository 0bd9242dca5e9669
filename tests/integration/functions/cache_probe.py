"""Test-only handler for the response cache tests (tests/integration/test_cache.py).

Every call takes the next number of a per-process counter, so that a test
can tell which invocation produced an answer: a HIT repeats the number of
the request that filled the entry, a fresh answer has a new one. The
emulator's invocation records count the calls.

The answer is 200 application/json {"n": N, "method", "path", "query"
(queryStringParameters), "lang" (the accept-language header), "variant"
(x-variant), "key_id" (the API key id), "sub" (the JWT subject)}, shaped by
these query parameters (which a test leaves out of the route's key_query
when the same cache key must be hit):

  status=N           statusCode N
  cc=VALUE           a Cache-Control header
  cookie=header      a Set-Cookie header
  cookie=cookies     a 2.0 "cookies" entry (the gateway sends it as Set-Cookie)
  cookie=multi       multiValueHeaders {"Set-Cookie": [...]}
  xh=VALUE           an x-probe header
  xcache=VALUE       an X-Cache header (as a CDN in front of the function sends)
  age=VALUE          an Age header
  headempty=1        a HEAD request gets an empty body (as web frameworks answer HEAD)
  pad=N              a text/plain body of exactly N bytes: "n=<N>;" then filler
  ms=N               sleep N milliseconds first
  fail=1             raise (Lambda answers with X-Amz-Function-Error)
  malformed=1        an invalid proxy response (statusCode "abc")
"""

import itertools
import json
import time

_COUNTER = itertools.count(1)


def _header(event, name):
    for key, value in (event.get("headers") or {}).items():
        if key.lower() == name:
            return value
    return None


def handler(event, context):
    n = next(_COUNTER)
    query = event.get("queryStringParameters") or {}
    if query.get("ms"):
        time.sleep(int(query["ms"]) / 1000.0)
    if query.get("fail") == "1":
        raise RuntimeError("cache_probe told to fail")
    if query.get("malformed") == "1":
        return {"statusCode": "abc", "body": "x"}
    rc = event.get("requestContext") or {}
    authorizer = rc.get("authorizer") or {}
    http = rc.get("http") or {}
    headers = {"content-type": "application/json"}
    if "pad" in query:
        size = int(query["pad"])
        head = f"n={n};"
        body = (head + "x" * size)[:size]
        headers["content-type"] = "text/plain"
    else:
        body = json.dumps({
            "n": n,
            "method": http.get("method") or event.get("httpMethod"),
            "path": event.get("rawPath") or event.get("path"),
            "query": query,
            "lang": _header(event, "accept-language"),
            "variant": _header(event, "x-variant"),
            "key_id": (authorizer.get("lambda") or {}).get("apiKeyId"),
            "sub": ((authorizer.get("jwt") or {}).get("claims") or {}).get("sub"),
        })
    response = {"statusCode": int(query.get("status", 200)), "headers": headers, "body": body}
    if "cc" in query:
        headers["cache-control"] = query["cc"]
    if "xh" in query:
        headers["x-probe"] = query["xh"]
    if "xcache" in query:
        headers["x-cache"] = query["xcache"]
    if "age" in query:
        headers["age"] = query["age"]
    if query.get("headempty") == "1" and (http.get("method") or event.get("httpMethod")) == "HEAD":
        response["body"] = ""
    cookie = query.get("cookie")
    if cookie == "header":
        headers["set-cookie"] = "sid=abc; Path=/"
    elif cookie == "cookies":
        response["cookies"] = ["sid=abc; Path=/"]
    elif cookie == "multi":
        response["multiValueHeaders"] = {"Set-Cookie": ["sid=abc; Path=/", "b=2"]}
    return response
