"""The only package that touches aiortc/aioice internals (see DESIGN.md).

Start at :mod:`agent.stack.peer` (the facade) and its table of modules. Pinned
private names are in :mod:`agent.stack.pins`, checked by the tests only (not at
import).
"""
