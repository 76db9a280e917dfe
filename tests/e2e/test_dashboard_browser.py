"""The dashboard in a real headless browser (Playwright driving Debian's chromium) against a real stack:
the token form, the jobs list and its filters, live updates from GET /events, a job's page (result, log
lines, attempts, pipeline tree), retrying a dead job and cancelling a running one from the dead-letter
view (checked through the API), the other views, and the token form coming back on a 401 and a 403.

Skips, saying why, where no browser can be had: no `playwright` package, or no chromium binary (as
root it tries `apt-get install -y chromium` once). Never `playwright install`: the browser is the
system's. Screenshots go to tests/artifacts/dashboard/ (ignored by git; the paths are printed);
docs/dashboard.png in the README is a copy of jobs.png from a run of this test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import laddr
from tests.support.stack import ADMIN, REPO, TOKENS, Stack

playwright_api = pytest.importorskip(
    "playwright.async_api",
    reason="the browser test needs an importable `playwright` package (pip install playwright)",
    exc_type=ImportError,
)
expect = playwright_api.expect

ARTIFACTS = REPO / "tests" / "artifacts" / "dashboard"
CHROMIUM = Path("/usr/bin/chromium")
APT_TIMEOUT_S = 150
#: how long an expectation waits for the page (each one; the whole test takes a few seconds)
WAIT_MS = 10_000


def find_chromium() -> Path | None:
    """The system's chromium; as root, one `apt-get install -y chromium` when it is missing."""
    found = shutil.which("chromium") or (str(CHROMIUM) if CHROMIUM.exists() else None)
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            subprocess.run(
                ["apt-get", "install", "-y", "chromium"],
                env=env,
                capture_output=True,
                timeout=APT_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            pass
        found = shutil.which("chromium")
    return Path(found) if found else None


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no chromium binary (apt-get install -y chromium) for the browser test")
    async with playwright_api.async_playwright() as pw:
        try:
            launched = await pw.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
        except playwright_api.Error as exc:
            pytest.skip(f"chromium at {chromium} does not start: {exc.message.splitlines()[0]}")
        yield launched
        await launched.close()


def config(make_config: Any) -> Any:
    return make_config(
        plugins={
            "echo": {},
            "echo_py": {"schedules": [{"id": "nightly", "cron": "0 3 * * *", "command": "poll", "payload": {}}]},
            "flaky": {"retry": {"max_attempts": 1}},
            "napper": {},
            **{k: v for k, v in laddr.plugins().items() if k in ("agent", "prompt")},
        },
        pipelines=[
            {"name": "shout", "steps": [{"id": "say", "uses": "echo.poll"}, {"id": "again", "uses": "echo.poll"}]}
        ],
        agents={"helper": laddr.agent(None, "echo", tools=["echo.poll"])},
    )


async def shot(page: Any, name: str, *, full_page: bool = False) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=full_page)
    print(f"dashboard screenshot: {path}")
    return path


