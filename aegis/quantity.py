"""Kubernetes resource quantities (``128Mi``, ``0.5``, ``250m``, ``1G``) as numbers (actions, the emulator)."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
}


def valid(value: object) -> bool:
    if isinstance(value, int | float):
        return value >= 0
    if not isinstance(value, str) or not _QUANTITY.match(value):
        return False
    try:
        parse(value)
    except ValueError:
        return False
    return True


def parse(value: object) -> Decimal:
    """The quantity as a Decimal in base units (bytes, cores)."""
    if isinstance(value, int | float):
        return Decimal(str(value))
    text = str(value)
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(f"quantities must match the regular expression: {text!r}")
    number, suffix = match.groups()
    try:
        amount = Decimal(number)
    except InvalidOperation as exc:
        raise ValueError(f"invalid quantity {text!r}") from exc
    if suffix in _SUFFIX:
        return amount * _SUFFIX[suffix]
    if suffix[:1] in ("e", "E"):
        return amount * (Decimal(10) ** int(suffix[1:]))
    raise ValueError(f"invalid quantity suffix in {text!r}")


def format_bytes(amount: Decimal | int) -> str:
    """Bytes as the largest exact binary suffix (``268435456`` -> ``256Mi``)."""
    value = int(amount)
    for suffix in ("Gi", "Mi", "Ki"):
        unit = int(_SUFFIX[suffix])
        if value and value % unit == 0:
            return f"{value // unit}{suffix}"
    return str(value)
