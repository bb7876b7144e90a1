"""The first web result for a query, from DuckDuckGo (no API key).

The HTML endpoint (`/html/?q=`) is read with the standard library's HTML
parser: each result block gives a title, the target URL (DuckDuckGo wraps
it in a `/l/?uddg=` redirect link, decoded here) and a snippet; ads are
skipped. When that page gives nothing usable (no result, an anti-bot
challenge, an error), the Instant Answer JSON API is asked for an abstract.

Like `weather`, every request goes through `greffon.http` (the worker has
no socket), the upstream URLs and the timeout come from
`[plugins.search.config]`, and every expected failure is returned as
`{"error": "..."}`.
"""

from html.parser import HTMLParser
from urllib.parse import parse_qs, urljoin, urlsplit

import greffon
from greffon import http
from greffon.log import get_logger

log = get_logger("plugin")

DEFAULTS = {
    "html_url": "https://html.duckduckgo.com",
    "api_url": "https://api.duckduckgo.com",
    "timeout_s": 5.0,
}

# DuckDuckGo's `kp` values for the safe-search levels.
SAFE = {"strict": "1", "moderate": "-1", "off": "-2"}

HEADERS = {"User-Agent": "Mozilla/5.0 (compatible; greffon-search/0.1)", "Accept-Language": "en"}


class Unusable(Exception):
    """Why a source gave no result; the message is for the user."""


def classes(attrs):
    return set((dict(attrs).get("class") or "").split())


def target_url(href):
    """The real destination of a result link (DuckDuckGo's `uddg=` parameter)."""
    absolute = urljoin("https://duckduckgo.com/", href)
    parts = urlsplit(absolute)
    if parts.path == "/l/":
        wrapped = parse_qs(parts.query).get("uddg")
        if wrapped:
            return wrapped[0]
    return absolute


def is_ad_link(href):
    parts = urlsplit(urljoin("https://duckduckgo.com/", href))
    return parts.hostname in ("duckduckgo.com", "html.duckduckgo.com") and parts.path == "/y.js"


class ResultPage(HTMLParser):
    """Collects the result blocks of DuckDuckGo's HTML page.

    A result is a `div` whose classes include `result`; inside it, the
    `result__a` link holds the title and URL and `result__snippet` the
    snippet. Divs are counted to know where a block ends.
    """

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.results = []
        self.no_results = False
        self.challenge = False
        self.depth = 0
        self.block = None
        self.block_depth = None
        # (field, tag, nesting) while capturing the text of one element
        self.capture = None
        self.text = []

    def handle_starttag(self, tag, attrs):
        cls = classes(attrs)
        attributes = dict(attrs)
        if "anomaly-modal" in " ".join(cls) or attributes.get("id") == "challenge-form":
            self.challenge = True
        if "no-results" in cls:
            self.no_results = True
        if self.capture is not None:
            field, ctag, nesting = self.capture
            if tag == ctag:
                self.capture = (field, ctag, nesting + 1)
            return
        if tag == "div":
            self.depth += 1
            if self.block is None and "result" in cls:
                self.block = {"ad": "result--ad" in cls, "title": None, "href": None, "snippet": None}
                self.block_depth = self.depth
            return
        if self.block is None:
            return
        if "result__a" in cls:
            self.block["href"] = attributes.get("href")
            self.start_capture("title", tag)
        elif "result__snippet" in cls:
            self.start_capture("snippet", tag)

    def start_capture(self, field, tag):
        self.capture = (field, tag, 0)
        self.text = []

    def handle_endtag(self, tag):
        if self.capture is not None:
            field, ctag, nesting = self.capture
            if tag != ctag:
                return
            if nesting:
                self.capture = (field, ctag, nesting - 1)
                return
            self.block[field] = " ".join("".join(self.text).split())
            self.capture = None
            return
        if tag == "div":
            if self.block is not None and self.depth == self.block_depth:
                self.results.append(self.block)
                self.block = None
            self.depth -= 1

    def handle_data(self, data):
        if self.capture is not None:
            self.text.append(data)


