"""Label and field selectors as the Kubernetes API parses them, for the emulated server.

Label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``.
Field selectors: ``path=value``, ``path==value``, ``path!=value`` on any dotted path
(``metadata.name``, ``involvedObject.name``, ``status.phase``, ``spec.nodeName``...).
Used by ``aegis.sim.apiserver`` (lists), ``aegis.sim.watches`` and the controllers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Predicate = Callable[[Mapping[str, Any]], bool]


class SelectorError(ValueError):
    """A selector that does not parse."""


def _split(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


_SET = re.compile(r"^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$")
_EQ = re.compile(r"^([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)$")
_KEY = re.compile(r"^(!?)([\w./-]+)$")


def label_selector(text: str | None) -> Predicate:
    """A predicate over an object's labels."""
    if not text:
        return lambda obj: True
    checks: list[Callable[[Mapping[str, str]], bool]] = []
    for requirement in _split(text):
        if match := _SET.match(requirement):
            key, op, values = match.group(1), match.group(2), {v.strip() for v in match.group(3).split(",")}
            if op == "in":
                checks.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                checks.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif match := _EQ.match(requirement):
            key, op, value = match.groups()
            if op == "!=":
                checks.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                checks.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif match := _KEY.match(requirement):
            negate, key = match.groups()
            if negate:
                checks.append(lambda labels, k=key: k not in labels)
            else:
                checks.append(lambda labels, k=key: k in labels)
        else:
            raise SelectorError(f"unable to parse requirement: {requirement!r}")

    def predicate(obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(check(labels) for check in checks)

    return predicate


def _lookup(obj: Mapping[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return ""
        value = value.get(part)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def field_selector(text: str | None) -> Predicate:
    """A predicate over an object's fields."""
    if not text:
        return lambda obj: True
    checks: list[Predicate] = []
    for requirement in _split(text):
        match = re.match(r"^([\w.]+)\s*(==|=|!=)\s*(.*)$", requirement)
        if not match:
            raise SelectorError(f"invalid field selector: {requirement!r}")
        path, op, value = match.groups()
        if op == "!=":
            checks.append(lambda obj, p=path, v=value: _lookup(obj, p) != v)
        else:
            checks.append(lambda obj, p=path, v=value: _lookup(obj, p) == v)
    return lambda obj: all(check(obj) for check in checks)
