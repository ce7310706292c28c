"""The bare aiohttp handler every server benchmark compares against: answer 204, do nothing."""

from __future__ import annotations

import argparse

from aiohttp import web


async def nothing(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=204)


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/{tail:.*}", nothing)
    app.router.add_get("/healthz", health)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
