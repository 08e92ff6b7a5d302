"""Fixtures for Agora's Python tests: the agora binary, a demo mesh, a running server."""

import contextlib
import os
import re
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


def start_server(agora_bin, config, log_path, extra=()):
    """Starts `agora serve` on `config` on a free loopback port and waits until
    it listens; its operations listener (metrics, health) gets a free port too,
    read back from the banner (`metrics` in the result)."""
    port = free_port()
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [agora_bin, "serve", "--config", str(config), "--bind", f"127.0.0.1:{port}", "--metrics-bind", "127.0.0.1:0",
         *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    metrics = None
    while True:
        if proc.poll() is not None:
            pytest.fail(f"agora serve exited with {proc.returncode}: {Path(log_path).read_text()}")
        if metrics is None:
            found = re.search(r"Metrics at (http://[0-9.:]+)/metrics", Path(log_path).read_text(errors="replace"))
            metrics = found and found.group(1)
        try:
            if metrics is not None:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"agora serve did not start listening within 30 s: {Path(log_path).read_text()}")
        time.sleep(0.1)
    return {
        "uri": f"grpc://127.0.0.1:{port}",
        "process": proc,
        "port": port,
        "log": Path(log_path),
        "log_file": log,
        "metrics": metrics,
    }


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


# The demo mesh's users (see flight-server/demo/src/lib.rs).
ADMIN = ("admin", "admin-demo")
ANALYST = ("analyst", "analyst-demo")


def connect(server, user=ADMIN):
    """An ADBC DB-API connection to the server, logged in as `user`."""
    import adbc_driver_flightsql.dbapi as flightsql

    return flightsql.connect(server["uri"], db_kwargs={"username": user[0], "password": user[1]}, autocommit=True)


def engine_answer(agora_bin, mesh_config, sql):
    """The in-process engine's answer (agora query --format arrow) as a pyarrow Table."""
    import pyarrow as pa

    run = subprocess.run(
        [agora_bin, "query", "--config", str(mesh_config), "--format", "arrow", sql],
        capture_output=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr.decode(errors="replace")[-3000:]
    return pa.ipc.open_stream(run.stdout).read_all()


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


# Where each TPC-H product of the demo lives: (domain, product, source kind, directory).
DEMO_PRODUCTS = [
    ("customers", "customer", "delta"), ("customers", "nation", "delta"), ("customers", "region", "delta"),
    ("sales", "orders", "parquet"), ("sales", "lineitem", "parquet"),
    ("supply", "part", "parquet"), ("supply", "supplier", "parquet"), ("supply", "partsupp", "parquet"),
]


def pg_layout_mesh(mesh_dir, duck, directory, name, in_postgres):
    """A mesh over the demo's data with the products named in `in_postgres`
    ("domain.product") copied into PostgreSQL (database `agora_layout_<name>`,
    one schema per domain) and the others read in place: the benchmark's
    layouts (W3: the facts in Parquet, the six others in PostgreSQL; W4: all
    in PostgreSQL) at the tests' scale."""
    port = os.environ.get("AGORA_TEST_PG_PORT")
    if not port:
        pytest.fail("AGORA_TEST_PG_PORT is not set: run the tests through ./scripts/test, which starts PostgreSQL")
    user = os.environ.get("AGORA_TEST_PG_USER", "postgres")
    database = f"agora_layout_{name}"

    def psql(db, sql):
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", port, "-U", user, "-d", db, "-v", "ON_ERROR_STOP=1",
                        "-q", "-c", sql], check=True, capture_output=True, timeout=120)

    psql("postgres", f"DROP DATABASE IF EXISTS {database}")
    psql("postgres", f"CREATE DATABASE {database}")
    for product in sorted(in_postgres):
        schema = product.split(".")[0]
        columns = duck.execute(f"DESCRIBE {product}").fetchall()
        csv = directory / f"{product}.csv"
        duck.execute(f"COPY (SELECT * FROM {product}) TO '{csv}' (FORMAT csv, HEADER false)")
        definition = ", ".join(f"{c[0]} {c[1]}" for c in columns)
        psql(database, f"CREATE SCHEMA IF NOT EXISTS {schema}; CREATE TABLE {product} ({definition})")
        psql(database, f"\\copy {product} FROM '{csv}' (FORMAT csv)")
        psql(database, f"ANALYZE {product}")
    lines = ["domains:"]
    for domain in ("customers", "sales", "supply"):
        lines += [f"  - name: {domain}", f"    description: The {domain} domain",
                  "    owner: { name: Team, contact: team@example.com }",
                  f"    postgres: {{ host: 127.0.0.1, port: {port}, database: {database}, user: {user}, "
                  "sslmode: disable }", "    products:"]
        for d, product, kind in DEMO_PRODUCTS:
            if d != domain:
                continue
            if f"{d}.{product}" in in_postgres:
                source = f"{{ kind: postgres, table: {d}.{product} }}"
            else:
                source = f"{{ kind: {kind}, location: \"{mesh_dir / d / product}\" }}"
            lines.append(f"      - {{ name: {product}, description: {product}, source: {source} }}")
    mesh = directory / "mesh.yaml"
    mesh.write_text("\n".join(lines) + "\n")
    return mesh


