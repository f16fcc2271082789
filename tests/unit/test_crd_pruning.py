"""Structural pruning of custom resources, as kube-apiserver does it; an Incident CRD that keeps what AEGIS writes."""

from __future__ import annotations

import copy
import datetime
from typing import Any

import pytest

from aegis import crds, models
from aegis.llm import advisor
from aegis.sim.apiserver import prune_unknown_fields
from tests import factories

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "list": {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "string"}}}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "maps": {
                    "type": "object",
                    "additionalProperties": {"type": "object", "properties": {"keep": {"type": "integer"}}},
                },
                "anything": {"type": "object", "additionalProperties": True},
                "open": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": True,
                    "properties": {"typed": {"type": "object", "properties": {"x": {"type": "integer"}}}},
                },
                "embedded": {
                    "type": "object",
                    "x-kubernetes-embedded-resource": True,
                    "properties": {"spec": {"type": "object"}},
                },
            },
        },
    },
}


def test_undeclared_fields_are_pruned_at_every_level() -> None:
    obj = {
        "apiVersion": "x.dev/v1",
        "kind": "Thing",
        "metadata": {"name": "a", "annotations": {"k": "v"}},
        "spec": {
            "name": "n",
            "bogus": 1,
            "list": [{"a": "1", "b": "2"}, "not-an-object"],
            "labels": {"free": "form"},
            "maps": {"one": {"keep": 1, "drop": 2}},
            "anything": {"deep": {"er": [1]}},
            "open": {"free": {"nested": True}, "typed": {"x": 1, "y": 2}},
            "embedded": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}, "junk": 1},
        },
        "status": {"undeclared": "at the root"},
        "extra": True,
    }
    assert prune_unknown_fields(obj, SCHEMA, root=True) is obj
    assert obj == {
        "apiVersion": "x.dev/v1",
        "kind": "Thing",
        "metadata": {"name": "a", "annotations": {"k": "v"}},
        "spec": {
            "name": "n",
            "list": [{"a": "1"}, "not-an-object"],
            "labels": {"free": "form"},
            "maps": {"one": {"keep": 1}},
            "anything": {"deep": {"er": [1]}},
            "open": {"free": {"nested": True}, "typed": {"x": 1}},
            "embedded": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}},
        },
    }


def test_metadata_apiversion_and_kind_are_kept_only_at_the_root() -> None:
    schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": {}}}}
    obj = {"apiVersion": "v", "kind": "K", "metadata": {}, "spec": {"apiVersion": "v", "kind": "K", "metadata": {}}}
    prune_unknown_fields(obj, schema, root=True)
    assert obj == {"apiVersion": "v", "kind": "K", "metadata": {}, "spec": {}}


def test_a_schema_without_structure_keeps_only_what_is_always_kept() -> None:
    assert prune_unknown_fields({"kind": "K", "a": 1}, {"type": "object"}, root=True) == {"kind": "K"}
    assert prune_unknown_fields("text", {"type": "object"}) == "text"
    assert prune_unknown_fields([1, 2], {"type": "array"}) == [1, 2]


def _incident_schema() -> dict[str, Any]:
    return crds.load("incident")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("phase", ["AwaitingApproval", "Resolved", "Rejected", "Diagnosed"])
def test_the_incident_crd_keeps_every_field_the_workflow_writes(phase: str) -> None:
    incident = factories.incident("shop", "web", phase=phase)
    now = datetime.datetime(2026, 11, 21, 10, 0, tzinfo=datetime.UTC)
    status = incident["status"]
    status["diagnosis"] = models.Diagnosis(
        category="app-crash",
        summary="s",
        evidence=["e"],
        confidence=0.5,
        source="llm",
        explanation="the app exits because DATABASE_URL is unset",
    ).dump()
    status["decision"] = models.Decision(
        verdict="ask", reason="r", at=now, expiresAt=now + datetime.timedelta(hours=1), question="q1"
    ).dump()
    call = advisor.Call(purpose="diagnose", model="m", ok=True, input_tokens=10, output_tokens=5, latency_ms=7)
    status["llm"] = advisor.summary([call.dump(), {**call.dump(), "cached": True}])
    status["evidence"] = {"pods": 2, "events": 6, "gaps": ["logs: forbidden"]}
    status["conditions"] = [{"type": "Ready", "status": "False", "reason": "Escalated"}]
    incident["spec"]["approval"].update(
        approverGroups=["system:authenticated"],
        approvedAt="2026-11-21T10:07:00Z",
        identity="admission",
        signature="s",
        question="q1",
    )
    assert status["llm"]["history"] and status["decision"]["expiresAt"] and status["diagnosis"]["explanation"]
    assert prune_unknown_fields(copy.deepcopy(incident), _incident_schema(), root=True) == incident


def test_the_incident_crd_still_prunes_what_it_does_not_declare() -> None:
    incident = factories.incident("shop", "web", phase="Diagnosed")
    incident["status"]["notDeclared"] = {"x": 1}
    incident["status"]["diagnosis"]["notDeclared"] = "x"
    incident["spec"]["approval"]["notDeclared"] = "x"
    pruned = prune_unknown_fields(copy.deepcopy(incident), _incident_schema(), root=True)
    assert "notDeclared" not in pruned["status"]
    assert "notDeclared" not in pruned["status"]["diagnosis"]
    assert "notDeclared" not in pruned["spec"]["approval"]


def test_a_k8sgpt_result_keeps_what_the_analyzer_writes() -> None:
    result = factories.result("shop", "web", ["Back-off pulling image"], masks=[[("web", "d2Vi")]], lifecycle="created")
    result["status"]["contentHash"] = "abc"
    schema = crds.load("result")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert prune_unknown_fields(copy.deepcopy(result), schema, root=True) == result
