"""Governance overhead: TPC-H queries over Flight SQL with governance off and on.

Run through benches/governance/run, which prepares the venv and the data. Two
`agora serve` processes read the same files: one over the mesh without a
governance section (open), one with a row filter and two masks on every table
for the benchmark user (governed; every query is also audited with an fsync).
Each query is warmed up once on both, then timed `--runs` times, alternating
between the two; the minimum and median are reported with their ratio.
"""

import argparse
import datetime
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "python"))
sys.path.insert(0, str(ROOT / "benches" / "lib"))
import tpch  # noqa: E402  (the queries the tests check against DuckDB)
from report import write_section  # noqa: E402

Q1 = """
SELECT l_returnflag, l_linestatus, sum(l_quantity) AS sum_qty, sum(l_extendedprice) AS sum_base_price,
       sum(l_extendedprice * (1 - l_discount)) AS sum_disc_price,
       sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge,
       avg(l_quantity) AS avg_qty, avg(l_extendedprice) AS avg_price, avg(l_discount) AS avg_disc, count(*) AS count_order
FROM sales.lineitem
WHERE l_shipdate <= date '1998-09-02'
GROUP BY l_returnflag, l_linestatus
ORDER BY l_returnflag, l_linestatus
"""

Q6 = """
SELECT sum(l_extendedprice * l_discount) AS revenue
FROM sales.lineitem
WHERE l_shipdate >= date '1994-01-01' AND l_shipdate < date '1995-01-01'
  AND l_discount BETWEEN 0.05 AND 0.07 AND l_quantity < 24
"""

QUERIES = {"q1": Q1, "q3": tpch.Q3, "q5": tpch.Q5, "q6": Q6, "q10": tpch.Q10, "mesh_join": tpch.MESH_JOIN}

# A row filter that keeps every row (so both sides compute the same answer
# sizes) but that the engine must evaluate, and two masks, on every table.
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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def configs(agora, data):
    """Writes bench-open.yaml and bench-governed.yaml next to the demo mesh."""
    mesh = (data / "mesh.yaml").read_text().split("\ngovernance:")[0]
    mesh = "\n".join(l for l in mesh.splitlines() if not l.strip().startswith("policies:"))
    hash_ = subprocess.run([agora, "hash-password"], input="bench-password\n", capture_output=True, text=True,
                           check=True).stdout.strip()
    user = f'    - name: bench\n      password_hash: "{hash_}"\n      groups: [bench]\n'
    with_user = mesh.replace("\n  users:\n", "\n  users:\n" + user, 1)
    open_config = data / "bench-open.yaml"
    open_config.write_text(with_user + "\n")
    (data / "bench-policies.yaml").write_text(POLICIES)
    governed = data / "bench-governed.yaml"
    governed.write_text(with_user + "\ngovernance:\n  policies: bench-policies.yaml\n"
                        "  audit: { path: bench-audit/audit.jsonl }\n")
    return open_config, governed


def serve(agora, config, log):
    port = free_port()
    proc = subprocess.Popen([agora, "serve", "--config", str(config), "--bind", f"127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"agora serve {config} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"grpc://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("agora serve did not start within 60 s")
            time.sleep(0.1)


def timed(conn, sql):
    start = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute(sql)
        table = cur.fetch_arrow_table()
    return time.perf_counter() - start, table.num_rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--agora", required=True)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--scale", default="1")
    p.add_argument("--json", type=Path)
    p.add_argument("--doc", type=Path)
    args = p.parse_args()

    open_config, governed_config = configs(args.agora, args.data)
    log = open(args.data / "bench-servers.log", "wb")
    servers = [serve(args.agora, open_config, log), serve(args.agora, governed_config, log)]
    try:
        open_conn = flightsql.connect(servers[0][1], autocommit=True,
                                      db_kwargs={"username": "bench", "password": "bench-password"})
        gov_conn = flightsql.connect(servers[1][1], autocommit=True,
                                     db_kwargs={"username": "bench", "password": "bench-password"})
        results = []
        for name, sql in QUERIES.items():
            times = {"open": [], "governed": []}
            rows = {}
            for label, conn in (("open", open_conn), ("governed", gov_conn)):
                _, rows[label] = timed(conn, sql)  # warm-up: opens products, fills the OS cache
            for _ in range(args.runs):
                for label, conn in (("open", open_conn), ("governed", gov_conn)):
                    t, n = timed(conn, sql)
                    times[label].append(t)
                    assert n == rows[label]
            if rows["open"] != rows["governed"]:
                print(f"note: {name} returns {rows['open']} rows open, {rows['governed']} governed (masked group keys)")
            row = {
                "query": name,
                "rows": rows["open"],
                "open": {"min_s": min(times["open"]), "median_s": statistics.median(times["open"])},
                "governed": {"min_s": min(times["governed"]), "median_s": statistics.median(times["governed"])},
            }
            row["ratio_min"] = row["governed"]["min_s"] / row["open"]["min_s"]
            row["ratio_median"] = row["governed"]["median_s"] / row["open"]["median_s"]
            results.append(row)
            print(f"{name:10} open {row['open']['min_s']:.3f}s  governed {row['governed']['min_s']:.3f}s  "
                  f"ratio {row['ratio_min']:.3f} (median {row['ratio_median']:.3f})")
        open_conn.close()
        gov_conn.close()
    finally:
        for proc, _ in servers:
            proc.terminate()
            proc.wait()
        log.close()

    total_open = sum(r["open"]["min_s"] for r in results)
    total_gov = sum(r["governed"]["min_s"] for r in results)
    report = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "scale": args.scale,
        "runs": args.runs,
        "results": results,
        "total_ratio": total_gov / total_open,
        "geomean_ratio": statistics.geometric_mean(r["ratio_min"] for r in results),
    }
    print(f"total ratio {report['total_ratio']:.3f}, geometric mean {report['geomean_ratio']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.doc:
        write_doc(args.doc, report)


def write_doc(doc, report):
    lines = [
        f"### Governance overhead (TPC-H scale {report['scale']}, over Flight SQL)",
        "",
        f"{report['date']}, {report['machine']}; two `agora serve` processes on the same files, one with no "
        "policies, one with a row filter and two masks on every table (and an fsync'ed audit record per query); "
        f"warm-up + {report['runs']} timed runs alternating between them, min (median), client-side wall time "
        "through the ADBC Flight SQL driver.",
        "",
        "| query | rows | off s | on s | on ÷ off |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        lines.append(f"| {r['query']} | {r['rows']} | {r['open']['min_s']:.3f} ({r['open']['median_s']:.3f}) | "
                     f"{r['governed']['min_s']:.3f} ({r['governed']['median_s']:.3f}) | {r['ratio_min']:.3f} |")
    lines += [
        "",
        f"Sum of minimums: on ÷ off = **{report['total_ratio']:.3f}**; geometric mean of the ratios "
        f"{report['geomean_ratio']:.3f} (goal: ≤ 1.05).",
    ]
    write_section(doc, "governance", lines)


if __name__ == "__main__":
    main()
