"""The read path's decode: a record to the order change it stands for, cheaply.

Only what coalescing needs is checked on read (full validation waits until the change is about to be
sent, ``conform.py``, so a change replaced before it is sent is never judged). A record is read
through the mapping stage when one is configured (or there are many tenants), and routed to its
tenant when there are many. A record that can never be sent is dead-lettered through the ledger,
stage named by its error.
"""

from __future__ import annotations

from typing import Protocol

from connector.clock import Clock
from connector.coalesce import Resolution
from connector.config import Settings
from connector.constants import Stage
from connector.deadletter import Failure
from connector.decode import Locate, decode
from connector.errors import InputError, RouteError
from connector.health import Health
from connector.logs import debug_enabled, get_logger
from connector.mapping import Mapper, TenantMapping
from connector.structs import OrderChange, Record
from connector.vendors import target

log = get_logger("connector.reader")


def mapper_for(
    settings: Settings,
    health: Health | None = None,
    tenant_mapping: TenantMapping | None = None,
) -> Mapper | None:
    """The mapping stage records are read through, or None: without a ``mapping`` section and with
    one shop, records are decoded exactly as before mappings existed. ``tenant_mapping``: each
    shop's own mapping (many tenants), which also puts the stage in."""
    if not settings.mapping.active and tenant_mapping is None:
        return None
    return Mapper(
        settings.mapping,
        settings.kafka.max_message_bytes,
        tenant_mapping=tenant_mapping,
        health=health,
    )


class Resolver(Protocol):
    """Where a record the read path settles on its own goes (``connector.ledger.Ledger``)."""

    def resolve(self, record: Record, why: Resolution) -> None: ...

    def dead_letter(self, record: Record, failure: Failure) -> None: ...


class Reader:
    """Decodes records on the read path (the mapping, the tenant's route), never raising."""

    def __init__(
        self,
        settings: Settings,
        mapper: Mapper | None,
        resolver: Resolver,
        *,
        clock: Clock,
        locate: Locate | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._mapper = mapper
        self._resolver = resolver
        self._locate = locate
        self._target = target(settings.sink.kind, settings.sink.api_version)

    def read(self, record: Record) -> OrderChange:
        """The change ``record`` stands for (raises what decoding raises)."""
        if self._mapper is not None:
            return self._mapper.read(record, self._target, validate=False, locate=self._locate, lazy=True)
        return decode(
            record,
            self._settings.kafka.max_message_bytes,
            self._target,
            validate=False,
            locate=self._locate,
            lazy=True,
        )

    def peek(self, record: Record) -> OrderChange | None:
        """What ``record`` stands for, without acting on it (None: it does not decode)."""
        try:
            return self.read(record)
        except Exception:
            return None

    async def prefetch(self, records: list[Record]) -> None:
        """What reading ``records`` needs first (Avro schemas from the registry, once per id)."""
        if self._mapper is not None:
            await self._mapper.prefetch(records)

    def accept(self, record: Record) -> OrderChange | None:
        """The change ``record`` stands for; None when it was resolved instead: dead-lettered (it can
        never be sent) or ignored (a delete, with ``delivery.on_delete=ignore``)."""
        try:
            change = self.read(record)
        except InputError as exc:
            now = self._clock.wall()
            tenant = exc.tenant if isinstance(exc, RouteError) else None
            self._resolver.dead_letter(record, Failure(exc, exc.stage, exc.external_id, 0, now, now, tenant))
            return None
        except Exception as exc:  # a bug must not stop the loop: the event is kept on the DLQ
            log.exception("decode_crashed", **record.where())
            now = self._clock.wall()
            self._resolver.dead_letter(record, Failure(exc, Stage.DECODE, None, 0, now, now))
            return None
        if debug_enabled():
            log.debug(
                "event_accepted",
                external_id=change.external_id,
                op=change.op,
                **record.where(),
            )
        if change.op == "delete" and self._settings.delivery.on_delete == "ignore":
            self._resolver.resolve(record, Resolution.IGNORED)
            return None
        return change


__all__ = ["Reader", "Resolver", "mapper_for"]
