"""HTTP shell around the pure model: a threaded standard-library server with these routes.

    GET  /healthz      -> 200 {"status": "ok"}
    GET  /v1/model     -> 200 model metadata (format, languages, ngram, sha256, size_bytes)
    POST /v1/predict   -> 200 {"language": "de", "scores": {...}} for a body {"text": "..."}
    GET  /metrics      -> 200 Prometheus text: langid_predictions_total, by language
    GET  /v1/usage     -> 200 {"predictions": {"de": 2, ...}, "total": 2}, for the operators
                          only: with `Authorization: Bearer KEY` (the API key, compared in
                          constant time), 401 otherwise; 404 when the service has no API key

The API key is read once, from the file the operator names (in a circle: the sealed secret
the node releases into the replica's sandbox), and is never logged or sent back.

Every other response, errors included, is a JSON object; errors look like {"error": "..."}. Bad
requests get 400, bodies over MAX_BODY_BYTES get 413, unknown paths 404, other methods on a
known path 405. An unexpected failure is logged here and answered with a bare 500, so no
traceback ever reaches a client.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from langid_service.model import FORMAT, LangidModel

MAX_BODY_BYTES = 64 * 1024
# An oversized body is still read and thrown away up to this size, so that the client, which
# is usually still sending, receives the 413 instead of a connection reset.
_DRAIN_LIMIT_BYTES = 1024 * 1024
# ...but a client trickling an oversized body must not keep a worker busy for long.
_DRAIN_DEADLINE_S = 5.0
# A client that stalls mid-request must not hold a worker thread for ever.
_SOCKET_TIMEOUT_S = 10.0

_ROUTES: dict[str, str] = {
    "/healthz": "GET",
    "/v1/model": "GET",
    "/v1/predict": "POST",
    "/metrics": "GET",
    "/v1/usage": "GET",
}
_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BEARER = "Bearer "
_CHALLENGE = 'Bearer realm="langid-admin"'

logger = logging.getLogger(__name__)


class RequestError(Exception):
    """A request the client must fix; carries the status and the message to send back."""

    def __init__(
        self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class LangidServer(ThreadingHTTPServer):
    """Serves one loaded model; worker threads never keep the process alive on shutdown."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        model: LangidModel,
        access_log: bool,
        api_key: bytes | None = None,
    ) -> None:
        # The family must be known before the base class creates the socket.
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.model = model
        self.access_log = access_log
        self.api_key = api_key  # None: the admin endpoint is off
        self._counted = threading.Lock()
        self.predictions: dict[str, int] = {}  # by language
        super().__init__(address, LangidHandler)

    def count(self, language: str) -> None:
        with self._counted:
            self.predictions[language] = self.predictions.get(language, 0) + 1

    def usage(self) -> dict[str, Any]:
        """What this replica answered, by language: the admin endpoint's document."""
        with self._counted:
            counted = dict(sorted(self.predictions.items()))
        return {"predictions": counted, "total": sum(counted.values())}

    def authorized(self, header: str | None) -> bool:
        """Whether an `Authorization` header carries the API key as a bearer token. The
        comparison takes the same time wherever the two differ."""
        if self.api_key is None or header is None or not header.startswith(_BEARER):
            return False
        offered = header[len(_BEARER) :].strip().encode("latin-1", "replace")
        return hmac.compare_digest(offered, self.api_key)

    def metrics_text(self) -> str:
        """The Prometheus text exposition of what this replica answered."""
        with self._counted:
            counted = sorted(self.predictions.items())
        lines = [
            "# HELP langid_predictions_total Predictions answered, by language.",
            "# TYPE langid_predictions_total counter",
            *(f'langid_predictions_total{{language="{lang}"}} {n}' for lang, n in counted),
        ]
        return "\n".join(lines) + "\n"

    def model_metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "languages": list(self.model.languages),
            "ngram": list(self.model.ngram),
            "sha256": self.model.sha256,
            "size_bytes": self.model.size_bytes,
        }


