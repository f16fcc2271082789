"""Settings: defaults, parsing of lists, and start-up errors that name the variable."""

from __future__ import annotations

import pytest

from aegis import config


def test_defaults_ignore_system_and_shadow_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AEGIS_WATCH_NAMESPACES", "AEGIS_IGNORE_NAMESPACES"):
        monkeypatch.delenv(name, raising=False)
    settings = config.load_settings()
    assert str(settings.ollama_url) == "http://127.0.0.1:11434/"
    assert not settings.namespace_allowed("kube-system")
    assert not settings.namespace_allowed("aegis-shadow-7f3a")
    assert settings.namespace_allowed("shop")


def test_lists_from_env_as_csv_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AEGIS_WATCH_NAMESPACES", "shop, pay-*")
    assert config.load_settings().watch_namespaces == ["shop", "pay-*"]
    monkeypatch.setenv("AEGIS_WATCH_NAMESPACES", '["data"]')
    settings = config.load_settings()
    assert settings.namespace_allowed("data") and not settings.namespace_allowed("shop")


def test_invalid_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AEGIS_MAX_CONCURRENT_INCIDENTS", "0")
    monkeypatch.setenv("AEGIS_OLLAMA_URL", "not a url")
    with pytest.raises(config.SettingsError) as caught:
        config.load_settings()
    message = str(caught.value)
    assert "AEGIS_MAX_CONCURRENT_INCIDENTS" in message
    assert "AEGIS_OLLAMA_URL" in message


def test_its_own_namespace_is_never_a_target_whatever_the_lists_say(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AEGIS_IGNORE_NAMESPACES", "kube-system")  # a user's own list, without aegis-system
    monkeypatch.setenv("AEGIS_WATCH_NAMESPACES", "*")
    assert not config.load_settings().namespace_allowed("aegis-system")
    monkeypatch.setenv("AEGIS_OWN_NAMESPACE", "platform-aegis")
    settings = config.load_settings()
    assert not settings.namespace_allowed("platform-aegis") and settings.namespace_allowed("aegis-system")
