"""Resource limits: one user, one query or one client cannot take the server.

Each test starts a server of its own on the demo mesh with a `limits:` section
(or `auth:` keys) set for what it attacks, and stops it however the test ends:

- isolation: a deliberately expensive query (a non-equi self-join of
  lineitem, ~60k x 60k rows) runs on the query runtime; meanwhile, and after
  its client is killed, another client's Handshake and `SELECT 1` answer at
  once, and the abandoned query stops using CPU;
- `statement_timeout_seconds` stops that query with DEADLINE_EXCEEDED;
- `max_queries_per_principal` + `queue_timeout_seconds`: a user running one
  query cannot start a second, another user can;
- `memory_limit_bytes`: a sort bigger than the pool spills and still answers
  correctly; with `max_spill_bytes` tiny it fails with RESOURCE_EXHAUSTED;
- `max_result_rows` (and its per-group override);
- `auth.max_failed_logins`: a guessed user is locked out, others are not, and a
  flood of wrong passwords does not slow a logged-in user's queries;
- `handshake_timeout_seconds` and `max_connections_per_address`: silent and
  surplus TCP connections are closed.

All clients connect from 127.0.0.1, so the per-address login lockout would
lock every client out: the login tests never run on a server another test uses.
Every wait is bounded in count and in time; background clients are processes
(killing one is a real disconnect) or threads joined with a timeout.
"""

import os
import re
import select
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import adbc_driver_manager
import pyarrow.flight as flight
import pytest

from conftest import (ADMIN, ANALYST, FlightSession, connect, derived_config, grpc_code, refusal, serving,
                      statement_command)

# A non-equi join of lineitem with itself: a nested-loop join of ~60k x 60k
# rows, minutes of work at the demo's scale 0.01. Only a limit or a
# disconnect ends it within a test.
EXPENSIVE = "SELECT count(*) AS n FROM sales.lineitem a JOIN sales.lineitem b ON a.l_orderkey < b.l_orderkey"
# Eight copies of lineitem's narrow columns (~480,000 rows at scale 0.01):
# about 25 MB to sort, against a 64 MiB pool of which each of the two sort
# partitions may hold under half. (Much smaller pools fail in DataFusion's
# final merge, which cannot spill, rather than in the sort.)
COPIES = 8
BIG_SORT = (
    "SELECT l_orderkey, l_linenumber, l_comment, n FROM sales.lineitem, "
    "(VALUES (1), (2), (3), (4), (5), (6), (7), (8)) AS copies(n) ORDER BY l_comment, n"
)
SMALL_MEMORY = 64 * 1024 * 1024
# A small query that reads a product (`SELECT 1` reads nothing and has a lane
# of its own, outside the per-principal quota).
NATIONS = "SELECT count(*) AS n FROM customers.nation"


@contextmanager
def limited_server(agora_bin, mesh_config, tmp_path, name, limits=None, auth=None):
    config = derived_config(mesh_config, name, limits=limits, auth=auth)
    with serving(agora_bin, config, tmp_path / f"{name}.log") as started:
        yield started




def timed(call):
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_cores(pid, seconds=1.0):
    """Cores the process kept busy over the next `seconds`."""
    start, wall = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - start) / (time.monotonic() - wall)


