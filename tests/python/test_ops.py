"""Operating the server: Prometheus metrics, gRPC health, liveness and readiness.

Every server the tests start has its operations listener on a free loopback
port (`server["metrics"]`, read from the banner).
"""

import json
import re
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import ADMIN, ANALYST, FlightSession, derived_config, grpc_code, serving, wait_for

NATIONS = "SELECT n_nationkey, n_name FROM customers.nation"


def http_get(url, timeout=10):
    """(status, body) of a GET, also for error statuses."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def scrape(server):
    """Every sample of /metrics, as {'name{labels}': value}."""
    status, body = http_get(server["metrics"] + "/metrics")
    assert status == 200, body
    samples = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def sample(samples, name, **labels):
    """The value of `name` with exactly these labels (label order ignored), 0 when absent."""
    for key, value in samples.items():
        found = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})?", key)
        if not found or found.group(1) != name:
            continue
        have = dict(re.findall(r'([a-z_]+)="([^"]*)"', found.group(2) or ""))
        if have == {k: str(v) for k, v in labels.items()}:
            return value
    return 0.0


def test_metrics_count_a_known_workload(server):
    before = scrape(server)
    with FlightSession(server, ANALYST) as analyst:
        for _ in range(3):
            assert analyst.query(NATIONS).num_rows == 25
        with pytest.raises(Exception):
            analyst.query("SELECT * FROM no_such.product")
    with pytest.raises(Exception):
        FlightSession(server, ("analyst", "wrong password"))
    after = scrape(server)

    def delta(name, **labels):
        return sample(after, name, **labels) - sample(before, name, **labels)

    # Three queries read to their end, 75 rows; the statement naming a
    # product that does not exist was refused as denied (on a governed mesh a
    # missing product and an ungranted one get the same answer). Planning a
    # query for GetFlightInfo is not a query of its own.
    assert delta("agora_queries_total", outcome="ok") == 3
    assert delta("agora_queries_total", outcome="denied") == 1
    assert delta("agora_query_duration_seconds_count", outcome="ok") == 3
    assert delta("agora_result_rows_total") == 75
    assert delta("agora_result_bytes_total") > 0
    assert delta("agora_rpc_requests_total", rpc="DoGet", code="OK") == 3
    assert delta("agora_rpc_requests_total", rpc="GetFlightInfo", code="OK") == 3
    refused = {
        key: after[key] - before.get(key, 0.0)
        for key in after
        if key.startswith("agora_rpc_requests_total{") and 'rpc="GetFlightInfo"' in key and 'code="OK"' not in key
    }
    assert sum(refused.values()) == 1, refused
    assert delta("agora_logins_total", outcome="ok") == 1
    assert delta("agora_logins_total", outcome="wrong_credentials") == 1
    assert delta("agora_rpc_requests_total", rpc="Handshake", code="UNAUTHENTICATED") == 1
    # Histogram buckets are cumulative and end with the count.
    assert sample(after, "agora_query_duration_seconds_bucket", outcome="ok", le="+Inf") == sample(
        after, "agora_query_duration_seconds_count", outcome="ok"
    )
    # Audit records were written (the demo mesh is governed).
    assert delta("agora_audit_write_seconds_count", kind="durable") >= 3
    assert [v for k, v in after.items() if k.startswith('agora_build_info{version="')] == [1.0]
    assert sample(after, "agora_queries_running") == 0
    assert sample(after, "agora_memory_pool_limit_bytes") > 0
    # The nations are read from local files (a Delta table): every query
    # made requests to the local store and read bytes from it.
    reads = sum(
        after[k] - before.get(k, 0.0)
        for k in after
        if k.startswith("agora_object_store_requests_total{")
        and 'store="file"' in k
        and 'outcome="ok"' in k
        and re.search(r'operation="(get|get_ranges)"', k)
    )
    assert reads >= 3, reads
    assert delta("agora_object_store_read_bytes_total", store="file") > 0


def test_postgresql_pool_and_reads_are_measured_per_domain(agora_bin, pg_mesh_config, tmp_path):
    with serving(agora_bin, pg_mesh_config, tmp_path / "ops-pg.log") as server:
        before = scrape(server)
        with FlightSession(server, ADMIN) as admin:
            suppliers = admin.query("SELECT s_suppkey, s_name FROM supply.supplier")
            assert suppliers.num_rows > 0
        # Connections go back to the pool once the statement has been read.
        wait_for(lambda: sample(scrape(server), "agora_postgres_connections_in_use", domain="supply") == 0,
                 what="the connection back in the pool")
        after = scrape(server)

    def delta(name, **labels):
        return sample(after, name, **labels) - sample(before, name, **labels)

    # The supply domain's pool (its size is the demo's default).
    assert sample(after, "agora_postgres_pool_size", domain="supply") >= 1
    assert delta("agora_postgres_read_rows_total", domain="supply") == suppliers.num_rows
    assert delta("agora_postgres_read_bytes_total", domain="supply") > 0
    assert delta("agora_postgres_pool_wait_seconds_count", domain="supply") >= 1
    # Nothing of another domain was read from PostgreSQL.
    assert not any("agora_postgres_read_rows_total" in k and 'domain="supply"' not in k for k in after)


def test_a_client_cannot_grow_the_metrics(server):
    """Label values come from fixed sets: invented RPC paths are counted as `other`."""
    import grpc

    with grpc.insecure_channel(server["uri"].removeprefix("grpc://")) as channel:
        for i in range(20):
            call = channel.unary_unary(f"/made.Up/Method{i}")
            with pytest.raises(grpc.RpcError):
                call(b"", timeout=5)
    samples = scrape(server)
    assert not any("Method" in key for key in samples), [k for k in samples if "Method" in k]
    assert sample(samples, "agora_rpc_requests_total", rpc="other", code="UNAUTHENTICATED") >= 20


def test_memory_and_spill_gauges_move_under_a_spilling_query(agora_bin, mesh_config, tmp_path):
    from test_limits import BIG_SORT, SMALL_MEMORY

    spill = tmp_path / "spill"
    spill.mkdir()
    config = derived_config(mesh_config, "ops-spill", limits={"memory_limit_bytes": SMALL_MEMORY, "spill_dir": str(spill)})
    with serving(agora_bin, config, tmp_path / "ops-spill.log") as server:
        assert sample(scrape(server), "agora_memory_pool_limit_bytes") == SMALL_MEMORY
        seen = {"reserved": 0.0, "spill": 0.0, "running": 0.0}
        done = threading.Event()
        errors = []

        def run():
            try:
                with FlightSession(server, ADMIN) as admin:
                    admin.query(BIG_SORT, timeout=180)
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append(error)
            finally:
                done.set()

        worker = threading.Thread(target=run)
        worker.start()
        deadline = time.monotonic() + 180
        while not done.is_set() and time.monotonic() < deadline:
            now = scrape(server)
            seen["reserved"] = max(seen["reserved"], sample(now, "agora_memory_pool_reserved_bytes"))
            seen["spill"] = max(seen["spill"], sample(now, "agora_spill_bytes"))
            seen["running"] = max(seen["running"], sample(now, "agora_queries_running"))
            time.sleep(0.02)
        worker.join(timeout=10)
        assert not errors, errors
        assert seen["running"] >= 1, seen
        assert 0 < seen["reserved"] <= SMALL_MEMORY, seen
        assert seen["spill"] > 0, seen
        # After the query the pool and the spill space are given back.
        after = scrape(server)
        assert sample(after, "agora_memory_pool_reserved_bytes") == 0
        assert sample(after, "agora_spill_bytes") == 0
        # The query history has what the query itself held and spilled.
        with FlightSession(server, ADMIN) as admin:
            (row,) = admin.query(
                "SELECT peak_memory_bytes, spilled_bytes, state FROM system.queries "
                "WHERE sql LIKE '%ORDER BY l_comment, n%' AND sql NOT LIKE '%system.queries%'"
            ).to_pylist()
        assert row["state"] == "finished", row
        assert 0 < row["peak_memory_bytes"] <= SMALL_MEMORY, row
        assert row["spilled_bytes"] > 0, row


def test_grpc_health_answers_without_credentials(server):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(server["uri"].removeprefix("grpc://")) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ["", "arrow.flight.protocol.FlightService"]:
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as unknown:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert http_get(server["metrics"] + "/healthz") == (200, "ok\n")


def wait_ready(server, want, timeout=15):
    """Polls /readyz until its status is `want` (200 or 503); returns the body."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = http_get(server["metrics"] + "/readyz")
        if status == want:
            return body
        if time.monotonic() > deadline:
            pytest.fail(f"/readyz stayed {status}, wanted {want}: {body}")
        time.sleep(0.2)


