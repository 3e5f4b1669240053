"""Directions in offer/answer (RFC 3264 §6.1, JSEP §5.3.1), pure."""

from __future__ import annotations

import pytest

from agent.stack.sdp import answered_direction, intersect


@pytest.mark.parametrize(
    ("a", "b", "both"),
    [
        ("sendrecv", "sendrecv", "sendrecv"),
        ("sendrecv", "recvonly", "recvonly"),
        ("sendonly", "recvonly", "inactive"),
        ("sendrecv", "inactive", "inactive"),
        ("sendonly", "sendrecv", "sendonly"),
    ],
)
def test_intersect_allows_what_both_allow(a: str, b: str, both: str) -> None:
    assert intersect(a, b) == both == intersect(b, a)


@pytest.mark.parametrize(
    ("offered", "answered", "ours"),
    [
        ("sendrecv", "sendrecv", "sendrecv"),
        ("sendrecv", "recvonly", "sendonly"),  # the far end will not send
        ("sendrecv", "sendonly", "recvonly"),
        ("sendrecv", "inactive", "inactive"),
        # a hold we asked for, and its resume
        ("recvonly", "sendonly", "recvonly"),
        ("inactive", "inactive", "inactive"),
        ("sendonly", "recvonly", "sendonly"),
    ],
)
def test_an_answer_settles_our_direction(
    offered: str, answered: str, ours: str
) -> None:
    assert answered_direction(offered, answered) == ours
