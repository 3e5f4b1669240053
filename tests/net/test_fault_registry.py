"""The fault registry: one module per fault, and everything derived from it."""

from __future__ import annotations

import importlib
import io
import pkgutil
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import agent.net.faults
from agent.cli.main import cmd_steps
from agent.net.faults import FAULTS, Fault, register
from agent.net.faults.base import (
    FaultParams,
    FilterFault,
    NatFault,
    RouteFault,
    TimedParams,
)
from agent.net.filters import Passthrough
from agent.scenario.steps import STEPS
from agent.scenario.steps_net import (
    FAULT_STEPS,
    TABLE_BEGIN,
    TABLE_END,
    fault_of,
    fault_table,
)

ROOT = Path(__file__).resolve().parents[2]
FAULT_NAMES = sorted(FAULTS)
#: the modules of the package that are not faults
SUPPORT_MODULES = {"base", "params"}


@pytest.fixture
def scratch_faults() -> Iterator[None]:
    before = dict(FAULTS)
    yield
    FAULTS.clear()
    FAULTS.update(before)


def test_the_documented_faults_are_registered() -> None:
    assert set(FAULTS) == {
        "net.noop", "net.blackhole", "net.loss", "net.delay", "net.jitter",
        "net.mtu", "net.rebind", "net.address_change", "net.path_change",
        "nat.rebind", "nat.flush",
    }  # fmt: skip


def test_one_module_per_fault_and_every_module_is_loaded() -> None:
    package = agent.net.faults
    modules = {m.name for m in pkgutil.iter_modules(package.__path__)}
    fault_modules = {FAULTS[name].__module__.rpartition(".")[2] for name in FAULTS}
    assert len(fault_modules) == len(FAULTS)  # no module holds two
    assert modules - SUPPORT_MODULES == fault_modules  # none left unimported
    for name, fault in FAULTS.items():
        # The module is named for the fault's kind: net.loss lives in loss.py.
        assert fault.__module__ == f"agent.net.faults.{fault.kind}", name


@pytest.mark.parametrize("name", FAULT_NAMES)
def test_each_fault_declares_itself_once(name: str) -> None:
    fault = FAULTS[name]
    assert issubclass(fault.Params, FaultParams)
    assert fault.Params.model_config.get("extra") == "forbid"
    assert re.fullmatch(r"[a-z][a-z0-9_]*", fault.default_cause)
    assert fault.summary and "\n" not in fault.summary
    family = {"net": (FilterFault, RouteFault), "nat": (NatFault,)}[name[:3]]
    assert issubclass(fault, family)


@pytest.mark.parametrize("name", FAULT_NAMES)
def test_each_fault_is_a_step_with_the_faults_own_params(name: str) -> None:
    fault = FAULTS[name]
    step = STEPS[name]
    assert step is FAULT_STEPS[name] and fault_of(name) is fault
    assert step.Params is fault.Params
    assert step.summary == fault.summary
    assert step.side == ("required" if fault.acts_on == "side" else "none")


def test_steps_that_are_not_faults_have_no_fault() -> None:
    assert fault_of("ice.restart") is None and fault_of("nope") is None


def test_readme_table_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text()
    _, _, rest = readme.partition(TABLE_BEGIN)
    table, found, _ = rest.partition(TABLE_END)
    assert found, "README.md lost its fault-table markers"
    assert table.strip() == fault_table(), (
        "README.md's fault table is stale: run "
        "`python -m agent.scenario.steps_net README.md`"
    )


def test_the_table_has_a_row_per_fault_with_its_default_cause() -> None:
    table = fault_table()
    for name, fault in FAULTS.items():
        (row,) = [line for line in table.splitlines() if f"`{name}`" in line]
        assert row.endswith(f"| `{fault.default_cause}` |")


def test_no_code_outside_its_module_names_the_noop_fault() -> None:
    """Adding a fault is one file: nothing else in agent/ lists faults."""
    mentions = [
        path.relative_to(ROOT)
        for path in (ROOT / "agent").rglob("*.py")
        if "net.noop" in path.read_text() or "Noop(" in path.read_text()
    ]
    allowed = {
        Path("agent/net/faults/noop.py"),
        Path("agent/net/faults/__init__.py"),  # the docstring's example
        Path("agent/scenario/steps.py"),  # the unrelated ``noop`` step
    }
    assert set(mentions) <= allowed


# --- register() checks, for a fault's author ---------------------------------


def _filter_fault(**attributes: Any) -> type[Fault[Any]]:
    class Probe(FilterFault[TimedParams]):
        name = "net.probe"
        Params = TimedParams
        default_cause = "probe"
        summary = "a test fault"

        def build(self, params: TimedParams, rng: random.Random) -> Passthrough:
            return Passthrough()

    for key, value in attributes.items():
        setattr(Probe, key, value)
    return Probe


@pytest.mark.usefixtures("scratch_faults")
def test_register_adds_a_fault_and_derives_its_kind() -> None:
    probe = register(_filter_fault())
    assert FAULTS["net.probe"] is probe and probe.kind == "probe"


@pytest.mark.usefixtures("scratch_faults")
@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"name": "blackhole"}, "must be 'net.<x>' or 'nat.<x>'"),
        ({"name": "nat.probe"}, "nat.\\* faults act on the NAT"),
        ({"summary": "two\nlines"}, "summary must be one non-empty line"),
        ({"default_cause": "Not A Cause"}, "default_cause must be a cause name"),
        ({"Params": FaultParams}, "must subclass TimedParams"),
        ({"Params": dict}, "must subclass FaultParams"),
    ],
)
def test_register_refuses_a_half_declared_fault(
    attributes: dict[str, Any], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        register(_filter_fault(**attributes))
    assert "net.probe" not in FAULTS


@pytest.mark.usefixtures("scratch_faults")
def test_register_refuses_a_taken_name() -> None:
    with pytest.raises(ValueError, match=r"'net\.noop' is already registered by"):
        register(_filter_fault(name="net.noop"))


def test_the_package_docstring_shows_the_noop_fault_whole() -> None:
    # The documented minimal example is the real module's class, verbatim.
    source = (ROOT / "agent/net/faults/noop.py").read_text()
    body = source[source.index("@register") :].strip()
    doc = agent.net.faults.__doc__ or ""
    example = "\n".join(
        line.removeprefix("    ")
        for line in doc[doc.index("    @register") :]
        .split("\n\nA fault")[0]
        .split("\n")
    )
    assert example.strip() == body
    assert importlib.import_module("agent.net.faults.noop").Noop is FAULTS["net.noop"]


def test_the_steps_catalogue_lists_every_fault_with_its_default_cause() -> None:
    out = io.StringIO()
    assert cmd_steps(Console(file=out, width=250)) == 0
    lines = out.getvalue().splitlines()
    for name, fault in FAULTS.items():
        (row,) = [line for line in lines if f" {name} " in line]
        assert fault.default_cause in row and fault.summary in row
