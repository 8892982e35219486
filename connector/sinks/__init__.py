"""Vendor clients behind one interface (:class:`Sink`); a new vendor is one new module here."""

from connector.config import SinkSettings
from connector.sinks._base import HttpSink, Sink, parse_retry_after, raise_for_status
from connector.sinks.loop import LoopSink


def make_sink(settings: SinkSettings) -> Sink:
    """The vendor client named by ``settings.kind``."""
    kinds = {"loop": LoopSink}
    return kinds[settings.kind](settings)


__all__ = ["HttpSink", "LoopSink", "Sink", "make_sink", "parse_retry_after", "raise_for_status"]
