"""Fixtures for Agora's Python tests: the agora binary, a demo mesh, a running server."""

import os
import socket
import subprocess
import time
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _agora_bin() -> str:
    path = os.environ.get("AGORA_BIN", str(ROOT / "target" / "debug" / "agora"))
    if not Path(path).exists():
        pytest.fail(f"agora binary not found at {path}: run the tests through ./scripts/test")
    return path


@pytest.fixture(scope="session")
def agora_bin() -> str:
    return _agora_bin()


@pytest.fixture(scope="session")
def mesh_dir(agora_bin, tmp_path_factory) -> Path:
    """A demo mesh at scale 0.01 (generated once per session unless AGORA_TEST_MESH points at one)."""
    given = os.environ.get("AGORA_TEST_MESH")
    directory = Path(given) if given else tmp_path_factory.mktemp("mesh")
    subprocess.run(
        [agora_bin, "demo", "--dir", str(directory), "--scale", "0.01", "--generate-only"],
        check=True,
        capture_output=True,
    )
    return directory


@pytest.fixture(scope="session")
def mesh_config(mesh_dir) -> Path:
    return mesh_dir / "mesh.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(agora_bin, config, log_path):
    """Starts `agora serve` on `config` on a free loopback port and waits until it listens."""
    port = free_port()
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [agora_bin, "serve", "--config", str(config), "--bind", f"127.0.0.1:{port}"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            pytest.fail(f"agora serve exited with {proc.returncode}: {Path(log_path).read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("agora serve did not start listening within 30 s")
            time.sleep(0.1)
    return {"uri": f"grpc://127.0.0.1:{port}", "process": proc, "port": port, "log": Path(log_path), "log_file": log}


def stop_server(server):
    proc = server["process"]
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    server["log_file"].close()


@pytest.fixture(scope="session")
def server(agora_bin, mesh_config, tmp_path_factory):
    """`agora serve` over the demo mesh on a free loopback port; yields its URI."""
    started = start_server(agora_bin, mesh_config, tmp_path_factory.mktemp("server") / "agora.log")
    yield started
    stop_server(started)


@pytest.fixture(scope="session")
def duck(mesh_dir):
    """DuckDB over the same files, with the same schema.table names as the mesh."""
    con = duckdb.connect()
    d = mesh_dir
    views = {
        "sales.orders": f"read_parquet('{d}/sales/orders/*/*.parquet', hive_partitioning = true)",
        "sales.lineitem": f"read_parquet('{d}/sales/lineitem/*.parquet')",
        # The demo's Delta tables were written once: their data files are exactly the table.
        "customers.customer": f"read_parquet('{d}/customers/customer/*.parquet')",
        "customers.nation": f"read_parquet('{d}/customers/nation/*.parquet')",
        "customers.region": f"read_parquet('{d}/customers/region/*.parquet')",
        "supply.part": f"read_parquet('{d}/supply/part/*.parquet')",
        "supply.supplier": f"read_parquet('{d}/supply/supplier/*.parquet')",
        "supply.partsupp": f"read_parquet('{d}/supply/partsupp/*.parquet')",
    }
    for schema in {name.split(".")[0] for name in views}:
        con.execute(f"CREATE SCHEMA {schema}")
    for name, source in views.items():
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM {source}")
    yield con
    con.close()


# The demo mesh's users (see flight-server/src/demo.rs).
ADMIN = ("admin", "admin-demo")
ANALYST = ("analyst", "analyst-demo")


def connect(server, user=ADMIN):
    """An ADBC DB-API connection to the server, logged in as `user`."""
    import adbc_driver_flightsql.dbapi as flightsql

    return flightsql.connect(server["uri"], db_kwargs={"username": user[0], "password": user[1]}, autocommit=True)


def engine_answer(agora_bin, mesh_config, sql):
    """The in-process engine's answer (agora query --format arrow) as a pyarrow Table."""
    import pyarrow as pa

    out = subprocess.run(
        [agora_bin, "query", "--config", str(mesh_config), "--format", "arrow", sql],
        check=True,
        capture_output=True,
    ).stdout
    return pa.ipc.open_stream(out).read_all()


@pytest.fixture(scope="session")
def pg_mesh_config(agora_bin, tmp_path_factory) -> Path:
    """The demo mesh at scale 0.01 with its `supply` domain served from PostgreSQL
    (the throwaway cluster that ./scripts/test starts)."""
    port = os.environ.get("AGORA_TEST_PG_PORT")
    if not port:
        pytest.fail("AGORA_TEST_PG_PORT is not set: run the tests through ./scripts/test, which starts PostgreSQL")
    directory = tmp_path_factory.mktemp("pg-mesh")
    url = f"postgres://{os.environ.get('AGORA_TEST_PG_USER', 'postgres')}@127.0.0.1:{port}/postgres"
    subprocess.run(
        [agora_bin, "demo", "--dir", str(directory), "--scale", "0.01", "--generate-only", "--postgres", url],
        check=True,
        capture_output=True,
    )
    return directory / "mesh.yaml"