async def test_the_dashboard_in_a_browser(make_config: Any, start_stack: Any, browser: Any, tmp_path: Path) -> None:
    s: Stack = await start_stack(config(make_config))
    client = s.client
    assert client is not None
    echoes = [await client.submit("echo", "poll", {"message": f"hello {i}"}) for i in range(3)]
    py = await client.submit("echo_py", "poll", {"message": "from python"})
    dead = await client.submit("flaky", "poll", {"counter_file": str(tmp_path / "n"), "succeed_on": 2})
    status, run = await client.post("/pipeline/shout", json={"payload": {"message": "piped"}})
    assert status == 202, run
    status, chat = await client.get("/api/agents/helper/chat?message=hello%20dashboard")
    assert status == 200 and chat["status"] == "completed", chat
    for job_id in [*echoes, py, run["job_id"]]:
        assert (await client.wait_job(job_id))["status"] == "succeeded"
    assert (await client.wait_job(dead))["status"] == "dead"
    napping = await client.submit("napper", "poll", {"seconds": 30})
    await client.wait_job(napping, {"running"})
    await laddr.projected(s)

    context = await browser.new_context(viewport={"width": 1440, "height": 900}, color_scheme="light")
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    expect.set_options(timeout=WAIT_MS)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    # a refused fetch is logged as "Failed to load resource" by the browser itself: that is the 401/403 step
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console: {msg.text}")
            if msg.type == "error" and "Failed to load resource" not in msg.text
            else None
        ),
    )

    # the page loads without a token and asks for one
    await page.goto(s.url + "/ui")
    await expect(page.locator("#token-input")).to_be_visible()
    await shot(page, "token")
    await page.fill("#token-input", ADMIN)
    await page.click("#token-save")
    await expect(page.locator("#token-dialog")).to_be_hidden()

    # the jobs, newest first, and live updates from the event stream
    rows = page.locator("tr.job-row")
    for job_id in [*echoes, py, dead, napping]:
        await expect(page.locator(f'tr.job-row[data-job="{job_id}"]')).to_be_visible()
    await expect(page.locator(f'tr.job-row[data-job="{napping}"] .badge')).to_have_text("running")
    await expect(page.locator("#live")).to_have_class(re.compile(r"\blive live\b"))
    fresh = await client.submit("echo", "poll", {"message": "live one"})
    await expect(page.locator(f'tr.job-row[data-job="{fresh}"] .badge')).to_have_text("succeeded")
    # the status comes from the stream at once; the run time once the list reloads from the caught-up read model
    await expect(page.locator(f'tr.job-row[data-job="{fresh}"] td:nth-child(7)')).to_have_text(re.compile(r"\d"))
    await expect(page.locator(".stats .stat").first).to_be_visible()
    await shot(page, "jobs")

    # filters: by status (GET /jobs), then a text search over the attempts (GET /job-logs)
    await page.select_option("#filter-status", "dead")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_have_attribute("data-job", dead)
    await expect(page.locator("#jobs-count")).to_have_text("1\u20131 of 1")  # en dash, as the pager writes it
    await page.select_option("#filter-status", "")
    await page.fill("#filter-query", "flaky failure")
    await page.click("#filter-apply")
    await expect(page.locator("table.attempts tr.job-row")).to_have_count(1)
    await expect(page.locator("table.attempts")).to_contain_text("flaky failure on call 1")
    await page.fill("#filter-query", "")
    await page.select_option("#filter-plugin", "echo")
    await expect(page.locator("table.jobs tr.job-row")).to_have_count(3 + 1 + 2)  # the pipeline's two steps ran echo

    # a job's page: its result, its log lines, its attempts
    await page.click(f'tr.job-row[data-job="{echoes[1]}"] td:nth-child(2)')
    await expect(page.locator("#job-result")).to_contain_text("Echoed: hello 1")
    await expect(page.locator(".attempt .log-line").first).to_contain_text("Echoed: hello 1")
    await expect(page.locator(".job-head .badge")).to_have_text("succeeded")
    await shot(page, "job", full_page=True)

    # a pipeline run's page: the tree of its steps
    await page.goto(f"{s.url}/ui#/job/{run['job_id']}")
    await expect(page.locator("ul.tree .node")).to_have_count(3)
    await expect(page.locator(".card-body > ul.tree")).to_contain_text("step again")
    await shot(page, "pipeline-tree", full_page=True)

    # dead letters: retry the dead job, cancel the running one
    await page.click("#nav-dead")
    row = page.locator(f'table.dead tr[data-job="{dead}"]')
    await expect(row).to_contain_text("flaky failure on call 1")
    await row.locator("button.retry").click()
    retried = row.locator(".retried a")
    await expect(retried).to_be_visible()
    again = await retried.get_attribute("title")
    assert again and again != dead
    new_job = await client.wait_job(again)
    assert new_job["status"] == "succeeded" and new_job["submitted_by"] == "retry", new_job
    assert (tmp_path / "n").read_text() == "2"  # the plugin ran once more
    status, flaky = await client.get("/jobs?plugin=flaky")
    assert status == 200 and {j["job_id"] for j in flaky["jobs"]} == {dead, again}
    cancel = page.locator(f'tr[data-job="{napping}"] button.cancel')
    await cancel.click()
    await expect(cancel).to_have_text("Confirm cancel")
    await cancel.click()
    assert (await client.wait_job(napping, {"cancelled"}, timeout_s=15))["status"] == "cancelled"
    await expect(page.locator(f'tr[data-job="{napping}"]')).to_have_count(0)  # in flight no more (live)
    await shot(page, "dead")

    # the other views, from what the API answers
    await page.click("#nav-pipelines")
    await expect(page.locator('tr[data-pipeline="shout"]')).to_contain_text("say echo.poll")
    await expect(page.locator(f'tr.job-row[data-job="{run["job_id"]}"]')).to_be_visible()
    await shot(page, "pipelines")
    await page.click("#nav-schedules")
    await expect(page.locator('tr[data-schedule="echo_py/nightly"]')).to_contain_text("0 3 * * *")
    await shot(page, "schedules")
    await page.click("#nav-plugins")
    await page.click('tr[data-plugin="echo"]')
    await expect(page.locator("#plugin-detail")).to_contain_text("POST /plugin/echo/poll")
    await shot(page, "plugins", full_page=True)
    await page.click("#nav-agents")
    await expect(page.locator('tr[data-agent="helper"]')).to_contain_text("offline echo")
    await page.click(f'details.run[data-job="{chat["task_id"]}"] summary')
    await expect(page.locator(f'details.run[data-job="{chat["task_id"]}"]')).to_contain_text("llm_usage")
    await expect(page.locator(f'details.run[data-job="{chat["task_id"]}"] .chip.tokens')).to_contain_text("tokens")
    await shot(page, "agents")

    # narrow screens: the navigation folds behind a menu button, tables become stacked rows
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.click("#nav-jobs", force=True)
    await expect(page.locator("#menu")).to_be_visible()
    await expect(page.locator(f'tr.job-row[data-job="{dead}"]')).to_be_visible()
    await expect(page.locator("#nav-jobs")).not_to_be_in_viewport()
    await page.click("#menu")
    await expect(page.locator("#nav-jobs")).to_be_in_viewport()
    await page.click("#nav-jobs")  # choosing a view folds the navigation again
    await expect(page.locator("#nav-jobs")).not_to_be_in_viewport()
    await shot(page, "narrow")
    await page.set_viewport_size({"width": 1440, "height": 900})
    await page.emulate_media(color_scheme="dark")  # the system's dark setting
    await expect(page.locator(f'tr.job-row[data-job="{dead}"]')).to_be_visible()
    await shot(page, "dark")
    await page.emulate_media(color_scheme="light")

    # a wrong token: 401, the token form again; a token without jobs:ro: 403, the same
    await page.evaluate("localStorage.setItem('headrace.token', 'not-a-token')")
    await page.reload()
    await expect(page.locator("#token-dialog .notice")).to_contain_text("401")
    await page.fill("#token-input", TOKENS["events_ro"][0])
    await page.click("#token-save")
    await expect(page.locator("#token-dialog .notice")).to_contain_text("403")
    await expect(page.locator("#token-dialog .notice")).to_contain_text("jobs:ro")
    await context.close()
    assert not problems, problems
