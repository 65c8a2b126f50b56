"""Structured logs: key=value lines for people or JSON lines for collectors, each with the request id."""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
# Attributes every LogRecord has; anything else a caller passed with extra= is printed as a field.
# uvicorn's color_message repeats the message with terminal colour codes: never a field of its own.
STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "color_message",
}


# Libraries whose own debug lines carry values (aiosqlite prints each statement's parameters, the OpenAI SDK
# each request's options with the prompt): their debug output is never emitted, whatever the level.
OWN_LOGGERS = ("imagegate", "uvicorn")
# Control characters (and lone surrogates, which cannot be written as UTF-8) would let a value forge or break
# log lines: each is written as an escape instead.
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
NEEDS_QUOTES = re.compile('[ "=]')
# A driver's error may quote values (the parameter it could not send, PostgreSQL's DETAIL naming a duplicate
# key or a failing row); the log keeps the error, not the values.
QUOTED_VALUES = [
    re.compile(r"(invalid input for query argument \$\d+: ).*"),
    re.compile(r"(Key \(.*?\)=\().*(\) (?:already exists|is not present in table|conflicts with).*)"),
    re.compile(r"(Failing row contains \().*(\))"),
]


def escape(text: str) -> str:
    """The text with every control character as a visible escape (a newline becomes \\n): one line, always."""
    # Every character UNSAFE matches is unprintable, so a printable text (most are) has nothing to escape.
    return text if text.isprintable() else UNSAFE.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char) or (
        f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"
    )


def scrub_exception(text: str) -> str:
    """A message or traceback without the values a database driver quoted in its error."""
    for pattern in QUOTED_VALUES:
        text = pattern.sub(lambda m: m.group(1) + "(value hidden)" + (m.group(2) if m.re.groups > 1 else ""), text)
    return text


class ThirdPartyDebugFilter(logging.Filter):
    """Drops debug records of libraries (theirs may hold statement parameters, prompts or headers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keeps ImageGate's and uvicorn's records at every level, other libraries' from info up."""
        return record.levelno > logging.DEBUG or record.name.split(".")[0] in OWN_LOGGERS


def current_request_id() -> str | None:
    """The id of the HTTP request being served in this task, if any."""
    return request_id_var.get()


class RequestIdFilter(logging.Filter):
    """Puts the current request id on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Never drops a record."""
        record.request_id = request_id_var.get()
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = {k: v for k, v in record.__dict__.items() if k not in STANDARD and not k.startswith("_")}
    request_id = getattr(record, "request_id", None)
    if request_id:
        fields = {"request_id": request_id, **fields}
    return fields


class KeyValueFormatter(logging.Formatter):
    """`2026-11-21T20:00:00Z INFO imagegate.http msg key=value …`."""

    def format(self, record: logging.LogRecord) -> str:
        """One line per record (tracebacks follow on their own lines)."""
        when = _second(int(record.created))
        pairs = " ".join(f"{escape(str(k))}={_quote(v)}" for k, v in _fields(record).items())
        line = f"{when} {record.levelname} {record.name}: {escape(scrub_exception(record.getMessage()))}" + (
            f" {pairs}" if pairs else ""
        )
        if record.exc_info:
            line += "\n" + escape_lines(scrub_exception(self.formatException(record.exc_info)))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """time, level, logger, message, the fields, and the exception if any."""
        body: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": scrub_exception(record.getMessage()),
            **_fields(record),
        }
        if record.exc_info:
            body["exception"] = scrub_exception(self.formatException(record.exc_info))
        # ensure_ascii: every control character and surrogate leaves as a \\u escape.
        return json.dumps(body, default=str, ensure_ascii=True)


@functools.lru_cache(maxsize=4)  # lines come in order: the last few seconds cover nearly all
def _second(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def escape_lines(text: str) -> str:
    """A multi-line text (a traceback) kept on its own lines, every other control character escaped."""
    return "\n".join(escape(line) for line in text.split("\n"))


def _quote(value: Any) -> str:
    text = escape(str(value))
    return json.dumps(text) if (not text or NEEDS_QUOTES.search(text)) else text


def configure(*, level: str, fmt: str) -> None:
    """Route every logger (uvicorn's too) through one handler in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    handler.addFilter(RequestIdFilter())
    handler.addFilter(ThirdPartyDebugFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