class LangidHandler(BaseHTTPRequestHandler):
    """Routes requests to the model and turns every outcome into a JSON response."""

    server: LangidServer
    server_version = "langid-service"
    timeout = _SOCKET_TIMEOUT_S

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Answer protocol-level errors (bad request line, unsupported method) in JSON too."""
        status = HTTPStatus(code)
        self.close_connection = True
        self._send_json(status, {"error": message or status.phrase})

    def version_string(self) -> str:
        # The Python version in the default Server header helps attackers, not clients.
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.access_log:
            super().log_message(format, *args)

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics" and method == "GET":
            self._send(HTTPStatus.OK, self.server.metrics_text().encode("utf-8"), _METRICS_TYPE)
            return
        extra_headers: dict[str, str] = {}
        try:
            status, document = self._route(method, path)
        except RequestError as exc:
            self.close_connection = True
            status, document = exc.status, {"error": exc.message}
            if status == HTTPStatus.METHOD_NOT_ALLOWED:
                extra_headers["Allow"] = _ROUTES[path]
            extra_headers.update(exc.headers)
        except (TimeoutError, ConnectionError):
            # The client stalled or went away mid-request; there is nobody left to answer.
            self.close_connection = True
            return
        except Exception:
            logger.exception("request %s %s failed", method, path)
            self.close_connection = True
            status, document = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"}
        try:
            self._send_json(status, document, extra_headers)
        except (TimeoutError, ConnectionError):
            self.close_connection = True

    def _route(self, method: str, path: str) -> tuple[HTTPStatus, dict[str, Any]]:
        expected = _ROUTES.get(path)
        if expected is None:
            raise RequestError(HTTPStatus.NOT_FOUND, f"no route for {path}")
        if method != expected:
            raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} accepts {expected} only")
        if path == "/healthz":
            return HTTPStatus.OK, {"status": "ok"}
        if path == "/v1/model":
            return HTTPStatus.OK, self.server.model_metadata()
        if path == "/v1/usage":
            return HTTPStatus.OK, self._usage()
        prediction = self.server.model.predict(self._read_text())
        self.server.count(prediction.language)
        return HTTPStatus.OK, {"language": prediction.language, "scores": prediction.scores}

    def _usage(self) -> dict[str, Any]:
        if self.server.api_key is None:
            raise RequestError(
                HTTPStatus.NOT_FOUND,
                "/v1/usage is off: the service was started without an API key "
                "(--api-key-file or API_KEY_FILE)",
            )
        if not self.server.authorized(self.headers.get("Authorization")):
            raise RequestError(
                HTTPStatus.UNAUTHORIZED,
                "/v1/usage needs the API key: Authorization: Bearer KEY",
                {"WWW-Authenticate": _CHALLENGE},
            )
        return self.server.usage()

    def _read_text(self) -> str:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "chunked bodies are not supported")
        header = self.headers.get("Content-Length")
        if header is None:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
        if not header.isdigit():
            raise RequestError(HTTPStatus.BAD_REQUEST, f"Content-Length {header!r} is invalid")
        length = int(header)
        if length > MAX_BODY_BYTES:
            self._discard(length)
            raise RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"body has {length} bytes, the limit is {MAX_BODY_BYTES}",
            )
        body = self.rfile.read(length)
        if len(body) != length:
            raise RequestError(
                HTTPStatus.BAD_REQUEST, f"body ended after {len(body)} of {length} bytes"
            )
        return parse_predict_body(body)

    def _discard(self, length: int) -> None:
        remaining = min(length, _DRAIN_LIMIT_BYTES)
        deadline = time.monotonic() + _DRAIN_DEADLINE_S
        try:
            while remaining > 0 and (left := deadline - time.monotonic()) > 0:
                # Shrinking the timeout keeps one slow read from outliving the deadline.
                self.connection.settimeout(left)
                chunk = self.rfile.read1(min(remaining, 64 * 1024))
                if not chunk:
                    return
                remaining -= len(chunk)
        except (TimeoutError, ConnectionError):
            # Draining is a courtesy; the 413 is still worth trying to send.
            return

    def _send_json(
        self,
        status: HTTPStatus,
        document: dict[str, Any],
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        body = (json.dumps(document, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8", extra_headers)

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        # Protocol errors can answer a HEAD request, which must not carry a body.
        if self.command != "HEAD":
            self.wfile.write(body)


def parse_predict_body(body: bytes) -> str:
    """Return the text of a ``{"text": "..."}`` body or raise a 400 ``RequestError``."""
    try:
        document = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise RequestError(HTTPStatus.BAD_REQUEST, "body is not UTF-8") from None
    except RecursionError:
        raise RequestError(HTTPStatus.BAD_REQUEST, "body JSON is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise RequestError(
            HTTPStatus.BAD_REQUEST, f"body is not valid JSON: {exc.msg} at column {exc.colno}"
        ) from None
    if not isinstance(document, dict):
        raise RequestError(
            HTTPStatus.BAD_REQUEST, f"body must be a JSON object, found {type(document).__name__}"
        )
    if "text" not in document:
        raise RequestError(HTTPStatus.BAD_REQUEST, 'body needs a "text" field')
    text = document["text"]
    if not isinstance(text, str):
        raise RequestError(
            HTTPStatus.BAD_REQUEST, f'"text" must be a string, found {type(text).__name__}'
        )
    return text
