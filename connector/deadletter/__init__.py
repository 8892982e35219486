"""Dead letters, in one place: the contract's headers (``connector.constants``), the producer the
pipeline writes with (``publish``), and the tools that read a dead-letter topic back (``reader``:
records, filters, `connector dlq inspect`) and replay it (``redrive``: `connector dlq redrive`)."""

from connector.deadletter.publish import (
    DeadLetterPublisher,
    DeadLetterWriter,
    Failure,
    KafkaDeadLetterWriter,
    dead_letter_headers,
)
from connector.deadletter.reader import DeadLetter, DeadLetterReader, Filter, inspect
from connector.deadletter.redrive import STALE, RedriveResult, redrive

__all__ = [
    "STALE",
    "DeadLetter",
    "DeadLetterPublisher",
    "DeadLetterReader",
    "DeadLetterWriter",
    "Failure",
    "Filter",
    "KafkaDeadLetterWriter",
    "RedriveResult",
    "dead_letter_headers",
    "inspect",
    "redrive",
]
