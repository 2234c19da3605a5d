#include "dist/rank_threads.h"

#include <fmt/format.h>

#include <algorithm>
#include <string_view>

#include "core/error.h"
#include "dist/batch_codec.h"

namespace ds {
namespace {

// The end of a step on every rank: each rank's non-finite snapshots gathered (counts, then the lists padded
// to the longest), merged, sorted, without repeats. Snapshot ids travel as floats (exact below 2^24).
std::vector<int32_t> gather_nonfinite(Communicator& comm, const std::vector<int32_t>& mine) {
  const int n = comm.size();
  std::vector<float> counts(static_cast<size_t>(n));
  const float own = float(mine.size());
  comm.all_gather(std::span<const float>(&own, 1), counts);
  const size_t longest = size_t(*std::max_element(counts.begin(), counts.end()));
  if (longest == 0) return {};
  std::vector<float> padded(longest, -1.0f), all(longest * size_t(n));
  for (size_t i = 0; i < mine.size(); ++i) {
    DS_CHECK(mine[i] >= 0 && mine[i] < (1 << 24), "snapshot id {} cannot be gathered", mine[i]);
    padded[i] = float(mine[i]);
  }
  comm.all_gather(padded, all);
  std::vector<int32_t> ids;
  for (float v : all)
    if (v >= 0) ids.push_back(int32_t(v));
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

}  // namespace

RankThreads::RankThreads(HostGroup& group, std::string what, RankStep rank_step, std::function<void(int)> on_start,
                         std::function<void(const std::string&)> on_abort)
    : group_(group), what_(std::move(what)), rank_step_(std::move(rank_step)), on_start_(std::move(on_start)),
      on_abort_(std::move(on_abort)) {
  for (int r = group_.first_local(); r < group_.first_local() + group_.local_size(); ++r)
    if (r != 0) threads_.emplace_back([this, r] { loop(r); });
  // Over processes: a peer that goes away between steps, or while this process waits outside the host
  // collectives (an NCCL kernel), fails the group at once.
  group_.watch([this](const std::string& why) { record_failure(-1, why); });
}

RankThreads::~RankThreads() {
  stop();
  group_.watch({});
}

void RankThreads::stop() {
  if (stopped_) return;
  stopped_ = true;
  // Rank 0 stops every other rank, in this process or another (a node of one rank has no threads here).
  if (!group_.aborted() && (group_.size() > 1 && (group_.is_local(0) || !threads_.empty()))) {
    try {
      if (!group_.is_local(0)) fail("node of ranks {}.. stopped", group_.first_local());
      group_.expect_close();  // the other processes go away once stopped
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

void RankThreads::wait() {
  DS_CHECK(!group_.is_local(0), "{}: wait() is for a process without rank 0", what_);
  for (auto& t : threads_) t.join();
  threads_.clear();
  stopped_ = true;
  check();
}

void RankThreads::record_failure(int r, const std::string& what) {
  {
    // A rank woken by the group's abort repeats the reason, which already says where it came from.
    static constexpr std::string_view kAborted = "communicator aborted: ";
    std::lock_guard<std::mutex> lk(mu_);
    if (failure_.empty()) {
      if (what.rfind(kAborted, 0) == 0) failure_ = what.substr(kAborted.size());
      else failure_ = r < 0 ? what : fmt::format("rank {}: {}", r, what);
    }
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
      if (m.command == RankCommand::Stop) {
        group_.expect_close();  // rank 0's process goes away next
        return;
      }
      gather_nonfinite(comm, rank_step_(r, m.batch));  // every rank has finished the step
    } catch (const std::exception& e) {
      record_failure(r, e.what());
      return;
    }
  }
}

std::vector<int32_t> RankThreads::step(const ForwardBatch& batch, const std::function<std::vector<int32_t>()>& own) {
  check();
  DS_CHECK(group_.is_local(0), "{}: steps run on rank 0's process", what_);
  try {
    std::vector<uint8_t> msg = encode_rank_message({.command = RankCommand::Step, .batch = batch});
    broadcast_bytes(group_.comm(0), msg, 0);
    return gather_nonfinite(group_.comm(0), own());  // a snapshot is non-finite when any rank's part of it is
  } catch (const std::exception& e) {
    record_failure(0, e.what());
    fail("{}: the step failed on {}", what_, failure());
  }
}

}  // namespace ds
