"""The dashboard's web application: server-rendered pages, their JSON twins under `/api/`, and
the assets shipped in this package (no CDN: the pages work offline).

    /            overview: nodes, leader, seq, replicas, pending proposals, the slot map
    /chain       approved transitions; pending proposals with their review
    /nodes       capacity against what is assigned, GPUs, heartbeats
    /workloads   replicas per node, rollout, conditions, autoscale, charts
    /volumes     each object's last scrub: shares, margin per failure domain, repairs
    /events      filterable by type, object and node, newest first
    /api/NAME    chain, nodes, workloads, assignments, volumes, events, history: JSON

Pages refresh themselves: a small script (`static/live.js`) fetches `?partial=1` every two
seconds and swaps the page's live region; without script a page is still whole.

`Guard` is the whole HTTP policy: GET and HEAD only; the Host header must name this server
when it binds loopback (no DNS rebinding); a bearer token when one is set (header, or a
cookie set by visiting once with `?token=`); and security headers on every answer, a CSP
without inline script or style among them.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from http.cookies import SimpleCookie
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from reconciler.dashboard import svg
from reconciler.dashboard.collect import Collector, Snapshot
from reconciler.humane import age, size
from reconciler.node import tables

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGI = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "circle_dashboard"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
    "cache-control": "no-store",
}
PAGES = ("overview", "chain", "nodes", "workloads", "volumes", "events")
APIS = ("chain", "nodes", "workloads", "assignments", "volumes", "events", "history")
STATIC = {"dashboard.css": "text/css; charset=utf-8", "live.js": "text/javascript; charset=utf-8"}
MAX_FILTER = 256  # characters of a filter value


def _age(then: float | None, now: float) -> str:
    return "-" if then is None else age(now - then)


def _bytes(count: int | None) -> str:
    return "-" if count is None else size(count)


def _percent(part: float | None, whole: float | None) -> int:
    if not part or not whole:
        return 0
    return max(0, min(100, round(100 * part / whole)))


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("reconciler.dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["short"] = lambda commit: (commit or "-")[:12]
    env.filters["bytes"] = _bytes
    env.globals.update(age=_age, percent=_percent, chart=svg.chart, slot_map=svg.slot_map)
    return env


def _filters(request: Request) -> dict[str, str | None]:
    """The events page's filters, bounded; empty means no filter."""
    found: dict[str, str | None] = {}
    for name in ("type", "object", "node"):
        value = request.query_params.get(name, "")[:MAX_FILTER].strip()
        found[name] = value or None
    return found


