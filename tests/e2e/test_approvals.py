"""The human approval paths, driven like a user: the emulated cluster, the real operator (`kopf run -m handlers`,
propose mode) and the `aegis` CLI / kubectl as subprocesses, on the bad-image-tag scenario.

One cluster and one operator serve the approve / reject / changed-target cases, each in its own namespace (the
scenario is loaded into several namespaces, broken all at once); the expiry case has its own cluster, and its
operator is restarted with a short AEGIS_APPROVAL_TIMEOUT_SECONDS while the fix waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import datetime
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from aegis import expiry, models
from aegis.sim import client as sim_client
from aegis.sim import cluster, scenarios
from tests.integration.conftest import Kube, Operator, demo_windows, wait_for

pytestmark = pytest.mark.e2e
ROOT = pathlib.Path(__file__).resolve().parents[2]
SCENARIO = scenarios.load(ROOT / "examples/incidents/bad-image-tag")
NAME = "deployment-web"  # the Incident of Deployment web
BAD, FIXED = "nginx:1.277", "nginx:1.27"
SPEED = 10
# The demo's speed-scaled windows (aegis/demo.py), as the operator reads them from its environment.
FAST = {
    "AEGIS_MODE": "propose",
    "AEGIS_LLM_MODE": "off",
    **demo_windows(SPEED),
}
CASES = ("approve-cli", "approve-kubectl", "reject", "changed")  # one namespace each
WAIT = 120.0  # generous: the machine is shared


@dataclasses.dataclass
class Lab:
    sim: cluster.SimCluster
    kube: Kube
    operator: Operator

    # --- acting like a user --------------------------------------------------------------------------------------

    def aegis(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "aegis.cli", *args, "--kubeconfig", str(self.sim.kubeconfig)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env={**os.environ, "COLUMNS": "200"},
        )

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", "--kubeconfig", str(self.sim.kubeconfig), *args], capture_output=True, text=True, timeout=60
        )

    def load(self, namespace: str) -> None:
        """The scenario's manifests in ``namespace``; once healthy, its bad change (a release with a tag typo)."""
        asyncio.run(_apply(self.sim.url, relocate(SCENARIO.manifests, namespace), namespace))
        wait_for(lambda: self.healthy(namespace), WAIT, what=f"deployment web in {namespace} to roll out")
        # K8sGPT may have caught the first rollout mid-way (a Service without ready endpoints): that incident
        # ends on its own (the workload recovered); clear it so each case starts from the bad change alone.
        wait_for(
            lambda: all(
                (i.get("status") or {}).get("phase") in models.TERMINAL_PHASES for i in self.kube.incidents(namespace)
            ),
            WAIT,
            what=f"incidents of the first rollout in {namespace} to end",
        )
        for item in self.kube.incidents(namespace):
            self.kube.custom.delete_namespaced_custom_object(
                models.API_GROUP, models.API_VERSION, namespace, "incidents", item["metadata"]["name"]
            )
        asyncio.run(_apply(self.sim.url, relocate(SCENARIO.change, namespace), namespace))

    # --- looking ---------------------------------------------------------------------------------------------------

    def incident(self, namespace: str) -> dict[str, Any]:
        items = [i for i in self.kube.incidents(namespace) if i["metadata"]["name"].startswith(NAME)]
        return items[-1] if items else {}

    def status(self, namespace: str) -> dict[str, Any]:
        return self.incident(namespace).get("status") or {}

    def phase(self, namespace: str) -> str:
        return self.status(namespace).get("phase", "")

    def deployment(self, namespace: str) -> dict[str, Any]:
        response = self.kube.apps.read_namespaced_deployment("web", namespace, _preload_content=False)
        return json.loads(response.data)

    def image(self, namespace: str) -> str:
        return self.deployment(namespace)["spec"]["template"]["spec"]["containers"][0]["image"]

    def healthy(self, namespace: str) -> bool:
        return scenarios.healthy(self.deployment(namespace))

    def lines(self, namespace: str, stage: str | None = None) -> list[str]:
        timeline = self.status(namespace).get("timeline") or []
        return [line["message"] for line in timeline if stage is None or line["stage"] == stage]

    def wait_phase(self, namespace: str, *phases: str, timeout: float = WAIT) -> dict[str, Any]:
        """Poll until the incident is in one of ``phases``; on timeout, say where it was and what the operator did."""
        try:
            wait_for(lambda: self.phase(namespace) in phases, timeout, what=f"{namespace}: phase in {phases}")
        except AssertionError as exc:
            status = json.dumps(self.status(namespace), indent=1)[-4000:]
            raise AssertionError(f"{exc}\nstatus: {status}\noperator log:\n{self.operator.log()[-4000:]}") from None
        return self.status(namespace)

    def wait_end(self, namespace: str, timeout: float = WAIT) -> dict[str, Any]:
        """Poll until the workflow ended: a final phase and the report's line (written after the gate's phase)."""
        ended = models.TERMINAL_PHASES
        try:
            wait_for(
                lambda: self.phase(namespace) in ended and self.lines(namespace, "report"),
                timeout,
                what=f"{namespace}: the workflow to end",
            )
        except AssertionError as exc:
            status = json.dumps(self.status(namespace), indent=1)[-4000:]
            raise AssertionError(f"{exc}\nstatus: {status}\noperator log:\n{self.operator.log()[-4000:]}") from None
        return self.status(namespace)

    def waiting_again(self, namespace: str) -> bool:
        """AwaitingApproval on a new question: a "waiting for approval" line after the "verifying again" one."""
        gate = self.lines(namespace, "gate")
        again = [i for i, message in enumerate(gate) if "verifying again" in message]
        return (
            self.phase(namespace) == "AwaitingApproval"
            and bool(again)
            and any(message.startswith("waiting for approval") for message in gate[again[-1] :])
        )


