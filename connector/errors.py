"""The connector's exceptions: one root, and a ``retryable`` flag the retry policy reads.

::

    ConnectorError                    retryable=False
    ├── ConfigError                   bad settings; `connector run` exits with a one-line message
    ├── BrokerUnavailable             Kafka not reachable within the bounded start-up wait
    ├── InputError                    the event can never succeed: dead-lettered, never sent
    │   ├── DecodeError               stage "decode": not JSON, not an object, too large
    │   └── OrderValidationError      stage "validate": violates a documented rule
    ├── SinkError                     a call to the vendor API failed (status, body)
    │   ├── TransientSinkError        retryable=True: the same call may succeed later
    │   │   ├── SinkConnectError      connection refused or reset
    │   │   ├── SinkTimeout           no answer in time
    │   │   ├── RateLimited           429 (``retry_after`` when the vendor sends it)
    │   │   └── ServerError           500, 502, 503, 504
    │   ├── AuthError                 retryable=True: 401/403 are an outage, never a poison event
    │   └── PermanentSinkError        the vendor refuses this event: dead-lettered with the response
    │       ├── RejectedError         400, 422, vendor validation errors
    │       ├── NotFoundError         404
    │       └── ConflictError         409
    └── DeadLetterError               retryable=True: the dead-letter topic could not be written

``stage`` on an :class:`InputError` or :class:`SinkError` names the pipeline stage that failed, as written
to the ``__connector.stage`` dead-letter header.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Root of every error the connector raises on purpose."""

    retryable: bool = False


class ConfigError(ConnectorError):
    """The configuration is invalid: unknown key, wrong type, missing value."""


class BrokerUnavailable(ConnectorError):
    """Kafka could not be reached within the configured start-up wait."""


class InputError(ConnectorError):
    """An event that can never be delivered; it goes to the dead-letter topic."""

    stage: str = "decode"
    external_id: str | None = None


class DecodeError(InputError):
    """The Kafka record is not a JSON object we can read (or is larger than allowed)."""

    stage = "decode"


class OrderValidationError(InputError):
    """The order violates a documented rule; ``problems`` lists ``(field path, rule, value)``."""

    stage = "validate"

    def __init__(self, message: str, problems: list[tuple[str, str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class SinkError(ConnectorError):
    """A vendor API call failed; ``status`` and ``body`` are kept for the dead-letter record."""

    stage = "deliver"

    def __init__(self, message: str, *, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class TransientSinkError(SinkError):
    """The same call may succeed later: retried with backoff."""

    retryable = True


class SinkConnectError(TransientSinkError):
    """The API could not be reached (refused, reset, DNS)."""


class SinkTimeout(TransientSinkError):
    """The API did not answer within the timeout."""


class RateLimited(TransientSinkError):
    """429: over the vendor's budget; ``retry_after`` seconds when the vendor said so."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = 429,
        body: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, body=body)
        self.retry_after = retry_after


class ServerError(TransientSinkError):
    """5xx from the vendor."""


class AuthError(SinkError):
    """401/403: the credentials are wrong or lack scope. An outage, never the event's fault."""

    retryable = True


class PermanentSinkError(SinkError):
    """The vendor refuses this event; retrying cannot help."""


class RejectedError(PermanentSinkError):
    """400/422: the vendor's validation rejected the body."""


class NotFoundError(PermanentSinkError):
    """404: the referenced order does not exist."""


class ConflictError(PermanentSinkError):
    """409: the request conflicts with the vendor's state."""


class DeadLetterError(ConnectorError):
    """The dead-letter topic could not be written; the partition must not advance."""

    retryable = True
