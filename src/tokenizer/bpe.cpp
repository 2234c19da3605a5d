#include "tokenizer/bpe.h"

#include <cstring>
#include <queue>

#include "core/error.h"

namespace ds {
namespace {

inline uint64_t mix(uint64_t h) {
  h ^= h >> 32;
  h *= 0xd6e8feb86659fd93ull;
  h ^= h >> 32;
  return h;
}

inline uint64_t hash_bytes(const char* p, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t(n) * 0xff51afd7ed558ccdull);
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
    h ^= h >> 29;
    p += 8;
    n -= 8;
  }
  if (n) {
    uint64_t w = 0;
    std::memcpy(&w, p, n);
    h = (h ^ w) * 0x94d049bb133111ebull;
  }
  return mix(h);
}


constexpr size_t kSmallPiece = 128;  // bytes; above this the heap merge is used

}  // namespace

inline uint64_t head_of(const char* p, size_t n) {
  uint64_t h = 0;
  std::memcpy(&h, p, n < 8 ? n : 8);
  return h;
}

void BpeRanks::build(const std::vector<std::string>& tokens) {
  count_ = tokens.size();
  size_t cap = 16;
  while (cap < count_ + count_ / 2) cap <<= 1;  // load factor <= 2/3
  slots_.assign(cap, Slot{0, kEmpty, 0});
  mask_ = cap - 1;
  arena_.clear();
  long_tokens_.clear();
  pairs_.assign(256 * 256, kNone);
  for (int32_t& b : bytes_) b = kNone;
  for (size_t rank = 0; rank < tokens.size(); ++rank) {
    const std::string& t = tokens[rank];
    DS_CHECK(!t.empty(), "tokenizer: rank {} has empty bytes", rank);
    DS_CHECK(find(t) == kNone, "tokenizer: the bytes of rank {} repeat rank {}", rank, find(t));
    if (t.size() == 1) bytes_[uint8_t(t[0])] = int32_t(rank);
    if (t.size() == 2) pairs_[(size_t(uint8_t(t[0])) << 8) | uint8_t(t[1])] = int32_t(rank);
    if (t.size() > kMaxInlineLen) {
      long_tokens_.emplace_back(t, int32_t(rank));
      continue;
    }
    DS_CHECK(arena_.size() + t.size() < (1u << 24), "tokenizer: vocabulary bytes exceed 16 MiB");
    uint64_t h = hash_bytes(t.data(), t.size());
    size_t i = size_t(h) & mask_;
    while (slots_[i].rank != kEmpty) i = (i + 1) & mask_;
    slots_[i] = Slot{head_of(t.data(), t.size()), int32_t(rank), uint32_t(t.size() << 24 | arena_.size())};
    arena_ += t;
  }
  for (int b = 0; b < 256; ++b)
    DS_CHECK(bytes_[b] != kNone, "tokenizer: byte 0x{:02x} is not a token (byte-level BPE needs all 256)", b);
}

int32_t BpeRanks::find(std::string_view bytes) const {
  const size_t n = bytes.size();
  if (n == 1 && !slots_.empty()) return bytes_[uint8_t(bytes[0])];
  if (n == 2 && !pairs_.empty()) return pair_rank(bytes.data());
  if (n == 0 || slots_.empty()) return kNone;
  if (n > kMaxInlineLen) {
    for (const auto& [t, r] : long_tokens_)
      if (t == bytes) return r;
    return kNone;
  }
  const uint64_t head = head_of(bytes.data(), n);
  const uint32_t len_tag = uint32_t(n) << 24;
  for (size_t i = size_t(hash_bytes(bytes.data(), n)) & mask_;; i = (i + 1) & mask_) {
    const Slot& s = slots_[i];
    if (s.rank == kEmpty) return kNone;
    if (s.head == head && (s.len_offset & 0xFF000000u) == len_tag &&
        (n <= 8 || std::memcmp(arena_.data() + (s.len_offset & 0xFFFFFFu) + 8, bytes.data() + 8, n - 8) == 0))
      return s.rank;
  }
}

void BpeRanks::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  int32_t whole = find(piece);
  if (whole != kNone) {
    out.push_back(whole);
    return;
  }
  merge(piece, out);
}