def said(proc: subprocess.CompletedProcess[str]) -> str:
    """What a command printed, for an assertion message."""
    return f"exit {proc.returncode}: {' '.join(map(str, proc.args))}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"


def relocate(docs: tuple[dict[str, Any], ...], namespace: str) -> tuple[dict[str, Any], ...]:
    """The scenario's documents moved into ``namespace`` (it lives in exactly one)."""
    moved = []
    for doc in copy.deepcopy(docs):
        if doc["kind"] == "Namespace":
            doc["metadata"]["name"] = namespace
        elif doc["metadata"].get("namespace"):
            doc["metadata"]["namespace"] = namespace
        moved.append(doc)
    return tuple(moved)


async def _apply(url: str, docs: tuple[dict[str, Any], ...], namespace: str) -> None:
    async with sim_client.SimClient(url) as api:
        await scenarios.apply(api, docs, namespace)  # kubectl apply, as the demo does it


def _halt(operator: Operator) -> None:
    """Stop an operator this module started, whatever state it is in."""
    if operator.process is None or operator.process.poll() is not None:
        return
    try:
        operator.stop()
    finally:
        if operator.process.poll() is None:
            operator.process.kill()
            operator.process.wait(timeout=10)


@contextlib.contextmanager
def running(work: pathlib.Path, env: dict[str, str]) -> Iterator[Lab]:
    """An emulated cluster and the real operator against it; both are gone when the block ends, even on failure."""
    with cluster.SimCluster(work / "kubeconfig", cluster.ClusterOptions(speed=SPEED)) as sim:
        api = kubernetes.config.new_client_from_config(config_file=str(sim.kubeconfig))
        operator = Operator(sim.kubeconfig, work, env={**FAST, **env})
        try:
            operator.start()
            yield Lab(sim, Kube(api), operator)
        finally:
            _halt(operator)
            api.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One cluster + operator for the approve / reject / changed cases; every case's namespace breaks at once."""
    with running(tmp_path_factory.mktemp("approvals"), {}) as the_lab:
        for namespace in CASES:
            asyncio.run(_apply(the_lab.sim.url, relocate(SCENARIO.manifests, namespace), namespace))
        for namespace in CASES:
            wait_for(lambda ns=namespace: the_lab.healthy(ns), WAIT, what=f"deployment web in {namespace} to roll out")
            asyncio.run(_apply(the_lab.sim.url, relocate(SCENARIO.change, namespace), namespace))
        yield the_lab


def assert_resolved_with_the_fix(lab: Lab, namespace: str) -> None:
    status = lab.wait_end(namespace)
    assert status["phase"] == "Resolved", status.get("reason")
    assert status["decision"]["verdict"] == "ask" and status["decision"]["outcome"] == "approved"
    assert [r["action"]["kind"] for r in status["actions"]["results"]] == ["rollback"]
    assert status["outcome"]["applied"] is True and status["outcome"]["healed"] is True
    assert lab.image(namespace) == FIXED
    assert any(message.startswith("approved by ") for message in lab.lines(namespace, "gate"))


