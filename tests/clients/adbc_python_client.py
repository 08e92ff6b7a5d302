"""The Python ADBC Flight SQL driver (the Go driver underneath), through its
DB-API module: what notebooks, dbt-style tools and the pandas and polars
rows use underneath."""

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flightsql

from scenario import BAD, MILLION, PARAMETERISED, PING, arguments, report

uri, host, port, user, password, token = arguments()


def connect_password():
    return flightsql.connect(uri, db_kwargs={"username": user, "password": password}, autocommit=True)


def connect_token():
    header = adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value
    return flightsql.connect(uri, db_kwargs={header: f"Bearer {token}"}, autocommit=True)


def ping(connect):
    with connect() as conn, conn.cursor() as cur:
        cur.execute(PING)
        return cur.fetchall()


conn = connect_password()


def objects():
    catalogs = conn.adbc_get_objects(depth="all").read_all().to_pylist()
    return [c for c in catalogs if c["catalog_name"] == "mesh"][0]["catalog_db_schemas"]


def schemas():
    return [s["db_schema_name"] for s in objects()]


def tables():
    (customers,) = [s for s in objects() if s["db_schema_name"] == "customers"]
    return [t["table_name"] for t in customers["db_schema_tables"]]


def columns():
    (customers,) = [s for s in objects() if s["db_schema_name"] == "customers"]
    (nation,) = [t for t in customers["db_schema_tables"] if t["table_name"] == "nation"]
    return [c["column_name"] for c in nation["table_columns"]]


cursor = conn.cursor()


def parameterised(value):
    # The same cursor and statement: the driver keeps its prepared statement.
    cursor.execute(PARAMETERISED, (value,))
    return cursor.fetchall()


def million():
    with conn.cursor() as cur:
        cur.execute(MILLION)
        return sum(batch.num_rows for batch in cur.fetch_record_batch())


def bad():
    with conn.cursor() as cur:
        cur.execute(BAD)
    return "no error"


report(
    {
        "login_password": lambda: ping(connect_password),
        "login_token": lambda: ping(connect_token),
        "schemas": schemas,
        "tables": tables,
        "columns": columns,
        "parameterised": lambda: parameterised(7),
        "prepared_again": lambda: parameterised(8),
        "million": million,
        "bad_query": bad,
    }
)
cursor.close()
conn.close()
