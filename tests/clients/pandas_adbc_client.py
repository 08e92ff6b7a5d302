"""pandas reading through an ADBC connection (`pandas.read_sql`)."""

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flightsql
import pandas as pd

from scenario import BAD, MILLION, PING, arguments, report

uri, host, port, user, password, token = arguments()
header = adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value


def read(sql, **db_kwargs):
    with flightsql.connect(uri, db_kwargs=db_kwargs or {"username": user, "password": password}, autocommit=True) as conn:
        return pd.read_sql(sql, conn)


report(
    {
        "login_password": lambda: read(PING).to_dict("records"),
        "login_token": lambda: read(PING, **{header: f"Bearer {token}"}).to_dict("records"),
        "schemas": "pandas reads query results; browsing is the driver's (see the ADBC row)",
        "tables": "pandas reads query results; browsing is the driver's (see the ADBC row)",
        "columns": lambda: list(read("SELECT * FROM customers.nation LIMIT 0").columns),
        # pandas raises NotImplementedError("'params' is not implemented for
        # ADBC drivers"): bind through the ADBC cursor (the ADBC row).
        "parameterised": "pandas.read_sql takes no params on an ADBC connection",
        "prepared_again": "pandas.read_sql takes no params on an ADBC connection",
        "million": lambda: len(read(MILLION)),
        "bad_query": lambda: read(BAD),
    }
)
