"""Drive a real headless Chromium over the DevTools protocol (CDP) with aiohttp.

No npm, selenium or playwright: Chromium is started (asyncio subprocess, under the
tiny subreaper shim ``_reaper.py``) with a throw-away profile, and pages are driven
over plain CDP websockets.  Everything binds/connects to 127.0.0.1 only.

    async with Chromium.launch() as browser:
        page = await browser.new_page("http://127.0.0.1:8080/")
        assert await page.evaluate("1 + 1") == 2
        await page.wait_for("window.done === true", timeout=5)

Guarantees:

* every await is bounded by a timeout; failures raise :class:`BrowserError`
  (timeouts raise :class:`BrowserTimeout`, which is also a ``TimeoutError``) whose
  first line is one sentence, followed by the tail of the page console if any;
* on exit (normal, exception, cancellation) every Chromium process is SIGKILLed
  and reaped (the shim is a child subreaper, so even the orphaned zygote/renderer
  processes are reaped before ``launch()`` returns, whatever PID 1 does) and the
  temporary profile is removed.  If the test process itself dies, even by SIGKILL,
  the shim sees its stdin close and does the same cleanup on its own.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import json
import math
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

__all__ = [
    "DEFAULT_ARGS",
    "EXECUTABLE_ENV",
    "SKIP_ENV",
    "BrowserError",
    "BrowserTimeout",
    "Chromium",
    "ConsoleEntry",
    "Page",
    "find_chromium",
]

#: Set to "1" to skip browser tests explicitly (see browser_fixtures.py).
SKIP_ENV = "CALLAGENT_SKIP_BROWSER"
#: Optional explicit path to the Chromium binary.
EXECUTABLE_ENV = "CALLAGENT_CHROMIUM"

# The real binary first: Debian's /usr/bin/chromium is a shell wrapper that sources
# /etc/chromium.d/* (adds --enable-remote-extensions, --load-extension=..., GPU
# flags, and its /dev/shm check is broken on hosts where findmnt prints 2 lines).
_CANDIDATES = (
    "/usr/lib/chromium/chromium",
    "/usr/bin/chromium",
    "chromium",
    "chromium-browser",
    "google-chrome-stable",
    "google-chrome",
)

#: Flags every launch gets.  ``--disable-features`` / ``--enable-features`` given in
#: ``extra_args`` are merged with these (Chromium honours only the last occurrence).
DEFAULT_ARGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",  # we run as root in CI
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers often have a 64 MB /dev/shm
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",  # else outbound connections get refused
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-breakpad",
    "--no-proxy-server",
    "--password-store=basic",
    "--mute-audio",
    # Keep timers/rendering at full speed in pages that are "hidden" (headless).
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    # Media / WebRTC.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    # Gather 127.0.0.1 host candidates too (our agent listens on 127.0.0.x).
    "--allow-loopback-in-peer-connection",
    # Plain IP host candidates instead of mDNS "<uuid>.local" names.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
)

# Always added (the harness depends on them): DevTools on loopback, random port
# (read back from <profile>/DevToolsActivePort).
_REQUIRED_ARGS: tuple[str, ...] = (
    "--headless",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)

_STARTUP_TIMEOUT = 20.0
_COMMAND_TIMEOUT = 10.0
_CLOSE_TIMEOUT = 3.0
_REAP_TIMEOUT = 10.0
_CONSOLE_TAIL = 15
_MAX_CONSOLE = 2000

# Chromium runs under this subreaper shim, which kills and reaps the whole browser
# tree (and deletes the profile) when its stdin closes, even if we die by SIGKILL.
_REAPER = Path(__file__).with_name("_reaper.py")

# Shim pids still alive; told to clean up at interpreter exit as a last resort.
_LIVE_SHIMS: set[int] = set()


@atexit.register
def _stop_leftover_shims() -> None:
    for pid in list(_LIVE_SHIMS):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    _LIVE_SHIMS.clear()


class BrowserError(Exception):
    """Chromium or a page misbehaved; ``str()`` starts with one clear sentence."""


class BrowserTimeout(BrowserError, TimeoutError):
    """A browser operation did not complete within its timeout."""


@dataclass(frozen=True)
class ConsoleEntry:
    """One captured console call, uncaught exception or browser log entry."""

    source: str  # "console", "exception" or "log"
    level: str  # "log", "info", "warning", "error", "debug", ...
    text: str

    def __str__(self) -> str:
        return f"[{self.source}:{self.level}] {self.text}"


def find_chromium() -> str | None:
    """Path of the Chromium binary to use, or None if none is installed.

    ``$CALLAGENT_CHROMIUM`` wins if set (None if it is not an executable file).
    """
    explicit = os.environ.get(EXECUTABLE_ENV)
    if explicit:
        return explicit if _is_executable(explicit) else None
    for candidate in _CANDIDATES:
        path = candidate if os.path.isabs(candidate) else shutil.which(candidate)
        if path and _is_executable(path):
            return path
    return None


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _merge_args(base: Sequence[str], extra: Iterable[str]) -> list[str]:
    """base + extra, with all --enable/--disable-features values merged into one."""
    enable, disable = "--enable-features", "--disable-features"
    features: dict[str, dict[str, None]] = {enable: {}, disable: {}}
    out: dict[str, None] = {}  # ordered set: exact duplicates dropped
    for arg in [*base, *extra]:
        name, sep, value = arg.partition("=")
        if sep and name in features:
            other = disable if name == enable else enable
            for feature in filter(None, value.split(",")):
                features[other].pop(feature, None)  # the later flag wins
                features[name][feature] = None
        else:
            out[arg] = None
    for name, values in features.items():
        if values:
            out[f"{name}={','.join(values)}"] = None
    return list(out)


async def _bounded(awaitable: Any, limit: float, what: Callable[[], str]) -> Any:
    """Await with a time limit, turning expiry into a BrowserTimeout."""
    try:
        async with asyncio.timeout(limit):
            return await awaitable
    except TimeoutError as exc:
        if isinstance(exc, BrowserTimeout):
            raise
        raise BrowserTimeout(f"{what()} did not finish within {limit:g} s.") from None


# --------------------------------------------------------------------------- CDP


class _CdpSession:
    """One CDP websocket: request/response matching plus an event callback."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        on_event: Callable[[str, dict[str, Any]], None],
    ) -> None:
        self._ws = ws
        self._on_event = on_event
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[str, asyncio.Future[dict[str, Any]]]] = {}
        self._broken: BrowserError | None = None
        self._reader = asyncio.get_running_loop().create_task(
            self._read(), name="cdp-reader"
        )

    async def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float = _COMMAND_TIMEOUT,
    ) -> dict[str, Any]:
        if self._broken is not None:
            raise BrowserError(str(self._broken))
        msg_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = (method, fut)
        try:
            payload = {"id": msg_id, "method": method, "params": params or {}}
            async with asyncio.timeout(timeout):
                await self._ws.send_str(json.dumps(payload))
                return await fut
        except TimeoutError:
            raise BrowserTimeout(
                f"DevTools command {method} got no answer within {timeout:g} s."
            ) from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise BrowserError(
                f"DevTools command {method} could not be sent: {exc}."
            ) from exc
        finally:
            self._pending.pop(msg_id, None)
            if fut.done() and not fut.cancelled():
                fut.exception()  # mark retrieved: no "never retrieved" log noise

    def fail(self, error: BrowserError) -> None:
        """Fail all pending and future commands with *error*."""
        if self._broken is None:
            self._broken = error
        for _, fut in self._pending.values():
            if not fut.done():
                fut.set_exception(error)

    async def _read(self) -> None:
        reason = "DevTools connection closed (page or browser gone)."
        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                msg_id = data.get("id")
                if msg_id is None:
                    self._on_event(data.get("method", ""), data.get("params", {}))
                    continue
                method, fut = self._pending.get(msg_id, ("", None))
                if fut is None or fut.done():
                    continue
                if "error" in data:
                    err = data["error"]
                    detail = f" ({err['data']})" if err.get("data") else ""
                    fut.set_exception(
                        BrowserError(
                            f"DevTools command {method} failed: "
                            f"{err.get('message', err)}{detail}."
                        )
                    )
                else:
                    fut.set_result(data.get("result", {}))
        except Exception as exc:  # malformed message, handler bug: fail loudly
            reason = f"DevTools connection failed: {type(exc).__name__}: {exc}."
        finally:
            self.fail(BrowserError(reason))

    async def close(self) -> None:
        self.fail(BrowserError("DevTools session was closed by the test harness."))
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await self._ws.close()
        except (TimeoutError, aiohttp.ClientError, ConnectionError):
            pass
        finally:
            self._reader.cancel()
            await asyncio.wait([self._reader], timeout=_CLOSE_TIMEOUT)


