"""The audit trail from outside: a record for every request on every path, a
start record that survives a killed server, a hash chain that `agora audit
verify` checks, and a quota that keeps one user from flooding out the others."""

import json
import signal
import subprocess
import time
import uuid

import pytest

from conftest import (ADMIN, ANALYST, FlightSession, connect, derived_config, grpc_code, pb_any, pb_bytes,
                      refusal, serving, statement_command, wait_for)
from test_limits import EXPENSIVE, ExpensiveClient


def audit_file(config):
    return config.parent / f"{config.stem}-audit" / "audit.jsonl"


def records(config):
    """Every record of the current and rotated audit files, oldest first."""
    path = audit_file(config)
    files = sorted(path.parent.glob("audit.jsonl.*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
    out = []
    for f in [p for p in files if p.suffix[1:].isdigit()] + [path]:
        if f.exists():
            out.extend(json.loads(line) for line in f.read_text().splitlines() if line.strip())
    return out


def verify(agora_bin, config):
    done = subprocess.run([agora_bin, "audit", "verify", "--config", str(config)], capture_output=True, text=True)
    return done.returncode, done.stdout + done.stderr


def marked(marker, rows):
    """The records of requests whose statement (in the start record) carries `marker`."""
    ids = {r["query_id"] for r in rows if marker in (r.get("sql") or "")}
    return [r for r in rows if r["query_id"] in ids]


def started(marker, rows):
    """How many requests marked `marker` have started (a Flight SQL query is
    two: GetFlightInfo and DoGet)."""
    return len([r for r in marked(marker, rows) if r["status"] == "started"])


def finishes(marker, rows, planned=False):
    """Finish records of the requests marked `marker`. A Flight SQL query is two
    requests: GetFlightInfo plans it (`planned`), DoGet runs it; `planned`
    records are left out unless asked for."""
    return [r for r in marked(marker, rows) if r["status"] != "started" and (planned or r["status"] != "planned")]




def test_every_request_on_every_path_has_a_record_and_the_chain_verifies(agora_bin, mesh_config, tmp_path):
    config = derived_config(mesh_config, "audit-paths", limits={"statement_timeout_seconds": 3})
    tag = uuid.uuid4().hex[:8]
    with serving(agora_bin, config, tmp_path / "paths.log") as server:
        with FlightSession(server, ANALYST) as analyst:
            ok = analyst.query(f"SELECT count(*) AS n FROM sales.orders /* ok-{tag} */").to_pylist()
            assert ok[0]["n"] > 0
            expected = {
                f"denied-{tag}": (f"SELECT * FROM finance.ledger /* denied-{tag} */", "denied"),
                f"parse-{tag}": (f"SELEC 1 /* parse-{tag} */", "failed"),
                f"plan-{tag}": (f"SELECT no_such_column FROM sales.orders /* plan-{tag} */", "failed"),
                f"write-{tag}": (f"DROP TABLE sales.orders /* write-{tag} */", "failed"),
                f"timeout-{tag}": (f"{EXPENSIVE} /* timeout-{tag} */", "timeout"),
            }
            for marker, (sql, _) in expected.items():
                refusal(lambda sql=sql: analyst.query(sql, timeout=60))
            # Planned for a client that never fetched it.
            analyst.info(statement_command(f"SELECT 1 /* planned-{tag} */"))
            tables = analyst.client.get_flight_info(
                analyst.flight.FlightDescriptor.for_command(_get_tables()), analyst.options()
            )
            analyst.fetch(tables.endpoints[0].ticket)
        # A bind failure: the parameter cannot be the type the statement needs.
        # Before it, a prepared statement without parameters (ADBC's path):
        # planned once when prepared, run once by DoGet; the GetFlightInfo in
        # between answers from the prepared schema and is recorded as such.
        with connect(server, ANALYST) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT count(*) AS n FROM sales.orders /* adbc-{tag} */")
            assert cur.fetchall()[0][0] > 0
            with pytest.raises(Exception):
                cur.execute(f"SELECT o_orderkey FROM sales.orders WHERE o_orderkey = ? /* bind-{tag} */", ("x" * 3,))
                cur.fetchall()
        # Cancelled: the client goes away mid-stream.
        with FlightSession(server, ADMIN) as admin:
            with ExpensiveClient(server, admin.header, sql=f"{EXPENSIVE} /* cancel-{tag} */") as heavy:
                heavy.wait_streaming()
                wait_for(lambda: started(f"cancel-{tag}", records(config)) == 2, what="the DoGet's start record")
                heavy.kill()
            wait_for(lambda: finishes(f"cancel-{tag}", records(config)), what="the cancelled query's record")
        # A wrong password and an unauthenticated call.
        with pytest.raises(Exception):
            FlightSession(server, ("analyst", "wrong"))
        import pyarrow.flight as flight

        with flight.FlightClient(server["uri"]) as anonymous, pytest.raises(flight.FlightError):
            anonymous.get_flight_info(flight.FlightDescriptor.for_command(statement_command("SELECT 1")))

    rows = records(config)
    assert [f["status"] for f in finishes(f"ok-{tag}", rows)] == ["ok"]
    for marker, (_, status) in expected.items():
        assert [f["status"] for f in finishes(marker, rows)] == [status], (marker, marked(marker, rows))
    assert [f["status"] for f in finishes(f"planned-{tag}", rows, planned=True)] == ["planned"]
    assert [f["status"] for f in finishes(f"ok-{tag}", rows, planned=True)] == ["planned", "ok"]
    assert [f["status"] for f in finishes(f"cancel-{tag}", rows)] == ["cancelled"]
    assert [f["status"] for f in finishes(f"adbc-{tag}", rows, planned=True)] == ["planned", "ok"]
    assert any(r["kind"] == "metadata" and r["action"] == "GetFlightInfo PreparedStatementQuery" for r in rows)
    bind = [f["status"] for f in finishes(f"bind-{tag}", rows)]
    assert "failed" in bind and "ok" not in bind, bind
    # Each finish record follows a start record of the same request, which
    # carries the statement; the finish record carries only its digest.
    for r in rows:
        if r.get("kind") == "query" and r["status"] != "started":
            starts = [s for s in rows if s["query_id"] == r["query_id"] and s["status"] == "started"]
            assert len(starts) == 1 and starts[0]["seq"] < r["seq"], r
            assert r["sql"] is None and r["sql_sha256"] == starts[0]["sql_sha256"]
    logins = [r for r in rows if r["kind"] == "login"]
    assert any(r["user"] == "analyst" and r["status"] == "ok" for r in logins)
    wrong = [r for r in logins if r["user"] == "analyst" and r["status"] == "denied"]
    assert wrong and "wrong" not in json.dumps(wrong[0]).replace("wrong user name", ""), "no password in the log"
    assert any(r["kind"] == "rpc" and r["status"] == "denied" and r["user"] == "-" for r in rows)
    assert any(r["kind"] == "metadata" and r["action"] == "DoGet GetTables" for r in rows)
    assert [r["seq"] for r in rows] == list(range(rows[0]["seq"], rows[0]["seq"] + len(rows)))
    code, out = verify(agora_bin, config)
    assert code == 0 and "audit chain intact" in out, out


def _get_tables():
    from conftest import pb_any, pb_bytes

    return pb_any("CommandGetTables", pb_bytes(2, b"sales"))


def test_a_killed_server_leaves_start_records_and_a_torn_tail_is_repaired(agora_bin, mesh_config, tmp_path):
    config = derived_config(mesh_config, "audit-kill")
    tag = uuid.uuid4().hex[:8]
    with serving(agora_bin, config, tmp_path / "kill.log") as server:
        with FlightSession(server, ADMIN) as admin:
            with ExpensiveClient(server, admin.header, sql=f"{EXPENSIVE} /* killed-{tag} */") as heavy:
                heavy.wait_streaming()
                wait_for(lambda: started(f"killed-{tag}", records(config)) == 2, what="the DoGet's start record")
                server["process"].send_signal(signal.SIGKILL)
                server["process"].wait(timeout=10)
    rows = marked(f"killed-{tag}", records(config))
    assert rows and rows[-1]["status"] == "started", rows
    assert not finishes(f"killed-{tag}", rows), "the query never finished"
    code, out = verify(agora_bin, config)
    assert code == 0, out

    # A crash mid-write leaves half a line: it is moved aside on the next
    # start, recorded, and never merged with the next record.
    with open(audit_file(config), "ab") as f:
        f.write(b'{"seq":99999,"prev":"00","kind":"query","event_ti')
    with serving(agora_bin, config, tmp_path / "kill-2.log") as server:
        with FlightSession(server, ADMIN) as admin:
            audit = admin.query(
                f"SELECT status, sql FROM system.audit_log WHERE sql LIKE '%killed-{tag}%' AND kind = 'query'"
            ).to_pylist()
    statuses = [r["status"] for r in audit if "system.audit_log" not in r["sql"]]
    assert "started" in statuses, audit
    torn = audit_file(config).with_name("audit.jsonl.torn")
    assert torn.read_text().startswith('{"seq":99999'), "the torn tail is kept aside"
    lines = audit_file(config).read_text().splitlines()
    assert all(json.loads(line) for line in lines), "every line is a whole record"
    assert any(json.loads(line)["kind"] == "repair" for line in lines)
    code, out = verify(agora_bin, config)
    assert code == 0 and "audit chain intact" in out, out


def test_verify_finds_an_edited_or_deleted_line(agora_bin, mesh_config, tmp_path):
    config = derived_config(mesh_config, "audit-tamper")
    with serving(agora_bin, config, tmp_path / "tamper.log") as server:
        with FlightSession(server, ANALYST) as analyst:
            for i in range(4):
                analyst.query(f"SELECT {i} AS i")
    path = audit_file(config)
    original = path.read_text().splitlines()
    assert len(original) >= 8
    code, out = verify(agora_bin, config)
    assert code == 0, out

    edited = list(original)
    edited[3] = edited[3].replace('"user":"analyst"', '"user":"someone"')
    assert edited[3] != original[3]
    path.write_text("\n".join(edited) + "\n")
    code, out = verify(agora_bin, config)
    assert code == 1 and "BROKEN" in out and f"{path}:5:" in out, out

    deleted = original[:4] + original[5:]
    path.write_text("\n".join(deleted) + "\n")
    code, out = verify(agora_bin, config)
    assert code == 1 and "missing" in out, out

    path.write_text("\n".join(original) + "\n")
    assert verify(agora_bin, config)[0] == 0


def test_a_flood_of_huge_denied_queries_keeps_other_users_records(agora_bin, mesh_config, tmp_path):
    # A small log (3 files of 100 kB) that one flood could fill many times
    # over, and a quota of 150 kB of records per user per minute.
    audit = {"max_bytes": 100_000, "keep": 2, "quota_bytes_per_minute": 150_000}
    config = derived_config(mesh_config, "audit-flood", audit=audit)
    tag = uuid.uuid4().hex[:8]
    with serving(agora_bin, config, tmp_path / "flood.log") as server:
        with FlightSession(server, ADMIN) as admin, FlightSession(server, ANALYST) as mallory:
            admin.query(f"SELECT 1 AS one /* admin-{tag} */")
            huge = f"SELECT * FROM finance.secret /* flood-{tag} {'x' * 100_000} */"
            codes = []
            deadline = time.monotonic() + 60
            for _ in range(300):
                if time.monotonic() > deadline:
                    break
                codes.append(refusal(lambda: mallory.query(huge, timeout=30))[0])
            assert "RESOURCE_EXHAUSTED" in codes, codes[-5:]
            first_refused = codes.index("RESOURCE_EXHAUSTED")
            assert 10 <= first_refused <= 100, f"the quota struck after {first_refused} requests"
            assert set(codes[first_refused:]) == {"RESOURCE_EXHAUSTED"}
            # Listings count against the same user, not against the address
            # that other users log in from.
            for _ in range(600):
                try:
                    mallory.command(pb_any("CommandGetSqlInfo", b""))
                except Exception as error:  # noqa: BLE001 - classified below
                    assert grpc_code(error) == "RESOURCE_EXHAUSTED", error
                    break
            else:
                pytest.fail("600 listings over the quota were all served")
            # Another user is not affected (not even a new login from the same
            # address), and the admin's record is still there.
            assert admin.query("SELECT 2 AS two").to_pylist() == [{"two": 2}]
            with FlightSession(server, ADMIN) as again:
                assert again.query("SELECT 3 AS three").to_pylist() == [{"three": 3}]
            kept = admin.query(
                f"SELECT status FROM system.audit_log WHERE sql LIKE '%admin-{tag}%' AND sql NOT LIKE '%audit_log%'"
            ).to_pylist()
            assert [r["status"] for r in kept] == ["planned", "ok"], "GetFlightInfo, then DoGet"
    rows = records(config)
    over = [r for r in rows if r["status"] == "over_quota"]
    assert over and len(over) <= 12, f"refusals are recorded sparsely: {len(over)}"
    assert "requests refused so far" in over[-1]["reason"]
    flood = [r for r in rows if r["user"] == "analyst" and r["kind"] == "query"]
    assert sum(len(json.dumps(r)) for r in flood) < 250_000
    code, out = verify(agora_bin, config)
    assert code == 0, out


def test_owners_see_only_their_domains_part(agora_bin, mesh_config, tmp_path):
    token = "crm-owner-token-" + uuid.uuid4().hex
    token_file = tmp_path / "crm-token"
    token_file.write_text(token)
    owner = {"name": "crm-bot", "token_file": str(token_file), "groups": ["crm-team"]}
    config = derived_config(mesh_config, "audit-owners", auth={"service_tokens": [owner]})
    tag = uuid.uuid4().hex[:8]
    with serving(agora_bin, config, tmp_path / "owners.log") as server:
        with FlightSession(server, ADMIN) as admin:
            admin.query(
                "SELECT count(*) AS n FROM customers.customer c JOIN sales.orders o ON c.c_custkey = o.o_custkey "
                f"WHERE o.o_totalprice > 12345.5 /* cross-{tag} */"
            )
            admin.query(f"SELECT count(*) AS n FROM customers.nation /* own-{tag} */")
            admin.query(f"SELECT count(*) AS n FROM sales.orders /* foreign-{tag} */")
        with FlightSession(server, header=(b"authorization", f"Bearer {token}".encode())) as crm:
            seen = crm.query(
                "SELECT sql, sql_sha256, products, columns, status FROM system.audit_log "
                "WHERE kind = 'query' AND status = 'ok'"
            ).to_pylist()
    text = json.dumps(seen)
    own = [r for r in seen if r["sql"] and f"own-{tag}" in r["sql"]]
    assert len(own) == 1 and own[0]["products"] == ["customers.nation"], seen
    assert f"foreign-{tag}" not in text, "a request that read only other domains is not shown"
    cross = [r for r in seen if r["products"] == ["customers.customer"]]
    assert len(cross) == 1, seen
    assert cross[0]["sql"] is None and cross[0]["sql_sha256"] is None, "the statement names another domain's data"
    assert all(c.startswith("customers.") for c in cross[0]["columns"]), cross
    assert "sales." not in text and "12345.5" not in text, text


def test_refused_and_undecodable_requests_are_recorded_too(agora_bin, mesh_config, tmp_path):
    import pyarrow.flight as flight

    config = derived_config(mesh_config, "audit-refused")
    with serving(agora_bin, config, tmp_path / "refused.log") as server:
        with FlightSession(server, ANALYST) as analyst:
            attempts = {
                "a forged ticket": lambda: analyst.fetch(pb_any("TicketStatementQuery", pb_bytes(1, b"forged"))),
                "an unknown prepared statement": lambda: analyst.info(
                    pb_any("CommandPreparedStatementQuery", pb_bytes(1, bytes(16)))
                ),
                "a command that does not decode": lambda: analyst.info(pb_any("CommandStatementQuery", b"\xff\xff")),
                # An action Agora does not implement.
                "an unknown action": lambda: list(
                    analyst.client.do_action(flight.Action("NoSuchAction", b""), analyst.options())
                ),
            }
            for what, call in attempts.items():
                before = len(records(config))
                with pytest.raises(Exception) as refused:  # pyarrow maps codes onto several classes
                    call()
                assert grpc_code(refused.value) in ("INVALID_ARGUMENT", "NOT_FOUND", "UNIMPLEMENTED"), refused.value
                new = wait_for(lambda: records(config)[before:], what=f"a record of {what}")
                assert new[-1]["kind"] == "rpc" and new[-1]["user"] == "analyst", (what, new)
                assert new[-1]["status"] in ("denied", "failed") and (new[-1]["reason"] or new[-1]["error"]), new
    code, out = verify(agora_bin, config)
    assert code == 0, out
