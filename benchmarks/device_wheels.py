"""Download, here, the wheels the GPU machine lacks into .whl/ (`make device-wheels`).

The GPU machine (docs/scaling.md, "GPU: the device check") has Python 3.12, JAX, PyTorch,
scikit-learn, h5py, rich, numpy and matplotlib, no TensorFlow, Keras, pydantic, orjson or
Dask, and cannot reach a package index. This fetches Python 3.12 manylinux x86_64 wheels
of what it lacks, at the versions installed in this environment (known to work together),
and builds this package as a wheel. benchmarks/device_check.sh installs them there.
Prints each wheel and the total; exits 1 when the total passes LIMIT_MIB.
"""

from __future__ import annotations

import importlib.metadata as metadata
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT_MIB = 50
# Keras and its needs that JAX does not bring (h5py, rich, numpy, ml-dtypes are
# there); pydantic and its needs; orjson; Dask for the worker-process executor.
PACKAGES = ["keras", "namex", "optree", "absl-py", "packaging",
            "pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions",
            "orjson",
            "dask", "distributed", "cloudpickle", "fsspec", "partd", "locket", "toolz", "pyyaml", "click",
            "msgpack", "psutil", "sortedcontainers", "tblib", "tornado", "zict", "jinja2", "markupsafe"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]


def pinned(name: str) -> str:
    try:
        return f"{name}=={metadata.version(name)}"
    except metadata.PackageNotFoundError:  # not here: the newest
        return name


def main() -> int:
    target = ROOT / ".whl"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                    "--implementation", "cp", *(f"--platform={p}" for p in PLATFORMS), "-d", str(target),
                    *map(pinned, PACKAGES)], check=True)
    subprocess.run([*pip, "wheel", "--quiet", "--no-deps", "--no-build-isolation", str(ROOT), "-w", str(target)],
                   check=True)
    wheels = sorted(target.glob("*.whl"))
    total = sum(w.stat().st_size for w in wheels)
    for wheel in wheels:
        print(f"{wheel.stat().st_size / 2**20:8.2f} MiB  {wheel.name}")
    print(f"{total / 2**20:8.2f} MiB  in all, {len(wheels)} wheels in {target} (limit {LIMIT_MIB} MiB)")
    if total > LIMIT_MIB * 2**20:
        print(f"device-wheels: over {LIMIT_MIB} MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
