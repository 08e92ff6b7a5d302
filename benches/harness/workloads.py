"""The workloads W1–W8 of the benchmark suite.

Each workload prepares what it needs (mesh configuration, peer connections),
times Agora and its peers on the same data in the same run, checks Agora's
answers against DuckDB's, and returns a plain dict for the JSON report:
per-query measurements by engine, totals, and each goal with whether it was met.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from harness import data
from harness.check import difference
from harness.engines import (AgoraServer, Measurement, agora_embedded, datafusion_run, duckdb_run, flight_run,
                             timed_loop,
                             free_port, postgres_run, wait_for_port)

DOMAINS = {
    "sales": ["orders", "lineitem"],
    "customers": ["customer", "nation", "region"],
    "supply": ["supplier", "part", "partsupp"],
}
DOMAIN_OF = {t: d for d, ts in DOMAINS.items() for t in ts}
TABLES = list(DOMAIN_OF)
MESH_NAMES = {t: f"{d}.{t}" for t, d in DOMAIN_OF.items()}


class Mismatch(Exception):
    """An Agora answer differs from DuckDB's: the run fails loudly."""


@dataclass
class Context:
    """What every workload shares."""

    agora: Path
    agora_bench: Path
    work: Path
    scale: float
    runs: int
    parquet: Path
    queries: dict[str, str]  # TPC-H in DuckDB's text, unqualified table names
    postgres: str | None
    cache: Path
    quick: bool

    @property
    def mesh_queries(self) -> dict[str, str]:
        return {n: data.qualify(sql, MESH_NAMES) for n, sql in self.queries.items()}

    def duckdb(self):
        return data.duckdb_connect(threads=2)


# --- mesh configurations -------------------------------------------------------------------------------


def write_mesh(path: Path, sources: dict[str, str], postgres: str | None = None, extra: str = "") -> Path:
    """A mesh of the three TPC-H domains; `sources` maps each table to its
    `source:` YAML; domains holding a `postgres` source get the connection."""
    lines = ["domains:"]
    for domain, tables in DOMAINS.items():
        lines += [f"  - name: {domain}", f"    description: TPC-H {domain} tables",
                  "    owner: { name: Bench, contact: bench@example.com }"]
        if postgres and any("kind: postgres" in sources[t] for t in tables):
            u = urllib.parse.urlparse(postgres)
            lines.append(f"    postgres: {{ host: {u.hostname}, port: {u.port or 5432}, "
                         f"database: {u.path.lstrip('/') or 'postgres'}, user: {u.username or 'postgres'}, "
                         "sslmode: disable, pool_size: 4, statement_timeout_seconds: 60 }")
        lines.append("    products:")
        for t in tables:
            lines.append(f"      - {{ name: {t}, description: TPC-H {t}, source: {sources[t]} }}")
    lines.append("auth: { allow_anonymous: true }")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def parquet_sources(parquet: Path) -> dict[str, str]:
    return {t: f'{{ kind: parquet, location: "{parquet / (t + ".parquet")}" }}' for t in TABLES}


def delta_sources(delta: Path) -> dict[str, str]:
    return {t: f'{{ kind: delta, location: "{delta / t}" }}' for t in TABLES}


def postgres_sources(tables=TABLES) -> dict[str, str]:
    return {t: f"{{ kind: postgres, table: tpch.{t} }}" for t in tables}


# --- DuckDB views ----------------------------------------------------------------------------------------


def duckdb_parquet(con, parquet: Path, tables=TABLES):
    for t in tables:
        con.execute(f"CREATE OR REPLACE VIEW {t} AS SELECT * FROM read_parquet('{parquet / (t + '.parquet')}')")


def duckdb_postgres(con, url: str, tables=TABLES):
    con.execute(f"ATTACH '{url}' AS pg (TYPE postgres, READ_ONLY)")
    for t in tables:
        con.execute(f"CREATE OR REPLACE VIEW {t} AS SELECT * FROM pg.tpch.{t}")


# --- reporting helpers -----------------------------------------------------------------------------------


