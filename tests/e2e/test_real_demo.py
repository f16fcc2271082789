"""The demo on the real control plane, with the operator installed as users install it and running as its own
ServiceAccount: `aegis demo --kubeconfig <real> --sim-nodes --operator-kubeconfig <deploy/aegis's token>`.

The real kube-apiserver, kube-controller-manager and kube-scheduler (v1.28.4) decide what Kubernetes does; the
emulated node side (nodes, kubelet stand-in, volumes, K8sGPT analyzer) is attached by the demo itself.
``deploy/aegis`` is applied with ``kubectl apply --server-side -k`` (and the ValidatingAdmissionPolicy of
``deploy/aegis/admission-policy``, as v1beta1 on v1.28), and the operator logs in with a token of its
ServiceAccount, the approver-stamping webhook on (URL mode on loopback). Shown here:

- with `--approve auto` every scenario meets its expected.yaml; with `--approve deny` nothing is applied;
- least privilege, both ways, from the API server's audit log of those runs (plus a start with the webhook off
  that removes a webhook configuration a killed run left behind): no request of the operator was forbidden, and
  every verb the ClusterRole and the leader-election Role grant was used;
- the admission policy: as that ServiceAccount, deleting a namespace that is not a shadow, creating one, or
  creating a Secret outside a shadow is refused by the API server; deleting a shadow is not;
- AEGIS opens no incidents about itself (its own Deployment's pod cannot start here and its webhook Service has
  no endpoints: the analyzer reports both).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any

import pytest
import yaml

from aegis import config
from aegis.sim import controlplane
from tests.kube_cli import kubectl

pytestmark = [pytest.mark.e2e, pytest.mark.real]

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCENARIOS = sorted(p for p in (ROOT / "examples" / "incidents").iterdir() if (p / "manifests.yaml").is_file())
SERVICE_ACCOUNT = "system:serviceaccount:aegis-system:aegis"


@dataclasses.dataclass
class Installed:
    """deploy/aegis as applied (``aegis_installed``), and the time windows of the runs made as its ServiceAccount."""

    plane: controlplane.ControlPlane
    operator_kubeconfig: pathlib.Path
    windows: list[tuple[datetime.datetime, datetime.datetime]] = dataclasses.field(default_factory=list)


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@pytest.fixture(scope="module")
def installed(aegis_installed: Any) -> Installed:
    # As on a fresh install: no Lease yet (an earlier module's operator may have made one), so the first run
    # creates it, as every first start in a cluster does.
    kubectl(aegis_installed.plane.kubeconfig, "delete", "lease", "aegis", "-n", "aegis-system", "--ignore-not-found")
    return Installed(aegis_installed.plane, aegis_installed.operator_kubeconfig)


def demo(installed: Installed, approve: str, timeout: float = 600) -> tuple[dict[str, dict], Any]:
    plane = installed.plane
    args = [sys.executable, "-m", "aegis.cli", "demo", "--json", "--approve", approve]
    args += ["--kubeconfig", str(plane.kubeconfig), "--sim-nodes"]
    args += ["--operator-kubeconfig", str(installed.operator_kubeconfig)]
    for scenario in SCENARIOS:
        args += ["--incident", str(scenario)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(config.ENV_PREFIX)}
    env.update(
        # The approver-stamping webhook, served on loopback (URL mode: the operator runs outside the cluster).
        AEGIS_ADMISSION_WEBHOOK="true",
        AEGIS_ADMISSION_HOST="127.0.0.1",
        AEGIS_ADMISSION_ADDR="127.0.0.1",
        AEGIS_ADMISSION_PORT=str(controlplane.free_port()),
        # One replica leads, as deploy/aegis runs it (the Lease in aegis-system).
        AEGIS_LEADER_ELECTION="true",
        AEGIS_LEADER_ELECTION_NAMESPACE="aegis-system",
    )
    began = now()
    proc = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, cwd=ROOT, stdin=subprocess.DEVNULL, env=env
    )
    installed.windows.append((began, now()))
    reports = {r["scenario"]: r for r in (json.loads(line) for line in proc.stdout.splitlines() if line.strip())}
    return reports, proc


@pytest.fixture(scope="module")
def approved(installed: Installed) -> tuple[dict[str, dict], Any]:
    return demo(installed, "auto")


@pytest.fixture(scope="module")
def denied(installed: Installed, approved: tuple[dict[str, dict], Any]) -> tuple[dict[str, dict], Any]:
    return demo(installed, "deny")


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_scenario_meets_its_expectations_on_the_real_control_plane(
    scenario: pathlib.Path, approved: tuple[dict[str, dict], Any]
) -> None:
    expected = yaml.safe_load((scenario / "expected.yaml").read_text())
    reports, proc = approved
    assert scenario.name in reports, proc.stderr[-3000:]
    report = reports[scenario.name]
    assert report["met"], json.dumps(report, indent=2)
    assert report["diagnosis"]["category"] == expected["category"], report["diagnosis"]
    assert report["extra_incidents"] == [], "one problem, one incident"
    if expected["outcome"] == "heal":
        assert report["phase"] == "Resolved", report["reason"]
        assert report["verification"]["baselineReproduced"] is True, report["verification"]
        assert report["applied"] is True and report["healed"] is True
    else:
        assert report["phase"] == "Escalated" and report["applied"] is False
        assert report["workload_changed"] is False


def test_the_real_demo_summarises_and_cleans_up(
    real_control_plane: controlplane.ControlPlane, approved: tuple[dict[str, dict], Any]
) -> None:
    reports, proc = approved
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{len(SCENARIOS)}/{len(SCENARIOS)} scenarios met their expected.yaml" in proc.stderr
    namespaces = kubectl(real_control_plane.kubeconfig, "get", "namespaces", "-o", "name").stdout.split()
    left = {f"namespace/{r['namespace']}" for r in reports.values()} & set(namespaces)
    assert not left, f"scenario namespaces left behind: {left}"
    assert not [n for n in namespaces if n.startswith("namespace/aegis-shadow-")], namespaces


def test_denied_fixes_change_nothing_on_the_real_control_plane(denied: tuple[dict[str, dict], Any]) -> None:
    reports, proc = denied
    assert sorted(reports) == sorted(p.name for p in SCENARIOS), proc.stderr[-3000:]
    rejected = 0
    for report in reports.values():
        assert report["applied"] is False, report["scenario"]
        assert report["workload_changed"] is False, f"{report['scenario']}: the workload was changed"
        if report["expected"]["outcome"] == "heal" and report["phase"] == "Rejected":
            assert report["verification"]["passed"] is True and report["decision"] == "rejected"
            rejected += 1
        else:
            assert report["phase"] in ("Escalated", "Resolved") and report["reason"], report["scenario"]
    heal = sum(1 for r in reports.values() if r["expected"]["outcome"] == "heal")
    assert rejected >= heal - 2, f"only {rejected} of {heal} fixes reached the human who rejected them"
    assert proc.returncode == 1


def test_aegis_opens_no_incidents_about_itself(
    installed: Installed, approved: tuple[dict[str, dict], Any], denied: tuple[dict[str, dict], Any]
) -> None:
    admin = installed.plane.kubeconfig
    results = json.loads(kubectl(admin, "get", "results.core.k8sgpt.ai", "-A", "-o", "json").stdout)["items"]
    about_itself = [r for r in results if str((r.get("spec") or {}).get("name", "")).startswith("aegis-system/")]
    assert about_itself, "the analyzer reported nothing in aegis-system: this test shows nothing"
    incidents = json.loads(kubectl(admin, "get", "incidents.aegis.dev", "-n", "aegis-system", "-o", "json").stdout)
    assert incidents["items"] == [], [i["metadata"]["name"] for i in incidents["items"]]


# --- least privilege, both ways --------------------------------------------------------------------------------


Pair = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)


def granted(rbac: pathlib.Path) -> dict[str, set[Pair]]:
    """What deploy/aegis grants the operator's ServiceAccount, per ClusterRole/Role: (group, resource, verb)."""
    docs = [d for d in yaml.safe_load_all(rbac.read_text()) if d]
    bound = {
        d["roleRef"]["name"]
        for d in docs
        if d["kind"] in ("ClusterRoleBinding", "RoleBinding")
        and any(s.get("kind") == "ServiceAccount" and s.get("name") == "aegis" for s in d.get("subjects") or [])
    }
    out: dict[str, set[Pair]] = {}
    for doc in docs:
        if doc["kind"] in ("ClusterRole", "Role") and doc["metadata"]["name"] in bound:
            pairs = out.setdefault(doc["metadata"]["name"], set())
            for rule in doc.get("rules") or []:
                assert "*" not in rule.get("verbs", []) + rule.get("resources", []) + rule.get("apiGroups", []), rule
                assert not rule.get("resourceNames"), rule
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for verb in rule["verbs"]:
                            pairs.add((group, resource, verb))
    return out


