"""Reading one ``CSM_*`` environment variable: text, a flag, a path, a bounded number or list of numbers.

A value that cannot be used raises ``ValueError`` whose message starts with the variable's name and says the rule it
breaks (``CSM_PORT: 'eighty' is not a whole number``), which the CLI prints instead of a traceback.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

TRUE = frozenset({"1", "true", "yes", "on"})


def env(name: str, default: str) -> str:
    """``CSM_<name>`` as set, or ``default``."""
    return os.environ.get(f"CSM_{name}", default)


def flag(name: str, default: str = "false") -> bool:
    """``CSM_<name>`` as a switch: 1, true, yes or on (any case) is on; anything else is off."""
    return env(name, default).strip().lower() in TRUE


def optional_path(name: str) -> Path | None:
    value = env(name, "").strip()
    return Path(value) if value else None


def _bounded(name: str, value: float, low: float | None, high: float | None, above: bool) -> None:
    if low is not None and (value <= low if above else value < low):
        raise ValueError(f"CSM_{name}: {value:g} must be {'more than' if above else 'at least'} {low:g}")
    if high is not None and value > high:
        raise ValueError(f"CSM_{name}: {value:g} must be at most {high:g}")


def _whole(name: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"CSM_{name}: {text!r} is not a whole number") from None


def whole(name: str, default: int, low: int | None = 0, high: int | None = None) -> int:
    """``CSM_<name>`` as a whole number from ``low`` to ``high`` (either None: unbounded on that side)."""
    raw = os.environ.get(f"CSM_{name}")
    value = default if raw is None or not raw.strip() else _whole(name, raw)
    _bounded(name, value, low, high, above=False)
    return value


def decimal(name: str, default: float, low: float | None = 0.0, high: float | None = None,
            above: bool = False) -> float:
    """``CSM_<name>`` as a finite number (seconds, usually) from ``low`` (or more than it, with ``above``) to
    ``high``."""
    raw = os.environ.get(f"CSM_{name}")
    if raw is None or not raw.strip():
        value = default
    else:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"CSM_{name}: {raw!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"CSM_{name}: {raw!r} is not a finite number")
    _bounded(name, value, low, high, above)
    return value


def wholes(name: str, default: str, low: int | None = 0, high: int | None = None) -> tuple[int, ...]:
    """``CSM_<name>`` as comma-separated whole numbers, each from ``low`` to ``high``; empty items are skipped."""
    values = []
    for item in env(name, default).split(","):
        if item.strip():
            value = _whole(name, item)
            _bounded(name, value, low, high, above=False)
            values.append(value)
    return tuple(values)
