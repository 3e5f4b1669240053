from collections.abc import Callable
from typing import Any

GUARD_IS: int
GUARD_FALSY: int
GUARD_ITEM_IS: int
PACKET_ROOM: int

def check(guards: tuple[tuple[Any, str, int, Any, Any], ...], /) -> bool: ...
def sockaddr(host: str, port: int, /) -> bytes | None: ...
def send_rtp(
    route: tuple[Any, ...],
    second_byte: int,
    seq: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    /,
) -> bool | None: ...

class Reader:
    fast: int
    ordinary: int
    route: tuple[Any, ...] | None
    def __init__(
        self,
        fd: int,
        deliver: Callable[[bytes, tuple[str, int], float, bool], None],
        resolve: Callable[[], tuple[Any, ...] | None],
        error_received: Callable[[OSError], None],
    ) -> None: ...
    def __call__(self) -> None: ...

class Group:
    def __init__(self, on_error: Callable[[BaseException, Reader], None]) -> None: ...
    def add(self, reader: Reader, /) -> None: ...
    def remove(self, fd: int, /) -> None: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...
    def __len__(self) -> int: ...
    def __call__(self) -> None: ...
