"""``aegis doctor``: checks what AEGIS needs before it can run, with a plain-language fix for each failure.

Called by ``aegis doctor`` (``aegis.cli``). The checks, in order:

- **Settings**: the ``AEGIS_*`` environment loads (``config.load_settings``).
- **Kubernetes**: a kubeconfig (``--kubeconfig``/``--context``, else ``$KUBECONFIG`` or
  ``~/.kube/config``, else the in-cluster service account) loads and the API answers ``/version``.
- **CRDs**: ``incidents.aegis.dev`` (ours) and ``results.core.k8sgpt.ai`` (K8sGPT's) are installed,
  read through the apiextensions API, or through API discovery when CRDs may not be read.
- **Ollama**: ``{AEGIS_OLLAMA_URL}/api/tags`` answers and lists ``AEGIS_OLLAMA_MODEL``
  (skipped when ``AEGIS_LLM_MODE=off``).

Each check returns a ``CheckResult`` (``ok`` True, False, or None for skipped), never raises, and
runs under its own time limit. ``render_table`` and ``to_json`` print a ``Report``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import threading
from collections.abc import Callable
from typing import Any

import httpx
import kubernetes
import urllib3
from rich.console import Console
from rich.table import Table

from aegis import config

DEFAULT_TIMEOUT = 5.0
INCIDENT_CRD = ("incidents.aegis.dev", "aegis.dev", "v1alpha1", "incidents")
RESULT_CRD = ("results.core.k8sgpt.ai", "core.k8sgpt.ai", "v1alpha1", "results")
INCIDENT_CRD_FIX = "kubectl apply -f deploy/aegis/crd-incident.yaml  (or: kubectl apply -k deploy/aegis)"
RESULT_CRD_FIX = (
    "install the K8sGPT operator (see deploy/k8sgpt/README.md), or just its CRD: "
    "kubectl apply -f deploy/k8sgpt/crd-result.yaml"
)


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One check's outcome: ``ok`` is True (passed), False (failed) or None (skipped / not applicable)."""

    name: str
    ok: bool | None
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class LLMView:
    """The LLM settings the Ollama check uses (from the settings, or the raw environment if they are invalid)."""

    url: str
    model: str
    mode: str
    timeout_seconds: float


@dataclasses.dataclass
class Report:
    results: list[CheckResult]
    llm: LLMView

    @property
    def ok(self) -> bool:
        """True when no check failed (skipped checks do not count)."""
        return all(result.ok is not False for result in self.results)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "llm": dataclasses.asdict(self.llm),
            "checks": [result.as_dict() for result in self.results],
        }


@dataclasses.dataclass
class _State:
    """What the checks share: the options, the settings once loaded, the API client once connected."""

    kubeconfig: str | None
    context: str | None
    timeout: float
    settings: config.Settings | None = None
    api: kubernetes.client.ApiClient | None = None
    server: str = ""


# --- running -------------------------------------------------------------------------------------