def used(events: list[dict[str, Any]]) -> tuple[collections.Counter[tuple[Pair, str]], list[dict[str, Any]]]:
    """Resource requests the audit log saw, as (pair, 'namespaced'|'cluster-wide') -> count; and the forbidden ones."""
    counts: collections.Counter[tuple[Pair, str]] = collections.Counter()
    forbidden = []
    for event in events:
        ref = event.get("objectRef")
        if not ref:  # /api, /apis, /version: discovery, open to every authenticated user
            continue
        resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        scope = "namespaced" if ref.get("namespace") and ref.get("resource") != "namespaces" else "cluster-wide"
        if (event.get("responseStatus") or {}).get("code") == 403:
            forbidden.append(event)
            continue
        counts[((ref.get("apiGroup", ""), resource, event["verb"]), scope)] += 1
    return counts, forbidden


def stale_webhook_removed_as_the_service_account(installed: Installed) -> None:
    """The one path the demos do not run: started with the webhook off, the operator deletes the configuration a
    killed run left behind (a graceful exit only empties it). Written here as that killed run would have left it."""
    from aegis import demo as aegis_demo

    admin = installed.plane.kubeconfig
    leftover = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "aegis.dev"},
        "webhooks": [
            {
                "name": "incident-approver.aegis.dev",
                "clientConfig": {"url": f"https://127.0.0.1:{controlplane.free_port()}/incident-approver"},
                "rules": [
                    {
                        "apiGroups": ["aegis.dev"],
                        "apiVersions": ["v1alpha1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["incidents"],
                    }
                ],
                "failurePolicy": "Ignore",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
            }
        ],
    }
    kubectl(admin, "apply", "-f", "-", stdin=json.dumps(leftover))
    work = pathlib.Path(tempfile.mkdtemp(prefix="aegis-stale-"))
    settings = config.Settings(
        state_db=work / "state.sqlite",
        admission_webhook=False,
        leader_election=True,
        leader_election_namespace="aegis-system",
    )
    began = now()
    operator = aegis_demo.OperatorThread(installed.operator_kubeconfig, settings, work / "operator.log")
    operator.start()
    try:
        deadline = time.monotonic() + 60
        while kubectl(admin, "get", "mutatingwebhookconfiguration", "aegis.dev", check=False).returncode == 0:
            assert time.monotonic() < deadline, "the stale webhook configuration was not removed"
            time.sleep(0.2)
    finally:
        operator.stop()
        installed.windows.append((began, now()))


