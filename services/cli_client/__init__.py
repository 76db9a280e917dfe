"""The operator's verbs of `headrace` (jobs, tail, doctor, plugin new): an HTTP client of the API.

Nothing here imports the api, dispatcher, runner or projector: every verb talks to a running API
over HTTP (aiohttp), as curl would, except `plugin new`, which only writes files.
services/cli.py registers the verbs (`verbs.add_parsers`) and runs them (`verbs.run`).
"""
