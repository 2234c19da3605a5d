#include "dist/batch_codec.h"

#include <cstring>
#include <type_traits>

#include "core/error.h"

namespace ds {
namespace {

constexpr uint32_t kMagic = 0x44535450;  // "DSTP"

class Writer {
 public:
  template <class T>
  void put(T v) {
    static_assert(std::is_trivially_copyable_v<T>);
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    out.insert(out.end(), p, p + sizeof(T));
  }
  template <class T>
  void put_vec(const std::vector<T>& v) {
    put<uint64_t>(v.size());
    for (const T& x : v) put(x);
  }
  std::vector<uint8_t> out;
};

class Reader {
 public:
  explicit Reader(const std::vector<uint8_t>& b) : b_(b) {}
  template <class T>
  T get() {
    DS_CHECK(pos_ + sizeof(T) <= b_.size(), "rank message: truncated at byte {} of {}", pos_, b_.size());
    T v;
    std::memcpy(&v, b_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  template <class T>
  std::vector<T> get_vec() {
    const uint64_t n = get<uint64_t>();
    DS_CHECK(n <= (b_.size() - pos_) / sizeof(T), "rank message: a list of {} entries does not fit", n);
    std::vector<T> v(static_cast<size_t>(n));
    for (auto& x : v) x = get<T>();
    return v;
  }
  bool done() const { return pos_ == b_.size(); }

 private:
  const std::vector<uint8_t>& b_;
  size_t pos_ = 0;
};

}  // namespace

std::vector<uint8_t> encode_rank_message(const RankMessage& m) {
  Writer w;
  w.put(kMagic);
  w.put(uint8_t(m.command));
  if (m.command != RankCommand::Step) return w.out;
  const ForwardBatch& b = m.batch;
  w.put_vec(b.tokens);
  w.put<uint64_t>(b.seqs.size());
  for (const SeqSlice& s : b.seqs) {
    w.put(s.state_slot);
    w.put(s.context_len);
    w.put(uint8_t(s.state_init));
    w.put(s.state_src);
    w.put(s.save_snapshot);
    w.put(s.tail_src_block);
    w.put(s.tail_rows);
    w.put(s.num_tokens);
    w.put(s.token_offset);
    w.put_vec(s.block_table);
    w.put(uint8_t(s.logits_all));
    w.put(uint8_t(s.need_logits));
  }
  w.put<uint64_t>(b.saves_before.size());
  for (const SlotSave& v : b.saves_before) {
    w.put(v.slot);
    w.put(v.snapshot);
  }
  return w.out;
}

RankMessage decode_rank_message(const std::vector<uint8_t>& bytes) {
  Reader r(bytes);
  DS_CHECK(r.get<uint32_t>() == kMagic, "rank message: bad magic");
  RankMessage m;
  const uint8_t cmd = r.get<uint8_t>();
  DS_CHECK(cmd == uint8_t(RankCommand::Step) || cmd == uint8_t(RankCommand::Stop), "rank message: unknown command {}",
           cmd);
  m.command = RankCommand(cmd);
  if (m.command == RankCommand::Step) {
    ForwardBatch& b = m.batch;
    b.tokens = r.get_vec<int32_t>();
    const uint64_t n = r.get<uint64_t>();
    DS_CHECK(n <= bytes.size(), "rank message: {} slices cannot fit", n);
    b.seqs.resize(size_t(n));
    for (SeqSlice& s : b.seqs) {
      s.state_slot = r.get<int32_t>();
      s.context_len = r.get<int64_t>();
      const uint8_t init = r.get<uint8_t>();
      DS_CHECK(init <= uint8_t(StateInit::RestoreSnapshot), "rank message: unknown state init {}", init);
      s.state_init = StateInit(init);
      s.state_src = r.get<int32_t>();
      s.save_snapshot = r.get<int32_t>();
      s.tail_src_block = r.get<int32_t>();
      s.tail_rows = r.get<int32_t>();
      s.num_tokens = r.get<int32_t>();
      s.token_offset = r.get<int32_t>();
      s.block_table = r.get_vec<int32_t>();
      s.logits_all = r.get<uint8_t>() != 0;
      s.need_logits = r.get<uint8_t>() != 0;
    }
    const uint64_t ns = r.get<uint64_t>();
    DS_CHECK(ns <= bytes.size(), "rank message: {} snapshot saves cannot fit", ns);
    b.saves_before.resize(size_t(ns));
    for (SlotSave& v : b.saves_before) {
      v.slot = r.get<int32_t>();
      v.snapshot = r.get<int32_t>();
    }
  }
  DS_CHECK(r.done(), "rank message: trailing bytes");
  return m;
}

}  // namespace ds
