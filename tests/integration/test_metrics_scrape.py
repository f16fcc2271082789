"""The operator's /metrics, scraped over HTTP while the real operator works and after it: every AEGIS metric is
there with values that agree with what happened and with the Incidents in the cluster.

The real operator (``kopf run -m handlers``, AEGIS_METRICS_PORT on a free port) runs against the emulated
cluster with its controllers, kubelet stand-in and K8sGPT analyzer (10x speed) and a fake Ollama in
``explain`` mode (one LLM call per diagnosis; the one about ``ledger-db`` answers HTTP 500). Two scenarios at
once: ``bad-image-tag`` (propose mode: verified in the shadow, waits for approval, approved here, applied,
healed) and ``missing-secret`` (a value only a human knows: Escalated). One API error is injected (a 503 on the
operator's list of Events in ``billing``). A poller scrapes all the way through; the test scrapes at the moment
the fix waits for approval, and at the end.

Also here: the Advisor's LLM metrics against the fake Ollama over real HTTP (calls, tokens, failures by
reason, cache hits, queue depth).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import pathlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import kubernetes
import pytest
from prometheus_client import parser

from aegis import metrics, models
from aegis.llm import advisor
from aegis.sim import apiserver, cluster, scenarios
from aegis.sim import client as sim_client
from aegis.sim.ollama import FakeOllama, Reply, json_reply
from tests.integration import test_llm
from tests.integration.conftest import Kube, Operator, demo_windows, wait_for

pytestmark = pytest.mark.integration
ROOT = pathlib.Path(__file__).resolve().parents[2]
HEAL = scenarios.load(ROOT / "examples/incidents/bad-image-tag")  # Deployment web in storefront
ESCALATE = scenarios.load(ROOT / "examples/incidents/missing-secret")  # Deployment ledger-db in billing
SPEED = 10
WAIT = 150.0  # generous: the machine is shared
FAST = {
    "AEGIS_MODE": "propose",
    "AEGIS_LLM_MODE": "explain",
    "AEGIS_LLM_TIMEOUT_SECONDS": "10",
    **demo_windows(SPEED),
}
FAMILIES = (
    "aegis_incidents",
    "aegis_stage_duration_seconds",
    "aegis_llm_calls",
    "aegis_llm_failures",
    "aegis_llm_call_duration_seconds",
    "aegis_llm_tokens",
    "aegis_llm_queue_depth",
    "aegis_approvals_pending",
    "aegis_approval_pending_age_seconds",
    "aegis_applies",
    "aegis_rollbacks",
    "aegis_escalations",
    "aegis_shadow_namespaces_active",
    "aegis_kubernetes_api_errors",
)


class Scrape:
    """One scrape of /metrics, parsed as Prometheus would."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in parser.text_string_to_metric_families(text)}

    def samples(self, name: str) -> list[Any]:
        return [s for f in self.families.values() for s in f.samples if s.name == name]

    def value(self, name: str, **labels: str) -> float:
        """The sum over the series of ``name`` whose labels include ``labels``."""
        return sum(s.value for s in self.samples(name) if all(s.labels.get(k) == v for k, v in labels.items()))

    def incidents(self) -> dict[tuple[str, str], int]:
        return {
            (s.labels["phase"], s.labels["category"]): int(s.value) for s in self.samples("aegis_incidents") if s.value
        }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> Scrape:
    answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return Scrape(answer.text)


class Poller:
    """Scrapes every 0.2 s in a thread and keeps the highest value seen of some gauges."""

    def __init__(self, port: int, gauges: tuple[str, ...]) -> None:
        self.port, self.gauges = port, gauges
        self.highest: dict[str, float] = dict.fromkeys(gauges, 0.0)
        self.scrapes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-poller", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            with contextlib.suppress(httpx.HTTPError):
                seen = scrape(self.port)
                self.scrapes += 1
                for gauge in self.gauges:
                    self.highest[gauge] = max(self.highest[gauge], seen.value(gauge))

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


def explain(request: dict[str, Any]) -> Reply:
    """A model that explains, except about ledger-db (HTTP 500): one failure, and the rules' diagnosis stands."""
    text = " ".join(str(m.get("content", "")) for m in request.get("messages", []))
    if "ledger-db" in text:
        return Reply(status=500)
    return json_reply({"explanation": "The release points at an image tag that does not exist; roll back."})


