"""``aegis doctor`` pieces that need no server: model names, error wording, the never-raise guard."""

from __future__ import annotations

import time

import kubernetes
import pytest

from aegis import doctor


def test_model_names_carry_a_tag() -> None:
    assert doctor.model_key("llama3.2") == "llama3.2:latest"
    assert doctor.model_key("llama3.2:3b") == "llama3.2:3b"
    assert doctor.model_key("registry.local:5000/team/model") == "registry.local:5000/team/model:latest"


def test_report_ok_ignores_skipped_checks() -> None:
    llm = doctor.LLMView("http://x", "m", "off", 60.0)
    assert doctor.Report([doctor.CheckResult("a", True, ""), doctor.CheckResult("b", None, "")], llm).ok
    assert not doctor.Report([doctor.CheckResult("a", False, "", "fix")], llm).ok


@pytest.mark.parametrize(("status", "words"), [(401, "not accepted"), (403, "lack rights")])
def test_auth_errors_are_explained(status: int, words: str) -> None:
    detail, fix = doctor._explain_kube_error(kubernetes.client.ApiException(status=status), "https://k", 5)
    assert str(status) in detail and "https://k" in detail
    assert words in fix


def test_llm_view_falls_back_to_the_raw_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AEGIS_OLLAMA_URL", "http://ollama:11434/")
    monkeypatch.setenv("AEGIS_LLM_MODE", "off")
    monkeypatch.delenv("AEGIS_OLLAMA_MODEL", raising=False)
    monkeypatch.setenv("AEGIS_LLM_TIMEOUT_SECONDS", "not-a-number")
    view = doctor.llm_view(None)
    assert view == doctor.LLMView("http://ollama:11434", "llama3.2", "off", 60.0)


def test_a_check_never_raises_nor_hangs() -> None:
    def boom() -> list[doctor.CheckResult]:
        raise RuntimeError("kaput")

    (result,) = doctor._guarded("X", boom, 5)
    assert result.ok is False and "kaput" in result.detail

    def slow() -> list[doctor.CheckResult]:
        time.sleep(5)
        return [doctor.CheckResult("Y", True, "")]

    (result,) = doctor._guarded("Y", slow, 0.2)
    assert result.ok is False and "no answer within" in result.detail