def check_answers(workload: str, agora: dict[str, Measurement], reference: dict[str, Measurement],
                  label: str = "Agora") -> list[str]:
    """Compares every Agora answer with DuckDB's; raises on a mismatch. Returns notes."""
    notes = []
    for name, m in agora.items():
        ref = reference.get(name)
        if not m.ok or ref is None or not ref.ok:
            continue
        if m.table is None or ref.table is None:
            continue
        diff = difference(m.table, ref.table)
        if diff:
            raise Mismatch(f"{workload} {name}: {label}'s answer differs from DuckDB's: {diff}")
    checked = sum(1 for n, m in agora.items() if m.ok and reference.get(n) and reference[n].ok)
    notes.append(f"{checked} {label} answers checked against DuckDB's on the same data")
    return notes


def table_of(engines: dict[str, dict[str, Measurement]], agora_key: str = "Agora") -> dict:
    """Per-query summaries, totals and ratios Agora ÷ each peer (pair by pair, same run)."""
    names = list(next(iter(engines.values())).keys())
    queries = {}
    for n in names:
        row = {e: results[n].summary() for e, results in engines.items()}
        a = engines[agora_key][n]
        row["ratios"] = {e: (a.min / results[n].min) for e, results in engines.items()
                         if e != agora_key and a.ok and results[n].ok}
        queries[n] = row
    totals = {}
    for e, results in engines.items():
        complete = all(m.ok for m in results.values())
        totals[e] = {"min_s": sum(m.min for m in results.values() if m.ok),
                     "median_s": sum(m.median for m in results.values() if m.ok),
                     "complete": complete, "failed": [n for n, m in results.items() if not m.ok]}
    ratios = {}
    a = engines[agora_key]
    for e, results in engines.items():
        if e == agora_key:
            continue
        both = [n for n in names if a[n].ok and results[n].ok]
        if both:
            ratios[e] = {"total": sum(a[n].min for n in both) / sum(results[n].min for n in both),
                         "geomean": statistics.geometric_mean(a[n].min / results[n].min for n in both),
                         "queries": len(both)}
    return {"queries": queries, "totals": totals, "ratios": ratios}


def total_ratio(result: dict, peer: str, agora_key: str = "Agora") -> float | None:
    """Agora's total ÷ the peer's, or None (a missed goal) when Agora did not
    answer every query: a total over the queries that worked would flatter it."""
    if not result["totals"][agora_key]["complete"]:
        return None
    return result["ratios"].get(peer, {}).get("total")


def goal(text: str, value: float | None, limit: float, higher_is_better: bool = False) -> dict:
    met = value is not None and (value >= limit if higher_is_better else value <= limit)
    return {"goal": text, "value": value, "met": met}


def worst(table: dict, peer: str) -> tuple[str, float] | None:
    pairs = [(n, r["ratios"][peer]) for n, r in table["queries"].items() if peer in r["ratios"]]
    return max(pairs, key=lambda p: p[1]) if pairs else None


# --- W1 Parquet ------------------------------------------------------------------------------------------


def w1_parquet(ctx: Context) -> dict:
    from datafusion import SessionConfig, SessionContext

    config = write_mesh(ctx.work / "w1" / "mesh.yaml", parquet_sources(ctx.parquet))
    agora, open_s = agora_embedded(ctx.agora_bench, config, ctx.mesh_queries, ctx.work / "w1" / "agora",
                                   runs=ctx.runs)
    df = SessionContext(SessionConfig().with_target_partitions(2))
    for t in TABLES:
        df.register_parquet(t, str(ctx.parquet / f"{t}.parquet"))
    dfp = datafusion_run(df, ctx.queries, runs=ctx.runs)
    con = ctx.duckdb()
    duckdb_parquet(con, ctx.parquet)
    duck = duckdb_run(con, ctx.queries, runs=ctx.runs)
    notes = check_answers("W1", agora, duck)
    result = table_of({"Agora": agora, "datafusion-python": dfp, "DuckDB": duck})
    w_df, w_duck = worst(result, "datafusion-python"), worst(result, "DuckDB")
    result["goals"] = [
        goal("total ≤ 1.03x datafusion-python", total_ratio(result, "datafusion-python"), 1.03),
        goal("total ≤ 1.0x DuckDB", total_ratio(result, "DuckDB"), 1.0),
        goal("no query > 2x datafusion-python" + (f" (worst {w_df[0]})" if w_df else ""),
             w_df[1] if w_df else None, 2.0),
        goal("no query > 2x DuckDB" + (f" (worst {w_duck[0]})" if w_duck else ""), w_duck[1] if w_duck else None, 2.0),
        goal("all 22 queries complete", float(result["totals"]["Agora"]["complete"]), 1.0, higher_is_better=True),
    ]
    result["notes"] = notes + [f"Agora opens the mesh in {open_s * 1000:.0f} ms (not in the query times)"]
    result["_agora"] = agora  # kept for W2 and W6 (not serialised)
    result["_duckdb"] = duck
    result["_config"] = config
    return result