def test_aegis_approve_resumes_the_waiting_fix(lab: Lab) -> None:
    ns = "approve-cli"
    waiting = lab.wait_phase(ns, "AwaitingApproval")
    assert waiting["decision"]["outcome"] == "pending" and waiting["decision"]["expiresAt"]
    assert lab.image(ns) == BAD, "nothing is applied before a human decides"

    listed = lab.aegis("incidents", "-A")
    assert listed.returncode == 0, said(listed)
    assert any(ns in row and NAME in row and "AwaitingApproval" in row for row in listed.stdout.splitlines())
    shown = lab.aegis("show", NAME, "-n", ns)
    assert shown.returncode == 0, said(shown)
    assert "waiting for a decision since" in shown.stdout and "expires at" in shown.stdout
    assert f"aegis approve {NAME} -n {ns}" in shown.stdout

    approved = lab.aegis("approve", NAME, "-n", ns, "--reason", "tag typo")
    assert approved.returncode == 0, said(approved)
    assert f"Approved {ns}/{NAME}" in approved.stdout
    assert_resolved_with_the_fix(lab, ns)
    assert lab.status(ns)["decision"]["reason"] == "tag typo"


def test_a_plain_kubectl_patch_approves_too(lab: Lab) -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    ns = "approve-kubectl"
    lab.wait_phase(ns, "AwaitingApproval")
    assert lab.image(ns) == BAD
    patch = json.dumps({"spec": {"approval": {"decision": "Approved"}}})
    out = lab.kubectl("patch", "incident", NAME, "-n", ns, "--type", "merge", "-p", patch)
    assert out.returncode == 0, said(out)
    assert_resolved_with_the_fix(lab, ns)


def test_aegis_reject_ends_it_and_changes_nothing(lab: Lab) -> None:
    ns = "reject"
    lab.wait_phase(ns, "AwaitingApproval")
    before = lab.deployment(ns)["spec"]
    assert before["template"]["spec"]["containers"][0]["image"] == BAD

    rejected = lab.aegis("reject", NAME, "-n", ns, "--reason", "we pin 1.27.7 instead")
    assert rejected.returncode == 0, said(rejected)
    assert f"Rejected {ns}/{NAME}: nothing will be changed." in rejected.stdout
    status = lab.wait_end(ns)
    assert status["phase"] == "Rejected", status.get("reason")
    assert status["decision"]["outcome"] == "rejected"
    assert status["decision"]["reason"] == "we pin 1.27.7 instead"
    assert status["reason"].startswith("the fix was rejected by ")
    assert any(message.startswith("rejected by ") for message in lab.lines(ns, "gate"))
    assert lab.deployment(ns)["spec"] == before, "a rejected fix changes nothing"
    assert not status.get("actions") and not (status.get("outcome") or {}).get("applied")

    again = lab.aegis("approve", NAME, "-n", ns)  # too late: only a waiting incident can be decided
    assert again.returncode == 1 and "is Rejected" in again.stderr


def test_a_target_changed_while_waiting_is_verified_again_before_anything_is_applied(lab: Lab) -> None:
    ns = "changed"
    first_question = lab.wait_phase(ns, "AwaitingApproval")["decision"]
    # Someone edits the Deployment while the fix waits (no new rollout: a field outside the pod template).
    lab.kube.apps.patch_namespaced_deployment("web", ns, {"spec": {"progressDeadlineSeconds": 601}})
    changed = lab.deployment(ns)["spec"]
    assert changed["progressDeadlineSeconds"] == 601

    approved = lab.aegis("approve", NAME, "-n", ns, "--reason", "approved before the edit was noticed")
    assert approved.returncode == 0, said(approved)
    try:
        wait_for(lambda: lab.waiting_again(ns), WAIT, what="the fix to be verified again and asked about again")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\ntimeline: {lab.lines(ns)}\nphase: {lab.phase(ns)}") from None
    assert any("verifying again" in message for message in lab.lines(ns, "gate"))
    assert lab.image(ns) == BAD and lab.deployment(ns)["spec"] == changed, "not applied without a fresh approval"
    status = lab.status(ns)
    assert status["decision"]["outcome"] == "pending"
    when = {key: expiry.parse_time(status["decision"][key]) for key in ("at", "expiresAt")}
    assert when["at"] > expiry.parse_time(first_question["at"]), "a new question, with its own deadline"
    assert when["expiresAt"] > expiry.parse_time(first_question["expiresAt"])
    assert (lab.incident(ns)["spec"].get("approval") or {}).get("decision", "Pending") == "Pending"
    assert not status.get("actions")
    old, new = first_question["question"], status["decision"]["question"]
    assert old and new and old != new

    # The command from the first notification names the first question: the CLI refuses it...
    stale = lab.aegis("approve", NAME, "-n", ns, "--question", old)
    assert stale.returncode == 1 and "another fix" in stale.stderr, said(stale)
    # ...and an answer to it written by hand is withdrawn by the operator, not applied.
    answer = {"spec": {"approval": {"decision": "Approved", "question": old}}}
    lab.kube.custom.patch_namespaced_custom_object(models.API_GROUP, models.API_VERSION, ns, "incidents", NAME, answer)
    wait_for(
        lambda: any("ignored Approved for question" in m for m in lab.lines(ns, "gate")),
        WAIT,
        what="the stale answer to be withdrawn",
    )
    assert (lab.incident(ns)["spec"].get("approval") or {}).get("decision") == "Pending"
    assert lab.phase(ns) == "AwaitingApproval" and lab.image(ns) == BAD

    approved = lab.aegis("approve", NAME, "-n", ns, "--question", new, "--reason", "still right")
    assert approved.returncode == 0, said(approved)
    assert_resolved_with_the_fix(lab, ns)
    assert lab.deployment(ns)["spec"]["progressDeadlineSeconds"] == 601  # the fix changed only what it had to


