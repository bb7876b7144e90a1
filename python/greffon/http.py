"""The provided HTTP client: the host makes the request for the plugin.

A worker has no socket of its own; ``greffon.http`` asks the host, which
checks the URL against the plugin's ``allowlist_domains`` (and every
redirect, and the addresses the name resolves to), then performs it::

    from greffon import http

    r = http.get("https://api.open-meteo.com/v1/forecast", params={"latitude": 48.85})
    r.raise_for_status()
    data = r.json()

Refusals raise ``PermissionError`` (no ``net`` permission, a host outside
the allowlist, a redirect to a private address...), time-outs raise
``http.Timeout`` (also a ``TimeoutError``), other failures ``http.RequestError``.
"""

import base64
import json as _json
import time
from urllib.parse import urlencode, urlsplit, urlunsplit

from greffon import _runtime

__all__ = ["HTTPStatusError", "RequestError", "Response", "Timeout", "TooLarge", "get", "post", "request"]


class RequestError(Exception):
    """The request could not be completed."""


class Timeout(RequestError, TimeoutError):
    """The request took longer than its timeout or the call's remaining time."""


class TooLarge(RequestError):
    """The response body was larger than the host accepts."""


class HTTPStatusError(RequestError):
    """Raised by ``Response.raise_for_status()`` for 4xx and 5xx answers."""

    def __init__(self, message, response):
        super().__init__(message)
        self.response = response


class Headers(dict):
    """Response headers; lookup ignores case. Repeated headers are joined with ', '."""

    def __init__(self, pairs):
        super().__init__()
        for k, v in pairs:
            k = k.lower()
            super().__setitem__(k, f"{self[k]}, {v}" if k in self else v)

    def __getitem__(self, key):
        return super().__getitem__(key.lower())

    def __contains__(self, key):
        return super().__contains__(key.lower())

    def get(self, key, default=None):
        return super().get(key.lower(), default)


class Response:
    """What the host received."""

    def __init__(self, status_code, headers, content, url):
        self.status_code = status_code
        self.headers = headers
        self.content = content
        self.url = url

    @property
    def ok(self):
        return self.status_code < 400

    @property
    def encoding(self):
        ctype = self.headers.get("content-type", "")
        for part in ctype.split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                return value.strip('"')
        return "utf-8"

    @property
    def text(self):
        try:
            return self.content.decode(self.encoding, errors="replace")
        except LookupError:
            return self.content.decode("utf-8", errors="replace")

    def json(self):
        return _json.loads(self.text)

    def raise_for_status(self):
        if self.status_code >= 400:
            kind = "client" if self.status_code < 500 else "server"
            raise HTTPStatusError(f"{self.status_code} {kind} error for {self.url}", self)
        return self

    def __repr__(self):
        return f"<Response [{self.status_code}]>"


def _with_params(url, params):
    if not params:
        return url
    parts = urlsplit(url)
    extra = urlencode(params, doseq=True)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _remaining(timeout):
    deadline = getattr(_runtime.local, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise Timeout("the call's time is up; no time left for an HTTP request")
    return left if timeout is None else min(timeout, left)


def request(method, url, *, params=None, headers=None, json=None, data=None, timeout=None):
    """Performs a request through the host and returns a ``Response``."""
    if json is not None and data is not None:
        raise ValueError("pass either json= or data=, not both")
    header_pairs = [(str(k), str(v)) for k, v in (headers or {}).items()]
    names = {k.lower() for k, _ in header_pairs}
    body = None
    if json is not None:
        body = _runtime.dumps(json).encode("utf-8")
        if "content-type" not in names:
            header_pairs.append(("Content-Type", "application/json"))
    elif isinstance(data, dict):
        body = urlencode(data, doseq=True).encode("ascii")
        if "content-type" not in names:
            header_pairs.append(("Content-Type", "application/x-www-form-urlencoded"))
    elif isinstance(data, str):
        body = data.encode("utf-8")
    elif data is not None:
        body = bytes(data)
    message = {
        "method": str(method),
        "url": _with_params(str(url), params),
        "headers": header_pairs,
    }
    if body is not None:
        message["body"] = base64.b64encode(body).decode("ascii")
    left = _remaining(timeout)
    if left is not None:
        message["timeout"] = left
    try:
        answer = _runtime.call("http.request", message)
    except _runtime.HostError as e:
        if e.kind == "permission_denied":
            raise PermissionError(str(e)) from None
        if e.kind == "timeout":
            raise Timeout(str(e)) from None
        if e.kind == "too_large":
            raise TooLarge(str(e)) from None
        raise RequestError(str(e)) from None
    return Response(
        answer["status"],
        Headers(answer["headers"]),
        base64.b64decode(answer["body"]),
        answer["url"],
    )


def get(url, **kwargs):
    return request("GET", url, **kwargs)


def post(url, **kwargs):
    return request("POST", url, **kwargs)
