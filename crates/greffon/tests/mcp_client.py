#!/usr/bin/env python3
"""Drives greffon's MCP server with the official Python client (mcp 2.3.0),
as an assistant would. Run by `tests/it/mcp.rs`; exits 1 naming the first
expectation that failed.

    mcp_client.py SCENARIO --transport stdio|http --mode legacy|auto
                  --greffon BIN --home HOME [--url URL --token TOKEN]
                  [--trigger cli|file]

Scenarios:
- calls: the tool list (schemas, annotations), a call, a schema violation,
  a plugin's own error, a crash then the next call, an unknown and a
  disabled tool, progress, cancellation of a sleeping plugin.
- changes: the client is told when the tool list changes (enable, reload,
  disable through the CLI, or an edited plugin file seen by the watcher).
"""

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

MODERN = "2026-07-28"


class Failed(Exception):
    pass


def expect(condition, what):
    if not condition:
        raise Failed(what)


def connect(opts, message_handler=None):
    if opts.transport == "stdio":
        server = StdioServerParameters(command=opts.greffon, args=["--home", opts.home, "mcp"])
    else:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {opts.token}"}, timeout=30)
        server = streamable_http_client(opts.url, http_client=http)
    return Client(server, mode=opts.mode, read_timeout_seconds=30, message_handler=message_handler)


def check_generation(client, opts):
    version = client.protocol_version
    if opts.mode == "auto":
        expect(version == MODERN, f"mode=auto negotiated {version}, not {MODERN}")
    else:
        expect(version < MODERN, f"mode=legacy negotiated {version}")


def error_text(result):
    expect(result.is_error, f"expected an error result, got {result}")
    return " ".join(getattr(block, "text", "") for block in result.content)


async def scenario_calls(opts):
    async with connect(opts) as client:
        check_generation(client, opts)
        listing = await client.list_tools()
        tools = {t.name: t for t in listing.tools}
        expect(sorted(tools) == ["echo", "fetch", "flaky", "prog", "ret", "slow", "writer"], f"tools: {sorted(tools)}")
        schema = tools["echo"].input_schema
        expect(schema.get("type") == "object", f"echo schema: {schema}")
        n = schema["properties"]["n"]
        expect(n.get("type") == "integer" and n.get("maximum") == 5 and n.get("default") == 1, f"echo.n: {n}")
        expect(tools["echo"].description == "Echoes its arguments", f"description: {tools['echo'].description}")
        ann = tools["echo"].annotations
        expect(ann.read_only_hint is True and ann.open_world_hint is False, f"echo annotations: {ann}")
        ann = tools["fetch"].annotations
        expect(ann.open_world_hint is True, f"fetch annotations: {ann}")
        ann = tools["writer"].annotations
        expect(ann.read_only_hint is False, f"writer annotations: {ann}")

        result = await client.call_tool("echo", {"n": 3})
        expect(not result.is_error, f"echo failed: {result}")
        expect(result.structured_content == {"args": {"n": 3}}, f"structured: {result.structured_content}")
        expect(json.loads(result.content[0].text) == {"args": {"n": 3}}, f"text: {result.content}")
        result = await client.call_tool("echo", {})
        expect(result.structured_content == {"args": {"n": 1}}, f"default not filled: {result.structured_content}")

        text = error_text(await client.call_tool("echo", {"n": 9}))
        expect("'n'" in text and "5" in text and "invalid arguments" in text, f"violation: {text}")

        result = await client.call_tool("ret", {})
        expect(result.is_error and result.structured_content == {"error": "mine"}, f"plugin error: {result}")

        text = error_text(await client.call_tool("flaky", {"crash": True}))
        expect("worker ended" in text, f"crash: {text}")
        result = await client.call_tool("flaky", {})
        expect(not result.is_error and result.structured_content == {"ok": True}, f"after the crash: {result}")

        for missing in ("nope", "off"):
            try:
                await client.call_tool(missing, {})
            except MCPError as e:
                expect(f"'{missing}'" in str(e), f"the error does not name {missing}: {e}")
            else:
                raise Failed(f"calling {missing} was not a protocol error")

        reports = []

        async def on_progress(progress, total, message):
            reports.append((progress, total, message))

        result = await client.call_tool("prog", {}, progress_callback=on_progress)
        expect(result.structured_content == {"done": 3}, f"prog: {result}")
        expect(reports == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")], f"progress: {reports}")
        result = await client.call_tool("prog", {})
        expect(result.structured_content == {"done": 3}, "prog without a progress token")

        await cancellation(client)
    return "calls ok"


async def cancellation(client):
    started = anyio.Event()

    async def on_progress(progress, total, message):
        started.set()

    async def sleeper():
        await client.call_tool("slow", {"action": "sleep", "s": 30}, progress_callback=on_progress)

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper)
        with anyio.fail_after(15):
            await started.wait()
        tg.cancel_scope.cancel()
    cancelled_at = time.monotonic()
    # The plugin's one worker is free again at once: the sleeping call
    # ended (had it gone on, this call would wait behind it in the queue).
    with anyio.fail_after(10):
        result = await client.call_tool("slow", {"action": "status"})
    expect(result.structured_content == {"running": 0}, f"the cancelled call still runs: {result}")
    expect(time.monotonic() - cancelled_at < 1.0, f"the worker was freed late: {result}")
    result = await client.call_tool("slow", {"action": "sleep", "s": 0})
    expect(not result.is_error, f"the next call: {result}")


