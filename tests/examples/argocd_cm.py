"""Writes examples/argocd/argocd-cm-health.yaml from the chart's Argo CD health scripts.

    PYTHONPATH=tests .venv/bin/python -m examples.argocd_cm

tests/examples/test_examples.py fails when the checked-in file differs from what this renders,
so a change to a script in charts/traindeploy-operator/argocd/ must be followed by this command.
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness.paths import REPO_ROOT

SCRIPTS = REPO_ROOT / "charts" / "traindeploy-operator" / "argocd"
OUTPUT = REPO_ROOT / "examples" / "argocd" / "argocd-cm-health.yaml"
KEY_PREFIX = "resource.customizations.health."

HEADER = """\
# Argo CD health checks for TrainDeploy and for the Katib Experiment and PyTorchJob it creates.
# GENERATED from charts/traindeploy-operator/argocd/*.lua by tests/examples/argocd_cm.py; do not
# edit by hand: change the scripts, then run `PYTHONPATH=tests .venv/bin/python -m examples.argocd_cm`.
#
# Argo CD reads health checks from its own ConfigMap, argocd-cm, under the keys
# resource.customizations.health.<group>_<Kind>; an entry there takes precedence over a check built
# into Argo CD for the same kind. Merge these keys into argocd-cm with server-side apply, which
# adds (or updates) exactly the fields listed here and leaves every other key alone:
#
#   kubectl apply --server-side --field-manager=traindeploy-health -n argocd -f examples/argocd/argocd-cm-health.yaml
#
# If argocd-cm is rendered by a Helm chart or the Argo CD operator, put the keys into its values
# instead (for the argo-cd chart: configs.cm), or the next upgrade drops them.
# The scripts need no Lua standard libraries (no resource.customizations.useOpenLibs).
"""


def scripts() -> dict[str, Path]:
    """ConfigMap key -> script, for every `<group>_<Kind>.lua` of the chart, sorted by key."""
    found = {KEY_PREFIX + path.stem: path for path in SCRIPTS.glob("*.lua")}
    return dict(sorted(found.items()))


def render() -> str:
    lines = [HEADER.rstrip("\n"), "apiVersion: v1", "kind: ConfigMap", "metadata:", "  name: argocd-cm",
             "  labels:", "    app.kubernetes.io/name: argocd-cm", "    app.kubernetes.io/part-of: argocd",
             "data:"]
    for key, path in scripts().items():
        text = path.read_text()
        if not text.endswith("\n") or text.endswith("\n\n"):
            raise ValueError(f"{path} must end with exactly one newline (a YAML `|` block keeps one)")
        if any(line != line.rstrip() or "\t" in line for line in text.splitlines()):
            raise ValueError(f"{path} has trailing whitespace or tabs, which a YAML block would not keep")
        lines.append(f"  {key}: |")
        lines += [f"    {line}" if line else "" for line in text.splitlines()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT.relative_to(REPO_ROOT)} with {len(scripts())} health checks")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
