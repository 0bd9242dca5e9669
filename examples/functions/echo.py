"""echo: returns the whole event it received as the JSON body.

Tests read the body back to inspect exactly what the gateway sent: headers,
query parameters, path parameters, requestContext, body and isBase64Encoded.
"""
import json


def handler(event, context):
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(event),
    }
