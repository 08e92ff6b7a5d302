"""Governance through the real Flight SQL client (ADBC): a principal with row
filters and masks on a Parquet, a Delta and a PostgreSQL product tries the
Flight-only paths (statements, prepared statements with parameters, catalogue
metadata); nothing protected may come back. Also: the audit record survives a
server killed right after a query returned."""

import json
import re

import pytest

from conftest import ADMIN, ANALYST, connect, grpc_code, start_server, stop_server

GLOBAL = """
admins: { groups: [admins] }
token_key_file: token.key
tag_rules:
  - id: contact-last-4
    tag: contact
    mask: { type: last_n, n: 4 }
grants:
  - id: analysts-orders
    to: { groups: [analysts] }
    domain: sales
    product: orders
    row_filter: "o_orderpriority = '1-URGENT'"
    masks:
      o_clerk: { type: redact }
  - id: analysts-suppliers
    to: { groups: [analysts] }
    domain: supply
    product: supplier
    row_filter: "s_nationkey IN (6, 7, 19, 22, 23)"
    masks:
      s_phone: { type: last_n, n: 4 }
"""

CUSTOMERS = """
tags:
  customer: { c_phone: [contact] }
grants:
  - id: analysts-customers
    to: { groups: [analysts] }
    product: customer
    except_columns: [c_acctbal]
    row_filter: "c_region = ${principal.region}"
"""

MASKED = re.compile(r"^\*{11}.{4}$")


def governed_config(mesh_config, name):
    """The demo mesh's domains and users with this file's policies, written next
    to the demo mesh (so relative locations still resolve)."""
    directory = mesh_config.parent
    text = mesh_config.read_text()
    text = text.split("\ngovernance:")[0]
    text = text.replace("policies: customers/policies.yaml", f"policies: {name}-customers.yaml")
    (directory / f"{name}-policies.yaml").write_text(GLOBAL)
    (directory / f"{name}-customers.yaml").write_text(CUSTOMERS)
    audit = directory / f"{name}-audit" / "audit.jsonl"
    text += f"\ngovernance:\n  policies: {name}-policies.yaml\n  audit: {{ path: {audit} }}\n"
    config = directory / f"{name}.yaml"
    config.write_text(text)
    return config, audit


@pytest.fixture(scope="module")
def governed(agora_bin, mesh_config, tmp_path_factory):
    config, audit = governed_config(mesh_config, "gov-test")
    started = start_server(agora_bin, config, tmp_path_factory.mktemp("gov") / "agora.log")
    started["audit"] = audit
    yield started
    stop_server(started)


def rows(server, sql, user=ANALYST, parameters=None):
    with connect(server, user) as conn, conn.cursor() as cur:
        cur.execute(sql, parameters)
        table = cur.fetch_arrow_table()
    return table.to_pylist()


def truth(duck):
    visible = {r[0] for r in duck.execute("SELECT c_name FROM customers.customer WHERE c_region = 'EUROPE'").fetchall()}
    hidden = {r[0] for r in duck.execute("SELECT c_name FROM customers.customer WHERE c_region <> 'EUROPE'").fetchall()}
    phones = {r[0] for r in duck.execute("SELECT c_phone FROM customers.customer").fetchall()}
    urgent = {r[0] for r in duck.execute("SELECT o_orderkey FROM sales.orders WHERE o_orderpriority = '1-URGENT'").fetchall()}
    return visible, hidden, phones, urgent


def assert_protected(result, duck):
    visible, hidden, phones, urgent = truth(duck)
    for row in result:
        if "c_name" in row:
            assert row["c_name"] in visible and row["c_name"] not in hidden, row
        if "c_phone" in row:
            assert row["c_phone"] not in phones and MASKED.match(row["c_phone"]), row
        if "o_orderkey" in row:
            assert row["o_orderkey"] in urgent, row
        if "o_clerk" in row:
            assert row["o_clerk"] == "****", row
        assert "c_acctbal" not in row


