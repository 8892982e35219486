"""structlog JSON logging to stdout, with every registered secret masked wherever it appears."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_secrets: set[str] = set()
MASK = "***"


def register_secret(value: str) -> None:
    """Mask ``value`` in every log line from now on (API keys, SASL passwords)."""
    if len(value) >= 4:
        _secrets.add(value)


def redact(text: str) -> str:
    """Return ``text`` with every registered secret replaced by ``***``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _redact_processor(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    if _secrets:
        for key, value in event_dict.items():
            if isinstance(value, str):
                event_dict[key] = redact(value)
    return event_dict


def configure(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send structlog JSON lines to ``stream`` (stdout) at ``level``; route stdlib logging (aiokafka)
    the same way."""
    stream = stream or sys.stdout
    numeric = logging.getLevelName(level.upper())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redact_processor,
        structlog.processors.JSONRenderer(),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                _redact_processor,
                structlog.processors.JSONRenderer(),
            ],
            foreign_pre_chain=[structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING))


def get_logger(name: str) -> Any:
    """A structlog logger carrying ``logger_name=name``."""
    return structlog.get_logger(logger_name=name)
