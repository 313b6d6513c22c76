"""Logging: one JSON object per line in production, readable text under `gateway dev`.

Secrets never reach a log line: request headers are not logged at all, and the access log
carries only the fields the hot path chose (no API keys, Authorization or cookies).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from gateway.config import LoggingSettings


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if fields:
            doc.update(fields)
        else:
            doc["message"] = record.getMessage()
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        if fields and record.name == "gateway.access":
            extras = " ".join(f"{k}={v}" for k, v in fields.items()
                              if v is not None and k not in ("method", "path", "status"))
            record.msg = f"{fields.get('method')} {fields.get('path')} -> {fields.get('status')} {extras}"
            record.args = ()
        return super().format(record)


def configure_logging(settings: LoggingSettings, *, force_text: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    use_text = force_text or settings.format == "text"
    handler.setFormatter(TextFormatter() if use_text else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    logging.getLogger("gateway.access").disabled = not settings.access_log
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).disabled = True
