// The packed transform ω as the kernels read it: one row of DSA_OMEGA_WIDTH doubles per sample
// (a (B, 15) float64 tensor; B = 1 broadcasts over the batch). The Python side
// (dsa_fast/_ops.py, pack_omega) writes this layout; keep the two in sync.
#pragma once

#include <cstdint>

#include "../common/macros.h"

namespace dsa_fast {

// Which ops a fused call applies. They always run in this order (the order of the official
// 'color_crop_cutout_flip_scale_rotate' chain): brightness, saturation, contrast, crop, cutout,
// flip, scale, rotate.
enum OpFlag : int64_t {
  kBrightness = 1,
  kSaturation = 2,
  kContrast = 4,
  kCrop = 8,
  kCutout = 16,
  kFlip = 32,
  kScale = 64,
  kRotate = 128,
  kAllOps = 255,
};

// Column of each parameter in a packed row.
enum OmegaSlot : int {
  kSlotShift = 0,     // brightness: y = x + shift
  kSlotSat = 1,       // saturation factor
  kSlotCon = 2,       // contrast factor
  kSlotCropH = 3,     // crop: y[i, j] = x[i + crop_h, j + crop_w]
  kSlotCropW = 4,
  kSlotCutTop = 5,    // cutout box: rows [top, top + h), cols [left, left + w)
  kSlotCutLeft = 6,
  kSlotCutH = 7,
  kSlotCutW = 8,
  kSlotFlip = 9,      // 1: mirror along W
  kSlotScaleW = 10,   // scale theta = [[scale_w, 0, 0], [0, scale_h, 0]]
  kSlotScaleH = 11,
  kSlotCos = 12,      // rotate theta = [[cos, -sin, 0], [sin, cos, 0]]
  kSlotSin = 13,
  kSlotActive = 14,   // the ops (OpFlag bits) that apply to this sample: lets one call choose
                      // per sample among alternatives ('S' mode) with no host round trip
  kOmegaWidth = 15,
};

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
