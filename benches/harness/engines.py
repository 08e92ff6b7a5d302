"""The engines a workload times, each behind the same small interface.

Every runner takes an ordered dict of query name → SQL and returns one
`Measurement` per query: the timed runs (after untimed warm-ups), the row count
and the last result as an Arrow table (for the answer check), or the error or
timeout that stopped it. Runners never raise on a failing query: a benchmark
records failures, it does not hide them.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc


@dataclass
class Measurement:
    """How one engine did on one query."""

    times: list[float] = field(default_factory=list)
    rows: int = 0
    error: str | None = None
    table: pa.Table | None = None
    arrow_bytes: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.times)

    @property
    def min(self) -> float | None:
        return min(self.times) if self.ok else None

    @property
    def median(self) -> float | None:
        if not self.ok:
            return None
        s = sorted(self.times)
        n = len(s)
        return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2

    def summary(self) -> dict:
        return {"times_s": self.times, "min_s": self.min, "median_s": self.median, "rows": self.rows,
                "error": self.error}


def timed_loop(run_once, warmup: int, runs: int, timeout: float | None, interrupt=None) -> Measurement:
    """Warm-up then timed calls of `run_once() -> pa.Table`; a call longer than
    `timeout` is interrupted with `interrupt()` (when the engine offers one) and
    recorded as a timeout."""
    m = Measurement()
    table = None
    for i in range(warmup + runs):
        timer = None
        timed_out = threading.Event()
        if timeout and interrupt:
            def fire():
                timed_out.set()
                interrupt()
            timer = threading.Timer(timeout, fire)
            timer.start()
        start = time.perf_counter()
        try:
            table = run_once()
        except Exception as e:  # noqa: BLE001 - every engine error is a result here
            elapsed = time.perf_counter() - start
            m.error = f"timeout after {timeout:.0f} s" if timed_out.is_set() else f"{type(e).__name__}: {e}"
            m.error = m.error.splitlines()[0][:300] if m.error else m.error
            return m
        finally:
            if timer:
                timer.cancel()
        elapsed = time.perf_counter() - start
        if timeout and elapsed > timeout:
            m.error = f"timeout after {timeout:.0f} s"
            return m
        if i >= warmup:
            m.times.append(elapsed)
    m.table = table
    m.rows = table.num_rows if table is not None else 0
    m.arrow_bytes = table.nbytes if table is not None else 0
    return m


def agora_embedded(bench_bin: Path, config: Path, queries: dict[str, str], work: Path, *, runs: int,
                   warmup: int = 1, user: str | None = None, timeout: float | None = None) -> tuple[dict, float]:
    """Runs the queries in one `agora-bench` process (Agora embedded, timed in
    Rust); returns the measurements and the engine's open time."""
    work.mkdir(parents=True, exist_ok=True)
    qfile = work / "queries.json"
    qfile.write_text(json.dumps(list(queries.items())))
    answers = work / "answers"
    out = work / "timings.json"
    cmd = [str(bench_bin), "--config", str(config), "--queries", str(qfile), "--runs", str(runs),
           "--warmup", str(warmup), "--answers", str(answers), "--out", str(out)]
    if user:
        cmd += ["--user", user]
    if timeout:
        cmd += ["--timeout", str(timeout)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"agora-bench failed ({' '.join(cmd)}):\n{proc.stderr}")
    report = json.loads(out.read_text())
    results = {}
    for q in report["queries"]:
        m = Measurement(times=q["times_s"], rows=q["rows"], error=q["error"], arrow_bytes=q["arrow_bytes"])
        path = answers / f"{q['name']}.arrow"
        if m.error is None and path.exists():
            with pa.memory_map(str(path)) as source:
                m.table = ipc.open_file(source).read_all()
        results[q["name"]] = m
    return results, report["open_s"]


def duckdb_run(con, queries: dict[str, str], *, runs: int, warmup: int = 1,
               timeout: float | None = None) -> dict[str, Measurement]:
    """Times the queries on a DuckDB connection (its views already point at the data)."""
    return {name: timed_loop(lambda sql=sql: con.execute(sql).fetch_arrow_table(), warmup, runs, timeout,
                              con.interrupt)
            for name, sql in queries.items()}


def datafusion_run(ctx, queries: dict[str, str], *, runs: int, warmup: int = 1) -> dict[str, Measurement]:
    """Times the queries on a datafusion-python SessionContext."""
    return {name: timed_loop(lambda sql=sql: ctx.sql(sql).to_arrow_table(), warmup, runs, None)
            for name, sql in queries.items()}


def flight_run(conn, queries: dict[str, str], *, runs: int, warmup: int = 1) -> dict[str, Measurement]:
    """Times the queries through an ADBC Flight SQL connection (client-side wall time)."""
    def once(sql):
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetch_arrow_table()
    return {name: timed_loop(lambda sql=sql: once(sql), warmup, runs, None) for name, sql in queries.items()}


def postgres_run(url: str, queries: dict[str, str], *, runs: int, warmup: int = 1, timeout: float = 60,
                 search_path: str = "tpch") -> dict[str, Measurement]:
    """Times the queries in PostgreSQL itself (psycopg, rows fetched), under a
    statement timeout; a timed-out query is recorded as such."""
    import psycopg

    results = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"SET search_path = {search_path}")
        conn.execute(f"SET statement_timeout = '{int(timeout * 1000)}ms'")

        def once(sql):
            with conn.cursor() as cur:
                cur.execute(sql)
                rows = cur.fetchall()
            return pa.table({"n": [len(rows)]})

        for name, sql in queries.items():
            m = timed_loop(lambda sql=sql: once(sql), warmup, runs, None)
            if m.error and "statement timeout" in m.error:
                m.error = f"timeout after {timeout:.0f} s (statement_timeout)"
            if m.ok:
                m.rows = m.table.column(0)[0].as_py()
                m.table = None
            results[name] = m
    return results


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AgoraServer:
    """`agora serve` on a free loopback port, for the Flight SQL workloads."""

    def __init__(self, agora: Path, config: Path, log: Path):
        self.port = free_port()
        self.log = open(log, "wb")
        self.proc = subprocess.Popen([str(agora), "serve", "--config", str(config), "--bind",
                                      f"127.0.0.1:{self.port}", "--metrics-bind", "127.0.0.1:0"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.proc, f"agora serve ({log})")
        self.uri = f"grpc://127.0.0.1:{self.port}"

    def connect(self):
        import adbc_driver_flightsql.dbapi as flightsql

        return flightsql.connect(self.uri, autocommit=True)

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def wait_for_port(port: int, proc: subprocess.Popen, what: str, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"{what} did not listen within {limit:.0f} s")
            time.sleep(0.05)
