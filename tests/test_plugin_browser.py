"""The plugin in the real ``airflow api-server``, used through the Airflow UI by headless Chromium.

The server runs with the embedded default's environment (simple auth manager, passwords file) over a home
populated like tests/test_plugin.py. Chromium is driven over the Chrome DevTools protocol with ``websockets``
(already installed for uvicorn), so the only extra dependency is the ``chromium`` system package. The
screenshots are kept in the test's tmp dir (pytest keeps the last runs) for a human to look at.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.airflow_env import ADMIN_USER, airflow_env, passwords_file
from test_plugin import populate
from websockets.sync.client import connect

from postergenre.config import Settings

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--window-size=1400,1000",
)
SERVER_START_TIMEOUT_S = 150


def _chromium() -> str:
    """Chromium's path; a missing browser fails under CI (it must be installed there) and skips elsewhere."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("chromium is not installed (scripts/system-deps.sh installs it)")
    pytest.skip("chromium is not installed: apt-get install chromium")


def _stop(proc: subprocess.Popen, grace_s: float = 20) -> None:
    """Stop a process started in its own session, with everything it forked."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Chromium:
    """Just enough of the DevTools protocol: one page, navigate, evaluate JS, type, screenshot."""

    def __init__(self, executable: str, profile: Path) -> None:
        profile.mkdir(parents=True)
        self.log = profile.parent / "chromium.log"
        self.proc = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
            start_new_session=True,
        )
        port_file = profile / "DevToolsActivePort"  # "<port>\n<browser ws path>" once it listens
        deadline = time.monotonic() + 60
        while len(port_file.read_text().split() if port_file.exists() else []) < 2:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                _stop(self.proc)
                raise RuntimeError(f"chromium did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)
        port, path = port_file.read_text().split()[:2]
        self.ws = connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=30)
        self.ids = itertools.count(1)
        target = self._call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self._call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def _call(self, method: str, session: str | None = None, **params) -> dict:
        msg_id = next(self.ids)
        message = {"id": msg_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:  # events are not needed: skip them
            reply = json.loads(self.ws.recv(timeout=60))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def page(self, method: str, **params) -> dict:
        return self._call(method, self.session, **params)

    def evaluate(self, expression: str):
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 60):
        """Poll a JS expression (which must return plain data) until it is truthy."""
        deadline = time.monotonic() + timeout_s
        while not (value := self.evaluate(expression)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout_s}s: {expression}")
            time.sleep(0.2)
        return value

    def goto(self, url: str) -> None:
        self.page("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")

    def type_into(self, selector: str, text: str) -> None:
        """Real text input (React's controlled inputs ignore assigned values)."""
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.page("Input.insertText", text=text)

    def screenshot(self, path: Path, *, full_page: bool = False) -> Path:
        params: dict = {"format": "png"}
        if full_page:
            width, height = self.evaluate("[document.body.scrollWidth, document.body.scrollHeight]")
            params.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": width, "height": height,
                                                            "scale": 1})  # fmt: skip
        path.write_bytes(base64.b64decode(self.page("Page.captureScreenshot", **params)["data"]))
        return path

    def close(self) -> None:
        with contextlib.suppress(Exception):  # already gone: stopping the process below is what matters
            self._call("Browser.close")
        self.ws.close()
        _stop(self.proc, grace_s=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[dict]:
    """``airflow db migrate`` then ``airflow api-server`` on a free loopback port, over a populated home."""
    chromium = _chromium()  # before the slow part: fail or skip early
    home = tmp_path_factory.mktemp("browser-home")
    settings = Settings(home=home)
    facts = populate(settings)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "POSTERGENRE"))}
    env.update(airflow_env(settings, REPO_ROOT, port=port))
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    log = home / "api-server.log"
    migrate = subprocess.run(
        ["airflow", "db", "migrate"], env=env, timeout=300, capture_output=True, text=True
    )
    if migrate.returncode != 0:
        pytest.fail(f"airflow db migrate failed:\n{(migrate.stdout + migrate.stderr)[-3000:]}")
    proc = subprocess.Popen(
        ["airflow", "api-server"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while _status_or_none(f"{base}/api/v2/monitor/health") != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"api-server did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        password = json.loads(passwords_file(settings).read_text())[ADMIN_USER]
        yield {"base": base, "password": password, "facts": facts, "chromium": chromium, "log": log}
    finally:
        _stop(proc)


def _status_or_none(url: str) -> int | None:
    try:
        return _status(url)
    except OSError:  # not listening yet
        return None


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory) -> Iterator[Chromium]:
    chromium = Chromium(server["chromium"], tmp_path_factory.mktemp("chromium") / "profile")
    yield chromium
    chromium.close()


def test_missing_chromium_fails_under_ci(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="chromium is not installed"):
        _chromium()


def test_real_server_refuses_anonymous_requests(server):
    for path in ("/postergenre/", "/postergenre/api/models", "/postergenre/api/drift"):
        assert _status(server["base"] + path) == 401


def test_watcher_logs_in_and_sees_champion_and_drift(server, browser, tmp_path):
    base, facts = server["base"], server["facts"]
    champion, severity = facts["cnn"]["version"], facts["drift"]["severity"]

    browser.goto(f"{base}/")
    browser.wait_for(
        "location.pathname.endsWith('/auth/login') && !!document.querySelector('input[name=password]')"
    )
    browser.type_into("input[name=username]", ADMIN_USER)
    browser.type_into("input[name=password]", server["password"])
    browser.evaluate("document.querySelector('button[type=submit]').click()")
    link = "[...document.querySelectorAll('a')].find(a => a.getAttribute('href').endsWith('/plugin/postergenre'))"
    assert browser.wait_for(f"{link}?.textContent.trim()") == "Genres"  # the navigation entry

    browser.evaluate(f"{link}.click()")
    frame_text = "document.querySelector('iframe')?.contentDocument?.body?.innerText ?? ''"
    text = browser.wait_for(f"(t => t.includes({json.dumps(champion)}) && t)({frame_text})")
    for visible in ("Champions", "genre-cnn", "0.421", "Genre drift", severity, "Genre shares", "Drama"):
        assert visible in text
    shot = browser.screenshot(tmp_path / "airflow-ui-plugin.png")

    browser.goto(f"{base}/postergenre/")
    charts = browser.evaluate(
        "[...document.querySelectorAll('svg.chart')].map(s => s.getBoundingClientRect().width)"
    )
    assert len(charts) == 4 and all(width > 100 for width in charts)
    assert "Table 1: single CNN over the splits" in browser.evaluate("document.body.innerText")
    page = browser.screenshot(tmp_path / "postergenre-page.png", full_page=True)
    for png in (shot, page):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    print(f"screenshots: {shot} {page}")
