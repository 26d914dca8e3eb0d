#!/usr/bin/env python3
"""Generates docs/api-reference.md from the TrainDeploy CRD, the single source of truth for the API.

    .venv/bin/python scripts/gen_api_reference.py           # write docs/api-reference.md
    .venv/bin/python scripts/gen_api_reference.py --check   # exit 1 if the file is out of date

Every field of spec and status gets a row: its path, type, whether it is required, its default,
its validation (enum, bounds, lengths, pattern, list semantics) and its description, in the order
the CRD declares them. The CEL rules are listed with their messages, and the condition types and
annotations with the operator's own names for them (operator/traindeploy/conditions.py,
lifecycle.py, triggers.py). A schema keyword this script does not know stops it, so nothing the CRD
says can be left out of the reference silently.

tests/api/test_api_reference.py regenerates the file in memory and fails when the checked-in copy
differs, so the reference cannot drift from the CRD. Needs PyYAML (the project's virtualenv has it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CRD = REPO_ROOT / "crds" / "traindeploy.io_traindeploys.yaml"
OUTPUT = REPO_ROOT / "docs" / "api-reference.md"

sys.path.insert(0, str(REPO_ROOT / "operator"))  # the operator's names for conditions and annotations

# Schema keywords and how each is shown; anything else in the CRD is an error (see module doc).
STRUCTURE = {"type", "format", "properties", "items", "additionalProperties", "required", "description",
             "default", "x-kubernetes-validations", "x-kubernetes-int-or-string",
             "x-kubernetes-preserve-unknown-fields"}
VALIDATION = {"enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
              "pattern", "minItems", "maxItems", "minProperties", "maxProperties", "x-kubernetes-list-type",
              "x-kubernetes-list-map-keys", "x-kubernetes-map-type", "uniqueItems"}
KNOWN = STRUCTURE | VALIDATION


class UnknownKeyword(ValueError):
    pass


# -- markdown --------------------------------------------------------------------------------------


def _fold(text: str | None) -> str:
    return " ".join((text or "").split())


def inline(text: str) -> str:
    """Prose for markdown: `<name>` outside code spans is escaped so that it is not taken for HTML."""
    parts = text.split("`")
    for index in range(0, len(parts), 2):  # even parts are outside code spans
        parts[index] = parts[index].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def cell(text: str) -> str:
    """A table cell: pipes are escaped everywhere, inside code spans too (GitHub Flavored Markdown)."""
    return text.replace("|", "\\|")


def code(value: str) -> str:
    fence = "``" if "`" in value else "`"
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def literal(value) -> str:
    if isinstance(value, str):
        return code(value)
    return code(json.dumps(value, separators=(", ", ": ")))


def anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-")


# -- the schema ------------------------------------------------------------------------------------


def check_keywords(node: dict, path: str) -> None:
    unknown = sorted(set(node) - KNOWN)
    if unknown:
        raise UnknownKeyword(f"{path}: schema keyword(s) {', '.join(unknown)} are not rendered by "
                             f"{Path(__file__).name}; teach it how to show them")


def type_of(node: dict) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "int or string"
    kind = node.get("type")
    if kind is None:
        return "any JSON value" if node.get("x-kubernetes-preserve-unknown-fields") else "any"
    if kind == "array":
        items = node.get("items") or {}
        return f"[]{type_of(items)}"
    if kind == "object":
        values = node.get("additionalProperties")
        if isinstance(values, dict) and not node.get("properties"):
            return f"map[string]{type_of(values)}"
        return "object"
    if node.get("format") in ("int32", "int64"):
        return f"integer ({node['format']})"
    if node.get("format"):
        return f"{kind} ({node['format']})"
    return kind


# Patterns that recur, shown by name; the spec section lists each with its regular expression.
NAMED_PATTERNS = {
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$": "DNS-1123 subdomain",
    r"^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$": "quantity",
}


def _bounds(low, high, unit: str = "", strict_low: bool = False, strict_high: bool = False) -> str | None:
    """`1-256`, `≥ 1`, `≤ 64` or `> 0`, with an optional unit after the numbers."""
    def number(value) -> str:
        return f"{value:g}" if isinstance(value, float) else str(value)

    if low is not None and high is not None and not strict_low and not strict_high:
        return f"{number(low)}-{number(high)}{unit}"
    parts = []
    if low is not None:
        parts.append(f"{'>' if strict_low else '≥'} {number(low)}{unit}")
    if high is not None:
        parts.append(f"{'<' if strict_high else '≤'} {number(high)}{unit}")
    return ", ".join(parts) or None


def validation(node: dict) -> list[str]:
    """The node's own constraints, in words."""
    rules: list[str] = []
    if "enum" in node:
        rules.append("one of " + ", ".join(literal(value) for value in node["enum"]))
    value_range = _bounds(node.get("minimum"), node.get("maximum"), strict_low=bool(node.get("exclusiveMinimum")),
                          strict_high=bool(node.get("exclusiveMaximum")))
    lengths = _bounds(node.get("minLength"), node.get("maxLength"), " characters")
    items = _bounds(node.get("minItems"), node.get("maxItems"), " items")
    entries = _bounds(node.get("minProperties"), node.get("maxProperties"), " entries")
    rules += [rule for rule in (value_range, lengths, items, entries) if rule]
    if "pattern" in node:
        name = NAMED_PATTERNS.get(node["pattern"])
        rules.append(f"a {name}" if name else f"matches {code(node['pattern'])}")
    list_type = node.get("x-kubernetes-list-type")
    if list_type == "map":
        keys = ", ".join(code(key) for key in node.get("x-kubernetes-list-map-keys") or [])
        rules.append(f"list-type map, keyed by {keys}")
    elif list_type == "set":
        rules.append("list-type set (unique values)")
    elif list_type:
        rules.append(f"list-type {list_type}")
    if node.get("x-kubernetes-map-type"):
        rules.append(f"map-type {node['x-kubernetes-map-type']}")
    if node.get("uniqueItems"):
        rules.append("unique items")
    if node.get("x-kubernetes-preserve-unknown-fields") and node.get("type") == "object":
        rules.append("unknown fields kept")
    return rules


