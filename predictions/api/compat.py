"""Which differences between two OpenAPI schemas break a client (docs/api-compatibility.md).

``schema_changes(old, new)`` compares what the two schemas promise on the wire, with
every ``$ref`` resolved and ``allOf`` merged (component names are not compared: renaming
one changes no request or answer). A change breaks a client when the new schema:

- drops an operation, a parameter, a request body field, a response field, a response
  header the old one promised, a media type, or a success status;
- asks for more: a new required parameter or field, a body that becomes required, or
  narrower input (another type, fewer enum values, tighter bounds, lengths, pattern or format);
- answers with more: a field that may now be absent or null, another type, more enum
  values, another format.

Anything else (new operations, optional inputs, fields, statuses, looser input) is
reported as an addition. Pure functions on plain dicts: no Django.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Schema = dict[str, Any]

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@dataclass(frozen=True)
class Change:
    """One difference: ``kind`` (e.g. ``response-property-removed``), the operation
    (``GET /api/v1/predictions/``), where in it, what changed, and whether it breaks a client."""

    kind: str
    operation: str
    where: str
    detail: str
    breaking: bool

    @property
    def id(self) -> str:
        """What the changelog quotes to acknowledge it: stable across runs, no detail."""
        return " ".join(part for part in (self.kind, self.operation, self.where) if part)

    def __str__(self) -> str:
        return f"{self.id}: {self.detail}" if self.detail else self.id


def schema_changes(old: Schema, new: Schema) -> list[Change]:
    """Every difference between the API ``old`` describes and the one ``new`` describes."""
    changes: list[Change] = []
    old_operations, new_operations = _operations(old), _operations(new)
    for key, old_operation in old_operations.items():
        if key not in new_operations:
            changes.append(Change("operation-removed", key, "", "", breaking=True))
            continue
        _Comparison(old, new, key, changes).operation(old_operation, new_operations[key])
    changes.extend(
        Change("operation-added", key, "", "", breaking=False) for key in new_operations if key not in old_operations
    )
    return changes


def _operations(schema: Schema) -> dict[str, Schema]:
    return {
        f"{method.upper()} {path}": operation
        for path, path_item in schema.get("paths", {}).items()
        for method, operation in path_item.items()
        if method in HTTP_METHODS
    }


class _Comparison:
    """The comparison of one operation in both schemas, collecting into ``changes``."""

    def __init__(self, old_root: Schema, new_root: Schema, operation: str, changes: list[Change]) -> None:
        self.old_root, self.new_root = old_root, new_root
        self.operation_key = operation
        self.changes = changes

    def add(self, kind: str, where: str, detail: str = "", *, breaking: bool = True) -> None:
        self.changes.append(Change(kind, self.operation_key, where, detail, breaking))

    def operation(self, old: Schema, new: Schema) -> None:
        self.parameters(old, new)
        self.request_body(old.get("requestBody"), new.get("requestBody"))
        self.responses(old.get("responses", {}), new.get("responses", {}))

    def parameters(self, old: Schema, new: Schema) -> None:
        old_parameters = {(p["in"], p["name"]): p for p in map(self.old_resolve, old.get("parameters", []))}
        new_parameters = {(p["in"], p["name"]): p for p in map(self.new_resolve, new.get("parameters", []))}
        for (location, name), old_parameter in old_parameters.items():
            where = f"{location} parameter {name}"
            new_parameter = new_parameters.get((location, name))
            if new_parameter is None:
                self.add("parameter-removed", where, "the server no longer reads it")
                continue
            if new_parameter.get("required") and not old_parameter.get("required"):
                self.add("parameter-required", where, "now required")
            self.schema(old_parameter.get("schema", {}), new_parameter.get("schema", {}), where, request=True)
        for (location, name), new_parameter in new_parameters.items():
            if (location, name) not in old_parameters:
                required = bool(new_parameter.get("required"))
                detail = "new and required" if required else "new, optional"
                self.add("parameter-added", f"{location} parameter {name}", detail, breaking=required)

    def request_body(self, old: Schema | None, new: Schema | None) -> None:
        old_body, new_body = self.old_resolve(old or {}), self.new_resolve(new or {})
        if new_body.get("required") and not old_body.get("required"):
            self.add("request-body-required", "body", "a body is now required")
        old_content, new_content = old_body.get("content", {}), new_body.get("content", {})
        for media_type, old_media in old_content.items():
            if media_type not in new_content:
                self.add("request-media-type-removed", f"body {media_type}", "no longer in the schema")
                continue
            self.schema(old_media.get("schema", {}), new_content[media_type].get("schema", {}), f"body {media_type}",
                        request=True)  # fmt: skip

    def responses(self, old: Schema, new: Schema) -> None:
        for status, old_response in old.items():
            old_response = self.old_resolve(old_response)
            if status not in new:
                success = status.startswith("2")
                detail = "a success the client handled is gone" if success else "no longer documented"
                self.add("response-status-removed", status, detail, breaking=success)
                continue
            new_response = self.new_resolve(new[status])
            for name, old_header in old_response.get("headers", {}).items():
                if name not in new_response.get("headers", {}) and self.old_resolve(old_header).get("required"):
                    self.add("response-header-removed", f"{status} header {name}", "no longer always sent")
            old_content, new_content = old_response.get("content", {}), new_response.get("content", {})
            for media_type, old_media in old_content.items():
                if media_type not in new_content:
                    self.add("response-media-type-removed", f"{status} {media_type}", "no longer answered")
                    continue
                self.schema(old_media.get("schema", {}), new_content[media_type].get("schema", {}),
                            f"{status} {media_type}", request=False)  # fmt: skip
        for status in new:
            if status not in old:
                self.add("response-status-added", status, "", breaking=False)

    # --- schemas ------------------------------------------------------------------

    def old_resolve(self, schema: Any) -> Schema:
        return _resolve(schema, self.old_root)

    def new_resolve(self, schema: Any) -> Schema:
        return _resolve(schema, self.new_root)

    def schema(self, old: Any, new: Any, where: str, *, request: bool, depth: int = 0) -> None:
        """Compare two schemas of the same place; ``request``: the server reads it (it must
        not accept less), else the server writes it (it must not send more)."""
        if depth > 32:  # a recursive schema: compared deep enough
            return
        old, new = self.old_resolve(old), self.new_resolve(new)
        side = "request" if request else "response"
        old_types, new_types = _types(old), _types(new)
        if "any" not in old_types and "any" not in new_types:
            narrowed = not _covers(new_types, old_types) if request else not _covers(old_types, new_types)
            if narrowed:
                detail = f"{_show(old_types)} -> {_show(new_types)}"
                kind = (
                    f"{side}-nullable" if not request and new_types - old_types == {"null"} else f"{side}-type-changed"
                )
                self.add(kind, where, detail)
        self.constraints(old, new, where, request=request)
        self.properties(old, new, where, request=request, depth=depth)
        if "items" in old and "items" in new:
            self.schema(old["items"], new["items"], f"{where}[]", request=request, depth=depth + 1)

    def constraints(self, old: Schema, new: Schema, where: str, *, request: bool) -> None:
        side = "request" if request else "response"
        old_enum, new_enum = old.get("enum"), new.get("enum")
        if request and new_enum is not None and (old_enum is None or set(map(str, old_enum)) - set(map(str, new_enum))):
            self.add("request-enum-narrowed", where, f"accepts only {sorted(map(str, new_enum))}")
        if (
            not request
            and old_enum is not None
            and (new_enum is None or set(map(str, new_enum)) - set(map(str, old_enum)))
        ):
            added = "any value" if new_enum is None else sorted(set(map(str, new_enum)) - set(map(str, old_enum)))
            self.add("response-enum-widened", where, f"may now be {added}")
        # A format the server now insists on (request), or no longer guarantees (response).
        format_narrowed = new.get("format") if request else old.get("format")
        if old.get("format") != new.get("format") and format_narrowed:
            self.add(f"{side}-format-changed", where, f"{old.get('format')} -> {new.get('format')}")
        if not request:
            return
        for keyword, tighter in (("minimum", max), ("minLength", max), ("minItems", max),
                                 ("maximum", min), ("maxLength", min), ("maxItems", min)):  # fmt: skip
            before, after = old.get(keyword), new.get(keyword)
            if after is not None and (before is None or tighter(before, after) != before):
                self.add("request-bound-narrowed", where, f"{keyword} {before} -> {after}")
        if new.get("pattern") is not None and new.get("pattern") != old.get("pattern"):
            self.add("request-pattern-changed", where, f"{old.get('pattern')} -> {new.get('pattern')}")

    def properties(self, old: Schema, new: Schema, where: str, *, request: bool, depth: int) -> None:
        old_properties, new_properties = old.get("properties", {}), new.get("properties", {})
        old_required, new_required = set(old.get("required", [])), set(new.get("required", []))
        side = "request" if request else "response"
        for name, old_property in old_properties.items():
            at = f"{where}: {name}" if ": " not in where else f"{where}.{name}"
            if name not in new_properties:
                detail = "the server no longer reads it" if request else "no longer sent"
                self.add(f"{side}-property-removed", at, detail)
                continue
            if request and name in new_required and name not in old_required:
                self.add("request-property-required", at, "now required")
            if not request and name in old_required and name not in new_required:
                self.add("response-property-optional", at, "may now be absent")
            self.schema(old_property, new_properties[name], at, request=request, depth=depth + 1)
        for name in new_properties:
            if name not in old_properties:
                at = f"{where}: {name}" if ": " not in where else f"{where}.{name}"
                required = request and name in new_required
                self.add(f"{side}-property-added", at, "new and required" if required else "new", breaking=required)


def _resolve(schema: Any, root: Schema, seen: frozenset[str] = frozenset()) -> Schema:
    """``schema`` with its ``$ref`` followed and its ``allOf`` merged into one schema."""
    if not isinstance(schema, dict):
        return {}
    ref = schema.get("$ref")
    if isinstance(ref, str):
        if ref in seen:
            return {}
        target: Any = root
        for part in ref.removeprefix("#/").split("/"):
            target = target.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(target, dict) else {}
        merged = _resolve(target, root, seen | {ref})
        return {**merged, **{k: v for k, v in schema.items() if k != "$ref"}}
    if "allOf" in schema:
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            resolved = _resolve(part, root, seen)
            merged["properties"] = {**resolved.get("properties", {}), **merged.get("properties", {})}
            merged["required"] = sorted(set(resolved.get("required", [])) | set(merged.get("required", [])))
            merged.update(
                {k: v for k, v in resolved.items() if k not in ("properties", "required") and k not in merged}
            )
        if not merged["properties"]:
            del merged["properties"]
        if not merged["required"]:
            del merged["required"]
        return merged
    return schema


def _types(schema: Schema) -> set[str]:
    """The JSON types a schema allows ("any" when it does not say), "null" included."""
    variants = schema.get("oneOf") or schema.get("anyOf")
    if variants:
        types = {t for variant in variants for t in _types(variant if isinstance(variant, dict) else {})}
    elif "type" in schema:
        declared = schema["type"]
        types = set(declared) if isinstance(declared, list) else {declared}
    elif "properties" in schema:
        types = {"object"}
    else:
        types = {"any"}
    if schema.get("nullable"):
        types.add("null")
    return types


def _covers(wider: set[str], narrower: set[str]) -> bool:
    """Every type of ``narrower`` is one of ``wider`` (an integer is a number)."""
    return all(t in wider or (t == "integer" and "number" in wider) for t in narrower)


def _show(types: set[str]) -> str:
    return " | ".join(sorted(types))
