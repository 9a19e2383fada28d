"""``pip install`` of the wheel, without the repository: presets, spaces and studies ship as package data.

The wheel goes into a fresh venv that sees this venv's dependencies through a ``.pth`` path line (a path line is
appended to ``sys.path``, but the ``.pth`` files inside that folder, the editable-install hook among them, are not
processed), so ``matryoshka2d`` there can only be the installed copy. Commands run from a folder outside the repo.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from matryoshka2d.testing import make_tiny_bert

pytestmark = pytest.mark.e2e  # starts processes: the full suite only

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("configs", "spaces", "studies")
PROBE = """import json, matryoshka2d, matryoshka2d.presets as p, matryoshka2d.config as c
print(json.dumps({"file": matryoshka2d.__file__, "names": {k: p.names(k) for k in ("configs", "spaces", "studies")},
                  "overlays": {n: c.load_overlay(n) for n in ("sweep", "smoke")}}))"""


def _run(cmd: list, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd[:4]} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed (built from a copy, so the repo gets no build/ folder)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "platform", src / "platform", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []  # else: fetch it
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", tmp / "dist", src], cwd=tmp)
    (wheel,) = (tmp / "dist").glob("matryoshka2d-*.whl")
    env = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", env], cwd=tmp)
    python = env / "bin" / "python"
    # installed before the .pth exists: pip must not see (or touch) this venv's editable matryoshka2d
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel], cwd=tmp)
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=tmp).stdout.strip())
    (site / "_m2d_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return env


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return env | {"M2D_HOME": str(home), "HF_HUB_OFFLINE": "1"}


def write_data(root: Path) -> Path:
    """A tiny data dir in the default layout: SNLI triplets (the v2 preset's training set) and STS-B dev pairs."""
    words = ["a cat", "a dog", "the man", "a woman", "two kids", "the bird", "a horse", "the car"]
    verbs = ["sleeps", "runs", "eats", "plays", "sings", "swims", "reads", "waits"]
    rows = ["split\tanchor\tentailment\tcontradiction"]
    rows += [f"dev\t{w} {v} outside\t{w} {v}\t{w} never {v}" for w in words for v in verbs[:4]]
    (root / "snli-senteval").mkdir(parents=True)
    (root / "snli-senteval" / "snli_devtest_triplets.tsv.gz").write_bytes(gzip.compress("\n".join(rows).encode()))
    pairs = [f"main-captions\tMSRvid\t2012test\t{i:04d}\t{i % 6:.1f}\t{words[i % 8]} {verbs[i % 7]}\t"
             f"{words[(i * 3) % 8]} {verbs[i % 5]}" for i in range(24)]
    (root / "stsb").mkdir()
    (root / "stsb" / "sts-dev.csv").write_text("\n".join(pairs) + "\n")
    return root


def test_installed_package_is_the_wheel_with_every_preset(venv, tmp_path):
    out = _run([venv / "bin" / "python", "-c", PROBE], cwd=tmp_path, env=_env(tmp_path)).stdout
    found = json.loads(out.strip().splitlines()[-1])
    site = Path(_run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     cwd=tmp_path).stdout.strip())
    assert Path(found["file"]).resolve().is_relative_to(site.resolve()), found["file"]
    assert not Path(found["file"]).resolve().is_relative_to(ROOT), found["file"]
    for kind in KINDS:
        assert found["names"][kind] == sorted(p.stem for p in (ROOT / "experiments" / kind).glob("*.yaml")), kind
    assert found["overlays"]["smoke"]["train"]["max_steps"] == 10 and found["overlays"]["sweep"]["eval"]


def test_installed_m2d_trains_a_preset_outside_the_repo(venv, tmp_path):
    tiny = make_tiny_bert(tmp_path / "bert", num_layers=2, hidden_size=32)
    data = write_data(tmp_path / "data")
    out = tmp_path / "run"
    work = tmp_path / "cwd"
    work.mkdir()
    _run([venv / "bin" / "m2d", "train", "--config", "v2", "--data-dir", data, "--out", out,
          "--set", f"model.name={tiny}", "--set", "model.max_length=16", "--set", "train.max_steps=2",
          "--set", "train.batch_size=8", "--set", "eval.dims=[8,32]", "--set", "method.pca_align.k=8",
          "--set", "method.last_layer_dims=8,H", "--set", "method.prior_dims=8"], cwd=work, env=_env(tmp_path))
    assert (out / "model" / "modules.json").is_file()
    assert (out / "grid.csv").read_text().startswith("dataset,split,metric,layer,dim,value")


def test_installed_m2d_has_every_verb_and_plans_a_study(venv, tmp_path):
    """A wheel user runs the studies with ``m2d reproduce`` (no experiments/ folder) and sees the version."""
    m2d, env = venv / "bin" / "m2d", _env(tmp_path)
    version = _run([m2d, "--version"], cwd=tmp_path, env=env).stdout
    assert version.strip().endswith(importlib.metadata.version("matryoshka2d"))
    verbs = _run([m2d, "--help"], cwd=tmp_path, env=env).stdout
    for verb in ("eval", "train", "sweep", "reproduce", "compare-trials", "compare", "report", "pick", "export"):
        assert f"    {verb} " in verbs or f"    {verb}\n" in verbs, verb
    plan = _run([m2d, "reproduce", "--study", "sts", "--scale", "smoke", "--dry-run"], cwd=tmp_path, env=env).stdout
    assert "reproduce: sts at scale smoke" in plan and "v2" in plan
