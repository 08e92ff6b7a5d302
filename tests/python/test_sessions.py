"""Flight SQL sessions: SetSessionOptions / GetSessionOptions / CloseSession,
through the ADBC driver (its current catalog and schema) and through raw
pyarrow.flight actions with a cookie jar, as the JDBC driver keeps one."""

import time

import pyarrow.flight as flight
import pytest

from conftest import ADMIN, ANALYST, pb_bytes, pb_decode, refusal

COOKIE = "arrow_flight_session_id"


class CookieJar(flight.ClientMiddlewareFactory):
    """Keeps the cookies a server sets and sends them back, as the Go and
    Java Flight clients' cookie middleware do."""

    def __init__(self):
        self.cookies = {}

    def start_call(self, info):
        return _CookieMiddleware(self)


class _CookieMiddleware(flight.ClientMiddleware):
    def __init__(self, jar):
        self.jar = jar

    def sending_headers(self):
        if not self.jar.cookies:
            return {}
        return {"cookie": "; ".join(f"{k}={v}" for k, v in self.jar.cookies.items())}

    def received_headers(self, headers):
        for value in headers.get("set-cookie", []):
            value = value.decode() if isinstance(value, bytes) else value
            pair, _, attributes = value.partition(";")
            name, _, cookie = pair.strip().partition("=")
            if "max-age=0" in attributes.lower().replace(" ", ""):
                self.jar.cookies.pop(name, None)
            else:
                self.jar.cookies[name] = cookie


def pb_string_option(name, value):
    """A map entry of SetSessionOptionsRequest: name → SessionOptionValue{string_value}."""
    option = b"" if value is None else pb_bytes(1, value)
    return pb_bytes(1, pb_bytes(1, name) + pb_bytes(2, option))


def string_map(body):
    """{name: string value} of a map<string, SessionOptionValue> field 1."""
    options = {}
    for entry in pb_decode(body).get(1, []):
        fields = pb_decode(entry)
        value = pb_decode(fields.get(2, [b""])[0])
        options[fields[1][0].decode()] = value[1][0].decode() if 1 in value else None
    return options


def errors_of(body):
    """{name: ErrorValue} of a SetSessionOptionsResult."""
    out = {}
    for entry in pb_decode(body).get(1, []):
        fields = pb_decode(entry)
        out[fields[1][0].decode()] = pb_decode(fields.get(2, [b""])[0]).get(1, [0])[0]
    return out


class Client:
    """A pyarrow.flight client with its own cookie jar, logged in as `user`."""

    def __init__(self, server, user):
        self.jar = CookieJar()
        self.client = flight.FlightClient(server["uri"], middleware=[self.jar])
        self.options = flight.FlightCallOptions(headers=[self.client.authenticate_basic_token(*user)])

    def action(self, name, body=b""):
        results = list(self.client.do_action(flight.Action(name, body), self.options))
        assert len(results) == 1, results
        return results[0].body.to_pybytes()

    def set(self, **options):
        body = b"".join(pb_string_option(k, v) for k, v in options.items())
        return errors_of(self.action("SetSessionOptions", body))

    def get(self):
        return string_map(self.action("GetSessionOptions"))

    def query(self, sql):
        from conftest import statement_command

        descriptor = flight.FlightDescriptor.for_command(statement_command(sql))
        info = self.client.get_flight_info(descriptor, self.options)
        return self.client.do_get(info.endpoints[0].ticket, self.options).read_all()

    def close(self):
        self.client.close()


