"""``make audit``: pip-audit over the pinned runtime set (requirements*.txt), against PyPI's vulnerability data.

A known vulnerability fails the run. Where the vulnerability service cannot be reached, or knows none of the pinned
versions (these machines reach a PyPI stand-in without that data), the run says so in one line and passes: nothing
could be checked, which README records. pip-audit's exit status alone cannot tell the two apart.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = ("requirements.txt", "requirements-triton.txt")


def _audit(requirements: Path) -> list[dict] | None:
    """pip-audit's dependencies (with their vulnerabilities or why they were skipped), or None if it could not run."""
    args = [sys.executable, "-m", "pip_audit", "--no-deps", "--disable-pip", "--progress-spinner", "off"]
    args += ["--timeout", "10", "-f", "json"]
    done = subprocess.run([*args, "-r", str(requirements)], capture_output=True, text=True, timeout=600)
    try:
        return json.loads(done.stdout).get("dependencies", [])
    except ValueError:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"audit: pip-audit could not check {requirements.name}: {last}")
        return None


def main() -> int:
    deps = []
    for name in FILES:  # one file at a time: the Triton venv pins its own numpy
        deps += _audit(ROOT / name) or []
    found = [(d["name"], d.get("version"), v["id"]) for d in deps for v in d.get("vulns", [])]
    skipped = sorted({d["name"] for d in deps if d.get("skip_reason")})
    for name, version, vuln in found:
        print(f"audit: {name} {version}: {vuln}")
    unknown = f"; {len(skipped)} unknown to the vulnerability service reached here" if skipped else ""
    print(f"audit: {len(deps) - len(skipped)} of {len(deps)} pinned packages audited, {len(found)} known "
          f"vulnerabilities{unknown}")  # fmt: skip
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
