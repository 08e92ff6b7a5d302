"""The query history: `system.queries`, `CALL cancel_query`, and the one query
id shared by the history, the audit log and the lineage run.

The module's server has a third user, `mallory` (an analyst like `analyst`),
to check what one principal can learn of or do to another's queries.
"""

import json
import re
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import (ADMIN, ANALYST, FlightSession, connect, derived_config, grpc_code, refusal, serving,
                      statement_command, wait_for)

MALLORY = ("mallory", "mallory-demo")
UUID7 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def expensive(marker):
    """A nested-loop join of lineitem with itself: minutes of work, so only a
    cancel ends it within a test. `marker` finds it in the history."""
    return (
        "SELECT count(*) AS n FROM sales.lineitem a JOIN sales.lineitem b "
        f"ON a.l_orderkey < b.l_orderkey WHERE a.l_comment <> '{marker}'"
    )


def history_config(agora_bin, mesh_config, name):
    """The demo mesh with a user `mallory`, and audit, lineage and history
    files of its own (see `derived_config`); returns (config, its directory)."""
    hashed = subprocess.run(
        [agora_bin, "hash-password"], input="mallory-demo", capture_output=True, text=True, check=True
    ).stdout.strip()
    config = derived_config(mesh_config, name)
    text = config.read_text()
    mallory = (
        f'    - name: mallory\n      password_hash: "{hashed}"\n'
        "      groups: [analysts]\n      attributes: { region: EUROPE }\n"
    )
    assert text.count("\n  users:\n") == 1
    text = text.replace("\n  users:\n", "\n  users:\n" + mallory)
    config.write_text(text)
    return config, config.parent


@pytest.fixture(scope="module")
def history_server(agora_bin, mesh_config, tmp_path_factory):
    config, directory = history_config(agora_bin, mesh_config, "history")
    with serving(agora_bin, config, tmp_path_factory.mktemp("history") / "agora.log") as server:
        server["dir"] = directory
        yield server


def queries(server, user, where="true"):
    """Rows of system.queries as `user` sees them, without the listings themselves."""
    with FlightSession(server, user) as session:
        sql = f"SELECT * FROM system.queries WHERE ({where}) AND sql NOT LIKE '%system.queries%'"
        return session.query(sql).to_pylist()






class Background:
    """A query run by `user` in a thread, through the ADBC driver (pyarrow's
    Flight client turns a CANCELLED status into a KeyboardInterrupt of the
    whole process); `error` is what ended it."""

    def __init__(self, server, user, sql):
        self.error = None
        self.result = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(server, user, sql), daemon=True)
        self.thread.start()

    def _run(self, server, user, sql):
        try:
            with connect(server, user) as conn, conn.cursor() as cur:
                cur.execute(sql)
                self.result = cur.fetch_arrow_table()
        except Exception as error:  # noqa: BLE001 - inspected by the test
            self.error = error
        finally:
            self.done.set()


def test_a_running_query_is_listed_then_cancelled_by_its_owner_and_not_by_another_principal(history_server):
    server = history_server
    marker = uuid.uuid4().hex[:12]
    mine = f"sql LIKE '%{marker}%'"
    running = Background(server, ANALYST, expensive(marker))
    try:
        row = wait_for(
            lambda: [q for q in queries(server, ANALYST, mine) if q["state"] == "running"], what="the running query"
        )[0]
        query_id = row["query_id"]
        assert UUID7.fullmatch(query_id), query_id
        assert (row["user"], row["protocol"], row["ended_at"]) == ("analyst", "flight-sql", None)
        assert row["products"] == ["sales.lineitem"]

        # Another principal sees nothing of it, and cannot cancel it: the
        # answer is the one a made-up id gets, apart from the id itself.
        assert queries(server, MALLORY, mine) == []
        with FlightSession(server, MALLORY) as mallory:
            code, message = refusal(lambda: mallory.query(f"CALL cancel_query('{query_id}')"))
            made_up = str(uuid.uuid4())
            code_2, message_2 = refusal(lambda: mallory.query(f"CALL cancel_query('{made_up}')"))
        assert code == code_2 == "NOT_FOUND", (message, message_2)
        assert message.replace(query_id, "ID") == message_2.replace(made_up, "ID")
        time.sleep(0.5)
        assert not running.done.is_set(), "mallory's attempt stopped the query"
        assert [q["state"] for q in queries(server, ANALYST, mine)] == ["running"]

        # Its owner cancels it.
        with FlightSession(server, ANALYST) as analyst:
            answer = analyst.query(f"CALL cancel_query('{query_id}')").to_pylist()
        assert answer == [{"query_id": query_id, "cancelled": True, "state": "cancelled"}]
        assert running.done.wait(30), "the cancelled query did not end"
    finally:
        running.done.wait(300)
    assert grpc_code(running.error) == "CANCELLED", running.error
    assert "cancelled by analyst" in str(running.error)

    (row,) = queries(server, ADMIN, mine)
    assert (row["query_id"], row["state"], row["user"]) == (query_id, "cancelled", "analyst")
    assert "cancelled by analyst" in row["error"]
    assert row["ended_at"] is not None and row["execution_ms"] > 0
    # The audit log has the same query, cancelled.
    audit = [json.loads(line) for line in (server["dir"] / "history-audit" / "audit.jsonl").read_text().splitlines()]
    assert [r["status"] for r in audit if r["query_id"] == query_id] == ["started", "cancelled"]
    # A second cancel finds nothing running.
    with FlightSession(server, ANALYST) as analyst:
        assert refusal(lambda: analyst.query(f"CALL cancel_query('{query_id}')"))[0] == "NOT_FOUND"
        assert analyst.query("SELECT 1 AS one").to_pylist() == [{"one": 1}]


