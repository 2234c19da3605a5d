// Byte-level BPE by rank (tiktoken semantics): a piece that is itself a token is one id; otherwise
// start from single bytes and repeatedly merge the adjacent pair whose concatenation has the lowest
// rank, the leftmost such pair on ties, until no adjacent pair is a token.
// Ranks live in a flat open-addressing hash table over one byte arena (designed for Kimi's 163,584
// ranks), with a direct 64K table for two-byte pairs. Short pieces merge on a small array
// (quadratic, tiny constants); long pieces use a heap over a linked list (O(n log n)), which makes
// exactly the same choices.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ds {

class BpeRanks {
 public:
  static constexpr int32_t kNone = INT32_MAX;

  // tokens[rank] = the token's bytes. Every one of the 256 single bytes must be a token, and no
  // two ranks may share bytes (throws ds::Error).
  void build(const std::vector<std::string>& tokens);

  // Rank of these bytes, or kNone.
  int32_t find(std::string_view bytes) const;

  // Appends the ids of one pre-tokenizer piece.
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
  // The same for a piece known not to be a single token (merges from bytes).
  void merge(std::string_view piece, std::vector<int32_t>& out) const;

  // The two merge strategies, exposed for tests (encode_piece picks by length).
  void merge_small(std::string_view piece, std::vector<int32_t>& out) const;
  void merge_heap(std::string_view piece, std::vector<int32_t>& out) const;

  size_t size() const { return count_; }

 private:
  // 16 bytes: the first 8 bytes of the token inline (most tokens fit, so most comparisons touch
  // no other memory), its rank (kEmpty: free slot), and length + offset into arena_.
  struct Slot {
    uint64_t head;
    int32_t rank;
    uint32_t len_offset;  // len << 24 | offset
  };
  static constexpr int32_t kEmpty = -1;
  static constexpr size_t kMaxInlineLen = 255;  // longer tokens go to long_tokens_
  int32_t pair_rank(const char* p) const {
    return pairs_[(size_t(uint8_t(p[0])) << 8) | uint8_t(p[1])];
  }
  int32_t span_rank(const char* p, size_t n) const { return n == 2 ? pair_rank(p) : find({p, n}); }

  std::string arena_;
  std::vector<Slot> slots_;
  std::vector<std::pair<std::string, int32_t>> long_tokens_;  // tokens over kMaxInlineLen bytes
  size_t mask_ = 0;
  size_t count_ = 0;
  std::vector<int32_t> pairs_;  // [256 * 256]: rank of each two-byte token
  int32_t bytes_[256] = {};     // rank of each single byte
};

}  // namespace ds
