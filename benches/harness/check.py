"""Checks one engine's answer against another's, value by value.

Engines differ in result types (DataFusion keeps decimals where DuckDB returns
doubles for averages, strings may be views), so values are normalised: numbers
compared to a cent (relative 1e-9 for large sums), dates and times as ISO text,
trailing blanks of fixed-width text ignored. Rows are compared in order; when
that fails but the sorted rows agree, the difference is only in the order of
ties, which TPC-H's ORDER BY clauses leave open, and the answer is accepted.
"""

from __future__ import annotations

import datetime
import decimal
import math

import pyarrow as pa


def _normalize(value):
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (decimal.Decimal, float, int)):
        return float(value)
    if isinstance(value, (datetime.date, datetime.datetime, datetime.time)):
        return value.isoformat()
    if isinstance(value, str):
        return value.rstrip()
    return value


def _rows(table: pa.Table) -> list[tuple]:
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return [tuple(_normalize(c[r]) for c in columns) for r in range(table.num_rows)]


def _same(x, y) -> bool:
    if isinstance(x, float) and isinstance(y, float):
        return math.isclose(x, y, rel_tol=1e-9, abs_tol=0.011)
    return x == y


def _sort_key(row):
    return tuple((v is None, round(v, 1) if isinstance(v, float) else v) for v in row)


def difference(actual: pa.Table, expected: pa.Table) -> str | None:
    """None when the answers agree, else a description of the first difference."""
    if actual.num_columns != expected.num_columns:
        return f"{actual.num_columns} columns, expected {expected.num_columns}"
    if actual.num_rows != expected.num_rows:
        return f"{actual.num_rows} rows, expected {expected.num_rows}"
    a, e = _rows(actual), _rows(expected)
    first = _first_difference(a, e)
    if first is None:
        return None
    if _first_difference(sorted(a, key=_sort_key), sorted(e, key=_sort_key)) is None:
        return None
    return first


def _first_difference(a: list[tuple], e: list[tuple]) -> str | None:
    for i, (ra, re) in enumerate(zip(a, e)):
        for j, (x, y) in enumerate(zip(ra, re)):
            if not _same(x, y):
                return f"row {i} column {j}: {x!r}, expected {y!r}"
    return None
