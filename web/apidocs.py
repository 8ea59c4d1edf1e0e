"""/api-docs: the API reference page, rendered on the server from the OpenAPI document (no script)."""
from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, current_app, render_template
from markupsafe import Markup, escape

from web.openapi import document_for, operations

bp = Blueprint("apidocs", __name__)
_CODE = re.compile(r"`([^`]+)`")
_REF_PREFIX = "#/components/"


def prose(text: str | None) -> Markup:
    """The document's Markdown-ish text as HTML: paragraphs, and `code` spans; everything else escaped."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text or "") if p.strip()]
    html = ["<p>" + _CODE.sub(r"<code>\1</code>", str(escape(" ".join(p.split())))) + "</p>" for p in paragraphs]
    return Markup("".join(html))


def cell(text: str | None) -> Markup:
    """Like prose, for a table cell: paragraphs separated by line breaks, no <p> margins."""
    return Markup(str(prose(text)).removeprefix("<p>").removesuffix("</p>").replace("</p><p>", "<br>"))


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow a $ref (parameters, responses, request bodies) to what it names."""
    while isinstance(node, dict) and "$ref" in node:
        kind, name = node["$ref"][len(_REF_PREFIX):].split("/", 1)
        node = document["components"][kind][name]
    return node


def type_text(schema: dict[str, Any] | None) -> Markup:
    """A short type for a schema: `integer`, `string | null`, `array of <a>Job</a>`, a link for a $ref."""
    if not schema:
        return Markup("any")
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return Markup('<a href="#schema-{0}">{0}</a>').format(name)
    for key in ("oneOf", "anyOf", "allOf"):
        if key in schema and "properties" not in schema:
            return Markup(" | ").join(type_text(s) for s in schema[key])
    kinds = schema.get("type", "object")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    parts = []
    for kind in kinds:
        if kind == "array":
            parts.append(Markup("array of ") + type_text(schema.get("items")))
        elif kind == "object" and isinstance(schema.get("additionalProperties"), dict):
            parts.append(Markup("map of ") + type_text(schema["additionalProperties"]))
        else:
            parts.append(escape(kind))
    text = Markup(" | ").join(parts)
    if "enum" in schema:
        text += Markup(": ") + Markup(", ").join(Markup("<code>{}</code>").format(v) for v in schema["enum"])
    return text


def fields(document: dict[str, Any], schema: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Rows (name, type, required, description) for the properties of an object schema and its allOf parts."""
    if not schema:
        return []
    rows = []
    for part in schema.get("allOf", []):
        rows += fields(document, resolve_schema(document, part))
    required = set(schema.get("required", []))
    for name, prop in (schema.get("properties") or {}).items():
        limits = [f"{k} {prop[k]}" for k in ("minimum", "maximum", "minLength", "maxLength") if k in prop]
        rows.append({"name": name, "type": type_text(prop), "required": name in required,
                     "description": cell(prop.get("description")),
                     "default": prop.get("default"), "limits": ", ".join(limits)})
    return rows


def resolve_schema(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A schema with a $ref to a component schema replaced by that schema."""
    if "$ref" in schema:
        return document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _operation_view(document: dict[str, Any], path: str, method: str, op: dict[str, Any],
                    path_params: list) -> dict[str, Any]:
    params = [resolve(document, p) for p in [*path_params, *op.get("parameters", [])]]
    body = resolve(document, op.get("requestBody") or {})
    bodies = []
    for media, content in (body.get("content") or {}).items():
        schema = content.get("schema") or {}
        bodies.append({"media": media, "type": type_text(schema),
                       "fields": fields(document, resolve_schema(document, schema))})
    responses = []
    for status, response in op.get("responses", {}).items():
        response = resolve(document, response)
        responses.append({"status": status, "description": cell(response.get("description")),
                          "content": [{"media": media, "type": type_text(c.get("schema"))}
                                      for media, c in (response.get("content") or {}).items()],
                          "headers": list(response.get("headers") or {})})
    return {"id": op["operationId"], "method": method.upper(), "path": path, "summary": op.get("summary", ""),
            "description": prose(op.get("description")), "role": op.get("x-required-role", ""),
            "tags": op.get("tags", []), "body_required": bool(body.get("required")), "bodies": bodies,
            "body_description": prose(body.get("description")),
            "params": [{"name": p["name"], "in": p["in"], "required": bool(p.get("required")),
                        "type": type_text(p.get("schema")), "description": cell(p.get("description"))}
                       for p in params],
            "responses": responses}


def page_context(document: dict[str, Any]) -> dict[str, Any]:
    """What the template shows: info, operations grouped by tag, and every component schema."""
    groups: dict[str, list] = {tag["name"]: [] for tag in document.get("tags", [])}
    for path, method, op in operations(document):
        view = _operation_view(document, path, method, op, document["paths"][path].get("parameters", []))
        groups.setdefault((op.get("tags") or ["other"])[0], []).append(view)
    tags = {tag["name"]: tag.get("description", "") for tag in document.get("tags", [])}
    schemas = [{"name": name, "type": type_text({k: v for k, v in schema.items() if k != "properties"}
                                                if "properties" not in schema else {"type": "object"}),
                "description": prose(schema.get("description")), "fields": fields(document, schema)}
               for name, schema in document["components"]["schemas"].items()]
    return {"info": document["info"], "intro": prose(document["info"].get("description")),
            "groups": [(name, tags.get(name, ""), ops) for name, ops in groups.items() if ops],
            "schemas": schemas, "version": document["openapi"]}


@bp.get("/api-docs")
def api_docs() -> str:
    """The API reference, from the same document GET /api/v1/openapi.json serves."""
    document = document_for(current_app._get_current_object())
    return render_template("api_docs.html", **page_context(document))
