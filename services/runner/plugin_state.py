"""What a successful reply's `state_updates` does to the plugin's state, as Ductile does it.

Without a `fact_outputs` rule for the command, the updates are merged shallowly into the state
(top-level keys replaced). With one (`from: state_updates`), each rule records the updates as a
fact of its `fact_type` and the shallow merge is skipped; `compatibility_view: mirror_object`
makes the state a mirror of that latest fact object (replaced whole).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.core import catalog as catalog_mod

JSONDict = dict[str, Any]


def apply(
    manifest: catalog_mod.Manifest | None, command: str, state: Mapping[str, Any], updates: Mapping[str, Any]
) -> tuple[JSONDict | None, list[JSONDict]]:
    """(the new state, None when it does not change; the facts to record as {fact_type, fact})."""
    rules = manifest.facts_for(command) if manifest is not None else ()
    if not rules:
        return {**state, **updates}, []
    facts = [{"fact_type": rule.fact_type, "fact": dict(updates)} for rule in rules]
    mirrored = any(rule.compatibility_view == "mirror_object" for rule in rules)
    return (dict(updates) if mirrored else None), facts
