"""Tenants: loading a file or a directory of them, the vendor account each is, and reloads."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from connector import logs
from connector.config import SinkSettings
from connector.errors import ConfigError
from connector.tenants import Tenant, TenantDirectory, load_tenants, with_aliases

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
    API version are the vendor's defaults; its client is called as the deployment's sink section says."""
    path = tmp_path / "tenants.toml"
    path.write_text(FILE)
    tenants = load_tenants(path)
    assert sorted(tenants) == ["acme", "bolt"]
    base = SinkSettings(timeout_seconds=3.0, cache_size=9)
    acme = base.calling(tenants["acme"].account())
    assert (acme.kind, acme.base_url, acme.rate_limit_per_second, acme.api_version) == (
        "shoplazza",
        "https://acme.myshoplaza.com",
        2.0,
        "2025-06",
    )
    assert acme.api_key.get_secret_value() == "acme-token"
    assert (acme.timeout_seconds, acme.cache_size) == (3.0, 9)
    assert base.kind == "loop", "the deployment's own account is left as it was"
    bolt = tenants["bolt"].account()
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
        tenant.account()


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


# -- aliases ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("aliases", "message"),
    [
        (["../old"], "aliases: '../old': 1 to 64 of letters"),
        (["acme"], "aliases: each once, and not the tenant's own name"),
        (["old", "old"], "aliases: each once, and not the tenant's own name"),
    ],
)
def test_an_alias_follows_the_name_rule(aliases: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Tenant(name="acme", base_url="http://x", api_key="k", aliases=aliases)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bolt_aliases", "message"),
    [
        (["acme"], "tenant bolt: aliases: 'acme' is already the name of tenant acme"),
        (["old"], "tenant bolt: aliases: 'old' is already an alias of tenant acme"),
    ],
)
def test_an_alias_names_one_tenant_only(tmp_path: Path, bolt_aliases: list[str], message: str) -> None:
    """An alias that is another tenant's name or alias would make routing a guess: nothing loads."""
    path = tmp_path / "t.json"
    path.write_text(
        json.dumps(
            {
                "acme": {"base_url": "http://a", "api_key": "k", "aliases": ["old"]},
                "bolt": {"base_url": "http://b", "api_key": "k", "aliases": bolt_aliases},
            }
        )
    )
    with pytest.raises(ConfigError, match=message):
        load_tenants(path)


def test_with_aliases_gives_every_name_a_shop_goes_by(tmp_path: Path) -> None:
    """What ``dlq redrive --tenant`` matches: a shop by any of its names, all of them; a name of no
    shop as given."""
    path = tmp_path / "t.toml"
    path.write_text('[acme-eu]\nbase_url = "http://a"\napi_key = "k"\naliases = ["acme", "acme-old"]\n')
    assert with_aliases(path, ["acme-eu"]) == {"acme-eu", "acme", "acme-old"}
    assert with_aliases(path, ["acme"]) == {"acme-eu", "acme", "acme-old"}
    assert with_aliases(path, ["ghost"]) == {"ghost"}


# -- one tenant at a time ---------------------------------------------------------------------------
def test_a_tenant_that_does_not_load_is_kept_as_it_was_and_the_others_change(tmp_path: Path) -> None:
    """At start, a tenant that does not load (here an API version its vendor lacks, checked against
    its vendor account) is left out and named; the others load. Later, an edit that
    breaks a loaded tenant keeps that one as it was while the others' changes apply."""
    (tmp_path / "acme.toml").write_text('base_url = "http://a"\napi_key = "k1"\n')
    (tmp_path / "bolt.toml").write_text('base_url = "http://b"\napi_key = "k2"\napi_version = "1999-01"\n')
    directory = TenantDirectory(tmp_path)
    assert sorted(directory.tenants) == ["acme"]
    assert directory.invalid["bolt"].startswith(f"{tmp_path / 'bolt.toml'}: tenant bolt: api_version")

    _touch(tmp_path / "bolt.toml", 'base_url = "http://b"\napi_key = "k2"\n')
    assert directory.refresh().added == {"bolt"}
    _touch(tmp_path / "acme.toml", 'base_url = "http://a"\n')
    _touch(tmp_path / "bolt.toml", 'base_url = "http://b"\napi_key = "k2-rotated"\n')
    change = directory.refresh()
    assert (change.added, change.removed, change.changed) == (set(), set(), {"bolt"})
    assert "tenant acme: api_key: Field required" in change.invalid["acme"]
    assert directory.tenants["acme"].api_key.get_secret_value() == "k1"
    assert directory.tenants["bolt"].api_key.get_secret_value() == "k2-rotated"


