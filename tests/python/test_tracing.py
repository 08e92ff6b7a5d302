"""Traces over OpenTelemetry: a real OTLP/HTTP receiver on loopback gets the
request's span, continued from the client's `traceparent`, with the query's
planning and execution spans (and PostgreSQL's statements) below it, all
carrying the query id that the audit record, the lineage run and
`system.queries` carry too."""

import http.server
import json
import threading
import uuid

import pytest

from conftest import ANALYST, ADMIN, FlightSession, derived_config, serving, statement_command, wait_for


class Receiver:
    """An OTLP/HTTP receiver (JSON encoding) collecting every span it is sent."""

    def __init__(self):
        self.spans = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server interface
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/v1/traces":
                    request = json.loads(body)
                    with receiver.lock:
                        for resource in request.get("resourceSpans", []):
                            for scope in resource.get("scopeSpans", []):
                                receiver.spans.extend(scope.get("spans", []))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def trace(self, trace_id):
        with self.lock:
            return [s for s in self.spans if s["traceId"] == trace_id]

    def close(self):
        self.server.shutdown()


def attributes(span):
    return {a["key"]: next(iter(a["value"].values()), None) for a in span.get("attributes", [])}


def children(spans, parent):
    return [s for s in spans if s.get("parentSpanId") == parent["spanId"]]


@pytest.fixture(scope="module")
def receiver():
    started = Receiver()
    yield started
    started.close()


def traced_server(agora_bin, config, log, receiver, monkeypatch):
    # Spans are batched; a short delay keeps the test short.
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    return serving(agora_bin, config, log, extra=["--otlp-endpoint", receiver.url])


def run_traced(server, user, sql, headers):
    import pyarrow.flight as flight

    with FlightSession(server, user) as session:
        options = flight.FlightCallOptions(headers=[session.header, *headers], timeout=60)
        info = session.client.get_flight_info(flight.FlightDescriptor.for_command(statement_command(sql)), options)
        return session.client.do_get(info.endpoints[0].ticket, options).read_all()


def test_a_query_is_one_trace_continued_from_the_client(agora_bin, mesh_config, tmp_path, receiver, monkeypatch):
    config = derived_config(mesh_config, "traced")
    trace, parent = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    marker = uuid.uuid4().hex[:12]
    sql = f"SELECT n_name FROM customers.nation WHERE n_name <> '{marker}'"
    with traced_server(agora_bin, config, tmp_path / "traced.log", receiver, monkeypatch) as server:
        table = run_traced(server, ANALYST, sql, [(b"traceparent", f"00-{trace}-{parent}-01".encode())])
        assert table.num_rows == 25
        with FlightSession(server, ANALYST) as analyst:
            (row,) = analyst.query(
                f"SELECT query_id, trace_id FROM system.queries WHERE sql = '{sql.replace(chr(39), chr(39) * 2)}'"
            ).to_pylist()

        def complete():
            spans = receiver.trace(trace)
            names = [s["name"] for s in spans]
            return spans if "FlightService/DoGet" in names and names.count("agora.execute") >= 1 else None

        spans = wait_for(complete, what="the query's spans at the receiver")
    assert row["trace_id"] == trace
    (do_get,) = [s for s in spans if s["name"] == "FlightService/DoGet"]
    # The server span continues the client's span, and is a server span.
    assert do_get["parentSpanId"] == parent and do_get["kind"] == 2, do_get
    assert attributes(do_get)["rpc.system"] == "grpc" and attributes(do_get)["enduser.id"] == "analyst"
    (query,) = [s for s in children(spans, do_get) if s["name"] == "agora.query"]
    assert attributes(query)["agora.query_id"] == row["query_id"]
    assert attributes(query)["db.query.text"] == sql
    below = {s["name"] for s in children(spans, query)}
    assert {"agora.plan", "agora.execute"} <= below, below
    # The nations are a Delta table on local files: the object-store
    # requests that read them are client spans in the query's trace.
    by_id = {s["spanId"]: s for s in spans}
    store = [s for s in spans if s["name"].startswith("object_store ")]
    assert store, sorted({s["name"] for s in spans})
    for span in store:
        assert span["kind"] == 3 and attributes(span)["agora.store"] == "file", span
        ancestors, current = [], span
        while current.get("parentSpanId") in by_id:
            current = by_id[current["parentSpanId"]]
            ancestors.append(current["name"])
        assert "agora.query" in ancestors, (span["name"], ancestors)
    assert any(int(attributes(s).get("object_store.bytes", 0)) > 0 for s in store)
    # GetFlightInfo is in the same trace, with the query it planned.
    assert any(s["name"] == "FlightService/GetFlightInfo" for s in spans)
    # The audit record and the lineage run of the query carry its id.
    directory = config.parent
    audit = [json.loads(line) for line in (directory / "traced-audit" / "audit.jsonl").read_text().splitlines()]
    assert [r["status"] for r in audit if r["query_id"] == row["query_id"]] == ["started", "ok"]
    events = [json.loads(line) for line in (directory / "traced-lineage" / "events.jsonl").read_text().splitlines()]
    assert [e["eventType"] for e in events if e["run"]["runId"] == row["query_id"]] == ["START", "COMPLETE"]


