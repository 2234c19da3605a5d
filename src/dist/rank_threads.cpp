#include "dist/rank_threads.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/error.h"
#include "dist/batch_codec.h"

namespace ds {

RankThreads::RankThreads(InProcessGroup& group, std::string what, RankStep rank_step, std::function<void(int)> on_start,
                         std::function<void(const std::string&)> on_abort)
    : group_(group), what_(std::move(what)), rank_step_(std::move(rank_step)), on_start_(std::move(on_start)),
      on_abort_(std::move(on_abort)), nonfinite_(size_t(group.size())) {
  for (int r = 1; r < group_.size(); ++r) threads_.emplace_back([this, r] { loop(r); });
}

RankThreads::~RankThreads() { stop(); }

void RankThreads::stop() {
  if (threads_.empty()) return;
  if (!group_.aborted()) {
    try {
      RankMessage m;
      m.command = RankCommand::Stop;
      std::vector<uint8_t> stop = encode_rank_message(m);
      broadcast_bytes(group_.comm(0), stop, 0);
    } catch (const std::exception& e) {
      group_.abort(e.what());
    }
  }
  for (auto& t : threads_) t.join();
  threads_.clear();
}

void RankThreads::record_failure(int r, const std::string& what) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (failure_.empty()) failure_ = fmt::format("rank {}: {}", r, what);
  }
  group_.abort(failure());
  if (on_abort_) on_abort_(failure());
}

std::string RankThreads::failure() const {
  std::lock_guard<std::mutex> lk(mu_);
  return failure_;
}

void RankThreads::check() const {
  if (std::string f = failure(); !f.empty()) fail("{}: a previous step failed on {}", what_, f);
}

void RankThreads::loop(int r) {
  Communicator& comm = group_.comm(r);
  try {
    if (on_start_) on_start_(r);
  } catch (const std::exception& e) {
    record_failure(r, e.what());
    return;
  }
  for (;;) {
    try {
      std::vector<uint8_t> msg;
      broadcast_bytes(comm, msg, 0);
      RankMessage m = decode_rank_message(msg);
      if (m.command == RankCommand::Stop) return;
      nonfinite_[size_t(r)] = rank_step_(r, m.batch);
      comm.barrier();  // every rank has finished the step (and written nonfinite_)
    } catch (const std::exception& e) {
      record_failure(r, e.what());
      return;
    }
  }
}

std::vector<int32_t> RankThreads::step(const ForwardBatch& batch, const std::function<std::vector<int32_t>()>& own) {
  check();
  try {
    std::vector<uint8_t> msg = encode_rank_message({.command = RankCommand::Step, .batch = batch});
    broadcast_bytes(group_.comm(0), msg, 0);
    nonfinite_[0] = own();
    group_.comm(0).barrier();
  } catch (const std::exception& e) {
    record_failure(0, e.what());
    fail("{}: the step failed on {}", what_, failure());
  }
  // A snapshot is non-finite when any rank's part of it is.
  std::vector<int32_t> all;
  for (const auto& v : nonfinite_) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  return all;
}

}  // namespace ds
