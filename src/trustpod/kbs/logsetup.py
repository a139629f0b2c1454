"""KBS logging: one format for every process, control characters escaped, optional JSON lines.

``trustpod kbs serve`` hands ``uvicorn_log_config(...)`` to uvicorn, which applies it in the
supervisor and again in every worker process (a spawned worker inherits no logging setup).
Every line has a timestamp, a level, the logger and the process id; with
``[trustpod] log_format = "json"`` every line is one JSON object. Each request gets an id
(``RequestIdMiddleware``): it is the ``x-request-id`` of an error reply and the
``request_id`` of every line logged while serving it.

Text the client controls (paths, reasons) may hold control characters: ``escape_control``
writes them as ``\\xNN``/``\\uNNNN`` so a request cannot forge or split log lines.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import uuid
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "JsonFormatter",
    "RequestIdFilter",
    "RequestIdMiddleware",
    "TextFormatter",
    "current_request_id",
    "escape_control",
    "uvicorn_log_config",
]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "trustpod_request_id", default=None
)
# C0 controls, DEL, C1 controls, the Unicode line/paragraph separators, and the backslash
# (so an escaped sequence cannot be faked by sending it literally).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\\\\]")
_CONTROL_ONLY = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape_one(m: re.Match[str]) -> str:
    c = m.group()
    if c == "\\":
        return "\\\\"
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_control(text: str, *, backslash: bool = True) -> str:
    """``text`` with control characters (and, unless ``backslash`` is false, backslashes)
    escaped. Escape client text where it enters a log line; the formatter escapes what is
    left without touching backslashes, so nothing is escaped twice."""
    return (_CONTROL if backslash else _CONTROL_ONLY).sub(_escape_one, text)


def current_request_id() -> str | None:
    """The id of the request being served in this context (None outside a request)."""
    return _request_id.get()


class RequestIdMiddleware:
    """Gives every HTTP request an id (``current_request_id()``) for its log lines and replies."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = _request_id.set(uuid.uuid4().hex)
        try:
            await self.app(scope, receive, send)
        finally:
            _request_id.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id() or "-"
        return True


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT`` with the message's control characters escaped (tracebacks keep their
    line breaks: they are ours, not the client's)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_control(record.message, backslash=False)
        line = super().formatMessage(record)
        rid = getattr(record, "request_id", "-")
        return line if rid == "-" else f"{line} request_id={rid}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, pid, message, request_id, exc."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", "-")
        if rid != "-":
            doc["request_id"] = rid
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=True, default=str)


def uvicorn_log_config(*, trustpod_level: int, root_level: int, fmt: str) -> dict[str, Any]:
    """``logging.config.dictConfig`` document for ``uvicorn.Config(log_config=...)``."""
    formatter = "json" if fmt == "json" else "text"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {
            "text": {"()": TextFormatter},
            "json": {"()": JsonFormatter},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": formatter,
                "filters": ["request_id"],
            }
        },
        "root": {"handlers": ["stderr"], "level": logging.getLevelName(root_level)},
        "loggers": {
            "trustpod": {"level": logging.getLevelName(trustpod_level), "propagate": True},
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": True},
        },
    }