# --- W2 Delta --------------------------------------------------------------------------------------------


def w2_delta(ctx: Context, w1: dict | None) -> dict:
    delta = data.build_delta(ctx.cache, ctx.scale, ctx.parquet)
    config = write_mesh(ctx.work / "w2" / "mesh.yaml", delta_sources(delta))
    agora, open_s = agora_embedded(ctx.agora_bench, config, ctx.mesh_queries, ctx.work / "w2" / "agora",
                                   runs=ctx.runs)
    con = ctx.duckdb()
    for t in TABLES:
        con.execute(f"CREATE OR REPLACE VIEW {t} AS SELECT * FROM delta_scan('{delta / t}')")
    duck = duckdb_run(con, ctx.queries, runs=ctx.runs)
    notes = check_answers("W2", agora, duck)
    if w1:
        parquet = w1["_agora"]
    else:
        config = write_mesh(ctx.work / "w1" / "mesh.yaml", parquet_sources(ctx.parquet))
        parquet, _ = agora_embedded(ctx.agora_bench, config, ctx.mesh_queries, ctx.work / "w1" / "agora",
                                    runs=ctx.runs)
    engines = {"Agora": agora, "DuckDB (delta)": duck, "Agora on Parquet (W1)": parquet}
    result = table_of(engines)
    result["goals"] = [goal("total ≤ 1.1x our own W1 (same files as plain Parquet)",
                            total_ratio(result, "Agora on Parquet (W1)"), 1.1)]
    result["notes"] = notes + [f"Agora opens the mesh in {open_s * 1000:.0f} ms",
                               "orders partitioned by year, lineitem sorted by l_shipdate in ~32 files"]
    return result


# --- W3 federated mesh -----------------------------------------------------------------------------------


def w3_federated(ctx: Context) -> dict:
    facts = ["lineitem", "orders"]
    sources = parquet_sources(ctx.parquet)
    sources.update(postgres_sources([t for t in TABLES if t not in facts]))
    config = write_mesh(ctx.work / "w3" / "mesh.yaml", sources, ctx.postgres)
    agora, _ = agora_embedded(ctx.agora_bench, config, ctx.mesh_queries, ctx.work / "w3" / "agora",
                              runs=ctx.runs, timeout=120)
    con = ctx.duckdb()
    duckdb_parquet(con, ctx.parquet, facts)
    duckdb_postgres(con, ctx.postgres, [t for t in TABLES if t not in facts])
    duck = duckdb_run(con, ctx.queries, runs=ctx.runs, timeout=120)
    notes = check_answers("W3", agora, duck)
    result = table_of({"Agora": agora, "DuckDB": duck})
    result["goals"] = [goal("total ≤ 1.0x DuckDB (read_parquet + postgres_scanner)", total_ratio(result, "DuckDB"),
                            1.0)]
    result["notes"] = notes + ["lineitem and orders in Parquet; the six other tables in PostgreSQL"]
    return result


# --- W4 all in PostgreSQL --------------------------------------------------------------------------------


