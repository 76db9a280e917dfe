"""Who subprocess plugins run as. A runner running as root starts them as an unprivileged user
(`service.plugin_user`; by default `headrace-plugin` when that user exists, else `nobody`),
with no supplementary groups and that user's HOME, USER and LOGNAME. A runner that is not root
runs them as itself (a configured `plugin_user` is then ignored with a warning); `root` keeps
them root, on purpose.

`protocol: python` plugins run inside the runner's process and keep its user: run untrusted
code as protocol-2 plugins.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import stat
from collections.abc import Mapping
from pathlib import Path

from services.core import errors, logging

log = logging.get("runner.privileges")

DEFAULT_USERS = ("headrace-plugin", "nobody")
#: nobody's ids on most systems, for a host whose passwd file has neither default user
FALLBACK_UID = FALLBACK_GID = 65534


@dataclasses.dataclass(frozen=True, slots=True)
class PluginUser:
    uid: int
    gid: int
    name: str
    home: str

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """`base` with this user's HOME, USER and LOGNAME (root's HOME would be unwritable for it)."""
        return {**base, "HOME": self.home, "USER": self.name, "LOGNAME": self.name}


def _lookup(name_or_uid: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(int(name_or_uid)) if name_or_uid.isdigit() else pwd.getpwnam(name_or_uid)
    except KeyError:
        return None


def resolve(configured: str | None, *, euid: int | None = None) -> PluginUser | None:
    """The user to drop to, or None to run plugins as the runner itself. ConfigError for an unknown user."""
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        if configured is not None:
            log.warning("plugin_user_ignored", plugin_user=configured, reason="the runner is not root", euid=euid)
        return None
    if configured is not None:
        entry = _lookup(configured)
        if entry is None:
            if configured.isdigit():  # a bare uid without a passwd entry: its own group, no home
                return PluginUser(int(configured), int(configured), configured, "/")
            raise errors.ConfigError(f"service.plugin_user: no such user {configured!r}")
        if entry.pw_uid == 0:
            log.warning("plugins_run_as_root", plugin_user=configured)
            return None
        return PluginUser(entry.pw_uid, entry.pw_gid, entry.pw_name, entry.pw_dir or "/")
    for name in DEFAULT_USERS:
        entry = _lookup(name)
        if entry is not None and entry.pw_uid != 0:
            return PluginUser(entry.pw_uid, entry.pw_gid, entry.pw_name, entry.pw_dir or "/")
    return PluginUser(FALLBACK_UID, FALLBACK_GID, str(FALLBACK_UID), "/")


def _allows(st: os.stat_result, user: PluginUser, bits: tuple[int, int, int]) -> bool:
    owner, group, other = bits
    if st.st_uid == user.uid:
        return bool(st.st_mode & owner)
    if st.st_gid == user.gid:
        return bool(st.st_mode & group)
    return bool(st.st_mode & other)


def cannot_run(user: PluginUser, executable: Path) -> str | None:
    """Why `user` could not start `executable` (a directory on the way it may not enter, or a file it
    may not read and execute), or None. Checked before the spawn, so the error names the cause."""
    search = (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)
    read = (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)
    path = executable.resolve()
    for directory in reversed(path.parents):
        try:
            st = directory.stat()
        except OSError:
            return None  # the spawn reports a missing path itself
        if not _allows(st, user, search):
            return (
                f"plugin user {user.name} (uid {user.uid}) may not enter {directory}: make the plugin "
                "directory and its parents searchable (chmod o+x), or set service.plugin_user"
            )
    st = path.stat()
    if not (_allows(st, user, search) and _allows(st, user, read)):
        return (
            f"plugin user {user.name} (uid {user.uid}) may not read and execute {path} "
            "(chmod o+rx), or set service.plugin_user"
        )
    return None
