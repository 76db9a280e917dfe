"""The real-Laddr side of the side-by-side harness: a scratch venv with `laddr==0.9.6` (created
when missing), a working directory holding the agent modules Laddr imports (`agents/<name>.py`),
and the processes a Laddr deployment runs: the FastAPI app under uvicorn and one `WorkerRunner`
per agent (so chat and batch tasks are consumed).

With a `redis-server` on PATH the bus is Redis (what `laddr run dev` deploys) and every worker is
its own process; without one, Laddr's in-process MemoryBus is used (§0.5 of the conformance doc)
and the workers run inside the API process, started from a wrapped lifespan. Nothing of Laddr's
code is copied here: it is installed from PyPI and run as shipped.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench import infra
from services.core import embedded

LADDR_VERSION = "0.9.6"
#: openai is what Laddr's `LLM_BACKEND=openai` imports; it is not a dependency of the wheel
PACKAGES = [f"laddr=={LADDR_VERSION}", "uvicorn", "openai"]
MODEL = "sbs-fake-model"

#: the agents both sides serve: `echo` makes one tool call then finishes; `slow` does the same
#: but the fake LLM delays its answers (the word SLOW is in its instructions), for timeouts
AGENT_MODULE = '''"""Side-by-side harness agent (generated)."""
from laddr import Agent, tool


@tool(name="poll", description="Echo a message back")
def poll(message: str) -> str:
    return "Echoed: " + str(message)


{name} = Agent(name="{name}", role="{name} role", goal="{name} goal",
               instructions="{instructions}", tools=[poll], max_iterations=4)
'''

AGENTS = {"echo": "Be brief.", "slow": "Be brief. SLOW"}

WORKER = (
    "import asyncio, importlib, sys\n"
    "from laddr import WorkerRunner\n"
    "name = sys.argv[1]\n"
    "agent = getattr(importlib.import_module('agents.' + name), name)\n"
    "asyncio.run(WorkerRunner(agent).start())\n"
)

#: MemoryBus only: the app with one WorkerRunner task per agent in its own event loop
INPROCESS_API = (
    "import asyncio, contextlib, importlib, sys\n"
    "import uvicorn\n"
    "from laddr import WorkerRunner\n"
    "from laddr.api.main import app\n"
    "names, port = sys.argv[1].split(','), int(sys.argv[2])\n"
    "inner = app.router.lifespan_context\n"
    "@contextlib.asynccontextmanager\n"
    "async def lifespan(a):\n"
    "    async with inner(a) as state:\n"
    "        tasks = [asyncio.create_task(WorkerRunner(getattr(importlib.import_module('agents.' + n), n)).start())\n"
    "                 for n in names]\n"
    "        yield state\n"
    "        for t in tasks: t.cancel()\n"
    "app.router.lifespan_context = lifespan\n"
    "uvicorn.run(app, host='127.0.0.1', port=port, log_level='warning')\n"
)


def ensure_venv(venv: Path, say: object = print) -> Path:
    """The venv's python, after installing laddr==0.9.6 (+ uvicorn, openai) into it if missing."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", f"import laddr, uvicorn, openai; assert laddr.__version__ == {LADDR_VERSION!r}"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    say(f"installing {' '.join(PACKAGES)} into {venv}")  # type: ignore[operator]
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *PACKAGES], check=True)
    subprocess.run(probe, check=True)
    return python


@dataclass
class LaddrDeployment:
    """One Laddr deployment: its own working dir, SQLite file, Redis db (or MemoryBus), API, workers."""

    name: str
    python: Path
    tmp: Path
    llm_url: str
    api_key: str | None
    redis_url: str | None
    workers: bool = True
    procs: list[infra.Proc] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _workdir(self) -> Path:
        work = self.tmp / f"laddr-{self.name}"
        (work / "agents").mkdir(parents=True, exist_ok=True)
        (work / "agents" / "__init__.py").write_text("")
        for agent, instructions in AGENTS.items():
            (work / "agents" / f"{agent}.py").write_text(AGENT_MODULE.format(name=agent, instructions=instructions))
        return work

    def env(self, work: Path) -> dict[str, str]:
        env = {
            "LLM_BACKEND": "openai",
            "LLM_MODEL": MODEL,
            "OPENAI_API_KEY": "sk-fake",
            "OPENAI_BASE_URL": self.llm_url,
            "DATABASE_URL": f"sqlite:///{work / 'laddr.db'}",
            "ENABLE_LARGE_RESPONSE_STORAGE": "false",
            "LANGFUSE_ENABLED": "false",
            "PYTHONPATH": str(work),
            "PYTHONUNBUFFERED": "1",
        }
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        if self.api_key:
            env["LADDR_API_KEY"] = self.api_key
        return env

    async def start(self) -> LaddrDeployment:
        work = self._workdir()
        env = self.env(work)
        self.port = embedded.free_port()
        if self.redis_url or not self.workers:
            argv = [
                str(self.python),
                "-m",
                "uvicorn",
                "laddr.api.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ]
        else:
            argv = [str(self.python), "-c", INPROCESS_API, ",".join(AGENTS), str(self.port)]
        await self._spawn(f"laddr-{self.name}-api", argv, work, env)
        if self.redis_url and self.workers:
            for agent in AGENTS:
                await self._spawn(
                    f"laddr-{self.name}-worker-{agent}", [str(self.python), "-c", WORKER, agent], work, env
                )
        await infra.wait_http_ok(self.url + "/api/health", 60, self.procs[0])
        return self

    async def _spawn(self, name: str, argv: list[str], work: Path, env: dict[str, str]) -> None:
        proc = infra.Proc(name, argv, log_dir=self.tmp, env=env)
        # Laddr imports `agents.<name>` relative to its working directory (PYTHONPATH is `work` too)
        with open(proc.log_path, "ab") as log:
            proc.proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=str(work),
                env=proc.env,
                start_new_session=True,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        infra.STARTED.add(proc.proc.pid)
        self.procs.append(proc)

    async def stop(self) -> None:
        for proc in reversed(self.procs):
            await proc.stop(timeout_s=5)


class Redis:
    """A throwaway redis-server on a free port, no persistence."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = 0
        self.proc: infra.Proc | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    async def start(self) -> Redis:
        self.port = embedded.free_port()
        argv = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.tmp),
        ]
        self.proc = await infra.Proc("redis", argv, log_dir=self.tmp).start()
        await self.proc.wait_log("Ready to accept connections", timeout_s=15)
        return self

    async def stop(self) -> None:
        if self.proc is not None:
            await self.proc.stop(timeout_s=5)
