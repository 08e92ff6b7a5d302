"""Agora's Flight SQL server through the real clients: the ADBC driver (DB-API) and pyarrow.flight."""

import datetime
import os
import time

import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import ADMIN, ANALYST, connect, engine_answer, statement_command


def test_login_with_user_and_password(server):
    with connect(server, ANALYST) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 AS one")
        assert cur.fetchall() == [(1,)]


def test_wrong_password_is_refused(server):
    with pytest.raises(adbc_driver_manager.Error) as info:
        with connect(server, ("admin", "wrong")) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    assert "Unauthenticated" in str(info.value) or "UNAUTHENTICATED" in str(info.value), str(info.value)


def test_no_credentials_is_refused(server):
    import adbc_driver_flightsql.dbapi as flightsql

    with pytest.raises(adbc_driver_manager.Error) as info:
        with flightsql.connect(server["uri"], autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    assert "nauthenticated" in str(info.value).lower() or "UNAUTHENTICATED" in str(info.value), str(info.value)


CROSS_DOMAIN = """
SELECT c.c_custkey, c.c_name, n.n_name, count(*) AS orders, sum(o.o_totalprice) AS total,
       min(o.o_orderdate) AS first_order
FROM sales.orders o
JOIN customers.customer c ON o.o_custkey = c.c_custkey
JOIN customers.nation n ON c.c_nationkey = n.n_nationkey
WHERE n.n_name = 'GERMANY'
GROUP BY c.c_custkey, c.c_name, n.n_name
ORDER BY c.c_custkey
"""


def test_results_equal_the_in_process_engine(server, agora_bin, mesh_config):
    expected = engine_answer(agora_bin, mesh_config, CROSS_DOMAIN)
    assert expected.num_rows > 0
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute(CROSS_DOMAIN)
        actual = cur.fetch_arrow_table()
    # The server sends view types as plain strings; values are identical.
    assert actual.column_names == expected.column_names
    assert actual.to_pylist() == expected.to_pylist()
    assert actual.schema.field("c_name").type == pa.string()
    assert actual.schema.field("total").type == expected.schema.field("total").type
    assert actual.schema.field("first_order").type == pa.date32()


def test_parameterised_cross_domain_query(server, agora_bin, mesh_config):
    sql = """
        SELECT o.o_orderkey, o.o_totalprice, c.c_name
        FROM sales.orders o JOIN customers.customer c ON o.o_custkey = c.c_custkey
        WHERE o.o_custkey = ? AND o.o_orderdate >= ? AND o.o_totalprice > ?
        ORDER BY o.o_orderkey"""
    literal = sql.replace("?", "{}", 3).format(370, "DATE '1995-01-01'", 1000.5)
    expected = engine_answer(agora_bin, mesh_config, literal)
    assert expected.num_rows > 0
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute(sql, (370, datetime.date(1995, 1, 1), 1000.5))
        actual = cur.fetch_arrow_table()
        assert actual.to_pylist() == expected.to_pylist()
        # The same prepared statement again, with other values.
        cur.execute(sql, (371, datetime.date(1992, 1, 1), 0.0))
        again = cur.fetch_arrow_table()
        assert all(row["o_orderkey"] is not None for row in again.to_pylist())


@pytest.mark.parametrize(
    "value, sql_type",
    [
        (42, "BIGINT"),
        (2.5, "DOUBLE"),
        ("GERMANY", "VARCHAR"),
        (datetime.date(1994, 6, 30), "DATE"),
    ],
)
def test_parameter_types_round_trip(server, value, sql_type):
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT CAST($1 AS {sql_type}) AS v", (value,))
        assert cur.fetchall() == [(value,)]


def test_null_parameters(server):
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM customers.nation WHERE n_name = $1", (None,))
        assert cur.fetchall() == [(0,)]
        cur.execute("SELECT CAST($1 AS BIGINT) IS NULL", (None,))
        assert cur.fetchall() == [(True,)]


def test_bad_sql_error_carries_the_message(server):
    with connect(server) as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as info:
            cur.execute("SELECT nope FROM sales.orders")
        assert "nope" in str(info.value)
        with pytest.raises(adbc_driver_manager.Error) as info:
            cur.execute("SELECT * FROM sales.ordrs")
        assert "no product 'ordrs' in domain 'sales'" in str(info.value)


def _catalogs(objects):
    return objects.to_pylist()


def test_get_objects_at_every_depth(server):
    with connect(server) as conn:
        catalogs = conn.adbc_get_objects(depth="catalogs").read_all().to_pylist()
        assert [c["catalog_name"] for c in catalogs] == ["mesh"]

        schemas = conn.adbc_get_objects(depth="db_schemas").read_all().to_pylist()
        names = sorted(s["db_schema_name"] for s in schemas[0]["catalog_db_schemas"])
        # The domains, and the engine's own schema.
        assert names == ["customers", "sales", "supply", "system"]

        tables = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        found = {
            (s["db_schema_name"], t["table_name"], t["table_type"])
            for s in tables[0]["catalog_db_schemas"]
            for t in s["db_schema_tables"]
        }
        assert ("sales", "orders", "TABLE") in found and ("customers", "customer", "TABLE") in found
        assert len([t for t in found if t[2] == "TABLE"]) == 8
        assert ("system", "queries", "SYSTEM TABLE") in found
        assert {t[2] for t in found if t[0] == "system"} == {"SYSTEM TABLE"}

        columns = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        by_table = {
            (s["db_schema_name"], t["table_name"]): [c["column_name"] for c in t["table_columns"]]
            for s in columns[0]["catalog_db_schemas"]
            for t in s["db_schema_tables"]
        }
        assert by_table[("customers", "region")] == ["r_regionkey", "r_name", "r_comment"]
        assert "year" in by_table[("sales", "orders")]


def test_get_objects_with_filters(server):
    with connect(server) as conn:
        filtered = conn.adbc_get_objects(
            depth="columns", db_schema_filter="cust%", table_name_filter="n_tion", column_name_filter="n_%key"
        ).read_all().to_pylist()
        schemas = filtered[0]["catalog_db_schemas"]
        assert [s["db_schema_name"] for s in schemas] == ["customers"]
        tables = schemas[0]["db_schema_tables"]
        assert [t["table_name"] for t in tables] == ["nation"]
        assert [c["column_name"] for c in tables[0]["table_columns"]] == ["n_nationkey", "n_regionkey"]
        assert tables[0]["table_columns"][0]["xdbc_type_name"] == "BIGINT"

        nothing = conn.adbc_get_objects(depth="tables", db_schema_filter="marketing").read_all().to_pylist()
        assert all(not c["catalog_db_schemas"] for c in nothing)


def test_get_table_schema(server):
    with connect(server) as conn:
        schema = conn.adbc_get_table_schema("supplier", db_schema_filter="supply")
        assert schema.names == ["s_suppkey", "s_name", "s_address", "s_nationkey", "s_phone", "s_acctbal", "s_comment"]
        assert schema.field("s_acctbal").type == pa.decimal128(15, 2)
        assert schema.field("s_name").type == pa.string()
        with pytest.raises(adbc_driver_manager.Error):
            conn.adbc_get_table_schema("nope", db_schema_filter="supply")


def test_get_info(server):
    with connect(server) as conn:
        info = conn.adbc_get_info()
        assert info["vendor_name"] == "Agora"
        assert info["vendor_version"] == "0.1.0"
        assert info["vendor_arrow_version"]


def test_get_table_types(server):
    with connect(server) as conn:
        assert conn.adbc_get_table_types() == ["SYSTEM TABLE", "TABLE"]


def _rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_million_rows_stream_with_bounded_server_memory(server):
    pid = server["process"].pid
    sql = "SELECT value, value * 2 AS twice, repeat('x', 200) AS pad FROM generate_series(1, 1000000)"
    before = _rss_kib(pid)
    peak = before
    rows = 0
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute(sql)
        reader = cur.fetch_record_batch()
        for batch in reader:
            rows += batch.num_rows
            peak = max(peak, _rss_kib(pid))
            time.sleep(0.001)  # a slow consumer: the server must not run ahead unboundedly
    assert rows == 1_000_000
    # The result is over 200 MB of Arrow data; the server must stream it, not hold it.
    growth_mib = (peak - before) / 1024
    print(f"server RSS: {before / 1024:.0f} MiB before, peak {peak / 1024:.0f} MiB while streaming 1,000,000 rows")
    assert growth_mib < 150, f"server RSS grew by {growth_mib:.0f} MiB while streaming"


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_client_cancellation_stops_the_query(server):
    pid = server["process"].pid
    # A join of two 50-million-row inputs: minutes of work if nobody stopped it.
    sql = (
        "SELECT count(*), sum(a.value) FROM generate_series(1, 50000000) a "
        "JOIN generate_series(1, 50000000) b ON a.value = b.value"
    )
    with connect(server) as conn:
        cur = conn.cursor()
        cur.execute("SELECT value FROM generate_series(1, 1000000000)")
        reader = cur.fetch_record_batch()
        next(iter(reader))  # the stream is running
        del reader
        cur.close()  # the client goes away mid-stream
        cur = conn.cursor()
        cur.adbc_statement.set_sql_query(sql)
        stream, _ = cur.adbc_statement.execute_query()
        time.sleep(0.5)
        del stream
        cur.close()
    time.sleep(1.0)
    start = _cpu_seconds(pid)
    time.sleep(2.0)
    busy = _cpu_seconds(pid) - start
    assert busy < 0.5, f"the server kept working for {busy:.2f} CPU-seconds after the clients went away"


def test_pyarrow_flight_with_a_basic_token(server):
    client = flight.FlightClient(f"grpc://127.0.0.1:{server['port']}")
    header = client.authenticate_basic_token(*ADMIN)
    assert header[0].lower() == b"authorization" and header[1].startswith(b"Bearer ")
    options = flight.FlightCallOptions(headers=[header])
    # A CommandStatementQuery packed in an Any, as Flight SQL clients send it.
    command = statement_command("SELECT r_name FROM customers.region ORDER BY r_regionkey")
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command), options)
    table = client.do_get(info.endpoints[0].ticket, options).read_all()
    assert table.column("r_name").to_pylist() == ["AFRICA", "AMERICA", "ASIA", "EUROPE", "MIDDLE EAST"]
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.authenticate_basic_token("admin", "wrong")



