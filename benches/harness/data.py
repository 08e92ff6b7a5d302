"""Benchmark data: TPC-H as Parquet, Delta Lake and PostgreSQL, plus DuckDB helpers.

Everything is built once per scale factor under a cache directory and reused:

    <cache>/tpch-sf<scale>/parquet/<table>.parquet   tpchgen-cli, one file per table
    <cache>/tpch-sf<scale>/delta/<table>/            deltalake, from the Parquet data
    PostgreSQL schema `tpch` (COMMENT ON SCHEMA = "tpch sf<scale>")

A step writes its marker last (`parquet.complete`, `delta.complete`, the schema
comment), so an interrupted step is redone from scratch on the next call.
Scale factors appear as `f"{scale:g}"`: 0.1 -> "0.1", 1.0 -> "1", 10 -> "10".
"""

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import deltalake
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from duckdb_extensions import import_extension

TABLES = ("region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem")

PRIMARY_KEYS = {
    "region": ("r_regionkey",),
    "nation": ("n_nationkey",),
    "supplier": ("s_suppkey",),
    "customer": ("c_custkey",),
    "part": ("p_partkey",),
    "partsupp": ("ps_partkey", "ps_suppkey"),
    "orders": ("o_orderkey",),
    "lineitem": ("l_orderkey", "l_linenumber"),
}

LINEITEM_DELTA_FILES = 32


def scale_dir(cache: Path, scale: float) -> Path:
    """The per-scale cache directory, e.g. `<cache>/tpch-sf0.1`."""
    return Path(cache) / f"tpch-sf{scale:g}"


# --------------------------------------------------------------------------- Parquet


def generate_tpch(cache: Path, scale: float) -> Path:
    """Generate TPC-H at `scale` as Parquet (one SNAPPY file per table) once; return the directory.

    Uses the `tpchgen-cli` executable of the running venv. tpchgen-cli 4.0 writes int64 keys,
    int32 for l_linenumber/o_shippriority/p_size/ps_availqty, decimal128(15,2) money, date32 dates,
    Utf8View strings, non-nullable fields, and `PARQUET:field_id` on every field.
    """
    base = scale_dir(cache, scale)
    out = base / "parquet"
    marker = base / "parquet.complete"
    if marker.exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cli = Path(sys.executable).parent / "tpchgen-cli"
    subprocess.run([str(cli), "parquet", "--scale-factor", f"{scale:g}", "--output-dir", str(out),
                    "--overwrite", "--no-progress", "--quiet"], check=True)
    missing = [t for t in TABLES if not (out / f"{t}.parquet").is_file()]
    if missing:
        raise RuntimeError(f"tpchgen-cli did not write {missing} in {out}")
    marker.write_text(f"tpch sf{scale:g}\n")
    return out


# --------------------------------------------------------------------------- Delta Lake


def plain_schema(schema: pa.Schema) -> pa.Schema:
    """`schema` without any field or schema metadata, Utf8View turned into Utf8.

    DuckDB 1.5.5's delta_scan returns NULL for every column whose Delta schema carries
    `parquet.field.id` (copied from tpchgen's `PARQUET:field_id`), hence the stripping.
    """
    def plain(t: pa.DataType) -> pa.DataType:
        return pa.string() if t == pa.string_view() else t

    return pa.schema([pa.field(f.name, plain(f.type), f.nullable) for f in schema])


def build_delta(cache: Path, scale: float, parquet_dir: Path) -> Path:
    """Write the 8 tables as Delta Lake tables once; return `<cache>/tpch-sf<scale>/delta`.

    * all tables: same columns and types as the Parquet (decimal128, date32, int32/int64; strings as
      Utf8), metadata stripped (see `plain_schema`), one commit each, default delta-rs writer;
    * orders: extra int32 column `o_orderyear` = year(o_orderdate), partitioned by it;
    * lineitem: sorted by (l_shipdate, l_orderkey, l_linenumber), 32 appends of ceil(rows/32)
      rows = 32 files (one commit each, so versions 0..31), then a checkpoint.
    Verified before the marker is written (`verify_delta`).
    """
    base = scale_dir(cache, scale)
    out = base / "delta"
    marker = base / "delta.complete"
    if marker.exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for table in TABLES:
        source = Path(parquet_dir) / f"{table}.parquet"
        if table == "lineitem":
            _write_lineitem_delta(source, out / table)
            continue
        data = pq.read_table(source)
        data = data.cast(plain_schema(data.schema))
        partition_by = None
        if table == "orders":
            year = pc.year(data["o_orderdate"]).cast(pa.int32())
            data = data.append_column(pa.field("o_orderyear", pa.int32(), False), year)
            partition_by = ["o_orderyear"]
        deltalake.write_deltalake(out / table, data, partition_by=partition_by, name=table)
    verify_delta(parquet_dir, out)
    marker.write_text(f"tpch sf{scale:g}\n")
    return out


