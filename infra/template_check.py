"""Offline checks of template.yaml: cfn-lint on the template and on its SAM-transformed output.

cfn-lint >= 1.54 no longer expands SAM itself and misses errors inside serverless resources
(see ../shared/reference/local-aws.md), so the template is transformed with aws-sam-translator
first and the CloudFormation output is linted too.

    python -m infra.template_check [template.yaml]
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def load_template(path: Path | None = None) -> dict[str, Any]:
    """Parse a CloudFormation/SAM YAML template (short-form intrinsics included)."""
    from cfnlint.decode import cfn_yaml

    return dict(cfn_yaml.load(str(path or ROOT / "template.yaml")))


def transform(template: dict[str, Any]) -> dict[str, Any]:
    """Run the SAM transform offline. Local CodeUri values are rewritten to S3 URIs as sam package would."""
    from samtranslator.translator.transform import transform as sam_transform

    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    tpl = copy.deepcopy(template)
    for res in tpl.get("Resources", {}).values():
        props = res.get("Properties", {})
        if res.get("Type") == "AWS::Serverless::Function" and isinstance(props.get("CodeUri", ""), str):
            props["CodeUri"] = "s3://qbsync-local/code.zip"
        if res.get("Type") == "AWS::Serverless::LayerVersion":
            props["ContentUri"] = "s3://qbsync-local/layer.zip"

    class _NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    return dict(sam_transform(tpl, {}, _NoManagedPolicies()))


def lint(path: Path) -> list[str]:
    """cfn-lint findings (errors and warnings) for one file."""
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), "--format", "parseable", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    return [line for line in proc.stdout.splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    path = Path(args[0]) if args else ROOT / "template.yaml"
    findings = lint(path)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "transformed.json"
        out.write_text(json.dumps(transform(load_template(path)), default=str))
        findings += [f"transformed: {f}" for f in lint(out)]
    for f in findings:
        print(f)
    print(f"template check: {len(findings)} finding(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