def test_plain_flight_clients_get_schemas_and_an_empty_flight_list(server):
    """pyarrow.flight's GetSchema and ListFlights (generic Flight calls that
    arrow-flight's Flight SQL layer leaves unimplemented)."""
    from conftest import FlightSession, grpc_code

    nations = "SELECT n_nationkey, n_name FROM customers.nation"
    with FlightSession(server, ANALYST) as analyst:
        descriptor = flight.FlightDescriptor.for_command(statement_command(nations))
        schema = analyst.client.get_schema(descriptor, analyst.options()).schema
        assert schema.names == ["n_nationkey", "n_name"]
        assert schema == analyst.info(statement_command(nations)).schema
        # Planned under the analyst's policies: a column they may not read
        # is not in the schema.
        customers = flight.FlightDescriptor.for_command(statement_command("SELECT * FROM customers.customer"))
        names = analyst.client.get_schema(customers, analyst.options()).schema.names
        assert "c_custkey" in names and "c_acctbal" not in names, names
        # A bad statement fails as GetFlightInfo would.
        bad = flight.FlightDescriptor.for_command(statement_command("SELEC 1"))
        with pytest.raises(Exception) as refused:
            analyst.client.get_schema(bad, analyst.options())
        assert grpc_code(refused.value) == "INVALID_ARGUMENT", refused.value
        assert list(analyst.client.list_flights(options=analyst.options())) == []
    anonymous = flight.FlightClient(server["uri"])
    with pytest.raises(Exception) as unauthenticated:
        anonymous.get_schema(flight.FlightDescriptor.for_command(statement_command(nations)))
    assert grpc_code(unauthenticated.value) == "UNAUTHENTICATED", unauthenticated.value
    anonymous.close()


