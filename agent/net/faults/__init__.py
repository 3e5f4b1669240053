"""Network faults as a registry: one module per fault, found by name.

Theory of operation
-------------------
As toxiproxy does it with its toxics: each fault is a small registered class
built from a declarative spec, ``{do: <name>, side: <side>, **params}`` in a
scenario file. A fault declares, once:

* ``name`` — the scenario step that starts it (``net.<x>`` acts on one side's
  own sockets, ``nat.<x>`` on the call's user-space NAT);
* ``Params`` — its parameters as a pydantic model of the strict types in
  :mod:`agent.net.faults.params` (rates 0..1, finite durations, ...);
* ``default_cause`` — the field cause it stands for unless told;
* ``summary`` — what the far end sees, in one line;
* its action — the one method of its family (:mod:`agent.net.faults.base`):
  ``build`` a datagram filter, ``route`` the side's traffic elsewhere, or
  ``act`` on the NAT.

:data:`FAULTS` maps each name to its class. The call's network
(:class:`~agent.net.network.CallNetwork`) starts a fault by looking it up;
the scenario step, its schema, ``callagent steps`` and the README's fault
table are all derived from this registry (:mod:`agent.scenario.steps_net`).

Adding a fault
--------------
One new module in this package plus its test; nothing else is edited. Every
module here is imported when the package is, so ``@register`` runs. The
minimal example is :mod:`agent.net.faults.noop` (``net.noop``), whole::

    @register
    class Noop(FilterFault[TimedParams]):
        name = "net.noop"
        Params = TimedParams
        default_cause = "noop"
        summary = "nothing changes, but a fault is on the timeline (a control)"

        def build(self, params: TimedParams, rng: random.Random) -> Passthrough:
            return Passthrough()

A fault with its own parameters subclasses a params model (``class
LossParams(SeededParams): rate: Rate``) and names it in ``Params``; any random
choice uses the ``rng`` it is given, which is seeded and recorded. Then
regenerate the README's table (``python -m agent.scenario.steps_net
README.md``); a test fails until it matches the registry.
"""

from __future__ import annotations

import importlib
import pkgutil

from agent.net.faults.base import FAULTS, Fault, FaultParams, register

__all__ = ["FAULTS", "Fault", "FaultParams", "register"]

# One module per fault: importing each runs its @register.
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
