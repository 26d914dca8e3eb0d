"""docs/api-reference.md is generated from the CRD and must never drift from it.

The first test regenerates the reference in memory and compares it with the checked-in file; the
others check the generator itself: every field, CEL rule and printer column of the CRD reaches the
page, and a schema keyword it does not know how to show stops it instead of vanishing.
"""

from __future__ import annotations

import copy
import difflib
import importlib.util
import re
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "gen_api_reference.py"
CRD_FILE = REPO_ROOT / "crds" / "traindeploy.io_traindeploys.yaml"
REFERENCE = REPO_ROOT / "docs" / "api-reference.md"


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("gen_api_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def crd() -> dict:
    return yaml.safe_load(CRD_FILE.read_text())


def _schema(crd: dict) -> dict:
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    return version["schema"]["openAPIV3Schema"]


def _paths(node: dict, path: str) -> list[str]:
    """Every field path under `node`, as the reference spells them."""
    found = []
    for name, child in (node.get("properties") or {}).items():
        found.append(f"{path}.{name}")
        found += _paths(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        found += _paths(node["items"], f"{path}[]")
    return found


def test_checked_in_reference_matches_the_crd(generator):
    expected = generator.render()
    actual = REFERENCE.read_text() if REFERENCE.exists() else ""
    if actual != expected:
        diff = "".join(difflib.unified_diff(actual.splitlines(True), expected.splitlines(True),
                                            "docs/api-reference.md (checked in)", "generated from the CRD", n=1))
        pytest.fail("docs/api-reference.md is out of date with crds/; regenerate it with\n"
                    "    .venv/bin/python scripts/gen_api_reference.py\n\n" + diff[:6000])


def test_every_field_has_a_row(generator, crd):
    page = generator.render(crd)
    schema = _schema(crd)
    paths = _paths(schema["properties"]["spec"], "spec") + _paths(schema["properties"]["status"], "status")
    assert len(paths) > 150  # the walk found the whole API, not a stub
    missing = [path for path in paths if f"| `{path}` |" not in page]
    assert not missing, f"fields without a row in the reference: {missing}"


def test_every_cel_rule_default_enum_and_column_is_shown(generator, crd):
    page = generator.render(crd)

    def walk(node: dict):
        yield node
        for child in (node.get("properties") or {}).values():
            yield from walk(child)
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                yield from walk(node[key])

    nodes = list(walk(_schema(crd)))
    rules = [rule for node in nodes for rule in node.get("x-kubernetes-validations") or []]
    assert len(rules) >= 15
    for rule in rules:
        assert f"`{' '.join(rule['rule'].split())}`" in page
        assert f"message: {rule['message']}" in page
    for node in nodes:
        for value in node.get("enum") or []:
            assert f"`{value}`" in page
    assert "| `spec.serving.canary.steps` | []integer |  | `[10, 50, 100]` |" in page
    assert "| `spec.tuning.algorithm` | string |  | `random` | one of `random`, `grid`," in page
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    for column in version["additionalPrinterColumns"]:
        assert re.search(rf"^\| {column['name']} \| {column['type']} \|", page, re.MULTILINE)
    for condition in ("PipelineSucceeded", "TuningSucceeded", "TrainingSucceeded", "GatePassed",
                      "ModelRegistered", "ServingReady", "Ready"):
        assert f"| `{condition}` |" in page


def test_prose_escapes_placeholders_outside_code(generator):
    assert generator.inline("traindeploy/<namespace>/<name> and `--<name>=<value>`") == \
        "traindeploy/&lt;namespace&gt;/&lt;name&gt; and `--<name>=<value>`"
    assert generator.cell("`a || b`") == "`a \\|\\| b`"


def test_an_unknown_schema_keyword_stops_the_generator(generator, crd):
    changed = copy.deepcopy(crd)
    name = _schema(changed)["properties"]["spec"]["properties"]["model"]["properties"]["name"]
    name["x-kubernetes-embedded-resource"] = True
    with pytest.raises(generator.UnknownKeyword, match=r"spec\.model\.name: .*x-kubernetes-embedded-resource"):
        generator.render(changed)
