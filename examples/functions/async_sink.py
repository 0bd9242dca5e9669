"""async_sink: the target of async (Event) routes.

Does nothing visible and returns nothing: the emulator's invocation record
(GET /_emulator/invocations, "done": true once it ran) is the proof it ran.
RUNS counts the invocations of this process, for in-process checks.
"""

RUNS = []


def handler(event, context):
    RUNS.append(context.aws_request_id)
    print(f"async_sink ran request_id={context.aws_request_id}")
    return None
