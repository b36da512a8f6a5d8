"""Text rewrites of PromQL that the mixin applies to hand-written expressions: scope every raw
metric selector to the configured job (and dashboard variables), and add grouping labels.

The rules and panels are written once, generic; the deployment's selectors are added here, so a
job rename or a new cluster label is one config change instead of a sed over every file.
"""

from __future__ import annotations

import re

# A raw series name: mlmon_*, the process/runtime collectors' process_* / python_*, or Prometheus's
# own up / scrape_duration_seconds / ALERTS. Not part of a longer identifier, a
# recording rule name (level:metric:ops), a label value ("...") or a function call.
_RAW = re.compile(r'(?<![\w:"$.])(mlmon_\w+|process_\w+|python_\w+|up|scrape_duration_seconds|ALERTS)(?![\w:(])')
# A recorded series name (level:metric:operations); level "instance*" keeps the instance label.
_RECORDED = re.compile(r'(?<![\w:"$.])([a-z_]+:mlmon_\w+:\w+)(?![\w:(])')
_GROUPING = re.compile(r"\b(by|on)\s*\(\s*job\b")


def _inject(expr: str, pattern: re.Pattern[str], matchers: str | None, recorded: bool = False) -> str:
    out: list[str] = []
    pos = 0
    for m in pattern.finditer(expr):
        if _inside_braces_or_string(expr, m.start()):
            continue
        these = matchers
        if (recorded and not m.group(1).startswith("instance")) or m.group(1) == "ALERTS":
            # Fleet-level series carry no instance label: an instance matcher would hide them.
            these = _drop(matchers or "", "instance")
        if not these:
            continue
        end = m.end()
        out.append(expr[pos:end])
        if expr.startswith("{", end):
            close = expr.index("}", end)
            inner = expr[end + 1:close].strip()
            out.append("{" + these + (", " + inner if inner else "") + "}")
            pos = close + 1
        else:
            out.append("{" + these + "}")
            pos = end
    out.append(expr[pos:])
    return "".join(out)


def _drop(matchers: str, label: str) -> str:
    return ", ".join(m for m in (x.strip() for x in matchers.split(",")) if m and not m.startswith(label + "="))


def _inside_braces_or_string(expr: str, at: int) -> bool:
    """True when ``at`` lies inside a label matcher list or a string literal."""
    depth, quote = 0, ""
    for ch in expr[:at]:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'`":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
    return bool(quote) or depth > 0


def scope(expr: str, matchers: str, recorded_matchers: str | None = None) -> str:
    """Add ``matchers`` to every raw series selector of ``expr`` (and ``recorded_matchers``, without
    any instance matcher unless the level is per instance, to recorded series)."""
    expr = _inject(expr, _RAW, matchers)
    if recorded_matchers:
        expr = _inject(expr, _RECORDED, recorded_matchers, recorded=True)
    return expr


def group(expr: str, labels: tuple[str, ...]) -> str:
    """``by (job, ...)`` / ``on (job, ...)`` → the same with ``labels`` in front."""
    if not labels:
        return expr
    return _GROUPING.sub(lambda m: f"{m[1]} ({', '.join(labels)}, job", expr)
