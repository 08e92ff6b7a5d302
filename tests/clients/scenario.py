"""The one scenario every client of the compatibility matrix runs
(docs/clients.md): each client script maps the steps onto its own API and
calls `report`, which runs them and prints what each returned (or the error
it raised) as JSON. The expectations live in tests/python/test_clients.py,
not here: a client script only observes.

Standard library only: it runs in each client's own virtual environment.
"""

import json
import sys

# The statements of the scenario.
PING = "SELECT 1 AS one"
PARAMETERISED = "SELECT n_name FROM customers.nation WHERE n_nationkey = ?"
MILLION = "SELECT value FROM generate_series(1, 1000000)"
BAD = "SELEC 1"

STEPS = (
    "login_password",  # connect with user and password, run PING
    "login_token",  # connect with a bearer token, run PING
    "schemas",  # the schemas a catalog browser lists
    "tables",  # the tables of schema `customers`
    "columns",  # the columns of customers.nation
    "parameterised",  # PARAMETERISED with 7
    "prepared_again",  # the same statement again with 8
    "million",  # rows of MILLION read to the end
    "bad_query",  # the message of BAD's error
)


def arguments():
    """(uri, host, port, user, password, token) from the command line."""
    uri, user, password, token = sys.argv[1:5]
    host, port = uri.removeprefix("grpc://").rsplit(":", 1)
    return uri, host, int(port), user, password, token


def report(steps):
    """Runs `steps` ({name: callable}) in the scenario's order and prints
    {name: {"value": …} | {"error": "…"} | {"unsupported": "why"}}."""
    out = {}
    for name in STEPS:
        step = steps.get(name)
        if step is None:
            out[name] = {"unsupported": "the client has no API for this"}
            continue
        if isinstance(step, str):
            out[name] = {"unsupported": step}
            continue
        try:
            out[name] = {"value": step()}
        except Exception as error:  # each step's failure is reported, not raised
            out[name] = {"error": f"{type(error).__name__}: {error}"[:2000]}
    json.dump(out, sys.stdout, default=str)
    sys.stdout.write("\n")