STREAMING_CLIENT = r"""
import base64, sys
sys.path.insert(0, sys.argv[1])
from conftest import FlightSession, statement_command
with FlightSession({"uri": sys.argv[2]}, (sys.argv[3], sys.argv[4])) as session:
    info = session.info(statement_command(sys.argv[5]))
    print(base64.b64encode(info.serialize()).decode(), flush=True)
    try:
        session.fetch(info.endpoints[0].ticket, timeout=300)
    except BaseException as error:  # pyarrow raises a CANCELLED stream as KeyboardInterrupt
        print(type(error).__name__, error, file=sys.stderr)
        sys.exit(3)
"""


def cancel_flight_info(session, info, action="CancelFlightInfo"):
    """The action's result status (CancelFlightInfo: the CancelStatus; the
    older CancelQuery: its CancelResult), sent with pyarrow's raw do_action."""
    from conftest import pb_any, pb_bytes

    if action == "CancelFlightInfo":
        body = pb_bytes(1, info)  # CancelFlightInfoRequest { FlightInfo info = 1 }
    else:  # a Flight SQL action: ActionCancelQueryRequest { bytes info = 1 } in an Any
        body = pb_any("ActionCancelQueryRequest", pb_bytes(1, info))
    results = list(session.client.do_action(session.flight.Action(action, body), session.options()))
    assert len(results) == 1
    data = results[0].body.to_pybytes()
    if action == "CancelQuery":  # Any { string type_url = 1; bytes value = 2 }
        assert data[0] == 0x0A and data[2 + data[1]] == 0x12, data
        data = data[4 + data[1]:]
    assert data[:1] == b"\x08", data  # field 1, the status
    return data[1]