def goes_quiet(pid, within=30.0):
    """Whether the process uses (almost) no CPU for one second within `within`
    seconds. A cancelled query stops at its next await point; a nested-loop
    join reaches one after joining one probe batch with the whole build side,
    which takes seconds in the debug build the tests run (less in a release
    build)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if busy_cores(pid) < 0.3:
            return True
    return False


def select_one(session, timeout=20.0):
    return session.query("SELECT 1 AS one", timeout=timeout).to_pylist()


# The expensive query's client: a process of its own, given a bearer token so
# that it needs no password check. It says "streaming" once GetFlightInfo has
# answered and DoGet is being sent.
EXPENSIVE_CLIENT = r"""
import sys
import pyarrow.flight as flight
uri, token, command = sys.argv[1], sys.argv[2].encode(), bytes.fromhex(sys.argv[3])
client = flight.FlightClient(uri)
options = flight.FlightCallOptions(headers=[(b"authorization", token)], timeout=600)
info = client.get_flight_info(flight.FlightDescriptor.for_command(command), options)
print("streaming", flush=True)
table = client.do_get(info.endpoints[0].ticket, options).read_all()
print("finished", table.num_rows, flush=True)
"""


class ExpensiveClient:
    """Runs EXPENSIVE in a client process; killing it disconnects the client."""

    def __init__(self, server, header, sql=EXPENSIVE):
        self.process = subprocess.Popen(
            [sys.executable, "-c", EXPENSIVE_CLIENT, server["uri"], header[1].decode(), statement_command(sql).hex()],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_streaming(self, timeout=60.0):
        deadline = time.monotonic() + timeout
        lines = []
        while time.monotonic() < deadline and len(lines) < 10:
            ready, _, _ = select.select([self.process.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            line = self.process.stdout.readline()
            if not line:  # the client exited
                break
            lines.append(line)
            if line.strip() == "streaming":
                return
        self.kill()
        pytest.fail(f"the expensive query's client did not start streaming: {lines} {self.process.stderr.read()[-2000:]}")

    def running(self):
        return self.process.poll() is None

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()
        self.process.stdout.close()
        self.process.stderr.close()


# --- isolation and time -------------------------------------------------------


def handshake_time(server, user=ANALYST):
    start = time.monotonic()
    session = FlightSession(server, user, timeout=20)
    return session, time.monotonic() - start


def assert_responsive(server, baseline):
    """A new client logs in and runs `SELECT 1` at once. The 1 s budget is for
    waiting; the Handshake's own password check (argon2, tens of milliseconds in
    a release build, more in a debug build) is measured on the idle server
    first and allowed on top."""
    session, handshake = handshake_time(server)
    with session:
        rows, elapsed = timed(lambda: select_one(session))
    assert rows == [{"one": 1}]
    assert elapsed < 1.0, f"SELECT 1 took {elapsed:.2f} s while an expensive query ran"
    assert handshake < 1.0 + 2 * baseline, f"a Handshake took {handshake:.2f} s (idle: {baseline:.2f} s)"


def test_an_expensive_query_does_not_stall_other_clients(agora_bin, mesh_config, tmp_path):
    with limited_server(agora_bin, mesh_config, tmp_path, "limits-isolation") as server:
        pid = server["process"].pid
        baseline = 10.0
        for _ in range(2):
            session, elapsed = handshake_time(server)
            session.close()
            baseline = min(baseline, elapsed)
        with FlightSession(server, ADMIN) as admin:
            with ExpensiveClient(server, admin.header) as heavy:
                heavy.wait_streaming()
                time.sleep(0.5)
                load = busy_cores(pid)
                assert load > 0.5, f"the expensive query kept only {load:.2f} cores busy: it is not running"
                for _ in range(3):
                    assert_responsive(server, baseline)
                    time.sleep(0.2)
                assert heavy.running(), "the expensive query ended early: it cannot show isolation"
                heavy.kill()  # the client goes away mid-query
                assert_responsive(server, baseline)
            assert goes_quiet(pid), "the server kept working on the query of a client that went away"
            assert select_one(admin) == [{"one": 1}]


@pytest.fixture(scope="module")
def bounded(agora_bin, mesh_config, tmp_path_factory):
    """statement_timeout_seconds 3 and max_result_rows 10, analysts allowed more rows."""
    limits = {
        "statement_timeout_seconds": 3,
        "max_result_rows": 10,
        "groups": {"analysts": {"max_result_rows": 100000}},
    }
    with limited_server(agora_bin, mesh_config, tmp_path_factory.mktemp("bounded"), "limits-bounded", limits) as server:
        yield server


def test_statement_timeout_stops_an_expensive_query(bounded):
    with FlightSession(bounded, ADMIN) as admin:
        start = time.monotonic()
        code, message = refusal(lambda: admin.query(EXPENSIVE, timeout=60))
        elapsed = time.monotonic() - start
        assert code == "DEADLINE_EXCEEDED", message
        assert "limits.statement_timeout_seconds" in message, message
        assert 2.5 <= elapsed <= 20, f"the 3 s statement timeout struck after {elapsed:.1f} s"
        # The query is stopped, not merely abandoned.
        assert goes_quiet(bounded["process"].pid), "the server kept working on the timed-out query"
        assert select_one(admin) == [{"one": 1}]


def test_result_rows_are_capped(bounded, duck):
    orders = duck.execute("SELECT count(*) FROM sales.orders").fetchone()[0]
    assert orders > 10
    with FlightSession(bounded, ADMIN) as admin:
        code, message = refusal(lambda: admin.query("SELECT * FROM sales.orders"))
        assert code == "RESOURCE_EXHAUSTED" and "limits.max_result_rows" in message, message
        code, message = refusal(lambda: admin.query("SELECT * FROM sales.orders LIMIT 11"))
        assert code == "RESOURCE_EXHAUSTED" and "limits.max_result_rows" in message, message
        assert admin.query("SELECT * FROM sales.orders LIMIT 5").num_rows == 5
        assert admin.query("SELECT * FROM sales.orders LIMIT 10").num_rows == 10
        assert admin.query("SELECT count(*) AS n FROM sales.orders").column("n").to_pylist() == [orders]
    # The analysts' group has a larger allowance.
    with FlightSession(bounded, ANALYST) as analyst:
        assert analyst.query("SELECT o_orderkey FROM sales.orders").num_rows == orders


# --- concurrency --------------------------------------------------------------


def test_a_principal_running_its_quota_waits_others_do_not(agora_bin, mesh_config, tmp_path):
    limits = {"max_queries_per_principal": 1, "queue_timeout_seconds": 1}
    with limited_server(agora_bin, mesh_config, tmp_path, "limits-quota", limits) as server:
        with FlightSession(server, ADMIN) as admin, FlightSession(server, ANALYST) as analyst:
            with ExpensiveClient(server, admin.header) as heavy:
                heavy.wait_streaming()
                time.sleep(1.0)
                assert heavy.running()
                # The admin's second query waits for the admin's only slot, then gives up.
                with FlightSession(server, ADMIN, header=admin.header) as second:
                    start = time.monotonic()
                    code, message = refusal(lambda: second.query(NATIONS, timeout=20))
                    elapsed = time.monotonic() - start
                    # A statement that reads nothing has a lane of its own.
                    assert select_one(second) == [{"one": 1}]
                assert code == "RESOURCE_EXHAUSTED", message
                assert 0.8 <= elapsed <= 5, f"the 1 s queue timeout struck after {elapsed:.1f} s"
                # Another user is not affected.
                rows, elapsed = timed(lambda: analyst.query(NATIONS, timeout=20).to_pylist())
                assert rows == [{"n": 25}] and elapsed < 10.0, (rows, elapsed)  # answered, not queued
                assert heavy.running(), "the expensive query ended early"
            # Its client gone, the query gives its slot back.
            deadline = time.monotonic() + 8
            for _ in range(8):
                try:
                    assert admin.query(NATIONS, timeout=10).to_pylist() == [{"n": 25}]
                    break
                except Exception as error:
                    if grpc_code(error) != "RESOURCE_EXHAUSTED" or time.monotonic() > deadline:
                        raise
            else:
                pytest.fail("the admin's slot never came back after the client went away")


# --- memory and disk ------------------------------------------------------------


def test_a_sort_over_the_memory_limit_spills_and_answers(agora_bin, mesh_config, tmp_path, duck):
    spill = tmp_path / "spill"
    spill.mkdir()
    limits = {"memory_limit_bytes": SMALL_MEMORY, "spill_dir": str(spill)}
    rows = duck.execute("SELECT count(*) FROM sales.lineitem").fetchone()[0]
    with limited_server(agora_bin, mesh_config, tmp_path, "limits-spill", limits) as server:
        with FlightSession(server, ADMIN) as admin:
            table = admin.query(BIG_SORT, timeout=180)
            assert table.num_rows == rows * COPIES
            comments = table.column("l_comment").to_pylist()
            assert comments == sorted(comments)
            plan = admin.query("EXPLAIN ANALYZE " + BIG_SORT, timeout=180)
            text = "\n".join(str(v) for v in plan.column("plan").to_pylist())
            spills = [int(n) for n in re.findall(r"spill_count=(\d+)", text)]
            assert spills and max(spills) > 0, f"no operator spilled under a 64 MiB pool:\n{text[:4000]}"


def test_spilling_past_the_spill_cap_fails_cleanly(agora_bin, mesh_config, tmp_path, duck):
    limits = {"memory_limit_bytes": SMALL_MEMORY, "max_spill_bytes": 1024}
    orders = duck.execute("SELECT count(*) FROM sales.orders").fetchone()[0]
    with limited_server(agora_bin, mesh_config, tmp_path, "limits-spill-cap", limits) as server:
        with FlightSession(server, ADMIN) as admin:
            code, message = refusal(lambda: admin.query(BIG_SORT, timeout=180))
            assert code == "RESOURCE_EXHAUSTED", message
            assert server["process"].poll() is None
            assert admin.query("SELECT count(*) AS n FROM sales.orders").column("n").to_pylist() == [orders]
        with FlightSession(server, ANALYST) as analyst:
            assert select_one(analyst) == [{"one": 1}]


# --- logins ------------------------------------------------------------------------


def login_refusal(server, user):
    return refusal(lambda: FlightSession(server, user, timeout=30).close())


def wait_for_log(server, predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        lines = server["log"].read_text(errors="replace").splitlines()
        if any(predicate(line) for line in lines):
            return
        if time.monotonic() > deadline:
            pytest.fail("no such log line; the log ends with:\n" + "\n".join(lines[-30:]))
        time.sleep(0.1)


def test_wrong_passwords_lock_out_that_user_only(agora_bin, mesh_config, tmp_path):
    auth = {"max_failed_logins": 3, "lockout_seconds": 60}
    with limited_server(agora_bin, mesh_config, tmp_path, "limits-lockout", auth=auth) as server:
        codes = [login_refusal(server, (ANALYST[0], f"wrong-{i}"))[0] for i in range(3)]
        assert codes[:2] == ["UNAUTHENTICATED", "UNAUTHENTICATED"], codes
        assert codes[2] in {"UNAUTHENTICATED", "RESOURCE_EXHAUSTED"}, codes
        # Locked out: even the right password is not checked now.
        code, message = login_refusal(server, ANALYST)
        assert code == "RESOURCE_EXHAUSTED", message
        assert re.search(r"retry in \d+", message), message
        # ADBC users get the same answer.
        with pytest.raises(adbc_driver_manager.Error) as info:
            with connect(server, ANALYST) as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
        assert grpc_code(info.value) == "RESOURCE_EXHAUSTED", str(info.value)
        # Another user still logs in.
        with FlightSession(server, ADMIN) as admin:
            assert select_one(admin) == [{"one": 1}]
        wait_for_log(server, lambda line: "analyst" in line and "lock" in line.lower())


def test_a_password_flood_does_not_slow_logged_in_users(agora_bin, mesh_config, tmp_path):
    auth = {"max_failed_logins": 3, "lockout_seconds": 60}
    with limited_server(agora_bin, mesh_config, tmp_path, "limits-flood", auth=auth) as server:
        with FlightSession(server, ADMIN) as admin:  # logged in before the flood
            assert select_one(admin) == [{"one": 1}]
            stop = time.monotonic() + 3.0
            answers = []
            lock = threading.Lock()

            def guess(i):
                # Mostly one user's password, some unknown names too.
                user = f"nobody-{i}" if i % 4 == 0 else ANALYST[0]
                client = flight.FlightClient(server["uri"])
                try:
                    for attempt in range(50):
                        if time.monotonic() > stop:
                            break
                        try:
                            client.authenticate_basic_token(user, f"guess-{attempt}", flight.FlightCallOptions(timeout=30))
                            answer = "LOGGED IN"
                        except Exception as error:
                            answer = grpc_code(error) or repr(error)
                        with lock:
                            answers.append(answer)
                finally:
                    client.close()

            threads = [threading.Thread(target=guess, args=(i,), daemon=True) for i in range(24)]
            for t in threads:
                t.start()
            latencies = []
            deadline = time.monotonic() + 40
            while any(t.is_alive() for t in threads) and time.monotonic() < deadline and len(latencies) < 100:
                rows, elapsed = timed(lambda: select_one(admin, timeout=10))
                assert rows == [{"one": 1}]
                latencies.append(elapsed)
                time.sleep(0.1)
            for t in threads:
                t.join(timeout=60)
            assert not any(t.is_alive() for t in threads), "password guesses were still running after a minute"
            assert len(latencies) >= 3, latencies
            assert max(latencies) < 1.0, f"SELECT 1 took up to {max(latencies):.2f} s during the flood: {latencies}"
            # Wrong passwords are refused, or not even checked any more (locked
            # out, or queued behind the bounded password checks).
            assert answers and set(answers) <= {"UNAUTHENTICATED", "RESOURCE_EXHAUSTED", "UNAVAILABLE"}, set(answers)
            assert "RESOURCE_EXHAUSTED" in answers, "the guesser was never locked out"
            assert select_one(admin) == [{"one": 1}]


# --- connections --------------------------------------------------------------------


def closed_at(sock, deadline):
    """When the server closed `sock` (its end of file or a reset), or None if
    it was still open at `deadline`. Bytes the server sends are read and ignored."""
    for _ in range(10_000):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return None
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            return time.monotonic()
        if not data:
            return time.monotonic()
    return None


def is_open(sock):
    sock.settimeout(0.0)
    try:
        data = sock.recv(65536)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return bool(data)


def test_silent_connections_are_closed(agora_bin, mesh_config, tmp_path):
    limits = {"handshake_timeout_seconds": 1}
    with limited_server(agora_bin, mesh_config, tmp_path, "limits-silent", limits) as server:
        sockets = [socket.create_connection(("127.0.0.1", server["port"]), timeout=5) for _ in range(4)]
        start = time.monotonic()
        try:
            for sock in sockets:
                closed = closed_at(sock, start + 6)
                assert closed is not None, "a connection that sent nothing was still open after 6 s"
                assert closed - start >= 0.5, f"closed after {closed - start:.2f} s: before its 1 s to speak"
        finally:
            for sock in sockets:
                sock.close()
        with FlightSession(server, ADMIN) as admin:
            assert select_one(admin) == [{"one": 1}]


def test_connections_per_address_are_capped(agora_bin, mesh_config, tmp_path):
    limits = {"max_connections_per_address": 8, "handshake_timeout_seconds": 30}
    with limited_server(agora_bin, mesh_config, tmp_path, "limits-connections", limits) as server:
        time.sleep(0.5)  # the start-up probe's connection is gone
        address = ("127.0.0.1", server["port"])
        idle = []
        try:
            for _ in range(8):
                idle.append(socket.create_connection(address, timeout=5))
            time.sleep(0.3)
            assert all(is_open(s) for s in idle), "a connection within the limit was closed"
            start = time.monotonic()
            try:
                extra = socket.create_connection(address, timeout=5)
            except OSError:
                pass  # refused outright: closed too
            else:
                try:
                    closed = closed_at(extra, start + 3)
                finally:
                    extra.close()
                assert closed is not None and closed - start < 2, "the 9th connection from one address was kept open"
            assert all(is_open(s) for s in idle), "the idle connections within the limit were closed"
        finally:
            for sock in idle:
                sock.close()
        # Their slots are given back: a real client connects.
        deadline = time.monotonic() + 5
        for attempt in range(10):
            try:
                with FlightSession(server, ADMIN, timeout=10) as admin:
                    assert select_one(admin) == [{"one": 1}]
                break
            except Exception:
                if time.monotonic() > deadline or attempt == 9:
                    raise
                time.sleep(0.3)
