"""docs/drop-in.md: every recipe block of the page, run as written against a stand-in module laid
out as its family lays out its code (the stand-ins are written here; they define their own DSA
copies as stubs that must no longer be called after the swap)."""
from __future__ import annotations

import os
import re
import types

import pytest
import torch

import dsa_fast
from dsa_fast import DiffAugment, ParamDiffAug

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "drop-in.md")


def _recipes():
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    return dict(re.findall(r"<!-- recipe: (\w+) -->\n```python(?: no-run)?\n(.*?)```", text, flags=re.S))


# A utils.py of the DC/DSA/DM and MTT families: its own copies, and functions that call them by
# their module-level names at run time (as epoch() and evaluate_synset() do).
_UTILS = '''
import torch

class ParamDiffAug:
    def __init__(self):
        self.aug_mode = "S"
        self.ratio_rotate = 15.0

def DiffAugment(x, strategy="", seed=-1, param=None):
    raise AssertionError("the code base's own DiffAugment ran")

def augment_batch(x, strategy, seed, param):
    return DiffAugment(x, strategy, seed=seed, param=param)

def augment_list(xs, strategy, seed, param):
    """A list helper in the manner of TESLA's DiffAugmentList: it writes the call state and reads
    the settings of whatever ParamDiffAug it is given."""
    param.batchmode = seed != -1
    param.latestseed = seed
    assert param.aug_mode in ("S", "M") and param.ratio_rotate > 0
    return [DiffAugment(x, strategy, seed=seed, param=param) for x in xs]
'''

_EVALUATOR = '''
import torch

class EvaluatorUtils:
    class ParamDiffAug:
        def __init__(self):
            self.aug_mode = "S"

    def DiffAugment(x, strategy="", seed=-1, param=None):
        raise AssertionError("the evaluator's own DiffAugment ran")

    @staticmethod
    def epoch_batch(img, args):
        return EvaluatorUtils.DiffAugment(img, args.dsa_strategy, param=args.dsa_param)
'''


def _module(source: str, recipe: str = "") -> types.ModuleType:
    m = types.ModuleType("utils")
    exec(compile(source + "\n" + recipe, "utils.py", "exec"), m.__dict__)
    return m


def test_every_recipe_of_the_page_is_tested():
    assert set(_recipes()) == {"dc", "mtt", "dcbench"}


def _rotate_case():
    torch.manual_seed(0)
    return torch.randn(3, 1, 28, 36)


def test_dc_family_recipe():
    utils = _module(_UTILS, _recipes()["dc"])
    assert utils.DiffAugment is dsa_fast.DiffAugment and utils.ParamDiffAug is dsa_fast.ParamDiffAug
    param = utils.ParamDiffAug()
    assert param.align_corners is False and param == ParamDiffAug()
    x = _rotate_case()
    got = utils.augment_batch(x, "rotate", 7, param)
    torch.testing.assert_close(got, DiffAugment(x, "rotate", seed=7, param=ParamDiffAug()), rtol=0, atol=0)


def test_mtt_family_recipe_samples_with_align_corners_true():
    utils = _module(_UTILS, _recipes()["mtt"])
    assert utils.DiffAugment is dsa_fast.DiffAugment
    param = utils.ParamDiffAug()
    assert isinstance(param, ParamDiffAug) and param.align_corners is True
    assert utils.ParamDiffAug(aug_mode="M").aug_mode == "M" and utils.ParamDiffAug(align_corners=False).align_corners \
        is False
    x = _rotate_case()
    got = utils.augment_batch(x, "rotate", 7, param)
    same = DiffAugment(x, "rotate", seed=7, param=ParamDiffAug(align_corners=True), backend="reference")
    other = DiffAugment(x, "rotate", seed=7, param=ParamDiffAug(align_corners=False), backend="reference")
    torch.testing.assert_close(got, same, rtol=1e-5, atol=1e-5)
    assert (got - other).abs().max() > 0.02  # a non-square image: the settings resample different points
    # the list helper (TESLA's DiffAugmentList's manner) works with the new settings objects
    ys = utils.augment_list([x, x[:1]], "rotate", 7, param)
    torch.testing.assert_close(ys[1], ys[0][:1], rtol=1e-6, atol=1e-6)  # seeded: the same transform
    assert param.batchmode is True


def test_dcbench_evaluator_recipe():
    # The import swap alone leaves the class attributes as they were.
    plain = _module(_EVALUATOR, _recipes()["dc"])
    args = types.SimpleNamespace(dsa_strategy="color_crop", dsa_param=ParamDiffAug())
    with pytest.raises(AssertionError, match="evaluator's own DiffAugment"):
        plain.EvaluatorUtils.epoch_batch(torch.zeros(2, 3, 8, 8), args)
    ev = _module(_EVALUATOR, _recipes()["dcbench"])
    args = types.SimpleNamespace(dsa_strategy="color_crop", dsa_param=ev.EvaluatorUtils.ParamDiffAug())
    assert isinstance(args.dsa_param, ParamDiffAug) and args.dsa_param.align_corners is False
    x = torch.randn(4, 3, 8, 8)
    torch.manual_seed(3)
    got = ev.EvaluatorUtils.epoch_batch(x, args)
    torch.manual_seed(3)
    torch.testing.assert_close(got, DiffAugment(x, "color_crop", param=ParamDiffAug()), rtol=0, atol=0)
