"""polars reading through an ADBC connection (`polars.read_database`)."""

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flightsql
import polars as pl

from scenario import BAD, MILLION, PARAMETERISED, PING, arguments, report

uri, host, port, user, password, token = arguments()
header = adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value


def read(sql, params=None, **db_kwargs):
    with flightsql.connect(uri, db_kwargs=db_kwargs or {"username": user, "password": password}, autocommit=True) as conn:
        options = {"parameters": params} if params is not None else None
        return pl.read_database(sql, connection=conn, execute_options=options)


report(
    {
        "login_password": lambda: read(PING).rows(),
        "login_token": lambda: read(PING, **{header: f"Bearer {token}"}).rows(),
        "schemas": "polars reads query results; browsing is the driver's (see the ADBC row)",
        "tables": "polars reads query results; browsing is the driver's (see the ADBC row)",
        "columns": lambda: read("SELECT * FROM customers.nation LIMIT 0").columns,
        "parameterised": lambda: read(PARAMETERISED, params=(7,)).rows(),
        "prepared_again": lambda: read(PARAMETERISED, params=(8,)).rows(),
        "million": lambda: read(MILLION).height,
        "bad_query": lambda: read(BAD),
    }
)
