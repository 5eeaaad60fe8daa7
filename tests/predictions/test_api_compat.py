"""The breaking-change check (predictions.api.compat, manage.py api_compat): each kind of
difference a client notices is caught, additions and looser input are not, and the
command fails until the changelog's Unreleased section quotes what it found."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import CommandError, call_command

from predictions.api.compat import schema_changes
from predictions.management.commands.api_compat import acknowledged, served_schema

Schema = dict[str, Any]


def _api(
    *, parameters: list[Schema] | None = None, body: Schema | None = None, response: Schema | None = None,
    components: Schema | None = None,
) -> Schema:  # fmt: skip
    """A one-operation schema: POST /things/ with these query parameters, JSON body and 200 body."""
    operation: dict[str, Any] = {
        "parameters": parameters or [],
        "responses": {"200": {"content": {"application/json": {"schema": response or {"type": "object"}}}}},
    }
    if body is not None:
        operation["requestBody"] = {"content": {"application/json": {"schema": body}}, "required": True}
    return {"paths": {"/things/": {"post": operation}}, "components": {"schemas": components or {}}}


def _breaking(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [change.id for change in schema_changes(old, new) if change.breaking]


THING = {"type": "object", "properties": {"id": {"type": "string"}, "size": {"type": "integer"}}, "required": ["id"]}


def test_a_removed_operation_or_response_field_breaks_a_client() -> None:
    old = _api(response=THING)
    fewer_fields = _api(response={**THING, "properties": {"id": {"type": "string"}}})

    assert _breaking(old, {"paths": {}}) == ["operation-removed POST /things/"]
    assert _breaking(old, fewer_fields) == ["response-property-removed POST /things/ 200 application/json: size"]


def test_a_new_required_input_breaks_a_client_and_a_new_optional_one_does_not() -> None:
    old = _api(body={"type": "object", "properties": {"name": {"type": "string"}}})
    required = _api(body={"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]})
    optional_parameter = _api(
        body=old["paths"]["/things/"]["post"]["requestBody"]["content"]["application/json"]["schema"],
        parameters=[{"in": "query", "name": "verbose", "schema": {"type": "boolean"}}],
    )
    required_parameter = copy.deepcopy(optional_parameter)
    required_parameter["paths"]["/things/"]["post"]["parameters"][0]["required"] = True

    assert _breaking(old, required) == ["request-property-required POST /things/ body application/json: name"]
    assert _breaking(old, optional_parameter) == []
    assert _breaking(old, required_parameter) == ["parameter-added POST /things/ query parameter verbose"]


def test_a_changed_type_breaks_either_way_and_a_wider_input_type_does_not() -> None:
    def with_size(schema: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "properties": {"size": schema}}

    integer, number, string = (
        with_size({"type": "integer"}),
        with_size({"type": "number"}),
        with_size({"type": "string"}),
    )

    assert _breaking(_api(body=integer), _api(body=number)) == []  # accepts more: every integer is a number
    assert _breaking(_api(body=number), _api(body=integer)) == [
        "request-type-changed POST /things/ body application/json: size"
    ]
    assert _breaking(_api(response=integer), _api(response=string)) == [
        "response-type-changed POST /things/ 200 application/json: size"
    ]
    nullable = with_size({"type": "integer", "nullable": True})
    assert _breaking(_api(response=integer), _api(response=nullable)) == [
        "response-nullable POST /things/ 200 application/json: size"
    ]


def test_narrower_input_and_wider_output_break_and_the_reverse_does_not() -> None:
    def status(schema: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "properties": {"status": schema}}

    two = status({"type": "string", "enum": ["pending", "done"]})
    three = status({"type": "string", "enum": ["pending", "done", "failed"]})
    short = status({"type": "string", "maxLength": 10})
    long = status({"type": "string", "maxLength": 20})

    assert _breaking(_api(body=three), _api(body=two)) == [
        "request-enum-narrowed POST /things/ body application/json: status"
    ]
    assert _breaking(_api(body=two), _api(body=three)) == []
    assert _breaking(_api(response=two), _api(response=three)) == [
        "response-enum-widened POST /things/ 200 application/json: status"
    ]
    assert _breaking(_api(response=three), _api(response=two)) == []
    assert _breaking(_api(body=long), _api(body=short)) == [
        "request-bound-narrowed POST /things/ body application/json: status"
    ]
    assert _breaking(_api(body=short), _api(body=long)) == []


def test_references_and_all_of_are_compared_by_what_they_mean_not_their_names() -> None:
    old = _api(response={"$ref": "#/components/schemas/Thing"}, components={"Thing": THING})
    renamed = _api(response={"$ref": "#/components/schemas/Item"}, components={"Item": THING})
    nullable_ref = {"type": "object", "properties": {"thing": {"allOf": [{"$ref": "#/components/schemas/Thing"}],
                                                                "nullable": True}}}  # fmt: skip
    nested = {"type": "object", "properties": {"thing": {"$ref": "#/components/schemas/Thing"}}}

    assert _breaking(old, renamed) == []
    assert _breaking(_api(response=nested, components={"Thing": THING}),
                     _api(response=nullable_ref, components={"Thing": THING})) == [
        "response-nullable POST /things/ 200 application/json: thing"
    ]  # fmt: skip


def test_a_removed_success_status_breaks_and_a_removed_error_status_does_not() -> None:
    old = _api()
    old["paths"]["/things/"]["post"]["responses"]["404"] = {"description": "not found"}
    new = _api()
    new["paths"]["/things/"]["post"]["responses"] = {"201": old["paths"]["/things/"]["post"]["responses"]["200"]}

    assert _breaking(old, new) == ["response-status-removed POST /things/ 200"]


def test_only_the_unreleased_section_of_the_changelog_acknowledges() -> None:
    changelog = (
        "# Changelog\n\n## Unreleased\n\n- Moved: `operation-removed POST /things/`\n\n"
        "## 1.0 - 2026-01-01\n\n- `operation-removed GET /old/`\n"
    )

    assert acknowledged(changelog) == {"operation-removed POST /things/"}


def test_the_command_fails_on_an_unannounced_breaking_change_and_passes_once_announced(tmp_path: Path) -> None:
    baseline = served_schema()
    baseline["paths"]["/api/v1/gone/"] = {"get": {"responses": {"200": {"description": "it was here"}}}}
    (tmp_path / "baseline.yaml").write_text(yaml.safe_dump(baseline))
    changelog = tmp_path / "changelog.md"
    changelog.write_text("# Changelog\n\n## Unreleased\n\nNothing yet.\n")
    options = {"baseline": tmp_path / "baseline.yaml", "changelog": changelog}

    with pytest.raises(CommandError, match="`operation-removed GET /api/v1/gone/`"):
        call_command("api_compat", **options)

    changelog.write_text("# Changelog\n\n## Unreleased\n\n- Removed `operation-removed GET /api/v1/gone/`.\n")
    call_command("api_compat", **options)


def test_the_code_has_no_breaking_change_the_changelog_does_not_announce() -> None:
    call_command("api_compat")  # the same check as `make api-compat`, in every test run