def test_readiness_follows_the_audit_directory_and_the_config_file(agora_bin, mesh_config, tmp_path):
    import json

    config = derived_config(mesh_config, "ops-ready")
    audit_dir = config.parent / "ops-ready-audit"
    with serving(agora_bin, config, tmp_path / "ops-ready.log") as server:
        body = json.loads(wait_ready(server, 200))
        assert body["ready"] and body["config"]["ok"] and body["audit"]["ok"], body
        # The audit directory disappears (a lost volume): not ready, named.
        moved = tmp_path / "audit-moved"
        shutil.move(str(audit_dir), str(moved))
        audit_dir.write_text("not a directory")
        try:
            body = json.loads(wait_ready(server, 503))
            assert not body["audit"]["ok"] and "audit.jsonl" in body["audit"]["error"], body
            assert body["config"]["ok"], body
        finally:
            audit_dir.unlink()
            shutil.move(str(moved), str(audit_dir))
        wait_ready(server, 200)
        # A broken edit of the mesh file: not ready until it is repaired.
        text = config.read_text()
        config.write_text(text + "\nnot_a_section: [\n")
        try:
            body = json.loads(wait_ready(server, 503))
            assert not body["config"]["ok"] and str(config.name) in body["config"]["error"], body
        finally:
            config.write_text(text)
        wait_ready(server, 200)
        # Still serving throughout.
        with FlightSession(server, ADMIN) as admin:
            assert admin.query(NATIONS).num_rows == 25


