"""The dashboard in real Chromium, driven by Playwright, against the real
`greffon serve` that tests/it/dashboard.rs started in a temp home.

Selectors are what a person sees: roles, accessible names and labels.
Every page records its console; a test fails on a script error, and on a
failed request other than the statuses it provokes on purpose.

Environment: GREFFON_BIN, GREFFON_HOME, GREFFON_URL, GREFFON_CHROMIUM.
"""

import json
import os
import re
import subprocess

import pytest
from playwright.sync_api import expect, sync_playwright

BIN = os.environ["GREFFON_BIN"]
HOME = os.environ["GREFFON_HOME"]
BASE = os.environ["GREFFON_URL"]
CHROMIUM = os.environ.get("GREFFON_CHROMIUM", "/usr/bin/chromium")
# Chromium without the services it would call home for: this machine's
# network is closed, and a test must not depend on it.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RESOURCE_ERROR = re.compile(r"Failed to load resource: the server responded with a status of (\d+)")

expect.set_options(timeout=20_000)


def greffon(*args):
    out = subprocess.run([BIN, "--home", HOME, *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out
    return out.stdout


def login_link():
    return greffon("dashboard").strip()


def token():
    with open(os.path.join(HOME, "app", "token")) as f:
        return f.read().strip()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Console:
    """What a page said on its console, and the statuses a test allows."""

    def __init__(self, page):
        self.errors = []
        self.allowed = set()
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def check(self):
        unexpected = []
        for text in self.errors:
            m = RESOURCE_ERROR.search(text)
            if not (m and int(m.group(1)) in self.allowed):
                unexpected.append(text)
        assert not unexpected, f"console errors: {unexpected}"


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.console = Console(page)
    yield page
    try:
        page.console.check()
    finally:
        context.close()


def logged_in(page, path="/"):
    page.goto(login_link())
    expect(page.get_by_role("heading", name="Plugins", exact=True)).to_be_visible()
    if path != "/":
        page.goto(BASE + path)
    return page


def card(page, name):
    return page.get_by_role("article", name=name, exact=True)


def test_without_the_link_there_is_a_login_form_and_no_data(page):
    page.console.allowed = {401}
    page.goto(BASE + "/plugins/echo")
    expect(page.get_by_label("Token")).to_be_visible()
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    assert "echo" not in page.content().replace("/plugins/echo", "")
    status = page.evaluate("fetch('/v1/plugins').then(r => r.status)")
    assert status == 401
    # Pasting the token into the form logs in and lands on the page asked for.
    page.get_by_label("Token").fill(token())
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="echo", exact=True)).to_be_visible()
    assert page.url == BASE + "/plugins/echo"


def test_the_login_link_sets_a_strict_cookie_and_drops_the_token(page):
    logged_in(page)
    assert "token" not in page.url, page.url
    assert page.url == BASE + "/"
    cookies = page.context.cookies()
    assert len(cookies) == 1, cookies
    c = cookies[0]
    assert (c["name"], c["httpOnly"], c["sameSite"], c["path"]) == ("greffon_session", True, "Strict", "/")
    # Scripts of the page cannot read it.
    assert "greffon_session" not in page.evaluate("document.cookie")


def test_the_plugin_list_shows_state_permissions_reach_and_calls(page):
    for _ in range(2):
        page.request.post(
            BASE + "/v1/plugins/echo/run",
            headers={"Authorization": "Bearer " + token()},
            data={"city": "Nice"},
        )
    logged_in(page)
    echo = card(page, "echo")
    expect(echo).to_contain_text("enabled")
    expect(echo).to_contain_text("Echoes its arguments")
    calls = echo.locator("dt:text-is('Calls') + dd")
    assert int(calls.inner_text()) >= 2
    spare = card(page, "spare")
    expect(spare).to_contain_text("net")
    expect(spare).to_contain_text("example.com")
    broken = card(page, "broken")
    expect(broken).to_contain_text("failed:")
    expect(card(page, "later")).to_contain_text("disabled")


