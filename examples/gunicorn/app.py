"""A WSGI app for the gunicorn example: `command: gunicorn app:app --workers 2 ...`.

trio-orch runs gunicorn's master as the bot; its workers are in the bot's process group,
so `trio-orch stop Web` ends them all, and the master's SIGTERM handling drains them.
"""

import os


def app(environ, start_response):
    body = f"hello from worker {os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
