"""Tornado's "Hello, world" app, as its docs write it (served on $PORT): tracestream writes no
request record for it."""

import asyncio
import os

import tornado


class MainHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("Hello, world")


def make_app() -> tornado.web.Application:
    return tornado.web.Application(
        [
            (r"/", MainHandler),
        ]
    )


async def main() -> None:
    app = make_app()
    app.listen(int(os.environ["PORT"]), address="127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
