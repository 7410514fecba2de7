// Per-element math of the fused reparameterization + KL op, shared by every compiled backend.
//   s   = exp(logvar / 2)
//   z   = mu + eps * s
//   kl  = -1/2 (1 + logvar - mu^2 - s^2)                       (s^2 = exp(logvar))
//   dmu = gz + gkl * mu
//   dlv = 1/2 (gz * eps * s + gkl * (s^2 - 1))
#pragma once

#include "common.h"

namespace deepfast {

template <typename T>
DF_HD void reparameterize_kl_forward(T mu, T logvar, T eps, T& z, T& kl) {
  const T s = exp_acc(T(0.5) * logvar);
  z = mu + eps * s;
  kl = T(-0.5) * (T(1) + logvar - mu * mu - s * s);
}

template <typename T>
DF_HD void reparameterize_kl_backward(T gz, T gkl, T mu, T logvar, T eps, T& dmu, T& dlogvar) {
  const T s = exp_acc(T(0.5) * logvar);
  dmu = gz + gkl * mu;
  dlogvar = T(0.5) * (gz * eps * s + gkl * (s * s - T(1)));
}

}  // namespace deepfast
