"""/ui/ in headless Chromium, served by gunicorn on real Redis, as an operator sees it."""

import base64
import json
import os
import shutil
import time
import urllib.error
import urllib.request

import pytest
import redis
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.wait import WebDriverWait

from app import keys

from .conftest import call

INGEST_KEY = "itest-ui-ingest-key"
OPERATOR = ("operator", "itest-operator-pw")
EU_OPERATOR = ("eu-operator", "itest-eu-pw")
SCRIPT_AGENT = "<script>document.title='owned'</script>"
SCRIPT_TASK = "<b>task</b>"
SCRIPT_NOTE = "</code><script>document.title='row'</script>"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
)
# Read in one script run, so the page's own reload cannot land between two reads.
STREAM_ROWS = """return [...document.querySelectorAll('table.streams tbody tr')].map(
    tr => ({stale: tr.classList.contains('stale'), cells: [...tr.cells].map(c => c.innerText)}))"""
ROW_CELLS = """return [...document.querySelectorAll('table.rows tbody tr')].map(
    tr => [...tr.cells].map(c => c.innerText))"""


def stream_rows(browser) -> list[dict]:
    """The stream table's rows once it has some: the page may be reloading itself."""
    return WebDriverWait(browser, 15, poll_frequency=0.1).until(
        lambda driver: driver.execute_script(STREAM_ROWS)
    )


LINK = (
    "return [...document.links].filter(a => a.innerText.trim() === arguments[0]).map(a => a.href)"
)


