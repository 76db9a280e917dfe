"""Which API a verb talks to, and with which token.

    URL:   --url, else HEADRACE_URL, else <state>/api.url (written by `headrace up`), else DEFAULT_URL
    token: --token, else HEADRACE_TOKEN, else <state>/admin.token (written by `headrace up`), else none
    state: --state-dir, else HEADRACE_STATE_DIR, else .state (as `headrace up` has it)

Each value remembers where it came from, so an error can say which setting to change.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from pathlib import Path

from services.core import errors

#: `headrace up`'s state directory when neither --state-dir nor HEADRACE_STATE_DIR says otherwise
DEFAULT_STATE_DIR = ".state"
#: the API's address when nothing names one: api.listen of config.example.yaml
DEFAULT_URL = "http://127.0.0.1:8080"
#: files `headrace up` keeps in its state directory
URL_FILE = "api.url"
TOKEN_FILE = "admin.token"


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """The API's base URL and the bearer token (None: send none), each with where it came from."""

    url: str
    url_source: str
    token: str | None
    token_source: str


def state_dir(flag: str | None, env: Mapping[str, str]) -> Path:
    return Path(flag or env.get("HEADRACE_STATE_DIR") or DEFAULT_STATE_DIR)


class ClientError(errors.HeadraceError):
    """A verb failed; its message is the one line `headrace` prints."""


def _read(path: Path) -> str | None:
    """The file's stripped text; None when it does not exist or is empty."""
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:  # unreadable (permissions): say so rather than act as if it were missing
        raise ClientError(f"cannot read {path}: {exc.strerror or exc}") from None
    return text or None


def resolve(*, url: str | None, token: str | None, state: str | None, env: Mapping[str, str]) -> Target:
    """The target from the flags, the environment and the state directory, in that order."""
    directory = state_dir(state, env)
    if url:
        chosen_url, url_source = url, "--url"
    elif env.get("HEADRACE_URL"):
        chosen_url, url_source = env["HEADRACE_URL"], "HEADRACE_URL"
    elif (found := _read(directory / URL_FILE)) is not None:
        chosen_url, url_source = found, str(directory / URL_FILE)
    else:
        chosen_url, url_source = DEFAULT_URL, f"the default; no {directory / URL_FILE}"
    if token:
        chosen_token, token_source = token, "--token"
    elif env.get("HEADRACE_TOKEN"):
        chosen_token, token_source = env["HEADRACE_TOKEN"], "HEADRACE_TOKEN"
    elif (found := _read(directory / TOKEN_FILE)) is not None:
        chosen_token, token_source = found, str(directory / TOKEN_FILE)
    else:
        chosen_token, token_source = None, f"none; no HEADRACE_TOKEN and no {directory / TOKEN_FILE}"
    return Target(chosen_url.rstrip("/"), url_source, chosen_token, token_source)


def from_args(args: argparse.Namespace, env: Mapping[str, str]) -> Target:
    return resolve(url=args.url, token=args.token, state=args.state_dir, env=env)


def write_url(state: Path, url: str) -> None:
    """Record the URL `headrace up` serves in `<state>/api.url`, where the verbs find it."""
    state.mkdir(parents=True, exist_ok=True)
    (state / URL_FILE).write_text(url + "\n")
