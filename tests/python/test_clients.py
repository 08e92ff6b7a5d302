"""The client compatibility matrix of docs/clients.md, checked against the
clients themselves.

Every client of the matrix runs the same scenario (tests/clients/scenario.py:
log in with a password and with a token, browse schemas, tables and columns,
a parameterised query and the same statement with a new value, a million-row
fetch, a bad statement's error) against a running server, as the analyst of
the demo mesh (so under row filters and masks). Each step's observation is
judged here, and the matrix row in docs/clients.md must say exactly what the
client did: "✓" for a step that works, "✗" for one that does not, "—" for one
the client has no API for. A row can neither claim what fails nor hide what
was fixed.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ANALYST, ROOT

CLIENTS = ROOT / "tests" / "clients"

# (matrix id, venv: None for the test venv, "node" for Node; script)
MATRIX = [
    ("adbc-python", None, "adbc_python_client.py"),
    ("pandas", None, "pandas_adbc_client.py"),
    ("polars", None, "polars_adbc_client.py"),
    ("pyarrow.flight", None, "pyarrow_flight_client.py"),
    ("flightsql-dbapi", "flightsql-dbapi", "flightsql_dbapi_client.py"),
    ("sqlalchemy-adbc", "sqlalchemy-adbc", "sqlalchemy_adbc_client.py"),
    ("node-flight-sql-client", "node", "node/flight_sql_client.mjs"),
    # The example is built with the workspace (cargo build --all-targets).
    ("arrow-rs", "rust", "flight-server/examples/flight_sql_client.rs"),
]

NATION_COLUMNS = ["n_nationkey", "n_name", "n_regionkey", "n_comment"]


def one_row(value, expected):
    """`value` is one row holding `expected`, in any of the shapes clients
    return rows in (lists, tuples, dicts)."""
    return value in ([[expected]], [{"one": expected}], [{"n_name": expected}])


CHECKS = {
    "login_password": lambda v: one_row(v, 1),
    "login_token": lambda v: one_row(v, 1),
    "schemas": lambda v: {"customers", "sales", "supply", "system"} <= set(v),
    "tables": lambda v: sorted(v) == ["customer", "nation", "region"],
    "columns": lambda v: list(v) == NATION_COLUMNS,
    "parameterised": lambda v: one_row(v, "GERMANY"),
    "prepared_again": lambda v: one_row(v, "INDIA"),
    "million": lambda v: v == 1_000_000,
}


def judge(step, observed):
    """'✓', '✗' or '—' for one step's observation, and why."""
    if "unsupported" in observed:
        return "—", observed["unsupported"]
    if step == "bad_query":
        error = observed.get("error", "")
        ok = "SELEC" in error and "Line: 1, Column: 1" in error
        return ("✓" if ok else "✗"), error or f"no error: {observed}"
    if "error" in observed:
        return "✗", observed["error"]
    value = observed["value"]
    return ("✓" if CHECKS[step](value) else "✗"), json.dumps(value, default=str)[:300]


def documented_matrix():
    """{client id: {step: mark}} from the matrix table of docs/clients.md."""
    text = (ROOT / "docs" / "clients.md").read_text()
    found = re.search(r"<!-- matrix:start -->\n(.*?)<!-- matrix:end -->", text, re.S)
    assert found, "docs/clients.md has no <!-- matrix:start --> … <!-- matrix:end --> table"
    rows = [line.strip().strip("|").split("|") for line in found.group(1).strip().splitlines()]
    header = [cell.strip() for cell in rows[0]]
    steps = [re.sub(r"[`*]", "", h) for h in header[1:]]
    matrix = {}
    for row in rows[2:]:
        cells = [cell.strip() for cell in row]
        client = re.search(r"`([^`]+)`", cells[0]).group(1)
        matrix[client] = dict(zip(steps, cells[1 : len(steps) + 1]))
    return steps, matrix


@pytest.fixture(scope="module")
def token(server):
    import pyarrow.flight as flight

    client = flight.FlightClient(server["uri"])
    name, value = client.authenticate_basic_token(*ANALYST)
    client.close()
    assert value.startswith(b"Bearer ")
    return value.decode().removeprefix("Bearer ")


def command_of(venv, script):
    """The command that runs a client's script."""
    if venv == "rust":
        from conftest import _agora_bin

        # Cargo puts examples beside the binaries, under examples/.
        example = Path(_agora_bin()).parent / "examples" / Path(script).stem
        assert example.exists(), f"{example} is missing: ./scripts/test builds it (cargo build --all-targets)"
        return [str(example)]
    return [runner_of(venv), str(CLIENTS / script)]


def runner_of(venv):
    """The interpreter that runs a client's script."""
    if venv is None:
        return sys.executable
    if venv == "node":
        import shutil

        node = shutil.which("node")
        assert node, "node is not installed: the Node client's row needs Node.js"
        assert (CLIENTS / "node" / "node_modules").exists(), "./scripts/test installs the Node client (npm ci)"
        return node
    root = os.environ.get("AGORA_CLIENT_VENVS")
    if not root:
        pytest.fail("AGORA_CLIENT_VENVS is not set: run the tests through ./scripts/test, which builds the client venvs")
    python = Path(root) / venv / "bin" / "python"
    assert python.exists(), f"{python} is missing: ./scripts/test creates it from tests/clients/requirements-{venv}.txt"
    return str(python)


def test_the_matrix_lists_every_tested_client_and_step():
    sys.path.insert(0, str(CLIENTS))
    from scenario import STEPS

    steps, matrix = documented_matrix()
    assert steps == list(STEPS), steps
    assert sorted(matrix) == sorted(client for client, _, _ in MATRIX)


@pytest.mark.parametrize("client, venv, script", MATRIX, ids=[c for c, _, _ in MATRIX])
def test_the_client_does_what_the_matrix_says(server, token, client, venv, script):
    run = subprocess.run(
        [*command_of(venv, script), server["uri"], ANALYST[0], ANALYST[1], token],
        cwd=CLIENTS,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    observed = json.loads(run.stdout.strip().splitlines()[-1])
    _, matrix = documented_matrix()
    judged = {step: judge(step, observed[step]) for step in observed}
    marks = {step: mark for step, (mark, _) in judged.items()}
    why = "\n".join(f"  {step}: {mark} {reason}" for step, (mark, reason) in judged.items())
    assert marks == matrix[client], f"docs/clients.md says {matrix[client]}, the client did:\n{why}"
    # A row of the matrix is only worth having if the client logs in and queries.
    assert marks["login_password"] == "✓", why
