"""Test-only handler: answers with the proxy response the test sends.

The request body is a JSON object that is returned as the function's result
as is (statusCode, headers, multiValueHeaders, cookies, body,
isBase64Encoded: whatever the test wants to see the gateway map). A GET has
no body: then the event itself is returned under "event" with status 200,
so a test can see which request headers reached the function.
"""

import base64
import json


def handler(event, context):
    body = event.get("body")
    if body:
        if event.get("isBase64Encoded"):
            body = base64.b64decode(body).decode()
        return json.loads(body)
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"event": event}),
    }
