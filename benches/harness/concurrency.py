"""W9: many clients at once on one governed server.

Sixteen ADBC clients, each its own principal, run a mixed TPC-H workload for a
fixed time while one more client loops `SELECT 1`. Measured: throughput and
p50/p95 per query class, errors, the server's peak RSS against its memory
limit, `SELECT 1` p95 on the idle and on the loaded server, and how many audit
records per second the server writes (each query writes four: GetFlightInfo
start and finish, DoGet start and finish).
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

from harness.engines import AgoraServer
from harness.workloads import Context, goal, parquet_sources, write_mesh

CLIENTS = 16
# Query classes by cost: a mixed workload of short scans, joins and the
# heaviest multi-way joins.
CLASSES = {"light": ["q06", "q14", "q19"], "medium": ["q01", "q03", "q05", "q10", "q12"], "heavy": ["q09", "q18", "q21"]}
MEMORY_LIMIT = 4 * 1024 ** 3

POLICIES = """
admins: { users: [nobody] }
grants:
  - { id: bench-all, to: { groups: [bench] }, domain: sales }
  - { id: bench-customers, to: { groups: [bench] }, domain: customers,
      masks: { c_phone: { type: last_n, n: 4 } } }
  - { id: bench-supply, to: { groups: [bench] }, domain: supply }
"""


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


def peak_rss(pid: int) -> int:
    """The process's peak resident set size (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


class Client:
    """One principal's ADBC connection, authenticated by its service token."""

    def __init__(self, server: AgoraServer, token: str):
        import adbc_driver_flightsql.dbapi as flightsql

        self.conn = flightsql.connect(server.uri, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {token}"},
                                      autocommit=True)

    def run(self, sql: str) -> int:
        with self.conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetch_arrow_table().num_rows

    def close(self):
        self.conn.close()


def select_one_loop(client: Client, until: float, out: list[float], errors: list[str]) -> None:
    while time.monotonic() < until:
        start = time.perf_counter()
        try:
            client.run("SELECT 1")
        except Exception as e:  # noqa: BLE001 - every error is a result
            errors.append(f"SELECT 1: {e}"[:300])
        out.append(time.perf_counter() - start)
        time.sleep(0.05)