def browser_binaries() -> tuple[str, str]:
    """Chromium and chromedriver from PATH; skip without them (fail on CI)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        reason = (
            "chromium and chromedriver not installed (apt-get install chromium chromium-driver)"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return chromium, driver


@pytest.fixture(scope="module")
def server(gunicorn_server, redis_server):
    users = [
        {"user": OPERATOR[0], "password": OPERATOR[1], "scopes": ["read"]},
        {
            "user": EU_OPERATOR[0],
            "password": EU_OPERATOR[1],
            "scopes": ["read"],
            "agents": ["agent-eu"],
        },
    ]
    return gunicorn_server(
        {
            "REDIS_URL": redis_server.url,
            "API_KEYS": json.dumps([{"key": INGEST_KEY, "scopes": ["ingest"]}]),
            "BASIC_AUTH_USERS": json.dumps(users),
            "UI_STALE_AFTER_S": "60",
        }
    )


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, driver_path = browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium')}")
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.execute_cdp_cmd("Network.enable", {})
    try:
        yield driver
    finally:
        driver.quit()


def log_in(driver, user: tuple[str, str]) -> None:
    """Send Basic credentials with every request, as a browser does once prompted."""
    token = base64.b64encode(":".join(user).encode()).decode()
    headers = {"headers": {"Authorization": f"Basic {token}"}}
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", headers)


def ingest(server, agent_id, task_id, *events, **flags):
    body = {"agent_id": agent_id, "task_id": task_id, "events": list(events), **flags}
    reply = call("POST", f"{server.url}/ingest-batch", body, api_key=INGEST_KEY)
    assert reply.status == 200, reply.body
    return reply.body


@pytest.fixture(scope="module")
def streams(server, redis_server):
    """Four streams: plain, snapshot running, stale for two hours, and a hostile agent id.

    Made once for the module: emptying Redis under the running server would leave
    re-sent streams out of the index, which each worker refreshes at most once a second.
    """
    real_redis = redis.Redis.from_url(redis_server.url, decode_responses=True)
    real_redis.flushall()
    ingest(
        server, "agent-eu", "orders", *({"id": n, "total": n * 10, "index": n} for n in (1, 2, 3))
    )
    started = ingest(
        server, "agent-us", "customers", {"id": 1, "index": 7}, snapshot_sync_suggested=True
    )
    assert started["snapshot_needed"]
    ingest(server, "agent-us", "customers", {"id": 2, "index": 8})
    ingest(server, "agent-old", "legacy", {"id": 1, "index": 1})
    ingest(server, SCRIPT_AGENT, SCRIPT_TASK, {"id": "x", "note": SCRIPT_NOTE, "index": 5})
    # The old agent stopped two hours ago: its last update, as the checkpoint and index record it.
    tag = keys.stream_tag("agent-old", "legacy")
    two_hours_ago = int(time.time() * 1000) - 2 * 3600 * 1000
    real_redis.hset(keys.checkpoint_key("fusink", tag), "updated_at", two_hours_ago)
    real_redis.zadd(keys.streams_key("fusink"), {tag: two_hours_ago})
    real_redis.close()


def test_the_operator_page_in_chromium(server, streams, browser):
    log_in(browser, OPERATOR)
    browser.get(f"{server.url}/ui/")
    listed = {row["cells"][0]: row for row in stream_rows(browser)}
    assert set(listed) == {"agent-eu", "agent-us", "agent-old", SCRIPT_AGENT}
    assert [row["cells"][0] for row in stream_rows(browser)][-1] == "agent-old"
    assert {agent for agent, row in listed.items() if row["stale"]} == {"agent-old"}
    assert listed["agent-old"]["cells"][3] == "2 h ago stale"
    eu = listed["agent-eu"]["cells"]
    assert eu[1:3] == ["orders", "3"] and eu[3].endswith(" s ago") and eu[4:7] == ["3", "3", "1"]
    assert listed["agent-us"]["cells"][7].startswith("running")
    assert listed[SCRIPT_AGENT]["cells"][1] == SCRIPT_TASK  # shown as text, not run or parsed
    assert browser.title == "Streams · fusink"
    # The stylesheet loaded under the CSP: the stale row has its colour.
    stale_colour = "return getComputedStyle(document.querySelector('tr.stale')).backgroundColor"
    assert browser.execute_script(stale_colour) == "rgb(255, 244, 224)"


def test_the_csp_blocks_an_injected_script_and_runs_the_pages_own(server, streams, browser):
    log_in(browser, OPERATOR)
    browser.get(f"{server.url}/ui/")
    browser.execute_script(
        """document.addEventListener(
            'securitypolicyviolation', e => window.blocked = e.violatedDirective);
        const script = document.createElement('script');
        script.textContent = 'window.injected = true';
        document.head.appendChild(script);
        window.before_reload = true;"""
    )
    wait = WebDriverWait(browser, 15, poll_frequency=0.1)
    assert wait.until(lambda d: d.execute_script("return window.blocked")).startswith("script-src")
    assert browser.execute_script("return window.injected") is None
    # The page's own inline script is admitted: it reloads the page every few seconds.
    wait.until(lambda d: d.execute_script("return window.before_reload === undefined"))
    assert browser.execute_script(STREAM_ROWS)


def test_a_stream_page_shows_hostile_values_as_text_and_pages_its_rows(server, streams, browser):
    log_in(browser, OPERATOR)
    browser.get(f"{server.url}/ui/")
    (link,) = browser.execute_script(LINK, SCRIPT_AGENT)
    browser.get(link)
    heading = browser.execute_script("return document.querySelector('h1').innerText")
    assert heading == f"{SCRIPT_AGENT} / {SCRIPT_TASK}"
    ((key, index, row),) = browser.execute_script(ROW_CELLS)
    assert (key, index) == ("x", "5") and json.loads(row)["note"] == SCRIPT_NOTE
    assert browser.title == f"{SCRIPT_AGENT} / {SCRIPT_TASK} · fusink"

    browser.get(f"{server.url}/ui/stream?agent_id=agent-eu&task_id=orders&limit=2")
    seen = []
    for _ in range(4):
        seen += browser.execute_script(ROW_CELLS)
        following = browser.execute_script(LINK, "Next page →")
        if not following:
            break
        browser.get(following[0])
    assert sorted(key for key, _, _ in seen) == ["1", "2", "3"]
    assert {(key, json.loads(row)["total"]) for key, _, row in seen} == {
        ("1", 10),
        ("2", 20),
        ("3", 30),
    }


def test_a_user_limited_to_an_agent_sees_only_its_streams(server, streams, browser):
    log_in(browser, EU_OPERATOR)
    browser.get(f"{server.url}/ui/")
    assert [row["cells"][0] for row in stream_rows(browser)] == ["agent-eu"]
    token = base64.b64encode(":".join(EU_OPERATOR).encode()).decode()
    request = urllib.request.Request(
        f"{server.url}/ui/stream?agent_id=agent-us&task_id=customers",
        headers={"Authorization": f"Basic {token}"},
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    assert raised.value.code == 403
    raised.value.close()


def test_a_browser_without_credentials_gets_the_basic_prompt(server):
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(f"{server.url}/ui/", timeout=10)
    assert raised.value.code == 401
    assert raised.value.headers["WWW-Authenticate"].startswith("Basic ")
    raised.value.close()
