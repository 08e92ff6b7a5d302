"""The demo's data contracts are valid Open Data Contract Standard documents.

Each contract is checked with `datacontract lint` from datacontract-cli, the
reference ODCS tooling, installed in a venv of its own from
requirements-datacontract.txt. The environment variable AGORA_DATACONTRACT
names its `datacontract` executable (./scripts/test sets it).

Two sets of contracts are linted: the ones in the source tree
(flight-server/demo/contracts), and the ones `agora demo` writes into a
generated demo mesh, which are what a user of the demo actually gets.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

SOURCE_CONTRACTS = ROOT / "flight-server" / "demo" / "contracts"

# One contract per demo product, named <domain>.<product>.odcs.yaml.
PRODUCTS = [
    "sales.orders",
    "sales.lineitem",
    "customers.customer",
    "customers.nation",
    "customers.region",
    "supply.part",
    "supply.supplier",
    "supply.partsupp",
]

# The ODCS version the contracts declare and must validate against.
ODCS_VERSION = "3.2.0"


def datacontract_exe() -> str:
    exe = os.environ.get("AGORA_DATACONTRACT")
    if not exe:
        pytest.fail(
            "AGORA_DATACONTRACT is not set: it must name the `datacontract` executable of a venv made with "
            "`pip install -r tests/python/requirements-datacontract.txt` (./scripts/test does this)"
        )
    if not (Path(exe).is_file() and os.access(exe, os.X_OK)):
        pytest.fail(f"AGORA_DATACONTRACT={exe} is not an executable file (expected a venv's bin/datacontract)")
    return exe


def lint(path: Path, tmp_path: Path) -> str:
    """Runs `datacontract lint` on one contract, asserts that it passed without errors or warnings,
    and returns the contract's id (each demo contract's id is its product, `<domain>.<product>`)."""
    report = tmp_path / f"{path.name}.lint.json"
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    proc = subprocess.run(
        [datacontract_exe(), "lint", "--output-format", "json", "--output", str(report), str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"datacontract lint {path} exited with {proc.returncode}:\n{output}"
    # "has warnings" would also exit 0: unknown fields are only warnings in datacontract-cli 1.x.
    assert "Data contract is valid." in output, f"datacontract lint {path} did not report a valid contract:\n{output}"
    run = json.loads(report.read_text())
    assert run["result"] == "passed", f"datacontract lint {path}: result {run['result']}:\n{output}"
    not_passed = [check for check in run["checks"] if check["result"] != "passed"]
    assert not not_passed, f"datacontract lint {path}: checks that did not pass: {not_passed}"
    names = [check["name"] for check in run["checks"]]
    assert f"Data contract is valid against ODCS v{ODCS_VERSION}" in names, (
        f"datacontract lint {path} did not validate against ODCS v{ODCS_VERSION}: {names}"
    )
    return run["dataContractId"]


def test_source_tree_has_one_contract_per_product():
    found = sorted(p.name for p in SOURCE_CONTRACTS.glob("*.odcs.yaml"))
    assert found == sorted(f"{product}.odcs.yaml" for product in PRODUCTS)


@pytest.mark.parametrize("product", PRODUCTS)
def test_source_contract_lints(product, tmp_path):
    path = SOURCE_CONTRACTS / f"{product}.odcs.yaml"
    assert path.is_file(), f"{path} is missing"
    assert lint(path, tmp_path) == product


def test_demo_mesh_contracts_lint(mesh_dir, tmp_path):
    """`agora demo` writes one contract per product somewhere under the demo directory, and each lints."""
    paths = sorted(mesh_dir.rglob("*.odcs.yaml"))
    ids = sorted(lint(path, tmp_path) for path in paths)
    assert ids == sorted(PRODUCTS), f"contracts under {mesh_dir}: {[str(p) for p in paths]} with ids {ids}"
