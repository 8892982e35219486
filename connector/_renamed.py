"""Settings that moved (issue 22: settings by module): their old names, still read for one release.

:data:`RENAMED` maps each old place to the new one. The sources of :class:`connector.config.Settings`
(the environment, a TOML file) are each wrapped in :class:`Moved`, which reads a setting given by its
old name as the new one and notes it (:class:`Renamed`); :func:`log_renamed` says so once the logs are
configured. Also the environment's spelling of a setting (:data:`ENV_PREFIX`, :func:`env_name`) and
the check that every ``CONNECTOR_*`` variable names a setting, by its new name or its old one.

Below ``connector.config``, which imports it: what it needs of the settings it is given.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic.fields import FieldInfo
from pydantic_settings import PydanticBaseSettingsSource

from connector.errors import ConfigError
from connector.logs import get_logger

ENV_PREFIX = "CONNECTOR_"

_TO_DELIVERY = (
    "on_delete",
    "max_attempts",
    "backoff_base_seconds",
    "backoff_cap_seconds",
    "max_elapsed_seconds",
    "circuit_window",
    "circuit_min_calls",
    "circuit_failure_ratio",
    "probe_interval_seconds",
    "max_retry_after_seconds",
    "linger_seconds",
    "linger_lag_records",
    "pace_topic",
)
"""The fields of ``delivery`` (:class:`connector.config.DeliverySettings`) when it moved out of
``sink``: all of them then. A field added to it since has no old name."""

RENAMED: dict[str, str] = {
    "sink.remember_keys": "kafka.remember_keys",
    "sink.settle_seconds": "kafka.settle_seconds",
    **{f"sink.{name}": f"delivery.{name}" for name in _TO_DELIVERY},
}
"""Settings that moved (issue 22: settings by module), old place -> new. For one release the old names
are still read, in the environment (``CONNECTOR_SINK__SETTLE_SECONDS``) as in a TOML file
(``[sink] settle_seconds``), as the new ones, each with a ``setting_renamed`` log line
(:func:`log_renamed`); both names set to different values is an error. The release after drops them."""


@dataclass(frozen=True, slots=True)
class Renamed:
    """A setting given by its old name: as given (``old``), as it is now spelled (``new``), and where
    (``environment``, or the TOML file)."""

    old: str
    new: str
    where: str


def env_name(path: str) -> str:
    """The environment variable of the setting at ``path`` (``kafka.topics``: ``CONNECTOR_KAFKA__TOPICS``)."""
    return ENV_PREFIX + path.replace(".", "__").upper()


class Moved(PydanticBaseSettingsSource):
    """A source (the environment, a TOML file) whose settings given by their old names
    (:data:`RENAMED`) are read as the new ones, each noted in ``found``. Renamed within the source,
    before the sources are merged, so that the environment still wins over the file whichever name
    each uses."""

    def __init__(self, inner: PydanticBaseSettingsSource, where: str, found: list[Renamed] | None) -> None:
        super().__init__(inner.settings_cls)
        self._inner = inner
        self._where = where
        self._found = found

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._inner.get_field_value(field, field_name)

    def _spelled(self, path: str) -> str:
        return env_name(path) if self._where == "environment" else path

    def __call__(self) -> dict[str, Any]:
        data = {k: dict(v) if isinstance(v, dict) else v for k, v in self._inner().items()}
        for old, new in RENAMED.items():
            old_section, old_key = old.split(".")
            new_section, new_key = new.split(".")
            given = data.get(old_section)
            if not isinstance(given, dict) or old_key not in given:
                continue
            value = given.pop(old_key)
            target = data.setdefault(new_section, {})
            if not isinstance(target, dict):
                continue  # not a table: reported by the validation
            if target.setdefault(new_key, value) != value:
                where = "" if self._where == "environment" else f" in {self._where}"
                raise ValueError(
                    f"{self._spelled(old)} and {self._spelled(new)} are both set{where}, to different "
                    f"values: {self._spelled(old)} is the old name of {self._spelled(new)}, remove it"
                )
            if self._found is not None:
                self._found.append(Renamed(self._spelled(old), self._spelled(new), self._where))
        return data


class _Loaded(Protocol):
    """What :func:`log_renamed` reads of the settings (:class:`connector.config.Settings`)."""

    @property
    def renamed(self) -> tuple[Renamed, ...]: ...


def log_renamed(settings: _Loaded) -> None:
    """One ``setting_renamed`` warning per setting ``settings`` were given by its old name (once the
    logs are configured)."""
    log = get_logger("connector.config")
    for renamed in settings.renamed:
        log.warning(
            "setting_renamed",
            old=renamed.old,
            new=renamed.new,
            where=renamed.where,
            action=f"read as {renamed.new}; rename it: the next release reads {renamed.old} no more",
        )


def check_env_names(environ: Mapping[str, str], known: set[str]) -> None:
    """Refuse (:class:`~connector.errors.ConfigError`) a ``CONNECTOR_*`` variable of ``environ`` that
    is neither a current name (``known``) nor the old name of one, suggesting the closest."""
    now = {env_name(old): env_name(new) for old, new in RENAMED.items()}  # old name -> new
    for key in sorted(environ):
        upper = key.upper()
        if upper.startswith(ENV_PREFIX) and upper not in known and upper not in now:
            hint = difflib.get_close_matches(upper, known | now.keys(), n=1)
            suffix = f" (did you mean {now.get(hint[0], hint[0])}?)" if hint else ""
            raise ConfigError(f"unknown setting {key}{suffix}")
