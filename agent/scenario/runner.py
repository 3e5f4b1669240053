"""Run scenarios against live calls: schedule steps, collect results, check them.

A scenario's clock starts when the call is connected: ``at: 5s`` means five
seconds of media into the call, and ``duration`` is how long the call lasts after
it connected (setup time is reported separately as ``setup_ms``). Steps run in
order of ``at``; teardown always runs (``finally``), and every call — passed,
failed, crashed or interrupted — produces its report entry, which is handed to
``on_result`` at once so the report on disk grows call by call.

In a kernel lab (``network.lab: kernel`` or ``callagent run --lab kernel``)
each call gets a lab of its own — index from a pool, so labs running at once
never share addresses — built in the call's ``connect`` and removed in its
``close``; with ``network.shared`` the runner builds one lab for all the
scenario's calls around them (``finally``: removed whatever happened). The
expectations are ``expect`` with ``expect_kernel``'s keys on top.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from agent.call.calls import Call, CallConfig
from agent.errors import AgentError
from agent.net.lab import Lab
from agent.net.lab.topology import MAX_LABS, new_run_id
from agent.net.labnet import CallLab
from agent.observe.model import Side
from agent.report.schema import call_verdict
from agent.scenario.callconfig import call_config
from agent.scenario.expect import check_expectations
from agent.scenario.expectations import Expectations
from agent.scenario.heap import HeapPolicy
from agent.scenario.model import Scenario, StepSpec
from agent.scenario.network import LabMode
from agent.scenario.steps import STEPS
from agent.stack.media import prepare_opus
from agent.targets.calls import call_factory
from agent.targets.spec import Target, parse_target

logger = logging.getLogger(__name__)

ResultSink = Callable[[dict[str, Any]], Awaitable[None] | None]


@dataclass
class CallProgress:
    call_id: str
    scenario: str
    state: str = "starting"
    elapsed_s: float = 0.0
    total_s: float = 0.0
    verdict: str | None = None


@dataclass
class RunProgress:
    """What a progress display shows; the runner updates it in place."""

    calls: dict[str, CallProgress] = field(default_factory=dict)
    done: int = 0
    total: int = 0


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``: the calls whose run-wide index is
    ``index`` mod ``count`` (``callagent run --shard I/N``, ``--workers``)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count} does not exist")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


WHOLE_RUN = Shard()


def shard_plan(
    scenarios: list[Scenario], shard: Shard
) -> list[tuple[Scenario, list[int]]]:
    """Per scenario, the call indices that ``shard`` runs (scenarios with none
    are left out).

    Calls are numbered across the whole run, in file order (scenario by
    scenario, call by call), so a suite of one-call scenarios spreads over the
    shards as evenly as one 500-call scenario does. A call keeps its id and
    seed (:meth:`ScenarioRunner.call_seed`) whichever shard runs it.
    """
    plan: list[tuple[Scenario, list[int]]] = []
    run_index = 0
    for scenario in scenarios:
        if scenario.network.shared:
            # Its calls share one lab NAT (a state table that fills up): they
            # cannot be split over processes, so one shard runs them all.
            if run_index % shard.count == shard.index:
                plan.append((scenario, list(range(scenario.calls))))
            run_index += scenario.calls
            continue
        indices = []
        for index in range(scenario.calls):
            if run_index % shard.count == shard.index:
                indices.append(index)
            run_index += 1
        if indices:
            plan.append((scenario, indices))
    return plan


class ScenarioRunner:
    def __init__(
        self,
        *,
        seed: int | None = None,
        on_result: ResultSink | None = None,
        progress: RunProgress | None = None,
        call_factory: Callable[[CallConfig], Call] | None = None,
        target: Target | None = None,
        token: str | None = None,
        lab: LabMode | None = None,
        lab_run_id: str | None = None,
    ) -> None:
        #: "kernel" overrides every file's network.lab (None: each file says)
        self.lab = lab
        #: in every lab namespace's name: ``callagent lab clean`` finds them
        self.lab_run_id = lab_run_id or new_run_id()
        self._free_labs = set(range(MAX_LABS))
        #: builds each call; a remote call (``callagent call``) plays one side.
        #: None: by target (``target``, else the scenario's ``target:``).
        self._call_factory = call_factory
        self._target = target
        self._token = token
        self.seed = (
            seed if seed is not None else random.SystemRandom().randrange(1 << 31)
        )
        self._on_result = on_result
        self.progress = progress or RunProgress()
        self.results: list[dict[str, Any]] = []
        #: no full garbage collection while a call of this process is up
        self.heap = HeapPolicy()
        #: calls of the run not started yet
        self._unstarted = 0

    async def run(
        self,
        scenarios: list[Scenario],
        *,
        shard: Shard = WHOLE_RUN,
        scenarios_at_once: int | None = 1,
    ) -> list[dict[str, Any]]:
        """Run the calls of ``shard``: ``scenarios_at_once`` scenarios at a
        time (1: one after the other, as files are listed; None: all), each
        scenario's calls together, or paced by its ``ramp``."""
        with self.heap:
            return await self._run_plan(shard_plan(scenarios, shard), scenarios_at_once)

    async def _run_plan(
        self,
        plan: list[tuple[Scenario, list[int]]],
        scenarios_at_once: int | None,
    ) -> list[dict[str, Any]]:
        self.progress.total = sum(len(indices) for _, indices in plan)
        self._unstarted = self.progress.total
        # The pre-encoded audio loop (~100 ms of CPU, once per process) is
        # built before any call's clock starts: it is not a call's setup.
        for packet_ms in sorted({s.media.packet_ms for s, _ in plan if s.media.audio}):
            await prepare_opus(packet_ms)
        if scenarios_at_once == 1 or len(plan) <= 1:
            for scenario, indices in plan:
                await self._run_scenario(scenario, indices)
            return self.results
        slots = asyncio.Semaphore(scenarios_at_once or len(plan))
        # Longest first into the slots: the run then ends about when its
        # longest scenario does (shards and seeds do not depend on this order).
        plan.sort(key=lambda item: item[0].duration, reverse=True)

        async def in_a_slot(scenario: Scenario, indices: list[int]) -> None:
            async with slots:
                await self._run_scenario(scenario, indices)

        await asyncio.gather(
            *(in_a_slot(scenario, indices) for scenario, indices in plan)
        )
        return self.results

    async def _run_scenario(self, scenario: Scenario, indices: list[int]) -> None:
        if self.lab_mode(scenario) == "kernel" and scenario.network.shared:
            # One lab NAT for every call (firewall state-table overflow).
            await self._run_shared(scenario, indices)
            return
        loop = asyncio.get_running_loop()
        t0 = loop.time()

        async def paced(index: int) -> None:
            # The ramp is by the call's index in the scenario, not in the
            # shard, so shards started together start each call when an
            # unsharded run would.
            if scenario.ramp is not None:
                await asyncio.sleep(max(0.0, t0 + index / scenario.ramp - loop.time()))
            await self.run_call(scenario, index)

        await asyncio.gather(*(paced(index) for index in indices))

    def target_of(self, scenario: Scenario) -> Target:
        """The far end: ``--target``, else the file's ``target:``, else agent."""
        return self._target or parse_target(scenario.target)

    def factory_for(self, scenario: Scenario) -> Callable[[CallConfig], Call]:
        if self._call_factory is not None:
            return self._call_factory
        return call_factory(self.target_of(scenario), token=self._token)

    def lab_mode(self, scenario: Scenario) -> LabMode:
        # A far end that lives in the lab itself (libnice: janus, gstreamer).
        if self._call_factory is None and self.target_of(scenario).needs_lab:
            return "kernel"
        return self.lab or scenario.network.lab

    def new_lab(self, scenario: Scenario, seed: int) -> Lab:
        """A lab for ``scenario`` (not built yet), index from the pool."""
        nat = scenario.network.nat
        index = min(self._free_labs)
        self._free_labs.discard(index)
        return Lab(
            None if nat is None else nat.behavior(),
            run_id=self.lab_run_id,
            index=index,
            max_flows=scenario.network.max_flows,
            seed=seed,
            nat=nat is not None,
        )

    def _release(self, lab: Lab) -> None:
        self._free_labs.add(lab.topology.index)

    async def _run_shared(self, scenario: Scenario, indices: list[int]) -> None:
        lab = self.new_lab(scenario, self.call_seed(scenario, -1))
        try:
            await lab.build()
            await asyncio.gather(
                *(self.run_call(scenario, index, shared=lab) for index in indices)
            )
        finally:
            await asyncio.shield(lab.teardown())
            self._release(lab)

    def _place(
        self, scenario: Scenario, seed: int, shared: Lab | None
    ) -> CallLab | None:
        if self.lab_mode(scenario) != "kernel":
            return None
        nat = scenario.network.nat
        inside = Side.CALLER if nat is None else nat.side
        if shared is not None:
            return CallLab(shared, inside, owned=False, shared_by=scenario.calls)
        return CallLab(self.new_lab(scenario, seed), inside)

    def expectations(self, scenario: Scenario) -> Expectations:
        """``expect``, with ``expect_kernel``'s keys on top in a kernel lab."""
        override = scenario.expect_kernel
        if self.lab_mode(scenario) != "kernel" or override is None:
            return scenario.expect
        return scenario.expect.model_copy(
            update={k: getattr(override, k) for k in override.model_fields_set}
        )

    def call_seed(self, scenario: Scenario, index: int) -> int:
        base = scenario.seed if scenario.seed is not None else self.seed
        return random.Random(f"{base}:{scenario.name}:{index}").randrange(1 << 31)

    async def run_call(
        self, scenario: Scenario, index: int, *, shared: Lab | None = None
    ) -> dict[str, Any]:
        call_id = f"{scenario.name}#{index + 1}"
        seed = self.call_seed(scenario, index)
        progress = CallProgress(call_id, scenario.name, total_s=scenario.duration)
        self.progress.calls[call_id] = progress
        config = call_config(scenario, call_id, seed)
        config.lab = self._place(scenario, seed, shared)
        try:
            return await self._run_call(scenario, config, progress)
        finally:
            if config.lab is not None and config.lab.owned:
                self._release(config.lab.lab)

    async def _run_call(
        self, scenario: Scenario, config: CallConfig, progress: CallProgress
    ) -> dict[str, Any]:
        self.heap.call_started()
        self._unstarted = max(0, self._unstarted - 1)
        try:
            return await self._run_call_counted(scenario, config, progress)
        finally:
            self.heap.call_ended(more_to_come=self._unstarted > 0)

    async def _run_call_counted(
        self, scenario: Scenario, config: CallConfig, progress: CallProgress
    ) -> dict[str, Any]:
        call_id = config.call_id
        call = self.factory_for(scenario)(config)
        started = time.monotonic()
        final_state = "never_connected"
        interrupted = False
        try:
            progress.state = "connecting"
            await call.connect()
            progress.state = "connected"
            await self._run_timeline(call, scenario, progress)
            final_state = call.final_state()
        except AgentError as exc:
            call.error = str(exc)
            final_state = call.final_state()
        except asyncio.CancelledError:
            call.error = "interrupted"
            final_state = call.final_state()
            interrupted = True
        except Exception as exc:  # one broken call must not lose the others
            logger.exception("%s: internal error", call_id)
            call.error = f"internal error: {type(exc).__name__}: {exc}"
            final_state = call.final_state()
        finally:
            progress.state = "closing"
            interrupted = await _close_through_cancel(call) or interrupted
        duration_ms = (time.monotonic() - started) * 1000
        # Building the entry is the call's one long step (~10 ms for a loaded
        # call's few hundred events): when several calls end together, the
        # other calls' media gets the loop between one entry and the next.
        interrupted = await _yield_to_media() or interrupted
        result = call.result(duration_ms=duration_ms)
        result["final_state"] = final_state
        result.update(
            scenario=scenario.name,
            scenario_file=scenario_source(scenario).get("path"),
            scenario_sha256=scenario_source(scenario).get("sha256"),
            steps=[step_summary(s) for s in scenario.steps],
        )
        checks = check_expectations(self.expectations(scenario), result)
        passed = all(c.passed for c in checks) and call.error is None
        result["expectations"] = {
            "passed": passed,
            # ``inconclusive`` only where it is set (report schema).
            "checks": [
                {k: v for k, v in asdict(c).items() if v is not None} for c in checks
            ],
        }
        progress.state = final_state
        progress.verdict = str(call_verdict(result))
        self.progress.done += 1
        self.results.append(result)
        if self._on_result is not None:
            outcome = self._on_result(result)
            if outcome is not None:
                await outcome
        if interrupted:
            raise asyncio.CancelledError
        return result

    async def _run_timeline(
        self, call: Call, scenario: Scenario, progress: CallProgress
    ) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        ticker = asyncio.create_task(_tick(progress, t0))
        try:
            for step in sorted(scenario.steps, key=lambda s: s.at):
                if await _wait_or_end(call, t0 + step.at - loop.time()):
                    return
                await self._run_step(call, step)
                if call.hung_up_by is not None:
                    return
            await _wait_or_end(call, t0 + scenario.duration - loop.time())
        finally:
            ticker.cancel()

    async def _run_step(self, call: Call, step: StepSpec) -> None:
        side = None if step.side is None else Side(step.side)
        params = step.params.model_dump(mode="json") if step.params is not None else {}
        call.record_step(side, step.do, params)
        await STEPS[step.do]().run(call, side, step.params)