# -------------------------------------------------------------------------- Page


_WAIT_FOR_JS = """(async () => {
  const deadline = performance.now() + %(timeout_ms)d;
  const show = (v) => {
    try { const s = JSON.stringify(v); return s === undefined ? String(v) : s; }
    catch (e) { return String(v); }
  };
  let last, error = null;
  for (;;) {
    try {
      last = await (
%(predicate)s
      );
      error = null;
    }
    catch (e) { last = undefined; error = String((e && e.stack) || e); }
    if (error === null && last) {
      let value = last;
      try { JSON.stringify(last); } catch (e) { value = String(last); }
      return {ok: true, value: value};
    }
    if (performance.now() >= deadline) {
      return {ok: false, last: show(last), error: error};
    }
    await new Promise((resolve) => setTimeout(resolve, %(interval_ms)d));
  }
})()"""

_UNSERIALIZABLE: dict[str, float] = {
    "NaN": math.nan,
    "Infinity": math.inf,
    "-Infinity": -math.inf,
    "-0": -0.0,
}


class Page:
    """One browser tab with an attached CDP session. Create via Browser.new_page."""

    def __init__(self, browser: Chromium, target_id: str) -> None:
        self._browser = browser
        self.target_id = target_id
        self.url = "about:blank"
        #: Console calls, uncaught exceptions and browser log entries, in order.
        self.console: list[ConsoleEntry] = []
        self._cdp: _CdpSession | None = None
        self._loaded: set[str] = set()
        self._load_event = asyncio.Event()
        self._closed = False

    async def _attach(self, ws_url: str, limit: float) -> None:
        ws = await _bounded(
            self._browser.http.ws_connect(ws_url, max_msg_size=64 * 2**20),
            limit,
            lambda: "Connecting to the DevTools page websocket",
        )
        self._cdp = _CdpSession(ws, self._on_event)
        for method in (
            "Runtime.enable",
            "Log.enable",
            "Page.enable",
            "Inspector.enable",
        ):
            await self.send(method, timeout=limit)
        await self.send(
            "Page.setLifecycleEventsEnabled", {"enabled": True}, timeout=limit
        )

    # -- public API ----------------------------------------------------------

    async def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float = _COMMAND_TIMEOUT,
    ) -> dict[str, Any]:
        """Send a raw CDP command to this page and return its result object."""
        if self._cdp is None or self._closed:
            raise BrowserError(f"Page {self.url} is closed; cannot send {method}.")
        try:
            return await self._cdp.send(method, params, timeout=timeout)
        except BrowserError as exc:
            raise self._with_console(exc) from exc.__cause__

    async def goto(
        self,
        url: str,
        *,
        timeout: float = _COMMAND_TIMEOUT,
    ) -> None:
        """Navigate and wait until the page's load event fired."""
        try:
            async with asyncio.timeout(timeout):
                result = await self.send("Page.navigate", {"url": url}, timeout=timeout)
                if result.get("errorText"):
                    raise BrowserError(
                        f"Navigation to {url} failed: {result['errorText']}."
                    )
                self.url = url
                loader = result.get("loaderId")
                while loader is not None and loader not in self._loaded:
                    self._load_event.clear()
                    await self._load_event.wait()
        except TimeoutError as exc:
            if isinstance(exc, BrowserError):
                raise
            raise self._with_console(
                BrowserTimeout(
                    f"Page {url} did not finish loading within {timeout:g} s."
                )
            ) from None

    async def evaluate(
        self,
        expression: str,
        *,
        await_promise: bool = True,
        timeout: float = _COMMAND_TIMEOUT,
    ) -> Any:
        """Evaluate a JS expression in the page; return its value as JSON data.

        Promises are awaited (unless ``await_promise=False``).  A thrown exception
        or rejected promise raises BrowserError carrying the JS error text.
        """
        params = {
            "expression": expression,
            "returnByValue": True,
            "awaitPromise": await_promise,
            "userGesture": True,
            "replMode": False,
        }
        try:
            reply = await self.send("Runtime.evaluate", params, timeout=timeout)
        except BrowserTimeout:
            raise self._with_console(
                BrowserTimeout(
                    f"JavaScript `{_short(expression)}` did not settle within "
                    f"{timeout:g} s."
                )
            ) from None
        details = reply.get("exceptionDetails")
        if details is not None:
            raise self._with_console(
                BrowserError(
                    f"JavaScript `{_short(expression)}` threw: "
                    f"{_exception_text(details)}"
                )
            )
        return _remote_value(reply.get("result", {}))

    async def wait_for(
        self,
        predicate: str,
        *,
        timeout: float = _COMMAND_TIMEOUT,
        interval: float = 0.02,
    ) -> Any:
        """Wait until the JS expression *predicate* is truthy; return its value.

        The predicate is re-evaluated inside the page every *interval* seconds (one
        CDP round trip in total); it may be an async expression (it is awaited), and
        exceptions it throws count as "not yet" (the last one is reported on
        timeout).  Raises BrowserTimeout if it is still falsy after *timeout*.
        """
        js = _WAIT_FOR_JS % {
            "timeout_ms": int(timeout * 1000),
            "interval_ms": max(1, int(interval * 1000)),
            "predicate": predicate,
        }
        outcome = await self.evaluate(js, timeout=timeout + 2.0)
        if not isinstance(outcome, dict):
            raise BrowserError(f"wait_for got an unexpected result: {outcome!r}.")
        if outcome.get("ok"):
            return outcome.get("value")
        reason = f"last value {_short(str(outcome.get('last')), 200)}"
        if outcome.get("error"):
            reason = f"last error {_short(str(outcome['error']), 300)}"
        raise self._with_console(
            BrowserTimeout(
                f"Condition `{_short(predicate)}` still false after {timeout:g} s "
                f"({reason})."
            )
        )

    def console_text(self, last: int = _CONSOLE_TAIL) -> str:
        """The last *last* console entries, one per line (for failure messages)."""
        return "\n".join(str(entry) for entry in self.console[-last:])

    async def close(self) -> None:
        """Detach and close the tab (idempotent)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(ValueError):
            self._browser.pages.remove(self)
        try:
            if self._cdp is not None:
                await self._cdp.close()
        finally:
            await self._browser._close_target(self.target_id)

    # -- internals -----------------------------------------------------------

    def _with_console(self, exc: BrowserError) -> BrowserError:
        """*exc* with the console tail (and Chromium's fate if it died) appended."""
        message = str(exc)
        if "\nconsole (last" in message or "\nChromium exited" in message:
            return exc
        extra = ""
        code = self._browser.process.returncode
        if code is not None:
            extra += f"\nChromium exited with code {code}.\n{self._browser.log_tail()}"
        text = self.console_text()
        if text:
            extra += f"\nconsole (last {_CONSOLE_TAIL}):\n{text}"
        return type(exc)(message + extra) if extra else exc

    def _record(self, source: str, level: str, text: str) -> None:
        self.console.append(ConsoleEntry(source, level, text))
        if len(self.console) > _MAX_CONSOLE:  # keep the most recent entries
            del self.console[0]

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled":
            args = params.get("args", [])
            self._record("console", params.get("type", "log"), _format_args(args))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self._record("exception", "error", _exception_text(details))
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            text = entry.get("text", "")
            if entry.get("url"):
                text = f"{text} ({entry['url']})"
            self._record("log", entry.get("level", "info"), text)
        elif method == "Page.lifecycleEvent" and params.get("name") == "load":
            self._loaded.add(params.get("loaderId", ""))
            self._load_event.set()
        elif method in ("Inspector.targetCrashed", "Inspector.detached"):
            reason = params.get("reason", "renderer crashed")
            self._record("log", "error", f"{method}: {reason}")
            if self._cdp is not None:
                self._cdp.fail(BrowserError(f"Page {self.url} is gone ({reason})."))


def _format_args(args: list[dict[str, Any]]) -> str:
    parts = []
    for arg in args:
        if "value" in arg:
            value = arg["value"]
            parts.append(value if isinstance(value, str) else json.dumps(value))
        else:
            parts.append(
                str(
                    arg.get(
                        "description", arg.get("unserializableValue", arg.get("type"))
                    )
                )
            )
    return " ".join(parts)


def _exception_text(details: dict[str, Any]) -> str:
    exception = details.get("exception", {})
    description = exception.get("description")
    if description is None and "value" in exception:
        description = json.dumps(exception["value"])
    text = str(description or details.get("text", "unknown JavaScript exception"))
    first, *rest = text.splitlines() or [""]
    stack = [line.strip() for line in rest if line.strip().startswith("at ")][:3]
    return first.rstrip(".") + "." + (f" ({'; '.join(stack)})" if stack else "")


def _remote_value(result: dict[str, Any]) -> Any:
    if "unserializableValue" in result:
        raw = str(result["unserializableValue"])
        if raw.endswith("n"):  # BigInt
            return int(raw[:-1])
        return _UNSERIALIZABLE.get(raw, raw)
    return result.get("value")


# ------------------------------------------------------------------------ Browser


class Chromium:
    """A running headless Chromium. Use ``async with Chromium.launch() as b:``."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        workdir: Path,
        http: aiohttp.ClientSession,
    ) -> None:
        self.process = process
        self.workdir = workdir
        self.profile_dir = workdir / "profile"
        self.log_path = workdir / "chromium.log"
        self.http = http
        self.port = 0
        #: /json/version answer ("Browser", "Protocol-Version", "User-Agent", ...).
        self.version: dict[str, str] = {}
        self.pages: list[Page] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    @asynccontextmanager
    async def launch(
        cls,
        *,
        extra_args: Sequence[str] = (),
        executable: str | None = None,
        startup_timeout: float = _STARTUP_TIMEOUT,
        base_args: Sequence[str] = DEFAULT_ARGS,
    ) -> AsyncIterator[Chromium]:
        """Start Chromium; kill its process group and delete its profile on exit.

        The command line is *base_args* (default :data:`DEFAULT_ARGS`) + the flags
        the harness needs + *extra_args*; pass ``base_args`` only to experiment with
        the defaults (e.g. to see mDNS candidates).
        """
        exe = executable or find_chromium()
        if exe is None:
            raise BrowserError(
                "Chromium is not installed; run scripts/install-chromium.sh."
            )
        workdir = Path(tempfile.mkdtemp(prefix="callagent-chromium-"))
        profile = workdir / "profile"
        profile.mkdir()
        args = _merge_args(
            [*base_args, *_REQUIRED_ARGS],
            [*extra_args, f"--user-data-dir={profile}"],
        )
        process: asyncio.subprocess.Process | None = None
        http: aiohttp.ClientSession | None = None
        browser: Chromium | None = None
        try:
            log = os.open(workdir / "chromium.log", os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-I",
                    "-S",
                    str(_REAPER),
                    str(workdir),
                    exe,
                    *args,
                    "about:blank",
                    stdin=asyncio.subprocess.PIPE,  # closing it = "clean up now"
                    stdout=log,
                    stderr=log,
                    start_new_session=True,  # no terminal signals; we decide
                )
            finally:
                os.close(log)
            _LIVE_SHIMS.add(process.pid)
            http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=_COMMAND_TIMEOUT)
            )
            browser = cls(process, workdir, http)
            await browser._wait_ready(startup_timeout)
            yield browser
        finally:
            try:
                if browser is not None:
                    await browser._close_pages()
                if http is not None:
                    await http.close()
            finally:
                try:
                    if process is not None:
                        await _kill_and_reap(process, workdir)
                finally:
                    shutil.rmtree(workdir, ignore_errors=True)

    async def new_page(
        self,
        url: str = "about:blank",
        *,
        timeout: float = _COMMAND_TIMEOUT,
    ) -> Page:
        """Open a new tab, attach CDP (Runtime/Log/Page enabled), navigate to *url*."""
        info = await self._json("PUT", "/json/new?about:blank", timeout)
        page = Page(self, str(info["id"]))
        self.pages.append(page)
        await page._attach(str(info["webSocketDebuggerUrl"]), timeout)
        if url != "about:blank":
            await page.goto(url, timeout=timeout)
        return page

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of Chromium's own stdout/stderr."""
        return _tail(self.log_path, lines)

    # -- internals -----------------------------------------------------------

    async def _wait_ready(self, limit: float) -> None:
        port_file = self.profile_dir / "DevToolsActivePort"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while True:
            if self.process.returncode is not None:
                raise BrowserError(
                    f"Chromium exited with code {self.process.returncode} during "
                    f"startup.\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError, ValueError):
                lines = port_file.read_text().splitlines()
                if len(lines) >= 2:
                    self.port = int(lines[0])
                    break
            if loop.time() >= deadline:
                raise BrowserTimeout(
                    f"Chromium DevTools endpoint did not come up within {limit:g} s."
                    f"\n{self.log_tail()}"
                )
            await asyncio.sleep(0.05)
        remaining = max(1.0, deadline - loop.time())
        self.version = await self._json("GET", "/json/version", remaining)

    async def _json(self, method: str, path: str, limit: float) -> dict[str, Any]:
        url = self.endpoint + path

        async def call() -> dict[str, Any]:
            async with self.http.request(method, url) as resp:
                body = await resp.text()
                if resp.status != 200:
                    raise BrowserError(
                        f"DevTools HTTP {method} {path} answered {resp.status}: "
                        f"{_short(body)}."
                    )
                data = json.loads(body) if body.strip() else {}
                return data if isinstance(data, dict) else {"value": data}

        try:
            result: dict[str, Any] = await _bounded(
                call(), limit, lambda: f"DevTools HTTP {method} {path}"
            )
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise BrowserError(f"DevTools HTTP {method} {path} failed: {exc}.") from exc
        return result

    async def _close_target(self, target_id: str) -> None:
        if self.process.returncode is not None:
            return
        with contextlib.suppress(BrowserError):
            await self._json("GET", f"/json/close/{target_id}", _CLOSE_TIMEOUT)

    async def _close_pages(self) -> None:
        pages, self.pages = self.pages, []
        for page in pages:
            page._closed = True
            if page._cdp is not None:
                with contextlib.suppress(Exception):
                    await page._cdp.close()


async def _kill_and_reap(process: asyncio.subprocess.Process, workdir: Path) -> None:
    """Make the shim kill and reap the whole browser tree; wait until it has."""
    try:
        if process.stdin is not None:
            process.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            process.terminate()  # SIGTERM: the shim SIGKILLs and reaps the browser
        try:
            async with asyncio.timeout(_REAP_TIMEOUT):
                await process.wait()
            return
        except TimeoutError:
            pass
        # The shim is stuck (should not happen): kill everything we know of.
        with contextlib.suppress(OSError, ValueError):
            os.killpg(int((workdir / "child.pid").read_text()), signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_REAP_TIMEOUT):
                await process.wait()
        raise BrowserError(
            f"Chromium's reaper (pid {process.pid}) did not finish within "
            f"{_REAP_TIMEOUT:g} s; browser processes may be left over."
        )
    finally:
        _LIVE_SHIMS.discard(process.pid)


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no Chromium log)"
    kept = [line for line in text.splitlines() if "dbus" not in line.lower()]
    return "Chromium log tail:\n" + "\n".join(kept[-lines:])
