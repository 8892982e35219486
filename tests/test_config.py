"""Settings: the public environment names, TOML, and one-line errors for every mistake."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from connector import logs
from connector.config import (
    RENAMED,
    DeliverySettings,
    MappingSettings,
    Reload,
    Settings,
    SinkSettings,
    VendorAccount,
    load_settings,
    log_renamed,
    reload_of,
)
from connector.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith("CONNECTOR_"):
            monkeypatch.delenv(name)


def test_public_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every name of the public contract lands in its setting."""
    env = {
        "CONNECTOR_KAFKA__BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
        "CONNECTOR_KAFKA__TOPICS": "orders, returns",
        "CONNECTOR_KAFKA__GROUP_ID": "g1",
        "CONNECTOR_DLQ__TOPIC": "orders.dead",
        "CONNECTOR_SINK__BASE_URL": "https://api.example",
        "CONNECTOR_SINK__API_KEY": "s3cret-key",
        "CONNECTOR_SINK__RATE_LIMIT_PER_SECOND": "4.5",
        "CONNECTOR_SINK__MAX_IN_FLIGHT": "3",
        "CONNECTOR_METRICS__PORT": "9999",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = load_settings()
    assert s.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert s.kafka.topics == ["orders", "returns"]
    assert s.kafka.group_id == "g1"
    assert s.dlq.topic == "orders.dead"
    assert s.sink.base_url == "https://api.example"
    assert s.sink.api_key.get_secret_value() == "s3cret-key"
    assert s.sink.rate_limit_per_second == 4.5
    assert s.sink.max_in_flight == 3
    assert s.metrics.port == 9999


def test_topics_as_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """CONNECTOR_KAFKA__TOPICS also takes a JSON list."""
    monkeypatch.setenv("CONNECTOR_KAFKA__TOPICS", '["a", "b"]')
    assert load_settings().kafka.topics == ["a", "b"]


def test_api_key_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API key is a SecretStr: masked in repr and dumps."""
    monkeypatch.setenv("CONNECTOR_SINK__API_KEY", "s3cret-key")
    s = load_settings()
    assert "s3cret-key" not in repr(s)
    assert "s3cret-key" not in s.model_dump_json()


def test_unknown_environment_key_is_an_error_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    """A typo is an error that suggests the real name."""
    monkeypatch.setenv("CONNECTOR_SINK__RATE_LIMIT", "3")
    with pytest.raises(ConfigError, match="did you mean CONNECTOR_SINK__RATE_LIMIT_PER_SECOND"):
        load_settings()


def test_wrong_type_names_setting_and_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong type names the setting, its variable and the bad value."""
    monkeypatch.setenv("CONNECTOR_SINK__MAX_IN_FLIGHT", "many")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "sink.max_in_flight" in message
    assert "CONNECTOR_SINK__MAX_IN_FLIGHT" in message
    assert "'many'" in message
    assert "\n" not in message


def test_toml_file_with_environment_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The TOML file sets values; the environment overrides them."""
    path = tmp_path / "c.toml"
    path.write_text('log_level = "debug"\n[sink]\nrate_limit_per_second = 2\nmax_in_flight = 4\n')
    monkeypatch.setenv("CONNECTOR_SINK__RATE_LIMIT_PER_SECOND", "3")
    s = load_settings(path)
    assert (s.log_level, s.sink.rate_limit_per_second, s.sink.max_in_flight) == ("DEBUG", 3.0, 4)


def test_unknown_toml_key_is_an_error(tmp_path: Path) -> None:
    """An unknown key in the file is named with the file."""
    path = tmp_path / "c.toml"
    path.write_text("[sink]\nbogus = 1\n")
    with pytest.raises(ConfigError, match=r"unknown setting sink.bogus .*c.toml"):
        load_settings(path)


def test_malformed_toml_and_missing_file(tmp_path: Path) -> None:
    """A broken or missing file is a one-line error."""
    path = tmp_path / "c.toml"
    path.write_text("[sink\n")
    with pytest.raises(ConfigError, match="invalid configuration"):
        load_settings(path)
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml")


def test_shipped_example_config_loads() -> None:
    """config/connector.example.toml is valid."""
    load_settings(Path(__file__).parent.parent / "config" / "connector.example.toml")


def test_mapping_section_from_the_environment_and_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CONNECTOR_MAPPING__* and a [mapping] table fill the mapping section; unknown keys are errors."""
    monkeypatch.setenv("CONNECTOR_MAPPING__ENVELOPE", "debezium")
    monkeypatch.setenv("CONNECTOR_MAPPING__FUNCTION", "pkg.mod:fn")
    s = load_settings()
    assert (s.mapping.envelope, s.mapping.function, s.mapping.active) == ("debezium", "pkg.mod:fn", True)
    monkeypatch.delenv("CONNECTOR_MAPPING__FUNCTION")
    path = tmp_path / "c.toml"
    path.write_text('[mapping]\nfile = "m.toml"\nregistry_url = "http://r:8081"\n')
    s = load_settings(path)
    assert (s.mapping.envelope, s.mapping.file, s.mapping.registry_url) == (
        "debezium",
        "m.toml",
        "http://r:8081",
    )
    monkeypatch.setenv("CONNECTOR_MAPPING__EXPRESSION", "x")
    with pytest.raises(ConfigError, match="unknown setting CONNECTOR_MAPPING__EXPRESSION"):
        load_settings()
    monkeypatch.delenv("CONNECTOR_MAPPING__EXPRESSION")
    monkeypatch.setenv("CONNECTOR_MAPPING__ENVELOPE", "avro")
    with pytest.raises(ConfigError, match=r"mapping\.envelope"):
        load_settings()


def test_without_a_mapping_section_nothing_changes() -> None:
    """The default reads today's envelope: the read path bypasses the mapping stage entirely (it
    calls decode as it did before mappings); a mapping section, or many tenants, puts the stage in."""
    from connector.reader import mapper_for

    assert mapper_for(Settings()) is None
    assert mapper_for(Settings(mapping=MappingSettings(envelope="cloudevents"))) is not None


def test_the_pace_topic_defaults_after_the_first_topic_and_must_be_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``delivery.pace_topic`` (issue 20): ``<first topic>.pace`` unless set; never a topic read, the
    dead-letter topic or the parking topic (the members would read each other's cuts as orders)."""
    monkeypatch.setenv("CONNECTOR_KAFKA__TOPICS", "orders,returns")
    assert load_settings().pace_topic == "orders.pace"
    monkeypatch.setenv("CONNECTOR_DELIVERY__PACE_TOPIC", "shared.pace")
    assert load_settings().pace_topic == "shared.pace"
    for taken in ("returns", "orders.dlq", "orders.parked"):
        monkeypatch.setenv("CONNECTOR_DELIVERY__PACE_TOPIC", taken)
        with pytest.raises(ConfigError, match=r"delivery\.pace_topic must be a topic of its own"):
            load_settings()


# -- settings by module (issue 22), and the old names of those that moved ----------------------------
def _setting(settings: Settings, path: str) -> Any:
    section, name = path.split(".")
    return getattr(getattr(settings, section), name)


def _other_value(path: str) -> Any:
    """A valid value of the setting at ``path`` other than its default."""
    default = _setting(Settings(), path)
    if isinstance(default, bool) or not isinstance(default, int | float):
        return {"delivery.on_delete": "ignore", "delivery.pace_topic": "elsewhere.pace"}[path]
    if isinstance(default, int):
        return default + 1
    return default / 2 if default else 1.0


def _renamed_lines(settings: Settings) -> list[dict[str, Any]]:
    out = io.StringIO()
    logs.configure("INFO", stream=out)
    try:
        log_renamed(settings)
    finally:
        logs.configure("INFO")
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_the_sections_follow_the_modules() -> None:
    """The vendor account is one model (what a tenant has of its own), the delivery policy another;
    the coalescer's memory and the fence's settle time sit in ``kafka`` beside the lease."""
    assert set(VendorAccount.model_fields) == {
        "kind", "base_url", "api_key", "api_version", "mode", "rate_limit_per_second", "max_in_flight",
    }  # fmt: skip
    assert set(SinkSettings.model_fields) == {*VendorAccount.model_fields, "timeout_seconds", "cache_size"}
    assert {"linger_seconds", "circuit_window", "max_attempts", "on_delete"} <= set(
        DeliverySettings.model_fields
    )
    kafka = list(Settings().kafka.model_dump())
    assert kafka.index("settle_seconds") == kafka.index("lease_seconds") + 1
    assert "remember_keys" in kafka
    assert not set(DeliverySettings.model_fields) & set(SinkSettings.model_fields)


def test_which_fields_apply_without_a_restart_is_declared_on_the_account() -> None:
    assert reload_of(VendorAccount) == {
        "kind": Reload.RESTART,
        "base_url": Reload.RESTART,
        "api_key": Reload.IN_PLACE,
        "api_version": Reload.RESTART,
        "mode": Reload.RESTART,
        "rate_limit_per_second": Reload.IN_PLACE,
        "max_in_flight": Reload.DERIVED,
    }


@pytest.mark.parametrize(("old", "new"), sorted(RENAMED.items()))
def test_each_moved_setting_is_read_by_its_new_and_its_old_environment_name(
    monkeypatch: pytest.MonkeyPatch, old: str, new: str
) -> None:
    """The new name sets it with no word said; the old one (for one release) sets it too, with a
    ``setting_renamed`` line naming both."""
    value = _other_value(new)
    new_env, old_env = (f"CONNECTOR_{p.replace('.', '__').upper()}" for p in (new, old))
    monkeypatch.setenv(new_env, str(value))
    settings = load_settings()
    assert (_setting(settings, new), settings.renamed) == (value, ())
    monkeypatch.delenv(new_env)
    monkeypatch.setenv(old_env, str(value))
    settings = load_settings()
    assert _setting(settings, new) == value
    (line,) = _renamed_lines(settings)
    assert (line["event"], line["level"]) == ("setting_renamed", "warning")
    assert (line["old"], line["new"], line["where"]) == (old_env, new_env, "environment")


def test_old_and_new_names_in_a_toml_file(tmp_path: Path) -> None:
    """A file of the previous release loads as it did (``[sink] settle_seconds``, ``linger_seconds``,
    ``remember_keys``), each old key logged with its new place; the new layout loads silently."""
    old = tmp_path / "old.toml"
    old.write_text(
        "[sink]\nsettle_seconds = 30\nlinger_seconds = 1.5\nremember_keys = 7\ntimeout_seconds = 4\n"
    )
    new = tmp_path / "new.toml"
    new.write_text(
        "[sink]\ntimeout_seconds = 4\n[kafka]\nsettle_seconds = 30\nremember_keys = 7\n"
        "[delivery]\nlinger_seconds = 1.5\n"
    )
    for path in (old, new):
        s = load_settings(path)
        assert (s.kafka.settle_seconds, s.delivery.linger_seconds, s.kafka.remember_keys) == (30, 1.5, 7)
        assert s.sink.timeout_seconds == 4
    assert load_settings(new).renamed == ()
    lines = _renamed_lines(load_settings(old))
    assert {(line["old"], line["new"]) for line in lines} == {
        ("sink.settle_seconds", "kafka.settle_seconds"),
        ("sink.linger_seconds", "delivery.linger_seconds"),
        ("sink.remember_keys", "kafka.remember_keys"),
    }
    assert {line["where"] for line in lines} == {str(old)}


def test_the_environment_wins_over_the_file_whichever_names_they_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[kafka]\nsettle_seconds = 30\n[sink]\nlinger_seconds = 1\n")
    monkeypatch.setenv("CONNECTOR_SINK__SETTLE_SECONDS", "40")
    monkeypatch.setenv("CONNECTOR_DELIVERY__LINGER_SECONDS", "2")
    s = load_settings(path)
    assert (s.kafka.settle_seconds, s.delivery.linger_seconds) == (40, 2)


def test_an_old_and_a_new_name_at_odds_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both names of one setting, in one place, with different values: which was meant is a guess.
    With the same value, it is read (and the old name logged)."""
    monkeypatch.setenv("CONNECTOR_SINK__SETTLE_SECONDS", "30")
    monkeypatch.setenv("CONNECTOR_KAFKA__SETTLE_SECONDS", "30")
    assert load_settings().kafka.settle_seconds == 30
    monkeypatch.setenv("CONNECTOR_KAFKA__SETTLE_SECONDS", "40")
    with pytest.raises(
        ConfigError, match="CONNECTOR_SINK__SETTLE_SECONDS and CONNECTOR_KAFKA__SETTLE_SECONDS"
    ):
        load_settings()
    monkeypatch.delenv("CONNECTOR_SINK__SETTLE_SECONDS")
    monkeypatch.delenv("CONNECTOR_KAFKA__SETTLE_SECONDS")
    path = tmp_path / "c.toml"
    path.write_text("[sink]\nmax_attempts = 3\n[delivery]\nmax_attempts = 4\n")
    with pytest.raises(
        ConfigError, match=r"sink.max_attempts and delivery.max_attempts are both set in .*c.toml"
    ):
        load_settings(path)


def test_a_bad_value_under_an_old_name_names_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTOR_SINK__REMEMBER_KEYS", "many")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert (
        "kafka.remember_keys (CONNECTOR_KAFKA__REMEMBER_KEYS, formerly CONNECTOR_SINK__REMEMBER_KEYS"
        in str(caught.value)
    )


def test_settle_seconds_is_checked_against_the_call_timeout_across_sections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONNECTOR_SINK__TIMEOUT_SECONDS", "30")
    with pytest.raises(ConfigError, match=r"kafka.settle_seconds .* must be at least sink.timeout_seconds"):
        load_settings()
    monkeypatch.setenv("CONNECTOR_SINK__SETTLE_SECONDS", "30")
    assert load_settings().kafka.settle_seconds == 30


def test_typos_are_hinted_with_current_names_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTOR_SINK__LINGER_SECOND", "1")
    with pytest.raises(ConfigError, match="did you mean CONNECTOR_DELIVERY__LINGER_SECONDS"):
        load_settings()
