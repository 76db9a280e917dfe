"""The gateway's process environment, kept away from plugins.

`protocol: python` plugins run inside the runner's process, so whatever the process environment
holds (the admin token, `DATABASE_URL`, webhook secrets) they could read from `os.environ` or
`/proc/self/environ`. `seal()` runs first in every `headrace` command: it hands the full
environment to a re-executed copy of the process through an anonymous memory file and starts that
copy with only the minimal plugin environment (`PLUGIN_ENV_ALLOWLIST`), so neither `os.environ`
nor `/proc/self/environ` holds a secret. The captured copy stays in this module for config
substitution and reloads (`process_env()`). Child processes (plugins, the embedded nats-server
and Postgres) inherit the minimal environment.

What is left is the address space itself: an in-process plugin is Python code in the runner and
can reach every object there, this module's copy and the loaded config included. Plugins that
must not see the gateway's secrets have to be protocol-2 (subprocess) plugins.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

import orjson

#: not secrets, and the gateway's own TLS needs the SSL_CERT_* paths (OpenSSL reads them from the environment)
PLUGIN_ENV_ALLOWLIST = (
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "SHELL",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
#: names the re-executed process finds its captured environment by (removed once read)
FD_VAR = "HEADRACE_SEALED_ENV_FD"
#: kept only across the re-exec, so the interpreter finds the same code and libraries (none is a secret;
#: `_scrub` removes them from `os.environ` afterwards)
_EXEC_ONLY = ("PYTHONPATH", "PYTHONHOME", "LD_LIBRARY_PATH")

_captured: dict[str, str] | None = None


def minimal(env: Mapping[str, str]) -> dict[str, str]:
    """The environment a plugin gets: the allowlisted variables of `env`, never the gateway's secrets."""
    out = {key: env[key] for key in PLUGIN_ENV_ALLOWLIST if key in env}
    out.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    return out


def process_env() -> Mapping[str, str]:
    """The environment the process was started with (captured by `seal`; `os.environ` before that)."""
    return _captured if _captured is not None else os.environ


def set_var(key: str, value: str) -> None:
    """Set a variable for config substitution (e.g. `headrace up`'s HEADRACE_ADMIN_TOKEN), never for plugins."""
    if _captured is not None:
        _captured[key] = value
    else:
        os.environ[key] = value


def sealed() -> bool:
    return _captured is not None


def seal() -> None:
    """Capture the environment and continue with only the minimal one (see the module docstring).
    Re-executes the process once; without `memfd_create` (not Linux) it scrubs `os.environ` in place,
    which leaves the original in `/proc/self/environ`."""
    global _captured
    if _captured is not None:
        return
    fd_text = os.environ.get(FD_VAR)
    if fd_text is not None:
        fd = int(fd_text)
        with os.fdopen(fd, "rb") as f:
            _captured = dict(orjson.loads(f.read()))
        _scrub()
        return
    full = dict(os.environ)
    memfd_create = getattr(os, "memfd_create", None)
    argv = getattr(sys, "orig_argv", None)
    if memfd_create is not None and argv:
        fd = memfd_create("headrace-env", 0)  # not CLOEXEC: the re-executed process reads it
        os.write(fd, orjson.dumps(full))
        os.lseek(fd, 0, os.SEEK_SET)
        env = {**minimal(full), **{k: full[k] for k in _EXEC_ONLY if k in full}, FD_VAR: str(fd)}
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            os.execve(sys.executable, argv, env)
        except OSError:
            os.close(fd)  # cannot re-execute: scrub in place below
    _captured = full
    _scrub()


def _scrub() -> None:
    keep = set(minimal(os.environ)) & set(os.environ)
    for key in list(os.environ):
        if key not in keep:
            del os.environ[key]