async def _close_through_cancel(call: Call) -> bool:
    """Close ``call`` to the end even when cancelled meanwhile; True if it was.

    A cancel (SIGTERM, Ctrl-C, a worker told to stop) that arrives while the
    call is closing must not lose its report entry: the call ran, and under
    load many calls are closing at once. The close is bounded by the peers'
    own timeouts, so waiting it out is bounded too; the caller passes the
    cancel on once the entry is made.
    """
    closing = asyncio.ensure_future(call.close())
    cancelled = False
    while not closing.done():
        try:
            await asyncio.shield(closing)
        except asyncio.CancelledError:
            if closing.done():
                break  # the close itself was cancelled: nothing left to wait
            cancelled = True
    if not closing.cancelled() and closing.exception() is not None:
        raise closing.exception()  # type: ignore[misc]
    return cancelled


async def _wait_or_end(call: Call, seconds: float) -> bool:
    """Wait ``seconds``; True when the call ended meanwhile."""
    if call.ended.is_set():
        return True
    if seconds <= 0:
        return False
    try:
        await asyncio.wait_for(call.ended.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


async def _tick(progress: CallProgress, t0: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        progress.elapsed_s = loop.time() - t0
        await asyncio.sleep(0.25)


def step_summary(step: StepSpec) -> dict[str, Any]:
    params = step.params.model_dump(mode="json") if step.params is not None else {}
    return {"at_s": step.at, "do": step.do, "side": step.side, **params}


def scenario_source(scenario: Scenario) -> dict[str, Any]:
    source = getattr(scenario, "source", None)
    if source is None:
        return {}
    if isinstance(source, dict):
        return source
    return {
        "path": getattr(source, "path", None),
        "sha256": getattr(source, "sha256", None),
    }


async def _yield_to_media() -> bool:
    """One turn of the event loop for everything else that is ready; True if
    a cancel arrived meanwhile (passed on after the entry is made, as one
    that arrives during the close)."""
    try:
        await asyncio.sleep(0)
    except asyncio.CancelledError:
        return True
    return False
