"""Every aiortc/aioice/pylibsrtp name ``agent/stack`` relies on beyond their
public API.

aiortc, aioice and pylibsrtp are pinned exactly in pyproject.toml because
``agent/stack`` reaches into them. :data:`PINS` lists each name it uses that
an upgrade could move without notice:

* private names (leading underscore) it reads, writes or calls on the
  libraries' objects, e.g. ``Connection._nominated``;
* names imported from their internal modules, i.e. anything not in the
  package's top-level ``__all__`` (``aioice.ice.server_reflexive_candidate``,
  ``aiortc.rtcdtlstransport.certificate_digest``, the ``aiortc.sdp`` module and
  the names used from it);
* hooks the library calls on our objects: the methods our subclasses override
  (``Connection.query_consent``…) and the handlers we replace on its objects
  (``StunProtocol.datagram_received``).

When are they checked? **Only by the tests**, never at import:
``tests/stack/test_pins.py`` runs :func:`check_pins` (each pinned name still
exists in the installed versions) and :func:`unpinned_names` (an AST scan of
every module of ``agent/stack`` for the uses above, failing on any that is not
pinned), and fails on pins no module uses any more. An import-time check would
make a version mismatch a traceback in every command and slow every start; the
CI runs the tests on the pinned versions instead.

Matching is by name (the scan cannot know an object's type): a name found by the
scan is covered when some pin carries that name.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path

PINNED_VERSIONS = {"aiortc": "1.16.0", "aioice": "0.13.0", "pylibsrtp": "1.0.0"}
LIBRARIES = ("aiortc", "aioice", "pylibsrtp")
STACK_DIR = Path(__file__).parent


@dataclass(frozen=True)
class Pin:
    owner: str  # "module:Class" or "module"
    name: str
    kind: str  # "attr" (set by the class), "method", "class", "func", "const", "module"
    why: str


_ICE = "aioice.ice:Connection"
_PAIR = "aioice.ice:CandidatePair"
_STUN_PROTOCOL = "aioice.ice:StunProtocol"
_CERT = "aiortc.rtcdtlstransport:RTCCertificate"

PINS: tuple[Pin, ...] = (
    # aioice.Connection: private state we read or write
    Pin(_ICE, "_local_candidates_start", "attr", "gather on chosen addresses"),
    Pin(_ICE, "_local_candidates", "attr", "gather on chosen addresses"),
    Pin(_ICE, "_local_candidates_end", "attr", "gather on chosen addresses"),
    Pin(_ICE, "_components", "attr", "gather per component"),
    Pin(_ICE, "_nominated", "attr", "selected pair per component"),
    Pin(_ICE, "_protocols", "attr", "sockets to filter"),
    Pin(_ICE, "_check_list", "attr", "valid pairs to follow a far end that moved"),
    Pin(_ICE, "_closing", "attr", "no pair switch when closing"),
    Pin(_ICE, "_check_list_done", "attr", "no ICE failure held once done"),
    Pin(_ICE, "_tie_breaker", "attr", "same tie-breaker per generation"),
    # aioice.Connection: hooks it calls on our subclass (overridden)
    Pin(_ICE, "gather_candidates", "method", "gather on chosen addresses only"),
    Pin(_ICE, "query_consent", "method", "RFC 7675 consent, expiry reported"),
    Pin(_ICE, "request_received", "method", "liveness stamp"),
    Pin(_ICE, "check_complete", "method", "selected-pair change hook"),
    Pin(_ICE, "data_received", "method", "inbound wire tap"),
    Pin(_ICE, "_check_list_maybe_fail", "method", "ICE failure held while checks due"),
    Pin(_ICE, "sendto", "method", "outbound wire tap (and the socket's send)"),
    # aioice.Connection: methods we call that are not documented API
    Pin(_ICE, "build_request", "method", "consent requests"),
    Pin(_ICE, "get_component_candidates", "method", "bind host sockets"),
    Pin(_ICE, "_remote_candidates_expected", "method", "when aioice would fail ICE"),
    # aioice.Connection.connect() redone without its 20 ms tick (iceconnect.py)
    Pin(_ICE, "connect", "method", "checks end when the check list does"),
    Pin("aioice.ice", "ICE_COMPLETED", "const", "check list outcome"),
    Pin(_ICE, "_check_list_state", "attr", "check list outcome, awaited"),
    Pin(_ICE, "_check_periodic", "method", "start the next ordinary check"),
    Pin(_ICE, "_remote_candidates", "attr", "form the candidate pairs"),
    Pin(_ICE, "_pair_remote_candidate", "method", "form the candidate pairs"),
    Pin(_ICE, "_unfreeze_initial", "method", "initial pair states"),
    Pin(_ICE, "_early_checks", "attr", "checks received before connect()"),
    Pin(_ICE, "_early_checks_done", "attr", "checks received before connect()"),
    Pin(_ICE, "_query_consent_task", "attr", "consent started on success"),
    # aioice internals: candidate pairs and the per-socket protocol
    Pin("aioice.ice", "CandidatePair", "class", "valid and selected pairs"),
    Pin(_PAIR, "local_addr", "method", "describe selected pair"),
    Pin(_PAIR, "remote_addr", "method", "describe selected pair"),
    Pin(_STUN_PROTOCOL, "datagram_received", "method", "replaced: socket filter"),
    Pin(
        _STUN_PROTOCOL,
        "connection_lost",
        "method",
        "wrapped: close the recvmsg socket (kernel receive timestamps)",
    ),
    Pin(_STUN_PROTOCOL, "transport", "attr", "its send replaced: socket filter"),
    Pin(_STUN_PROTOCOL, "local_candidate", "attr", "base of a srflx candidate"),
    Pin("aioice.ice", "server_reflexive_candidate", "func", "srflx behind the lab NAT"),
    Pin("aioice.ice", "StunProtocol", "class", "host sockets opened in a lab netns"),
    Pin("aioice", "stun", "module", "STUN messages, transaction errors"),
    Pin("aioice.stun", "TransactionError", "class", "a consent check unanswered"),
    Pin("aioice.stun", "Message", "class", "type of a received check"),
    # aiortc ORTC objects
    Pin(
        "aiortc.rtcicetransport:RTCIceGatherer",
        "_connection",
        "attr",
        "swap in AgentIceConnection",
    ),
    # DTLS: our own associations on aiortc's certificate
    Pin(_CERT, "_create_ssl_context", "method", "SSL context of a DTLS association"),
    Pin(_CERT, "_cert", "attr", "validity window"),
    Pin("aiortc.rtcdtlstransport", "SRTP_PROFILES", "const", "SRTP profiles"),
    Pin("aiortc.rtcdtlstransport", "certificate_digest", "func", "fingerprint check"),
    # SDP: aiortc's grammar
    Pin("aiortc", "sdp", "module", "SDP grammar"),
    Pin("aiortc.sdp", "SessionDescription", "class", "parse and write SDP"),
    Pin("aiortc.sdp", "MediaDescription", "class", "parse and write SDP"),
    Pin("aiortc.sdp", "GroupDescription", "class", "BUNDLE and WMS groups"),
    Pin("aiortc.sdp", "SsrcDescription", "class", "a=ssrc of our stream"),
    Pin("aiortc.sdp", "candidate_from_sdp", "func", "trickled candidates"),
    Pin("aiortc.sdp", "candidate_to_sdp", "func", "sdpfrag candidates"),
    Pin("aiortc.rtcrtpparameters", "RTCRtpReceiveParameters", "class", "receiver"),
    Pin("aiortc.rtcrtpparameters", "RTCRtpDecodingParameters", "class", "receiver"),
    # RTP: packets, header extensions, Opus, the jitter buffer's frame
    Pin("aiortc.rtp", "AnyRtcpPacket", "const", "RTCP packet type"),
    Pin("aiortc.rtp", "RtcpSenderInfo", "class", "sender reports"),
    Pin("aiortc.rtp", "RtcpSrPacket", "class", "sender reports"),
    Pin("aiortc.rtp", "RtcpPacket", "class", "parse received RTCP (BYE)"),
    Pin("aiortc.rtp", "RtcpByePacket", "class", "a far end's BYE ends its media"),
    Pin("aiortc.codecs.opus", "OpusDecoder", "class", "decode received audio"),
    Pin("aiortc.jitterbuffer", "JitterFrame", "class", "decoder input"),
    # SRTP: libsrtp through pylibsrtp's binding, on a Session's own buffer
    Pin("pylibsrtp", "_binding", "module", "libsrtp's compiled binding"),
    Pin("pylibsrtp._binding", "lib", "const", "srtp_protect/unprotect calls"),
    Pin("pylibsrtp._binding", "ffi", "const", "the length cell"),
    Pin("pylibsrtp", "ERRORS", "const", "libsrtp's status texts"),
    Pin("pylibsrtp", "SRTP_MAX_TRAILER_LEN", "const", "room for the SRTP tag"),
    Pin("pylibsrtp", "SRTP_MAX_SRTCP_TRAILER_LEN", "const", "room for SRTCP"),
    Pin("pylibsrtp:Session", "_srtp", "attr", "the srtp_t to call with"),
    Pin("pylibsrtp:Session", "_cdata", "attr", "the packet buffer (C side)"),
    Pin("pylibsrtp:Session", "_buffer", "attr", "the packet buffer (Python side)"),
)


def _resolve(owner: str) -> object:
    module_name, _, class_name = owner.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, class_name) if class_name else module


def check_pins() -> list[str]:
    """Return one message per pinned name that is missing (empty when all hold)."""
    problems: list[str] = []
    for package, version in PINNED_VERSIONS.items():
        found = getattr(importlib.import_module(package), "__version__", None)
        if found != version:
            problems.append(
                f"{package} is {found}, agent/stack is written for {version}"
            )
    for pin in PINS:
        try:
            owner = _resolve(pin.owner)
        except (ImportError, AttributeError) as exc:
            problems.append(f"{pin.owner} not importable: {exc}")
            continue
        if pin.kind == "attr":
            if not _sets_attribute(owner, pin.name):
                problems.append(f"{pin.owner}.{pin.name} is no longer set ({pin.why})")
        elif pin.kind == "module":
            if not inspect.ismodule(getattr(owner, pin.name, None)):
                problems.append(f"{pin.owner}.{pin.name} is gone ({pin.why})")
        elif not hasattr(owner, pin.name):
            problems.append(f"{pin.owner}.{pin.name} is gone ({pin.why})")
    return problems


@functools.cache
def _source(obj: object) -> str:
    try:
        return inspect.getsource(obj)  # type: ignore[arg-type]
    except (OSError, TypeError):
        return ""


def _sets_attribute(cls: object, name: str) -> bool:
    """Whether ``cls`` (or a base) assigns ``self.<name>``, or its module assigns
    ``<object>.<name>`` (aioice sets ``protocol.local_candidate`` from outside)."""
    if not inspect.isclass(cls):
        return False
    for klass in inspect.getmro(cls):
        source = _source(klass)
        if f"self.{name} " in source or f"self.{name}:" in source:
            return True
    module = inspect.getmodule(cls)
    return module is not None and f".{name} = " in _source(module)


# -- the scan ------------------------------------------------------------------
@dataclass(frozen=True)
class Use:
    """One use of a library name in ``agent/stack`` that needs a pin."""

    path: str
    line: int
    name: str
    how: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.name} ({self.how})"


def _library_exports() -> set[str]:
    exports: set[str] = set()
    for package in LIBRARIES:
        exports.update(getattr(importlib.import_module(package), "__all__", ()))
    return exports


def _is_library(module: str | None) -> bool:
    return module is not None and module.split(".")[0] in LIBRARIES


class _Scan(ast.NodeVisitor):
    """Finds, in one module, the library names that need pins (see above)."""

    def __init__(self, path: str, ours: set[str], exports: set[str]) -> None:
        self.path = path
        self.ours = ours
        self.exports = exports
        self.uses: list[Use] = []
        #: local name -> library object it was imported as
        self.imported: dict[str, object] = {}
        self._bases: list[list[type]] = []

    def _use(self, node: ast.AST, name: str, how: str) -> None:
        self.uses.append(Use(self.path, getattr(node, "lineno", 0), name, how))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if _is_library(alias.name):
                module = importlib.import_module(alias.name)
                self.imported[alias.asname or alias.name.split(".")[0]] = module

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if not _is_library(node.module):
            return
        assert node.module is not None
        module = importlib.import_module(node.module)
        for alias in node.names:
            value = getattr(module, alias.name, None)
            self.imported[alias.asname or alias.name] = value
            internal = "." in node.module or alias.name not in self.exports
            if alias.name.startswith("_") or internal:
                self._use(node, alias.name, f"imported from {node.module}")

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        bases = [self._library_class(b) for b in node.bases]
        library_bases = [b for b in bases if b is not None]
        for item in node.body:
            if library_bases and isinstance(
                item, ast.FunctionDef | ast.AsyncFunctionDef
            ):
                if item.name.startswith("__"):
                    continue
                if any(hasattr(b, item.name) for b in library_bases):
                    self._use(item, item.name, "overrides a library method")
        self._bases.append(library_bases)
        self.generic_visit(node)
        self._bases.pop()

    def _library_class(self, node: ast.expr) -> type | None:
        value: object = None
        if isinstance(node, ast.Name):
            value = self.imported.get(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            value = getattr(self.imported.get(node.value.id), node.attr, None)
        return value if inspect.isclass(value) else None

    def visit_Attribute(self, node: ast.Attribute) -> None:
        name = node.attr
        target = node.value
        if isinstance(target, ast.Name) and inspect.ismodule(
            self.imported.get(target.id)
        ):
            module = self.imported[target.id]
            assert inspect.ismodule(module)
            if module.__name__ not in LIBRARIES or name not in self.exports:
                self._use(node, name, f"from module {module.__name__}")
        elif isinstance(target, ast.Name) and target.id == "self":
            bases = self._bases[-1] if self._bases else []
            if name.startswith("_") and not name.startswith("__"):
                if any(_sets_attribute(b, name) or hasattr(b, name) for b in bases):
                    self._use(node, name, "library's private attribute on self")
        elif name.startswith("_") and not name.startswith("__"):
            if name not in self.ours:
                self._use(node, name, "private attribute of a library object")
        if (
            isinstance(node.ctx, ast.Store)
            and not (isinstance(target, ast.Name) and target.id == "self")
            and name in _library_methods()
        ):
            self._use(node, name, "replaces a library object's method")
        self.generic_visit(node)


_METHODS: set[str] = set()


def _library_methods() -> set[str]:
    """Names of the methods of every class in the library modules we import."""
    if not _METHODS:
        for module_name in ("aioice.ice", "aioice.stun", "aiortc.rtcdtlstransport"):
            module = importlib.import_module(module_name)
            for _, cls in inspect.getmembers(module, inspect.isclass):
                _METHODS.update(n for n, v in vars(cls).items() if callable(v))
    return _METHODS


def _defined_here(trees: list[ast.Module]) -> set[str]:
    """Names ``agent/stack`` defines itself: functions, methods, attributes it
    assigns on ``self``, class-level names."""
    ours: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                ours.add(node.name)
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.AnnAssign) and isinstance(
                        item.target, ast.Name
                    ):
                        ours.add(item.target.id)
                    elif isinstance(item, ast.Assign):
                        ours.update(
                            t.id for t in item.targets if isinstance(t, ast.Name)
                        )
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
            ):
                ours.add(node.attr)
    return ours


def library_uses(directory: Path = STACK_DIR) -> list[Use]:
    """Every use in ``directory``'s modules of a library name that needs a pin."""
    paths = sorted(directory.glob("*.py"))
    trees = [ast.parse(p.read_text(), str(p)) for p in paths]
    ours = _defined_here(trees)
    exports = _library_exports()
    uses: list[Use] = []
    for path, tree in zip(paths, trees, strict=True):
        scan = _Scan(path.name, ours, exports)
        scan.visit(tree)
        uses.extend(scan.uses)
    return uses


def unpinned_names(directory: Path = STACK_DIR) -> list[Use]:
    """The uses :func:`library_uses` finds that no pin covers."""
    pinned = {pin.name for pin in PINS}
    return [use for use in library_uses(directory) if use.name not in pinned]


def _identifiers(directory: Path) -> set[str]:
    names: set[str] = set()
    for path in directory.glob("*.py"):
        if path.name == Path(__file__).name:
            continue  # the pins themselves do not count as uses
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, ast.alias):
                names.add(node.asname or node.name)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names.add(node.name)
    return names


def stale_pins(directory: Path = STACK_DIR) -> list[Pin]:
    """Pins whose name no module of ``directory`` mentions any more."""
    used = _identifiers(directory)
    return [pin for pin in PINS if pin.name not in used]
