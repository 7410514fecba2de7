// Per-element math of the cycle-consistency L1 loss, shared by every compiled backend.
//   loss    = scale * sum_i |rec_i - orig_i|        scale = weight / N ("mean") or weight ("sum")
//   drec_i  = c * sign(rec_i - orig_i)              c = grad * scale; sign 0 where equal or NaN,
//   dorig_i = -drec_i                               as in torch's l1_loss backward
#pragma once

#include "common.h"

namespace deepfast {

template <typename T>
DF_HD T cycle_l1_abs_diff(T rec, T orig) {
  const T d = rec - orig;
  return d < T(0) ? -d : d;
}

template <typename T>
DF_HD T cycle_l1_grad(T rec, T orig, T c) {
  const T d = rec - orig;
  return d > T(0) ? c : (d < T(0) ? -c : T(0));
}

}  // namespace deepfast
