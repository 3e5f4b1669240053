"""Headless browsers driven over their own debugging protocols, with aiohttp.

No npm, selenium, playwright or geckodriver: Chromium speaks the DevTools
protocol (CDP) on ``--remote-debugging-port``, Firefox WebDriver BiDi on its
own ``--remote-debugging-port``. Each browser runs in its own session (process
group) with a throw-away profile, bound to 127.0.0.1; :meth:`Browser.close`
kills the group and deletes the profile, whatever state it is in.

What the product needs is small: navigate to the page callagent serves, and
evaluate an expression there (awaited; its value comes back as JSON, so both
protocols return the same Python data).

Debugging: with ``CALLAGENT_BROWSER_LOGS=DIR`` in the environment each
browser writes its own WebRTC logs into DIR, kept after the call (Firefox:
``MOZ_LOG`` with signalling, JSEP, nICEr and mtransport at debug level, one
file per process; Chromium: ``--enable-logging`` with verbose ``p2p``/``pc``
modules). Off by default: they are large and slow the browser down.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from agent.errors import CallError

__all__ = ["Browser", "BrowserError", "Chromium", "Firefox", "launch"]

#: environment variable naming a directory for the browsers' own debug logs
LOG_DIR_ENV = "CALLAGENT_BROWSER_LOGS"
#: what Firefox logs then: offer/answer, ICE (nICEr), DTLS and SRTP flows
FIREFOX_LOG_MODULES = "timestamp,signaling:5,jsep:5,webrtc_trace:5,nicer:5,mtransport:5"

STARTUP_TIMEOUT_S = 30.0
COMMAND_TIMEOUT_S = 15.0

CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium")
FIREFOX_CANDIDATES = ("/usr/lib/firefox-esr/firefox-esr", "/usr/bin/firefox-esr")
INSTALL = "scripts/install-browsers.sh installs it (Debian chromium / firefox-esr)"

CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-extensions",
    "--mute-audio",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    # Loopback host candidates, as plain IPs (not mDNS names): the agent is on
    # 127.0.0.x.
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)

#: Firefox needs these to call at all headless: a fake microphone without a
#: prompt, plain host addresses and loopback candidates (issue 13).
FIREFOX_PREFS = {
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    "media.peerconnection.ice.obfuscate_host_addresses": False,
    "media.peerconnection.ice.loopback": True,
    "media.autoplay.default": 0,
    "browser.shell.checkDefaultBrowser": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "app.update.disabledForTesting": True,
    "remote.prefs.recommended": True,
}


class BrowserError(CallError):
    """The browser would not start, or its page failed; one sentence."""


def find(candidates: tuple[str, ...]) -> str | None:
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Browser(abc.ABC):
    """One running headless browser with one page."""

    name: str

    def __init__(self, process: asyncio.subprocess.Process, workdir: Path) -> None:
        self.process = process
        self.workdir = workdir
        self.http = aiohttp.ClientSession()
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.version = ""
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None

    @abc.abstractmethod
    async def navigate(self, url: str) -> None: ...

    @abc.abstractmethod
    async def evaluate(self, expression: str, limit: float = COMMAND_TIMEOUT_S) -> Any:
        """The value of the (awaited) JavaScript ``expression``, via JSON."""

    def _json_expression(self, expression: str) -> str:
        # The same JSON round trip for both protocols: no remote-object trees.
        return f"(async () => JSON.stringify(await ({expression})))()"

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = (self.workdir / "browser.log").read_text(errors="replace")
        except OSError:
            return ""
        kept = [line for line in text.splitlines() if line.strip()]
        return " | ".join(kept[-lines:])

    async def _connect(self, url: str) -> None:
        self.ws = await self.http.ws_connect(url, max_msg_size=64 * 2**20)
        self._reader = asyncio.create_task(self._read(), name=f"{self.name}-reader")

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for message in self.ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(message.data)
                future = self._pending.pop(data.get("id", -1), None)
                if future is not None and not future.done():
                    future.set_result(data)
        finally:
            gone = BrowserError(f"{self.name} closed its debugging connection")
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(gone)

    async def _send(
        self, payload: dict[str, Any], limit: float = COMMAND_TIMEOUT_S
    ) -> dict[str, Any]:
        if self.ws is None or self.ws.closed:
            raise BrowserError(f"{self.name} is not connected")
        number = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending[number] = future
        try:
            await self.ws.send_str(json.dumps({"id": number, **payload}))
            return await asyncio.wait_for(future, limit)
        except TimeoutError:
            what = payload.get("method", "command")
            raise BrowserError(
                f"{self.name}: {what} got no answer within {limit:g} s"
            ) from None
        finally:
            self._pending.pop(number, None)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        with contextlib.suppress(Exception):
            if self.ws is not None:
                await asyncio.wait_for(self.ws.close(), 2)
        await self.http.close()
        # The browser's own group: renderers and content processes go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), 10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def debug_log_path(browser: str) -> Path | None:
    """Where this launch's own debug log goes, when the user asked for one."""
    directory = os.environ.get(LOG_DIR_ENV)
    if not directory:
        return None
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BrowserError(f"{LOG_DIR_ENV}={directory}: {exc.strerror}") from exc
    # One name per launch: a matrix launches a browser per call.
    stamp = time.strftime("%Y%m%dT%H%M%S")
    return path / f"{browser}-{stamp}-{os.getpid()}-{next(_LAUNCHES)}.log"


