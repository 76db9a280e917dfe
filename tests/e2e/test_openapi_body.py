"""The OpenAPI documents describe the body the API reads (`{"payload": <input_schema>}`), and a body
whose keys would be silently ignored never runs a job with an empty payload: the bare form
`{"message": "X"}` is a 400 naming the unknown keys (Ductile would drop them and run `{}`)."""

from __future__ import annotations

from typing import Any

import jsonschema
from openapi_spec_validator import validate

from tests.support.stack import Client, Stack


async def test_the_documented_body_is_what_the_api_reads(client: Client, hr: Stack) -> None:
    for path in ("/openapi.json", "/plugin/echo/openapi.json"):
        status, doc = await client.get(path, token=None)
        assert status == 200
        validate(doc)
        poll = doc["paths"]["/plugin/echo/poll"]["post"]
        body = poll["requestBody"]
        schema = body["content"]["application/json"]["schema"]
        assert body["required"] is False  # echo.poll's input_schema admits {}
        assert schema["properties"]["payload"]["anyOf"][0] == {
            "type": "object",
            "properties": {"message": {"type": "string"}},
        }
        assert poll["parameters"][0]["name"] == "Idempotency-Key"
        assert set(poll["responses"]) >= {"202", "400", "401", "403", "404", "409", "413", "503"}
        validator = jsonschema.Draft202012Validator(schema)
        assert validator.is_valid({"payload": {"message": "X"}}) and validator.is_valid({})
        assert not validator.is_valid({"message": "X"})  # the bare form is not what the API reads

    # a client that follows the document gets its payload to the plugin
    status, queued = await client.post("/plugin/echo/poll", json={"payload": {"message": "X"}})
    assert status == 202
    jsonschema.validate(queued, poll["responses"]["202"]["content"]["application/json"]["schema"])
    done = await client.wait_job(queued["job_id"])
    assert done["result"]["result"] == "Echoed: X", done


async def test_a_bare_body_is_refused_naming_its_keys_and_runs_nothing(make_config: Any, start_stack: Any) -> None:
    s: Stack = await start_stack(
        make_config(pipelines=[{"name": "shout", "steps": [{"id": "one", "uses": "echo.poll"}]}])
    )
    client = s.client
    assert client is not None
    for path in ("/plugin/echo/poll", "/plugin/echo/handle", "/pipeline/shout"):
        status, body = await client.post(path, json={"message": "X", "count": 2})
        assert status == 400, (path, body)
        assert body["code"] == "bad_request" and body["unknown_fields"] == ["count", "message"], body
        assert "'message'" in body["error"] and '"payload"' in body["error"], body
    status, listed = await client.get("/jobs")
    assert status == 200 and listed["total"] == 0, listed
    # as in Ductile: no body, {}, a null payload and keys next to `payload` are all fine
    for raw in (b"", b"{}", b'{"payload": null}', b'{"payload": {"message": "Y"}, "note": "ignored"}'):
        status, body = await client.post("/plugin/echo/poll", data=raw, headers={"Content-Type": "application/json"})
        assert status == 202, (raw, body)


async def test_a_wrong_method_is_405_with_allow(client: Client) -> None:
    status, body = await client.request("PUT", "/plugin/echo/poll")
    assert status == 405 and body["code"] == "method_not_allowed"
    async with client.session.request("TRACE", client.base_url + "/plugin/echo/poll") as resp:
        assert resp.status == 405 and resp.headers["Allow"] == "POST"  # RFC 9110; schemathesis checks it


async def test_laddr_bodies_without_inputs_but_with_unknown_keys_are_refused(
    make_config: Any, start_stack: Any
) -> None:
    s: Stack = await start_stack(make_config(agents={"demo": {"llm": {"provider": "echo"}}}))
    client = s.client
    assert client is not None
    for path, body in (
        ("/api/jobs", {"pipeline_name": "demo", "input": {"message": "X"}}),
        ("/api/prompts", {"prompt_name": "demo", "message": "X"}),
    ):
        status, answer = await client.post(path, json=body)
        assert status == 422 and answer["unknown_fields"] == sorted(set(body) - {"pipeline_name", "prompt_name"}), (
            path,
            answer,
        )
        assert '"inputs"' in answer["error"]
        assert answer["detail"][0]["type"] == "missing" and answer["detail"][0]["loc"] == ["body", "inputs"], answer
    status, answer = await client.post(
        "/api/jobs", json={"pipeline_name": "demo", "inputs": {"message": "X"}, "note": "ignored, as in Laddr"}
    )
    assert status == 200, answer  # Laddr's paths answer 200 for queued work (services/api/laddr_dialect.py)