def test_an_unanswered_approval_expires_even_across_an_operator_restart(tmp_path: pathlib.Path) -> None:
    ns = "storefront"
    # The first operator (default timeout: an hour) asks, then dies; the one that replaces it runs with a 5 s
    # timeout: the deadline comes from the wait recorded on the Incident, not from anything in memory.
    with running(tmp_path / "a", {}) as lab:
        lab.load(ns)
        waiting = lab.wait_phase(ns, "AwaitingApproval")
        os.kill(lab.operator.process.pid, signal.SIGKILL)
        lab.operator.process.wait(timeout=10)
        decision = waiting["decision"]
        assert decision["outcome"] == "pending"
        deadline = expiry.parse_time(decision["expiresAt"])
        assert deadline and deadline - expiry.parse_time(decision["at"]) == datetime.timedelta(hours=1)  # the default
        before = lab.deployment(ns)["spec"]

        second = Operator(
            lab.sim.kubeconfig,
            (tmp_path / "b"),
            env={**FAST, "AEGIS_APPROVAL_TIMEOUT_SECONDS": "5", "AEGIS_STATE_DB": str(tmp_path / "a/state.sqlite")},
        )
        (tmp_path / "b").mkdir()
        lab.operator = second
        try:
            second.start()
            status = lab.wait_end(ns)
            assert status["phase"] == "Expired", status.get("reason")
            assert status["reason"].startswith("no decision within 5s; the verified fix was not applied; re-trigger")
            assert f"kubectl delete incident {NAME} -n {ns}" in status["reason"]
            assert status["decision"]["outcome"] == "expired"
            gate = lab.lines(ns, "gate")
            assert gate[-1] == "approval expired: no decision within 5s"
            assert lab.lines(ns, "report")[-1].startswith("Expired: no decision within 5s")
            events = lab.kube.core.list_namespaced_event(ns).items
            expired = [e for e in events if e.reason == "AegisGate" and "approval expired" in (e.message or "")]
            assert expired and expired[0].type == "Warning", [(e.reason, e.message) for e in events]
            assert lab.image(ns) == BAD and lab.deployment(ns)["spec"] == before, "an expired fix changes nothing"
            assert not status.get("actions") and not (status.get("outcome") or {}).get("applied")

            shown = lab.aegis("show", NAME, "-n", ns)
            assert shown.returncode == 0 and "Expired" in shown.stdout, shown.stderr
            late = lab.aegis("approve", NAME, "-n", ns)
            assert late.returncode == 1 and "is Expired" in late.stderr

            # As the reason says: deleting the Incident lets K8sGPT's next report open a new one.
            old_uid = lab.incident(ns)["metadata"]["uid"]
            lab.kube.custom.delete_namespaced_custom_object("aegis.dev", "v1alpha1", ns, "incidents", NAME)
            wait_for(
                lambda: lab.incident(ns) and lab.incident(ns)["metadata"]["uid"] != old_uid,
                WAIT,
                what="a new Incident after the expired one was deleted",
            )
        finally:
            _halt(second)
