"""flightsql-dbapi: the Flight SQL DB-API and the SQLAlchemy dialect
(`datafusion://`) Apache Superset connects with, driven as Superset does:
an inspector over schemas, tables, columns and keys, then `text()` queries
with bound values.

The URL carries `feature-sqlalchemy-prepared-statements=on`: without it the
dialect renders bound values into the SQL itself and `text()` binds arrive
as `= NULL` (docs/clients.md, Superset)."""

from flightsql import FlightSQLClient, connect
from sqlalchemy import create_engine, inspect, text

from scenario import BAD, MILLION, PARAMETERISED, PING, arguments, report

uri, host, port, user, password, token = arguments()
FEATURES = "feature-sqlalchemy-prepared-statements=on&feature-sqlalchemy-primary-keys=on"
engine = create_engine(f"datafusion://{user}:{password}@{host}:{port}?insecure=true&{FEATURES}")
inspector = inspect(engine)


def ping(**credentials):
    with connect(FlightSQLClient(host=host, port=port, insecure=True, **credentials)) as conn:
        cursor = conn.cursor()
        cursor.execute(PING)
        return cursor.fetchall()


def bound(value):
    with engine.connect() as conn:
        sql = text(PARAMETERISED.replace("?", ":key"))
        return [list(row) for row in conn.execute(sql, {"key": value}).fetchall()]


def million():
    with connect(FlightSQLClient(host=host, port=port, user=user, password=password, insecure=True)) as conn:
        cursor = conn.cursor()
        cursor.execute(MILLION)
        return len(cursor.fetchall())


def bad():
    with engine.connect() as conn:
        conn.execute(text(BAD))
    return "no error"


report(
    {
        "login_password": lambda: ping(user=user, password=password),
        "login_token": lambda: ping(token=token),
        "schemas": inspector.get_schema_names,
        "tables": lambda: inspector.get_table_names(schema="customers"),
        "columns": lambda: [c["name"] for c in inspector.get_columns("nation", schema="customers")],
        "parameterised": lambda: bound(7),
        "prepared_again": lambda: bound(8),
        "million": million,
        "bad_query": bad,
    }
)
