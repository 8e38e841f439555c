"""Command line: ``python -m langid_service --model PATH --host 127.0.0.1 --port 8080``.

Options fall back to the MODEL_PATH, HOST, PORT and API_KEY_FILE environment variables. Once
the socket is listening, exactly one line ``listening on HOST:PORT`` goes to stdout (``--port 0``
picks a free port, so callers read the real one there). SIGTERM or SIGINT shut down cleanly with
exit 0; a missing or invalid model or API key file, or a bad option, prints one line to stderr
and exits 2; a port that cannot be bound exits 1.

``--api-key-file PATH`` turns the admin endpoint (``GET /v1/usage``) on: the file holds the API
key, one line of printable ASCII (a circle releases it at /run/secrets/NAME and names the path
in API_KEY_FILE). The key itself is never printed, not even in an error.
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
MAX_API_KEY_BYTES = 4096


class UsageError(Exception):
    """Configuration the operator must fix before the service can start."""


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        port = _parse_port(args.port)
        model = _read_model(args.model)
        api_key = _read_api_key(args.api_key_file)
    except UsageError as exc:
        print(f"langid_service: error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    logging.basicConfig(
        stream=sys.stderr,
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        server = LangidServer((args.host, port), model, access_log=args.access_log, api_key=api_key)
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
    parser.add_argument(
        "--api-key-file",
        default=os.environ.get("API_KEY_FILE") or None,
        help="file holding the API key of GET /v1/usage [$API_KEY_FILE]",
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


def _read_api_key(path: str | None) -> bytes | None:
    """The API key in `path` (surrounding whitespace and a final newline dropped), or None
    without a file. UsageError for a file that cannot be read or holds no such key; the
    message never shows a byte of it."""
    if not path:
        return None
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_API_KEY_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read API key file {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_API_KEY_BYTES:
        raise UsageError(f"API key file {path}: over {MAX_API_KEY_BYTES} bytes; expected one key")
    key = data.strip()
    if not key or any(byte < 0x21 or byte > 0x7E for byte in key):
        raise UsageError(
            f"API key file {path}: expected one key of printable ASCII without spaces "
            f"({len(data)} bytes found)"
        )
    return key


def _shut_down_on_signals(server: LangidServer) -> None:
    def request_shutdown(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever() to return, and serve_forever() runs in this very
        # thread, so the wait has to happen elsewhere.
        threading.Thread(target=server.shutdown, name="shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, request_shutdown)
    signal.signal(signal.SIGINT, request_shutdown)


if __name__ == "__main__":
    sys.exit(main())
