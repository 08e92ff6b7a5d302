"""Value-by-value comparison of query results from two engines."""

import datetime
import decimal
import math


def normalize(value):
    """Makes values from different engines comparable: decimals and floats to 2 places."""
    if isinstance(value, (decimal.Decimal, float)):
        return round(float(value), 2)
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return value


def rows_of(table):
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return [tuple(normalize(col[r]) for col in columns) for r in range(table.num_rows)]


def assert_same_rows(actual, expected, label=""):
    assert len(actual) == len(expected), f"{label}: {len(actual)} rows, expected {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected)):
        for j, (x, y) in enumerate(zip(a, e)):
            if isinstance(x, float) and isinstance(y, float):
                assert math.isclose(x, y, rel_tol=1e-9, abs_tol=0.011), f"{label} row {i} col {j}: {x} != {y}"
            else:
                assert x == y, f"{label} row {i} col {j}: {x!r} != {y!r}"
