// A vectorisable exp for the CPU reference ops. std::exp/std::tanh are scalar library
// calls GCC will not vectorise without -ffast-math; this is plain float arithmetic that it
// does, accurate to a few ulp. It vectorises only with -fno-math-errno -fno-trapping-math
// (set for the whole tree: nothing here relies on errno or floating-point traps).
#pragma once
#include <algorithm>
#include <bit>
#include <cstdint>

namespace lt::cpu {

// e^x: x = k*ln2 + r with |r| <= ln2/2, e^r by a degree-6 polynomial (Taylor, relative error
// < 2e-7 on that interval), times 2^k built in the exponent bits. This core needs x in
// [-87.3, 88.3] (2^k a normal, finite float); exp_approx below clamps any float into it.
// Callers that bound x themselves may call the core directly (see gelu_forward in ops.cpp).
inline float exp_approx_core(float x) {
  // round to nearest by adding and removing 1.5 * 2^23 (plain arithmetic, so it vectorises)
  const float k = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;
  const float r = (x - k * 0.693145751953125f) - k * 1.42860682030941723e-6f;  // ln2 split hi+lo
  float p = 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const int32_t bits = ((int32_t)k + 127) << 23;
  return p * std::bit_cast<float>(bits);
}

inline float exp_approx(float x) { return exp_approx_core(std::min(std::max(x, -87.3f), 88.3f)); }

}  // namespace lt::cpu
