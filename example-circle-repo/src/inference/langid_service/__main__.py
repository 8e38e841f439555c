"""Command line: ``python -m langid_service --model PATH --host 127.0.0.1 --port 8080``.

Options fall back to the MODEL_PATH, HOST and PORT environment variables. Once the socket is
listening, exactly one line ``listening on HOST:PORT`` goes to stdout (``--port 0`` picks a free
port, so callers read the real one there). SIGTERM or SIGINT shut down cleanly with exit 0; a
missing or invalid model, or a bad option, prints one line to stderr and exits 2; a port that
cannot be bound exits 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from langid_service.model import LangidModel, load_model
from langid_service.server import LangidServer

EXIT_OK = 0
EXIT_CANNOT_LISTEN = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Configuration the operator must fix before the service can start."""


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        port = _parse_port(args.port)
        model = _read_model(args.model)
    except UsageError as exc:
        print(f"langid_service: error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    logging.basicConfig(
        stream=sys.stderr,
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        server = LangidServer((args.host, port), model, access_log=args.access_log)
    except OSError as exc:
        print(
            f"langid_service: error: cannot listen on {args.host}:{port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return EXIT_CANNOT_LISTEN

    with server:
        _shut_down_on_signals(server)
        host, bound_port = server.socket.getsockname()[:2]
        shown_host = f"[{host}]" if ":" in host else host
        print(f"listening on {shown_host}:{bound_port}", flush=True)
        server.serve_forever()
    return EXIT_OK


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m langid_service", description="Serve the langid model over HTTP."
    )
    parser.add_argument(
        "--model", default=os.environ.get("MODEL_PATH"), help="model JSON file [$MODEL_PATH]"
    )
    parser.add_argument(
        "--host", default=os.environ.get("HOST", "127.0.0.1"), help="address to bind [$HOST]"
    )
    parser.add_argument(
        "--port", default=os.environ.get("PORT", "8080"), help="TCP port, 0 for any free [$PORT]"
    )
    parser.add_argument("--access-log", action="store_true", help="log each request to stderr")
    return parser.parse_args(argv)


def _parse_port(value: str) -> int:
    if not value.isdigit() or int(value) > 65535:
        raise UsageError(f"port {value!r} is not a number from 0 to 65535")
    return int(value)


def _read_model(path: str | None) -> LangidModel:
    if not path:
        raise UsageError("no model: pass --model PATH or set MODEL_PATH")
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read model {path}: {exc.strerror or exc}") from None
    try:
        return load_model(data)
    except ValueError as exc:
        raise UsageError(f"invalid model {path}: {exc}") from None


def _shut_down_on_signals(server: LangidServer) -> None:
    def request_shutdown(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever() to return, and serve_forever() runs in this very
        # thread, so the wait has to happen elsewhere.
        threading.Thread(target=server.shutdown, name="shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, request_shutdown)
    signal.signal(signal.SIGINT, request_shutdown)


if __name__ == "__main__":
    sys.exit(main())
