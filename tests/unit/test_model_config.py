"""Pure rules: tenant ids, class names, settings layering."""

from __future__ import annotations

from pathlib import Path

import pytest

from ooma_moh.config import Settings, load_settings
from ooma_moh.errors import ConfigError, InvalidTenantId
from ooma_moh.model import MohSetting, TenantMoh, moh_class_name, validate_tenant_id


@pytest.mark.parametrize("tenant", ["a", "A9", "acme_corp-1", "x" * 64, "0"])
def test_valid_tenant_ids(tenant: str) -> None:
    assert validate_tenant_id(tenant) == tenant


@pytest.mark.parametrize("tenant", ["a]b", "a\nb", "../x", "", "x" * 65, "-a", "_a", "a b", "a.b", "ü", "a;b", None, 5])
def test_invalid_tenant_ids(tenant: object) -> None:
    with pytest.raises(InvalidTenantId, match="invalid tenant id"):
        validate_tenant_id(tenant)


def test_class_name_uses_prefix() -> None:
    assert moh_class_name("acme") == "tenant-acme"
    assert moh_class_name("acme", "t_") == "t_acme"
    assert TenantMoh("acme", MohSetting.DEFAULT).moh_class("tenant-") == "default"
    with pytest.raises(InvalidTenantId):
        moh_class_name("a\nb")


def test_settings_layering(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('home = "/srv/moh"\nmax_upload_bytes = 1000\nclass_prefix = "file-"\nloudness_lufs = -18\n')
    env = {"OOMA_MOH_MAX_UPLOAD_BYTES": "2000", "OOMA_MOH_CLASS_PREFIX": "env-"}
    s = load_settings(config, environ=env, overrides={"class_prefix": "flag-", "home": None})
    assert s.home == Path("/srv/moh")
    assert s.max_upload_bytes == 2000
    assert s.class_prefix == "flag-"
    assert s.loudness_lufs == -18.0
    assert s.moh_dir == Path("/srv/moh/moh")
    assert s.catalog_path == Path("/srv/moh/catalog.sqlite3")


def test_settings_from_config_env_var(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[ooma_moh]\nloudness_lufs = -23.0\n")
    s = load_settings(environ={"OOMA_MOH_CONFIG": str(config), "OOMA_MOH_HOME": str(tmp_path)})
    assert s.loudness_lufs == -23.0 and s.home == tmp_path


@pytest.mark.parametrize(
    "content, message",
    [
        ("bogus = 1\n", "unknown setting"),
        ('max_upload_bytes = "lots"\n', "not a valid int"),
        ('class_prefix = "a b"\n', "class_prefix"),
        ("loudness_lufs = 3\n", "loudness_lufs"),
        ('publish_mode = "magic"\n', "publish_mode"),
        ("min_duration_s = 10\nmax_duration_s = 5\n", "durations"),
        ("not toml", "cannot read config"),
    ],
)
def test_bad_settings_are_specific(tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_settings(config, environ={})


def test_settings_are_frozen() -> None:
    s = Settings(home=Path("/x"))
    with pytest.raises(AttributeError):
        s.home = Path("/y")  # type: ignore[misc]  # the assignment to a frozen field under test


def test_endpoint_of_channel_and_validation() -> None:
    from ooma_moh.model import endpoint_of_channel, validate_endpoint

    assert endpoint_of_channel("PJSIP/acme-100-0000002a") == "PJSIP/acme-100"
    assert endpoint_of_channel("PJSIP/lab-loop-00000001") == "PJSIP/lab-loop"
    assert endpoint_of_channel("Local/rec@ctx-00000001;1") is None
    assert endpoint_of_channel("Announcer/ARI-0001") is None
    assert validate_endpoint("PJSIP/acme-100") == "PJSIP/acme-100"
    for bad in ("acme-100", "PJSIP/", "PJSIP/a b", "PJSIP/x\n", "../etc"):
        with pytest.raises(InvalidTenantId, match="invalid endpoint"):
            validate_endpoint(bad)


def test_settings_environ_round_trips(tmp_path: Path) -> None:
    from ooma_moh.config import settings_environ

    original = Settings(
        home=tmp_path,
        publish_mode="static",
        retain_old_s=0,
        class_prefix="t-",
        ari_password="secret",
        agi_listen="127.0.0.1:5000",
    )
    assert load_settings(environ=settings_environ(original)) == original


@pytest.mark.parametrize("template", ["{endpoint:>999999999}", "{endpoint!r}", "{resource.upper}", "{0}", "{", "{who}"])
def test_a_test_call_dial_template_is_plain_fields_only(template: str) -> None:
    """A format spec would let one test call build a gigabyte; only {endpoint}, {tech} and
    {resource}, as they are (docs/configuration.md)."""
    with pytest.raises(ConfigError, match="test_call_dial"):
        Settings(test_call_dial=template)
    assert Settings(test_call_dial="Local/{resource}@test-calls{tech}").test_call_dial.startswith("Local/")
