"""Settings: environment variables (prefix ``CONNECTOR_``, nested with ``__``) over an optional TOML file.

The environment names below are the public contract (see ``docs/configuration.md``). Unknown keys are
errors, in the environment as in the file, so that a typo never silently falls back to a default.

The sections follow the modules that read them:

- ``kafka``: reading (the source, the read-ahead and warm-up bounds, what the coalescer remembers:
  ``remember_keys``) and the partition fence (``lease_seconds``, ``settle_seconds``);
- ``sink``: the vendor account (:class:`VendorAccount`: kind, address, key, budget, API version, mode:
  everything a tenant of ``tenants.path`` has of its own) and how every vendor client calls
  (``timeout_seconds``, ``cache_size``);
- ``delivery``: the delivery policy every shop is delivered by (retries, the outage circuit, 429s,
  linger, deletes, the pace topic);
- ``audit``: the read-back audits on budget live traffic leaves unused;
- ``dlq``, ``tenants``, ``mapping``, ``metrics``.

Which fields of a vendor account a reload of the tenants applies to a shop being served is declared on
the field (:class:`Reload`). Settings that moved keep their old names for one release
(:data:`RENAMED`): read as the new ones, with a ``setting_renamed`` log line naming both
(``connector/_renamed.py``).
"""

from __future__ import annotations

