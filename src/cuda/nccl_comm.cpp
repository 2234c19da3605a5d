#include "cuda/nccl_comm.h"

#include <fmt/format.h>

#include <cstdlib>
#include <memory>

#include "config/runtime_env.h"
#include "core/error.h"
#include "core/shared_library.h"

namespace ds::gpu {
namespace {

// NCCL's C ABI (nccl.h), the part used here.
using Result = int;                                  // ncclResult_t: 0 = ncclSuccess
struct RawId { char internal[128]; };                // ncclUniqueId
constexpr int kNcclFloat32 = 7, kNcclBfloat16 = 9;   // ncclDataType_t
constexpr int kNcclSum = 0;                          // ncclRedOp_t

}  // namespace

// The library and the calls used, loaded per user (the loader reference-counts the library, so a second load is
// cheap; no process-wide state: src/cuda holds none). Through core/shared_library.h: NCCL's threads (the
// bootstrap root that ncclGetUniqueId starts, the proxies) outlive the handle that loaded it, so its code must
// stay mapped when the last handle closes (unloading it crashed bench_comm, session 28).
class NcclApi {
 public:
  NcclApi() : lib_(cuda_env().nccl_library.empty() ? "libnccl.so.2" : cuda_env().nccl_library) {
    if (!lib_.ok()) {
      error = fmt::format("cannot load NCCL ({}): {}; install NCCL 2 or point DELTASERVE_NCCL_LIBRARY at its "
                          "libnccl.so.2", lib_.file(), lib_.error());
      return;
    }
    const bool all = lib_.bind(get_version, "ncclGetVersion") && lib_.bind(get_unique_id, "ncclGetUniqueId") &&
                     lib_.bind(comm_init_rank, "ncclCommInitRank") && lib_.bind(comm_destroy, "ncclCommDestroy") &&
                     lib_.bind(comm_abort, "ncclCommAbort") && lib_.bind(all_reduce, "ncclAllReduce") &&
                     lib_.bind(all_gather, "ncclAllGather") && lib_.bind(error_string, "ncclGetErrorString");
    if (!all) error = lib_.error();
  }
  NcclApi(const NcclApi&) = delete;
  NcclApi& operator=(const NcclApi&) = delete;
  // Throws the load error, if any.
  const NcclApi& loaded() const {
    DS_CHECK(error.empty(), "{}", error);
    return *this;
  }
  void check(Result r, const char* what) const {
    DS_CHECK(r == 0, "NCCL {} failed: {} (ncclResult_t {})", what, r == 0 ? "" : error_string(r), r);
  }

  Result (*get_version)(int*) = nullptr;
  Result (*get_unique_id)(RawId*) = nullptr;
  Result (*comm_init_rank)(void**, int, RawId, int) = nullptr;
  Result (*comm_destroy)(void*) = nullptr;
  Result (*comm_abort)(void*) = nullptr;
  Result (*all_reduce)(const void*, void*, size_t, int, int, void*, cudaStream_t) = nullptr;
  Result (*all_gather)(const void*, void*, size_t, int, void*, cudaStream_t) = nullptr;
  const char* (*error_string)(Result) = nullptr;
  std::string error;  // why it did not load

 private:
  SharedLibrary lib_;
};

namespace {

int nccl_type(DType t) {
  DS_CHECK(t == DType::F32 || t == DType::BF16, "NCCL collectives: fp32 or bf16 only, got {}", dtype_name(t));
  return t == DType::F32 ? kNcclFloat32 : kNcclBfloat16;
}

}  // namespace

void nccl_prepare_environment() {
  setenv("NCCL_NVLS_ENABLE", "0", 0);
  setenv("NCCL_RUNTIME_CONNECT", "0", 0);
  const std::string connect = std::getenv("NCCL_RUNTIME_CONNECT");
  DS_CHECK(connect == "0",
           "NCCL_RUNTIME_CONNECT={}: deltaserve's ranks capture their CUDA graphs one after another, which needs every "
           "NCCL connection made at communicator init; unset it or set it to 0", connect);
  const char* mode = std::getenv("NCCL_LAUNCH_MODE");
  DS_CHECK(!mode || !*mode || std::string(mode) == "PARALLEL",
           "NCCL_LAUNCH_MODE={}: in GROUP mode NCCL waits for every rank of the process at each launch, which a rank "
           "capturing its graphs alone never passes; unset it or set it to PARALLEL", mode ? mode : "");
}

bool nccl_available(std::string* why_not) {
  const NcclApi a;
  if (why_not) *why_not = a.error;
  return a.error.empty();
}

std::string nccl_version() {
  const NcclApi a;
  int v = 0;
  a.loaded().check(a.get_version(&v), "ncclGetVersion");
  // NCCL_VERSION(X, Y, Z) = X * 10000 + Y * 100 + Z since 2.9
  return fmt::format("{}.{}.{}", v / 10000, (v / 100) % 100, v % 100);
}

NcclId nccl_unique_id() {
  const NcclApi a;
  RawId raw{};
  a.loaded().check(a.get_unique_id(&raw), "ncclGetUniqueId");
  NcclId id;
  std::copy(std::begin(raw.internal), std::end(raw.internal), id.bytes.begin());
  return id;
}

NcclComm::NcclComm(const NcclId& id, int rank, int size) : api_(std::make_unique<NcclApi>()), rank_(rank), size_(size) {
  DS_CHECK(size >= 1 && rank >= 0 && rank < size, "NCCL: rank {} of {} is not a rank of the group", rank, size);
  RawId raw{};
  std::copy(id.bytes.begin(), id.bytes.end(), raw.internal);
  api_->loaded().check(api_->comm_init_rank(&comm_, size, raw, rank), "ncclCommInitRank");
}

NcclComm::~NcclComm() {
  if (aborter_.joinable()) aborter_.join();  // (the graphs that captured the communicator are gone by now)
  else if (comm_) api_->comm_destroy(comm_);
}

// abort() may come from another thread (a failed rank, the group's watcher) while this rank enqueues a
// collective: the flag is set once an enqueue in progress is done, so every later collective is an error, not a
// call on a communicator being freed. ncclCommAbort itself runs on aborter_, outside the lock: it blocks until
// the graphs holding the communicator are destroyed (NCCL's commDestroySync waits for its persistent references),
// which happens only after the rank threads stop, and a rank thread failing in a collective would otherwise wait
// on this lock forever.
void NcclComm::abort() {
  std::lock_guard<std::mutex> lk(mu_);
  if (!comm_ || aborted_.exchange(true)) return;
  aborter_ = std::thread([api = api_.get(), comm = comm_] { api->comm_abort(comm); });
}

void NcclComm::all_reduce_sum(void* data, int64_t n, DType t, const DeviceContext& ctx) {
  DS_CHECK(n >= 0, "NCCL all_reduce_sum: negative length");
  std::lock_guard<std::mutex> lk(mu_);
  DS_CHECK(!aborted_.load(), "NCCL all_reduce_sum: the group was aborted");
  api_->check(api_->all_reduce(data, data, size_t(n), nccl_type(t), kNcclSum, comm_, ctx.stream), "ncclAllReduce");
}

void NcclComm::all_gather(const void* in, void* out, int64_t n, DType t, const DeviceContext& ctx) {
  DS_CHECK(n >= 0, "NCCL all_gather: negative length");
  std::lock_guard<std::mutex> lk(mu_);
  DS_CHECK(!aborted_.load(), "NCCL all_gather: the group was aborted");
  api_->check(api_->all_gather(in, out, size_t(n), nccl_type(t), comm_, ctx.stream), "ncclAllGather");
}

}  // namespace ds::gpu
