"""Loading the extension: a copy of the package without its compiled ``_C`` (Python started inside
a source clone after ``pip install .``) must say so once, plainly, with the fix; a pure-Python
install (DSA_FAST_NO_EXT=1, or no build expected anywhere) stays silent. Importing it as a user's
script does after ``tools/dev.sh`` set-up: from any folder, and from the folder that holds a clone
named ``dsa_fast``."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import dsa_fast

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, warnings
import torch
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import dsa_fast
    import dsa_fast._ops  # a second import: no second warning
    import importlib; importlib.import_module("dsa_fast")
print(json.dumps({
    "has_ops": dsa_fast.has_ops(),
    "why": dsa_fast._ops.why_unavailable(torch.empty(0)),
    "file": dsa_fast.__file__,
    "warnings": [str(w.message) for w in caught if "dsa_fast" in str(w.message)],
}))
"""


def _copy_without_ext(dst: Path, with_setup: bool) -> Path:
    shutil.copytree(ROOT / "dsa_fast", dst / "dsa_fast", ignore=shutil.ignore_patterns("_C*", "__pycache__"))
    if with_setup:
        (dst / "setup.py").write_text("# the source tree's build script\n")
    return dst


def _probe(cwd: Path, extra_path=(), env_extra=None) -> dict:
    """PROBE in ``cwd`` with only ``cwd``, ``extra_path`` and the installed libraries on sys.path:
    ``-S`` skips site-packages' .pth files, so an install of this clone (tools/dev.sh installs it
    editable) is not there; site-packages itself goes on PYTHONPATH for torch."""
    import site

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DSA_FAST_NO_EXT")}
    env["PYTHONPATH"] = os.pathsep.join([str(cwd), *map(str, extra_path), *site.getsitepackages()])
    env.update(env_extra or {})
    proc = subprocess.run([sys.executable, "-S", "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(out["file"]).resolve().parent == (cwd / "dsa_fast").resolve(), "imported the wrong copy"
    return out


def test_source_folder_without_build_warns_once(tmp_path):
    src = _copy_without_ext(tmp_path, with_setup=True)
    out = _probe(src)
    assert not out["has_ops"]
    assert "circular" not in out["why"]
    assert "not built" in out["why"] and str(src / "dsa_fast") in out["why"]
    assert len(out["warnings"]) == 1, out["warnings"]
    msg = out["warnings"][0]
    assert "build_ext --inplace" in msg and "outside the source folder" in msg and "reference" in msg


@pytest.mark.skipif(not dsa_fast.has_ops(), reason="needs a built dsa_fast._C to shadow")
def test_shadowed_installed_build_is_named(tmp_path):
    """An unbuilt copy first on sys.path, a built one behind it (no setup.py beside the first)."""
    src = _copy_without_ext(tmp_path, with_setup=False)
    out = _probe(src, extra_path=[ROOT])
    assert not out["has_ops"]
    assert len(out["warnings"]) == 1
    assert str((ROOT / "dsa_fast").resolve()) in out["warnings"][0]


def test_no_warning_when_disabled_or_pure_python(tmp_path):
    src = _copy_without_ext(tmp_path, with_setup=True)
    out = _probe(src, env_extra={"DSA_FAST_NO_EXT": "1"})
    assert not out["has_ops"] and out["why"] == "disabled by DSA_FAST_NO_EXT=1" and out["warnings"] == []
    plain = _copy_without_ext(tmp_path / "plain", with_setup=False)
    out = _probe(plain)
    assert not out["has_ops"] and out["warnings"] == []


# A user's own script: the README's drop-in call, then where dsa_fast came from.
USER_SCRIPT = r"""
import json
import torch
import dsa_fast
y = dsa_fast.DiffAugment(torch.rand(2, 1, 8, 8), "crop_flip", seed=3, param=dsa_fast.ParamDiffAug())
print(json.dumps({"file": dsa_fast.__file__, "has_ops": dsa_fast.has_ops(), "shape": list(y.shape)}))
"""


def _user_script(folder: Path) -> dict:
    """Run USER_SCRIPT as ``python mine.py`` in ``folder`` with no PYTHONPATH, as a user would."""
    (folder / "mine.py").write_text(USER_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DSA_FAST_NO_EXT")}
    proc = subprocess.run([sys.executable, "mine.py"], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


SET_UP_VENV = pytest.mark.skipif(
    not (Path(sys.prefix) / ".dsa_fast-stamp").is_file(),
    reason="checks the venv that tools/dev.sh set-up made (it has .dsa_fast-stamp); this one is not")


@SET_UP_VENV
def test_a_script_beside_a_clone_named_dsa_fast_imports_the_package(tmp_path):
    """``git clone`` names the clone dsa_fast; a script in the folder that holds it finds that root
    folder first on sys.path, as a namespace portion. The set-up's install is a path entry, so the
    regular package found later wins: the package inside, the clone's own build included."""
    (tmp_path / "dsa_fast").symlink_to(ROOT, target_is_directory=True)
    out = _user_script(tmp_path)
    assert Path(out["file"]).resolve() == ROOT / "dsa_fast" / "__init__.py"
    assert out["has_ops"] == dsa_fast.has_ops() and out["shape"] == [2, 1, 8, 8]


@SET_UP_VENV
def test_setup_installs_this_clone_into_its_venv(tmp_path):
    url = json.loads(metadata.distribution("dsa_fast").read_text("direct_url.json") or "{}")
    assert url.get("dir_info", {}).get("editable") is True and url.get("url") == ROOT.as_uri(), url
    assert (Path(sys.prefix) / "bin" / "dsa-condense").is_file()
    out = _user_script(tmp_path)  # a folder with nothing of dsa_fast in it
    assert Path(out["file"]).resolve() == ROOT / "dsa_fast" / "__init__.py"
    assert out["has_ops"] == dsa_fast.has_ops() and out["shape"] == [2, 1, 8, 8]
