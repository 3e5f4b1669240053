"""Reading the ``conntrack`` tool's output: pure parsing, no I/O.

A line of ``conntrack -L`` is the original tuple then the reply tuple::

    udp 17 28 src=198.18.0.2 dst=198.19.0.2 sport=40000 dport=5000 [UNREPLIED] \
        src=198.19.0.2 dst=198.19.0.1 sport=5000 dport=40000 mark=0 use=1

For a NATed flow the reply tuple's destination is the public endpoint: the
mapping the far end sees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ConntrackEntry", "parse_conntrack", "parse_deleted_count"]

Address = tuple[str, int]
_DELETED = re.compile(r"(\d+) flow entries have been deleted")


@dataclass(frozen=True)
class ConntrackEntry:
    protocol: str
    timeout_s: int
    original_src: Address  # the inside endpoint (for an outbound flow)
    original_dst: Address
    reply_src: Address
    reply_dst: Address  # the public endpoint the NAT mapped it to
    replied: bool  # seen traffic both ways (not [UNREPLIED])

    @property
    def public(self) -> Address:
        return self.reply_dst


def parse_conntrack(text: str) -> list[ConntrackEntry]:
    entries: list[ConntrackEntry] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3 or not fields[1].isdigit() or not fields[2].isdigit():
            continue
        tuples: list[dict[str, str]] = []
        for field in fields[3:]:
            key, sep, value = field.partition("=")
            if not sep or key not in ("src", "dst", "sport", "dport"):
                continue
            if key == "src":
                tuples.append({})
            if tuples:
                tuples[-1][key] = value
        if len(tuples) < 2 or any(len(t) < 4 for t in tuples[:2]):
            continue  # not a port-carrying protocol (icmp) or a format we do not know
        orig, reply = tuples[0], tuples[1]
        entries.append(
            ConntrackEntry(
                protocol=fields[0],
                timeout_s=int(fields[2]),
                original_src=(orig["src"], int(orig["sport"])),
                original_dst=(orig["dst"], int(orig["dport"])),
                reply_src=(reply["src"], int(reply["sport"])),
                reply_dst=(reply["dst"], int(reply["dport"])),
                replied="[UNREPLIED]" not in fields,
            )
        )
    return entries


def parse_deleted_count(stderr: str) -> int | None:
    """How many entries ``conntrack -D`` says it deleted, if it says."""
    match = _DELETED.search(stderr)
    return int(match[1]) if match else None
