"""`pip install .` (not editable) gives a headrace that works away from the checkout: the wheel is
built from a copy of the repo, installed into a scratch venv that sees the shared venv's
dependencies but not the editable checkout, and run from a directory outside the repo: `--help`,
`check-config` (a given config, and the bundled example found with no -c), and `up` (embedded
nats-server, the test Postgres) serving a job to the bundled echo plugin.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from services.core import embedded
from tests.support import stack
from tests.support.upprocess import UpProcess

REPO = stack.REPO
#: what `pip install .` does not need, or must not see (the copy is built like a fresh checkout)
NOT_BUILT = (".git", ".venv", ".state", "tests", "bench", "build", "dist", "__pycache__", "*.egg-info", ".*_cache")


@dataclass(frozen=True)
class Installed:
    venv: Path
    cwd: Path
    env: dict[str, str]

    @property
    def headrace(self) -> str:
        return str(self.venv / "bin" / "headrace")

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv), cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=60, check=False
        )


def _clean_env() -> dict[str, str]:
    """The environment without the checkout: no PYTHONPATH, no shared venv's bin/ on PATH."""
    shared_bin = sysconfig.get_path("scripts")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != shared_bin)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("wheel")
    source, dist, venv, cwd = work / "source", work / "dist", work / "venv", work / "elsewhere"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_BUILT))
    cwd.mkdir()
    env = _clean_env()
    build = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(dist)]
    subprocess.run(build, cwd=work, env=env, check=True, capture_output=True, timeout=120)
    (wheel,) = dist.glob("headrace-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    # the dependencies come from the shared venv's site-packages, added as a plain path: its .pth files
    # (the editable install's finder among them) are not run, so only the wheel provides `services`
    purelib = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (purelib / "shared_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    install = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install"]
    subprocess.run([*install, "--no-deps", "--no-index", str(wheel)], env=env, check=True, capture_output=True)
    return Installed(venv=venv, cwd=cwd, env=env)


def test_the_installed_package_is_the_wheel_not_the_checkout(installed: Installed) -> None:
    probe = installed.run(
        str(installed.venv / "bin" / "python"),
        "-c",
        "import services, services.core.resources as r\n"
        "print(services.__file__)\n"
        "for name in r.BUNDLED: print(r.bundled(name))\n"
        "print(len(r.migrations()))",
    )
    assert probe.returncode == 0, probe.stderr
    *paths, migrations = probe.stdout.split()
    for path in paths:
        assert Path(path).is_relative_to(installed.venv) and Path(path).exists(), path
    assert int(migrations) == len(list((REPO / "services" / "projector" / "migrations").glob("*.sql")))
    assert (Path(paths[2]) / "echo" / "run.py").stat().st_mode & 0o111  # run.py keeps its exec bit


def test_help_and_check_config(installed: Installed, tmp_path: Path) -> None:
    helped = installed.run(installed.headrace, "--help")
    assert helped.returncode == 0 and "check-config" in helped.stdout, helped.stderr
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"plugins": {"echo": {"enabled": True}, "echo_py": {"enabled": True}}}))
    checked = installed.run(installed.headrace, "check-config", "-c", str(config))
    assert checked.returncode == 0 and "ok (2 plugins configured)" in checked.stdout, checked.stderr
    # no -c and no config in the directory: the example the wheel carries (with its agent and plugins)
    example = installed.run(installed.headrace, "check-config")
    assert example.returncode == 0, example.stderr
    assert example.stdout.startswith(str(installed.venv)) and ": ok (" in example.stdout


async def test_up_serves_a_job_to_the_bundled_echo_plugin(installed: Installed, database_url: str) -> None:
    port = embedded.free_port()
    config = installed.cwd / "up.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                # the plugins live in the scratch venv under pytest's root-only tmp dir: keep them root
                "service": {"name": "wheel-test", "log_level": "warning", "plugin_user": "root", "max_workers": 4},
                "api": {
                    "listen": f"127.0.0.1:{port}",
                    "auth": {"tokens": [{"name": "admin", "token": "${HEADRACE_ADMIN_TOKEN}", "scopes": ["*"]}]},
                },
                "plugins": {"echo": {"enabled": True, "parallelism": 2}},
            }
        )
    )
    state = installed.cwd / "state"
    env = {**installed.env, "DATABASE_URL": database_url}
    log = installed.cwd / "up.log"
    argv = [installed.headrace, "-c", str(config), "up", "--state-dir", str(state)]
    up = UpProcess(argv, env=env, cwd=installed.cwd, stderr=log)
    try:
        line = await up.readline()
        assert line.startswith(f"Headrace is up: http://127.0.0.1:{port} (database "), log.read_text()[-3000:]
        token = (state / "admin.token").read_text().strip()
        client = stack.Client(f"http://127.0.0.1:{port}", token=token)
        try:
            status, health = await client.get("/healthz")
            assert status == 200, health
            job_id = await client.submit("echo", "poll", {"message": "from the wheel"})
            done = await client.wait_job(job_id, timeout_s=30)
            assert done["status"] == "succeeded", done
            assert done["result"]["result"] == "Echoed: from the wheel"
        finally:
            await client.close()
    finally:
        assert await up.stop() == 0, log.read_text()[-3000:]