class Field:
    def __init__(self, path: str, node: dict, required: bool) -> None:
        self.path, self.node, self.required = path, node, required

    @property
    def description(self) -> str:
        return _fold(self.node.get("description"))

    def constraints(self) -> list[str]:
        rules = validation(self.node)
        # A map's constraints on its values belong to the map's row.
        values = self.node.get("additionalProperties")
        if isinstance(values, dict) and not self.node.get("properties"):
            rules += [f"each value: {rule}" for rule in validation(values)]
        items = self.node.get("items")
        if isinstance(items, dict) and items.get("type") != "object":
            rules += [f"each item: {rule}" for rule in validation(items)]
        return rules


def walk(node: dict, path: str, required: bool = False) -> list[Field]:
    """Every field under `node`, depth first in declaration order, `node` itself first."""
    check_keywords(node, path)
    fields = [Field(path, node, required)]
    wanted = set(node.get("required") or [])
    for name, child in (node.get("properties") or {}).items():
        fields += walk(child, f"{path}.{name}", name in wanted)
    items = node.get("items")
    if isinstance(items, dict):
        check_keywords(items, f"{path}[]")
        if items.get("properties"):
            fields += walk(items, f"{path}[]")[1:]  # the item itself is described by the list's row
    values = node.get("additionalProperties")
    if isinstance(values, dict):
        check_keywords(values, f"{path}.<key>")
        if values.get("properties"):
            fields += walk(values, f"{path}.<key>")[1:]
    return fields


def cel_rules(node: dict, path: str) -> list[tuple[str, dict]]:
    """Every x-kubernetes-validations rule under `node`, with the path of the object it is written on."""
    found = [(path, rule) for rule in node.get("x-kubernetes-validations") or []]
    for name, child in (node.get("properties") or {}).items():
        found += cel_rules(child, f"{path}.{name}")
    for key, suffix in (("items", "[]"), ("additionalProperties", ".<key>")):
        if isinstance(node.get(key), dict):
            found += cel_rules(node[key], f"{path}{suffix}")
    return found


# -- rendering -------------------------------------------------------------------------------------


