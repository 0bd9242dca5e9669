"""cookies: two Set-Cookie values and non-string header values.

As serverless-express answers: for a 2.0 event the cookies go in "cookies", for
a 1.0 event in multiValueHeaders["Set-Cookie"]; query both=1 sends both forms.
headers also carries a number and a boolean (x-count: 3, x-flag: true), which
the gateway must send as their text ("3", "true").
"""
import json

COOKIES = ["session=abc123; Path=/; HttpOnly", "theme=dark; Path=/; Max-Age=3600"]


def handler(event, context):
    query = event.get("queryStringParameters") or {}
    v2 = event.get("version") == "2.0"
    response = {
        "statusCode": 200,
        "headers": {"content-type": "application/json", "x-count": 3, "x-flag": True},
        "body": json.dumps({"cookies": len(COOKIES)}),
    }
    if v2 or query.get("both") == "1":
        response["cookies"] = list(COOKIES)
    if not v2 or query.get("both") == "1":
        response["multiValueHeaders"] = {"Set-Cookie": list(COOKIES)}
    return response
