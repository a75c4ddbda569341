"""Expand template.yaml into plain CloudFormation with SAM's own translator, offline.

    expand_template.py TEMPLATE OUT.json [Name=Value ...]

The parameters given become the defaults of the expanded template (CdnEnabled=true, say), so the
linters and tests see that variant. Each function's CodeUri becomes an S3 URI, as `sam package`
leaves it (the translator accepts nothing else). tests/template imports `expand` from here.
"""

import json
import os
import sys
from pathlib import Path
from typing import Any

from samcli.yamlhelper import yaml_parse  # type: ignore[import-untyped]
from samtranslator.translator.transform import transform  # type: ignore[import-untyped]


class _NoManagedPolicies:
    """Policy names in `Policies` would be looked up in IAM; the template names none."""

    def load(self) -> dict[str, str]:
        return {}


def expand(template_path: Path, overrides: dict[str, str] | None = None) -> dict[str, Any]:
    template: dict[str, Any] = yaml_parse(template_path.read_text())
    for name, value in (overrides or {}).items():
        template["Parameters"][name]["Default"] = value
    for name, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = f"s3://packaged/{name}.zip"
    # The translator asks boto3 for a region (to fill pseudo parameters); any will do offline.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    expanded: dict[str, Any] = transform(template, {}, _NoManagedPolicies())
    return expanded


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    overrides = dict(arg.split("=", 1) for arg in sys.argv[3:])
    out = expand(Path(sys.argv[1]), overrides)
    Path(sys.argv[2]).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
