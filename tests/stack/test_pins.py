"""The pins of agent/stack: every library name it relies on beyond the public
API is pinned, every pin still holds in the installed versions, none is stale."""

from __future__ import annotations

from pathlib import Path

from agent.stack.pins import (
    PINS,
    STACK_DIR,
    check_pins,
    library_uses,
    stale_pins,
    unpinned_names,
)


def test_every_pinned_name_exists_in_the_installed_versions() -> None:
    assert check_pins() == []


def test_every_library_name_the_stack_uses_is_pinned() -> None:
    unpinned = [str(use) for use in unpinned_names()]
    assert unpinned == [], "pin these in agent/stack/pins.py:\n" + "\n".join(unpinned)


def test_no_pin_is_stale() -> None:
    assert [f"{p.owner}.{p.name}" for p in stale_pins()] == []


def test_pins_cover_the_names_the_issue_named() -> None:
    # A scan that silently stopped finding things would pass the test above
    # vacuously: these uses are known to exist in agent/stack today.
    found = {use.name for use in library_uses()}
    assert {
        "_nominated",
        "_connection",
        "_create_ssl_context",
        "_tie_breaker",
        "SRTP_PROFILES",
        "server_reflexive_candidate",
        "certificate_digest",
        "datagram_received",
        "query_consent",
    } <= found
    assert "RTCRtpReceiver" not in {pin.owner.partition(":")[2] for pin in PINS}


def test_the_scan_catches_each_kind_of_unpinned_use(tmp_path: Path) -> None:
    (tmp_path / "sneaky.py").write_text(
        "import aioice\n"
        "from aioice.ice import _private_helper, candidate_foundation\n"
        "from aiortc import sdp\n"
        "\n"
        "class Mine(aioice.Connection):\n"
        "    def _check_list_maybe_complete(self):\n"
        "        return self._remote_candidates_end\n"
        "\n"
        "def poke(connection, protocol):\n"
        "    protocol.error_received = print\n"
        "    sdp.parameters_from_sdp\n"
        "    return connection._nominating\n"
    )
    names = {use.name: use.how for use in unpinned_names(tmp_path)}
    assert names == {
        "_private_helper": "imported from aioice.ice",
        "candidate_foundation": "imported from aioice.ice",
        "_check_list_maybe_complete": "overrides a library method",
        "_remote_candidates_end": "library's private attribute on self",
        "error_received": "replaces a library object's method",
        "parameters_from_sdp": "from module aiortc.sdp",
        "_nominating": "private attribute of a library object",
    }


def test_no_stack_module_is_over_500_lines() -> None:
    # STYLE.md: one concern per module, ~150-500 lines; a module that grows past
    # that is doing two things.
    sizes = {
        path.name: len(path.read_text().splitlines()) for path in STACK_DIR.glob("*.py")
    }
    assert {name: n for name, n in sizes.items() if n > 500} == {}
