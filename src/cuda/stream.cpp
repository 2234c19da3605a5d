#include "cuda/stream.h"

#include <fmt/format.h>

#include <exception>
#include <thread>

#include "cuda/cuda_check.h"

namespace ds::gpu {

Stream::Stream() { DS_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
Stream::~Stream() {
  if (s_) cudaStreamDestroy(s_);
}
void Stream::sync() const { DS_CUDA_CHECK(cudaStreamSynchronize(s_)); }

Event::Event(bool timing) {
  DS_CUDA_CHECK(cudaEventCreateWithFlags(&e_, timing ? cudaEventDefault : cudaEventDisableTiming));
}
Event::~Event() {
  if (e_) cudaEventDestroy(e_);
}
void Event::record(cudaStream_t s) { DS_CUDA_CHECK(cudaEventRecord(e_, s)); }
void Event::sync() const { DS_CUDA_CHECK(cudaEventSynchronize(e_)); }
float Event::elapsed_ms_since(const Event& start) const {
  float ms = 0;
  DS_CUDA_CHECK(cudaEventElapsedTime(&ms, start.e_, e_));
  return ms;
}

Graph::~Graph() {
  if (exec_) cudaGraphExecDestroy(exec_);
  if (g_) cudaGraphDestroy(g_);
}
Graph& Graph::operator=(Graph&& o) noexcept {
  if (this != &o) {
    if (exec_) cudaGraphExecDestroy(exec_);
    if (g_) cudaGraphDestroy(g_);
    g_ = std::exchange(o.g_, nullptr);
    exec_ = std::exchange(o.exec_, nullptr);
  }
  return *this;
}
void Graph::begin_capture(cudaStream_t s) {
  DS_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
}
void Graph::end_capture(cudaStream_t s) {
  cudaGraph_t g = nullptr;
  DS_CUDA_CHECK(cudaStreamEndCapture(s, &g));
  if (exec_) cudaGraphExecDestroy(exec_);
  if (g_) cudaGraphDestroy(g_);
  g_ = g;
  exec_ = nullptr;
  DS_CUDA_CHECK(cudaGraphInstantiate(&exec_, g_, 0));
}
void Graph::launch(cudaStream_t s) const { DS_CUDA_CHECK(cudaGraphLaunch(exec_, s)); }
void Graph::upload(cudaStream_t s) const { DS_CUDA_CHECK(cudaGraphUpload(exec_, s)); }
size_t Graph::num_nodes() const {
  size_t n = 0;
  if (g_) DS_CUDA_CHECK(cudaGraphGetNodes(g_, nullptr, &n));
  return n;
}

std::string DeviceInfo::summary() const {
  return fmt::format("{} (sm_{}{}, {} SMs, {:.1f} GiB, L2 {} MiB)", name, sm_major, sm_minor, num_sms,
                     total_mem / 1073741824.0, l2_bytes >> 20);
}

DeviceInfo device_info(int device) {
  if (device < 0) DS_CUDA_CHECK(cudaGetDevice(&device));
  cudaDeviceProp p{};
  DS_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  DeviceInfo d;
  d.device = device;
  d.name = p.name;
  d.sm_major = p.major;
  d.sm_minor = p.minor;
  d.num_sms = p.multiProcessorCount;
  d.total_mem = p.totalGlobalMem;
  d.l2_bytes = size_t(p.l2CacheSize);
  d.smem_per_block_optin = p.sharedMemPerBlockOptin;
  return d;
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

void run_on_devices(const std::vector<int>& devices, const std::function<void(int)>& fn) {
  std::vector<std::exception_ptr> err(devices.size());
  std::vector<std::thread> th;
  for (size_t r = 0; r < devices.size(); ++r)
    th.emplace_back([&, r] {
      try {
        DS_CUDA_CHECK(cudaSetDevice(devices[r]));
        fn(int(r));
      } catch (...) {
        err[r] = std::current_exception();
      }
    });
  for (auto& t : th) t.join();
  for (auto& e : err)
    if (e) std::rethrow_exception(e);
}

size_t free_device_memory() {
  size_t f = 0, t = 0;
  DS_CUDA_CHECK(cudaMemGetInfo(&f, &t));
  return f;
}

}  // namespace ds::gpu
