"""The wheel, installed outside the checkout, runs: ``pip wheel`` builds it (the build backend, hatchling,
comes from the package index into pip's isolated build environment), a fresh venv that sees this
environment's packages (torch & co. need no download) gets it with ``--no-deps``, and from a folder
outside the checkout ``distillkit run`` reads its config from the installed package and writes
``results.json``; ``distillkit list`` shows every group."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from support import ROOT


pytestmark = pytest.mark.slow


def run(command, cwd, env, timeout=900):
    out = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(map(str, command))}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def test_installed_wheel_runs_from_outside_the_checkout(tmp_path):
    started = time.monotonic()
    # the environment of a user: no PYTHONPATH into the checkout, an isolated cache, no tracker
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(DISTILLKIT_PROGRESS="0", WANDB_MODE="offline")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", tmp_path / "dist", ROOT], tmp_path, env)
    wheel, = (tmp_path / "dist").glob("distillkit-*.whl")

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path, env)
    python = venv / "bin" / "python"
    purelib = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env).stdout
    # this environment's site-packages after the venv's own: torch & co. without a download. A path in a
    # .pth file is not a site dir, so the editable install's own .pth (pointing at the checkout) stays unread.
    (Path(purelib.strip()) / "project_packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", wheel], tmp_path, env)

    where = run([python, "-c", "import distillkit.config as c; print(c.config_dir())"], tmp_path, env).stdout.strip()
    assert Path(where) == Path(purelib.strip()) / "distillkit" / "conf", where
    assert ROOT not in Path(where).parents

    work = tmp_path / "elsewhere"
    work.mkdir()
    distillkit = venv / "bin" / "distillkit"
    run([distillkit, "run", "budget=smoke", "tracker=none", "dataset.train_per_class=10"], work, env)
    results, = work.glob("outputs/dm/digits_ipc10/*/results.json")
    payload = json.loads(results.read_text())
    assert payload["method"] == "dm" and payload["budget"] == "smoke" and 0 <= payload["accuracy"]["mean"] <= 100
    # Hydra records where the primary config came from: the installed package
    hydra = OmegaConf.load(results.parent / ".hydra" / "hydra.yaml")
    sources = {source.provider: source.path for source in hydra.hydra.runtime.config_sources}
    assert sources["main"] == where, sources

    listed = run([distillkit, "list"], work, env).stdout
    assert "\nschedule:\n" in listed and "rounds" in listed and "\nrole:\n" in listed
    print(f"\nwheel build, install and smoke run: {time.monotonic() - started:.0f} s")
