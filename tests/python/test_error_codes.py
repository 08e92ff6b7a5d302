"""Every kind of error reaches Flight SQL clients with the gRPC code
docs/clients.md promises: the user's mistakes are INVALID_ARGUMENT (with a
position for syntax errors), names that do not exist NOT_FOUND, sources that
cannot be read UNAVAILABLE, limits RESOURCE_EXHAUSTED or DEADLINE_EXCEEDED,
and only the engine's own defects INTERNAL."""

import shutil

import pytest

from conftest import ADMIN, FlightSession, derived_config, refusal, serving

USER_ERRORS = [
    # (statement, a fragment the message must contain)
    ("SELECT CAST('not a number' AS INT)", "Cannot cast"),
    ("SELECT CAST(n_name AS INT) FROM customers.nation", "Cannot cast"),
    ("SELECT 1 / 0", "Divide by zero"),
    ("SELECT n_nationkey / (n_nationkey - n_nationkey) FROM customers.nation", "Divide by zero"),
    ("SELECT n_name FROM customers.nation LIMIT -1", "LIMIT"),
    ("SELECT n_name FROM customers.nation LIMIT 99999999999999999999999", ""),
    ("SELECT no_such_column FROM customers.nation", "no_such_column"),
    ("SELECT * FROM customers.nation WHERE n_name > 1 +", "Line: 1, Column: 50"),
    ("SELECT * FROM", "Line: 1, Column: 14"),
    ("SELECT n_name\nFROM customers.nation\nWHERE", "Line: 3, Column: 6"),
    ("SELEC 1", "Line: 1, Column: 1"),
]


@pytest.mark.parametrize("sql, fragment", USER_ERRORS, ids=[s[:40] for s, _ in USER_ERRORS])
def test_a_users_mistake_is_invalid_argument(server, sql, fragment):
    with FlightSession(server, ADMIN) as admin:
        code, message = refusal(lambda: admin.query(sql))
    assert code == "INVALID_ARGUMENT", message
    assert fragment in message, message


def test_a_name_that_does_not_exist_is_not_found(server):
    with FlightSession(server, ADMIN) as admin:
        code, message = refusal(lambda: admin.query("SELECT * FROM customers.no_such_product"))
    assert code == "NOT_FOUND", message
    assert "nation" in message, "the message lists what exists: " + message


def test_a_source_that_cannot_be_read_is_unavailable(agora_bin, mesh_config, tmp_path):
    # A product of its own on a copy of the suppliers, damaged while the
    # server runs (as a half-written file or a failing disk would).
    directory = mesh_config.parent / "errors-lake" / "supplier"
    if directory.exists():
        shutil.rmtree(directory)
    shutil.copytree(mesh_config.parent / "supply" / "supplier", directory)
    domains = """  - name: lake
    description: A copy of the suppliers, damaged while served.
    owner: { name: Tests, contact: tests@example.com }
    products:
      - name: supplier
        description: Suppliers.
        source: { kind: parquet, location: errors-lake/supplier }
"""
    config = derived_config(mesh_config, "errors-source", domains=domains)
    with serving(agora_bin, config, tmp_path / "errors-source.log") as server:
        with FlightSession(server, ADMIN) as admin:
            assert admin.query("SELECT count(s_name) AS n FROM lake.supplier").to_pylist()[0]["n"] > 0
            for file in directory.iterdir():
                data = file.read_bytes()
                file.write_bytes(data[:16])
            code, message = refusal(lambda: admin.query("SELECT s_name, s_address FROM lake.supplier"))
            assert code == "UNAVAILABLE", message
            # Still serving everything else.
            assert admin.query("SELECT count(*) AS n FROM customers.nation").to_pylist() == [{"n": 25}]