def greffon(opts, *args):
    out = subprocess.run([opts.greffon, "--home", opts.home, *args], capture_output=True, text=True, timeout=60)
    expect(out.returncode == 0, f"greffon {args} failed: {out.stderr}")


async def scenario_changes(opts):
    changed = asyncio.Queue()

    async def on_message(message):
        if getattr(message, "method", None) == "notifications/tools/list_changed":
            changed.put_nowait(True)

    async with connect(opts, on_message) as client:
        check_generation(client, opts)
        if client.protocol_version >= MODERN:
            async with client.listen(tools_list_changed=True) as sub:

                async def pump():
                    async for _event in sub:
                        changed.put_nowait(True)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(pump)
                    await changes_seen(client, opts, changed)
                    tg.cancel_scope.cancel()
        else:
            await changes_seen(client, opts, changed)
    return "changes ok"


async def told(changed, what):
    try:
        with anyio.fail_after(10):
            await changed.get()
    except TimeoutError:
        raise Failed(f"no tool-list change was announced after {what}") from None
    while not changed.empty():
        changed.get_nowait()


async def names(client):
    return sorted(t.name for t in (await client.list_tools()).tools)


async def changes_seen(client, opts, changed):
    expect(await names(client) == ["echo"], f"start: {await names(client)}")
    if opts.trigger == "file":
        plugin = Path(opts.home) / "plugins" / "echo" / "plugin.py"
        plugin.write_text(plugin.read_text().replace("'maximum': 5", "'maximum': 7"))
        await told(changed, "an edit of echo's plugin.py")
        tools = (await client.list_tools()).tools
        expect(tools[0].input_schema["properties"]["n"]["maximum"] == 7, f"reloaded schema: {tools[0].input_schema}")
        return
    greffon(opts, "plugin", "enable", "later")
    await told(changed, "plugin enable later")
    expect(await names(client) == ["echo", "later"], f"after enable: {await names(client)}")
    result = await client.call_tool("later", {})
    expect(result.structured_content == {"args": {}}, f"the new tool: {result}")
    greffon(opts, "plugin", "reload", "echo")
    await told(changed, "plugin reload echo")
    greffon(opts, "plugin", "disable", "later")
    await told(changed, "plugin disable later")
    expect(await names(client) == ["echo"], f"after disable: {await names(client)}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["calls", "changes"])
    parser.add_argument("--transport", choices=["stdio", "http"], required=True)
    parser.add_argument("--mode", choices=["legacy", "auto"], required=True)
    parser.add_argument("--greffon", required=True)
    parser.add_argument("--home", required=True)
    parser.add_argument("--url")
    parser.add_argument("--token")
    parser.add_argument("--trigger", choices=["cli", "file"], default="cli")
    opts = parser.parse_args()
    run = {"calls": scenario_calls, "changes": scenario_changes}[opts.scenario]
    try:
        print(asyncio.run(run(opts)))
    except Failed as e:
        print(f"FAILED ({opts.scenario}, {opts.transport}, {opts.mode}): {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
