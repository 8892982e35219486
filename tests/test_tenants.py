"""Tenants: loading a file or a directory of them, what each becomes as sink settings, and reloads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from connector.config import SinkSettings
from connector.errors import ConfigError
from connector.tenants import Tenant, TenantDirectory, load_tenants

FILE = """
[acme]
kind = "shoplazza"
shop = "acme"
api_key = "acme-token"

[bolt]
kind = "loop"
base_url = "http://127.0.0.1:9000/bolt"
api_key = "bolt-key"
rate_limit_per_second = 1.5
mode = "create_update"
"""


def test_a_file_holds_one_table_per_tenant_and_each_gets_its_vendor_defaults(tmp_path: Path) -> None:
    """Table names are tenant names; a Shoplazza shop becomes its store's domain; an unset budget and
    API version are the vendor's defaults; the deployment's other sink settings are kept."""
    path = tmp_path / "tenants.toml"
    path.write_text(FILE)
    tenants = load_tenants(path)
    assert sorted(tenants) == ["acme", "bolt"]
    base = SinkSettings(timeout_seconds=3.0, settle_seconds=9.0)
    acme = tenants["acme"].sink_settings(base)
    assert (acme.kind, acme.base_url, acme.rate_limit_per_second, acme.api_version) == (
        "shoplazza",
        "https://acme.myshoplaza.com",
        2.0,
        "2025-06",
    )
    assert acme.api_key.get_secret_value() == "acme-token"
    assert (acme.timeout_seconds, acme.settle_seconds) == (3.0, 9.0)
    bolt = tenants["bolt"].sink_settings(base)
    assert (bolt.kind, bolt.rate_limit_per_second, bolt.mode, bolt.api_version) == (
        "loop",
        1.5,
        "create_update",
        "v1",
    )
    assert bolt.max_in_flight == 8, "in flight sized from the tenant's budget, not the deployment's"


def test_a_directory_holds_one_file_per_tenant_named_by_the_file(tmp_path: Path) -> None:
    """The layout of a mounted Kubernetes Secret: one file per tenant (TOML or JSON), hidden entries
    (``..data``) skipped."""
    (tmp_path / "acme").write_text('kind = "shoplazza"\nshop = "acme"\napi_key = "t1"\n')
    (tmp_path / "bolt.json").write_text(json.dumps({"base_url": "http://x", "api_key": "t2"}))
    (tmp_path / "..data").write_text("not a tenant")
    tenants = load_tenants(tmp_path)
    assert sorted(tenants) == ["acme", "bolt"]
    assert tenants["bolt"].kind == "loop"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"base_url": "http://x"}, "api_key: Field required"),
        ({"base_url": "http://x", "api_key": ""}, "api_key: must not be empty"),
        ({"api_key": "k"}, "base_url: required (or shop, for kind shoplazza)"),
        ({"kind": "shopify", "base_url": "http://x", "api_key": "k"}, "kind: must be one of loop, shoplazza"),
        ({"shop": "acme", "api_key": "k"}, "shop: only for kind shoplazza"),
        ({"kind": "shoplazza", "shop": "a b", "api_key": "k"}, "a Shoplazza store name"),
        ({"base_url": "http://x", "api_key": "k", "rate": 3}, "rate: Extra inputs are not permitted"),
        ({"base_url": "http://x", "api_key": "k", "rate_limit_per_second": -1}, "greater than or equal to 0"),
    ],
)
def test_a_wrong_tenant_names_its_file_tenant_and_field(
    tmp_path: Path, fields: dict[str, object], message: str
) -> None:
    """Each rule broken is reported with the file, the tenant and the field."""
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"acme": fields}))
    with pytest.raises(ConfigError) as caught:
        load_tenants(path)
    assert str(caught.value).startswith(f"{path}: tenant acme: ")
    assert message in str(caught.value)


def test_an_api_version_the_vendor_lacks_is_reported_for_that_tenant() -> None:
    tenant = Tenant(name="acme", base_url="http://x", api_key="k", api_version="1999-01")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^tenant acme: api_version for loop must be one of"):
        tenant.sink_settings(SinkSettings())


def test_a_tenant_name_is_checked() -> None:
    with pytest.raises(ValueError, match="1 to 64 of letters"):
        Tenant(name="../etc", base_url="http://x", api_key="k")  # type: ignore[arg-type]


def test_the_key_is_never_shown() -> None:
    tenant = Tenant(name="acme", base_url="http://x", api_key="s3cret-value")  # type: ignore[arg-type]
    assert "s3cret-value" not in repr(tenant)
    assert "s3cret-value" not in str(tenant.model_dump())


def _touch(path: Path, text: str) -> None:
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_a_reload_reports_what_changed_and_a_broken_edit_keeps_the_tenants(tmp_path: Path) -> None:
    """Added, removed and changed tenants (a new key counts as a change); an edit that does not
    load leaves the tenants as they were and says why, until a good edit clears it."""
    (tmp_path / "acme.toml").write_text('base_url = "http://a"\napi_key = "k1"\n')
    (tmp_path / "bolt.toml").write_text('base_url = "http://b"\napi_key = "k2"\n')
    directory = TenantDirectory(tmp_path)
    assert not directory.refresh(), "nothing changed"

    _touch(tmp_path / "acme.toml", 'base_url = "http://a"\napi_key = "k1-rotated"\n')
    (tmp_path / "bolt.toml").unlink()
    (tmp_path / "cask.toml").write_text('base_url = "http://c"\napi_key = "k3"\n')
    change = directory.refresh()
    assert (change.added, change.removed, change.changed) == ({"cask"}, {"bolt"}, {"acme"})
    assert directory.tenants["acme"].api_key.get_secret_value() == "k1-rotated"

    _touch(tmp_path / "cask.toml", 'base_url = "http://c"\n')
    assert not directory.refresh()
    assert directory.last_error is not None
    assert "tenant cask: api_key: Field required" in directory.last_error
    assert sorted(directory.tenants) == ["acme", "cask"], "the last good tenants are kept"

    _touch(tmp_path / "cask.toml", 'base_url = "http://c2"\napi_key = "k3"\n')
    assert directory.refresh().changed == {"cask"}
    assert directory.last_error is None


def test_connector_tenants_lists_the_configured_shops_without_their_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no member running, ``connector tenants`` lists the configuration, never a key, and says
    that no live state was read."""
    from connector.cli import main

    path = tmp_path / "tenants.toml"
    path.write_text(FILE)
    monkeypatch.setenv("CONNECTOR_TENANTS__PATH", str(path))
    assert main(["tenants", "--url", "http://127.0.0.1:9"]) == 0
    out = capsys.readouterr().out
    assert "acme" in out
    assert "https://acme.myshoplaza.com" in out
    assert "bolt" in out
    assert "acme-token" not in out
    assert "bolt-key" not in out
    assert "no member answered at http://127.0.0.1:9" in out


def test_a_tenant_may_have_its_own_mapping_and_a_broken_one_names_the_tenant(tmp_path: Path) -> None:
    mapping = tmp_path / "m.toml"
    mapping.write_text('external_id = "str(id)"\norder = "@"\n')
    path = tmp_path / "tenants.toml"
    path.write_text(
        f'[acme]\nbase_url = "http://x"\napi_key = "k"\n[acme.mapping]\nfile = "{mapping}"\n'
        '[bolt]\nbase_url = "http://y"\napi_key = "k"\n'
    )
    tenants = load_tenants(path)
    assert tenants["acme"].mapping is not None
    assert tenants["acme"].mapping.file == str(mapping)
    assert tenants["bolt"].mapping is None
    mapping.write_text('external_id = "str(id)"\norder = "{"\n')
    with pytest.raises(ConfigError, match=r"tenant acme: mapping\.file .*order: not a JMESPath expression"):
        load_tenants(path)
    path.write_text('[acme]\nbase_url = "http://x"\napi_key = "k"\n[acme.mapping]\nenvelope = "debezium"\n')
    with pytest.raises(ConfigError, match=r"tenant acme: mapping\.envelope"):
        load_tenants(path)