def test_shutdown_lets_queries_finish_then_stops_them_audited(agora_bin, mesh_config, tmp_path):
    from test_limits import EXPENSIVE, ExpensiveClient

    config = derived_config(mesh_config, "ops-drain")
    audit = config.parent / "ops-drain-audit" / "audit.jsonl"
    marker = f"drain-{time.monotonic_ns()}"
    with serving(agora_bin, config, tmp_path / "ops-drain.log", extra=["--drain-seconds", "2"]) as server:
        process = server["process"]
        with FlightSession(server, ADMIN) as admin:
            # A query that completed before the signal is unaffected.
            assert admin.query(NATIONS).num_rows == 25
            with ExpensiveClient(server, admin.header, sql=f"{EXPENSIVE} /* {marker} */") as heavy:
                heavy.wait_streaming()
                signalled = time.monotonic()
                process.send_signal(signal.SIGTERM)
                # Still running during the drain time.
                time.sleep(1.0)
                assert process.poll() is None and heavy.running()
                process.wait(timeout=20)
                elapsed = time.monotonic() - signalled
                heavy.process.wait(timeout=10)
                error = heavy.process.stderr.read()
        assert 2.0 <= elapsed < 12.0, elapsed
        assert process.returncode == 0, server["log"].read_text()[-2000:]
        assert "UNAVAILABLE" in error or "shutting down" in error, error[-2000:]
    records = [json.loads(line) for line in audit.read_text().splitlines() if line]
    ids = {r["query_id"] for r in records if marker in (r.get("sql") or "")}
    finishes = [r["status"] for r in records if r["query_id"] in ids and r["status"] not in ("started", "planned")]
    assert finishes == ["cancelled"], finishes
    assert "shutting down" in next(r["error"] for r in records if r["query_id"] in ids and r["status"] == "cancelled")


def test_a_second_signal_stops_the_server_at_once(agora_bin, mesh_config, tmp_path):
    from test_limits import EXPENSIVE, ExpensiveClient

    config = derived_config(mesh_config, "ops-second-signal")
    with serving(agora_bin, config, tmp_path / "ops-second.log", extra=["--drain-seconds", "600"]) as server:
        process = server["process"]
        with FlightSession(server, ADMIN) as admin, ExpensiveClient(server, admin.header) as heavy:
            heavy.wait_streaming()
            process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            assert process.poll() is None, "the first signal drains"
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=15)
            assert time.monotonic() - signalled < 8.0


def test_clients_that_finished_before_the_signal_close_without_an_error(agora_bin, mesh_config, tmp_path):
    """A BI tool or a notebook closes its statements and its connection after
    reading a result; when that happens during the drain it must succeed:
    the query was answered, the client should not see an error for it."""
    from conftest import connect
    from test_limits import ExpensiveClient

    config = derived_config(mesh_config, "ops-drain-close")
    with serving(agora_bin, config, tmp_path / "ops-drain-close.log", extra=["--drain-seconds", "3"]) as server:
        process = server["process"]
        plain, prepared = connect(server, ANALYST), connect(server, ANALYST)
        plain_cursor, prepared_cursor = plain.cursor(), prepared.cursor()
        plain_cursor.execute(NATIONS)
        assert len(plain_cursor.fetchall()) == 25
        # A parameterised query is a prepared statement held by the server.
        prepared_cursor.execute("SELECT n_name FROM customers.nation WHERE n_nationkey = ?", parameters=(7,))
        assert prepared_cursor.fetchall() == [("GERMANY",)]
        with FlightSession(server, ADMIN) as admin, ExpensiveClient(server, admin.header) as heavy:
            # A query still running keeps the server in its drain time.
            heavy.wait_streaming()
            process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            assert process.poll() is None, "the server drains"
            # New work is refused, on a connection that stays open.
            with pytest.raises(Exception) as refused:
                admin.query(NATIONS)
            assert grpc_code(refused.value) == "UNAVAILABLE" and "shutting down" in str(refused.value), refused.value
            for cursor, connection in ((plain_cursor, plain), (prepared_cursor, prepared)):
                cursor.close()
                connection.close()
            process.wait(timeout=20)
    assert process.returncode == 0