void BpeRanks::merge(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.size() <= kSmallPiece)
    merge_small(piece, out);
  else
    merge_heap(piece, out);
}

void BpeRanks::merge_small(std::string_view piece, std::vector<int32_t>& out) const {
  const size_t m = piece.size();
  if (m == 1) {
    out.push_back(bytes_[uint8_t(piece[0])]);
    return;
  }
  const char* p = piece.data();
  // start[k]: first byte of part k; rank[k]: rank of parts k and k+1 merged. Parts = size - 1.
  uint32_t start[kSmallPiece + 1];
  int32_t rank[kSmallPiece + 1];
  std::vector<uint32_t> big_start;
  std::vector<int32_t> big_rank;
  uint32_t* st = start;
  int32_t* rk = rank;
  if (m > kSmallPiece) {  // callers may use this on any length (tests)
    big_start.resize(m + 1);
    big_rank.resize(m + 1);
    st = big_start.data();
    rk = big_rank.data();
  }
  size_t size = m + 1;
  for (size_t i = 0; i + 1 < m; ++i) st[i] = uint32_t(i), rk[i] = pair_rank(p + i);
  st[m - 1] = uint32_t(m - 1), rk[m - 1] = kNone;
  st[m] = uint32_t(m), rk[m] = kNone;
  auto rank_after = [&](size_t i) {  // rank of parts i, i+1, i+2 once i and i+1 are one part
    return i + 3 < size ? span_rank(p + st[i], st[i + 3] - st[i]) : kNone;
  };
  for (;;) {
    int32_t best = kNone;
    size_t bi = 0;
    for (size_t i = 0; i + 1 < size; ++i)
      if (rk[i] < best) best = rk[i], bi = i;
    if (best == kNone) break;
    if (bi > 0) rk[bi - 1] = rank_after(bi - 1);
    rk[bi] = rank_after(bi);
    std::memmove(st + bi + 1, st + bi + 2, (size - bi - 2) * sizeof(uint32_t));
    std::memmove(rk + bi + 1, rk + bi + 2, (size - bi - 2) * sizeof(int32_t));
    --size;
  }
  for (size_t i = 0; i + 1 < size; ++i) out.push_back(find({p + st[i], size_t(st[i + 1] - st[i])}));
}

void BpeRanks::merge_heap(std::string_view piece, std::vector<int32_t>& out) const {
  const size_t m = piece.size();
  const char* p = piece.data();
  // Parts are identified by their first byte; next/prev link parts, rank[i] is the rank of part i
  // merged with its successor (kNone when there is none or it is not a token).
  std::vector<uint32_t> next(m), prev(m);
  std::vector<int32_t> rank(m, kNone);
  std::vector<uint8_t> alive(m, 1);
  using Entry = std::pair<int64_t, uint32_t>;  // (rank << 32 | start) ordering, start
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
  auto key = [](int32_t r, uint32_t s) { return (int64_t(r) << 32) | s; };
  for (size_t i = 0; i < m; ++i) {
    next[i] = uint32_t(i + 1);
    prev[i] = uint32_t(i == 0 ? 0 : i - 1);
    if (i + 1 < m) {
      rank[i] = pair_rank(p + i);
      if (rank[i] != kNone) heap.emplace(key(rank[i], uint32_t(i)), uint32_t(i));
    }
  }
  auto end_of = [&](uint32_t i) { return i < m ? next[i] : uint32_t(m); };  // end of part i
  auto refresh = [&](uint32_t i) {  // recompute the rank of part i with its successor
    uint32_t j = next[i];
    rank[i] = j < m ? span_rank(p + i, end_of(j) - i) : kNone;
    if (rank[i] != kNone) heap.emplace(key(rank[i], i), i);
  };
  while (!heap.empty()) {
    auto [k, i] = heap.top();
    heap.pop();
    if (!alive[i] || rank[i] != int32_t(k >> 32)) continue;  // stale entry
    uint32_t j = next[i];                                     // merge part j into part i
    alive[j] = 0;
    next[i] = next[j];
    if (next[j] < m) prev[next[j]] = i;
    refresh(i);
    if (i > 0) refresh(prev[i]);
  }
  for (uint32_t i = 0; i < m; i = next[i]) out.push_back(find({p + i, size_t(next[i] - i)}));
}

}  // namespace ds
