// @lakehouse-rs/flight-sql-client (Node, napi-rs over arrow-rs) through the
// scenario of tests/clients/scenario.py; prints the same JSON report.
// The client has plain queries and catalog calls, no parameters.
import { createFlightSqlClient } from "@lakehouse-rs/flight-sql-client";
import { tableFromIPC } from "apache-arrow";

const [uri, user, password, token] = process.argv.slice(2);
const [host, port] = uri.replace("grpc://", "").split(":");
const STEPS = ["login_password", "login_token", "schemas", "tables", "columns", "parameterised", "prepared_again", "million", "bad_query"];
const PING = "SELECT 1 AS one";

const connect = (credentials) => createFlightSqlClient({ host, port: Number(port), tls: false, headers: [], ...credentials });
const rows = (buffer) => tableFromIPC(buffer).toArray().map((row) => row.toJSON());

const client = await connect({ username: user, password });
const steps = {
  login_password: async () => rows(await client.query(PING)).map((r) => ({ one: Number(r.one) })),
  login_token: async () => rows(await (await connect({ token })).query(PING)).map((r) => ({ one: Number(r.one) })),
  schemas: async () => rows(await client.getDbSchemas({})).map((r) => r.db_schema_name),
  tables: async () => rows(await client.getTables({ dbSchemaFilterPattern: "customers" })).map((r) => r.table_name),
  columns: async () => tableFromIPC(await client.query("SELECT * FROM customers.nation LIMIT 0")).schema.fields.map((f) => f.name),
  parameterised: "the client has no parameters or prepared statements",
  prepared_again: "the client has no parameters or prepared statements",
  million: async () => tableFromIPC(await client.query("SELECT value FROM generate_series(1, 1000000)")).numRows,
  bad_query: async () => {
    await client.query("SELEC 1");
    return "no error";
  },
};

const out = {};
for (const name of STEPS) {
  const step = steps[name];
  if (typeof step === "string") {
    out[name] = { unsupported: step };
    continue;
  }
  try {
    out[name] = { value: await step() };
  } catch (error) {
    out[name] = { error: String(error && error.message ? error.message : error).slice(0, 2000) };
  }
}
console.log(JSON.stringify(out));
