"""Offline validation of the OpenLineage run events Agora emits.

    from openlineage_check import validate_event
    validate_event(event)            # raises InvalidEvent (a ValueError) if invalid

    python tests/python/openlineage_check.py events.jsonl [more.jsonl ...]
    python tests/python/openlineage_check.py --self-test events.jsonl

Each event is checked against the RunEvent definition of the core spec
(openlineage_schemas/OpenLineage.json, spec 2-0-2) and every known facet it
carries against its own facet schema, with the facets' remote `$id` URLs mapped
to the local copies (no network). Formats uuid, date-time and uri are asserted
by checkers defined here, so the result does not depend on which optional
jsonschema format packages happen to be installed.

With strict=True (the default) Agora's own conventions are checked too; the
schemas leave these open:
  * top-level schemaURL is the RunEvent URL below; each known facet's _schemaURL
    is its schema's $id + "#/$defs/<FacetName>";
  * eventType is START, COMPLETE or FAIL, and a FAIL carries run.facets.errorMessage;
  * columnLineage transformation `type` is DIRECT or INDIRECT and `subtype`, when
    present, is one the OpenLineage docs list for that type.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import jsonschema
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

SCHEMA_DIR = Path(__file__).resolve().parent / "openlineage_schemas"
CORE_ID = "https://openlineage.io/spec/2-0-2/OpenLineage.json"
RUN_EVENT_SCHEMA_URL = CORE_ID + "#/$defs/RunEvent"

# facet key -> (where it may appear, schema file / $defs name)
KNOWN_FACETS: dict[str, tuple[str, str]] = {
    "errorMessage": ("run", "ErrorMessageRunFacet"),
    "jobType": ("job", "JobTypeJobFacet"),
    "sql": ("job", "SQLJobFacet"),
    "schema": ("dataset", "SchemaDatasetFacet"),
    "ownership": ("dataset", "OwnershipDatasetFacet"),
    "columnLineage": ("dataset", "ColumnLineageDatasetFacet"),
}

AGORA_EVENT_TYPES = {"START", "COMPLETE", "FAIL"}
TRANSFORMATION_SUBTYPES = {
    "DIRECT": {"IDENTITY", "TRANSFORMATION", "AGGREGATION"},
    "INDIRECT": {"JOIN", "GROUP_BY", "FILTER", "SORT", "WINDOW", "CONDITIONAL"},
}


class InvalidEvent(ValueError):
    """An event that the OpenLineage schemas (or Agora's conventions) reject."""


# --- formats ---------------------------------------------------------------------

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DATE_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[^\s]+$")

_formats = FormatChecker(formats=())


@_formats.checks("uuid")
def _is_uuid(value: object) -> bool:
    return not isinstance(value, str) or bool(_UUID.match(value))


@_formats.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _DATE_TIME.match(value):
        return False
    datetime.fromisoformat(value.upper().replace("Z", "+00:00"))  # ranges (month 13, ...)
    return True


@_formats.checks("uri")
def _is_uri(value: object) -> bool:
    return not isinstance(value, str) or bool(_URI.match(value))


# --- schemas ---------------------------------------------------------------------


@lru_cache(maxsize=None)
def _schemas() -> dict[str, dict]:
    """File stem -> schema document."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(SCHEMA_DIR.glob("*.json"))}


@lru_cache(maxsize=None)
def _registry() -> Registry:
    # No `retrieve` callback: an unknown $ref fails instead of going to the network.
    return Registry().with_resources(
        (doc["$id"], Resource.from_contents(doc)) for doc in _schemas().values()
    )


@lru_cache(maxsize=None)
def _validator(ref: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": ref}, registry=_registry(), format_checker=_formats)


def facet_schema_url(name: str) -> str:
    """The `_schemaURL` a known facet must carry, e.g. for "ColumnLineageDatasetFacet"."""
    return f"{_schemas()[name]['$id']}#/$defs/{name}"


def _check(instance: Any, ref: str, where: str) -> None:
    error = jsonschema.exceptions.best_match(_validator(ref).iter_errors(instance))
    if error is not None:
        path = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        raise InvalidEvent(f"{where}{path}: {error.message}") from error


# --- the event -------------------------------------------------------------------


def _facet_sites(event: dict) -> Iterator[tuple[str, str, dict]]:
    """(kind, location, facets) for every facets object in the event."""
    run, job = event.get("run") or {}, event.get("job") or {}
    yield "run", "run.facets", run.get("facets") or {}
    yield "job", "job.facets", job.get("facets") or {}
    for side in ("inputs", "outputs"):
        for i, ds in enumerate(event.get(side) or []):
            yield "dataset", f"{side}[{i}].facets", ds.get("facets") or {}


def validate_event(event: dict, strict: bool = True) -> None:
    """Raise InvalidEvent unless `event` is a valid OpenLineage 2-0-2 RunEvent."""
    if not isinstance(event, dict):
        raise InvalidEvent(f"event: expected a JSON object, got {type(event).__name__}")
    _check(event, RUN_EVENT_SCHEMA_URL, "event")
    _check(event, CORE_ID, "event (spec root)")  # oneOf RunEvent | DatasetEvent | JobEvent

    for kind, location, facets in _facet_sites(event):
        for key, facet in facets.items():
            if key not in KNOWN_FACETS:
                continue  # still checked as a Base/Run/Job/DatasetFacet by the core schema
            facet_kind, name = KNOWN_FACETS[key]
            where = f"{location}.{key}"
            if facet_kind != kind:
                raise InvalidEvent(f"{where}: {name} is a {facet_kind} facet, not a {kind} facet")
            _check(facet, facet_schema_url(name), where)
            if strict and facet.get("_schemaURL") != facet_schema_url(name):
                raise InvalidEvent(
                    f"{where}._schemaURL: {facet.get('_schemaURL')!r} != {facet_schema_url(name)!r}"
                )
            if strict and key == "columnLineage":
                _check_transformations(facet, where)

    if strict:
        if event["schemaURL"] != RUN_EVENT_SCHEMA_URL:
            raise InvalidEvent(f"event.schemaURL: {event['schemaURL']!r} != {RUN_EVENT_SCHEMA_URL!r}")
        etype = event.get("eventType")
        if etype not in AGORA_EVENT_TYPES:
            raise InvalidEvent(f"event.eventType: {etype!r} is not one of {sorted(AGORA_EVENT_TYPES)}")
        if etype == "FAIL" and "errorMessage" not in (event["run"].get("facets") or {}):
            raise InvalidEvent("run.facets: a FAIL event carries an errorMessage facet")


def _check_transformations(facet: dict, where: str) -> None:
    sites = [
        (f"{where}.fields.{col}.inputFields", spec.get("inputFields") or [])
        for col, spec in facet.get("fields", {}).items()
    ]
    sites.append((f"{where}.dataset", facet.get("dataset") or []))
    for loc, input_fields in sites:
        for i, field in enumerate(input_fields):
            for j, t in enumerate(field.get("transformations") or []):
                at = f"{loc}[{i}].transformations[{j}]"
                ttype = t["type"]
                if ttype not in TRANSFORMATION_SUBTYPES:
                    raise InvalidEvent(f"{at}.type: {ttype!r} is not DIRECT or INDIRECT")
                sub = t.get("subtype")
                if sub is not None and sub not in TRANSFORMATION_SUBTYPES[ttype]:
                    raise InvalidEvent(
                        f"{at}.subtype: {sub!r} is not one of {sorted(TRANSFORMATION_SUBTYPES[ttype])}"
                    )


# --- command line ----------------------------------------------------------------


def _read_jsonl(path: str) -> list[tuple[int, Any]]:
    out = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            out.append((n, json.loads(line)))
    return out


def _mutations(event: dict) -> Iterator[tuple[str, dict]]:
    """Broken copies of a valid event, each of which must be rejected."""

    def copy() -> dict:
        return json.loads(json.dumps(event))

    e = copy(); del e["run"]["runId"]; yield "no run.runId", e
    e = copy(); e["run"]["runId"] = "not-a-uuid"; yield "run.runId not a uuid", e
    e = copy(); e["eventTime"] = "yesterday"; yield "eventTime not date-time", e
    e = copy(); e["eventType"] = "DONE"; yield "eventType DONE", e
    job_facets = event["job"].get("facets") or {}
    if "jobType" in job_facets:
        e = copy(); del e["job"]["facets"]["jobType"]["integration"]; yield "jobType without integration", e
    if "sql" in job_facets:
        e = copy(); del e["job"]["facets"]["sql"]["_producer"]; yield "sql facet without _producer", e
    for i, ds in enumerate(event.get("outputs") or []):
        if "columnLineage" in (ds.get("facets") or {}):
            def first_input_field(e: dict) -> dict:
                fields = e["outputs"][i]["facets"]["columnLineage"]["fields"]
                return next(iter(fields.values()))["inputFields"][0]

            e = copy(); first_input_field(e)["transformations"][0]["type"] = "FOO"
            yield "transformation type FOO", e
            e = copy(); del first_input_field(e)["field"]
            yield "inputField without field", e
            break


def main(argv: list[str]) -> int:
    self_test = "--self-test" in argv
    paths = [a for a in argv if a != "--self-test"]
    if not paths:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: openlineage_check.py [--self-test] FILE.jsonl ...", file=sys.stderr)
        return 2
    bad = total = 0
    events = []
    for path in paths:
        for n, event in _read_jsonl(path):
            total += 1
            try:
                validate_event(event)
                events.append(event)
                print(f"{path}:{n}: ok ({event.get('eventType')})")
            except InvalidEvent as e:
                bad += 1
                print(f"{path}:{n}: INVALID: {e}")
    if self_test:
        for event in events:
            for what, broken in _mutations(event):
                try:
                    validate_event(broken)
                except InvalidEvent as e:
                    print(f"self-test ({event.get('eventType')}, {what}): rejected: {e}")
                else:
                    bad += 1
                    print(f"self-test ({event.get('eventType')}, {what}): WRONGLY ACCEPTED")
    print(f"openlineage_check: {total} event(s) read, {bad} problem(s)")
    return 1 if bad or not total else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
