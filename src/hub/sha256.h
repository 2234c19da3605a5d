// SHA-256 (FIPS 180-4), incremental: the Hub names LFS files (weights) by the SHA-256 of their
// contents, so a download is checked against it.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace ds::hub {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  std::string hex_digest();  // finishes; the object is spent afterwards

 private:
  void block(const uint8_t* p);
  std::array<uint32_t, 8> h_;
  std::array<uint8_t, 64> buf_{};
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

// The SHA-256 of a file's contents (lowercase hex); throws ds::Error when unreadable.
std::string sha256_file(const std::string& path);

}  // namespace ds::hub
