"""The HTTP API: an ASGI app (FastAPI) over the operations the CLI has, served by `orchestrator api`.

Writes go to Kafka through `orchestrator.operations` (the same commands the
CLI builds); reads come from the PostgreSQL projection (`reads.py`). Every
route but /healthz, the OpenAPI document and the console's static files needs
an API key (`auth.py`); every error is one JSON document (`errors.py`).

    app.py                   create_app(settings, keys): routers, error handling, /metrics
    auth.py                  API keys (ORCH_API_KEYS), roles, who (`api:<key name>`)
    context.py               what a request uses: settings, the connection pool, the producer
    errors.py                {"error": {code, message, details}} for every failure
    models.py                request and response models (the OpenAPI document)
    routes_definitions.py    validate, apply, list definitions
    routes_executions.py     start, webhooks, list, detail, history
    routes_commands.py       cancel, signal, retry, pause, resume, skip; external events
    routes_bulk.py           one action over every execution a filter matches
    cli.py                   `orchestrator api` and `orchestrator api keys new`

This package's __init__ imports nothing: the CLI and `operations.bulk` import
`reads` without loading FastAPI.
"""
