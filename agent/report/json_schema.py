"""The report's JSON Schema, generated from the typed entries.

``docs/report.schema.json`` is this module's output, committed so that users
can validate a report without callagent; a test fails when the two differ.
Regenerate it after changing :mod:`agent.report.entries` or
:mod:`agent.observe.events`::

    python -m agent.report.json_schema > docs/report.schema.json
"""

from __future__ import annotations

import json

from pydantic import TypeAdapter

from agent.observe.events import JsonObject
from agent.report.entries import Report

SCHEMA_ID = "https://callagent.invalid/report.schema.json"


def report_schema() -> JsonObject:
    """JSON Schema (draft 2020-12) of a version-1 report."""
    schema: JsonObject = TypeAdapter(Report).json_schema(mode="serialization")
    for definition in [schema, *schema.get("$defs", {}).values()]:
        properties = definition.get("properties", {})
        # A tag (an event's ``type``, ``version``) has a default in Python,
        # but it is always written: readers may rely on it.
        tags = [name for name, prop in properties.items() if "const" in prop]
        if tags:
            definition["required"] = sorted({*definition.get("required", []), *tags})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "callagent report, version 1",
        **schema,
    }


def schema_text() -> str:
    return json.dumps(report_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(schema_text(), end="")