def w4_postgres(ctx: Context) -> dict:
    config = write_mesh(ctx.work / "w4" / "mesh.yaml", postgres_sources(), ctx.postgres)
    agora, _ = agora_embedded(ctx.agora_bench, config, ctx.mesh_queries, ctx.work / "w4" / "agora",
                              runs=ctx.runs, timeout=60)
    con = ctx.duckdb()
    duckdb_postgres(con, ctx.postgres)
    duck = duckdb_run(con, ctx.queries, runs=ctx.runs, timeout=120)
    pg = postgres_run(ctx.postgres, ctx.queries, runs=ctx.runs, timeout=60)
    notes = check_answers("W4", agora, duck)
    result = table_of({"Agora": agora, "DuckDB (postgres_scanner)": duck, "PostgreSQL alone": pg})
    slow = {q: agora[q].min if agora[q].ok else None for q in ("q17", "q20")}
    result["goals"] = [
        goal("all 22 queries complete", float(result["totals"]["Agora"]["complete"]), 1.0, higher_is_better=True),
        goal("Q17 under 5 s", slow["q17"], 5.0),
        goal("Q20 under 5 s", slow["q20"], 5.0),
        goal("total ≤ 1.0x DuckDB's postgres_scanner", total_ratio(result, "DuckDB (postgres_scanner)"), 1.0),
    ]
    result["notes"] = notes + ["PostgreSQL alone runs under statement_timeout = 60 s; timeouts are recorded"]
    return result


# --- W5 PostgreSQL bulk read -----------------------------------------------------------------------------

BULK = {
    "SELECT * (16 columns)": "SELECT * FROM {t}",
    "4-column projection": "SELECT l_orderkey, l_quantity, l_extendedprice, l_shipdate FROM {t}",
    "Q6-style filter": ("SELECT l_extendedprice, l_discount FROM {t} WHERE l_shipdate >= DATE '1994-01-01' "
                        "AND l_shipdate < DATE '1995-01-01' AND l_discount BETWEEN 0.05 AND 0.07 AND l_quantity < 24"),
}


def w5_bulk_read(ctx: Context) -> dict:
    import adbc_driver_postgresql.dbapi as adbc
    import connectorx as cx
    import pyarrow.compute as pc

    url = ctx.postgres
    config = write_mesh(ctx.work / "w5" / "mesh.yaml", postgres_sources(), url)
    agora, _ = agora_embedded(ctx.agora_bench, config, {n: q.format(t="sales.lineitem") for n, q in BULK.items()},
                              ctx.work / "w5" / "agora", runs=ctx.runs)
    pg_sql = {n: q.format(t="tpch.lineitem") for n, q in BULK.items()}
    con = ctx.duckdb()
    con.execute(f"ATTACH '{url}' AS pg (TYPE postgres, READ_ONLY)")
    duck = duckdb_run(con, {n: q.format(t="pg.tpch.lineitem") for n, q in BULK.items()}, runs=ctx.runs)

    def connectorx(partitions):
        def runner(sql):
            kw = {"partition_on": "l_orderkey", "partition_num": partitions} if partitions > 1 else {}
            return lambda: cx.read_sql(url, sql, return_type="arrow", **kw)
        return runner

    def adbc_pg(sql):
        def run():
            with adbc.connect(url) as conn, conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetch_arrow_table()
        return run

    def copy_pipe(sql):
        def run():
            p = subprocess.run(f"psql '{url}' -c \"COPY ({sql}) TO STDOUT (FORMAT binary)\" | wc -c", shell=True,
                               check=True, capture_output=True)
            return pa.table({"bytes": [int(p.stdout)]})
        return run


    peers = {"ConnectorX (1 partition)": connectorx(1), "ConnectorX (2 partitions)": connectorx(2),
             "ADBC PostgreSQL": adbc_pg}
    engines = {"Agora": agora, "DuckDB (postgres_scanner)": duck}
    for label, make in peers.items():
        engines[label] = {}
        for n, sql in pg_sql.items():
            if "2 partitions" in label and "l_orderkey" not in sql and "*" not in sql:
                engines[label][n] = Measurement(error="no partition column in the result")
                continue
            engines[label][n] = timed_loop(make(sql), 1, ctx.runs, None)
    copy = {n: timed_loop(copy_pipe(sql), 1, ctx.runs, None) for n, sql in pg_sql.items()}
    engines["psql COPY BINARY | wc -c"] = copy

    # Every tool must return the same rows; Agora's values are checked by
    # column sums against DuckDB's (the whole table is too big to compare row by row).
    for n in BULK:
        expected = duck[n]
        for label, results in engines.items():
            m = results[n]
            if label.startswith("psql") or not m.ok or not expected.ok:
                continue
            if m.rows != expected.rows:
                raise Mismatch(f"W5 {n}: {label} returned {m.rows} rows, DuckDB {expected.rows}")
        a, d = agora[n].table, expected.table
        if a is not None and d is not None:
            for col in ("l_extendedprice", "l_quantity", "l_discount"):
                if col in a.column_names:
                    x = float(pc.sum(a.column(col)).as_py() or 0)
                    y = float(pc.sum(d.column(col)).as_py() or 0)
                    if abs(x - y) > 0.01 * max(1, abs(y)) * 1e-9 + 0.01:
                        raise Mismatch(f"W5 {n}: sum({col}) is {x} from Agora, {y} from DuckDB")
    for results in engines.values():  # free the big tables before the next workload
        for m in results.values():
            m.table = None

    result = table_of(engines)
    for n, row in result["queries"].items():
        for label, results in engines.items():
            m = results[n]
            if m.ok and not label.startswith("psql"):
                row[label]["rows_per_s"] = m.rows / m.min
    goals = []
    for n in BULK:
        peers_ok = [(label, results[n].min) for label, results in engines.items()
                    if label not in ("Agora", "psql COPY BINARY | wc -c") and results[n].ok]
        best = min(peers_ok, key=lambda p: p[1]) if peers_ok else None
        a = agora[n].min if agora[n].ok else None
        goals.append(goal(f"{n}: ≥ 1.0x the best peer ({best[0] if best else '-'}), as time ratio ≤ 1.0",
                          a / best[1] if a and best else None, 1.0))
        goals.append(goal(f"{n}: ≤ 1.1x the COPY pipe", a / copy[n].min if a and copy[n].ok else None, 1.1))
    result["goals"] = goals
    result["transfer"] = transfer_counts(ctx, config)
    result["notes"] = ["Agora embedded (agora-bench: plan, read, collect into Arrow in the process); peers from "
                       "Python, each returning an Arrow table; row counts of every tool and column sums of Agora "
                       "vs DuckDB checked"]
    return result


