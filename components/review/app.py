"""The review page: a thin Starlette adapter over `ReviewSession`.

Routes: `/` (the page), `/api/queue`, `/api/decide`, `/api/undo`, `/thumb/{id}`. Images are
named only by queue id, so no client-supplied path ever reaches storage; anything else is
404. With a token (required beyond loopback) every request must carry it: `?token=` once
(the page then keeps it in an HttpOnly cookie) or the `X-Review-Token` header.
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from components.common.images import ImageRejected
from components.review.log import AlreadyDecided, NotDecided
from components.review.session import BadDecision, ReviewSession, UnknownItem

TOKEN_COOKIE = "gallerytag_review_token"
TOKEN_HEADER = "x-review-token"
# Browsers only send a custom header cross-origin after a CORS preflight, which this app never
# answers: a page on another site cannot post decisions through the reviewer's browser.
WRITE_HEADER = "x-gallerytag-review"
LOOPBACK_HOSTS = ["127.0.0.1", "localhost"]
TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
)


class TokenMiddleware:
    """Refuse (403) every request without the token; a valid `?token=` sets the cookie."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    def _valid(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the token on every HTTP request before any route runs."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        from_query = request.query_params.get("token")
        ok = (
            self._valid(from_query)
            or self._valid(request.headers.get(TOKEN_HEADER))
            or self._valid(request.cookies.get(TOKEN_COOKIE))
        )
        if not ok:
            response = PlainTextResponse("a valid review token is required", status_code=403)
            await response(scope, receive, send)
            return
        if not self._valid(from_query):
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: dict) -> None:
            if message["type"] == "http.response.start":
                cookie = f"{TOKEN_COOKIE}={self.token.decode()}; HttpOnly; SameSite=Strict; Path=/"
                message.setdefault("headers", []).append((b"set-cookie", cookie.encode()))
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def create_app(
    session: ReviewSession, token: str | None = None, loopback: bool = True
) -> Starlette:
    """The ASGI app for one session; `loopback` limits Host headers to 127.0.0.1/localhost
    (a DNS-rebinding page cannot reach a token-less server)."""

    def security_headers(response: Response, nonce: str | None = None) -> Response:
        script = f"'nonce-{nonce}'" if nonce else "'none'"
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; img-src 'self'; connect-src 'self'; script-src {script}; "
            f"style-src {script}; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    async def page(request: Request) -> Response:
        nonce = secrets.token_urlsafe(16)
        html = TEMPLATES.get_template("review.html.j2").render(
            nonce=nonce, queue=session.queue, reviewer=session.reviewer
        )
        return security_headers(HTMLResponse(html), nonce)

    async def queue(request: Request) -> Response:
        return security_headers(JSONResponse(session.pending()))

    def thumb(request: Request) -> Response:
        try:
            data = session.thumbnail(request.path_params["item_id"])
        except UnknownItem:
            return security_headers(PlainTextResponse("no such item", status_code=404))
        except (ImageRejected, FileNotFoundError, OSError) as error:
            return security_headers(PlainTextResponse(f"unreadable: {error}", status_code=404))
        response = Response(data, media_type="image/jpeg")
        return security_headers(response)

    async def read_json(request: Request) -> dict | Response:
        if request.headers.get(WRITE_HEADER) != "1":
            return PlainTextResponse(f"missing {WRITE_HEADER} header", status_code=403)
        try:
            body = await request.json()
        except ValueError:
            return PlainTextResponse("the body must be JSON", status_code=400)
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            return PlainTextResponse("the body must be a JSON object with an id", status_code=400)
        return body

    def outcome(call, *args) -> Response:
        try:
            row = call(*args)
        except UnknownItem:
            return security_headers(PlainTextResponse("no such item", status_code=404))
        except BadDecision as error:
            return security_headers(PlainTextResponse(str(error), status_code=400))
        except AlreadyDecided as error:
            body = {"error": str(error), "decided": error.row, **session.counts()}
            return security_headers(JSONResponse(body, status_code=409))
        except NotDecided as error:
            return security_headers(JSONResponse({"error": str(error)}, status_code=409))
        return security_headers(JSONResponse({"row": row, **session.counts()}))

    async def decide(request: Request) -> Response:
        body = await read_json(request)
        if isinstance(body, Response):
            return security_headers(body)
        # fsync and (for suspects) hashing the image block: keep them off the event loop.
        return await run_in_threadpool(
            outcome, session.decide, body["id"], body.get("decision"), body.get("label")
        )

    async def undo(request: Request) -> Response:
        body = await read_json(request)
        if isinstance(body, Response):
            return security_headers(body)
        return await run_in_threadpool(outcome, session.undo, body["id"])

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/api/queue", queue, methods=["GET"]),
        Route("/api/decide", decide, methods=["POST"]),
        Route("/api/undo", undo, methods=["POST"]),
        Route("/thumb/{item_id:str}", thumb, methods=["GET"]),
    ]
    middleware = []
    if loopback:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_HOSTS))
    if token:
        middleware.append(Middleware(TokenMiddleware, token=token))
    return Starlette(routes=routes, middleware=middleware)
