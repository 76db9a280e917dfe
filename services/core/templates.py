"""`with` templates of pipeline steps: `{payload.count}` alone keeps its type; a mixed
template ("Build: {payload.status}") renders a string. Paths are over the pre-remap
payload and context; a missing one is an error that fails the job.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from services.core import paths

_REF = re.compile(r"\{([^{}]+)\}")


class TemplateError(ValueError):
    """The template is malformed or refers to a missing path."""


def check(template: Any) -> None:
    """Raise TemplateError when `template` cannot be valid (checked at load)."""
    if not isinstance(template, str):
        return
    stripped = _REF.sub("", template)
    if "{" in stripped or "}" in stripped:
        raise TemplateError(f"unbalanced braces in template {template!r}")
    for ref in _REF.findall(template):
        problem = paths.check(ref.strip())
        if problem:
            raise TemplateError(problem)


def render(template: Any, scope: dict[str, Any]) -> Any:
    if not isinstance(template, str):
        return template
    whole = _REF.fullmatch(template)
    if whole:
        return _value(whole.group(1).strip(), scope)

    def text(match: re.Match[str]) -> str:
        value = _value(match.group(1).strip(), scope)
        return value if isinstance(value, str) else orjson.dumps(value).decode()

    return _REF.sub(text, template)


def _value(path: str, scope: dict[str, Any]) -> Any:
    value = paths.lookup(scope, path)
    if value is paths.MISSING:
        raise TemplateError(f"template path {path!r} is missing")
    return value
