// The packed transform ω as the kernels read it: one row of kOmegaWidth doubles per sample
// (a (B, kOmegaWidth) float64 tensor; B = 1 broadcasts over the batch). The Python side
// (dsa_fast/fused.py, pack_omega) writes the same layout: both read it from the op table
// (dsa_fast/ops_table.py; csrc/kernels/layout.h is generated from it).
#pragma once

#include <cstdint>

#include "layout.h"
#include "macros.h"

namespace dsa_fast {

// Which ops a fused call applies (OpFlag) and the column of each parameter in a packed row
// (OmegaSlot) come from the op table (layout.h). The ops always run in the canonical order of
// the table (that of the official 'color_crop_cutout_flip_scale_rotate' chain). kSlotActive holds
// the ops (OpFlag bits) that apply to the sample: lets one call choose per sample among
// alternatives ('S' mode) with no host round trip.

template <typename acc_t>
struct Omega {
  acc_t shift, sat, con;
  int crop_h, crop_w;
  int cut_top, cut_left, cut_h, cut_w;
  bool flip;
  acc_t scale_w, scale_h, cos, sin;
  int64_t active;

  DSA_HOST_DEVICE static Omega load(const double* row) {
    Omega o;
    o.shift = static_cast<acc_t>(row[kSlotShift]);
    o.sat = static_cast<acc_t>(row[kSlotSat]);
    o.con = static_cast<acc_t>(row[kSlotCon]);
    o.crop_h = static_cast<int>(row[kSlotCropH]);
    o.crop_w = static_cast<int>(row[kSlotCropW]);
    o.cut_top = static_cast<int>(row[kSlotCutTop]);
    o.cut_left = static_cast<int>(row[kSlotCutLeft]);
    o.cut_h = static_cast<int>(row[kSlotCutH]);
    o.cut_w = static_cast<int>(row[kSlotCutW]);
    o.flip = row[kSlotFlip] != 0.0;
    o.scale_w = static_cast<acc_t>(row[kSlotScaleW]);
    o.scale_h = static_cast<acc_t>(row[kSlotScaleH]);
    o.cos = static_cast<acc_t>(row[kSlotCos]);
    o.sin = static_cast<acc_t>(row[kSlotSin]);
    o.active = static_cast<int64_t>(row[kSlotActive]);
    return o;
  }
};

}  // namespace dsa_fast
