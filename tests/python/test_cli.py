"""The command line's SQL front ends: `agora query` (several statements, from
a file or standard input, Parquet output, a remote server) and `agora shell`
(driven through its standard input, in-process and remote)."""

import json
import os
import subprocess

import pyarrow.parquet as pq

from conftest import ANALYST


def agora(agora_bin, *args, stdin=None, env=None, check=True):
    run = subprocess.run(
        [agora_bin, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "AGORA_HISTORY": "", **(env or {})},
    )
    if check:
        assert run.returncode == 0, run.stderr[-3000:]
    return run


def test_several_statements_from_an_argument_a_file_and_standard_input(agora_bin, mesh_config, tmp_path):
    script = "SELECT count(*) AS n FROM customers.nation;\n-- a comment; not a statement\nSELECT 'a;b' AS s;"
    for args, stdin in [
        (["--format", "json", script], None),
        (["--format", "json", "-"], script),
        (["--format", "json", "--file", "-"], script),
    ]:
        out = agora(agora_bin, "query", "--config", str(mesh_config), *args, stdin=stdin).stdout
        assert [json.loads(line) for line in out.splitlines()] == [{"n": 25}, {"s": "a;b"}], out
    path = tmp_path / "two.sql"
    path.write_text(script)
    out = agora(agora_bin, "query", "--config", str(mesh_config), "--file", str(path)).stdout
    assert "| 25 |" in out and "a;b" in out, out
    # A statement left open is refused before anything runs.
    refused = agora(agora_bin, "query", "--config", str(mesh_config), "SELECT 'open", check=False)
    assert refused.returncode != 0 and "ends inside a string" in refused.stderr, refused.stderr


def test_parquet_output_has_the_exact_types(agora_bin, mesh_config, tmp_path):
    path = tmp_path / "suppliers.parquet"
    agora(agora_bin, "query", "--config", str(mesh_config), "--format", "parquet", "--output", str(path),
          "SELECT s_suppkey, s_name, s_acctbal FROM supply.supplier ORDER BY s_suppkey")
    table = pq.read_table(path)
    assert table.num_rows == 100 and table.column_names == ["s_suppkey", "s_name", "s_acctbal"]
    assert str(table.schema.field("s_acctbal").type) == "decimal128(15, 2)"
    refused = agora(agora_bin, "query", "--config", str(mesh_config), "--format", "parquet", "SELECT 1; SELECT 2",
                    check=False)
    assert refused.returncode != 0 and "one statement" in refused.stderr


def test_query_and_shell_on_a_remote_server_as_the_analyst(agora_bin, server):
    password = {"AGORA_PASSWORD": ANALYST[1]}
    sql = "SELECT c_custkey, c_phone FROM customers.customer ORDER BY c_custkey LIMIT 1"
    out = agora(agora_bin, "query", "--url", server["uri"], "--user", "analyst", "--format", "json", sql,
                env=password).stdout
    (row,) = [json.loads(line) for line in out.splitlines()]
    # Under the analyst's policies: the key is a keyed token (customer keys
    # at this scale are at most 1500), the phone masked to its last 4.
    assert row["c_custkey"] > 1500 and row["c_phone"].startswith("*"), row
    wrong = agora(agora_bin, "query", "--url", server["uri"], "--user", "analyst", "SELECT 1",
                  env={"AGORA_PASSWORD": "wrong"}, check=False)
    assert wrong.returncode != 0 and "refused" in wrong.stderr, wrong.stderr
    error = agora(agora_bin, "query", "--url", server["uri"], "--user", "analyst", "SELEC 1", env=password, check=False)
    assert error.returncode != 0 and "Line: 1, Column: 1" in error.stderr, error.stderr
    session = "SELECT count(*) AS n\nFROM customers.nation;\n\\d customers.nation\n\\q\n"
    out = agora(agora_bin, "shell", "--url", server["uri"], "--user", "analyst", stdin=session, env=password).stdout
    assert "| 25 |" in out and "Name of the nation, in capitals." in out, out


def test_the_shell_runs_multi_line_statements_and_describes_products(agora_bin, mesh_config, tmp_path):
    session = "\n".join([
        "\\timing",
        "SELECT n_name",
        "FROM customers.nation",
        "WHERE n_nationkey = 7;",
        "SELEC 1;",
        "\\d",
        "\\format csv",
        "SELECT r_name FROM customers.region ORDER BY r_regionkey LIMIT 1;",
        "\\q",
    ]) + "\n"
    history = tmp_path / "history"
    run = agora(agora_bin, "shell", "--config", str(mesh_config), "--as", "analyst", stdin=session,
                env={"AGORA_HISTORY": str(history)})
    assert "GERMANY" in run.stdout and "(1 row, " in run.stdout, run.stdout
    assert "Line: 1, Column: 1" in run.stderr, run.stderr
    assert "sales" in run.stdout and "lineitem" in run.stdout, "\\d lists the products"
    assert "r_name\nAFRICA\n" in run.stdout, run.stdout
    # The history keeps whole statements, readable by its owner only.
    kept = history.read_text()
    assert "SELECT n_name\nFROM customers.nation\nWHERE n_nationkey = 7;" in kept.replace("\\n", "\n"), kept
    assert history.stat().st_mode & 0o077 == 0, oct(history.stat().st_mode)


def test_the_shell_keeps_no_history_in_a_device_or_pipe(agora_bin, mesh_config, tmp_path):
    # Saving history truncates the file and restricts it to its owner: run as
    # root with AGORA_HISTORY=/dev/null, that once locked every other user out
    # of /dev/null. A named pipe stands in for the device here (a regression
    # blocks on opening it and times out rather than damaging the machine).
    pipe = tmp_path / "history"
    os.mkfifo(pipe, 0o666)
    before = os.stat(pipe)
    run = agora(agora_bin, "shell", "--config", str(mesh_config), "--as", "analyst",
                stdin="\\format csv\nSELECT 41 + 1 AS answer;\n\\q\n", env={"AGORA_HISTORY": str(pipe)})
    assert "answer\n42\n" in run.stdout, run.stdout
    after = os.stat(pipe)
    assert (after.st_mode, after.st_uid) == (before.st_mode, before.st_uid), oct(after.st_mode)


def test_a_search_without_a_match_says_so(agora_bin, mesh_config):
    out = agora(agora_bin, "products", "search", "--config", str(mesh_config), "zebra unicorn").stdout
    assert "No product matches 'zebra unicorn'" in out, out