def field_table(fields: list[Field], with_defaults: bool = True) -> list[str]:
    if with_defaults:
        lines = ["| Field | Type | Required | Default | Validation | Description |",
                 "|---|---|---|---|---|---|"]
    else:
        lines = ["| Field | Type | Validation | Description |", "|---|---|---|---|"]
    for field in fields:
        columns = [code(field.path), inline(type_of(field.node))]
        if with_defaults:
            columns += ["yes" if field.required else "",
                        literal(field.node["default"]) if "default" in field.node else ""]
        columns += ["; ".join(field.constraints()), inline(field.description)]
        lines.append("| " + " | ".join(cell(column) for column in columns) + " |")
    return lines


def render_cel(rules: list[tuple[str, dict]]) -> list[str]:
    lines: list[str] = []
    for path, rule in rules:
        lines.append(f"- on {code(path)}: {code(_fold(rule['rule']))}")
        lines.append(f"  - message: {inline(_fold(rule.get('message') or rule.get('messageExpression') or ''))}")
        details = []
        if rule.get("fieldPath"):
            details.append(f"reported at {code(path + rule['fieldPath'])}")
        if rule.get("reason"):
            details.append(f"reason {code(rule['reason'])}")
        if details:
            lines.append(f"  - {', '.join(details)}")
    return lines


def render_conditions() -> list[str]:
    from traindeploy import conditions as cond
    from traindeploy import reconciler

    stage_of = {stage.condition: (stage.name, stage.phase) for stage in reconciler.STAGES}
    runs_when = {"pipeline": "`spec.pipeline` is set", "tuning": "`spec.tuning` is set"}
    lines = ["| Condition | Stage | Present when | Phase while in progress |", "|---|---|---|---|"]
    for condition in cond.ORDER:
        if condition in stage_of:
            stage, phase = stage_of[condition]
            phases = f"`{phase}`"
            if stage == "deploying":  # a rollout shows where it stands instead
                phases += ", or " + " and ".join(f"`{p}`" for p in sorted(reconciler.IN_PROGRESS_REASONS - set(
                    stage.phase for stage in reconciler.STAGES))) + " during a rollout"
            lines.append(f"| `{condition}` | {stage} | {runs_when.get(stage, 'always')} | {phases} |")
        else:
            lines.append(f"| `{condition}` | all | always | sums up the stages |")
    return lines


def render_annotations() -> list[str]:
    from traindeploy import triggers

    return [
        "| Annotation | Effect |",
        "|---|---|",
        f"| `{triggers.ANNOTATION_RETRAIN}=<token>` | Starts a new training cycle for each new token value "
        "(queued while a cycle runs; a newer token replaces a queued one). |",
        f"| `{triggers.ANNOTATION_APPROVE}=<version>` | Approves the rollout of that model version when "
        "`spec.serving.approval` is `Manual` (`4`, `v4` and `V4` are the same); a value naming another version is "
        "ignored with an Event. |",
        f"| `{triggers.ANNOTATION_ROLLBACK}=<version>` | Sends all traffic back to a version that served before "
        "(from `status.rolloutHistory`); the version rolled away from is not rolled out again until the spec "
        "changes. |",
    ]