def _write_lineitem_delta(source: Path, path: Path) -> None:
    """lineitem sorted by ship date (DuckDB sorts, out of core if needed) in 32 equal appends."""
    rows = pq.ParquetFile(source).metadata.num_rows
    per_file = math.ceil(rows / LINEITEM_DELTA_FILES)
    schema = plain_schema(pq.read_schema(source))
    con = duckdb_connect()
    reader = con.execute("SELECT * FROM read_parquet(?) ORDER BY l_shipdate, l_orderkey, l_linenumber",
                         [str(source)]).to_arrow_reader(per_file)
    pending: list[pa.RecordBatch] = []
    pending_rows = 0

    def flush(n: int) -> None:
        nonlocal pending, pending_rows
        chunk = pa.Table.from_batches(pending).combine_chunks()
        head, rest = chunk.slice(0, n), chunk.slice(n)
        # DuckDB hands out nullable fields; the cast restores the Parquet's (non-null) schema.
        deltalake.write_deltalake(path, head.cast(schema), mode="append", name="lineitem",
                                  target_file_size=1 << 40)
        pending, pending_rows = rest.to_batches(), rest.num_rows

    for batch in reader:
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= per_file:
            flush(per_file)
    if pending_rows:
        flush(pending_rows)
    con.close()
    deltalake.DeltaTable(path).create_checkpoint()


def verify_delta(parquet_dir: Path, delta_dir: Path) -> dict[str, int]:
    """Check every Delta table against its Parquet file through DuckDB's delta_scan.

    Compares count(*), an order-independent hash of all Parquet columns and the number of rows
    with a NULL (catches the field-id trap), and checks that lineitem has 32 files.
    Returns {table: number of Delta files}.
    """
    con = duckdb_connect()
    files = {}
    for table in TABLES:
        parquet = str(Path(parquet_dir) / f"{table}.parquet")
        delta = str(Path(delta_dir) / table)
        files[table] = len(deltalake.DeltaTable(delta).file_uris())
        columns = [f.name for f in pq.read_schema(parquet)]
        check = (f"SELECT count(*), bit_xor(hash({', '.join(columns)})), "
                 f"count(*) FILTER (WHERE {' OR '.join(f'{c} IS NULL' for c in columns)}) FROM ")
        want = con.execute(check + "read_parquet(?)", [parquet]).fetchone()
        got = con.execute(check + "delta_scan(?)", [delta]).fetchone()
        if got != want:
            raise RuntimeError(f"delta_scan({delta}) differs from {parquet}: "
                               f"(rows, hash, rows with NULLs) {got} != {want}")
    con.close()
    if files["lineitem"] != LINEITEM_DELTA_FILES:
        raise RuntimeError(f"lineitem has {files['lineitem']} Delta files, expected {LINEITEM_DELTA_FILES}")
    return files


# --------------------------------------------------------------------------- PostgreSQL


def pg_type(t: pa.DataType) -> str:
    """PostgreSQL column type for an Arrow type of tpchgen's Parquet."""
    if pa.types.is_decimal(t):
        return f"numeric({t.precision},{t.scale})"
    types = {pa.int64(): "bigint", pa.int32(): "integer", pa.float64(): "double precision",
             pa.string(): "text", pa.string_view(): "text", pa.large_string(): "text", pa.date32(): "date"}
    return types[t]


def psql(url: str, *args: str) -> str:
    """Run psql with ON_ERROR_STOP, unaligned tuples-only output; return stdout."""
    return subprocess.run(["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-tA", *args],
                          check=True, capture_output=True, text=True).stdout


def load_postgres(url: str, parquet_dir: Path, scale: float, schema: str = "tpch") -> None:
    """Load the 8 TPC-H tables into PostgreSQL schema `schema` unless already loaded at `scale`.

    Columns are the Parquet columns with matching types (`pg_type`); rows are streamed as CSV
    through `psql \\copy … FROM pstdin`; then primary keys, VACUUM ANALYZE and, last, the marker
    `COMMENT ON SCHEMA <schema> IS 'tpch sf<scale>'`. A schema with another marker is dropped.
    """
    marker = f"tpch sf{scale:g}"
    current = psql(url, "-c", "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace "
                              f"WHERE nspname = '{schema}'")
    if current.strip() == marker:
        return
    psql(url, "-c", f"DROP SCHEMA IF EXISTS {schema} CASCADE", "-c", f"CREATE SCHEMA {schema}")
    for table in TABLES:
        source = pq.ParquetFile(Path(parquet_dir) / f"{table}.parquet")
        columns = ", ".join(f"{f.name} {pg_type(f.type)} NOT NULL" for f in source.schema_arrow)
        psql(url, "-c", f"CREATE TABLE {schema}.{table} ({columns})")
        _copy_csv(url, f"{schema}.{table}", source)
    for table in TABLES:
        psql(url, "-c", f"SET maintenance_work_mem = '1GB'; ALTER TABLE {schema}.{table} "
                        f"ADD PRIMARY KEY ({', '.join(PRIMARY_KEYS[table])})")
    psql(url, "-c", "VACUUM ANALYZE " + ", ".join(f"{schema}.{t}" for t in TABLES))
    psql(url, "-c", f"COMMENT ON SCHEMA {schema} IS '{marker}'")