_LAUNCHES = itertools.count(1)


async def _start(
    exe: str, args: list[str], workdir: Path, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    log = os.open(workdir / "browser.log", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        return await asyncio.create_subprocess_exec(
            exe,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # one group to kill
            env={**os.environ, "MOZ_HEADLESS": "1", **(env or {})},
        )
    finally:
        os.close(log)


async def _wait_for(what: str, browser: Browser, probe: Any) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_TIMEOUT_S
    while True:
        if browser.process.returncode is not None:
            raise BrowserError(
                f"{browser.name} exited with code {browser.process.returncode} at "
                f"start: {_short(browser.log_tail())}"
            )
        found = probe()
        if found is not None:
            return found
        if loop.time() >= deadline:
            raise BrowserError(
                f"{browser.name}: {what} not up within {STARTUP_TIMEOUT_S:g} s: "
                f"{_short(browser.log_tail())}"
            )
        await asyncio.sleep(0.05)


class Chromium(Browser):
    """Chromium over CDP: one tab, ``Runtime.evaluate``."""

    name = "chromium"

    @classmethod
    async def launch(cls) -> Chromium:
        exe = find(CHROMIUM_CANDIDATES)
        if exe is None:
            raise BrowserError(f"Chromium is not installed; {INSTALL}")
        workdir = Path(tempfile.mkdtemp(prefix="callagent-chromium-"))
        profile = workdir / "profile"
        args = [*CHROMIUM_ARGS, f"--user-data-dir={profile}"]
        debug_log = debug_log_path("chromium")
        if debug_log is not None:
            args += [
                "--enable-logging",
                f"--log-file={debug_log}",
                "--vmodule=*/webrtc/*=1,*/p2p/*=1,*/pc/*=1",
            ]
        args.append("about:blank")
        browser = cls(await _start(exe, args, workdir), workdir)
        try:
            port_file = profile / "DevToolsActivePort"

            def port() -> int | None:
                with contextlib.suppress(OSError, ValueError, IndexError):
                    return int(port_file.read_text().splitlines()[0])
                return None

            number = await _wait_for("DevTools", browser, port)
            base = f"http://127.0.0.1:{number}"
            async with browser.http.get(f"{base}/json/version") as response:
                browser.version = str((await response.json()).get("Browser", ""))
            async with browser.http.put(f"{base}/json/new?about:blank") as response:
                tab = await response.json()
            await browser._connect(str(tab["webSocketDebuggerUrl"]))
            await browser._cdp("Page.enable")
        except (aiohttp.ClientError, OSError, KeyError, ValueError) as exc:
            await browser.close()
            raise BrowserError(f"chromium: DevTools unusable: {exc!r}") from exc
        except BaseException:
            await browser.close()
            raise
        return browser

    async def _cdp(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        limit: float = COMMAND_TIMEOUT_S,
    ) -> dict[str, Any]:
        reply = await self._send({"method": method, "params": params or {}}, limit)
        if "error" in reply:
            raise BrowserError(f"chromium: {method} failed: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def navigate(self, url: str) -> None:
        result = await self._cdp("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"chromium: cannot open {url}: {result['errorText']}")
        await self.evaluate(
            "new Promise((ok) => document.readyState === 'complete' ? ok(1)"
            " : addEventListener('load', () => ok(1)))"
        )

    async def evaluate(self, expression: str, limit: float = COMMAND_TIMEOUT_S) -> Any:
        result = await self._cdp(
            "Runtime.evaluate",
            {
                "expression": self._json_expression(expression),
                "awaitPromise": True,
                "returnByValue": True,
            },
            limit,
        )
        details = result.get("exceptionDetails")
        if details is not None:
            text = details.get("exception", {}).get("description") or details.get(
                "text", "exception"
            )
            raise BrowserError(f"chromium: {_short(str(text).splitlines()[0])}")
        value = result.get("result", {}).get("value")
        return None if value is None else json.loads(value)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Firefox(Browser):
    """Firefox over WebDriver BiDi (no geckodriver): one browsing context."""

    name = "firefox"
    context = ""

    @classmethod
    async def launch(cls) -> Firefox:
        exe = find(FIREFOX_CANDIDATES)
        if exe is None:
            raise BrowserError(f"Firefox ESR is not installed; {INSTALL}")
        workdir = Path(tempfile.mkdtemp(prefix="callagent-firefox-"))
        profile = workdir / "profile"
        profile.mkdir()
        (profile / "user.js").write_text(
            "".join(
                f"user_pref({json.dumps(k)}, {json.dumps(v)});\n"
                for k, v in FIREFOX_PREFS.items()
            )
        )
        port = _free_port()
        args = [
            "--headless",
            "--no-remote",
            "--profile",
            str(profile),
            "--remote-debugging-port",
            str(port),
            "about:blank",
        ]
        env = {}
        debug_log = debug_log_path("firefox")
        if debug_log is not None:
            env = {"MOZ_LOG": FIREFOX_LOG_MODULES, "MOZ_LOG_FILE": str(debug_log)}
        browser = cls(await _start(exe, args, workdir, env), workdir)
        listening = re.compile(r"WebDriver BiDi listening on (ws://\S+)")
        try:

            def bidi_url() -> str | None:
                match = listening.search(browser.log_tail(200))
                return None if match is None else match.group(1).rstrip("/")

            url = await _wait_for("WebDriver BiDi", browser, bidi_url)
            await browser._connect(f"{url}/session")
            session = await browser._bidi("session.new", {"capabilities": {}})
            caps = session.get("capabilities", {})
            browser.version = f"Firefox {caps.get('browserVersion', '')}".strip()
            tree = await browser._bidi("browsingContext.getTree", {})
            browser.context = str(tree["contexts"][0]["context"])
        except (aiohttp.ClientError, OSError, KeyError, IndexError, ValueError) as exc:
            await browser.close()
            raise BrowserError(f"firefox: WebDriver BiDi unusable: {exc!r}") from exc
        except BaseException:
            await browser.close()
            raise
        return browser

    async def _bidi(
        self, method: str, params: dict[str, Any], limit: float = COMMAND_TIMEOUT_S
    ) -> dict[str, Any]:
        reply = await self._send({"method": method, "params": params}, limit)
        if reply.get("type") == "error" or "error" in reply:
            message = reply.get("message") or reply.get("error")
            raise BrowserError(f"firefox: {method} failed: {_short(str(message))}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def navigate(self, url: str) -> None:
        await self._bidi(
            "browsingContext.navigate",
            {"context": self.context, "url": url, "wait": "complete"},
        )

    async def evaluate(self, expression: str, limit: float = COMMAND_TIMEOUT_S) -> Any:
        result = await self._bidi(
            "script.evaluate",
            {
                "expression": self._json_expression(expression),
                "target": {"context": self.context},
                "awaitPromise": True,
                "resultOwnership": "none",
            },
            limit,
        )
        if result.get("type") == "exception":
            details = result.get("exceptionDetails", {})
            raise BrowserError(f"firefox: {_short(str(details.get('text', details)))}")
        value = result.get("result", {}).get("value")
        return None if value is None else json.loads(str(value))


async def launch(name: str) -> Browser:
    """Start ``chromium`` or ``firefox`` headless."""
    if name == "chromium":
        return await Chromium.launch()
    if name == "firefox":
        return await Firefox.launch()
    raise BrowserError(f"no driver for browser {name!r}")
