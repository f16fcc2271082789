"""What a container's program does, as the image catalog describes it: its logs, run time and exit.

``outcome`` decides one start of a container: the lines it logs, how long it runs
(``shell.FOREVER`` for a server), its exit code and the termination reason, with
an exit and the program's real error when a required env var is missing,
``OOMKilled`` when it needs (or, leaking, grows to) more memory than its limit,
and shell scripts for busybox/alpine played by ``aegis.sim.shell``. Called by the
kubelet stand-in (``aegis.sim.kubelet``) each time it starts a container.
"""

from __future__ import annotations

import shlex
from typing import Any

from aegis import quantity
from aegis.sim import catalog, shell


def outcome(
    entry: catalog.Image | None, container: dict[str, Any], env: dict[str, str], files: dict[str, str]
) -> tuple[list[str], float, int, str]:
    """(log lines, run time, exit code, reason) of one start of the container, its memory limit applied."""
    logs, duration, exit_code = _program(entry, container, env, files)
    memory = entry.memory if entry else 1 << 20
    if entry and entry.memory_from_args:
        memory = max(memory, _memory_arg(container, entry.memory_from_args) or 0)
    limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    reason = "Completed" if exit_code == 0 else "Error"
    if limit is not None and memory > quantity.parse(limit):
        duration, exit_code, reason = min(duration, 1.0), 137, "OOMKilled"
        logs = logs[:1]
    elif limit is not None and entry is not None and entry.memory_growth:
        # A leak: killed when the working set grows past the limit.
        reach = float(quantity.parse(limit) - memory) / entry.memory_growth
        if reach < duration:
            duration, exit_code, reason = reach, 137, "OOMKilled"
    return logs, duration, exit_code, reason


def _program(
    entry: catalog.Image | None, container: dict[str, Any], env: dict[str, str], files: dict[str, str]
) -> tuple[list[str], float, int]:
    """(log lines, run time, exit code) of the container's program."""
    command = list(container.get("command") or [])
    args = list(container.get("args") or [])
    if entry is not None and entry.shell:
        words = command + args
        if len(words) >= 3 and words[0] in ("sh", "/bin/sh", "ash", "bash", "/bin/bash") and words[1] == "-c":
            return shell.run_script(words[2], env, files)
        if not words or words[0] in ("sh", "/bin/sh"):
            return [], 0.0, 0  # an interactive shell without a terminal exits at once
        return shell.run_script(" ".join(shlex.quote(w) for w in words), env, files)
    if entry is not None:
        for requirement in entry.requires_env:
            if not any(env.get(name) for name in requirement.any_of):
                return list(requirement.logs), 0.5, requirement.exit_code
        version = container.get("image", "").rsplit(":", 1)[-1]
        return [line.replace("{version}", version) for line in entry.logs], shell.FOREVER, 0
    return [], shell.FOREVER, 0


def _memory_arg(container: dict[str, Any], flag: str) -> int | None:
    """The memory a program is told to use by ``flag`` in its command line (``--vm-bytes 250M``), in bytes."""
    words = list(container.get("command") or []) + list(container.get("args") or [])
    for index, word in enumerate(words):
        if word == flag and index + 1 < len(words):
            value = words[index + 1]
            units = {"K": "Ki", "M": "Mi", "G": "Gi", "k": "Ki", "m": "Mi", "g": "Gi"}
            if value and value[-1] in units:
                value = value[:-1] + units[value[-1]]
            try:
                return int(quantity.parse(value))
            except ValueError:
                return None
    return None
