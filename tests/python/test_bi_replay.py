"""What BI tools' drivers send when they connect and browse, replayed on the
wire (docs/clients.md, "BI tools"): the drivers themselves (Java, Go plugins
inside Grafana, Windows ODBC) are not installable here, so each test sends
the calls their sources make, in their order, with the same fields, and
checks the answers the way those drivers read them.

- Arrow Flight SQL JDBC driver (DBeaver, Tableau): arrow-java's
  ArrowFlightSqlClientHandler / ArrowDatabaseMetadata; DBeaver's generic
  plugin on connect.
- Grafana's Flight SQL data source (influxdata/grafana-flightsql-datasource,
  pkg/flightsql/resources.go and flightsql.go).
- The Arrow Flight SQL ODBC driver (apache/arrow cpp/src/arrow/flight/sql/odbc),
  which Power BI's and Excel's ODBC connectors load.
"""

import re
import sys

import pyarrow as pa
import pyarrow.flight as flight

from conftest import ANALYST, ROOT, FlightSession, pb_any, pb_bytes, pb_decode, pb_varint, statement_command


def pb_bool(number, value):
    return pb_varint(number << 3 | 0) + pb_varint(1 if value else 0)


def get_tables(catalog=None, schema=None, table=None, types=(), include_schema=False):
    """A CommandGetTables with the given fields (absent ones unset)."""
    body = b""
    for number, value in ((1, catalog), (2, schema), (3, table)):
        if value is not None:
            body += pb_bytes(number, value)
    for kind in types:
        body += pb_bytes(4, kind)
    if include_schema:
        body += pb_bool(5, True)
    return pb_any("CommandGetTables", body)


def keys_command(name, catalog, schema, table):
    return pb_any(name, pb_bytes(1, catalog) + pb_bytes(2, schema) + pb_bytes(3, table))


def sql_info_values(table):
    """{info_name: python value} of a GetSqlInfo answer (dense union values)."""
    return dict(zip(table.column("info_name").to_pylist(), table.column("value").to_pylist()))


def test_the_jdbc_driver_and_dbeaver_connect_browse_and_query(server):
    with FlightSession(server, ANALYST) as jdbc:
        # Connect: one GetSqlInfo with no ids, cached; the driver reads
        # strings, booleans, Long and Integer bitmasks from it.
        info = sql_info_values(jdbc.command(pb_any("CommandGetSqlInfo", b"")))
        assert info[0] == "Agora" and isinstance(info[1], str) and info[1], info  # server name, version
        assert info[3] is True, "FLIGHT_SQL_SERVER_READ_ONLY"
        # DBeaver: getTypeInfo → GetXdbcTypeInfo, then getCatalogs.
        types = jdbc.command(pb_any("CommandGetXdbcTypeInfo", b""))
        assert {"VARCHAR", "BIGINT", "TIMESTAMP"} <= set(types.column("type_name").to_pylist())
        assert jdbc.command(pb_any("CommandGetCatalogs", b"")).column("catalog_name").to_pylist() == ["mesh"]
        # One catalog, so DBeaver asks for schemas with no catalog at all.
        schemas = jdbc.command(pb_any("CommandGetDbSchemas", b"")).to_pylist()
        assert {s["db_schema_name"] for s in schemas} >= {"customers", "sales", "supply", "system"}
        assert {s["catalog_name"] for s in schemas} == {"mesh"}
        # getTableTypes, getTables(include_schema=false), getColumns.
        table_types = jdbc.command(pb_any("CommandGetTableTypes", b"")).column("table_type").to_pylist()
        assert "TABLE" in table_types
        tables = jdbc.command(get_tables("mesh", "customers", types=["TABLE"])).to_pylist()
        assert sorted(t["table_name"] for t in tables) == ["customer", "nation", "region"]
        (nation,) = jdbc.command(get_tables("mesh", "customers", "nation", include_schema=True)).to_pylist()
        schema = pa.ipc.read_schema(pa.py_buffer(nation["table_schema"]))
        for field in schema:
            metadata = field.metadata or {}
            # getColumns reads TYPE_NAME, PRECISION and SCALE from here.
            assert b"ARROW:FLIGHT:SQL:TYPE_NAME" in metadata, (field.name, metadata)
        assert not any(pa.types.is_string_view(f.type) or pa.types.is_binary_view(f.type) for f in schema), (
            "view types break JDBC drivers before 19.0"
        )
        # getPrimaryKeys / getImportedKeys / getExportedKeys for the table.
        pk = jdbc.command(keys_command("CommandGetPrimaryKeys", "mesh", "customers", "nation")).to_pylist()
        assert [(k["column_name"], k["key_sequence"]) for k in pk] == [("n_nationkey", 1)]
        for name in ("CommandGetImportedKeys", "CommandGetExportedKeys"):
            answer = jdbc.command(keys_command(name, "mesh", "customers", "nation"))
            assert answer.num_rows == 0 and "pk_table_name" in answer.schema.names, name

        # Every JDBC statement is prepared: a non-empty dataset schema marks
        # a query (an empty one would be taken for an update).
        request = pb_bytes(1, "SELECT n_name FROM customers.nation WHERE n_regionkey = 3 ORDER BY n_name")
        action = flight.Action("CreatePreparedStatement", pb_any("ActionCreatePreparedStatementRequest", request))
        (result,) = list(jdbc.client.do_action(action, jdbc.options()))
        prepared = pb_decode(pb_decode(result.body.to_pybytes())[2][0])  # Any.value → the result
        handle, dataset_schema = prepared[1][0], pa.ipc.read_schema(pa.py_buffer(prepared[2][0]))
        assert dataset_schema.names == ["n_name"]
        # is_update (field 4) present and false: drivers that read it take
        # the query path without guessing from the schema.
        assert prepared.get(4) == [0], prepared
        rows = jdbc.command(pb_any("CommandPreparedStatementQuery", pb_bytes(1, handle)))
        assert rows.column("n_name").to_pylist()[:2] == ["FRANCE", "GERMANY"]
        close = flight.Action("ClosePreparedStatement", pb_any("ActionClosePreparedStatementRequest", pb_bytes(1, handle)))
        assert list(jdbc.client.do_action(close, jdbc.options())) == []


