"""The endpoints controllers: Endpoints and EndpointSlices from the pods each Service selects.

Endpoints list ready and not-ready addresses (a Terminating pod is in neither),
skipping pods whose named targetPort does not exist; the EndpointSlice also lists
Terminating pods (ready false, terminating true), as the EndpointSlice controller
does. An ordinary API client over the shared informers of ``aegis.sim.controllers``;
run by ``aegis.sim.cluster``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aegis.sim import client, controllers

logger = logging.getLogger("aegis.sim.endpoints")


class EndpointsController(controllers.Controller):
    """Endpoints and EndpointSlices from the pods each Service selects."""

    component = "endpoint-controller"

    async def reconcile(self) -> None:
        for service in self.inf["Service"].items():
            if not controllers.alive(service) or not (service["spec"].get("selector")):
                continue
            try:
                await self._sync(service)
            except client.ApiError as exc:
                logger.debug("endpoints %s: %s", service["metadata"]["name"], exc)

    async def _sync(self, service: dict[str, Any]) -> None:
        ns, name = service["metadata"]["namespace"], service["metadata"]["name"]
        selector = {"matchLabels": service["spec"]["selector"]}
        pods = [
            p
            for p in self.inf["Pod"].items(ns)
            if controllers.alive(p)
            and controllers.selector_matches(selector, p["metadata"].get("labels"))
            and (p.get("status") or {}).get("podIP")
        ]
        subsets: dict[str, dict[str, Any]] = {}
        for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
            ports = []
            for port in service["spec"].get("ports") or []:
                target = port.get("targetPort", port.get("port"))
                if isinstance(target, str):
                    target = next(
                        (
                            cp.get("containerPort")
                            for c in pod["spec"].get("containers") or []
                            for cp in c.get("ports") or []
                            if cp.get("name") == target
                        ),
                        None,
                    )
                if target is None:
                    continue  # a named targetPort the pod does not declare: no endpoint for this pod
                entry = {"port": target, "protocol": port.get("protocol", "TCP")}
                if port.get("name"):
                    entry["name"] = port["name"]
                ports.append(entry)
            if not ports:
                continue
            key = json.dumps(ports, sort_keys=True)
            subset = subsets.setdefault(key, {"addresses": [], "notReadyAddresses": [], "ports": ports})
            address = {
                "ip": pod["status"]["podIP"],
                "nodeName": pod["spec"].get("nodeName"),
                "targetRef": {
                    "kind": "Pod",
                    "namespace": ns,
                    "name": pod["metadata"]["name"],
                    "uid": pod["metadata"]["uid"],
                },
            }
            subset["addresses" if controllers.pod_ready(pod) else "notReadyAddresses"].append(address)
        clean = []
        for subset in subsets.values():
            clean.append({k: v for k, v in subset.items() if v})
        current = self.inf["Endpoints"].get(ns, name)
        if current is None:
            body = {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": name, "namespace": ns, "labels": service["metadata"].get("labels") or {}},
            }
            if clean:
                body["subsets"] = clean
            await self.api.create(body)
        elif (current.get("subsets") or []) != clean:
            await self.api.patch("Endpoints", ns, name, {"subsets": clean or None})
        terminating = [
            p
            for p in self.inf["Pod"].items(ns)
            if not controllers.alive(p)
            and controllers.selector_matches(selector, p["metadata"].get("labels"))
            and (p.get("status") or {}).get("podIP")
        ]
        await self._slice(service, clean, terminating)

    async def _slice(
        self, service: dict[str, Any], subsets: list[dict[str, Any]], terminating: list[dict[str, Any]]
    ) -> None:
        """The EndpointSlice: ready and not-ready endpoints, and Terminating pods (ready false, terminating true)."""
        ns, name = service["metadata"]["namespace"], service["metadata"]["name"]
        endpoints = []
        ports: list[dict[str, Any]] = []
        for subset in subsets:
            ports = subset["ports"]
            for ready, key in ((True, "addresses"), (False, "notReadyAddresses")):
                for address in subset.get(key) or []:
                    endpoints.append(
                        {
                            "addresses": [address["ip"]],
                            "conditions": {"ready": ready, "serving": ready, "terminating": False},
                            "nodeName": address.get("nodeName"),
                            "targetRef": address["targetRef"],
                        }
                    )
        for pod in sorted(terminating, key=lambda p: p["metadata"]["name"]) if ports else []:
            endpoints.append(
                {
                    "addresses": [pod["status"]["podIP"]],
                    "conditions": {"ready": False, "serving": controllers.pod_ready(pod), "terminating": True},
                    "nodeName": pod["spec"].get("nodeName"),
                    "targetRef": {
                        "kind": "Pod",
                        "namespace": pod["metadata"]["namespace"],
                        "name": pod["metadata"]["name"],
                        "uid": pod["metadata"]["uid"],
                    },
                }
            )
        slice_name = f"{name}-sim"
        body = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "addressType": "IPv4",
            "metadata": {
                "name": slice_name,
                "namespace": ns,
                "labels": {
                    "kubernetes.io/service-name": name,
                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                },
                "ownerReferences": [controllers.owner_ref(service)],
            },
            "endpoints": endpoints,
            "ports": ports,
        }
        current = self.inf["EndpointSlice"].get(ns, slice_name)
        if current is None:
            try:
                await self.api.create(body)
            except client.ApiError as exc:
                if exc.status != 409:
                    raise
        elif current.get("endpoints") != endpoints or current.get("ports") != ports:
            await self.api.patch("EndpointSlice", ns, slice_name, {"endpoints": endpoints, "ports": ports})