def test_the_operator_is_granted_exactly_what_it_uses(
    installed: Installed, approved: tuple[dict[str, dict], Any], denied: tuple[dict[str, dict], Any]
) -> None:
    stale_webhook_removed_as_the_service_account(installed)
    events = [
        e
        for e in installed.plane.audit_events(user=SERVICE_ACCOUNT)
        if any(
            start <= datetime.datetime.fromisoformat(e["requestReceivedTimestamp"].replace("Z", "+00:00")) <= end
            for start, end in installed.windows
        )
    ]
    counts, forbidden = used(events)
    print(f"\n{sum(counts.values())} requests of {SERVICE_ACCOUNT} in {len(installed.windows)} runs:")
    for (pair, scope), n in sorted(counts.items(), key=lambda item: -item[1]):
        print(f"  {n:6d}  {pair[2]:7s} {pair[0] or 'core'}/{pair[1]} ({scope})")
    assert not forbidden, "forbidden requests: " + "; ".join(
        f"{e['verb']} {e['objectRef']} -> {(e.get('responseStatus') or {}).get('message', '')}" for e in forbidden[:10]
    )
    seen = {pair for pair, _ in counts}
    grants = granted(ROOT / "deploy/aegis/rbac.yaml")
    unused = {role: sorted(pairs - seen) for role, pairs in grants.items() if pairs - seen}
    assert not unused, f"granted but never used: {unused}"
    # The Role is namespaced for a reason: every Lease request is in AEGIS's own namespace.
    leases = [e["objectRef"] for e in events if (e.get("objectRef") or {}).get("resource") == "leases"]
    assert leases and all(ref.get("namespace") == "aegis-system" for ref in leases), leases[:5]
    # And nothing was used that no rule grants (a 403 would have said so; this names the pair).
    everything = set().union(*grants.values())
    assert seen <= everything, sorted(seen - everything)


def test_the_admission_policy_lets_the_operator_delete_only_its_shadows(installed: Installed) -> None:
    admin, operator = installed.plane.kubeconfig, installed.operator_kubeconfig
    kubectl(admin, "create", "namespace", "rbac-victim")
    kubectl(admin, "create", "namespace", "aegis-shadow-policy-check")
    kubectl(admin, "label", "namespace", "aegis-shadow-policy-check", "aegis.dev/shadow=true")
    try:
        # Policies take effect a moment after they are created: ask with a server-side dry run until it refuses.
        deadline = time.monotonic() + 30
        while True:
            probe = kubectl(operator, "delete", "namespace", "rbac-victim", "--dry-run=server", check=False)
            if probe.returncode != 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert probe.returncode != 0, "the policy never refused the operator's deletion of another namespace"
        refused = kubectl(operator, "delete", "namespace", "rbac-victim", "--wait=false", check=False)
        assert refused.returncode != 0
        assert "AEGIS may delete only its shadow namespaces" in refused.stderr, refused.stderr
        assert kubectl(admin, "get", "namespace", "rbac-victim", check=False).returncode == 0
        created = kubectl(operator, "create", "namespace", "not-a-shadow", check=False)
        assert created.returncode != 0 and "AEGIS may create only shadow namespaces" in created.stderr, created.stderr
        secret = kubectl(
            operator, "create", "secret", "generic", "x", "-n", "rbac-victim", "--from-literal=a=b", check=False
        )
        assert secret.returncode != 0 and "only in its shadow namespaces" in secret.stderr, secret.stderr
        # Its own shadows it may delete; and the policy binds nobody else (the admin deletes the other).
        kubectl(operator, "delete", "namespace", "aegis-shadow-policy-check", "--wait=false")
        kubectl(admin, "delete", "namespace", "rbac-victim", "--wait=false")
    finally:
        for ns in ("rbac-victim", "aegis-shadow-policy-check"):
            kubectl(admin, "delete", "namespace", ns, "--ignore-not-found", "--wait=false", check=False)
