"""The apply node's precondition: a controller writing the target's status between AEGIS's read and its patch
(a real kube-controller-manager does, many times a second while pods crash) must not make a verified fix fail
its server-side dry run; a change of the target's spec still must. Plain data: a fake API with optimistic
concurrency, as the real server answers (a JSON patch's failed ``test`` is a 422)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from aegis import models
from aegis.kube import client
from graph.nodes import apply

ROLLBACK = [{"op": "replace", "path": "/spec/template", "value": {"spec": {"containers": [{"image": "web:1"}]}}}]


class StatusWritingApi:
    """One Deployment; every read is followed by a controller's status write (a new resourceVersion)."""

    def __init__(self, writes_after_read: int = 1, spec_change: bool = False) -> None:
        self.obj: dict[str, Any] = {
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "resourceVersion": "10"},
            "spec": {"template": {"spec": {"containers": [{"image": "web:2"}]}}},
            "status": {"observedGeneration": 2},
        }
        self.writes_after_read, self.spec_change = writes_after_read, spec_change
        self.patches: list[tuple[Any, bool]] = []

    def _status_write(self) -> None:
        meta = self.obj["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        if self.spec_change:
            self.obj["spec"]["template"]["spec"]["containers"][0]["image"] = "web:3"

    def read(self) -> dict[str, Any]:
        seen = copy.deepcopy(self.obj)
        if self.writes_after_read > 0:
            self.writes_after_read -= 1
            self._status_write()
        return seen

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.read()

    async def patch(self, kind: str, namespace: str, name: str, body: Any, patch_type: str, *, dry_run: bool) -> Any:
        test = next(op for op in body if op["op"] == "test" and op["path"] == "/metadata/resourceVersion")
        if test["value"] != self.obj["metadata"]["resourceVersion"]:
            raise client.ClusterError(
                "patch Deployment shop/web: HTTP 422 Unprocessable Entity: the server rejected our request", 422
            )
        self.patches.append((body, dry_run))
        return self.obj


def rollback() -> models.ActionResult:
    action = models.Action(kind="rollback", target=models.ObjectRef(kind="Deployment", namespace="shop", name="web"))
    return models.ActionResult(action=action, patch=ROLLBACK, patch_type="json")


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real patch"])
async def test_a_status_write_between_read_and_patch_is_retried_against_the_fresh_object(dry_run: bool) -> None:
    api = StatusWritingApi(writes_after_read=2)  # the first read and the re-read are both overtaken once
    seen = api.read()
    used = await apply.patch_fresh(api, "shop", rollback(), "u9/1", seen, dry_run=dry_run)  # type: ignore[arg-type]
    assert [d for _, d in api.patches] == [dry_run], "applied once, after the precondition was refreshed"
    assert used["metadata"]["resourceVersion"] == api.obj["metadata"]["resourceVersion"]
    body = api.patches[0][0]
    assert body[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": used["metadata"]["resourceVersion"]}


async def test_a_spec_change_in_between_is_not_retried() -> None:
    api = StatusWritingApi(writes_after_read=1, spec_change=True)
    seen = api.read()
    with pytest.raises(client.ClusterError) as caught:
        await apply.patch_fresh(api, "shop", rollback(), "u9/1", seen, dry_run=True)  # type: ignore[arg-type]
    assert caught.value.status == 422 and api.patches == []


async def test_a_precondition_that_never_holds_gives_up() -> None:
    api = StatusWritingApi(writes_after_read=100)
    seen = api.read()
    with pytest.raises(client.ClusterError):
        await apply.patch_fresh(api, "shop", rollback(), "u9/1", seen, dry_run=True)  # type: ignore[arg-type]
    assert api.patches == []