def test_a_deep_link_survives_a_reload(page):
    logged_in(page, "/plugins/crashy")
    expect(page.get_by_role("heading", name="crashy", exact=True)).to_be_visible()
    page.reload()
    expect(page.get_by_role("heading", name="crashy", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name="Crash dumps")).to_be_visible()
    page.goto(BASE + "/tasks")
    expect(page.get_by_role("heading", name="Tasks", exact=True)).to_be_visible()
    page.go_back()
    expect(page.get_by_role("heading", name="crashy", exact=True)).to_be_visible()


def test_the_run_form_follows_the_schema_and_shows_the_result(page):
    logged_in(page)
    page.get_by_role("link", name="echo", exact=True).click()
    city = page.get_by_label("city", exact=True)
    n = page.get_by_label("n", exact=True)
    loud = page.get_by_label("loud", exact=True)
    expect(city).to_have_attribute("required", "")
    expect(n).to_have_attribute("type", "number")
    expect(n).to_have_attribute("min", "1")
    expect(n).to_have_attribute("max", "5")
    expect(n).to_have_value("1")
    expect(loud).not_to_be_checked()
    city.fill("Oslo")
    n.fill("2")
    loud.check()
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_label("Result")).to_contain_text('"text": "OSLOOSLO"')
    expect(page.get_by_role("alert")).to_have_count(0)


def test_a_schema_violation_is_an_alert_naming_the_field(page):
    page.console.allowed = {422}
    logged_in(page, "/plugins/echo")
    page.get_by_label("city", exact=True).fill("Oslo")
    page.get_by_label("n", exact=True).fill("9")
    page.get_by_role("button", name="Run").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("'n'")
    expect(alert).to_contain_text("maximum")
    # A required field left empty is named too.
    page.get_by_label("city", exact=True).fill("")
    page.get_by_label("n", exact=True).fill("1")
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_role("alert")).to_contain_text("city")


def test_a_plugin_is_enabled_from_its_page(page):
    logged_in(page, "/plugins/later")
    state = page.locator("dt:text-is('State') + dd").first
    expect(state).to_have_text("disabled")
    expect(page.get_by_role("button", name="Disable")).to_be_disabled()
    page.get_by_role("button", name="Enable").click()
    expect(state).to_have_text("enabled")
    expect(page.get_by_role("button", name="Enable")).to_be_disabled()
    assert json.loads(greffon("plugin", "info", "later", "--json"))["state"] == "enabled"


def test_a_change_made_from_the_cli_appears_without_reloading(page):
    logged_in(page)
    spare = card(page, "spare")
    expect(spare).to_contain_text("enabled")
    page.evaluate("window.notReloaded = true")
    greffon("plugin", "disable", "spare")
    expect(spare).to_contain_text("disabled")
    assert page.evaluate("window.notReloaded === true")


def test_a_crash_is_an_alert_and_its_dump_is_readable(page):
    page.console.allowed = {502}
    logged_in(page, "/plugins/crashy")
    expect(page.get_by_text("No crash dump.")).to_be_visible()
    page.evaluate("window.notReloaded = true")
    page.get_by_label("crash", exact=True).check()
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_role("alert")).to_contain_text("exited with code 3")
    dumps = page.get_by_role("region", name="Crash dumps")
    summary = dumps.locator("summary").first
    expect(summary).to_contain_text("exited with code 3")
    summary.click()
    expect(dumps.locator("pre").first).to_contain_text("plugin: crashy")
    expect(page.locator("dt:text-is('Worker crashes') + dd")).not_to_have_text("0")
    assert page.evaluate("window.notReloaded === true")


