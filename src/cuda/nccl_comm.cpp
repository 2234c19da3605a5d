#include "cuda/nccl_comm.h"

#include <dlfcn.h>
#include <fmt/format.h>

#include <mutex>

#include "config/runtime_env.h"
#include "core/error.h"

namespace ds::gpu {
namespace {

// NCCL's C ABI (nccl.h), the part used here.
using Result = int;                                  // ncclResult_t: 0 = ncclSuccess
struct RawId { char internal[128]; };                // ncclUniqueId
constexpr int kNcclFloat32 = 7, kNcclBfloat16 = 9;   // ncclDataType_t
constexpr int kNcclSum = 0;                          // ncclRedOp_t

struct Api {
  Result (*get_version)(int*) = nullptr;
  Result (*get_unique_id)(RawId*) = nullptr;
  Result (*comm_init_rank)(void**, int, RawId, int) = nullptr;
  Result (*comm_destroy)(void*) = nullptr;
  Result (*all_reduce)(const void*, void*, size_t, int, int, void*, cudaStream_t) = nullptr;
  Result (*all_gather)(const void*, void*, size_t, int, void*, cudaStream_t) = nullptr;
  const char* (*error_string)(Result) = nullptr;
  std::string error;  // why it did not load
};

const Api& api() {
  static std::once_flag once;
  static Api a;
  std::call_once(once, [] {
    const std::string& path = cuda_env().nccl_library;
    const std::string lib = path.empty() ? "libnccl.so.2" : path;
    void* h = dlopen(lib.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char* e = dlerror();
      a.error = fmt::format("cannot load NCCL ({}): {}; install NCCL 2 or point DELTASERVE_NCCL_LIBRARY at its "
                            "libnccl.so.2", lib, e ? e : "unknown error");
      return;
    }
    auto sym = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(h, name));
      if (!fn && a.error.empty()) a.error = fmt::format("{} has no symbol {}", lib, name);
    };
    sym(a.get_version, "ncclGetVersion");
    sym(a.get_unique_id, "ncclGetUniqueId");
    sym(a.comm_init_rank, "ncclCommInitRank");
    sym(a.comm_destroy, "ncclCommDestroy");
    sym(a.all_reduce, "ncclAllReduce");
    sym(a.all_gather, "ncclAllGather");
    sym(a.error_string, "ncclGetErrorString");
  });
  return a;
}

const Api& loaded() {
  const Api& a = api();
  DS_CHECK(a.error.empty(), "{}", a.error);
  return a;
}

void check(Result r, const char* what) {
  DS_CHECK(r == 0, "NCCL {} failed: {} (ncclResult_t {})", what, r == 0 ? "" : loaded().error_string(r), r);
}

int nccl_type(DType t) {
  DS_CHECK(t == DType::F32 || t == DType::BF16, "NCCL collectives: fp32 or bf16 only, got {}", dtype_name(t));
  return t == DType::F32 ? kNcclFloat32 : kNcclBfloat16;
}

}  // namespace

bool nccl_available(std::string* why_not) {
  const Api& a = api();
  if (why_not) *why_not = a.error;
  return a.error.empty();
}

std::string nccl_version() {
  int v = 0;
  check(loaded().get_version(&v), "ncclGetVersion");
  // NCCL_VERSION(X, Y, Z) = X * 10000 + Y * 100 + Z since 2.9
  return fmt::format("{}.{}.{}", v / 10000, (v / 100) % 100, v % 100);
}

NcclId nccl_unique_id() {
  RawId raw{};
  check(loaded().get_unique_id(&raw), "ncclGetUniqueId");
  NcclId id;
  std::copy(std::begin(raw.internal), std::end(raw.internal), id.bytes.begin());
  return id;
}

NcclComm::NcclComm(const NcclId& id, int rank, int size) : rank_(rank), size_(size) {
  DS_CHECK(size >= 1 && rank >= 0 && rank < size, "NCCL: rank {} of {} is not a rank of the group", rank, size);
  RawId raw{};
  std::copy(id.bytes.begin(), id.bytes.end(), raw.internal);
  check(loaded().comm_init_rank(&comm_, size, raw, rank), "ncclCommInitRank");
}

NcclComm::~NcclComm() {
  if (comm_) loaded().comm_destroy(comm_);
}

void NcclComm::all_reduce_sum(void* data, int64_t n, DType t, const DeviceContext& ctx) {
  DS_CHECK(n >= 0, "NCCL all_reduce_sum: negative length");
  check(loaded().all_reduce(data, data, size_t(n), nccl_type(t), kNcclSum, comm_, ctx.stream), "ncclAllReduce");
}

void NcclComm::all_gather(const void* in, void* out, int64_t n, DType t, const DeviceContext& ctx) {
  DS_CHECK(n >= 0, "NCCL all_gather: negative length");
  check(loaded().all_gather(in, out, size_t(n), nccl_type(t), comm_, ctx.stream), "ncclAllGather");
}

}  // namespace ds::gpu