# -- removals refused -------------------------------------------------------------------------------
def test_an_emptied_or_half_written_tenants_file_is_refused_not_applied(tmp_path: Path) -> None:
    """A file truncated while it is rewritten, or emptied, would remove every tenant: refused, the
    tenants kept; the complete file then applies."""
    path = tmp_path / "tenants.toml"
    path.write_text(FILE)
    directory = TenantDirectory(path)
    _touch(path, "")
    change = directory.refresh()
    assert not change
    assert change.refused_for == "removal"
    assert "would leave no shop" in change.refused
    assert sorted(directory.tenants) == ["acme", "bolt"]
    assert directory.refused_for == "removal"
    _touch(path, FILE.replace("bolt-key", "bolt-key-2"))
    assert directory.refresh().changed == {"bolt"}
    assert directory.refused_for == ""


@pytest.mark.parametrize(("share", "kept", "refused"), [(0.5, 2, False), (0.5, 1, True), (0.75, 1, False)])
def test_removing_more_than_max_removed_share_is_refused(
    tmp_path: Path, share: float, kept: int, refused: bool
) -> None:
    for name in "abcd":
        (tmp_path / f"{name}.toml").write_text(f'base_url = "http://{name}"\napi_key = "k"\n')
    directory = TenantDirectory(tmp_path, max_removed_share=share)
    for name in "abcd"[kept:]:
        (tmp_path / f"{name}.toml").unlink()
    change = directory.refresh()
    assert bool(change.refused) is refused
    assert len(directory.tenants) == (4 if refused else kept)
    if refused:
        assert f"more than tenants.max_removed_share={share:g}" in change.refused


def test_a_rename_is_no_removal(tmp_path: Path) -> None:
    """Renaming the only tenant (the old name kept as an alias) removes no shop: applied."""
    path = tmp_path / "tenants.toml"
    path.write_text('[acme]\nbase_url = "http://a"\napi_key = "k"\n')
    directory = TenantDirectory(path)
    _touch(path, '[acme-eu]\nbase_url = "http://a"\napi_key = "k"\naliases = ["acme"]\n')
    change = directory.refresh()
    assert (change.added, change.removed, change.refused) == ({"acme-eu"}, {"acme"}, "")


# -- mappings ---------------------------------------------------------------------------------------
def test_a_tenants_mapping_is_compiled_once_and_again_when_its_file_changes(tmp_path: Path) -> None:
    mapping = tmp_path / "m.toml"
    mapping.write_text('external_id = "str(id)"\norder = "@"\n')
    folder = tmp_path / "tenants"
    folder.mkdir()
    (folder / "acme.toml").write_text(
        f'base_url = "http://a"\napi_key = "k"\n[mapping]\nfile = "{mapping}"\n'
    )
    (folder / "bolt.toml").write_text('base_url = "http://b"\napi_key = "k"\n')
    directory = TenantDirectory(folder)
    compiled = directory.mappings["acme"]
    assert "bolt" not in directory.mappings
    _touch(folder / "bolt.toml", 'base_url = "http://b"\napi_key = "k2"\n')
    assert directory.refresh().changed == {"bolt"}
    assert directory.mappings["acme"] is compiled, "not compiled again"
    _touch(mapping, 'external_id = "str(ref)"\norder = "@"\n')
    assert directory.refresh().changed == {"acme"}, "its mapping file changed: the tenant did"
    assert directory.mappings["acme"] is not compiled


def test_dlq_redrive_tenant_matches_every_name_the_shop_went_by(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``connector dlq redrive --tenant acme`` after ``acme`` was renamed ``acme-eu``: the dead
    letters carrying either name are selected, and the command says so."""
    from connector import deadletter
    from connector.cli import main

    path = tmp_path / "tenants.toml"
    path.write_text('[acme-eu]\nbase_url = "http://a"\napi_key = "k"\naliases = ["acme"]\n')
    monkeypatch.setenv("CONNECTOR_TENANTS__PATH", str(path))
    filters: list[deadletter.Filter] = []

    async def redrive(
        settings: object, topic: str, flt: deadletter.Filter, *args: object, **kw: object
    ) -> object:
        filters.append(flt)
        return deadletter.RedriveResult()

    monkeypatch.setattr(deadletter, "redrive", redrive)
    try:
        assert main(["dlq", "redrive", "--tenant", "acme", "--dry-run"]) == 0
    finally:  # the command logs to this test's captured stdout, closed after it
        logs.configure("INFO", stream=sys.__stdout__)
    assert filters[0].tenants == {"acme", "acme-eu"}
    assert "also the names these shops had: acme-eu" in capsys.readouterr().err