def _copy_csv(url: str, table: str, source: pq.ParquetFile) -> None:
    """Stream `source` as headerless CSV into `psql \\copy table FROM pstdin`."""
    schema = plain_schema(source.schema_arrow)
    proc = subprocess.Popen(["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c",
                             f"\\copy {table} FROM pstdin WITH (FORMAT csv)"], stdin=subprocess.PIPE)
    try:
        with pacsv.CSVWriter(proc.stdin, schema, write_options=pacsv.WriteOptions(include_header=False)) as writer:
            for batch in source.iter_batches(batch_size=64 * 1024):
                writer.write_batch(batch.cast(schema))
    finally:
        proc.stdin.close()
        if proc.wait() != 0:
            raise RuntimeError(f"psql \\copy into {table} failed with exit code {proc.returncode}")


# --------------------------------------------------------------------------- DuckDB


def duckdb_connect(threads: int = 2) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with `threads` threads and tpch, postgres_scanner, delta loaded.

    Offline: the extensions come from the duckdb-extension-* wheels, installed (a local file copy)
    into `<venv>/duckdb-extensions` rather than ~/.duckdb, and auto-install from the network is off.
    """
    con = duckdb.connect(config={"extension_directory": str(Path(sys.prefix) / "duckdb-extensions"),
                                 "autoinstall_known_extensions": False})
    con.execute(f"SET threads = {int(threads)}")
    for name in ("tpch", "postgres_scanner", "delta"):
        try:
            con.execute(f"LOAD {name}")
        except duckdb.Error:
            import_extension(name, con=con)
            con.execute(f"LOAD {name}")
    return con


def tpch_queries(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """DuckDB's 22 TPC-H queries as {"q01": sql, …, "q22": sql}, trailing `;` and blanks removed."""
    rows = con.execute("SELECT query_nr, query FROM tpch_queries() ORDER BY query_nr").fetchall()
    return {f"q{nr:02d}": sql.strip().rstrip(";").rstrip() for nr, sql in rows}


# --------------------------------------------------------------------------- SQL rewriting

_TOKEN = re.compile(r"""
    (?P<string>'(?:[^']|'')*')          # 'string literal'
  | (?P<quoted>"(?:[^"]|"")*")          # "quoted identifier"
  | (?P<comment>--[^\n]*|/\*.*?\*/)
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<space>\s+)
  | (?P<other>.)
""", re.VERBOSE | re.DOTALL)

_FROM_LIST_END = {"where", "group", "order", "having", "limit", "offset", "union", "except", "intersect",
                  "qualify", "window", "on", "using", "select", "returning", "fetch"}


def qualify(sql: str, names: dict[str, str]) -> str:
    """Replace table references in FROM/JOIN lists: `qualify(q, {"lineitem": "sales.lineitem"})`.

    Only an unquoted, unqualified word in table position is replaced (matched case-insensitively):
    right after FROM or JOIN, or after a comma of a FROM list, at a nesting level that is a query
    (top level, or a parenthesis opened by SELECT/WITH). Not replaced: string literals, quoted
    identifiers, comments, longer identifiers (c_orders, ps_partkey), qualified names (pg.lineitem),
    column aliases such as TPC-H Q8/Q9's `n_name AS nation`, and `extract(year FROM …)`.
    CTE names are not tracked: a CTE named like a key would be replaced where it is used.
    """
    lower = {k.lower(): v for k, v in names.items()}
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(sql)]
    significant = [i for i, (kind, _) in enumerate(tokens) if kind not in ("space", "comment")]
    # One entry per nesting level: [is_query, state]; state None (not in a FROM list),
    # "expect" (a table reference may come next) or "after" (after one).
    levels = [[True, None]]
    fresh_paren = False
    for pos, i in enumerate(significant):
        kind, text = tokens[i]
        word = text.lower() if kind == "word" else None
        level = levels[-1]
        if fresh_paren:
            level[0] = word in ("select", "with")
            fresh_paren = False
        if text == "(":
            if level[1] == "expect":
                level[1] = "after"  # a derived table: (SELECT …) AS alias
            levels.append([False, None])
            fresh_paren = True
        elif text == ")":
            if len(levels) > 1:
                levels.pop()
        elif not level[0]:
            continue
        elif word == "from" or word == "join":
            level[1] = "expect"
        elif word in _FROM_LIST_END:
            level[1] = None
        elif text == "," and level[1] is not None:
            level[1] = "expect"
        elif level[1] == "expect" and word in ("lateral", "only"):
            pass
        elif level[1] == "expect" and kind in ("word", "quoted"):
            level[1] = "after"
            nxt = significant[pos + 1] if pos + 1 < len(significant) else None
            qualified = nxt is not None and tokens[nxt][1] == "."
            if kind == "word" and not qualified and word in lower:
                tokens[i] = (kind, lower[word])
    return "".join(text for _, text in tokens)