def transfer_counts(ctx: Context, config: Path) -> list[dict]:
    """Rows leaving PostgreSQL with pushdown (pg_stat_statements) and without (a scan ships every row)."""
    def psql(sql):
        return subprocess.run(["psql", ctx.postgres, "-tA", "-v", "ON_ERROR_STOP=1", "-c", sql], check=True,
                              capture_output=True, text=True).stdout.strip()

    try:
        psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        psql("SELECT count(*) FROM pg_stat_statements")
    except subprocess.CalledProcessError as e:
        return [{"error": f"pg_stat_statements unavailable: {e.stderr.strip()}"}]
    total = int(psql("SELECT count(*) FROM tpch.lineitem"))
    out = []
    for name, sql in {
        "selective filter": "SELECT * FROM sales.lineitem WHERE l_orderkey = 4000",
        "aggregate": "SELECT l_returnflag, l_linestatus, sum(l_quantity) FROM sales.lineitem GROUP BY 1, 2",
    }.items():
        psql("SELECT pg_stat_statements_reset()")
        subprocess.run([str(ctx.agora), "query", "--config", str(config), "--format", "csv", sql], check=True,
                       capture_output=True)
        shipped = psql("SELECT coalesce(sum(rows), 0) FROM pg_stat_statements WHERE query ILIKE '%lineitem%' "
                       "AND query NOT ILIKE '%pg_stat%' AND query NOT ILIKE '%information_schema%' "
                       "AND query NOT ILIKE '%pg_catalog%'")
        out.append({"query": name, "sql": sql, "rows_with_pushdown": int(shipped), "rows_without_pushdown": total})
    return out


# --- W6 Flight SQL ---------------------------------------------------------------------------------------


def w6_flight(ctx: Context, w1: dict) -> dict:
    config = w1["_config"]
    server = AgoraServer(ctx.agora, config, ctx.work / "w6-serve.log")
    try:
        conn = server.connect()
        flight = flight_run(conn, ctx.mesh_queries, runs=ctx.runs)
        notes = check_answers("W6", flight, w1["_duckdb"], label="Agora over Flight")
        result = table_of({"Agora over Flight SQL (ADBC)": flight, "Agora embedded (W1)": w1["_agora"]},
                          agora_key="Agora over Flight SQL (ADBC)")
        stream = stream_select_all(ctx, conn)
        latency = tiny_query_latency(server, 200 if ctx.quick else 1000)
        conn.close()
    finally:
        server.close()
    ratio = total_ratio(result, "Agora embedded (W1)", agora_key="Agora over Flight SQL (ADBC)")
    result["stream"] = stream
    result["latency"] = latency
    result["goals"] = [
        goal("Flight ÷ embedded ≤ 1.05x (total of the W1 queries)", ratio, 1.05),
        goal("SELECT * of lineitem ≥ 0.9 GB/s of Arrow through Flight", stream["agora"]["gb_per_s"], 0.9,
             higher_is_better=True),
    ]
    result["notes"] = notes + ["client-side wall time through the ADBC Flight SQL driver, one connection"]
    return result


