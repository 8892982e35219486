"""Settings: the public environment names, TOML, and one-line errors for every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.config import MappingSettings, Settings, load_settings
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
    from connector.metrics import Metrics
    from connector.reader import mapper_for

    assert mapper_for(Settings(), Metrics()) is None
    assert mapper_for(Settings(mapping=MappingSettings(envelope="cloudevents")), Metrics()) is not None


def test_the_pace_topic_defaults_after_the_first_topic_and_must_be_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``sink.pace_topic`` (issue 20): ``<first topic>.pace`` unless set; never a topic read, the
    dead-letter topic or the parking topic (the members would read each other's cuts as orders)."""
    monkeypatch.setenv("CONNECTOR_KAFKA__TOPICS", "orders,returns")
    assert load_settings().pace_topic == "orders.pace"
    monkeypatch.setenv("CONNECTOR_SINK__PACE_TOPIC", "shared.pace")
    assert load_settings().pace_topic == "shared.pace"
    for taken in ("returns", "orders.dlq", "orders.parked"):
        monkeypatch.setenv("CONNECTOR_SINK__PACE_TOPIC", taken)
        with pytest.raises(ConfigError, match=r"sink\.pace_topic must be a topic of its own"):
            load_settings()
