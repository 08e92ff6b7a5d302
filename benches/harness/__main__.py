"""The benchmark suite's driver: `benches/run` prepares binaries, the venv and
PostgreSQL, then runs `python -m harness` from `benches/`.

Data is generated once per scale into the cache; each workload then times
Agora and its peers in this one run, checks Agora's answers and records the
results (JSON, and the generated tables of docs/benchmarks.md for full runs).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path

from harness import concurrency, data, report, workloads
from harness.workloads import Context, Mismatch

ALL = ["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8", "W9"]
NEEDS_POSTGRES = {"W3", "W4", "W5"}


def machine() -> dict:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "os": platform.platform(),
            "load_at_start": os.getloadavg()[0]}


def versions(agora: Path, postgres: str | None) -> dict:
    v = {p: metadata.version(p) for p in ("duckdb", "datafusion", "pyarrow", "connectorx", "adbc-driver-postgresql",
                                          "adbc-driver-flightsql", "deltalake", "tpchgen-cli")}
    root = Path(__file__).resolve().parents[2]
    rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True)
    v["agora"] = (rev.stdout.strip() or "unknown") + (" (modified)" if dirty.stdout.strip() else "")
    v["agora build"] = "release" if "release" in str(agora) else "debug"
    if postgres:
        out = subprocess.run(["psql", postgres, "-tAc", "SHOW server_version"], capture_output=True, text=True)
        v["postgresql"] = out.stdout.strip() or "unknown"
    return v


def main() -> int:
    ap = argparse.ArgumentParser(prog="benches/run")
    ap.add_argument("--agora", required=True, type=Path)
    ap.add_argument("--agora-bench", required=True, type=Path)
    ap.add_argument("--cache", required=True, type=Path)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default=",".join(ALL), help="comma-separated workloads, e.g. W1,W6")
    ap.add_argument("--postgres", help="PostgreSQL URL (W3–W5 are skipped without one)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--doc", type=Path, help="regenerate the suite's tables in this Markdown file")
    args = ap.parse_args()

    selected = [w.strip().upper() for w in args.only.split(",") if w.strip()]
    unknown = [w for w in selected if w not in ALL]
    if unknown:
        print(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(ALL)}", file=sys.stderr)
        return 2
    started = time.monotonic()
    info = {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
            "scale": args.scale, "runs": args.runs, "warmup": 1, "quick": args.quick, "threads": 2,
            "versions": versions(args.agora, args.postgres)}
    print(f"benchmark suite: TPC-H scale {args.scale:g}, {args.runs} timed run(s), workloads {', '.join(selected)}; "
          f"load {info['machine']['load_at_start']:.2f}", flush=True)

    parquet = data.generate_tpch(args.cache, args.scale)
    if args.postgres and NEEDS_POSTGRES & set(selected):
        t = time.monotonic()
        data.load_postgres(args.postgres, parquet, args.scale)
        print(f"PostgreSQL ready ({time.monotonic() - t:.0f} s)", flush=True)
    con = data.duckdb_connect(threads=2)
    queries = data.tpch_queries(con)
    con.close()
    work = args.cache / "work" / f"sf{args.scale:g}"
    ctx = Context(agora=args.agora, agora_bench=args.agora_bench, work=work, scale=args.scale, runs=args.runs,
                  parquet=parquet, queries=queries, postgres=args.postgres, cache=args.cache, quick=args.quick)

    results: dict[str, dict] = {}
    failed = False
    w1 = None
    for w in selected:
        if w in NEEDS_POSTGRES and not args.postgres:
            results[w] = {"skipped": "no PostgreSQL (--postgres, or let benches/run start one)"}
            continue
        print(f"--- {w}: {report.TITLES[w]}", flush=True)
        t = time.monotonic()
        try:
            if w == "W1":
                w1 = results[w] = workloads.w1_parquet(ctx)
            elif w == "W2":
                results[w] = workloads.w2_delta(ctx, w1)
            elif w == "W3":
                results[w] = workloads.w3_federated(ctx)
            elif w == "W4":
                results[w] = workloads.w4_postgres(ctx)
            elif w == "W5":
                results[w] = workloads.w5_bulk_read(ctx)
            elif w == "W6":
                if w1 is None:
                    w1 = workloads.w1_parquet(ctx)
                results[w] = workloads.w6_flight(ctx, w1)
            elif w == "W7":
                results[w] = workloads.w7_governance(ctx)
            elif w == "W8":
                results[w] = workloads.w8_startup(ctx)
            elif w == "W9":
                results[w] = concurrency.w9_concurrency(ctx)
        except Mismatch as e:
            print(f"ANSWER MISMATCH: {e}", file=sys.stderr, flush=True)
            results[w] = {"error": f"answer mismatch: {e}"}
            failed = True
            continue
        except Exception as e:  # noqa: BLE001 - one broken workload must not lose the others' results
            traceback.print_exc()
            results[w] = {"error": f"{type(e).__name__}: {e}"}
            failed = True
            continue
        results[w]["seconds"] = time.monotonic() - t
        for g in results[w].get("goals", []):
            value = "n/a" if g["value"] is None else f"{g['value']:.3f}"
            print(f"    {'met    ' if g['met'] else 'MISSED '} {g['goal']}: {value}", flush=True)

    info["seconds"] = time.monotonic() - started
    serialisable = {w: {k: v for k, v in r.items() if not k.startswith("_")} for w, r in results.items()}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"run": info, "workloads": serialisable}, indent=2, default=str) + "\n")
    print(f"results: {args.json}", flush=True)
    if args.doc:
        report.write_doc(args.doc, info, serialisable, full=set(selected) == set(ALL))
        print(f"tables regenerated in {args.doc}", flush=True)
    print(f"suite finished in {info['seconds']:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
