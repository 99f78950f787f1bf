"""What the command line and the HTTP API both do, written once.

Each operation builds the same messages whichever front end asks: the CLI
passes its user name as `requested_by` and a short-lived Kafka sender, the API
passes `api:<key name>` and its one long-lived producer (`sending.KafkaSender`).
Nothing here prints, exits or knows about HTTP: failures are exceptions the
front ends turn into a one-line error or a JSON error document.

    sending.py      where a record landed (`Sent`), the `Send` callable, the long-lived producer
    commands.py     start (sealing, idempotent ids), cancel, signal, retry, pause, resume, skip, events
    definitions.py  validate and apply definition texts (step templates included)
    bulk.py         one action over every execution a filter matches, paced, with each decision
"""
