"""Vendor clients behind one interface (:class:`Sink`); a new vendor is one new module here."""

from connector.config import SinkSettings
from connector.sinks._base import HttpSink, Sink, parse_retry_after, raise_for_status
from connector.sinks.loop import LoopSink
from connector.sinks.shoplazza import ShoplazzaSink

KINDS: dict[str, type[LoopSink] | type[ShoplazzaSink]] = {"loop": LoopSink, "shoplazza": ShoplazzaSink}


def make_sink(settings: SinkSettings) -> Sink:
    """The vendor client named by ``settings.kind``."""
    return KINDS[settings.kind](settings)


__all__ = [
    "KINDS",
    "HttpSink",
    "LoopSink",
    "ShoplazzaSink",
    "Sink",
    "make_sink",
    "parse_retry_after",
    "raise_for_status",
]
