"""Agora's answers to cross-domain TPC-H queries equal DuckDB's on the same files."""

import json
import subprocess

import pytest

from compare import assert_same_rows, rows_of
from conftest import connect
from tpch import QUERIES


def _cli_answer(agora_bin, config, sql):
    out = subprocess.run(
        [agora_bin, "query", "--config", str(config), "--format", "json", sql],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _assert_cli_equals_duckdb(agora_bin, config, duck, name):
    sql = QUERIES[name]
    agora_rows = _cli_answer(agora_bin, config, sql)
    expected = duck.execute(sql).to_arrow_table()
    assert len(expected) > 0, f"{name} returns no rows: the comparison would prove nothing"
    expected_rows = rows_of(expected)
    # JSON carries dates as strings and decimals as strings or numbers: read each
    # cell the way the expected value is typed.
    actual = [
        tuple(_as_like(row.get(column), like) for column, like in zip(expected.column_names, expected_rows[min(i, len(expected_rows) - 1)]))
        for i, row in enumerate(agora_rows)
    ]
    assert_same_rows(actual, expected_rows, name)


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_federated_answers_equal_duckdb(name, agora_bin, pg_mesh_config, duck):
    """The same queries with supply.* read from PostgreSQL (joins pushed down
    where they stay within it) still equal DuckDB's all-Parquet answers."""
    _assert_cli_equals_duckdb(agora_bin, pg_mesh_config, duck, name)


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_cli_answers_equal_duckdb(name, agora_bin, mesh_config, duck):
    _assert_cli_equals_duckdb(agora_bin, mesh_config, duck, name)


def _as_like(value, like):
    if isinstance(like, float):
        return round(float(value), 2)
    if hasattr(like, "isoformat"):
        return type(like).fromisoformat(value)
    return value


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_flight_sql_answers_equal_duckdb(name, server, duck):
    sql = QUERIES[name]
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute(sql)
        table = cur.fetch_arrow_table()
    expected = duck.execute(sql).to_arrow_table()
    assert table.column_names == expected.column_names
    assert_same_rows(rows_of(table), rows_of(expected), name)


def test_cli_reports_errors_with_exit_code_1(agora_bin, mesh_config):
    result = subprocess.run(
        [agora_bin, "query", "--config", str(mesh_config), "SELECT * FROM sales.ordrs"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "no product 'ordrs' in domain 'sales'; its products are: orders, lineitem" in result.stderr


def test_check_reports_every_product_and_the_demo_drift(agora_bin, mesh_config):
    result = subprocess.run([agora_bin, "check", "--config", str(mesh_config)], capture_output=True, text=True)
    # The demo's supply.part contract promises a column the data lacks, on purpose.
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [l for l in result.stdout.splitlines() if l.startswith(("ok", "FAIL", "DRIFT"))]
    products = [l for l in lines if " policies " not in l]
    assert len(products) == 8, result.stdout
    assert [l.split()[1] for l in products if not l.startswith("ok")] == ["supply.part"], result.stdout
    assert all(l.startswith("ok") for l in products if "supply.part" not in l)
    assert any(l.startswith("ok    policies sha256:") for l in lines), result.stdout
    assert "1 check failed" in result.stdout


def test_csv_output(agora_bin, mesh_config):
    out = subprocess.run(
        [agora_bin, "query", "--config", str(mesh_config), "--format", "csv",
         "SELECT r_regionkey, r_name FROM customers.region ORDER BY r_regionkey"],
        check=True, capture_output=True, text=True,
    ).stdout
    lines = out.strip().splitlines()
    assert lines[0] == "r_regionkey,r_name"
    assert lines[1:] == ["0,AFRICA", "1,AMERICA", "2,ASIA", "3,EUROPE", "4,MIDDLE EAST"]
