"""hello: the demo function.

Answers every request with a small JSON greeting that names the path and method
it was called with.  Works with both API Gateway payload formats: 2.0 carries
them in rawPath and requestContext.http.method, 1.0 in path and httpMethod.
"""
import json


def handler(event, context):
    event = event if isinstance(event, dict) else {}
    http = (event.get("requestContext") or {}).get("http") or {}
    body = {
        "message": "hello",
        "path": event.get("rawPath") or event.get("path"),
        "method": http.get("method") or event.get("httpMethod"),
    }
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body),
    }
