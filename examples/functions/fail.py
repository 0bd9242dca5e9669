"""fail: raises an exception whose message holds a (fake) secret.

Lambda answers 200 with X-Amz-Function-Error: Unhandled and the runtime's error
document (errorMessage, errorType, stackTrace).  The gateway must turn that into
502 {"message":"Internal server error"} and never show the message or the stack
to the client; tests look for FAKE_SECRET in what the client receives.
"""

FAKE_SECRET = "sk_live_FAKE_SECRET_7d1e0c55_do_not_leak"


class DatabaseError(Exception):
    pass


def _connect(dsn):
    raise DatabaseError(f"could not connect to {dsn}: password authentication failed")


def _load_user():
    _connect(f"postgres://admin:{FAKE_SECRET}@db.internal:5432/users")


def handler(event, context):
    _load_user()