def stream_select_all(ctx: Context, conn) -> dict:
    """`SELECT *` of lineitem through Agora's Flight SQL server vs a pyarrow
    Flight server streaming the same batches from memory (transport only)."""
    import pyarrow.flight as fl

    def agora_once():
        with conn.cursor() as cur:
            cur.execute("SELECT * FROM sales.lineitem")
            return cur.fetch_arrow_table()


    agora = timed_loop(agora_once, 1, ctx.runs, None)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "harness.flight_baseline", str(ctx.parquet / "lineitem.parquet"),
                             str(port)], cwd=Path(__file__).resolve().parents[1])
    try:
        wait_for_port(port, proc, "pyarrow Flight baseline server")
        client = fl.connect(f"grpc://127.0.0.1:{port}")
        baseline = timed_loop(lambda: client.do_get(fl.Ticket(b"lineitem")).read_all(), 1, ctx.runs, None)
        client.close()
    finally:
        proc.terminate()
        proc.wait()
    if agora.ok and baseline.ok and agora.rows != baseline.rows:
        raise Mismatch(f"W6 SELECT *: Agora streamed {agora.rows} rows, the baseline {baseline.rows}")

    def rate(m: Measurement) -> dict:
        return {**m.summary(), "arrow_bytes": m.arrow_bytes,
                "gb_per_s": m.arrow_bytes / m.min / 1e9 if m.ok else None,
                "rows_per_s": m.rows / m.min if m.ok else None}

    return {"agora": rate(agora), "pyarrow_flight": rate(baseline)}