def test_catalog_browsers_see_system_tables_and_column_descriptions(server):
    """GetTables lists the engine's `system` tables (as SYSTEM TABLE) next to
    the products (TABLE), and a product's schema carries its contract's
    column descriptions as ARROW:FLIGHT:SQL:REMARKS (JDBC's REMARKS); the
    header x-agora-table-types: lowercase spells the types in lower case."""
    from conftest import FlightSession, pb_any, pb_bytes, pb_varint

    include_schema = pb_varint(5 << 3 | 0) + pb_varint(1)
    with FlightSession(server, ANALYST) as analyst:
        types = analyst.command(pb_any("CommandGetTableTypes", b"")).column("table_type").to_pylist()
        assert types == ["SYSTEM TABLE", "TABLE"]
        schemas = analyst.command(pb_any("CommandGetDbSchemas", b"")).column("db_schema_name").to_pylist()
        assert "system" in schemas and "customers" in schemas
        tables = analyst.command(pb_any("CommandGetTables", include_schema)).to_pylist()
        kinds = {(t["db_schema_name"], t["table_name"]): t["table_type"] for t in tables}
        assert kinds[("customers", "nation")] == "TABLE"
        assert kinds[("system", "products")] == "SYSTEM TABLE"
        (nation,) = [t for t in tables if t["table_name"] == "nation"]
        fields = {f.name: f.metadata or {} for f in pa.ipc.read_schema(pa.py_buffer(nation["table_schema"]))}
        assert fields["n_name"][b"ARROW:FLIGHT:SQL:REMARKS"] == b"Name of the nation, in capitals."
        # A column the analyst may not read is not listed, nor its description.
        (customer,) = [t for t in tables if t["table_name"] == "customer"]
        names = pa.ipc.read_schema(pa.py_buffer(customer["table_schema"])).names
        assert "c_acctbal" not in names and "c_custkey" in names
        # Only the system tables, by type (the filter ignores case).
        only_system = analyst.command(pb_any("CommandGetTables", pb_bytes(4, "system table"))).to_pylist()
        assert only_system and {t["db_schema_name"] for t in only_system} == {"system"}
        lower = flight.FlightCallOptions(headers=[analyst.header, (b"x-agora-table-types", b"lowercase")], timeout=60)
        info = analyst.client.get_flight_info(flight.FlightDescriptor.for_command(pb_any("CommandGetTables", b"")), lower)
        listed = analyst.client.do_get(info.endpoints[0].ticket, lower).read_all().to_pylist()
        assert {t["table_type"] for t in listed} == {"table", "system table"}