@pytest.fixture(scope="session")
def w3_mesh_config(mesh_dir, duck, tmp_path_factory) -> Path:
    """The benchmark's W3 layout: lineitem and orders in Parquet, the six other tables in PostgreSQL."""
    facts = {"sales.lineitem", "sales.orders"}
    products = {f"{d}.{p}" for d, p, _ in DEMO_PRODUCTS} - facts
    return pg_layout_mesh(mesh_dir, duck, tmp_path_factory.mktemp("w3-mesh"), "w3", products)


@pytest.fixture(scope="session")
def w4_mesh_config(mesh_dir, duck, tmp_path_factory) -> Path:
    """The benchmark's W4 layout: every table in PostgreSQL."""
    products = {f"{d}.{p}" for d, p, _ in DEMO_PRODUCTS}
    return pg_layout_mesh(mesh_dir, duck, tmp_path_factory.mktemp("w4-mesh"), "w4", products)


# --- Helpers for the hardening tests (test_hostile.py, test_limits.py) --------

# gRPC status codes by number, as ADBC reports them in `vendor_code`.
GRPC_CODES = {
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}

# How Arrow Flight's C++ client (pyarrow.flight) words each gRPC status: several
# codes share an exception class (INVALID_ARGUMENT, RESOURCE_EXHAUSTED,
# FAILED_PRECONDITION and OUT_OF_RANGE are all ArrowInvalid), only the start of
# the message tells them apart.
_FLIGHT_MESSAGES = (
    ("Flight returned invalid argument error", "INVALID_ARGUMENT"),
    ("gRPC returned resource exhausted error", "RESOURCE_EXHAUSTED"),
    ("gRPC returned precondition failed error", "FAILED_PRECONDITION"),
    ("gRPC returned out-of-range error", "OUT_OF_RANGE"),
    ("gRPC returned aborted error", "ABORTED"),
    ("gRPC returned data loss error", "DATA_LOSS"),
    ("Flight returned not found error", "NOT_FOUND"),
    ("Flight returned unimplemented error", "UNIMPLEMENTED"),
    ("Flight returned timeout error", "DEADLINE_EXCEEDED"),
    ("Flight returned unauthenticated error", "UNAUTHENTICATED"),
    ("Flight returned unauthorized error", "PERMISSION_DENIED"),
    ("Flight returned unavailable error", "UNAVAILABLE"),
    ("Flight returned internal error", "INTERNAL"),
    ("Flight cancelled call", "CANCELLED"),
    ("Flight RPC failed", "UNKNOWN"),
    ("Unknown: Flight returned already exists error", "ALREADY_EXISTS"),
)


def _camel_code(name):
    code = re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()
    return "CANCELLED" if code == "CANCELED" else code


def grpc_code(error):
    """The gRPC status code (e.g. "INVALID_ARGUMENT") of an error raised by
    pyarrow.flight or by the ADBC Flight SQL driver; None when the error did not
    come from a gRPC status."""
    import adbc_driver_manager
    import pyarrow as pa
    import pyarrow.flight as flight

    message = str(error)
    if isinstance(error, adbc_driver_manager.Error):
        if getattr(error, "vendor_code", None) in GRPC_CODES:
            return GRPC_CODES[error.vendor_code]
    for prefix, code in _FLIGHT_MESSAGES:
        if message.startswith(prefix):
            return code
    for cls, code in (
        (flight.FlightTimedOutError, "DEADLINE_EXCEEDED"),
        (flight.FlightUnauthenticatedError, "UNAUTHENTICATED"),
        (flight.FlightUnauthorizedError, "PERMISSION_DENIED"),
        (flight.FlightUnavailableError, "UNAVAILABLE"),
        (flight.FlightCancelledError, "CANCELLED"),
        (flight.FlightInternalError, "INTERNAL"),
        (flight.FlightServerError, "UNKNOWN"),
        (pa.ArrowKeyError, "NOT_FOUND"),
        (pa.ArrowNotImplementedError, "UNIMPLEMENTED"),
    ):
        if isinstance(error, cls):
            return code
    # The Go driver (ADBC) words a status as "(ResourceExhausted; DoGet: …)".
    found = re.search(r"\(([A-Z][A-Za-z]+); ", message)
    if found and _camel_code(found.group(1)) in GRPC_CODES.values():
        return _camel_code(found.group(1))
    return None


def refusal(call):
    """Runs `call`, which must fail; returns the error's gRPC code and message."""
    try:
        result = call()
    except Exception as error:  # every failure is classified by the caller
        return grpc_code(error), str(error)
    pytest.fail(f"expected an error, got {result!r:.300}")


