"""Read scenario files; turn every problem into one sentence naming file:line: field.

Theory of operation
-------------------
Loading is the one boundary where foreign exceptions (``OSError``,
``UnicodeDecodeError``, ``yaml.YAMLError``, ``pydantic.ValidationError``)
become :class:`~agent.errors.ScenarioError`, always ``raise ... from exc``.

1. Read bytes (their sha256 is what the report records as "what ran"), decode
   UTF-8. Only regular files, at most :data:`MAX_FILE_BYTES`: a FIFO would
   block ``check`` for ever and ``/dev/zero`` would be read until memory
   runs out.
2. *Compose* the YAML into a node tree with PyYAML's ``SafeLoader``: nodes
   still carry their line numbers, and only the safe constructors exist, so
   this is exactly as safe as ``yaml.safe_load``. A constructor that fails
   on a node (``!!int foo``, ``!!timestamp nope``, a 5,000-digit number)
   raises whatever Python raised; that becomes a YAML error at the node, so
   it too names its line and field. Steps 2 to 4 are
   :func:`agent.scenario.yaml_lines.compose`.
3. Walk the nodes once, recording the line of every field path
   (``('steps', 2, 'at') -> 12``) and rejecting duplicate keys, which YAML
   forbids but PyYAML silently resolves as "last one wins" (a scenario
   would then run with a value its reader did not see).
4. Construct plain Python data from the same nodes and validate it with
   :class:`~agent.scenario.model.Scenario`.
5. Map the first pydantic error (in file order) back to a line through the
   path map, using the nearest recorded ancestor when the field is missing
   from the file, and phrase it for a person: ``scenarios/x.yaml:12:
   steps[2].at: invalid duration '5q' (use e.g. 500ms, 5s, 2m)``.

Only the first problem of a file is reported (fix, rerun, like a compiler
stopping at its first error); the message says how many more there were.
:func:`load_scenarios` reads every file before it raises, so a suite with
several broken files lists each of them, one line per file.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from agent.errors import ScenarioError, ScenarioErrors
from agent.scenario.duration import describe_value
from agent.scenario.model import Scenario, ScenarioSource
from agent.scenario.yaml_lines import FieldPath, compose, field_label

__all__ = ["field_label", "load_scenario", "load_scenarios", "parse_scenario"]

#: File suffixes picked up when a directory is given to :func:`load_scenarios`.
SCENARIO_SUFFIXES = (".yaml", ".yml")

#: A scenario is a page of text; the largest built-in one is under 2 KiB.
MAX_FILE_BYTES = 1 << 20

_MISSING_HINTS: Mapping[FieldPath, str] = {
    ("name",): " (e.g. name: baseline)",
    ("duration",): " (e.g. duration: 10s)",
}


# --- pydantic errors -> one sentence ------------------------------------------


def _got(error: ErrorDetails) -> str:
    return f"got {describe_value(error['input'])}"


def _describe(error: ErrorDetails) -> str:
    """One lowercase clause for a pydantic error (ours are already phrased)."""
    kind, ctx = error["type"], error.get("ctx", {})
    got = _got(error)
    match kind:
        case "missing":
            return "required field is missing" + _MISSING_HINTS.get(
                tuple(error["loc"]), ""
            )
        case "extra_forbidden" | "unexpected_keyword_argument":
            return "unknown field"
        case "int_type" | "int_parsing" | "int_from_float":
            return f"expected a whole number, {got}"
        case "bool_type" | "bool_parsing":
            return f"expected true or false, {got}"
        case "float_type" | "float_parsing":
            return f"expected a number, {got}"
        case "finite_number":
            return f"expected a finite number, {got}"
        case "string_type":
            return f"expected text, {got}"
        case "list_type" | "tuple_type":
            return f"expected a list, {got}"
        case (
            "dict_type"
            | "model_type"
            | "model_attributes_type"
            | "dataclass_type"
            | "dataclass_args_type"
        ):
            return f"expected a mapping, {got}"
        case "literal_error" | "enum":
            return f"expected {ctx.get('expected')}, {got}"
        case "greater_than":
            return f"must be greater than {describe_value(ctx.get('gt'))}, {got}"
        case "greater_than_equal":
            return f"must be at least {describe_value(ctx.get('ge'))}, {got}"
        case "less_than":
            return f"must be less than {describe_value(ctx.get('lt'))}, {got}"
        case "less_than_equal":
            return f"must be at most {describe_value(ctx.get('le'))}, {got}"
        case "ip_v4_address":
            return f"expected an IPv4 address such as 127.0.0.2, {got}"
        case "string_pattern_mismatch":
            return (
                f"expected a lowercase name like nat_rebind (letters, digits, _), {got}"
            )
        case "recursion_loop":
            return "refers to itself (a YAML alias loop)"
    # Our own PydanticCustomErrors arrive phrased; an unforeseen built-in one
    # still reads as a sentence with its first letter lowered.
    message = error["msg"]
    if kind.startswith(("value_error", "assertion_error")) or message[:1].isupper():
        message = message.removeprefix("Value error, ").removeprefix(
            "Assertion failed, "
        )
        message = message[:1].lower() + message[1:]
    return message


def _line_of(loc: FieldPath, lines: Mapping[FieldPath, int]) -> int | None:
    for end in range(len(loc), -1, -1):
        line = lines.get(loc[:end])
        if line is not None:
            return line
    return None


def _validation_error(
    exc: ValidationError, path: str, lines: Mapping[FieldPath, int]
) -> ScenarioError:
    errors = exc.errors(include_url=False)

    def file_order(item: tuple[int, ErrorDetails]) -> tuple[int, int]:
        return (_line_of(tuple(item[1]["loc"]), lines) or 0, item[0])

    ordered = [error for _, error in sorted(enumerate(errors), key=file_order)]
    first = ordered[0]
    loc = tuple(first["loc"])
    message = _describe(first)
    more = len(ordered) - 1
    if more:
        message += f" ({more} more problem{'s' if more > 1 else ''} after this one)"
    return ScenarioError(
        message, path=path, line=_line_of(loc, lines), field=field_label(loc)
    )


# --- public API ----------------------------------------------------------------


def _parse(text: str, path: str, sha256: str) -> tuple[Scenario, dict[FieldPath, int]]:
    data, lines = compose(text, path)
    if not isinstance(data, dict):
        raise ScenarioError(
            "expected a mapping of scenario fields (name, duration, ...) at the "
            f"top level, got {describe_value(data)}",
            path=path,
            line=lines[()],
        )
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc, path, lines) from exc
    return scenario.with_source(ScenarioSource(path, sha256, text)), lines


def parse_scenario(text: str, path: str = "<string>") -> Scenario:
    """Validate scenario ``text``; ``path`` is only used in messages and
    provenance. The recorded sha256 is that of the UTF-8 encoded text."""
    sha256 = hashlib.sha256(text.encode()).hexdigest()
    return _parse(text, path, sha256)[0]


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _check_regular(mode: int, size: int, label: str) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "special")
        if stat.S_ISDIR(mode):
            raise ScenarioError("is a directory, not a scenario file", path=label)
        raise ScenarioError(
            f"is {kind}, not a regular file; scenarios are read from regular "
            "files only",
            path=label,
        )
    if size > MAX_FILE_BYTES:
        raise ScenarioError(
            f"file is too big ({size:,} bytes); a scenario file is at most "
            f"{MAX_FILE_BYTES // (1 << 20)} MiB",
            path=label,
        )


def _read_bytes(path: Path, label: str) -> bytes:
    """The file's bytes: a regular file of at most MAX_FILE_BYTES, or an error.

    stat() first, so a device or FIFO is never even opened (opening some
    devices has effects); then open non-blocking and fstat() the open file,
    so a file swapped for a FIFO in between cannot block us either.
    """
    try:
        info = os.stat(path)
        _check_regular(info.st_mode, info.st_size, label)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise ScenarioError("file not found", path=label) from exc
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise ScenarioError(f"cannot read file: {reason}", path=label) from exc
    try:
        info = os.fstat(fd)
        _check_regular(info.st_mode, info.st_size, label)
        # One byte more than allowed: a file growing while read is caught.
        with os.fdopen(fd, "rb", closefd=False) as file:
            raw = file.read(MAX_FILE_BYTES + 1)
        _check_regular(info.st_mode, len(raw), label)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise ScenarioError(f"cannot read file: {reason}", path=label) from exc
    finally:
        os.close(fd)
    return raw


def _read(path: Path, label: str) -> tuple[str, str]:
    raw = _read_bytes(path, label)
    try:
        # utf-8-sig: editors on Windows like to prepend a BOM.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ScenarioError(
            f"not UTF-8 text (byte 0x{raw[exc.start]:02x})", path=label, line=line
        ) from exc
    return text, hashlib.sha256(raw).hexdigest()


def _load(path: str | Path) -> tuple[Scenario, dict[FieldPath, int]]:
    label = str(path)
    text, sha256 = _read(Path(path), label)
    return _parse(text, label, sha256)


def load_scenario(path: str | Path) -> Scenario:
    """Load and validate one scenario file; every problem is a ScenarioError.

    The result's ``source`` holds the path as given, the sha256 of the file's
    bytes and its text.
    """
    return _load(path)[0]


def _expand(path: str | Path) -> list[str | Path]:
    as_path = Path(path)
    try:
        # Path.is_dir() raises on EACCES (a path under an unreadable folder);
        # reading the file then says why in one line.
        is_dir = stat.S_ISDIR(os.stat(as_path).st_mode)
    except OSError:
        is_dir = False
    if not is_dir:
        return [path]
    try:
        children = list(as_path.iterdir())
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise ScenarioError(f"cannot list directory: {reason}", path=str(path)) from exc
    found = sorted(child for child in children if child.suffix in SCENARIO_SUFFIXES)
    if not found:
        raise ScenarioError(
            f"directory holds no scenario files ({', '.join(SCENARIO_SUFFIXES)})",
            path=str(path),
        )
    return list(found)


def load_scenarios(paths: Iterable[str | Path]) -> list[Scenario]:
    """Load files in order (a directory contributes its ``*.yaml``/``*.yml``
    files, sorted). Names must be unique: reports and metrics key on them.

    Every file is read before anything is raised: one bad file is a
    :class:`ScenarioError`, several are a :class:`ScenarioErrors` listing each.
    """
    scenarios: list[Scenario] = []
    errors: list[ScenarioError] = []
    first_file: dict[str, str] = {}
    for given in paths:
        try:
            files = _expand(given)
        except ScenarioError as exc:
            errors.append(exc)
            continue
        for path in files:
            try:
                scenario, lines = _load(path)
            except ScenarioError as exc:
                errors.append(exc)
                continue
            if scenario.name in first_file:
                errors.append(
                    ScenarioError(
                        f"{scenario.name!r} is already the name of the scenario "
                        f"in {first_file[scenario.name]}",
                        path=str(path),
                        line=lines.get(("name",)),
                        field="name",
                    )
                )
                continue
            first_file[scenario.name] = str(path)
            scenarios.append(scenario)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ScenarioErrors(errors)
    return scenarios