def test_primary_keys_come_from_the_products_contracts(server):
    """GetPrimaryKeys (Power BI and JDBC tools relate tables by it) answers
    with the key each product's contract declares, in key order, for the
    products the principal may see."""
    from conftest import FlightSession, pb_any, pb_bytes

    def keys(user, table, schema=None, catalog=None):
        command = b""
        if catalog is not None:
            command += pb_bytes(1, catalog)
        if schema is not None:
            command += pb_bytes(2, schema)
        command += pb_bytes(3, table)
        with FlightSession(server, user) as session:
            rows = session.command(pb_any("CommandGetPrimaryKeys", command)).to_pylist()
        return [(r["catalog_name"], r["db_schema_name"], r["table_name"], r["column_name"], r["key_sequence"])
                for r in rows]

    assert keys(ADMIN, "nation", "customers") == [("mesh", "customers", "nation", "n_nationkey", 1)]
    # A composite key, in primaryKeyPosition order; found without a schema too.
    lineitem = [("mesh", "sales", "lineitem", "l_orderkey", 1), ("mesh", "sales", "lineitem", "l_linenumber", 2)]
    assert keys(ANALYST, "lineitem", "sales") == lineitem
    assert keys(ANALYST, "lineitem") == lineitem
    assert keys(ANALYST, "lineitem", catalog="mesh") == lineitem
    # The analyst reads customer keys as tokens, but reads them: the key is shown.
    assert keys(ANALYST, "customer", "customers") == [("mesh", "customers", "customer", "c_custkey", 1)]
    # Wrong schema, catalog or table, and the engine's own tables: no key.
    assert keys(ADMIN, "lineitem", "customers") == []
    assert keys(ADMIN, "lineitem", catalog="other") == []
    assert keys(ADMIN, "no_such_product", "sales") == []
    assert keys(ADMIN, "queries", "system") == []


def test_relationships_postgresql_declares_reach_catalog_browsers(agora_bin, pg_mesh_config, tmp_path):
    """The demo's `supply` tables in PostgreSQL declare TPC-H's keys:
    GetPrimaryKeys, GetImportedKeys, GetExportedKeys and GetCrossReference
    (what JDBC's getImportedKeys/getExportedKeys and Power BI's relationship
    detection read) answer with them, one row per column pair."""
    from conftest import FlightSession, pb_any, pb_bytes, serving

    def rows(session, name, fields):
        command = b"".join(pb_bytes(number, value) for number, value in fields)
        return session.command(pb_any(name, command)).to_pylist()

    def pairs(found):
        return [(r["pk_table_name"], r["pk_column_name"], r["fk_table_name"], r["fk_column_name"], r["key_sequence"],
                 r["fk_key_name"], r["update_rule"], r["delete_rule"]) for r in found]

    with serving(agora_bin, pg_mesh_config, tmp_path / "server.log") as server:
        with FlightSession(server, ANALYST) as analyst:
            keys = rows(analyst, "CommandGetPrimaryKeys", [(2, "supply"), (3, "partsupp")])
            assert [(k["column_name"], k["key_sequence"]) for k in keys] == [("ps_partkey", 1), ("ps_suppkey", 2)]
            imported = rows(analyst, "CommandGetImportedKeys", [(1, "mesh"), (2, "supply"), (3, "partsupp")])
            # NO ACTION (3) on update and delete, PostgreSQL's default.
            assert pairs(imported) == [
                ("part", "p_partkey", "partsupp", "ps_partkey", 1, "partsupp_part_fkey", 3, 3),
                ("supplier", "s_suppkey", "partsupp", "ps_suppkey", 1, "partsupp_supplier_fkey", 3, 3),
            ]
            assert {r["pk_db_schema_name"] for r in imported} == {"supply"}
            exported = rows(analyst, "CommandGetExportedKeys", [(2, "supply"), (3, "part")])
            assert pairs(exported) == [("part", "p_partkey", "partsupp", "ps_partkey", 1, "partsupp_part_fkey", 3, 3)]
            cross = rows(analyst, "CommandGetCrossReference", [(3, "supplier"), (6, "partsupp")])
            assert [r["fk_key_name"] for r in cross] == ["partsupp_supplier_fkey"]
            assert rows(analyst, "CommandGetCrossReference", [(3, "part"), (6, "supplier")]) == []
            # Products in files declare no foreign keys.
            assert rows(analyst, "CommandGetImportedKeys", [(2, "sales"), (3, "lineitem")]) == []
