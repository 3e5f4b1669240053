"""YAML text to plain data, with the file line of every field path.

Steps 2 and 3 of :mod:`agent.scenario.loader`'s theory of operation:
:func:`compose` builds PyYAML's node tree with the safe constructors only
(exactly as safe as ``yaml.safe_load``), records the line of every field path
(``('steps', 2, 'at') -> 12``), refuses duplicate keys (which PyYAML would
resolve silently as "last one wins"), and then constructs the data from the
same nodes. Whatever goes wrong is a :class:`~agent.errors.ScenarioError`
naming its line and, where there is one, its field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from agent.errors import ScenarioError
from agent.scenario.duration import describe_value
from agent.scenario.fields import key_name

__all__ = ["MAX_NUMBER_CHARS", "FieldPath", "compose", "field_label"]

FieldPath = tuple[str | int, ...]

#: Longest integer literal read (sign and ``_`` included). No field takes
#: more than 20 digits; Python refuses to parse more than 4,300 anyway.
MAX_NUMBER_CHARS = 32

_MERGE_TAG = "tag:yaml.org,2002:merge"


def field_label(path: FieldPath) -> str | None:
    """``('steps', 2, 'at')`` -> ``steps[2].at``; ``()`` -> None."""
    label = ""
    for part in path:
        if isinstance(part, int):
            label += f"[{part}]"
        else:
            label += f".{part}" if label else str(part)
    return label or None


_TAG_PREFIX = "tag:yaml.org,2002:"
_WHAT_A_TAG_WANTS = {
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "timestamp": "a date or time such as 2026-01-31 or 2026-01-31T12:00:00Z",
}


class _UnreadableNode(yaml.constructor.ConstructorError):
    """A node no safe constructor could turn into a value."""

    def __init__(self, node: yaml.Node, reason: str) -> None:
        super().__init__(None, None, reason, node.start_mark)
        self.node = node
        self.reason = reason


class _ScenarioLoader(yaml.SafeLoader):
    """``SafeLoader`` whose constructor failures are YAML errors at the node.

    PyYAML's safe constructors raise ``ValueError`` (``!!int foo``, Python's
    int-str limit), ``KeyError`` (``!!bool maybe``), ``IndexError``
    (``!!int ''``), ``AttributeError`` (``!!timestamp nope``) and friends: this
    is the one place they become a located error instead of a traceback.
    """

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (
            ValueError,
            TypeError,
            LookupError,
            AttributeError,
            ArithmeticError,
        ) as exc:
            raise _UnreadableNode(node, _unreadable(node)) from exc

    def construct_yaml_int(self, node: yaml.ScalarNode) -> Any:
        value = node.value
        if isinstance(value, str) and len(value) > MAX_NUMBER_CHARS:
            raise _UnreadableNode(
                node,
                f"a {len(value)}-character number is too long "
                f"(at most {MAX_NUMBER_CHARS} characters)",
            )
        return super().construct_yaml_int(node)


_ScenarioLoader.add_constructor(_TAG_PREFIX + "int", _ScenarioLoader.construct_yaml_int)


def _unreadable(node: yaml.Node) -> str:
    tag = str(node.tag)
    short = tag.removeprefix(_TAG_PREFIX)
    shown = f"!!{short}" if tag.startswith(_TAG_PREFIX) else tag
    wanted = _WHAT_A_TAG_WANTS.get(short)
    value = node.value if isinstance(node, yaml.ScalarNode) else None
    what = describe_value(value) if value is not None else "this node"
    if wanted is None:
        return f"cannot read {what} as {shown}"
    return f"cannot read {what} as {wanted} ({shown})"


class _NoPath:
    """Merge keys and non-scalar keys have no field path."""


_NO_PATH = _NoPath()


def _key_of(loader: yaml.SafeLoader, key_node: yaml.Node) -> Any:
    """The key as Python will see it (``1`` an int, ``on`` a bool, ``~``
    None), or ``_NO_PATH``."""
    if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
        return _NO_PATH
    return loader.construct_object(key_node)


def _map_lines(
    loader: yaml.SafeLoader,
    root: yaml.Node,
    path: str,
    node_paths: dict[int, FieldPath],
) -> dict[FieldPath, int]:
    """Line (1-based) of every field path; raises on a duplicate key.

    ``node_paths`` is filled as nodes are met (``id(node)`` -> field path; a
    key node maps to its mapping's path), so a constructor failure, even one
    raised from here, can name its field.
    """
    lines: dict[FieldPath, int] = {(): root.start_mark.line + 1}
    node_paths[id(root)] = ()
    visited: set[int] = set()  # aliases share nodes; visit each once
    pending: list[tuple[yaml.Node, FieldPath]] = [(root, ())]
    while pending:
        node, node_path = pending.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        children: list[tuple[yaml.Node, FieldPath]] = []
        if isinstance(node, yaml.MappingNode):
            first_seen: dict[Any, int] = {}
            for key_node, value_node in node.value:
                node_paths.setdefault(id(key_node), node_path)
                key = _key_of(loader, key_node)
                if key is _NO_PATH:
                    continue
                line = key_node.start_mark.line + 1
                # Mapping keys are strings in a location (fields.key_name);
                # ints there are list indexes.
                child = (*node_path, key_name(key))
                if key in first_seen:
                    raise ScenarioError(
                        f"duplicate key (first set on line {first_seen[key]})",
                        path=path,
                        line=line,
                        field=field_label(child),
                    )
                first_seen[key] = line
                lines[child] = line
                node_paths.setdefault(id(value_node), child)
                children.append((value_node, child))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                child = (*node_path, index)
                lines[child] = item.start_mark.line + 1
                node_paths.setdefault(id(item), child)
                children.append((item, child))
        # Depth-first in document order, so the first duplicate found is the
        # first one in the file.
        pending.extend(reversed(children))
    return lines


def _yaml_error(exc: yaml.YAMLError, path: str) -> ScenarioError:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        what = ", ".join(part for part in (exc.context, exc.problem) if part)
        return ScenarioError(
            f"invalid YAML: {what or exc}",
            path=path,
            line=None if mark is None else mark.line + 1,
        )
    return ScenarioError(f"invalid YAML: {exc}", path=path)


def _reader_error(exc: yaml.reader.ReaderError, text: str, path: str) -> ScenarioError:
    # Raised before any node exists: PyYAML checks the whole text up front.
    character = exc.character
    code = character if isinstance(character, int) else ord(character)
    return ScenarioError(
        f"invalid YAML: character U+{code:04X} is not allowed in a YAML file "
        "(write it as an escape such as \\x00 inside double quotes)",
        path=path,
        line=text.count("\n", 0, exc.position) + 1,
    )


def _unreadable_error(
    exc: _UnreadableNode, path: str, node_paths: Mapping[int, FieldPath]
) -> ScenarioError:
    return ScenarioError(
        exc.reason,
        path=path,
        line=exc.node.start_mark.line + 1,
        field=field_label(node_paths.get(id(exc.node), ())),
    )


def compose(text: str, path: str) -> tuple[Any, dict[FieldPath, int]]:
    """``text`` as plain data, and the line of every field path in it."""
    try:
        loader = _ScenarioLoader(text)
    except yaml.reader.ReaderError as exc:
        raise _reader_error(exc, text, path) from exc
    node_paths: dict[int, FieldPath] = {}
    try:
        root = loader.get_single_node()
        if root is None:
            raise ScenarioError(
                "file is empty; a scenario needs at least name and duration",
                path=path,
            )
        # Lines first: constructing flattens merge keys in place.
        lines = _map_lines(loader, root, path, node_paths)
        data = loader.construct_document(root)
    except _UnreadableNode as exc:
        raise _unreadable_error(exc, path, node_paths) from exc
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, path) from exc
    except RecursionError as exc:
        raise ScenarioError("YAML nested too deeply", path=path) from exc
    finally:
        loader.dispose()
    return data, lines