def _guarded(name: str, check: Callable[[], list[CheckResult]], limit: float) -> list[CheckResult]:
    """Run ``check`` in a daemon thread: an exception or an overrun becomes a failed result, never a raise."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["results"] = check()
        except Exception as exc:  # a check must never take the command down
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"doctor-{name}", daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        return [CheckResult(name, False, f"no answer within {limit:.0f}s", "check the network path and retry")]
    if "error" in box:
        exc = box["error"]
        return [CheckResult(name, False, f"the check itself failed: {type(exc).__name__}: {exc}", "")]
    return box["results"]


def run_checks(kubeconfig: str | None = None, context: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> Report:
    """Run every check in order and collect the results."""
    state = _State(kubeconfig=kubeconfig, context=context, timeout=timeout)
    limit = timeout * 3 + 5  # kubeconfig loading (exec plugins) plus the request itself
    results: list[CheckResult] = []
    results += _guarded("Settings", lambda: [check_settings(state)], limit)
    results += _guarded("Kubernetes", lambda: [check_kubernetes(state)], limit)
    results += _guarded("CRDs", lambda: check_crds(state), limit)
    llm = llm_view(state.settings)
    results += _guarded("Ollama", lambda: [check_ollama(llm, timeout)], limit)
    if state.api is not None:
        state.api.close()
    return Report(results=results, llm=llm)


# --- settings ------------------------------------------------------------------------------------


def check_settings(state: _State) -> CheckResult:
    try:
        state.settings = config.load_settings()
    except config.SettingsError as exc:
        return CheckResult("Settings", False, str(exc), "fix or unset the AEGIS_* variables named above")
    settings = state.settings
    return CheckResult("Settings", True, f"AEGIS_* settings load (mode {settings.mode})")


def llm_view(settings: config.Settings | None) -> LLMView:
    """The LLM settings; from the raw environment (with defaults) when the settings as a whole are invalid."""
    if settings is not None:
        return LLMView(
            url=str(settings.ollama_url).rstrip("/"),
            model=settings.ollama_model,
            mode=settings.llm_mode,
            timeout_seconds=settings.llm_timeout_seconds,
        )
    fields = config.Settings.model_fields

    def raw(name: str) -> Any:
        value = os.environ.get(f"{config.ENV_PREFIX}{name.upper()}")
        return value if value not in (None, "") else fields[name].default

    try:
        timeout = float(raw("llm_timeout_seconds"))
    except ValueError:
        timeout = float(fields["llm_timeout_seconds"].default)
    return LLMView(
        url=str(raw("ollama_url")).rstrip("/"),
        model=str(raw("ollama_model")),
        mode=str(raw("llm_mode")),
        timeout_seconds=timeout,
    )


# --- Kubernetes ----------------------------------------------------------------------------------


def _kubeconfig_source(kubeconfig: str | None) -> tuple[str, str | None]:
    """Where the configuration comes from: ("file", path-or-None for the default list), or ("in-cluster", None).

    Raises ``FileNotFoundError`` with the message to show when there is none.
    """
    if kubeconfig:
        if not pathlib.Path(kubeconfig).expanduser().is_file():
            raise FileNotFoundError(f"kubeconfig {kubeconfig} does not exist")
        return "file", kubeconfig
    env = os.environ.get("KUBECONFIG", "")
    if env:
        paths = [p for p in env.split(os.pathsep) if p]
        if any(pathlib.Path(p).expanduser().is_file() for p in paths):
            return "file", None
        raise FileNotFoundError(f"KUBECONFIG={env} names no existing file")
    if pathlib.Path("~/.kube/config").expanduser().is_file():
        return "file", None
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return "in-cluster", None
    raise FileNotFoundError("no kubeconfig found (no $KUBECONFIG, no ~/.kube/config, not in a cluster)")


def _load_client(state: _State) -> tuple[kubernetes.client.ApiClient, str]:
    """A client with no retries (a failure shows at once) and a description of where its config came from."""
    source, path = _kubeconfig_source(state.kubeconfig)
    configuration = kubernetes.client.Configuration()
    if source == "in-cluster":
        kubernetes.config.load_incluster_config(client_configuration=configuration)
        origin = "in-cluster service account"
    else:
        kubernetes.config.load_kube_config(
            config_file=path, context=state.context, client_configuration=configuration, persist_config=False
        )
        shown = path or os.environ.get("KUBECONFIG") or "~/.kube/config"
        origin = f"kubeconfig {shown}" + (f", context {state.context}" if state.context else "")
    configuration.retries = False
    return kubernetes.client.ApiClient(configuration), origin


def _get_json(api: kubernetes.client.ApiClient, path: str, timeout: float) -> Any:
    """GET ``path`` (exactly, no trailing slash added) with the client's auth; raises ``ApiException`` on non-2xx."""
    params = api.param_serialize(
        method="GET", resource_path=path, header_params={"Accept": "application/json"}, auth_settings=["BearerToken"]
    )
    response = api.call_api(*params, _request_timeout=timeout)
    response.read()
    if not 200 <= response.status <= 299:
        raise kubernetes.client.ApiException(http_resp=response)
    return json.loads(response.data or b"null")


