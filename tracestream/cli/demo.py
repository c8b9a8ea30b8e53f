"""`tracestream demo`: the example stack (Django -> FastAPI -> Celery) from a source checkout."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tracestream.cli.common import UsageError, whole_number

if TYPE_CHECKING:
    from tracestream.cli.common import Subparsers

# The checkout this package runs from, if it runs from one: installed from a wheel, the directory
# above it is site-packages, where another package's `examples/demo.py` may lie.
CHECKOUT = Path(__file__).resolve().parents[2]
DEMO = CHECKOUT / "examples" / "demo.py"


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the example stack and show one trace across it",
        description="Starts the example Django shop, FastAPI inventory service, Celery worker and beat "
        "under the launcher on a private Redis (or --redis-url), and the console; drives traffic, prints "
        "one trace, the console's URL and the commands that explore the data, and keeps running until "
        "Ctrl-C.",
    )
    parser.add_argument("--redis-url", help="use this Redis instead of a private one")
    parser.add_argument("--stream", help="stream name (default tracestream:demo)")
    port = whole_number(0, 65535)  # 0: any free port
    parser.add_argument(
        "--web-port", type=port, default=8000, help="Django port (default 8000, else free; 0: free)"
    )
    parser.add_argument(
        "--api-port", type=port, default=8001, help="FastAPI port (default 8001, else free; 0: free)"
    )
    parser.add_argument(
        "--console-port",
        type=port,
        default=8686,
        help="the console's port (default 8686, else free; 0: free)",
    )
    parser.add_argument("--once", action="store_true", help="stop after printing the trace")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not (DEMO.is_file() and (CHECKOUT / "pyproject.toml").is_file()):
        raise UsageError(f"the demo runs from a source checkout of tracestream: {DEMO} not found")
    spec = importlib.util.spec_from_file_location("tracestream_demo", DEMO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    argv = ["--web-port", str(args.web_port), "--api-port", str(args.api_port)]
    argv += ["--console-port", str(args.console_port)]
    argv += ["--redis-url", args.redis_url] if args.redis_url else []
    argv += ["--stream", args.stream] if args.stream else []
    argv += ["--once"] if args.once else []
    status: int = module.main(argv)
    return status
