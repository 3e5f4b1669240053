"""The report layer must not reach up into net/signaling/call/scenario/cli."""

from __future__ import annotations

import ast
from pathlib import Path

REPORT = Path(__file__).resolve().parents[2] / "agent" / "report"
#: errors < stack < observe < net < report: the report's typed entries are
#: built from the observe layer's events, metrics and media stats.
ALLOWED = ("agent.errors", "agent.observe", "agent.report")


def imported_agent_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return {m for m in modules if m == "agent" or m.startswith("agent.")}


def test_report_imports_only_lower_layers() -> None:
    sources = sorted(REPORT.glob("**/*.py"))
    assert len(sources) >= 5
    for source in sources:
        for module in imported_agent_modules(source):
            allowed = module == "agent" or any(
                module == prefix or module.startswith(prefix + ".")
                for prefix in ALLOWED
            )
            assert allowed, f"{source.name} imports {module}"