async def _apply(url: str, docs: tuple[dict[str, Any], ...], namespace: str) -> None:
    async with sim_client.SimClient(url) as api:
        await scenarios.apply(api, docs, namespace)  # kubectl apply, as the demo does it


def pending(port: int) -> Scrape | None:
    """A scrape that shows one approval pending for a while, else None."""
    seen = scrape(port)
    if seen.value("aegis_approvals_pending") == 1 and seen.value("aegis_approval_pending_age_seconds") > 0:
        return seen
    return None


def deployment(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    response = kube.apps.read_namespaced_deployment(name, namespace, _preload_content=False)
    return json.loads(response.data)


def incident_of(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    items = [i for i in kube.incidents(namespace) if i["metadata"]["name"].startswith(name)]
    return items[-1] if items else {}


def ended(kube: Kube, namespace: str, name: str, phase: str) -> bool:
    status = incident_of(kube, namespace, name).get("status") or {}
    reported = any(line.get("stage") == "report" for line in status.get("timeline") or [])
    return status.get("phase") == phase and reported


def listed(kube: Kube) -> dict[tuple[str, str], int]:
    """The Incidents in the cluster as (phase, category) counts, as the aegis_incidents gauge should show them."""
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for item in kube.incidents():
        status = item.get("status") or {}
        category = (status.get("diagnosis") or {}).get("category") or "none"
        counts[(status.get("phase") or "Pending", category)] += 1
    return dict(counts)


@contextlib.contextmanager
def operator_on(sim: cluster.SimCluster, work: pathlib.Path, env: dict[str, str]) -> Iterator[Operator]:
    op = Operator(sim.kubeconfig, work, env=env)
    try:
        yield op.start()
    finally:
        if op.process is not None and op.process.poll() is None:
            op.stop()
        if op.process is not None and op.process.poll() is None:
            op.process.kill()
            op.process.wait(timeout=10)


def test_metrics_scraped_during_and_after_a_healed_and_an_escalated_incident(tmp_path: pathlib.Path) -> None:
    port = free_port()
    api_faults: list[str] = []

    def one_503_on_listing_events_in_billing(
        method: str, route: Any, query: dict[str, str]
    ) -> apiserver.ApiError | None:
        # A namespaced list of Events (not a watch) is the operator gathering evidence; the emulated
        # controllers and the analyzer watch cluster-wide.
        listing = method == "GET" and route.plural == "events" and route.namespace == ESCALATE.namespace
        if listing and route.name is None and query.get("watch") not in ("true", "1") and not api_faults:
            api_faults.append("503")
            return apiserver.ApiError(503, "ServiceUnavailable", "injected by the metrics test")
        return None

    with (
        cluster.SimCluster(tmp_path / "kubeconfig", cluster.ClusterOptions(speed=SPEED)) as sim,
        FakeOllama(explain) as fake,
    ):
        assert sim.running is not None
        api = kubernetes.config.new_client_from_config(config_file=str(sim.kubeconfig))
        kube = Kube(api)
        env = {**FAST, "AEGIS_OLLAMA_URL": fake.url, "AEGIS_METRICS_PORT": str(port), "AEGIS_METRICS_ADDR": "127.0.0.1"}
        try:
            with operator_on(sim, tmp_path, env) as op, Poller(port, ("aegis_shadow_namespaces_active",)) as poller:
                wait_for(lambda: f"metrics on http://127.0.0.1:{port}/metrics" in op.log(), 30, what="metrics served")
                assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200
                first = scrape(port)
                assert set(FAMILIES) <= set(first.families), sorted(first.families)

                # bad-image-tag: healthy first, then the bad release. K8sGPT may catch the first rollout mid-way
                # (an incident that ends on its own): cleared, so the fix below is the only one.
                asyncio.run(_apply(sim.url, HEAL.manifests, HEAL.namespace))
                wait_for(lambda: scenarios.healthy(deployment(kube, HEAL.namespace, "web")), WAIT, what="a rollout")
                wait_for(
                    lambda: all(
                        (i.get("status") or {}).get("phase") in models.TERMINAL_PHASES
                        for i in kube.incidents(HEAL.namespace)
                    ),
                    WAIT,
                    what="incidents of the first rollout to end",
                )
                cleared = [(i.get("status") or {}).get("phase") for i in kube.incidents(HEAL.namespace)]
                for item in kube.incidents(HEAL.namespace):
                    kube.custom.delete_namespaced_custom_object(
                        models.API_GROUP, models.API_VERSION, HEAL.namespace, "incidents", item["metadata"]["name"]
                    )
                sim.running.api.faults.append(one_503_on_listing_events_in_billing)
                asyncio.run(_apply(sim.url, HEAL.change, HEAL.namespace))
                asyncio.run(_apply(sim.url, ESCALATE.manifests, ESCALATE.namespace))

                # --- while the fix waits for a human -------------------------------------------------------------
                wait_for(
                    lambda: (
                        (incident_of(kube, HEAL.namespace, "deployment-web").get("status") or {}).get("phase")
                        == "AwaitingApproval"
                    ),
                    WAIT,
                    what="the fix to wait for approval",
                )
                waiting = wait_for(lambda: pending(port), 30, what="the pending approval in the metrics")
                assert waiting.incidents().get(("AwaitingApproval", "image-pull")) == 1, waiting.incidents()
                assert 0 < waiting.value("aegis_approval_pending_age_seconds") < WAIT
                assert waiting.value("aegis_applies_total", result="applied") == 0, "nothing applied before approval"
                assert waiting.value("aegis_stage_duration_seconds_count", stage="verify") >= 1
                assert waiting.value("aegis_stage_duration_seconds_count", stage="apply") == 0
                time.sleep(1.0)
                older = scrape(port).value("aegis_approval_pending_age_seconds")
                assert older > waiting.value("aegis_approval_pending_age_seconds"), "the wait's age grows"

                kube.custom.patch_namespaced_custom_object(
                    models.API_GROUP,
                    models.API_VERSION,
                    HEAL.namespace,
                    "incidents",
                    "deployment-web",
                    {"spec": {"approval": {"decision": "Approved", "reason": "metrics test"}}},
                )
                wait_for(lambda: ended(kube, HEAL.namespace, "deployment-web", "Resolved"), WAIT, what="healed")
                wait_for(
                    lambda: ended(kube, ESCALATE.namespace, "deployment-ledger-db", "Escalated"),
                    WAIT,
                    what="missing-secret to escalate",
                )
                # The gauges follow the Incidents through the watch: they agree with the cluster.
                wait_for(lambda: scrape(port).incidents() == listed(kube), 30, what="aegis_incidents == the Incidents")
                wait_for(lambda: scrape(port).value("aegis_shadow_namespaces_active") == 0, 30, what="no shadows")
                after = scrape(port)
        finally:
            api.close()
        assert fake.requests, "the LLM was asked"

    # --- after the run ---------------------------------------------------------------------------------------------
    assert set(FAMILIES) <= set(after.families)
    counts = after.incidents()
    assert counts.get(("Resolved", "image-pull")) == 1, counts
    assert counts.get(("Escalated", "missing-config")) == 1, counts
    assert sum(n for (phase, _), n in counts.items() if phase not in models.TERMINAL_PHASES) == 0, counts

    for stage in metrics.STAGES:  # the healed incident went through every stage
        assert after.value("aegis_stage_duration_seconds_count", stage=stage) >= 1, stage
        assert after.value("aegis_stage_duration_seconds_sum", stage=stage) >= 0, stage
        inf = after.value("aegis_stage_duration_seconds_bucket", stage=stage, le="+Inf")
        assert inf == after.value("aegis_stage_duration_seconds_count", stage=stage), stage
    assert after.value("aegis_stage_duration_seconds_sum", stage="verify") > 1, "a shadow run takes its window"

    calls = after.value("aegis_llm_calls_total")
    assert calls >= 2 and calls == len(fake.requests), (calls, len(fake.requests))
    assert after.value("aegis_llm_calls_total", purpose="explain") == calls
    assert after.value("aegis_llm_call_duration_seconds_count", purpose="explain") == calls
    assert after.value("aegis_llm_call_duration_seconds_sum") > 0
    assert after.value("aegis_llm_failures_total", reason="http-error") >= 1  # about ledger-db
    assert after.value("aegis_llm_failures_total") < calls
    assert after.value("aegis_llm_tokens_total", direction="prompt") > 0
    assert after.value("aegis_llm_tokens_total", direction="answer") > 0
    assert after.value("aegis_llm_queue_depth") == 0

    assert after.value("aegis_approvals_pending") == 0
    assert after.value("aegis_approval_pending_age_seconds") == 0
    assert after.value("aegis_applies_total", result="applied") == 1
    assert after.value("aegis_applies_total") == 1
    assert after.value("aegis_rollbacks_total") == 0  # the fix healed: nothing rolled back
    escalated = sum(n for (phase, _), n in counts.items() if phase == "Escalated") + cleared.count("Escalated")
    assert after.value("aegis_escalations_total") == escalated
    assert after.value("aegis_escalations_total", reason_class="needs-human") == 1  # a value only a human knows

    assert poller.scrapes > 10
    assert poller.highest["aegis_shadow_namespaces_active"] >= 2, "baseline and candidate, while verifying"
    assert after.value("aegis_shadow_namespaces_active") == 0
    assert api_faults == ["503"]
    assert after.value("aegis_kubernetes_api_errors_total", verb="list", code="503") >= 1


# --- the Advisor's LLM metrics over real HTTP ---------------------------------------------------------------------


def value(m: metrics.Metrics, sample: str, **labels: str) -> float:
    found = m.registry.get_sample_value(sample, labels)
    return 0.0 if found is None else found


async def test_llm_calls_tokens_failures_cache_and_queue_depth(dead_port: int) -> None:
    m = metrics.Metrics()
    with FakeOllama(lambda _: json_reply(test_llm.DIAGNOSIS)) as fake:
        llm = advisor.Advisor(test_llm.settings(fake.url), metrics=m)
        assert (await llm.diagnose(test_llm.incident(), test_llm.evidence())).value is not None
        assert (await llm.diagnose(test_llm.incident(), test_llm.evidence())).value is not None  # from the cache
    assert value(m, "aegis_llm_calls_total", purpose="diagnose") == 1
    assert value(m, "aegis_llm_cache_hits_total", purpose="diagnose") == 1
    assert value(m, "aegis_llm_call_duration_seconds_count", purpose="diagnose") == 1
    assert len(fake.requests) == 1
    assert value(m, "aegis_llm_tokens_total", direction="prompt") > 0
    assert value(m, "aegis_llm_tokens_total", direction="answer") > 0

    with FakeOllama(lambda _: Reply(content="I think it is DNS.")) as fake:
        advice = await advisor.Advisor(test_llm.settings(fake.url), metrics=m).diagnose(
            test_llm.incident(), test_llm.evidence()
        )
    assert advice.value is None and len(fake.requests) == 2  # one repair attempt
    assert value(m, "aegis_llm_failures_total", reason="invalid-answer") == 2
    assert value(m, "aegis_llm_calls_total", purpose="diagnose") == 3

    down = advisor.Advisor(test_llm.settings(f"http://127.0.0.1:{dead_port}"), metrics=m)
    assert (await down.diagnose(test_llm.incident(), test_llm.evidence())).value is None
    assert value(m, "aegis_llm_failures_total", reason="unreachable") == 1

    depths: list[float] = []
    with FakeOllama(lambda _: json_reply(test_llm.DIAGNOSIS, delay=0.5)) as fake:
        llm = advisor.Advisor(test_llm.settings(fake.url, llm_concurrency=1, llm_cache_size=0), metrics=m)
        other = test_llm.incident().model_copy(update={"fingerprint": "another"})

        async def watch() -> None:
            for _ in range(40):
                depths.append(value(m, "aegis_llm_queue_depth"))
                await asyncio.sleep(0.05)

        await asyncio.gather(
            llm.diagnose(test_llm.incident(), test_llm.evidence()), llm.diagnose(other, test_llm.evidence()), watch()
        )
    assert max(depths) == 1, "one call waited for the slot while the other was answered"
    assert value(m, "aegis_llm_queue_depth") == 0
    assert value(m, "aegis_llm_calls_total", purpose="diagnose") == 6


@pytest.fixture()
def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
