"""big: a large text body of a known repeating pattern.

query size=N (default 5 MiB = 5242880): the body is PATTERN repeated and cut to
exactly N bytes, content-type text/plain.  Above about 6 MB the response no
longer fits Lambda's limit and the invocation fails (ResponseSizeTooLarge).
"""

PATTERN = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"
DEFAULT_SIZE = 5 * 1024 * 1024


def body_of_size(n):
    """The body returned for size=n."""
    return (PATTERN * (n // len(PATTERN) + 1))[:n]


def handler(event, context):
    query = event.get("queryStringParameters") or {}
    n = max(0, int(query.get("size", DEFAULT_SIZE)))
    return {
        "statusCode": 200,
        "headers": {"content-type": "text/plain"},
        "body": body_of_size(n),
    }
