"""Rule: a container image cannot be pulled (ErrImagePull, ImagePullBackOff, InvalidImageName).

Called by ``aegis.rules.diagnose``.
"""

from __future__ import annotations

from aegis import models

PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
_EVENT_MARKERS = ("Failed to pull image", "Back-off pulling image", "Error: ErrImagePull", "InvalidImageName")
_AUTH_MARKERS = ("unauthorized", "denied", "authentication required", "no basic auth credentials", "403")


def check(evidence: models.Evidence) -> models.Diagnosis | None:
    lines: list[str] = []
    images: list[str] = []
    containers: list[str] = []
    for pod in evidence.pods:
        for container in pod.containers:
            if container.state == "waiting" and container.reason in PULL_REASONS:
                lines.append(
                    f"pod {pod.name} container {container.name}: {container.reason}: {container.message}".rstrip(": ")
                )
                if container.image and container.image not in images:
                    images.append(container.image)
                if container.name not in containers:
                    containers.append(container.name)
    for event in evidence.events:
        if event.type == "Warning" and any(marker in event.message for marker in _EVENT_MARKERS):
            lines.append(f"event {event.object} {event.reason}: {event.message}")
    if not containers:
        hinted = [hint for hint in evidence.hints if "pulling image" in hint or "ErrImagePull" in hint]
        if not hinted:
            return None
        return models.Diagnosis(
            category="image-pull",
            summary="K8sGPT reports an image pull failure, but no pod of the target shows it now.",
            evidence=[f"K8sGPT reported: {hint}" for hint in hinted[:5]],
            confidence=0.5,
            source="rules",
        )
    text = " ".join(lines).lower()
    if "not found" in text or "manifest unknown" in text:
        why = "the image or tag does not exist in the registry"
    elif "repository does not exist or may require authorization" in text:
        why = "the repository does not exist (or is private and needs credentials)"
    elif "no such host" in text:
        why = "the registry's host name does not resolve"
    elif any(marker in text for marker in _AUTH_MARKERS):
        why = "the registry refused the pull (credentials or permissions)"
    elif "invalidimagename" in text:
        why = "the image reference is not a valid name"
    else:
        why = "the pull keeps failing"
    summary = (
        f"Container {', '.join(containers)} of {evidence.target} cannot start: image "
        f"{', '.join(repr(image) for image in images) or '(unknown)'} cannot be pulled — {why}."
    )
    return models.Diagnosis(
        category="image-pull", summary=summary, evidence=_unique(lines)[:10], confidence=0.95, source="rules"
    )


def _unique(lines: list[str]) -> list[str]:
    return list(dict.fromkeys(lines))
