"""gunicorn access log as JSON lines (one object per request, safe to parse)."""

from __future__ import annotations

import os
import time

import orjson
from gunicorn.glogging import Logger


class JsonLinesLogger(Logger):
    """gunicorn's logger with each access entry written as one JSON object per line.

    gunicorn's ``access_log_format`` pastes raw header values into the line, so a quote in a
    User-Agent would break JSON; this serialises the fields instead.
    """

    def access(self, resp, req, environ, request_time) -> None:
        if not self.access_log_enabled:
            return
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "remote": environ.get("REMOTE_ADDR"),
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "status": int(status),
            "bytes": getattr(resp, "sent", None),
            "duration_ms": round(request_time.total_seconds() * 1000, 3),
            "user_agent": environ.get("HTTP_USER_AGENT"),
            "pid": os.getpid(),
        }
        try:
            self.access_log.info(orjson.dumps(entry).decode())
        except Exception:
            self.exception("failed to write an access log entry")
