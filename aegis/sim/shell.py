"""A tiny ``sh -c`` for the emulated busybox/alpine containers, and ``$VAR`` expansion.

``run_script`` plays a container's shell script far enough to decide its fate:
the lines it prints, how long it runs (``FOREVER`` for scripts that never end)
and its exit status. Called by ``aegis.sim.programs`` when the catalog marks an
image as a shell; ``aegis.sim.kubelet`` re-exports it as ``kubelet.run_script``.
"""

from __future__ import annotations

import math
import re
import shlex

FOREVER = math.inf  # the run time of a program that never exits by itself
_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def _expand(text: str, env: dict[str, str]) -> str:
    """``$VAR`` and ``${VAR}`` as the shell expands them (unset: empty)."""
    return _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), text)


def run_script(script: str, env: dict[str, str], files: dict[str, str]) -> tuple[list[str], float, int]:
    """A tiny ``sh -c``: echo, printf, sleep, exit, cat, true/false, loops that never end, ``&&``/``||``."""
    logs: list[str] = []
    elapsed = 0.0
    status = 0
    if re.search(r"while\s+(true|:)", script) or "tail -f /dev/null" in script or "sleep infinity" in script:
        forever = True
    else:
        forever = False
    for statement in re.split(r"[;\n]", script):
        chain = re.split(r"(&&|\|\|)", statement)
        run_next = True
        for part in chain:
            part = part.strip()
            if part == "&&":
                run_next = status == 0
                continue
            if part == "||":
                run_next = status != 0
                continue
            if not part or not run_next or part.startswith("#"):
                continue
            try:
                words = shlex.split(_expand(part, env))
            except ValueError:
                words = part.split()
            if not words:
                continue
            command, rest = words[0], words[1:]
            if command in ("do", "done", "then", "fi", "while", "if"):
                continue
            if command == "echo":
                logs.append(" ".join(w for w in rest if w != "-n"))
                status = 0
            elif command == "printf":
                logs.append(" ".join(rest).replace("\\n", ""))
                status = 0
            elif command == "sleep":
                try:
                    elapsed += float(rest[0].rstrip("s")) if rest else 0
                except ValueError:
                    return logs, FOREVER, 0
                status = 0
            elif command == "exit":
                code = int(rest[0]) if rest and rest[0].lstrip("-").isdigit() else status
                return logs, elapsed, code
            elif command == "cat":
                status = 0
                for path in rest:
                    if path in files:
                        logs.extend(files[path].splitlines())
                    else:
                        logs.append(f"cat: can't open '{path}': No such file or directory")
                        status = 1
            elif command in ("true", ":"):
                status = 0
            elif command == "false":
                status = 1
            elif command in ("tail", "wait"):
                status = 0
            elif command == "printenv":
                status = 0 if (not rest or rest[0] in env) else 1
                if rest and rest[0] in env:
                    logs.append(env[rest[0]])
            elif command in ("test", "["):
                status = 0
            else:
                logs.append(f"sh: {command}: not found")
                status = 127
    return logs, FOREVER if forever else elapsed, status
