"""sqlalchemy-adbc's Flight SQL dialect (`adbc+flightsql://`) over the ADBC
driver: the SQLAlchemy 2 way to reach Flight SQL (Superset, pandas'
`read_sql` with an engine, notebooks).

Its URL forms, as docs/clients.md (Superset) gives them: the password part of
`user:password@` is sent as a bearer *token*, so user and password go in
the query (`username=…&password=…`, forwarded to the driver), and the
header `x-agora-table-types=lowercase` makes table types `table`, the
spelling the dialect compares with."""

from sqlalchemy import create_engine, inspect, text

from scenario import BAD, MILLION, PARAMETERISED, PING, arguments, report

uri, host, port, user, password, token = arguments()
LOWER = "header.x-agora-table-types=lowercase"
engine = create_engine(
    f"adbc+flightsql://{host}:{port}?tls=false&username={user}&password={password}&{LOWER}"
)
inspector = inspect(engine)


def ping(engine):
    with engine.connect() as conn:
        return [list(row) for row in conn.execute(text(PING)).fetchall()]


def bound(value):
    with engine.connect() as conn:
        sql = text(PARAMETERISED.replace("?", ":key"))
        return [list(row) for row in conn.execute(sql, {"key": value}).fetchall()]


def million():
    with engine.connect() as conn:
        return len(conn.execute(text(MILLION)).fetchall())


def bad():
    with engine.connect() as conn:
        conn.execute(text(BAD))
    return "no error"


report(
    {
        "login_password": lambda: ping(engine),
        "login_token": lambda: ping(create_engine(f"adbc+flightsql://token:{token}@{host}:{port}?tls=false")),
        "schemas": inspector.get_schema_names,
        "tables": lambda: inspector.get_table_names(schema="customers"),
        "columns": lambda: [c["name"] for c in inspector.get_columns("nation", schema="customers")],
        "parameterised": lambda: bound(7),
        "prepared_again": lambda: bound(8),
        "million": million,
        "bad_query": bad,
    }
)
