"""The selected candidate pair as the rest of the agent sees it (plain data)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SelectedPair:
    """The pair media flows on: local and remote transport addresses."""

    local: tuple[str, int]
    remote: tuple[str, int]
    local_type: str
    remote_type: str

    def describe(self) -> str:
        return (
            f"{self.local[0]}:{self.local[1]} ({self.local_type}) -> "
            f"{self.remote[0]}:{self.remote[1]} ({self.remote_type})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "local": f"{self.local[0]}:{self.local[1]}",
            "remote": f"{self.remote[0]}:{self.remote[1]}",
            "local_type": self.local_type,
            "remote_type": self.remote_type,
        }