def make_app(collector: Collector, *, token: str | None, hosts: set[str] | None) -> ASGI:
    """The application over `collector`'s snapshots, behind `Guard`."""
    env = _environment()
    assets = {
        name: (resources.files("reconciler.dashboard").joinpath("static", name).read_bytes(), kind)
        for name, kind in STATIC.items()
    }

    def snapshot_or_wait() -> Snapshot:
        return collector.snapshot()

    def events_of(snapshot: Snapshot, request: Request) -> list[dict[str, Any]]:
        chosen = _filters(request)
        rows: list[dict[str, Any]] = snapshot.get("events", {}).get("events", [])
        return [
            row for row in rows
            if (chosen["type"] is None or row["type"] == chosen["type"])
            and (chosen["node"] is None or row["node"] == chosen["node"])
            and tables.object_matches(row["object"], chosen["object"])
        ]  # fmt: skip

    def page_of(name: str) -> Callable[[Request], Awaitable[Response]]:
        async def page(request: Request) -> Response:
            return render(name, request)

        return page

    def render(name: str, request: Request) -> Response:
        snapshot = snapshot_or_wait()
        if not snapshot.get("circle"):
            return PlainTextResponse("the dashboard is still reading the circle\n", 503)
        template = env.get_template(f"{name}.html")
        context = {
            "page": name,
            "pages": PAGES,
            "s": snapshot,
            "now": time.time(),
            "filters": _filters(request),
            "events": events_of(snapshot, request),
            "scaled": _scaled(snapshot),
        }
        if request.query_params.get("partial") == "1":
            body = "".join(template.blocks["live"](template.new_context(context)))
        else:
            body = template.render(context)
        return HTMLResponse(body)

    async def api(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in APIS:
            return JSONResponse({"error": f"no API {name[:64]!r}; try one of {list(APIS)}"}, 404)
        snapshot = snapshot_or_wait()
        if not snapshot.get("circle"):
            return JSONResponse({"error": "the dashboard is still reading the circle"}, 503)
        if name == "events":
            body: Any = {**snapshot["events"], "events": events_of(snapshot, request)}
        else:
            body = snapshot[name]
        if snapshot.get("error"):
            body = {**body, "stale": snapshot["error"]} if isinstance(body, dict) else body
        return Response(
            json.dumps(body, ensure_ascii=False, sort_keys=True),
            media_type="application/json; charset=utf-8",
        )

    async def static(request: Request) -> Response:
        found = assets.get(request.path_params["name"])
        if found is None:
            return PlainTextResponse("not found\n", 404)
        return Response(found[0], media_type=found[1])

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    routes = [Route("/", page_of("overview"))]
    routes += [Route(f"/{name}", page_of(name)) for name in PAGES if name != "overview"]
    routes += [
        Route("/api/{name}", api),
        Route("/static/{name}", static),
        Route("/healthz", healthz),
    ]
    app = Starlette(routes=routes)
    return Guard(app, token=token, hosts=hosts)


def _scaled(snapshot: Snapshot) -> dict[str, list[dict[str, Any]]]:
    """The autoscaler's last decisions per workload (its Scaled events), newest first."""
    found: dict[str, list[dict[str, Any]]] = {}
    for event in snapshot.get("events", {}).get("events", []):
        if event["reason"] == "Scaled" and event["object"].startswith("workload/"):
            rows = found.setdefault(event["object"].removeprefix("workload/"), [])
            if len(rows) < 5:
                rows.append(event)
    return found


class Guard:
    """The dashboard's HTTP policy around `app` (see the module)."""

    def __init__(self, app: ASGI, *, token: str | None, hosts: set[str] | None) -> None:
        self.app = app
        self.token = token
        self.hosts = hosts  # None: any Host (bound wider, behind a token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}

        async def guarded(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + [
                    (k.encode(), v.encode()) for k, v in HEADERS.items()
                ]
            await send(message)

        refusal = self._refuse(scope, headers)
        if refusal is not None:
            await refusal(scope, receive, guarded)
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if self.token is not None and "token" in query:
            await self._login(scope, query, guarded)
            return
        await self.app(scope, receive, guarded)

    def _refuse(self, scope: Scope, headers: Mapping[str, str]) -> Response | None:
        if scope["method"] not in ("GET", "HEAD"):
            return PlainTextResponse("read-only: GET and HEAD only\n", 405, {"allow": "GET, HEAD"})
        if self.hosts is not None and headers.get("host", "").lower() not in self.hosts:
            return PlainTextResponse("unknown Host header\n", 421)
        if self.token is None or scope["path"] in ("/healthz", "/static/dashboard.css"):
            return None
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if "token" in query:
            return None  # checked by _login
        if self._holds_token(headers):
            return None
        return PlainTextResponse(
            "a token is needed: Authorization: Bearer TOKEN, or open this page once with "
            "?token=TOKEN\n",
            401,
            {"www-authenticate": 'Bearer realm="circle dashboard"'},
        )

    def _holds_token(self, headers: Mapping[str, str]) -> bool:
        assert self.token is not None
        given = headers.get("authorization", "")
        if given.startswith("Bearer ") and _same(given[7:].strip(), self.token):
            return True
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header is no token
            return False
        held = cookie.get(COOKIE)
        return held is not None and _same(held.value, self.token)

    async def _login(self, scope: Scope, query: dict[str, list[str]], send: Send) -> None:
        """`?token=` right: a cookie, and the same page without the token in its address."""
        assert self.token is not None
        if not _same(query["token"][0], self.token):
            response: Response = PlainTextResponse("wrong token\n", 401)
        else:
            rest = {k: v for k, v in query.items() if k != "token"}
            path = "/" + scope["path"].lstrip("/")  # never `//host`: no redirect elsewhere
            target = path + (f"?{urlencode(rest, doseq=True)}" if rest else "")
            response = Response(status_code=303, headers={"location": target})
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict", path="/")

        async def nothing() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        await response(scope, nothing, send)


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))
