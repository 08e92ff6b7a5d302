"""pyarrow.flight: a plain Arrow Flight client (no Flight SQL layer), with
the Flight SQL commands encoded by hand as generic Flight tools do. Prepared
statements need a Flight SQL client library and are not part of this row."""

import pyarrow.flight as flight

from scenario import BAD, MILLION, PING, arguments, report

uri, host, port, user, password, token = arguments()
SQL = "type.googleapis.com/arrow.flight.protocol.sql."


def varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number, data):
    data = data.encode() if isinstance(data, str) else data
    return varint(number << 3 | 2) + varint(len(data)) + data


def command(name, body=b""):
    return field(1, SQL + name) + field(2, body)


client = flight.FlightClient(uri)
header = client.authenticate_basic_token(user, password)
options = flight.FlightCallOptions(headers=[header], timeout=120)


def read(cmd, opts=options):
    info = client.get_flight_info(flight.FlightDescriptor.for_command(cmd), opts)
    return client.do_get(info.endpoints[0].ticket, opts).read_all()


def with_token():
    opts = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())], timeout=60)
    return read(command("CommandStatementQuery", field(1, PING)), opts).to_pylist()


def columns():
    descriptor = flight.FlightDescriptor.for_command(command("CommandStatementQuery", field(1, "SELECT * FROM customers.nation")))
    return client.get_schema(descriptor, options).schema.names


def bad():
    read(command("CommandStatementQuery", field(1, BAD)))
    return "no error"


report(
    {
        "login_password": lambda: read(command("CommandStatementQuery", field(1, PING))).to_pylist(),
        "login_token": with_token,
        "schemas": lambda: read(command("CommandGetDbSchemas")).column("db_schema_name").to_pylist(),
        "tables": lambda: read(command("CommandGetTables", field(2, "customers"))).column("table_name").to_pylist(),
        "columns": columns,
        "parameterised": "a Flight client: prepared statements need a Flight SQL client",
        "prepared_again": "a Flight client: prepared statements need a Flight SQL client",
        "million": lambda: read(command("CommandStatementQuery", field(1, MILLION))).num_rows,
        "bad_query": bad,
    }
)
