"""Tiny loopback HTTP server for browser tests (aiohttp, random free port)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from aiohttp import web

__all__ = ["serve_app", "serve_pages"]


@asynccontextmanager
async def serve_app(
    app: web.Application, host: str = "127.0.0.1"
) -> AsyncIterator[str]:
    """Serve *app* on host:<random free port>; yield its base URL (no trailing /)."""
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=1.0
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, 0)
        await site.start()
        bound_host, port = runner.addresses[0][:2]
        yield f"http://{bound_host}:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def serve_pages(
    pages: Mapping[str, str], host: str = "127.0.0.1"
) -> AsyncIterator[str]:
    """Serve {path: html} as text/html; yield the base URL (no trailing /)."""
    app = web.Application()
    for path, html in pages.items():

        async def handler(_request: web.Request, body: str = html) -> web.Response:
            return web.Response(text=body, content_type="text/html")

        app.router.add_get(path, handler)
    async with serve_app(app, host) as base_url:
        yield base_url
