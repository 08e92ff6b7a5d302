"""Every Python snippet of docs/clients.md runs as written against a running
server (only its address changes), so the page cannot drift from what works."""

import re

import pytest

from conftest import ROOT

DOC = ROOT / "docs" / "clients.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_the_page_has_snippets():
    assert len(SNIPPETS) >= 2


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_a_snippet_runs_as_written(server, index, capsys):
    code = SNIPPETS[index].replace("grpc://127.0.0.1:50051", server["uri"])
    namespace = {"__name__": f"clients_md_snippet_{index}"}
    exec(compile(code, f"docs/clients.md snippet {index + 1}", "exec"), namespace)
    connection = namespace.get("conn")
    if connection is not None:
        connection.close()


RUST_SNIPPETS = re.findall(r"```rust\n(.*?)```", DOC.read_text(), re.S)
EXAMPLE = ROOT / "flight-server" / "examples" / "flight_sql_client.rs"


def test_the_rust_snippet_is_the_example_the_matrix_runs():
    """The Rust snippet is the marked part of the arrow-rs client example,
    which test_clients.py runs against a server (its `login_password` step)."""
    marked = re.search(r"// docs:start\n(.*?)\n\s*// docs:end", EXAMPLE.read_text(), re.S)
    assert marked, f"{EXAMPLE} has no // docs:start … // docs:end part"
    example = "\n".join(line.removeprefix("    ") for line in marked.group(1).splitlines())
    assert [snippet.strip() for snippet in RUST_SNIPPETS] == [example.strip()]