def render(crd: dict | None = None) -> str:
    crd = crd if crd is not None else yaml.safe_load(CRD.read_text())
    spec = crd["spec"]
    names = spec["names"]
    (version,) = [v for v in spec["versions"] if v.get("storage")]
    schema = version["schema"]["openAPIV3Schema"]
    check_keywords(schema, "openAPIV3Schema")
    kind, group = names["kind"], spec["group"]
    api_version = f"{group}/{version['name']}"
    source = CRD.relative_to(REPO_ROOT).as_posix()

    spec_schema = schema["properties"]["spec"]
    status_schema = schema["properties"]["status"]
    sections = list(spec_schema["properties"])
    out: list[str] = [
        f"# {kind} API reference ({api_version})",
        "",
        f"<!-- GENERATED from {source} by scripts/gen_api_reference.py. Do not edit by hand: edit the CRD, "
        "then run `.venv/bin/python scripts/gen_api_reference.py`. -->",
        "",
        f"Generated from the CRD, [`{source}`](../{source}), which is the source of truth; "
        f"`kubectl explain {names['singular']}.spec --recursive` shows the same fields on a cluster. Why the "
        "API looks the way it does is in [api-v1alpha1.md](api-v1alpha1.md).",
        "",
        inline(_fold(schema.get("description"))),
        "",
        "## Contents",
        "",
        "- [Resource](#resource)",
        "- [spec](#spec): " + ", ".join(f"[{name}](#{anchor('spec.' + name)})" for name in sections),
        "- [Validation rules (CEL)](#validation-rules-cel)",
        "- [status](#status)",
        "- [Condition types](#condition-types)",
        "- [Annotations](#annotations)",
        "",
        "## Resource",
        "",
        "| | |",
        "|---|---|",
        f"| API version | `{api_version}` |",
        f"| Kind | `{kind}` (list: `{names['listKind']}`) |",
        f"| Plural, singular | `{names['plural']}`, `{names['singular']}` |",
        f"| Short names | {', '.join(code(n) for n in names.get('shortNames') or [])} |",
        f"| Categories | {', '.join(code(n) for n in names.get('categories') or [])} |",
        f"| Scope | {spec['scope']} |",
        f"| Versions | {', '.join(v['name'] + (' (storage)' if v.get('storage') else '') for v in spec['versions'])} |",
        f"| Subresources | {', '.join(sorted(version.get('subresources') or {})) or 'none'} |",
        "",
        f"`kubectl get {(names.get('shortNames') or [names['plural']])[0]}` prints these columns:",
        "",
        "| Column | Type | JSONPath | Description |",
        "|---|---|---|---|",
    ]
    for column in version.get("additionalPrinterColumns") or []:
        out.append("| " + " | ".join(cell(part) for part in (
            column["name"], column["type"], code(column["jsonPath"]),
            inline(_fold(column.get("description")) or "")))
            + " |")

    out += ["", "## spec", "", inline(_fold(spec_schema.get("description"))), "",
            "Required: " + ", ".join(code(f"spec.{name}") for name in spec_schema.get("required") or []) + ". "
            "Paths use `[]` for the items of a list and `<key>` for the entries of a map. Two patterns recur "
            "under a name:", ""]
    out += [f"- {name}: {code(pattern)}" for pattern, name in NAMED_PATTERNS.items()]
    out.append("")
    wanted = set(spec_schema.get("required") or [])
    for name in sections:
        fields = walk(spec_schema["properties"][name], f"spec.{name}", name in wanted)
        out += [f"### spec.{name}", ""]
        out += field_table(fields)
        out.append("")

    rules = ([("metadata", rule) for rule in schema.get("x-kubernetes-validations") or []]
             + cel_rules(spec_schema, "spec") + cel_rules(status_schema, "status"))
    out += ["## Validation rules (CEL)", "",
            "Checked by the apiserver on create and update, besides the per-field validation above; a "
            "manifest that breaks one is refused with the message shown.", ""]
    out += render_cel(rules)

    out += ["", "## status", "", inline(_fold(status_schema.get("description"))), ""]
    fields = []
    for name, child in (status_schema.get("properties") or {}).items():
        fields += walk(child, f"status.{name}")
    out += field_table(fields, with_defaults=False)

    out += ["", "## Condition types", "",
            "`status.conditions` holds one condition per type, each with `status` (`True`, `False` or "
            "`Unknown`), `reason`, `message`, `lastTransitionTime` and `observedGeneration`. A stage's "
            "condition is `Unknown` while the stage runs (its reason is the phase, or the name of a "
            "dependency it waits for, such as `MLflowUnavailable`), `True` once it succeeded (its reason "
            "is the condition type) and `False` when it failed the cycle (its reason says why). `Ready` "
            "sums them up: `True` only when the model serves; otherwise `False`, with the phase of the stage "
            "in progress as its reason (`Training`, `Deploying`, ...), the dependency it waits for "
            "(`MLflowUnavailable`), or what failed the cycle (`GateFailed`). "
            "`kubectl wait --for=condition=Ready td/NAME` waits for it.", ""]
    out += render_conditions()
    out += ["", "## Annotations", "",
            f"Besides its spec, the operator reads these annotations on a {kind}; "
            "`kubectl annotate td/NAME KEY=VALUE --overwrite` sets one.", ""]
    out += render_annotations()
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if the file is out of date")
    args = parser.parse_args(argv)
    text = render()
    target = OUTPUT.relative_to(REPO_ROOT)
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{target} is out of date; run: .venv/bin/python scripts/gen_api_reference.py", file=sys.stderr)
            return 1
        return 0
    if OUTPUT.exists() and OUTPUT.read_text() == text:
        print(f"{target} is up to date")
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