def test_a_task_is_created_from_the_form_and_run_now(page):
    logged_in(page, "/tasks")
    expect(page.get_by_role("heading", name="Tasks", exact=True)).to_be_visible()
    page.get_by_label("Name", exact=True).fill("daily-echo")
    page.get_by_label("Plugin", exact=True).select_option("echo")
    page.get_by_label("Trigger", exact=True).select_option("interval")
    page.get_by_label("Every (seconds)").fill("3600")
    page.get_by_label("city", exact=True).fill("Rome")
    page.get_by_role("button", name="Create").click()
    task = card(page, "daily-echo")
    expect(task).to_contain_text("every 3600 s")
    expect(task).to_contain_text("never")
    task.get_by_role("button", name="Run now").click()
    expect(task.locator("dt:text-is('Last run') + dd")).to_contain_text("ok")
    task.get_by_role("button", name="History").click()
    expect(task.get_by_role("table")).to_contain_text("Rome")
    # Disable, and the next fire says so.
    task.get_by_role("button", name="Disable").click()
    expect(task.locator("dt:text-is('Next fire') + dd")).to_have_text("disabled")
    # A bad trigger is an alert naming what is wrong.
    page.console.allowed = {422}
    page.get_by_label("Name", exact=True).fill("bad")
    page.get_by_label("Trigger", exact=True).select_option("cron")
    page.get_by_label("Cron expression").fill("not a cron")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("alert")).to_contain_text("cron")


def test_the_llm_page_streams_tokens_as_they_come(page):
    logged_in(page, "/llm")
    page.get_by_label("Prompt").fill("Write one sentence about the sea.")
    page.get_by_text("Options").click()
    page.get_by_label("max_tokens").fill("24")
    page.get_by_label("seed").fill("3")
    answer = page.get_by_label("Generated text")
    # Count the answer's updates: streamed, it grows many times.
    page.evaluate(
        """() => {
            window.updates = 0;
            const pre = document.querySelector('pre[aria-label="Generated text"]');
            new MutationObserver(() => window.updates++).observe(pre, {childList: true, characterData: true, subtree: true});
        }"""
    )
    page.get_by_role("button", name="Generate").click()
    expect(page.get_by_role("status").filter(has_text="Done:")).to_be_visible(timeout=120_000)
    assert answer.inner_text().strip(), "no text"
    assert page.evaluate("window.updates") >= 3, "the answer came in one piece"


def test_the_logs_page_filters_by_category_and_text(page):
    logged_in(page, "/logs")
    page.get_by_label("Category").select_option("audit")
    page.get_by_label("Filter").fill("crashy")
    table = page.get_by_role("table")
    expect(table).to_contain_text("crashy")
    expect(table).not_to_contain_text("echo")
    assert "category=audit" in page.url and "q=crashy" in page.url
    page.get_by_label("Filter").fill("")
    page.get_by_label("Category").select_option("server")
    expect(page.get_by_role("table")).to_contain_text("greffon serving")


def test_keyboard_only_and_a_narrow_screen(page):
    page.set_viewport_size({"width": 400, "height": 800})
    logged_in(page, "/plugins/echo")
    for path in ["/", "/plugins/echo", "/tasks", "/llm", "/logs"]:
        page.goto(BASE + path)
        expect(page.locator("main h1")).to_be_visible()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 400, f"{path} is {width} px wide at 400"
        unnamed = page.evaluate(
            """() => [...document.querySelectorAll('button, input, select, textarea')]
                .filter(el => el.type !== 'hidden')
                .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.textContent.trim())
                .map(el => el.outerHTML)"""
        )
        assert not unnamed, f"controls without a name on {path}: {unnamed}"
    # Keyboard only: from the address bar to a result.
    page.goto(BASE + "/plugins/echo")
    page.get_by_label("city", exact=True).wait_for()
    for _ in range(60):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id && document.activeElement.labels[0]?.textContent.trim() === 'city'"):
            break
    else:
        pytest.fail("Tab never reached the city field")
    page.keyboard.type("Lima")
    page.keyboard.press("Enter")
    expect(page.get_by_label("Result")).to_contain_text("Lima")
    # A navigation link, by keyboard.
    page.get_by_role("link", name="Tasks").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Tasks", exact=True)).to_be_visible()
