"""One probe of a running container, as the kubelet's prober sees it.

``check`` tries an ``httpGet``, ``tcpSocket`` or ``grpc`` probe against the ports
and HTTP paths the container's program serves (from the image catalog, once it
has started listening) and returns whether it passed and, if not, the prober's
error text for the Unhealthy event. Exec probes always pass (the emulator runs no
commands). Called by the kubelet stand-in (``aegis.sim.kubelet``), which counts
failures against the thresholds.
"""

from __future__ import annotations

from typing import Any

from aegis.sim import podstate


def check(
    probe: dict[str, Any], container: dict[str, Any], run: podstate.Run, pod_ip: str, now: float
) -> tuple[bool, str]:
    """(passed, error text) of ``probe`` against ``run``, the container's current instance."""
    listening = now >= run.ready_at and run.image is not None

    def port_of(value: Any) -> int | None:
        if isinstance(value, int):
            return value
        return next((p.get("containerPort") for p in container.get("ports") or [] if p.get("name") == value), None)

    if "httpGet" in probe:
        http = probe["httpGet"]
        port = port_of(http.get("port"))
        path = http.get("path", "/")
        scheme = str(http.get("scheme", "HTTP")).lower()
        url = f"{scheme}://{pod_ip}:{port}{path}"
        listener = run.image.listener(port) if (listening and run.image and port) else None
        if listener is None:
            return False, f'Get "{url}": dial tcp {pod_ip}:{port}: connect: connection refused'
        if listener.http is None:
            return False, f'Get "{url}": net/http: HTTP/1.x transport connection broken: malformed HTTP response'
        if not listener.serves(path):
            return False, "HTTP probe failed with statuscode: 404"
        return True, ""
    if "tcpSocket" in probe:
        port = port_of(probe["tcpSocket"].get("port"))
        if listening and run.image and port and run.image.listener(port):
            return True, ""
        return False, f"dial tcp {pod_ip}:{port}: connect: connection refused"
    if "grpc" in probe:
        port = probe["grpc"].get("port")
        if listening and run.image and run.image.listener(int(port or 0)):
            return True, ""
        return False, f'timeout: failed to connect service "{pod_ip}:{port}" within 1s'
    return True, ""  # exec probes: the emulator cannot run commands; they pass