def _explain_kube_error(exc: BaseException, server: str, timeout: float) -> tuple[str, str]:
    """(detail, fix) for a failed request to the API server."""
    if isinstance(exc, kubernetes.client.ApiException):
        status = exc.status or 0
        if status == 401:
            return (
                f"401 Unauthorized at {server}",
                "your credentials are not accepted: log in again or refresh the token / certificate in the kubeconfig",
            )
        if status == 403:
            return (
                f"403 Forbidden at {server}",
                "your credentials are accepted but lack rights: use a context with more rights "
                "(kubectl auth can-i --list)",
            )
        if status == 0:
            reason = str(exc.reason or "").replace("\n", ": ")
            return f"TLS failed at {server}: {reason}", _TLS_FIX
        return f"HTTP {status} {exc.reason or ''} from {server}".strip(), "is this server a Kubernetes API server?"
    wrapped = getattr(exc, "reason", None)  # MaxRetryError wraps the cause
    reason: BaseException = wrapped if isinstance(wrapped, BaseException) else exc
    text = str(reason)
    if isinstance(reason, urllib3.exceptions.SSLError) or "SSL" in text:
        return f"TLS failed at {server}: {text}", _TLS_FIX
    # NameResolutionError is a NewConnectionError, which is a ConnectTimeoutError: test the narrow ones first.
    if isinstance(reason, urllib3.exceptions.NameResolutionError) or "resolve" in text.lower():
        return (
            f"cannot resolve the host of {server}",
            "check the server address in the kubeconfig (kubectl config view)",
        )
    if "refused" in text.lower():
        return (
            f"connection refused at {server}",
            "is the cluster running? (kind get clusters / minikube status / kubectl cluster-info)",
        )
    if isinstance(reason, urllib3.exceptions.NewConnectionError):
        return f"cannot connect to {server}: {text}", "is the cluster reachable from here (VPN, firewall, address)?"
    if isinstance(reason, urllib3.exceptions.TimeoutError):
        return (
            f"no answer from {server} within {timeout:.0f}s",
            "is the cluster running and reachable from here (VPN, firewall)? (kubectl cluster-info)",
        )
    return f"cannot reach {server}: {type(reason).__name__}: {text}", "is the cluster running? (kubectl cluster-info)"


_TLS_FIX = (
    "the server's certificate does not match the kubeconfig: check certificate-authority-data and the server name"
)


def check_kubernetes(state: _State) -> CheckResult:
    name = "Kubernetes"
    try:
        api, origin = _load_client(state)
    except FileNotFoundError as exc:
        return CheckResult(name, False, str(exc), "set KUBECONFIG or pass --kubeconfig (and --context)")
    except kubernetes.config.ConfigException as exc:
        message = str(exc).strip()
        if state.context and state.context in message:
            fix = f"context {state.context} is not in the kubeconfig: see kubectl config get-contexts"
        else:
            fix = "the kubeconfig is unusable: check it with kubectl config view (or pass --kubeconfig/--context)"
        return CheckResult(name, False, f"cannot load the configuration: {message}", fix)
    server = api.configuration.host
    state.server = server
    try:
        version = _get_json(api, "/version", state.timeout)
    except Exception as exc:
        api.close()
        detail, fix = _explain_kube_error(exc, server, state.timeout)
        return CheckResult(name, False, f"{detail} ({origin})", fix)
    state.api = api
    git_version = (version or {}).get("gitVersion", "?") if isinstance(version, dict) else "?"
    return CheckResult(name, True, f"API {git_version} answers at {server} ({origin})")


# --- CRDs ----------------------------------------------------------------------------------------


def check_crds(state: _State) -> list[CheckResult]:
    return [
        _check_crd(state, "CRD Incident", INCIDENT_CRD, INCIDENT_CRD_FIX),
        _check_crd(state, "CRD Result (K8sGPT)", RESULT_CRD, RESULT_CRD_FIX),
    ]


def _check_crd(state: _State, name: str, crd: tuple[str, str, str, str], fix: str) -> CheckResult:
    crd_name, group, version, _plural = crd
    if state.api is None:
        return CheckResult(name, None, "skipped: the Kubernetes API is not reachable")
    try:
        obj = _get_json(state.api, f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd_name}", state.timeout)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return CheckResult(name, False, f"{crd_name} is not installed", fix)
        if exc.status == 403:
            return _check_by_discovery(state, name, crd, fix)
        detail, how = _explain_kube_error(exc, state.server, state.timeout)
        return CheckResult(name, False, f"cannot read {crd_name}: {detail}", how)
    except Exception as exc:
        detail, how = _explain_kube_error(exc, state.server, state.timeout)
        return CheckResult(name, False, f"cannot read {crd_name}: {detail}", how)
    served = [v.get("name") for v in obj.get("spec", {}).get("versions", []) if v.get("served")]
    if version not in served:
        return CheckResult(
            name, False, f"{crd_name} is installed but does not serve {version} (serves {', '.join(served)})", fix
        )
    conditions = {c.get("type"): c.get("status") for c in obj.get("status", {}).get("conditions") or []}
    if conditions.get("Established") == "False":
        return CheckResult(name, False, f"{crd_name} is installed but not Established yet", "wait a moment and retry")
    return CheckResult(name, True, f"{crd_name} installed ({group}/{version})")


