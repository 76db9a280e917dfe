"""Typed application state shared by the API's resource modules (aiohttp `web.AppKey`s)."""

from __future__ import annotations

import dataclasses
import time

import asyncpg
import orjson
from aiohttp import web

from services.core import bus as bus_mod
from services.core import catalog as catalog_mod
from services.core import config as config_mod


@dataclasses.dataclass(slots=True)
class ApiState:
    config: config_mod.Config
    catalog: catalog_mod.Catalog
    bus: bus_mod.Bus
    pool: asyncpg.Pool
    source: str
    started_monotonic: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def uptime_s(self) -> int:
        return int(time.monotonic() - self.started_monotonic)


STATE = web.AppKey("headrace_state", ApiState)


def of(request: web.Request) -> ApiState:
    return request.app[STATE]


def dumps(obj: object) -> str:
    """orjson for `web.json_response(..., dumps=state.dumps)`."""
    return orjson.dumps(obj).decode()
