"""Vendor clients behind one interface (:class:`Sink`); a new vendor is one new module here."""

import httpx

from connector.config import SinkSettings
from connector.pacing import Pacer
from connector.sinks._base import PREPAID, HttpSink, Sink, parse_retry_after, raise_for_status
from connector.sinks.loop import LoopSink
from connector.sinks.shoplazza import ShoplazzaSink

KINDS: dict[str, type[LoopSink] | type[ShoplazzaSink]] = {"loop": LoopSink, "shoplazza": ShoplazzaSink}


def make_sink(
    settings: SinkSettings, transport: httpx.AsyncBaseTransport | None = None, pacer: Pacer | None = None
) -> Sink:
    """The vendor client named by ``settings.kind``; every request it sends waits on ``pacer``."""
    return KINDS[settings.kind](settings, transport, pacer)


__all__ = [
    "KINDS",
    "PREPAID",
    "HttpSink",
    "LoopSink",
    "ShoplazzaSink",
    "Sink",
    "make_sink",
    "parse_retry_after",
    "raise_for_status",
]
