"""Scenarios: load and validate scenario files, the step registry, verdicts.

``duration`` (time spans as files write them) <- ``steps`` (the registry of
timeline actions) <- ``model`` (validated scenario data) <- ``loader`` (files
to models, every problem one sentence) and ``expect`` (a call's report against
the expectations). All of these are pure; the runner drives live calls.
"""