def test_statements_return_only_permitted_rows_and_masked_values(governed, duck):
    for sql in [
        "SELECT * FROM customers.customer",
        "SELECT * FROM sales.orders",
        "SELECT c.c_name, c.c_phone, o.o_orderkey, o.o_clerk FROM customers.customer c "
        "JOIN sales.orders o ON c.c_custkey = o.o_custkey",
        "WITH x AS (SELECT * FROM customers.customer) SELECT c_name, c_phone FROM x "
        "UNION ALL SELECT c_name, c_phone FROM customers.customer",
    ]:
        result = rows(governed, sql)
        assert result, sql
        assert_protected(result, duck)
    visible, _, _, urgent = truth(duck)
    assert rows(governed, "SELECT count(*) AS n FROM customers.customer") == [{"n": len(visible)}]
    assert rows(governed, "SELECT count(*) AS n FROM sales.orders") == [{"n": len(urgent)}]
    # The admin sees everything, unmasked.
    assert rows(governed, "SELECT count(*) AS n FROM customers.customer", ADMIN)[0]["n"] > len(visible)


def test_prepared_statements_with_parameters_are_governed(governed, duck):
    _, hidden, _, _ = truth(duck)
    hidden_name = sorted(hidden)[0]
    assert rows(governed, "SELECT c_name, c_phone FROM customers.customer WHERE c_name = ?", parameters=(hidden_name,)) == []
    # Nation 6 (France) is in Europe.
    result = rows(governed, "SELECT c_name, c_phone FROM customers.customer WHERE c_nationkey = ?", parameters=(6,))
    assert result
    assert_protected(result, duck)


def test_metadata_lists_only_readable_products_and_columns(governed):
    with connect(governed, ANALYST) as conn:
        objects = conn.adbc_get_objects(depth="columns").read_all().to_pylist()
        schema = conn.adbc_get_table_schema("customer", db_schema_filter="customers")
    tables = {}
    for catalog in objects:
        for db_schema in catalog["catalog_db_schemas"] or []:
            for table in db_schema["db_schema_tables"] or []:
                columns = [c["column_name"] for c in table["table_columns"] or []]
                tables[f"{db_schema['db_schema_name']}.{table['table_name']}"] = columns
    # The engine's system tables are listed to everyone (each shows only what
    # its reader may see); the products only where granted.
    system = sorted(t for t in tables if t.startswith("system."))
    assert "system.products" in system and "system.queries" in system, system
    tables = {t: c for t, c in tables.items() if not t.startswith("system.")}
    assert sorted(tables) == ["customers.customer", "sales.orders", "supply.supplier"], sorted(tables)
    assert "c_phone" in tables["customers.customer"] and "c_acctbal" not in tables["customers.customer"]
    assert "c_acctbal" not in schema.names and "c_region" in schema.names
    info = rows(
        governed,
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_schema IN ('sales', 'supply', 'customers') ORDER BY 1, 2",
    )
    assert [f"{r['table_schema']}.{r['table_name']}" for r in info] == sorted(tables)


def test_denials_are_clear_and_leaky_predicates_do_not_leak(governed):
    import adbc_driver_manager

    with pytest.raises(adbc_driver_manager.Error) as info:
        rows(governed, "SELECT * FROM sales.lineitem")
    assert "no grant on sales.lineitem" in str(info.value)
    # Nation 0 is in Africa: only filtered-out rows would divide by zero.
    result = rows(governed, "SELECT count(*) AS n FROM customers.customer WHERE 1 / (c_nationkey - 0) > -100")
    assert result[0]["n"] > 0


def refused(server, sql, user=ANALYST):
    """Runs `sql`, which must fail; returns the error's gRPC code and message."""
    import adbc_driver_manager

    with pytest.raises(adbc_driver_manager.Error) as info:
        rows(server, sql, user)
    return grpc_code(info.value), str(info.value)


