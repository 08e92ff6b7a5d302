"""Data as a product through the real clients: `agora check --quality` and
drift on the demo, the system catalogue over Flight SQL (ADBC), sensitive-data
access after an analyst's query, and OpenLineage events (file and HTTP sinks)
validated against the OpenLineage JSON schemas."""

import json
import re
import subprocess
import threading
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from conftest import ADMIN, ANALYST, connect, free_port
from openlineage_check import validate_event


def rows(server, sql, user=ADMIN):
    with connect(server, user) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table().to_pylist()


def test_check_reports_drift_and_the_failing_quality_rule(agora_bin, mesh_config):
    result = subprocess.run(
        [agora_bin, "check", "--quality", "--config", str(mesh_config)], capture_output=True, text=True
    )
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "DRIFT supply.part" in out
    assert "column p_weight is in the contract but not in the source" in out
    assert "column p_size is Int32 in the source, the contract says bigint" in out
    failing = [l for l in out.splitlines() if l.startswith("FAIL ")]
    assert len(failing) == 1 and "lineitem-discount-at-most-8-percent" in failing[0], out
    assert "2 checks failed" in out
    assert not [l for l in out.splitlines() if l.startswith("ERROR")], out


def test_system_products_over_flight_sql(server):
    products = rows(server, "SELECT * FROM system.products ORDER BY domain, product")
    assert len(products) == 8
    for p in products:
        assert p["owner"] and "@" in p["owner_contact"], p
        assert p["status"] == ("drift" if p["product"] == "part" else "ok"), p
        assert p["contract_id"] == f"{p['domain']}.{p['product']}"
    columns = rows(
        server,
        "SELECT column_name, mask FROM system.columns WHERE domain = 'customers' AND product = 'customer'",
        ANALYST,
    )
    names = {c["column_name"]: c["mask"] for c in columns}
    assert "c_acctbal" not in names and names["c_phone"].startswith("last_n"), names
    found = rows(server, "SELECT product FROM search_products('account balance') ORDER BY score DESC", ANALYST)
    assert found and found[0]["product"] in ("customer", "supplier"), found


def test_sensitive_access_shows_an_analysts_read(server):
    marker = uuid.uuid4().hex[:8]
    rows(server, f"SELECT c_name, c_phone, '{marker}' AS m FROM customers.customer LIMIT 3", ANALYST)
    reads = rows(
        server,
        "SELECT a.user, a.column_name, a.masked, a.mask FROM system.sensitive_access a "
        f"JOIN system.audit_log l ON a.query_id = l.query_id WHERE l.sql LIKE '%{marker}%' ORDER BY a.column_name",
    )
    assert [(r["user"], r["column_name"], r["masked"]) for r in reads] == [
        ("analyst", "c_name", True),
        ("analyst", "c_phone", True),
    ], reads
    assert "token" in reads[0]["mask"], reads
    assert "contact-last-4" in reads[1]["mask"]
    # The analyst may not read who accessed what.
    assert rows(server, "SELECT * FROM system.sensitive_access", ANALYST) == []


def events_for(path, marker):
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in events if marker in e["job"].get("facets", {}).get("sql", {}).get("query", "")]


def test_a_query_has_one_id_in_its_audit_records_and_its_lineage_run(agora_bin, mesh_config, mesh_dir):
    marker = uuid.uuid4().hex[:8]
    sql = f"SELECT n_name, '{marker}' AS m FROM customers.nation LIMIT 3"
    subprocess.run([agora_bin, "query", "--as", "analyst", "--config", str(mesh_config), sql], check=True,
                   capture_output=True)
    events = events_for(mesh_dir / "lineage" / "events.jsonl", marker)
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"], events
    audit = [json.loads(line) for line in (mesh_dir / "audit" / "audit.jsonl").read_text().splitlines() if line]
    started = [r for r in audit if marker in (r.get("sql") or "")]
    assert len(started) == 1, started
    query_id = started[0]["query_id"]
    assert [r["status"] for r in audit if r["query_id"] == query_id] == ["started", "ok"]
    assert {e["run"]["runId"] for e in events} == {query_id}
    # A UUIDv7: time-ordered ids.
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", query_id), query_id