@pytest.mark.parametrize("action", ["CancelFlightInfo", "CancelQuery"])
def test_a_query_is_cancelled_by_its_flight_info_only_by_its_owner(history_server, action):
    """JDBC's Statement.cancel() and other drivers cancel with the FlightInfo
    the query came from. Another principal holding the same FlightInfo gets
    the NOT_FOUND a finished or never-read one gets, and the query runs on."""
    import base64
    import sys

    server = history_server
    marker = uuid.uuid4().hex[:12]
    reader = subprocess.Popen(
        [sys.executable, "-c", STREAMING_CLIENT, str(Path(__file__).parent), server["uri"], *ANALYST, expensive(marker)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        info = base64.b64decode(reader.stdout.readline())
        assert info, reader.stderr.read()
        mine = f"sql LIKE '%{marker}%'"
        wait_for(lambda: [q for q in queries(server, ANALYST, mine) if q["state"] == "running"],
                 what="the running query")
        with FlightSession(server, MALLORY) as mallory:
            code, message = refusal(lambda: cancel_flight_info(mallory, info, action))
        assert code == "NOT_FOUND", message
        time.sleep(0.5)
        assert reader.poll() is None, "mallory's cancel stopped the query"
        with FlightSession(server, ANALYST) as analyst:
            assert cancel_flight_info(analyst, info, action) == 1  # CANCELLED
            assert reader.wait(30) == 3, reader.stderr.read()  # the stream ended with an error
            (row,) = queries(server, ANALYST, mine)
            assert row["state"] == "cancelled" and "cancelled by analyst" in row["error"], row
            # Nothing runs under it any more.
            code, message_2 = refusal(lambda: cancel_flight_info(analyst, info, action))
            assert code == "NOT_FOUND" and message_2 == message, (message, message_2)
            # A body that is not a FlightInfo is refused, and the server answers.
            code, _ = refusal(lambda: cancel_flight_info(analyst, b"\xff\xff not protobuf", action))
            assert code == "INVALID_ARGUMENT"
            assert analyst.query("SELECT 1 AS one").to_pylist() == [{"one": 1}]
    finally:
        reader.kill()
        reader.wait(30)


def test_an_admin_cancels_anyones_query(history_server):
    server = history_server
    marker = uuid.uuid4().hex[:12]
    running = Background(server, MALLORY, expensive(marker))
    try:
        row = wait_for(
            lambda: [q for q in queries(server, ADMIN, f"sql LIKE '%{marker}%'") if q["state"] == "running"],
            what="the running query",
        )[0]
        assert row["user"] == "mallory"
        with FlightSession(server, ADMIN) as admin:
            answer = admin.query(f"CALL cancel_query('{row['query_id']}')").to_pylist()
        assert answer[0]["cancelled"] is True
        assert running.done.wait(30)
    finally:
        running.done.wait(300)
    assert grpc_code(running.error) == "CANCELLED"
    assert "cancelled by admin" in str(running.error)


def test_each_principal_sees_its_own_finished_queries_and_admins_see_all(history_server):
    server = history_server
    marker = uuid.uuid4().hex[:12]
    sql = f"SELECT n_name FROM customers.nation WHERE n_name <> '{marker}'"
    with FlightSession(server, ANALYST) as analyst:
        assert analyst.query(sql).num_rows == 25
    where = f"sql LIKE '%{marker}%'"
    (row,) = queries(server, ADMIN, where)
    assert (row["user"], row["state"], row["rows"], row["error"]) == ("analyst", "finished", 25, None)
    assert row["products"] == ["customers.nation"]
    assert row["bytes"] > 0 and row["ended_at"] >= row["received_at"]
    assert all(isinstance(row[k], int) for k in ["queued_ms", "planning_ms", "execution_ms", "peak_memory_bytes"])
    assert [q["query_id"] for q in queries(server, ANALYST, where)] == [row["query_id"]]
    assert queries(server, MALLORY, where) == []
    # Mallory's own failed statement is hers to see, with its error.
    with FlightSession(server, MALLORY) as mallory:
        refusal(lambda: mallory.query(f"SELECT no_such_column, '{marker}' FROM customers.nation"))
    (failed,) = queries(server, MALLORY, where)
    assert failed["state"] == "failed" and "no_such_column" in failed["error"]


def test_one_id_joins_history_audit_lineage_and_the_clients_trace(history_server):
    import pyarrow.flight as flight

    server = history_server
    marker = uuid.uuid4().hex[:12]
    trace = uuid.uuid4().hex
    headers = [(b"traceparent", f"00-{trace}-00f067aa0ba902b7-01".encode()), (b"x-agora-purpose", b"churn report")]
    with FlightSession(server, ANALYST) as analyst:
        options = flight.FlightCallOptions(headers=[analyst.header, *headers], timeout=60)
        descriptor = flight.FlightDescriptor.for_command(
            statement_command(f"SELECT n_name FROM customers.nation WHERE n_name <> '{marker}'")
        )
        info = analyst.client.get_flight_info(descriptor, options)
        assert analyst.client.do_get(info.endpoints[0].ticket, options).read_all().num_rows == 25
    (row,) = queries(server, ANALYST, f"sql LIKE '%{marker}%'")
    assert (row["trace_id"], row["purpose"]) == (trace, "churn report")
    query_id = row["query_id"]
    directory = server["dir"]
    audit = [json.loads(line) for line in (directory / "history-audit" / "audit.jsonl").read_text().splitlines()]
    assert [r["status"] for r in audit if r["query_id"] == query_id] == ["started", "ok"]
    events = [json.loads(line) for line in (directory / "history-lineage" / "events.jsonl").read_text().splitlines()]
    assert [e["eventType"] for e in events if e["run"]["runId"] == query_id] == ["START", "COMPLETE"]
    # The server's log line of the query carries it too.
    assert re.search(rf"query ended.*query_id={query_id}|query_id={query_id}.*query ended", server["log"].read_text())


def test_cancel_query_refuses_bad_calls_clearly(history_server):
    with FlightSession(history_server, MALLORY) as mallory:
        code, message = refusal(lambda: mallory.query("CALL drop_everything()"))
        assert code == "INVALID_ARGUMENT" and "no procedure 'drop_everything'" in message, message
        code, message = refusal(lambda: mallory.query("CALL cancel_query(42)"))
        assert code == "INVALID_ARGUMENT" and "one argument, the query id as a string" in message, message
        code, message = refusal(lambda: mallory.query(f"CALL cancel_query('{'x' * 5000}')"))
        assert code == "NOT_FOUND" and len(message) < 400, message
        assert mallory.query("SELECT 1 AS one").to_pylist() == [{"one": 1}]


def test_the_history_survives_a_restart(agora_bin, mesh_config, tmp_path):
    config, _ = history_config(agora_bin, mesh_config, "history-restart")
    marker = uuid.uuid4().hex[:12]
    sql = f"SELECT n_name FROM customers.nation WHERE n_name <> '{marker}'"
    with serving(agora_bin, config, tmp_path / "first.log") as server:
        with FlightSession(server, ANALYST) as analyst:
            analyst.query(sql)
        (before,) = queries(server, ANALYST, f"sql = '{sql.replace(chr(39), chr(39) * 2)}'")
    with serving(agora_bin, config, tmp_path / "second.log") as server:
        (after,) = queries(server, ANALYST, f"sql = '{sql.replace(chr(39), chr(39) * 2)}'")
    assert after == before