def test_grafanas_flight_sql_data_source_browses_and_runs_a_time_series(server):
    with FlightSession(server, ANALYST) as grafana:
        # "Save & test": SELECT 1 as a plain statement.
        assert grafana.query("select 1").num_rows == 1
        # The query editor: GetSqlInfo with no ids, the tables of type
        # "BASE TABLE", then the columns of one table by name only.
        assert grafana.command(pb_any("CommandGetSqlInfo", b"")).num_rows > 0
        tables = grafana.command(get_tables(types=["BASE TABLE"])).to_pylist()
        names = {(t["db_schema_name"], t["table_name"]) for t in tables}
        assert ("sales", "orders") in names and ("customers", "nation") in names, names
        assert not any(schema == "system" for schema, _ in names), "system tables are not BASE TABLEs"
        (orders, *_) = grafana.command(get_tables(table="orders", include_schema=True)).to_pylist()
        assert "o_orderdate" in pa.ipc.read_schema(pa.py_buffer(orders["table_schema"])).names
        # A panel: $__dateBin and $__timeFilter as the plugin expands them.
        sql = (
            "SELECT date_bin(interval '604800 second', CAST(o_orderdate AS TIMESTAMP), "
            "timestamp '1970-01-01T00:00:00Z') AS time, count(*) AS orders FROM sales.orders "
            "WHERE CAST(o_orderdate AS TIMESTAMP) >= '1995-01-01T00:00:00Z' "
            "AND CAST(o_orderdate AS TIMESTAMP) <= '1995-03-01T00:00:00Z' GROUP BY 1 ORDER BY 1"
        )
        panel = grafana.query(sql)
        assert pa.types.is_timestamp(panel.schema.field("time").type)
        assert 8 <= panel.num_rows <= 10 and all(n > 0 for n in panel.column("orders").to_pylist())


def test_the_odbc_driver_catalog_functions(server):
    """The Arrow Flight SQL ODBC driver (what Power BI's and Excel's ODBC
    connectors load), as its flight_sql_statement*.cc map the ODBC catalog
    functions: SQLGetInfo from one cached GetSqlInfo; SQLTables("%", "", "")
    → GetCatalogs, SQLTables("", "%", "") → GetDbSchemas with pattern "%" and
    no catalog, SQLTables("", "", "", "%") → GetTableTypes, otherwise
    GetTables with the types parsed from "'TABLE','VIEW'"; SQLColumns →
    GetTables with include_schema; SQLGetTypeInfo → GetXdbcTypeInfo; a
    statement is prepared (for its result columns) or executed directly."""
    with FlightSession(server, ANALYST) as odbc:
        assert odbc.command(pb_any("CommandGetSqlInfo", b"")).num_rows > 0
        assert odbc.command(pb_any("CommandGetCatalogs", b"")).column("catalog_name").to_pylist() == ["mesh"]
        schemas = odbc.command(pb_any("CommandGetDbSchemas", pb_bytes(2, "%"))).column("db_schema_name")
        assert {"customers", "sales", "supply", "system"} <= set(schemas.to_pylist())
        assert "TABLE" in odbc.command(pb_any("CommandGetTableTypes", b"")).column("table_type").to_pylist()
        tables = odbc.command(get_tables("mesh", "sales", "%", types=["TABLE", "VIEW"])).column("table_name")
        assert {"orders", "lineitem"} <= set(tables.to_pylist())
        (orders,) = odbc.command(get_tables("mesh", "sales", "orders", include_schema=True)).to_pylist()
        columns = pa.ipc.read_schema(pa.py_buffer(orders["table_schema"]))
        # A masked column keeps its place (o_custkey is a token for the analyst).
        assert "o_custkey" in columns.names
        assert "VARCHAR" in odbc.command(pb_any("CommandGetXdbcTypeInfo", b"")).column("type_name").to_pylist()
        preview = odbc.command(statement_command('SELECT * FROM "mesh"."sales"."orders" LIMIT 1000'))
        assert preview.num_rows == 1000 and preview.schema.names == columns.names


def test_the_docs_list_exactly_the_replayed_tools():
    """docs/clients.md's table of replayed BI tools names this module's tests."""
    text = (ROOT / "docs" / "clients.md").read_text()
    table = re.search(r"<!-- replayed:start -->\n(.*?)<!-- replayed:end -->", text, re.S)
    assert table, "docs/clients.md has no <!-- replayed:start --> … <!-- replayed:end --> table"
    listed = set(re.findall(r"`(test_\w+)`", table.group(1)))
    module = sys.modules[__name__]
    tests = {name for name in dir(module) if name.startswith("test_") and name != "test_the_docs_list_exactly_the_replayed_tools"}
    assert listed == tests, (listed, tests)
