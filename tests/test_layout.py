"""The kernels' layout is the op table's: csrc/kernels/layout.h is what tools/gen_layout.py writes
from dsa_fast/ops_table.py (a stale header fails here, so CI regenerates and compares), and its
enums, parsed back, are the table's flags, columns, plan and settings slots and raw-draw counts."""
from __future__ import annotations

import re
from pathlib import Path

from dsa_fast import ops_table as t
from tools import gen_layout

ROOT = Path(__file__).resolve().parents[1]
HEADER = ROOT / "csrc" / "kernels" / "layout.h"


def _enum(text: str, name: str) -> dict:
    body = re.search(rf"enum {name}[^{{]*\{{(.*?)\}};", text, re.S).group(1)
    return {k: int(v) for k, v in re.findall(r"(\w+) = (-?\d+),", body)}


def test_committed_header_is_the_generated_one():
    assert HEADER.read_text() == gen_layout.render(), "csrc/kernels/layout.h is stale: run python tools/gen_layout.py"


def test_header_enums_are_the_table():
    text = HEADER.read_text()
    flags, slots = _enum(text, "OpFlag"), _enum(text, "OmegaSlot")
    for spec in t.OP_SPECS:
        camel = "".join(p.capitalize() for p in spec.name.split("_"))
        assert flags[f"k{camel}"] == t.FLAGS[spec.name] == 1 << t.BIT_INDEX[spec.name]
        assert [slots[f"kSlot{s}"] for s in spec.slots] == list(t.COLUMNS[spec.name])
    assert flags["kAllOps"] == sum(t.FLAGS.values())
    assert slots["kSlotActive"] == t.ACTIVE_COLUMN and slots["kOmegaWidth"] == t.OMEGA_WIDTH
    assert sorted(slots.values()) == list(range(t.OMEGA_WIDTH + 1))  # every column once, no gap
    plan = _enum(text, "PlanSlot")
    assert {k[len("kPlan"):]: v for k, v in plan.items()} == t.PLAN
    assert plan["kPlanGroup"] - plan["kPlanDraw"] == len(t.OP_SPECS) == plan["kPlanSize"] - plan["kPlanGroup"]
    assert len(_enum(text, "SettingSlot")) == len(t.DEVICE_SETTINGS) + 1
    assert len(_enum(text, "CompatSettingSlot")) == len(t.COMPAT_SETTINGS) + 1
    raw = re.search(r"kRawDraws\[kNumOps\] = \{([^}]*)\}", text).group(1)
    assert [int(v) for v in raw.split(",")] == [len(s.raw) for s in t.OP_SPECS]
    assert f"kMaxRaw = {sum(len(s.raw) for s in t.OP_SPECS)};" in text


def test_no_hand_written_layout_number_elsewhere():
    """Adding an op renumbers layout.h only: no other C++ file defines a flag, column, plan or
    settings slot, and no Python module but the table numbers them."""
    defined = re.compile(r"\b(k(?:Slot|Plan|Set|C|Bit)[A-Z]\w*|k(?:%s)|kNumOps|kMaxRaw)\s*=\s*[-\d(]"
                         % "|".join("".join(p.capitalize() for p in s.name.split("_")) for s in t.OP_SPECS))
    for path in sorted((ROOT / "csrc").rglob("*")):
        if path.suffix in (".h", ".cuh", ".cpp", ".cu") and path != HEADER:
            hits = defined.findall(path.read_text())
            assert not hits, f"{path.relative_to(ROOT)} defines layout constants {hits}"
    numbered = re.compile(r"^(PLAN_\w+|KEY_(?:INT|TENSOR|COUNTER)|\w*(?:SLOT|COLUMN)\w*)\s*(?:,[^=]*)?=\s*\d", re.M)
    for path in sorted((ROOT / "dsa_fast").rglob("*.py")):
        hits = numbered.findall(path.read_text())
        assert not hits, f"{path.relative_to(ROOT)} numbers layout slots by hand: {hits}"