def test_a_malformed_traceparent_starts_a_trace_of_its_own(agora_bin, mesh_config, tmp_path, receiver, monkeypatch):
    config = derived_config(mesh_config, "traced-bad")
    marker = uuid.uuid4().hex[:12]
    sql = f"SELECT count(*) AS n FROM customers.nation WHERE n_name <> '{marker}'"
    forged = "00-00000000000000000000000000000000-0000000000000000-01"
    with traced_server(agora_bin, config, tmp_path / "traced-bad.log", receiver, monkeypatch) as server:
        for header in [forged, "garbage", "00-" + "g" * 32 + "-" + "1" * 16 + "-01"]:
            assert run_traced(server, ADMIN, sql, [(b"traceparent", header.encode())]).to_pylist() == [{"n": 25}]
        with FlightSession(server, ADMIN) as admin:
            rows = admin.query(
                f"SELECT trace_id FROM system.queries WHERE sql = '{sql.replace(chr(39), chr(39) * 2)}'"
            ).to_pylist()
        assert len(rows) == 3
        for r in rows:
            assert len(r["trace_id"]) == 32 and r["trace_id"] != "0" * 32, r

            def do_get(trace_id=r["trace_id"]):
                return [s for s in receiver.trace(trace_id) if s["name"] == "FlightService/DoGet"]

            (root,) = wait_for(do_get, what="the new trace at the receiver")
            # The server span starts the trace: it has no parent.
            assert root.get("parentSpanId", "") == "", root


def test_postgresql_statements_are_client_spans_of_the_query(agora_bin, pg_mesh_config, tmp_path, receiver,
                                                             monkeypatch):
    trace = uuid.uuid4().hex
    with traced_server(agora_bin, pg_mesh_config, tmp_path / "traced-pg.log", receiver, monkeypatch) as server:
        table = run_traced(server, ADMIN, "SELECT count(*) AS n FROM supply.supplier",
                           [(b"traceparent", f"00-{trace}-{uuid.uuid4().hex[:16]}-01".encode())])
        assert table.num_rows == 1

        def statement():
            found = [s for s in receiver.trace(trace) if s["name"].startswith("postgresql ")]
            return found or None

        (pg, *_) = wait_for(statement, what="the PostgreSQL statement's span")
    spans = {s["spanId"]: s for s in receiver.trace(trace)}
    assert pg["kind"] == 3, pg  # client
    assert attributes(pg)["db.system.name"] == "postgresql" and "supplier" in attributes(pg)["db.query.text"]
    # Its ancestors lead to the query's execution span.
    names, current = [], pg
    while current.get("parentSpanId") in spans:
        current = spans[current["parentSpanId"]]
        names.append(current["name"])
    assert "agora.execute" in names and "agora.query" in names, names
