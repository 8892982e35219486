"""Vendor clients behind one interface (:class:`Sink`); a new vendor is one new module here."""

from typing import Any

import httpx

from connector.config import SinkSettings
from connector.pacing import Pacer
from connector.sinks._base import PREPAID, HttpSink, Sink, parse_retry_after, raise_for_status
from connector.sinks.loop import LoopSink
from connector.sinks.shoplazza import ShoplazzaSink
from connector.vendors import vendor


def make_sink(
    settings: SinkSettings, transport: httpx.AsyncBaseTransport | None = None, pacer: Pacer | None = None
) -> Sink:
    """The vendor client named by ``settings.kind`` (its entry in :data:`connector.vendors.VENDORS`);
    every request it sends waits on ``pacer``."""
    cls: Any = vendor(settings.kind).sink_class()
    sink: Sink = cls(settings, transport, pacer)
    return sink


__all__ = [
    "PREPAID",
    "HttpSink",
    "LoopSink",
    "ShoplazzaSink",
    "Sink",
    "make_sink",
    "parse_retry_after",
    "raise_for_status",
]
