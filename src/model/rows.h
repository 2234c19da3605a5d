// Copying selected rows between packed activation buffers (grouping the slices of a batch by path).
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

namespace ds {

// dst[i, 0:width] = src[rows[i], 0:width]
inline void gather_rows(const float* src, int64_t ld_src, int64_t width, const std::vector<int32_t>& rows,
                        float* dst, int64_t ld_dst) {
  for (size_t i = 0; i < rows.size(); ++i)
    std::copy_n(src + int64_t(rows[i]) * ld_src, width, dst + int64_t(i) * ld_dst);
}

// dst[rows[i], 0:width] = src[i, 0:width]
inline void scatter_rows(const float* src, int64_t ld_src, int64_t width, const std::vector<int32_t>& rows,
                         float* dst, int64_t ld_dst) {
  for (size_t i = 0; i < rows.size(); ++i)
    std::copy_n(src + int64_t(i) * ld_src, width, dst + int64_t(rows[i]) * ld_dst);
}

}  // namespace ds