def _check_by_discovery(state: _State, name: str, crd: tuple[str, str, str, str], fix: str) -> CheckResult:
    """When CRDs may not be read (403), ask API discovery whether the group/version serves the resource."""
    crd_name, group, version, plural = crd
    assert state.api is not None
    try:
        listing = _get_json(state.api, f"/apis/{group}/{version}", state.timeout)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return CheckResult(name, False, f"{crd_name} is not installed ({group}/{version} is not served)", fix)
        detail, how = _explain_kube_error(exc, state.server, state.timeout)
        return CheckResult(name, False, f"cannot discover {group}/{version}: {detail}", how)
    resources = [r.get("name") for r in (listing or {}).get("resources", [])]
    if plural in resources:
        return CheckResult(name, True, f"{group}/{version} serves {plural} (found by discovery; CRDs not readable)")
    return CheckResult(name, False, f"{group}/{version} does not serve {plural}", fix)


# --- Ollama --------------------------------------------------------------------------------------


def model_key(name: str) -> str:
    """Ollama's canonical model name: ``llama3.2`` means ``llama3.2:latest``."""
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


def check_ollama(llm: LLMView, timeout: float) -> CheckResult:
    name = "Ollama"
    settings_line = f"LLM mode {llm.mode}, call timeout {llm.timeout_seconds:g}s"
    if llm.mode == "off":
        return CheckResult(name, None, f"skipped: AEGIS_LLM_MODE=off (rules only, no LLM); {llm.url}")
    url = f"{llm.url}/api/tags"
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.TimeoutException:
        return CheckResult(
            name,
            False,
            f"no answer from {llm.url} within {timeout:.0f}s",
            "is Ollama running and reachable? (ollama serve; curl " + url + ")",
        )
    except httpx.HTTPError as exc:
        return CheckResult(
            name,
            False,
            f"cannot reach Ollama at {llm.url}: {type(exc).__name__}: {exc}",
            "start Ollama (`ollama serve`) or set AEGIS_OLLAMA_URL to where it runs",
        )
    if response.status_code != 200:
        return CheckResult(
            name,
            False,
            f"GET {url} answered HTTP {response.status_code}: {response.text[:200]}",
            "is AEGIS_OLLAMA_URL an Ollama server? See its logs (journalctl -u ollama / ollama serve output)",
        )
    try:
        body = response.json()
        if not isinstance(body, dict) or not isinstance(body.get("models"), list):
            raise ValueError("no models list")
        models = [str(m.get("name") or m.get("model")) for m in body["models"]]
    except (ValueError, AttributeError):
        return CheckResult(
            name, False, f"GET {url} did not answer Ollama's JSON", "is AEGIS_OLLAMA_URL an Ollama server?"
        )
    wanted = model_key(llm.model)
    if wanted in {model_key(m) for m in models}:
        return CheckResult(name, True, f"{llm.url} serves {llm.model}; {settings_line}")
    available = ", ".join(models) if models else "none"
    return CheckResult(
        name,
        False,
        f"model {llm.model} is not pulled at {llm.url} (available: {available}); {settings_line}",
        f"ollama pull {llm.model}   (or set AEGIS_OLLAMA_MODEL to an available model)",
    )


# --- output --------------------------------------------------------------------------------------

_STATUS = {True: "[green]✓[/green]", False: "[red]✗[/red]", None: "[yellow]\u2013[/yellow]"}  # en dash: skipped


def render_table(report: Report, console: Console) -> None:
    table = Table(title="aegis doctor", title_justify="left")
    table.add_column("check", no_wrap=True)
    table.add_column("status", justify="center")
    table.add_column("detail", overflow="fold")
    table.add_column("fix", overflow="fold")
    for result in report.results:
        table.add_row(result.name, _STATUS[result.ok], result.detail, result.fix)
    console.print(table)
    llm = report.llm
    console.print(f"LLM: mode {llm.mode}, model {llm.model} at {llm.url}, call timeout {llm.timeout_seconds:g}s")
    failed = [r.name for r in report.results if r.ok is False]
    if failed:
        console.print(f"[red]{len(failed)} check(s) failed: {', '.join(failed)}[/red]")
    else:
        console.print("[green]all checks passed[/green]")


def to_json(report: Report) -> str:
    return json.dumps(report.as_dict(), indent=2)