def w9_concurrency(ctx: Context) -> dict:
    work = ctx.work / "w9"
    work.mkdir(parents=True, exist_ok=True)
    (work / "policies.yaml").write_text(POLICIES)
    tokens = {}
    services = []
    for i in range(CLIENTS + 1):
        name = f"bench{i:02d}"
        tokens[name] = f"w9-token-{name}-{'x' * 16}"
        (work / f"{name}.token").write_text(tokens[name])
        services.append(f'    - {{ name: {name}, token_file: "{work / (name + ".token")}", groups: [bench] }}')
    extra = ("governance:\n  policies: policies.yaml\n  audit: { path: audit/audit.jsonl, max_bytes: 1073741824 }\n"
             f"limits: {{ memory_limit_bytes: {MEMORY_LIMIT}, statement_timeout_seconds: 600 }}\n")
    config = write_mesh(work / "mesh.yaml", parquet_sources(ctx.parquet), extra=extra)
    # Service tokens instead of anonymous access: every client is a principal.
    text = config.read_text().replace("auth: { allow_anonymous: true }", "auth:\n  service_tokens:\n" + "\n".join(services))
    config.write_text(text)
    audit_file = work / "audit" / "audit.jsonl"
    if audit_file.exists():
        audit_file.unlink()

    duration = 20.0 if ctx.quick else 120.0
    queries = ctx.mesh_queries
    server = AgoraServer(ctx.agora, config, work / "serve.log")
    try:
        probe = Client(server, tokens[f"bench{CLIENTS:02d}"])
        probe.run("SELECT 1")
        idle: list[float] = []
        idle_errors: list[str] = []
        select_one_loop(probe, time.monotonic() + (5.0 if ctx.quick else 15.0), idle, idle_errors)

        # Audit throughput: sixteen clients sending tiny queries as fast as they can.
        tiny_counts = [0] * CLIENTS
        tiny_errors: list[str] = []
        clients = [Client(server, tokens[f"bench{i:02d}"]) for i in range(CLIENTS)]
        lines_before = sum(1 for _ in audit_file.open()) if audit_file.exists() else 0
        until = time.monotonic() + (5.0 if ctx.quick else 15.0)

        def tiny(i):
            while time.monotonic() < until:
                try:
                    clients[i].run("SELECT n_name FROM customers.nation WHERE n_nationkey = 7")
                    tiny_counts[i] += 1
                except Exception as e:  # noqa: BLE001
                    tiny_errors.append(str(e)[:300])

        started = time.monotonic()
        threads = [threading.Thread(target=tiny, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        tiny_wall = time.monotonic() - started
        audit_records = sum(1 for _ in audit_file.open()) - lines_before

        # The mixed workload, with SELECT 1 probing alongside.
        names = [q for qs in CLASSES.values() for q in qs]
        class_of = {q: c for c, qs in CLASSES.items() for q in qs}
        latencies: dict[str, list[float]] = {c: [] for c in CLASSES}
        errors: list[str] = []
        lock = threading.Lock()
        until = time.monotonic() + duration

        def mixed(i):
            # Each client starts at a different place in the list.
            for q in itertools.islice(itertools.cycle(names), i, None):
                if time.monotonic() >= until:
                    return
                start = time.perf_counter()
                try:
                    clients[i].run(queries[q])
                except Exception as e:  # noqa: BLE001
                    with lock:
                        errors.append(f"{q}: {e}"[:300])
                    continue
                with lock:
                    latencies[class_of[q]].append(time.perf_counter() - start)

        loaded: list[float] = []
        loaded_errors: list[str] = []
        started = time.monotonic()
        threads = [threading.Thread(target=mixed, args=(i,)) for i in range(CLIENTS)]
        threads.append(threading.Thread(target=select_one_loop, args=(probe, until, loaded, loaded_errors)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - started
        rss = peak_rss(server.proc.pid)
        for c in clients + [probe]:
            c.close()
    finally:
        server.close()

    done = sum(len(v) for v in latencies.values())
    classes = {c: {"queries": len(v), "p50_s": percentile(v, 0.5), "p95_s": percentile(v, 0.95)}
               for c, v in latencies.items()}
    idle_p95 = percentile(idle, 0.95)
    loaded_p95 = percentile(loaded, 0.95)
    all_errors = errors + loaded_errors + idle_errors + tiny_errors
    result = {
        "clients": CLIENTS, "duration_s": wall, "queries": done, "queries_per_s": done / wall, "classes": classes,
        "errors": len(all_errors), "first_errors": all_errors[:5],
        "select1": {"idle_p50_ms": 1000 * percentile(idle, 0.5), "idle_p95_ms": 1000 * idle_p95,
                    "loaded_p50_ms": 1000 * percentile(loaded, 0.5) if loaded else None,
                    "loaded_p95_ms": 1000 * loaded_p95 if loaded else None, "loaded_samples": len(loaded)},
        "peak_rss_bytes": rss, "memory_limit_bytes": MEMORY_LIMIT,
        "audit": {"tiny_queries": sum(tiny_counts), "seconds": tiny_wall, "records": audit_records,
                  "records_per_s": audit_records / tiny_wall, "queries_per_s": sum(tiny_counts) / tiny_wall},
    }
    result["goals"] = [
        goal("errors under load = 0", float(len(all_errors)), 0.0),
        goal("SELECT 1 p95 under load ≤ 50 ms", None if loaded_p95 is None else 1000 * loaded_p95, 50.0),
        goal("peak RSS ÷ memory limit ≤ 1.0", rss / MEMORY_LIMIT, 1.0),
    ]
    result["notes"] = [
        f"{CLIENTS} ADBC clients, each a principal of its own (service tokens) on a governed mesh (a mask on "
        f"customers), cycling through {', '.join(names)} for {duration:.0f} s; one more client runs SELECT 1 "
        "every 50 ms, first on the idle server, then alongside",
        "audit throughput: the same 16 clients sending a one-row query as fast as they can; every query writes "
        "four records (start and finish of GetFlightInfo and of DoGet), finish records fsync'ed with group commit",
    ]
    return result
