"""The SDK's pure parts, in-process."""

import logging
import socket
import threading

import pytest

import greffon
from greffon import _runtime, log, system
from greffon._channel import Channel, ProtocolError
from greffon.worker import CallContext, json_safe, schema_model


def test_capture_keeps_up_to_the_limit_and_counts_the_rest():
    ctx = CallContext(limit=10)
    ctx.write("stdout", "hello ")
    ctx.write("stderr", "world!!")
    ctx.write("stdout", "x" * 1000)
    out = ctx.output()
    assert out["stdout"] == "hello "
    assert out["stderr"] == "worl"
    assert out["dropped"] == 3 + 1000


def test_json_safe_marks_types_for_the_host():
    pydantic = pytest.importorskip("pydantic")

    class Args(pydantic.BaseModel):
        n: int

    meta = {"name": "x", "inputs": {"schema": {"a": str, "b": int, "c": {"type": float}}}, "perms": {"net"}}
    safe = json_safe(meta)
    assert safe["inputs"]["schema"] == {"a": "string", "b": "integer", "c": {"type": "number"}}
    assert safe["perms"] == ["net"]
    model = json_safe(Args)["$pydantic"]
    assert model["name"] == "Args"
    assert model["schema"]["required"] == ["n"]
    assert json_safe(lambda: 1) == {"$unsupported": "function"}
    assert json_safe(object) == {"$unsupported": "class object"}
    assert json_safe(float("nan")) == "nan"


def test_schema_model_finds_the_pydantic_class_in_both_spellings():
    pydantic = pytest.importorskip("pydantic")

    class Args(pydantic.BaseModel):
        n: int

    assert schema_model({"inputs": {"schema": Args}}) is Args
    assert schema_model({"inputs.schema": Args}) is Args
    assert schema_model({"inputs": {"schema": {"n": "integer"}}}) is None


def test_outside_a_worker_services_say_so_and_logging_still_works(caplog):
    assert _runtime.channel is None
    with pytest.raises(greffon.NotInWorker, match="only available inside a greffon worker"):
        system.info()
    assert greffon.config() == {}
    logger = log.get_logger("llm")
    with caplog.at_level(logging.INFO):
        logger.info("visible")
    assert "visible" in caplog.text
    with pytest.raises(ValueError, match="unknown log category"):
        log.get_logger("secrets")


def test_progress_outside_a_call_does_nothing_and_checks_its_numbers():
    assert greffon.progress(1, 2, "half") is None
    with pytest.raises(TypeError, match="done must be a number"):
        greffon.progress("1")
    with pytest.raises(TypeError, match="total must be a number"):
        greffon.progress(1, True)


def test_compat_logger_module_reexports_get_logger():
    from app.core import logger as compat

    assert compat.get_logger is log.get_logger
    assert compat.logger.name.startswith("greffon.plugin")
    assert set(compat.CATEGORIES) == {"server", "plugin", "llm", "audit"}


def test_config_is_a_copy():
    _runtime.plugin_config = {"nested": {"a": 1}}
    try:
        got = greffon.config()
        got["nested"]["a"] = 2
        assert greffon.config() == {"nested": {"a": 1}}
    finally:
        _runtime.plugin_config = {}


def frame(obj_bytes):
    return len(obj_bytes).to_bytes(4, "big") + obj_bytes


def test_channel_matches_responses_to_calls_and_refuses_bad_frames():
    ours, theirs = socket.socketpair()
    chan = Channel(ours)
    result = {}

    def caller():
        result["value"] = chan.call("system.info", {}, timeout=5)

    t = threading.Thread(target=caller)
    t.start()
    peer = theirs.makefile("rb")
    size = int.from_bytes(peer.read(4), "big")
    request = __import__("json").loads(peer.read(size))
    assert request["method"] == "system.info"
    theirs.sendall(frame(b'{"id":%d,"result":{"ok":true}}' % request["id"]))
    message = chan.main.read()
    chan.resolve(message)
    t.join(5)
    assert result["value"] == {"ok": True}

    theirs.sendall((1 << 30).to_bytes(4, "big"))
    with pytest.raises(ProtocolError, match="refused"):
        chan.main.read()
    theirs.close()
    ours.close()


def test_a_host_error_answer_raises_host_error():
    ours, theirs = socket.socketpair()
    chan = Channel(ours)
    errors = []

    def caller():
        try:
            chan.call("nope", {}, timeout=5)
        except greffon.HostError as e:
            errors.append((str(e), e.kind))

    t = threading.Thread(target=caller)
    t.start()
    peer = theirs.makefile("rb")
    size = int.from_bytes(peer.read(4), "big")
    request_id = __import__("json").loads(peer.read(size))["id"]
    theirs.sendall(frame(b'{"id":%d,"error":{"kind":"unknown_method","message":"unknown host service"}}' % request_id))
    chan.resolve(chan.main.read())
    t.join(5)
    assert errors == [("unknown host service", "unknown_method")]


def test_llm_and_tasks_need_a_worker_and_check_their_input_first():
    from app.core.llm import LLM as CompatLLM
    from greffon import tasks
    from greffon.llm import LLM, LLMError

    assert greffon.LLM is LLM and CompatLLM is LLM
    with pytest.raises(LLMError, match="prompt must be a string") as e:
        LLM().infer(42)
    assert e.value.kind == "validation"
    with pytest.raises(LLMError, match="options must be a dict"):
        LLM().infer("hi", ["max_tokens"])
    with pytest.raises(greffon.NotInWorker):
        LLM().infer("hi")
    with pytest.raises(greffon.NotInWorker):
        tasks.list()


def test_secret_needs_a_worker_and_a_string_name():
    with pytest.raises(TypeError, match="name must be a string"):
        greffon.secret(None)
    with pytest.raises(greffon.NotInWorker, match="secret.get"):
        greffon.secret("GITHUB_TOKEN")