def tiny_query_latency(server: AgoraServer, total: int) -> list[dict]:
    """p50/p99 latency of `total` tiny queries spread over 1, 4 and 16 concurrent clients."""
    sql = "SELECT n_name FROM customers.nation WHERE n_nationkey = 7"
    out = []
    for clients in (1, 4, 16):
        latencies: list[float] = []
        lock = threading.Lock()
        errors: list[str] = []

        def client(n):
            try:
                conn = server.connect()
                mine = []
                with conn.cursor() as cur:
                    cur.execute(sql)
                    cur.fetch_arrow_table()  # connection warm-up
                for _ in range(n):
                    start = time.perf_counter()
                    with conn.cursor() as cur:
                        cur.execute(sql)
                        t = cur.fetch_arrow_table()
                    mine.append(time.perf_counter() - start)
                    if t.num_rows != 1:
                        errors.append(f"{t.num_rows} rows")
                conn.close()
                with lock:
                    latencies.extend(mine)
            except Exception as e:  # noqa: BLE001
                errors.append(str(e))

        per = total // clients
        threads = [threading.Thread(target=client, args=(per,)) for _ in range(clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        if errors:
            raise Mismatch(f"W6 latency with {clients} clients: {errors[0]}")
        latencies.sort()
        out.append({"clients": clients, "queries": len(latencies),
                    "p50_ms": 1000 * latencies[len(latencies) // 2],
                    "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
                    "queries_per_s": len(latencies) / wall})
    return out


# --- W7 governance ---------------------------------------------------------------------------------------

# A row filter that keeps every row but must be evaluated, and two masks, on every table.
POLICIES = """
admins: { users: [nobody] }
grants:
  - { id: b-orders, to: { users: [bench] }, domain: sales, product: orders, row_filter: "o_orderkey > 0",
      masks: { o_clerk: { type: redact }, o_comment: { type: last_n, n: 4 } } }
  - { id: b-lineitem, to: { users: [bench] }, domain: sales, product: lineitem, row_filter: "l_orderkey > 0",
      masks: { l_comment: { type: redact }, l_shipinstruct: { type: last_n, n: 4 } } }
  - { id: b-customer, to: { users: [bench] }, domain: customers, product: customer, row_filter: "c_custkey > 0",
      masks: { c_phone: { type: last_n, n: 4 }, c_address: { type: redact } } }
  - { id: b-nation, to: { users: [bench] }, domain: customers, product: nation, row_filter: "n_nationkey >= 0",
      masks: { n_comment: { type: redact }, n_name: { type: last_n, n: 20 } } }
  - { id: b-region, to: { users: [bench] }, domain: customers, product: region, row_filter: "r_regionkey >= 0",
      masks: { r_comment: { type: redact }, r_name: { type: last_n, n: 20 } } }
  - { id: b-supplier, to: { users: [bench] }, domain: supply, product: supplier, row_filter: "s_suppkey > 0",
      masks: { s_phone: { type: last_n, n: 4 }, s_address: { type: redact } } }
  - { id: b-part, to: { users: [bench] }, domain: supply, product: part, row_filter: "p_partkey > 0",
      masks: { p_comment: { type: redact }, p_container: { type: last_n, n: 4 } } }
  - { id: b-partsupp, to: { users: [bench] }, domain: supply, product: partsupp, row_filter: "ps_partkey > 0",
      masks: { ps_comment: { type: redact }, ps_availqty: { type: "null" } } }
"""


def w7_governance(ctx: Context) -> dict:
    open_config = write_mesh(ctx.work / "w7" / "open.yaml", parquet_sources(ctx.parquet))
    (ctx.work / "w7" / "policies.yaml").write_text(POLICIES)
    governed_config = write_mesh(ctx.work / "w7" / "governed.yaml", parquet_sources(ctx.parquet),
                                 extra="governance:\n  policies: policies.yaml\n  audit: { path: audit/audit.jsonl }\n")
    queries = ctx.mesh_queries
    off, _ = agora_embedded(ctx.agora_bench, open_config, queries, ctx.work / "w7" / "off", runs=ctx.runs,
                            user="bench")
    on, _ = agora_embedded(ctx.agora_bench, governed_config, queries, ctx.work / "w7" / "on", runs=ctx.runs,
                           user="bench")
    result = table_of({"governed": on, "open": off}, agora_key="governed")
    result["goals"] = [goal("governed ÷ open ≤ 1.05x (total)", total_ratio(result, "open", agora_key="governed"), 1.05),
                       goal("all 22 queries complete when governed", float(result["totals"]["governed"]["complete"]),
                            1.0, higher_is_better=True)]
    result["notes"] = ["same user `bench`, same files; governed: a row filter keeping every row and two masks on "
                       "every table, an audit record (fsync'ed) per query. Masked answers differ by design and are "
                       "not checked"]
    return result


# --- W8 start-up -----------------------------------------------------------------------------------------


def w8_startup(ctx: Context) -> dict:
    """Process start to first answer with 1,000 products registered (10 domains × 100)."""
    region = ctx.parquet / "region.parquet"
    lines = ["domains:"]
    for d in range(10):
        lines += [f"  - name: d{d}", f"    description: Start-up benchmark domain {d}",
                  "    owner: { name: Bench, contact: bench@example.com }", "    products:"]
        for p in range(100):
            lines.append(f'      - {{ name: p{p}, description: Product {p}, '
                         f'source: {{ kind: parquet, location: "{region}" }} }}')
    config = ctx.work / "w8" / "mesh.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("\n".join(lines) + "\n")

    def once():
        p = subprocess.run([str(ctx.agora), "query", "--config", str(config), "--format", "csv",
                            "SELECT count(*) AS n FROM d9.p99"], check=True, capture_output=True, text=True)
        return pa.table({"out": [p.stdout]})

    m = timed_loop(once, 1, max(ctx.runs, 5), None)
    if m.ok and m.table.column(0)[0].as_py().split()[-1] != "5":
        raise Mismatch(f"W8: unexpected answer {m.table.column(0)[0].as_py()!r}")
    return {"startup": m.summary(), "products": 1000,
            "goals": [goal("process start to first answer < 2 s with 1,000 products", m.min, 2.0)],
            "notes": ["`agora query` on a mesh of 10 domains × 100 Parquet products, timed from process start to "
                      "its exit after printing the answer"]}