def test_plans_names_and_audit_text_tell_an_analyst_nothing(governed, duck):
    """Through the Flight SQL client: plan forms with statistics are refused,
    a missing product and a hidden column answer like ungranted ones, a huge
    statement costs the audit log 4 KiB, and the server keeps answering."""
    import hashlib

    orders = duck.execute("SELECT count(*) FROM sales.orders").fetchone()[0]
    for sql in [
        "EXPLAIN VERBOSE SELECT * FROM sales.orders",
        "EXPLAIN (COSTS ON) SELECT * FROM sales.orders",
        "EXPLAIN ANALYZE SELECT * FROM sales.orders",
    ]:
        code, message = refused(governed, sql)
        assert code == "PERMISSION_DENIED", message
        assert f"({orders})" not in message
    # The refusal is not moot: the admin's plan carries the raw row count.
    admin_plan = "\n".join(r["plan"] for r in rows(governed, "EXPLAIN (COSTS ON) SELECT * FROM sales.orders", ADMIN))
    assert f"Rows=Exact({orders})" in admin_plan
    plain = "\n".join(r["plan"] for r in rows(governed, "EXPLAIN SELECT * FROM sales.orders"))
    assert "PolicyBarrier" in plain and "statistics=" not in plain

    code, ungranted = refused(governed, "SELECT * FROM sales.lineitem")
    assert code == "PERMISSION_DENIED", ungranted
    code, missing = refused(governed, "SELECT * FROM sales.nosuch")
    assert code == "PERMISSION_DENIED", missing
    assert ungranted.replace("sales.lineitem", "X") == missing.replace("sales.nosuch", "X")
    assert "its products are" not in missing
    code, hidden = refused(governed, "SELECT c_acctbal FROM customers.customer")
    code_nosuch, nosuch = refused(governed, "SELECT c_nosuch FROM customers.customer")
    assert code == code_nosuch == "INVALID_ARGUMENT", (hidden, nosuch)
    assert hidden.replace("c_acctbal", "X") == nosuch.replace("c_nosuch", "X")

    marker = "huge-" + hashlib.sha256(str(orders).encode()).hexdigest()[:8]
    huge = f"SELECT * FROM sales.lineitem /* {marker} {'x' * 200_000} */"
    assert refused(governed, huge)[0] == "PERMISSION_DENIED"
    records = rows(
        governed,
        f"SELECT sql, sql_sha256, status FROM system.audit_log WHERE sql LIKE '%{marker}%' "
        "AND sql NOT LIKE '%system.audit_log%'",
        ADMIN,
    )
    assert len(records) == 1, records
    assert len(records[0]["sql"]) <= 4097 and records[0]["status"] == "denied", records[0]["status"]
    assert records[0]["sql_sha256"] == hashlib.sha256(huge.encode()).hexdigest()
    assert rows(governed, "SELECT count(*) AS n FROM sales.orders WHERE o_orderpriority = '1-URGENT'")[0]["n"] > 0


def test_postgres_product_is_filtered_in_the_database_and_masked_in_the_engine(agora_bin, pg_mesh_config, tmp_path_factory):
    config, _ = governed_config(pg_mesh_config, "gov-pg")
    started = start_server(agora_bin, config, tmp_path_factory.mktemp("gov-pg") / "agora.log")
    try:
        result = rows(started, "SELECT s_suppkey, s_nationkey, s_phone FROM supply.supplier")
        admin = rows(started, "SELECT s_suppkey, s_nationkey, s_phone FROM supply.supplier", ADMIN)
        raw_phones = {r["s_phone"] for r in admin}
        expected = {r["s_suppkey"] for r in admin if r["s_nationkey"] in (6, 7, 19, 22, 23)}
        assert result and {r["s_suppkey"] for r in result} == expected
        for r in result:
            assert r["s_phone"] not in raw_phones and MASKED.match(r["s_phone"]), r
        prepared = rows(started, "SELECT s_suppkey FROM supply.supplier WHERE s_nationkey = ?", parameters=(0,))
        assert prepared == []
    finally:
        stop_server(started)


def test_audit_record_survives_a_killed_server(agora_bin, mesh_config, tmp_path_factory):
    config, audit = governed_config(mesh_config, "gov-kill")
    started = start_server(agora_bin, config, tmp_path_factory.mktemp("gov-kill") / "agora.log")
    marker = "SELECT 4242 AS kill_marker, c_phone FROM customers.customer LIMIT 2"
    try:
        result = rows(started, marker)
        assert len(result) == 2
    finally:
        started["process"].kill()  # SIGKILL: no shutdown, no flush
        started["process"].wait()
        started["log_file"].close()
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    # The client's requests for this statement (prepare, GetFlightInfo, DoGet)
    # each have a start record; the one that ran has a durable finish record.
    ids = {r["query_id"] for r in records if r["sql"] == marker and r["status"] == "started"}
    mine = [r for r in records if r["query_id"] in ids and r["status"] == "ok"]
    assert len(mine) == 1, records
    record = mine[0]
    assert record["user"] == "analyst" and record["status"] == "ok" and record["rows"] == 2
    assert record["client"].startswith("127.0.0.1:")
    assert record["policies"][0]["masks"] == [["c_phone", "last_n(4)", "contact-last-4"]]