def test_lineage_of_a_join_with_masked_columns(agora_bin, mesh_config, mesh_dir):
    marker = uuid.uuid4().hex[:8]
    sql = (
        f"SELECT o.o_orderkey, c.c_phone, upper(c.c_name) AS name, count(*) OVER () AS n, '{marker}' AS m "
        "FROM sales.orders o JOIN customers.customer c ON o.o_custkey = c.c_custkey "
        "WHERE o.o_orderstatus = 'F' LIMIT 5"
    )
    subprocess.run([agora_bin, "query", "--as", "analyst", "--config", str(mesh_config), sql], check=True,
                   capture_output=True)
    events = events_for(mesh_dir / "lineage" / "events.jsonl", marker)
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"], events
    for e in events:
        validate_event(e)
    complete = events[1]
    assert events[0]["run"]["runId"] == complete["run"]["runId"]
    assert {d["name"] for d in complete["inputs"]} == {"sales.orders", "customers.customer"}
    owners = {d["name"]: d["facets"]["ownership"]["owners"][0]["name"] for d in complete["inputs"]}
    assert owners == {"sales.orders": "team:Sales Analytics", "customers.customer": "team:CRM Team"}
    lineage = complete["outputs"][0]["facets"]["columnLineage"]
    fields = lineage["fields"]

    def inputs(column):
        return {(i["name"], i["field"]): i["transformations"][0] for i in fields[column]["inputFields"]}

    assert inputs("o_orderkey") == {
        ("sales.orders", "o_orderkey"): {"type": "DIRECT", "subtype": "IDENTITY", "masking": False}
    }
    phone = inputs("c_phone")[("customers.customer", "c_phone")]
    assert phone["type"] == "DIRECT" and phone["masking"] is True, phone
    name = inputs("name")[("customers.customer", "c_name")]
    # The demo gives analysts customer names as tokens: a masked input.
    assert (name["subtype"], name["masking"]) == ("TRANSFORMATION", True)
    assert "m" not in fields, "a literal has no input"
    indirect = {(d["name"], d["field"], d["transformations"][0]["subtype"]) for d in lineage["dataset"]}
    assert ("sales.orders", "o_custkey", "JOIN") in indirect, indirect
    assert ("customers.customer", "c_custkey", "JOIN") in indirect
    assert any(f == "o_orderstatus" and s == "FILTER" for _, f, s in indirect), indirect
    # The customer key is tokenised for the analyst: a masked join key.
    join_key = [d for d in lineage["dataset"] if d["field"] == "c_custkey"][0]
    assert join_key["transformations"][0]["masking"] is True


def test_a_failing_query_sends_fail_with_the_error(agora_bin, mesh_config, mesh_dir):
    marker = uuid.uuid4().hex[:8]
    sql = f"SELECT CAST(o_comment AS INT) AS x, '{marker}' FROM sales.orders"
    result = subprocess.run([agora_bin, "query", "--config", str(mesh_config), sql], capture_output=True, text=True)
    assert result.returncode == 1
    events = events_for(mesh_dir / "lineage" / "events.jsonl", marker)
    assert [e["eventType"] for e in events] == ["START", "FAIL"], events
    for e in events:
        validate_event(e)
    assert "Cannot cast" in events[1]["run"]["facets"]["errorMessage"]["message"] or "cast" in \
        events[1]["run"]["facets"]["errorMessage"]["message"].lower()


class Collector(BaseHTTPRequestHandler):
    received = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Collector.received.append((self.path, self.headers["Content-Type"], json.loads(body)))
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args):
        pass


def mesh_with_lineage_url(mesh_config, url, name):
    text = mesh_config.read_text().split("\nlineage:")[0]
    path = mesh_config.parent / name
    path.write_text(text + f"\nlineage: {{ url: {url} }}\n")
    return path


def test_lineage_posted_to_an_http_endpoint(agora_bin, mesh_config):
    Collector.received = []
    httpd = HTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_port}/api/v1/lineage"
        config = mesh_with_lineage_url(mesh_config, url, "mesh-http-lineage.yaml")
        sql = "SELECT r_name FROM customers.region ORDER BY r_name"
        subprocess.run([agora_bin, "query", "--config", str(config), sql], check=True, capture_output=True)
    finally:
        httpd.shutdown()
    assert [(p, t) for p, t, _ in Collector.received] == [("/api/v1/lineage", "application/json")] * 2
    events = [e for _, _, e in Collector.received]
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    for e in events:
        validate_event(e)
    assert events[1]["inputs"][0]["name"] == "customers.region"


def test_an_unreachable_lineage_endpoint_never_fails_the_query(agora_bin, mesh_config):
    url = f"http://127.0.0.1:{free_port()}/api/v1/lineage"
    config = mesh_with_lineage_url(mesh_config, url, "mesh-dead-lineage.yaml")
    result = subprocess.run(
        [agora_bin, "query", "--format", "csv", "--config", str(config), "SELECT count(*) AS n FROM customers.region"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["n", "5"]
    assert "lineage event not delivered" in result.stderr
