"""The scenario library and the packaged CRDs: complete, consistent, and covering the taxonomy."""

from __future__ import annotations

import pathlib

import yaml

from aegis import crds, models
from aegis.sim import catalog, client, scenarios

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "incidents"


def test_packaged_crds_are_the_deployed_ones() -> None:
    assert (ROOT / "aegis/crds/incident.yaml").read_text() == (ROOT / "deploy/aegis/crd-incident.yaml").read_text()
    assert (ROOT / "aegis/crds/result.yaml").read_text() == (ROOT / "deploy/k8sgpt/crd-result.yaml").read_text()
    incident = crds.load("incident")
    version = incident["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Target", "Kind", "Phase", "Category", "Age"]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == list(models.Phase.__args__)  # type: ignore[attr-defined]
    assert status["diagnosis"]["properties"]["category"]["enum"] == list(models.CATEGORIES)


def test_scenarios_cover_the_taxonomy_with_real_images() -> None:
    paths = scenarios.discover(EXAMPLES)
    loaded = [scenarios.load(path) for path in paths]
    assert len(loaded) >= 12
    categories = {s.expected.category for s in loaded}
    assert categories == set(models.CATEGORIES) - {"unknown"}, "every failure category has a scenario"
    assert sum(1 for s in loaded if s.expected.outcome == "escalate") >= 2
    assert sum(1 for s in loaded if s.change) >= 6, "most incidents are a bad rollout of a healthy workload"
    assert len({s.namespace for s in loaded}) == len(loaded)
    images = catalog.Catalog.load()
    for scenario in loaded:
        assert (scenario.path / "README.md").read_text().count("**What a good SRE does.**") == 1, scenario.name
        for action in scenario.expected.actions:
            assert action in models.ActionKind.__args__, (scenario.name, action)  # type: ignore[attr-defined]
        for doc in scenario.manifests:
            for container in ((doc.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers", []):
                _, entry, error = images.resolve(container["image"])
                assert entry is not None, f"{scenario.name}: the healthy manifests use a known image ({error})"


def test_change_files_are_complete_manifests_for_kubectl_apply() -> None:
    for path in scenarios.discover(EXAMPLES):
        scenario = scenarios.load(path)
        for doc in scenario.change:
            original = next(
                m
                for m in scenario.manifests
                if (m["kind"], m["metadata"]["name"]) == (doc["kind"], doc["metadata"]["name"])
            )
            # kubectl apply removes fields missing from the new manifest: a partial change.yaml would break.
            assert doc["spec"]["selector"] == original["spec"]["selector"], path.name
            assert set(doc["spec"]) >= set(original["spec"]) - {"strategy"}, path.name


def test_scenario_errors_are_clear(tmp_path: pathlib.Path) -> None:
    import pytest

    with pytest.raises(scenarios.ScenarioError, match=r"no manifests\.yaml"):
        scenarios.load(tmp_path)
    (tmp_path / "manifests.yaml").write_text(
        yaml.safe_dump_all(
            [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}},
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "b"}},
            ]
        )
    )
    (tmp_path / "expected.yaml").write_text(
        "target: {kind: Deployment, name: x}\ncategory: image-pull\noutcome: heal\n"
    )
    with pytest.raises(scenarios.ScenarioError, match="exactly one namespace"):
        scenarios.load(tmp_path)
    assert "ConfigMap" in client.KINDS


def test_scenarios_exercise_the_shadows_identity_and_secret_copies() -> None:
    """The real tier proves every RBAC grant by use: some healing scenario must pull with an imagePullSecret, run
    as its own ServiceAccount, read a Secret through env, and be a StatefulSet. What a heal scenario's pods name
    exists in its manifests (a missing one would be another failure than the one the scenario is about)."""
    pull, accounts, env_secrets, kinds = set(), set(), set(), set()
    for path in scenarios.discover(EXAMPLES):
        scenario = scenarios.load(path)
        if scenario.expected.outcome != "heal":
            continue
        kinds.add(scenario.expected.target_kind)
        present = {(doc["kind"], doc["metadata"]["name"]) for doc in scenario.manifests}
        for doc in scenario.manifests + scenario.change:
            spec = ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
            for ref in spec.get("imagePullSecrets") or []:
                assert ("Secret", ref["name"]) in present, (scenario.name, ref)
                pull.add(scenario.name)
            if spec.get("serviceAccountName", "default") != "default":
                assert ("ServiceAccount", spec["serviceAccountName"]) in present, scenario.name
                accounts.add(scenario.name)
            for container in spec.get("containers") or []:
                for env in container.get("env") or []:
                    ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                    if ref:
                        assert ("Secret", ref["name"]) in present, (scenario.name, ref)
                        env_secrets.add(scenario.name)
    assert pull and accounts and env_secrets, (pull, accounts, env_secrets)
    assert "StatefulSet" in kinds
