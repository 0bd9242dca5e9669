"""users: a GET /users/{id} style resource.

Reads the id from pathParameters (the route must name it {id}; without one the
last path segment is used).  The id "missing" answers 404, as a real lookup
that found nothing would.
"""
import json


def _path(event):
    return event.get("rawPath") or event.get("path") or "/"


def handler(event, context):
    user_id = (event.get("pathParameters") or {}).get("id")
    if user_id is None:
        user_id = _path(event).rstrip("/").rsplit("/", 1)[-1]
    if user_id == "missing":
        return {
            "statusCode": 404,
            "headers": {"content-type": "application/json"},
            "body": json.dumps({"message": "user not found", "id": user_id}),
        }
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"id": user_id, "name": f"user-{user_id}"}),
    }
