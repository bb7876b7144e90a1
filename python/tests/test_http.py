"""greffon.http in-process: what it sends to the host and how it reads the
answer, with the host replaced by a recorder (the real path through the
host is tested by crates/greffon/tests/it/broker.rs)."""

import base64
import time

import pytest

from greffon import _runtime, http


@pytest.fixture
def host(monkeypatch):
    """Records each host call and answers with ``host.answer`` (or raises
    ``host.error``)."""

    class Recorder:
        calls = []
        answer = {"status": 200, "url": "https://api.example.com/x", "headers": [], "body": ""}
        error = None

    def call(method, params=None, timeout=None):
        Recorder.calls.append((method, params))
        if Recorder.error is not None:
            raise Recorder.error
        return Recorder.answer

    monkeypatch.setattr(_runtime, "call", call)
    monkeypatch.setattr(_runtime.local, "deadline", None, raising=False)
    return Recorder


def test_params_json_and_headers_are_sent_as_the_host_expects(host):
    http.post("https://api.example.com/x?a=1", params={"b": [2, 3]}, json={"k": "é"}, headers={"X-Key": "v"})
    method, sent = host.calls[-1]
    assert method == "http.request"
    assert sent["method"] == "POST"
    assert sent["url"] == "https://api.example.com/x?a=1&b=2&b=3"
    assert ("X-Key", "v") in sent["headers"]
    assert ("Content-Type", "application/json") in sent["headers"]
    assert base64.b64decode(sent["body"]).decode() == '{"k":"é"}'
    assert "timeout" not in sent

    http.request("put", "https://api.example.com/x", data={"a": "b c"})
    sent = host.calls[-1][1]
    assert base64.b64decode(sent["body"]) == b"a=b+c"
    assert ("Content-Type", "application/x-www-form-urlencoded") in sent["headers"]
    with pytest.raises(ValueError):
        http.post("https://api.example.com/x", json={}, data="x")


def test_the_answer_becomes_a_response(host):
    host.answer = {
        "status": 404,
        "url": "https://api.example.com/final",
        "headers": [["Content-Type", "application/json; charset=latin-1"], ["Set-Cookie", "a"], ["set-cookie", "b"]],
        "body": base64.b64encode('{"v": "é"}'.encode("latin-1")).decode(),
    }
    r = http.get("https://api.example.com/x")
    assert r.status_code == 404 and not r.ok
    assert r.url == "https://api.example.com/final"
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["SET-COOKIE"] == "a, b"
    assert r.encoding == "latin-1"
    assert r.text == '{"v": "é"}'
    assert r.json() == {"v": "é"}
    with pytest.raises(http.HTTPStatusError) as e:
        r.raise_for_status()
    assert "404 client error" in str(e.value) and e.value.response is r


def test_host_refusals_and_failures_map_to_exceptions(host):
    for kind, exc in [
        ("permission_denied", PermissionError),
        ("timeout", http.Timeout),
        ("too_large", http.TooLarge),
        ("host_service", http.RequestError),
    ]:
        host.error = _runtime.HostError("no", kind)
        with pytest.raises(exc, match="no"):
            http.get("https://api.example.com/")
    assert issubclass(http.Timeout, TimeoutError)


def test_the_timeout_is_capped_by_the_call_deadline(host, monkeypatch):
    monkeypatch.setattr(_runtime.local, "deadline", time.monotonic() + 2, raising=False)
    http.get("https://api.example.com/", timeout=30)
    assert 0 < host.calls[-1][1]["timeout"] <= 2
    monkeypatch.setattr(_runtime.local, "deadline", time.monotonic() - 1, raising=False)
    with pytest.raises(http.Timeout, match="time is up"):
        http.get("https://api.example.com/")