def wait_for(predicate, timeout=30.0, what="the condition"):
    """Polls `predicate` until it returns something true, and returns that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"{what} did not happen within {timeout} s")


# Hand-encoded protobuf, enough for Flight SQL commands.
FLIGHT_SQL = "type.googleapis.com/arrow.flight.protocol.sql."


def pb_varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def pb_bytes(number, data):
    """A length-delimited field (strings, bytes, messages)."""
    if isinstance(data, str):
        data = data.encode()
    return pb_varint(number << 3 | 2) + pb_varint(len(data)) + data


def pb_any(name, value, type_url=None):
    """`value` (an encoded message) in a google.protobuf.Any of Flight SQL's `name`."""
    return pb_bytes(1, type_url if type_url is not None else FLIGHT_SQL + name) + pb_bytes(2, value)


def _read_varint(data, i):
    shift = value = 0
    while True:
        if i >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def pb_decode(data):
    """The fields of an encoded message: {number: [int or bytes, ...]}."""
    fields = {}
    i = 0
    while i < len(data):
        key, i = _read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(data, i)
        elif wire == 2:
            length, i = _read_varint(data, i)
            value = data[i : i + length]
            if len(value) != length:
                raise ValueError("truncated field")
            i += length
        elif wire == 1:
            value, i = data[i : i + 8], i + 8
        elif wire == 5:
            value, i = data[i : i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def statement_command(sql):
    return pb_any("CommandStatementQuery", pb_bytes(1, sql))


class FlightSession:
    """A pyarrow.flight client logged in over its own connection. `header`
    re-uses a bearer token from an earlier Handshake instead of logging in."""

    def __init__(self, server, user=ADMIN, header=None, timeout=60.0):
        import pyarrow.flight as flight

        self.flight = flight
        self.client = flight.FlightClient(server["uri"])
        try:
            self.header = header or self.client.authenticate_basic_token(
                user[0], user[1], flight.FlightCallOptions(timeout=timeout)
            )
        except BaseException:
            self.client.close()
            raise

    def options(self, timeout=60.0):
        return self.flight.FlightCallOptions(headers=[self.header], timeout=timeout)

    def info(self, command, timeout=60.0):
        return self.client.get_flight_info(self.flight.FlightDescriptor.for_command(command), self.options(timeout))

    def fetch(self, ticket, timeout=60.0):
        """DoGet of a ticket (a flight.Ticket or its bytes), read to the end."""
        if isinstance(ticket, bytes):
            ticket = self.flight.Ticket(ticket)
        return self.client.do_get(ticket, self.options(timeout)).read_all()

    def command(self, command, timeout=60.0):
        """GetFlightInfo of an encoded command, then DoGet of its ticket."""
        info = self.info(command, timeout)
        return self.fetch(info.endpoints[0].ticket, timeout)

    def query(self, sql, timeout=60.0):
        return self.command(statement_command(sql), timeout)

    def close(self):
        self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def derived_config(mesh_config, name, limits=None, auth=None, domains="", audit=None):
    """The demo mesh with a `limits:` section, extra `auth:` keys, extra
    domains (YAML list items) and extra `governance.audit` keys, written next
    to the demo mesh so that relative locations still resolve, with audit,
    lineage and query-history files of its own (the audit file is
    `<name>-audit/audit.jsonl`)."""
    import json

    text = mesh_config.read_text()
    audit_keys = {"path": f"{name}-audit/audit.jsonl", **(audit or {})}
    replacements = [
        ("audit: { path: audit/audit.jsonl }", f"audit: {json.dumps(audit_keys)}"),
        ("lineage: { path: lineage/events.jsonl }", f"lineage: {{ path: {name}-lineage/events.jsonl }}"),
    ]
    if auth:
        keys = "".join(f"  {key}: {json.dumps(value)}\n" for key, value in auth.items())
        replacements.append(("\nauth:\n", "\nauth:\n" + keys))
    if domains:
        replacements.append(("\ndomains:\n", "\ndomains:\n" + domains))
    for old, new in replacements:
        assert text.count(old) == 1, f"the demo's mesh.yaml changed: expected one {old!r} in it"
        text = text.replace(old, new)
    assert not re.search(r"^history:", text, re.M), "the demo's mesh.yaml has a history section already"
    text += f"\nhistory: {{ path: {name}-history/queries.jsonl }}\n"
    if limits is not None:
        assert not re.search(r"^limits:", text, re.M), "the demo's mesh.yaml has a limits section already"
        # JSON is YAML's flow style.
        text += f"\nlimits: {json.dumps(limits)}\n"
    config = mesh_config.parent / f"{name}.yaml"
    config.write_text(text)
    return config


@contextlib.contextmanager
def serving(agora_bin, config, log_path, extra=()):
    """A server of its own on `config` (`extra`: more `agora serve` arguments),
    stopped however the block ends."""
    started = start_server(agora_bin, config, log_path, extra)
    try:
        yield started
    finally:
        stop_server(started)