import json
import math
import os
import re
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from connector._renamed import ENV_PREFIX as ENV_PREFIX
from connector._renamed import RENAMED as RENAMED
from connector._renamed import Moved, check_env_names, env_name
from connector._renamed import Renamed as Renamed
from connector._renamed import log_renamed as log_renamed
from connector.errors import ConfigError
from connector.vendors import VENDORS, Mode


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KafkaSettings(_Section):
    """Where to read events from, how to authenticate, how much to read ahead and to remember, and
    the partition fence (``connector/fence.py``): how long a member may send for a partition after its
    last commit (``lease_seconds``), and how long after it was sent the vendor may still apply a
    request (``settle_seconds``, at least ``sink.timeout_seconds``)."""

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str = ""
    sasl_password: SecretStr = SecretStr("")
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True
    topics: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["orders"], min_length=1)
    group_id: str = "orders-connector"
    client_id: str = "orders-connector"
    group_instance_id: str | None = None
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    start_timeout_seconds: float = Field(30.0, gt=0)
    commit_interval_seconds: float = Field(1.0, gt=0)
    max_poll_records: int = Field(500, ge=1)
    poll_timeout_ms: int = Field(200, ge=1)
    max_unresolved_events: int = Field(20_000, ge=1)
    max_held_offsets: int = Field(2_000_000, ge=1)
    max_unresolved_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    max_message_bytes: int = Field(1024 * 1024, ge=1)
    session_timeout_ms: int = Field(10_000, ge=1000)
    heartbeat_interval_ms: int = Field(3_000, ge=100)
    max_poll_interval_ms: int = Field(300_000, ge=1000)
    rebalance_timeout_ms: int = Field(60_000, ge=1000)
    warmup_records: int = Field(10_000, ge=0)
    lookahead_records: int = Field(10_000, ge=1)
    remember_keys: int = Field(100_000, ge=0)
    """Orders whose newest version (and last delivered digest) is remembered (``connector/coalesce.py``):
    also the bound of a lookahead, and of the shops remembered for deletes naming none."""
    metadata_max_bytes: int = Field(4096, ge=512)
    lease_seconds: float = Field(10.0, gt=0)
    settle_seconds: float = Field(20.0, ge=0)

    @field_validator("topics", mode="before")
    @classmethod
    def _split_topics(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [t.strip() for t in text.split(",") if t.strip()]
        return value


class DlqSettings(_Section):
    """The dead-letter topic."""

    topic: str = "orders.dlq"
    body_max_chars: int = Field(4096, ge=64)
    dead_letter_replaced: bool = False
    max_message_bytes: int = Field(1024 * 1024, ge=16 * 1024)
    """The dead-letter topic's ``max.message.bytes`` (the broker's default is 1 MiB and 12 bytes): a
    dead letter larger than this, headers included, is written with its value cut to fit (or left
    out), never retried as it is."""


class Reload(Enum):
    """What a reload of the tenants (``connector/_reloads.py``) does with a changed field of a shop
    being served. Declared on the field, ``Annotated[float, Reload.IN_PLACE]``, and read by
    :func:`reload_of`; a field that declares nothing is :attr:`RESTART`."""

    RESTART = "restart"
    """Kept as it was, and logged (``tenant_change_needs_restart``): the members apply it when they
    start again (the orders already synced were synced with the old value)."""
    IN_PLACE = "in_place"
    """Applied to the running shop at once, whatever else changed."""
    DERIVED = "derived"
    """Its default follows other fields (``max_in_flight``, from the budget), so a difference is
    theirs: neither applied nor reported; the members apply it when they start again."""


def reload_of(model: type[BaseModel]) -> dict[str, Reload]:
    """Each field of ``model`` with what a reload does with a change of it (:class:`Reload`)."""
    return {
        name: next((m for m in field.metadata if isinstance(m, Reload)), Reload.RESTART)
        for name, field in model.model_fields.items()
    }


class VendorAccount(_Section):
    """A vendor account: which vendor, where, with which key, at what budget, in which API version and
    mode. What a tenant of ``tenants.path`` has of its own (:meth:`connector.tenants.Tenant.account`);
    without ``tenants.path``, the ``sink`` section is the only one.

    ``kind`` names an entry of :data:`connector.vendors.VENDORS`; ``api_version`` and
    ``rate_limit_per_second`` default per vendor: Loop ``v1`` at 5/s (300 per minute), Shoplazza
    ``2025-06`` at 2/s; ``max_in_flight`` from the budget.
    """

    kind: str = "loop"
    base_url: str = "http://127.0.0.1:8080"
    api_key: Annotated[SecretStr, Reload.IN_PLACE] = SecretStr("")
    api_version: str = ""
    mode: Mode = "upsert"
    rate_limit_per_second: Annotated[float, Field(ge=0), Reload.IN_PLACE] = 0.0
    max_in_flight: Annotated[int, Field(ge=0), Reload.DERIVED] = 0

    @field_validator("kind")
    @classmethod
    def _known_vendor(cls, kind: str) -> str:
        if kind not in VENDORS:
            raise ValueError(f"must be one of {', '.join(sorted(VENDORS))}")
        return kind

    @model_validator(mode="after")
    def _vendor_defaults(self) -> Self:
        entry = VENDORS[self.kind]
        versions = entry.api_versions
        if not self.api_version:
            self.api_version = versions[0]
        elif self.api_version not in versions:
            raise ValueError(f"api_version for {self.kind} must be one of {', '.join(versions)}")
        if not self.rate_limit_per_second:
            self.rate_limit_per_second = entry.default_rate_per_second
        if not self.max_in_flight:
            # Little's law: enough calls in flight to spend the budget through 40 ms round trips.
            self.max_in_flight = max(8, min(256, math.ceil(self.rate_limit_per_second / 25)))
        if self.mode not in entry.modes:
            raise ValueError(
                f"mode {self.mode} does not exist for kind {self.kind}: {', '.join(entry.modes)}"
            )
        return self


class SinkSettings(VendorAccount):
    """The ``sink`` section: the deployment's vendor account (its only shop without
    ``tenants.path``), and how every shop's vendor client calls: ``timeout_seconds`` per request,
    ``cache_size`` vendor ids remembered (Loop's order ids, Shoplazza's)."""

    timeout_seconds: float = Field(10.0, gt=0)
    cache_size: int = Field(100_000, ge=1)

    def calling(self, account: VendorAccount) -> SinkSettings:
        """A shop's vendor client: ``account`` (already checked), called as this section says."""
        return self.model_copy(update={name: getattr(account, name) for name in VendorAccount.model_fields})


class DeliverySettings(_Section):
    """The delivery policy (``connector/deliver.py``), the same for every shop: how long a call may be
    retried, when an outage opens the circuit and how it is probed, how long a vendor may ask to wait,
    how a backlog lingers to coalesce, what becomes of deletes, and where the members share the pace
    429s made them cut to (``pace_topic``, :mod:`connector.fleetpace`)."""

    on_delete: Literal["delete", "ignore"] = "delete"
    max_attempts: int = Field(20, ge=1)
    backoff_base_seconds: float = Field(0.2, gt=0)
    backoff_cap_seconds: float = Field(30.0, gt=0)
    max_elapsed_seconds: float = Field(0.0, ge=0)
    circuit_window: int = Field(50, ge=1)
    circuit_min_calls: int = Field(20, ge=1)
    circuit_failure_ratio: float = Field(0.5, gt=0, le=1)
    probe_interval_seconds: float = Field(5.0, gt=0)
    max_retry_after_seconds: float = Field(60.0, gt=0)
    linger_seconds: float = Field(5.0, ge=0)
    linger_lag_records: int = Field(0, ge=0)  # behind the log end by more than this: a backlog
    pace_topic: str = ""  # "": "<first of kafka.topics>.pace" (the members' cuts after 429s)


class Drift(StrEnum):
    """A class of drift a read-back audit finds (``connector/audit.py``)."""

    MISSING = "missing"  # the vendor does not hold an order we delivered
    OLDER = "older"  # it holds an older version than we delivered (or still holds one we deleted)
    DIFFERS = "differs"  # the version we delivered, with fields other than we sent
    AHEAD = "ahead"  # a newer version than we delivered: someone else wrote it (never repaired)


class AuditSettings(_Section):
    """Read-back audits (``connector/audit.py``): on budget ticks live traffic leaves unused, each shop
    reads back orders it delivered and compares the vendor's copy with what it sent; the classes of
    drift in ``repair`` are sent again (their newest delivered state, through the normal path)."""

    enabled: bool = True  # only ticks live traffic leaves; 0 remember_orders also turns them off
    share: float = Field(0.5, gt=0, le=1)  # of the budget's ticks, at most (only unused ones)
    repair: list[Drift] = Field(default_factory=lambda: [Drift.MISSING, Drift.OLDER])
    remember_orders: int = Field(10_000, ge=0)  # per shop: delivered orders kept for the sweep
    remember_orders_per_member: int = Field(100_000, ge=0)  # every shop's together: shared out evenly
    min_interval_seconds: float = Field(30.0, ge=0)  # an order is read again no sooner
    max_reads_per_second: float = Field(10.0, gt=0)  # per shop, whatever the budget leaves unused

    @field_validator("repair")
    @classmethod
    def _repairable(cls, value: list[Drift]) -> list[Drift]:
        if Drift.AHEAD in value:
            raise ValueError(
                "'ahead' is never repaired: a newer version than ours was written by someone else"
            )
        return value


class ResyncSettings(_Section):
    """Resyncs (``connector/resync.py``): ``connector resync`` asks the running fleet to send the newest
    state of every order with an event since a time again; each member does it for the partitions it
    owns, below live traffic (``audit`` shares the same spare ticks)."""

    topic: str = ""  # "": "<first of kafka.topics>.resync" (requests and progress, compacted)
    share: float = Field(0.2, gt=0, le=1)  # the floor: at least this share of the ticks, used or not
    max_orders_per_partition: int = Field(1_000_000, ge=1)  # a partition's scan keeps one entry each
    batch: int = Field(500, ge=1)  # orders handed to the shops at once; progress is written after each
    look_seconds: float = Field(2.0, gt=0)  # how often the resync topic is read for requests


_ROUTE = re.compile(r"(field|header):[^\s]+|topic")


class TenantsSettings(_Section):
    """Many shops in one deployment (``connector/tenants.py``): where the tenants are defined, and
    where an event names its tenant. Without ``path``, the ``sink`` section is the only tenant."""

    path: str = ""
    route: str = "field:shop"
    reload_seconds: float = Field(5.0, gt=0)
    metrics_limit: int = Field(100, ge=0)
    max_removed_share: float = Field(0.5, ge=0, le=1)
    """A reload that would remove more than this share of the shops served is refused (and one that
    would leave none, always): an empty directory or a half-written file is not an intent."""
    # Parking (connector/park/): a shop that cannot be served stops holding back the others.
    park_topic: str = ""  # "": "<first of kafka.topics>.parked"
    park_after_seconds: float = Field(30.0, ge=0)  # 0: never park
    park_max_keys: int = Field(2_000, ge=1)
    park_replay_events: int = Field(1_000, ge=1)
    max_parked: int = Field(50, ge=1, le=50)

    @field_validator("route")
    @classmethod
    def _route(cls, route: str) -> str:
        if not _ROUTE.fullmatch(route):
            raise ValueError(
                "must be field:<name> (a top-level field of the event), header:<name> (a Kafka "
                "header) or topic"
            )
        return route


_FUNCTION = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


class MappingSettings(_Section):
    """How the connector reads events it did not write (``connector/mapping/``): the envelope the
    producer wraps them in, and a mapping from the event to ``{external_id, updated_at, event_type,
    order}``: a file of JMESPath expressions, or a Python function named ``package.module:function``.
    The defaults read today's envelope exactly as before."""

    envelope: Literal["native", "cloudevents", "debezium"] = "native"
    file: str = ""
    function: str = ""
    registry_url: str = ""
    """A Confluent-compatible schema registry: values and keys in the Confluent wire format (Avro)
    are decoded with the schema it holds for their id. Credentials in its userinfo are never
    printed; ``registry_basic_auth_user_info`` is the place for them."""
    registry_timeout_seconds: float = Field(10.0, gt=0)
    registry_basic_auth_user_info: SecretStr = SecretStr("")
    """``user:password`` for the registry's HTTP basic auth (Confluent's ``basic.auth.user.info``)."""
    registry_not_found_seconds: float = Field(30.0, ge=0)
    """How long a schema id the registry answers 404 for is asked again (a follower catching up with
    a schema registered a moment ago) before its records are dead-lettered; the answer is kept as
    long, then the id is asked again."""

    @field_validator("function")
    @classmethod
    def _import_path(cls, value: str) -> str:
        if value and not _FUNCTION.fullmatch(value):
            raise ValueError("must be package.module:function")
        return value

    @model_validator(mode="after")
    def _one_mapping(self) -> MappingSettings:
        if self.file and self.function:
            raise ValueError("give a mapping file or a mapping function, not both")
        return self

    @property
    def active(self) -> bool:
        """Whether events are read through the mapping stage (else exactly as before it existed)."""
        return bool(self.envelope != "native" or self.file or self.function or self.registry_url)


class MetricsSettings(_Section):
    """The HTTP port serving /metrics, /healthz and /readyz (0 turns it off)."""

    host: str = "0.0.0.0"
    port: int = Field(9108, ge=0, le=65535)


class Settings(BaseSettings):
    """Every setting of `connector run`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    dlq: DlqSettings = Field(default_factory=DlqSettings)
    sink: SinkSettings = Field(default_factory=SinkSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    tenants: TenantsSettings = Field(default_factory=TenantsSettings)
    mapping: MappingSettings = Field(default_factory=MappingSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    resync: ResyncSettings = Field(default_factory=ResyncSettings)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    shutdown_grace_seconds: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _lease_fits(self) -> Settings:
        if self.kafka.lease_seconds <= self.kafka.commit_interval_seconds:
            raise ValueError("kafka.lease_seconds must be longer than kafka.commit_interval_seconds")
        if self.kafka.settle_seconds < self.sink.timeout_seconds:
            raise ValueError(
                "kafka.settle_seconds (how long the vendor may still apply a request) must be at "
                "least sink.timeout_seconds"
            )
        if self.park_topic in self.kafka.topics or self.park_topic == self.dlq.topic:
            raise ValueError("tenants.park_topic must be a topic of its own (not read, not the DLQ)")
        if self.pace_topic in {*self.kafka.topics, self.dlq.topic, self.park_topic}:
            raise ValueError(
                "delivery.pace_topic must be a topic of its own (not read, not the DLQ, not parking)"
            )
        if self.resync_topic in {*self.kafka.topics, self.dlq.topic, self.park_topic, self.pace_topic}:
            raise ValueError(
                "resync.topic must be a topic of its own (not read, not the DLQ, parking nor pace)"
            )
        return self

    @property
    def park_topic(self) -> str:
        """The parking topic: ``tenants.park_topic``, by default ``<first of kafka.topics>.parked``."""
        return self.tenants.park_topic or f"{self.kafka.topics[0]}.parked"

    @property
    def pace_topic(self) -> str:
        """The pace topic (:mod:`connector.fleetpace`): ``delivery.pace_topic``, by default
        ``<first of kafka.topics>.pace``."""
        return self.delivery.pace_topic or f"{self.kafka.topics[0]}.pace"

    @property
    def resync_topic(self) -> str:
        """The resync topic (:mod:`connector.resync`): ``resync.topic``, by default
        ``<first of kafka.topics>.resync``."""
        return self.resync.topic or f"{self.kafka.topics[0]}.resync"

    toml_file: ClassVar[str | None] = None
    renames_found: ClassVar[list[Renamed] | None] = None
    """Where the sources note each setting given by its old name (:func:`load_settings` sets it)."""
    _renamed: tuple[Renamed, ...] = PrivateAttr(default=())

    @property
    def renamed(self) -> tuple[Renamed, ...]:
        """The settings given by their old names (:data:`RENAMED`) when these were loaded."""
        return self._renamed

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        found = cls.renames_found
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            Moved(env_settings, "environment", found),
        ]
        if cls.toml_file:
            toml = TomlConfigSettingsSource(settings_cls, toml_file=cls.toml_file)
            sources.append(Moved(toml, cls.toml_file, found))
        return tuple(sources)


def known_env_names() -> set[str]:
    """Every current CONNECTOR_* environment variable name (the old names of settings that moved,
    :data:`RENAMED`, are still accepted for one release, but are not among these)."""
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names.update(f"{ENV_PREFIX}{name}__{sub}".upper() for sub in annotation.model_fields)
        else:
            names.add(f"{ENV_PREFIX}{name}".upper())
    return names


def _describe(error: ValidationError, toml_file: str | None) -> str:
    first = error.errors()[0]
    if not first["loc"]:  # a rule across sections: it names its settings
        return f"invalid configuration: {str(first['msg']).removeprefix('Value error, ')}"
    path = ".".join(str(p) for p in first["loc"])
    spelled = ENV_PREFIX + "__".join(str(p) for p in first["loc"]).upper()
    formerly = {new: old for old, new in RENAMED.items()}.get(path)
    if formerly:  # perhaps given by its old name
        spelled += f", formerly {env_name(formerly)}"
    where = f"{path} ({spelled}" + (f" or {toml_file}" if toml_file else "") + ")"
    if first["type"] == "extra_forbidden":
        return f"unknown setting {where}"
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f"; got {str(value)[:60]!r}"
    more = f" (and {len(error.errors()) - 1} more)" if len(error.errors()) > 1 else ""
    return f"invalid setting {where}: {first['msg']}{shown}{more}"


def load_settings(toml_file: str | Path | None = None) -> Settings:
    """Read settings from the environment and an optional TOML file; raise ConfigError on any problem.

    The error is one line naming the setting, its environment variable and the rule it broke.
    """
    check_env_names(os.environ, known_env_names())
    path = str(toml_file) if toml_file else None
    if path and not Path(path).is_file():
        raise ConfigError(f"config file not found: {path}")

    found: list[Renamed] = []

    class _Loaded(Settings):
        toml_file = path
        renames_found = found

    try:
        loaded = _Loaded()
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None
    except (ValueError, OSError) as exc:  # malformed TOML, undecodable JSON list, old and new names
        raise ConfigError(f"invalid configuration: {str(exc).splitlines()[0]}") from None
    settings = Settings.model_validate(loaded.model_dump())
    settings._renamed = tuple(found)
    return settings
