"""slow: sleeps, then answers 200.

query ms=N (default 2000): how long to sleep, in milliseconds.  Used for the
gateway's timeout (504) and in-flight limit (503) tests.
"""
import json
import time


def handler(event, context):
    query = event.get("queryStringParameters") or {}
    ms = max(0, int(query.get("ms", 2000)))
    time.sleep(ms / 1000.0)
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"slept_ms": ms}),
    }