class Plugin:
    meta = {
        "name": "search",
        "description": "Searches the web with DuckDuckGo and returns the first result.",
        "permissions": ["net", "fs_read"],
        "allowlist_domains": ["html.duckduckgo.com", "api.duckduckgo.com"],
        "inputs": {
            "schema": {
                "query": {"type": "string", "minLength": 1, "maxLength": 500, "description": "what to look for"},
                "region": {
                    "type": "string",
                    "pattern": "^[a-z]{2}-[a-z]{2}$",
                    "required": False,
                    "description": "DuckDuckGo region, e.g. fr-fr, us-en, wt-wt",
                },
                "safe": {"type": "string", "enum": ["strict", "moderate", "off"], "default": "moderate"},
            }
        },
        # Two upstream requests of at most 5 s each, plus margin.
        "timeout": 15,
    }

    def __init__(self):
        self.settings = dict(DEFAULTS)

    def start(self):
        self.settings = {**DEFAULTS, **greffon.config()}

    def run(self, query, region=None, safe="moderate"):
        query = " ".join(query.split())
        if not query:
            return {"error": "query must not be blank"}
        try:
            return {"query": query, **self.from_html(query, region, safe)}
        except Unusable as e:
            first_failure = str(e)
        try:
            return {"query": query, **self.from_instant_answer(query)}
        except Unusable as e:
            log.info("no instant answer for %r either: %s", query, e)
        return {"error": first_failure}

    def get(self, service, base, path, params):
        try:
            r = http.get(
                base.rstrip("/") + path,
                params=params,
                headers=HEADERS,
                timeout=float(self.settings["timeout_s"]),
            )
        except http.Timeout:
            raise Unusable(
                f"DuckDuckGo ({service}) did not answer within {self.settings['timeout_s']:g} s; try again later"
            ) from None
        except PermissionError as e:
            raise Unusable(f"DuckDuckGo ({service}) may not be reached: {e}") from None
        except http.RequestError as e:
            raise Unusable(f"DuckDuckGo ({service}) could not be reached: {e}") from None
        return r

    def from_html(self, query, region, safe):
        params = {"q": query, "kp": SAFE[safe]}
        if region:
            params["kl"] = region
        r = self.get("web results", self.settings["html_url"], "/html/", params)
        page = ResultPage()
        page.feed(r.text)
        page.close()
        # The anti-bot page comes with 202 or 403; look at it before the status.
        if page.challenge:
            raise Unusable("DuckDuckGo answered with an anti-bot challenge (captcha) instead of results; try again later")
        if r.status_code != 200:
            raise Unusable(f"DuckDuckGo (web results) answered HTTP {r.status_code}")
        for result in page.results:
            if result["ad"] or not result["href"] or is_ad_link(result["href"]) or not result["title"]:
                continue
            return {
                "title": result["title"],
                "url": target_url(result["href"]),
                "snippet": result["snippet"] or "",
                "source": "web",
            }
        if page.no_results or page.results:
            raise Unusable(f"no result for '{query}'")
        raise Unusable("DuckDuckGo's page held no result greffon could read (its layout may have changed)")

    def from_instant_answer(self, query):
        params = {"q": query, "format": "json", "no_html": "1", "skip_disambig": "1", "no_redirect": "1"}
        r = self.get("instant answers", self.settings["api_url"], "/", params)
        if r.status_code != 200:
            raise Unusable(f"DuckDuckGo (instant answers) answered HTTP {r.status_code}")
        try:
            data = r.json()
        except ValueError:
            raise Unusable("DuckDuckGo (instant answers) sent an answer that is not JSON") from None
        if not isinstance(data, dict):
            raise Unusable("DuckDuckGo (instant answers) sent an unexpected answer")
        if data.get("AbstractText") and data.get("AbstractURL"):
            return {
                "title": data.get("Heading") or query,
                "url": data["AbstractURL"],
                "snippet": data["AbstractText"],
                "source": "instant_answer",
            }
        raise Unusable("no instant answer")


plugin = Plugin()
