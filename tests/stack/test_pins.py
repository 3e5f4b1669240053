"""Every aiortc/aioice private name agent/stack uses still exists."""

from agent.stack.pins import PINS, check_pins


def test_every_pinned_private_name_exists() -> None:
    assert check_pins() == []


def test_pins_cover_the_names_the_stack_reads() -> None:
    # A pin list that silently shrank would make the check above pass vacuously.
    names = {pin.name for pin in PINS}
    assert {
        "_nominated",
        "_connection",
        "_create_ssl_context",
        "SRTP_PROFILES",
    } <= names
