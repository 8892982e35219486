"""The connector's exceptions: one root, and a ``retryable`` flag the retry policy reads.

::

    ConnectorError                    retryable=False, ambiguous=False
    ├── ConfigError                   bad settings; `connector run` exits with a one-line message
    ├── BrokerUnavailable             Kafka not reachable within the bounded start-up wait
    ├── InputError                    the event can never succeed: dead-lettered, never sent
    │   ├── DecodeError               stage "decode": not JSON, not an object, too large
    │   ├── RouteError                stage "route": names no tenant the deployment serves
    │   ├── MappingError              stage "map": the mapping (expression or function) could not
    │   │                             turn the event into an order change
    │   └── OrderValidationError      stage "validate": violates a documented rule
    ├── SinkError                     a call to the vendor API failed (status, body)
    │   ├── TransientSinkError        retryable=True: the same call may succeed later
    │   │   ├── SinkConnectError      not connected: the request was never sent
    │   │   ├── SinkCutOff            ambiguous: sent, then the connection broke before the answer
    │   │   ├── SinkTimeout           ambiguous: sent, no answer in time
    │   │   ├── RateLimited           429 (``retry_after`` when the vendor sends it)
    │   │   └── ServerError           ambiguous: 5xx (it may have been applied)
    │   │       └── Unavailable       503, 408: not processed
    │   ├── AuthError                 retryable=True: 401/403 are an outage, never a poison event
    │   │                             (but see Forbidden)
    │   ├── EndpointError             retryable=True: 3xx, or 404 where the path cannot be the
    │   │                             event's fault (wrong base URL, retired version): an outage
    │   └── PermanentSinkError        the vendor refuses this event: dead-lettered with the response
    │       ├── RejectedError         400, 422, vendor validation errors
    │       ├── NotFoundError         404
    │       ├── Forbidden             403 for one event while other calls succeed (a missing scope)
    │       └── ConflictError         409
    └── DeadLetterError               retryable=True: the dead-letter topic could not be written

``stage`` on an :class:`InputError` or :class:`SinkError` names the pipeline stage that failed, as written
to the ``__connector.stage`` dead-letter header. ``ambiguous`` marks a failure after which the vendor
may still apply the request (a timeout, a cut connection, a gateway error): the delivery waits until
no such late write can land before it sends that order again.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Root of every error the connector raises on purpose."""

    retryable: bool = False
    ambiguous: bool = False


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


class RouteError(InputError):
    """The event names no tenant this deployment serves (or none at all); replayable with
    ``dlq redrive --tenant`` once the tenant exists."""

    stage = "route"

    def __init__(self, message: str, tenant: str | None = None) -> None:
        super().__init__(message)
        self.tenant = tenant


class MappingError(InputError):
    """The deployment's mapping could not turn the event into ``{external_id, updated_at, event_type,
    order}``: an expression gave nothing where a value is required, failed, or a mapping function
    raised. ``mapping`` names the expression (with its file) or the function, ``path`` the output field
    or input location that failed."""

    stage = "map"

    def __init__(self, message: str, *, mapping: str = "", path: str = "") -> None:
        super().__init__(message)
        self.mapping = mapping
        self.path = path


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
    """The API could not be reached (refused, DNS, connect timeout): the request was never sent."""


class SinkCutOff(TransientSinkError):
    """The connection broke after the request was sent: the vendor may have applied it."""

    ambiguous = True


class SinkTimeout(TransientSinkError):
    """The API did not answer within the timeout: the vendor may still apply the request."""

    ambiguous = True


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
    """5xx from the vendor: it may come after the write was applied, or while it still is."""

    ambiguous = True


class Unavailable(ServerError):
    """503 or 408: the vendor says it did not process the request."""

    ambiguous = False


class AuthError(SinkError):
    """401/403: the credentials are wrong or lack scope. An outage, never the event's fault."""

    retryable = True


class EndpointError(SinkError):
    """A 3xx, or a 404 on a path that names no order (wrong base URL, retired API version): the
    configuration is wrong for every event, so it is an outage, never a poison event."""

    retryable = True


class PermanentSinkError(SinkError):
    """The vendor refuses this event; retrying cannot help."""


class RejectedError(PermanentSinkError):
    """400/422: the vendor's validation rejected the body."""


class NotFoundError(PermanentSinkError):
    """404: the referenced order does not exist."""


class Forbidden(PermanentSinkError):
    """403 again for an event after other calls succeeded in between: the key may call the API but
    not do this (a scope the operation needs), so it is the event's failure, not an outage."""


class ConflictError(PermanentSinkError):
    """409: the request conflicts with the vendor's state."""


class DeadLetterError(ConnectorError):
    """The dead-letter topic could not be written; the partition must not advance."""

    retryable = True


def status_class(error: BaseException | None) -> str:
    """A low-cardinality label for a call's outcome (None: it succeeded), by the error's class or its
    HTTP status: 2xx, 4xx, 429, 5xx, timeout, connect, other."""
    if error is None:
        return "2xx"
    if isinstance(error, SinkError) and error.status is not None:
        return "429" if error.status == 429 else f"{error.status // 100}xx"
    if isinstance(error, SinkTimeout):
        return "timeout"
    if isinstance(error, SinkConnectError | SinkCutOff):
        return "connect"
    return "other"
