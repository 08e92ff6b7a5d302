"""PostgreSQL → Arrow bulk read, Agora vs ConnectorX vs ADBC PostgreSQL vs COPY BINARY.

Run through benches/pg_read/run, which prepares the venv, PostgreSQL and the data.
Every tool reads the same table in the same run; each is warmed up once and timed
`--runs` times; the minimum and median are reported, with rows/s and the ratio of
Agora's time to each peer's.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path

import sys

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from report import write_section  # noqa: E402

DDL = {
    pa.int64(): "bigint",
    pa.int32(): "integer",
    pa.float64(): "double precision",
    pa.string(): "text",
    pa.date32(): "date",
}


def pg_type(t):
    if pa.types.is_decimal(t):
        return f"numeric({t.precision},{t.scale})"
    return DDL[t]


def psql(url, *args, stdin=None, capture=True):
    return subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-tA", *args], input=stdin, check=True,
                          capture_output=capture).stdout


def load_lineitem(url, data, scale):
    marker = f"lineitem sf{scale}"
    try:
        if psql(url, "-c", "SELECT obj_description('public.lineitem'::regclass)").decode().strip() == marker:
            return
    except subprocess.CalledProcessError:
        pass
    files = sorted((data / "sales" / "lineitem").glob("*.parquet"))
    schema = pq.read_schema(files[0])
    columns = ", ".join(f"{f.name} {pg_type(f.type)}" for f in schema)
    psql(url, "-c", f"DROP TABLE IF EXISTS public.lineitem; CREATE UNLOGGED TABLE public.lineitem ({columns})")
    for f in files:
        with tempfile.NamedTemporaryFile(suffix=".csv") as tmp:
            pacsv.write_csv(pq.read_table(f), tmp.name, pacsv.WriteOptions(include_header=False))
            psql(url, "-c", f"\\copy public.lineitem FROM '{tmp.name}' WITH (FORMAT csv)")
    psql(url, "-c", f"ALTER TABLE public.lineitem SET LOGGED; ANALYZE public.lineitem; COMMENT ON TABLE public.lineitem IS '{marker}'")


def mesh(url, path):
    u = urllib.parse.urlparse(url)
    path.write_text(
        "domains:\n  - name: bench\n    description: Benchmark data\n    owner: { name: Bench, contact: bench@example.com }\n"
        f"    postgres: {{ host: {u.hostname}, port: {u.port or 5432}, database: {u.path.lstrip('/') or 'postgres'}, "
        f"user: {u.username or 'postgres'}, sslmode: disable }}\n"
        "    products:\n      - { name: lineitem, description: TPC-H lineitem, source: { kind: postgres, table: public.lineitem } }\n"
        "auth: { allow_anonymous: true }\n"
    )


def timed(fn, runs):
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        rows = fn()
        times.append(time.perf_counter() - start)
    return rows, times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agora", required=True)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--postgres", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scale", default="1")
    ap.add_argument("--json", required=True, type=Path)
    ap.add_argument("--doc", required=True, type=Path)
    args = ap.parse_args()
    url = args.postgres

    load_lineitem(url, args.data, args.scale)
    total = int(psql(url, "-c", "SELECT count(*) FROM public.lineitem").decode())
    config = args.data / "bench-pg.yaml"
    mesh(url, config)

    import adbc_driver_postgresql.dbapi as adbc
    import connectorx as cx

    def agora(sql):
        def run():
            out = subprocess.run([args.agora, "query", "--config", str(config), "--format", "arrow", sql],
                                 check=True, capture_output=True).stdout
            return pa.ipc.open_stream(out).read_all().num_rows
        return run

    def connectorx(sql, partitions):
        def run():
            kw = {"partition_on": "l_orderkey", "partition_num": partitions} if partitions > 1 else {}
            return cx.read_sql(url, sql, return_type="arrow", **kw).num_rows
        return run

    def adbc_pg(sql):
        def run():
            with adbc.connect(url) as conn, conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetch_arrow_table().num_rows
        return run

    def copy_binary(sql):
        def run():
            p = subprocess.run(f"psql '{url}' -c \"COPY ({sql}) TO STDOUT (FORMAT binary)\" | wc -c",
                               shell=True, check=True, capture_output=True)
            return int(p.stdout)
        return run

    workloads = {
        "SELECT * (16 columns)": ("SELECT * FROM lineitem", "SELECT * FROM bench.lineitem"),
        "4-column projection": (
            "SELECT l_orderkey, l_quantity, l_extendedprice, l_shipdate FROM lineitem",
            "SELECT l_orderkey, l_quantity, l_extendedprice, l_shipdate FROM bench.lineitem",
        ),
        "Q6-style filter": (
            "SELECT l_extendedprice, l_discount FROM lineitem WHERE l_shipdate >= DATE '1994-01-01' "
            "AND l_shipdate < DATE '1995-01-01' AND l_discount BETWEEN 0.05 AND 0.07 AND l_quantity < 24",
            "SELECT l_extendedprice, l_discount FROM bench.lineitem WHERE l_shipdate >= DATE '1994-01-01' "
            "AND l_shipdate < DATE '1995-01-01' AND l_discount BETWEEN 0.05 AND 0.07 AND l_quantity < 24",
        ),
    }
    results = []
    for name, (pg_sql, agora_sql) in workloads.items():
        tools = {"Agora": agora(agora_sql), "ConnectorX (1 partition)": connectorx(pg_sql, 1)}
        # ConnectorX partitions on a column of the result.
        if "*" in pg_sql or "l_orderkey" in pg_sql.split("FROM")[0]:
            tools["ConnectorX (2 partitions)"] = connectorx(pg_sql, 2)
        tools["ADBC PostgreSQL"] = adbc_pg(pg_sql)
        tools["psql COPY BINARY (to wc -c)"] = copy_binary(pg_sql)
        row = {"workload": name, "tools": {}}
        for tool, fn in tools.items():
            rows, times = timed(fn, args.runs)
            row["tools"][tool] = {"rows": rows, "min_s": min(times), "median_s": statistics.median(times)}
            print(f"{name:28} {tool:28} min {min(times):7.2f} s  median {statistics.median(times):7.2f} s  ({rows} {'bytes' if 'COPY' in tool else 'rows'})", flush=True)
        agora_rows = row["tools"]["Agora"]["rows"]
        for tool in [t for t in row["tools"] if t != "Agora" and "COPY" not in t]:
            if row["tools"][tool]["rows"] != agora_rows:
                raise SystemExit(f"MISMATCH: {name}: Agora returned {agora_rows} rows, {tool} {row['tools'][tool]['rows']}")
        results.append(row)

    # Rows that leave PostgreSQL, with pushdown (measured) and without (a scan ships every row).
    psql(url, "-c", "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    transfer = []
    for name, sql in {
        "selective filter": "SELECT * FROM bench.lineitem WHERE l_orderkey = 4000",
        "aggregate": "SELECT l_returnflag, l_linestatus, sum(l_quantity) FROM bench.lineitem GROUP BY 1, 2",
    }.items():
        psql(url, "-c", "SELECT pg_stat_statements_reset()")
        subprocess.run([args.agora, "query", "--config", str(config), "--format", "csv", sql], check=True, capture_output=True)
        shipped = psql(url, "-c", "SELECT coalesce(sum(rows), 0) FROM pg_stat_statements WHERE query ILIKE '%lineitem%' "
                                  "AND query NOT ILIKE '%pg_stat%' AND query NOT ILIKE '%information_schema%' AND query NOT ILIKE '%pg_catalog%'").decode().strip()
        transfer.append({"query": name, "sql": sql, "rows_with_pushdown": int(shipped), "rows_without_pushdown": total})
        print(f"rows transferred, {name}: {shipped} with pushdown, {total} without", flush=True)

    machine = f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} at start"
    report = {"date": datetime.date.today().isoformat(), "scale": args.scale, "runs": args.runs, "table_rows": total,
              "machine": machine, "results": results, "transfer": transfer}
    args.json.write_text(json.dumps(report, indent=2))
    write_doc(args.doc, report)


def write_doc(doc, report):
    lines = [
        f"### PostgreSQL bulk read (TPC-H lineitem, scale {report['scale']}, {report['table_rows']:,} rows)",
        "",
        f"{report['date']}, {report['machine']}; PostgreSQL on the same machine (loopback); warm-up + {report['runs']} timed runs, min (median).",
        "Agora is timed end to end through `agora query --format arrow` (process start, planning, read, Arrow IPC out).",
        "",
        "| workload | tool | time s | rows/s | Agora ÷ tool |",
        "|---|---|---:|---:|---:|",
    ]
    for row in report["results"]:
        agora = row["tools"]["Agora"]["min_s"]
        for tool, r in row["tools"].items():
            rate = "" if "COPY" in tool else f"{r['rows'] / r['min_s']:,.0f}"
            ratio = "" if tool == "Agora" else f"{agora / r['min_s']:.2f}"
            lines.append(f"| {row['workload']} | {tool} | {r['min_s']:.2f} ({r['median_s']:.2f}) | {rate} | {ratio} |")
    lines += ["", "Rows leaving PostgreSQL (from `pg_stat_statements`):", "", "| query | with pushdown | without pushdown (scan) |", "|---|---:|---:|"]
    for t in report["transfer"]:
        lines.append(f"| {t['query']}: `{t['sql']}` | {t['rows_with_pushdown']:,} | {t['rows_without_pushdown']:,} |")
    write_section(doc, "pg_read", lines)


if __name__ == "__main__":
    main()
