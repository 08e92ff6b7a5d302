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
