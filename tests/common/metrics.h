// Error metrics shared by every numerical test (CPU twins, GPU op harness, golden models): one
// definition of the relative L2 error the tolerances are written against.
#pragma once
#include <cmath>
#include <cstddef>
#include <vector>

namespace ds::test {

// ||a - ref|| / ||ref|| in double (||a - ref|| when ref is all zeros); +infinity when any value is not
// finite or the lengths differ, so a broken output can never pass a tolerance.
template <typename R> double rel_l2(const float* a, const R* ref, size_t n) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(double(ref[i]))) return INFINITY;
    const double d = double(a[i]) - double(ref[i]);
    num += d * d;
    den += double(ref[i]) * double(ref[i]);
  }
  return den > 0.0 ? std::sqrt(num / den) : std::sqrt(num);
}
template <typename R> double rel_l2(const std::vector<float>& a, const std::vector<R>& ref) {
  return a.size() == ref.size() ? rel_l2(a.data(), ref.data(), a.size()) : INFINITY;
}

}  // namespace ds::test