def test_a_session_schema_resolves_unqualified_names_for_its_owner_only(server):
    analyst = Client(server, ANALYST)
    try:
        refused = refusal(lambda: analyst.query("SELECT count(*) AS n FROM nation"))
        assert "must be qualified" in refused[1] and "customers.nation" in refused[1], refused
        # No session yet: only the catalog applies, and there is nothing to close.
        assert analyst.get() == {"catalog": "mesh"}
        assert refusal(lambda: analyst.action("CloseSession"))[0] == "NOT_FOUND"

        assert analyst.set(schema="customers", catalog="mesh") == {}
        assert COOKIE in analyst.jar.cookies, "SetSessionOptions set no session cookie"
        assert analyst.get() == {"catalog": "mesh", "schema": "customers"}
        tag = f"bare-{time.time_ns()}"
        assert analyst.query(f"SELECT count(*) AS n FROM nation -- {tag}").column("n").to_pylist() == [25]
        # Policies apply as to the qualified name (the analyst sees Europe only).
        bare = analyst.query("SELECT count(*) AS n FROM customer").column("n").to_pylist()
        qualified = analyst.query("SELECT count(*) AS n FROM customers.customer").column("n").to_pylist()
        assert bare == qualified
        # A table function keeps its meaning; a CTE named like a product is refused.
        assert analyst.query("SELECT count(*) AS n FROM range(3)").column("n").to_pylist() == [3]
        assert analyst.query("WITH nation AS (SELECT 1 AS x) SELECT x FROM nation").column("x").to_pylist() == [1]
        ambiguous = "SELECT count(*) AS n FROM (WITH nation AS (SELECT 1 AS x) SELECT x FROM nation) a, nation b"
        assert "names both a CTE" in refusal(lambda: analyst.query(ambiguous))[1]

        # The audit record names the product read, as for a qualified name.
        admin = Client(server, ADMIN)
        try:
            audited = admin.query(
                f"SELECT products FROM system.audit_log WHERE sql LIKE '%{tag}%' AND kind = 'query' AND status = 'ok' "
                "AND sql NOT LIKE '%audit_log%'"
            ).to_pylist()
        finally:
            admin.close()
        assert audited and all(r["products"] == ["customers.nation"] for r in audited), audited

        # Refused options come back by name; the session keeps its schema.
        errors = analyst.set(schema="hr", catalog="other", search_path="sales")
        assert errors == {"schema": 2, "catalog": 2, "search_path": 1}, errors  # INVALID_VALUE, INVALID_NAME
        assert analyst.get()["schema"] == "customers"

        # Another principal (even an admin) holding the analyst's cookie has
        # no session: it can neither read, use nor close hers.
        other = Client(server, ADMIN)
        try:
            other.jar.cookies = dict(analyst.jar.cookies)
            assert other.get() == {"catalog": "mesh"}
            assert "must be qualified" in refusal(lambda: other.query("SELECT * FROM nation"))[1]
            assert refusal(lambda: other.action("CloseSession"))[0] == "NOT_FOUND"
        finally:
            other.close()
        assert analyst.get()["schema"] == "customers", "another principal changed the analyst's session"

        # Unsetting the schema, then closing the session.
        assert analyst.set(schema=None) == {}
        assert analyst.get() == {"catalog": "mesh"}
        assert analyst.set(schema="sales") == {}
        closed_cookies = dict(analyst.jar.cookies)
        status = pb_decode(analyst.action("CloseSession"))
        assert status == {1: [1]}, status  # CLOSED
        assert COOKIE not in analyst.jar.cookies, "CloseSession did not expire the cookie"
        # The server forgot it: the old cookie names no session any more.
        analyst.jar.cookies = closed_cookies
        assert refusal(lambda: analyst.action("CloseSession"))[0] == "NOT_FOUND"
        assert analyst.get() == {"catalog": "mesh"}
        assert "must be qualified" in refusal(lambda: analyst.query("SELECT * FROM orders"))[1]
    finally:
        analyst.close()


def test_session_actions_are_listed_refuse_bad_bodies_and_are_audited(server):
    analyst = Client(server, ANALYST)
    try:
        listed = {a.type for a in analyst.client.list_actions(analyst.options)}
        assert {"SetSessionOptions", "GetSessionOptions", "CloseSession", "CancelFlightInfo"} <= listed, listed
        code, message = refusal(lambda: analyst.action("SetSessionOptions", b"\xff\xff\xff"))
        assert code == "INVALID_ARGUMENT" and "SetSessionOptionsRequest" in message, message
        analyst.set(schema="sales")
    finally:
        analyst.close()
    anonymous = flight.FlightClient(server["uri"])
    code, _ = refusal(lambda: list(anonymous.do_action(flight.Action("GetSessionOptions", b""))))
    assert code == "UNAUTHENTICATED", code
    anonymous.close()
    admin = Client(server, ADMIN)
    try:
        rows = admin.query(
            "SELECT action, status FROM system.audit_log WHERE \"user\" = 'analyst' AND action LIKE '%Session%'"
        ).to_pylist()
    finally:
        admin.close()
    actions = {(r["action"], r["status"]) for r in rows}
    assert ("SetSessionOptions", "ok") in actions, rows


def test_the_adbc_driver_sets_and_reads_its_current_schema(server):
    """ADBC's current catalog/schema are session options; its cookie
    middleware keeps the session."""
    import adbc_driver_flightsql.dbapi as flightsql
    from adbc_driver_flightsql import DatabaseOptions

    kwargs = {"username": ANALYST[0], "password": ANALYST[1], DatabaseOptions.WITH_COOKIE_MIDDLEWARE.value: "true"}
    with flightsql.connect(server["uri"], db_kwargs=kwargs, autocommit=True) as conn:
        conn.adbc_connection.set_options(**{"adbc.connection.db_schema": "customers"})
        assert conn.adbc_current_db_schema == "customers"
        assert conn.adbc_current_catalog == "mesh"
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM nation")
            assert cur.fetchone() == (25,)
        with pytest.raises(Exception) as refused:
            conn.adbc_connection.set_options(**{"adbc.connection.db_schema": "no_such_domain"})
        assert "INVALID_VALUE" in str(refused.value).upper().replace(" ", "_"), refused.value
        assert conn.adbc_current_db_schema == "customers"
    # A connection of its own starts without a schema.
    with flightsql.connect(server["uri"], db_kwargs=kwargs, autocommit=True) as conn:
        with conn.cursor() as cur, pytest.raises(Exception) as refused:
            cur.execute("SELECT count(*) FROM nation")
        assert "must be qualified" in str(refused.value)


def test_anonymous_clients_cannot_open_sessions(agora_bin, mesh_config, tmp_path):
    """Every anonymous client is the same principal: sessions would be
    shared and evicted among strangers, so they need a login."""
    from conftest import derived_config, serving

    config = derived_config(mesh_config, "anonymous-sessions", auth={"allow_anonymous": True})
    with serving(agora_bin, config, tmp_path / "server.log") as server:
        client = flight.FlightClient(server["uri"])
        try:
            body = pb_string_option("schema", "customers")
            code, message = refusal(lambda: list(client.do_action(flight.Action("SetSessionOptions", body))))
            assert code == "PERMISSION_DENIED" and "login" in message, (code, message)
        finally:
            client.close()
