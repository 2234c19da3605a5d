// RAII wrappers for streams, events and CUDA graphs, plus device properties.
#pragma once
#include <cuda_runtime.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace ds::gpu {

class Stream {
 public:
  Stream();  // a non-blocking stream
  ~Stream();
  Stream(Stream&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  Stream& operator=(Stream&&) = delete;
  Stream(const Stream&) = delete;
  cudaStream_t get() const { return s_; }
  operator cudaStream_t() const { return s_; }
  void sync() const;

 private:
  cudaStream_t s_ = nullptr;
};

class Event {
 public:
  explicit Event(bool timing = true);
  ~Event();
  Event(Event&& o) noexcept : e_(std::exchange(o.e_, nullptr)) {}
  Event& operator=(Event&&) = delete;
  Event(const Event&) = delete;
  cudaEvent_t get() const { return e_; }
  void record(cudaStream_t s);
  void sync() const;
  // Milliseconds from `start` to this event (both recorded and complete).
  float elapsed_ms_since(const Event& start) const;

 private:
  cudaEvent_t e_ = nullptr;
};

// A captured and instantiated graph; replay with launch().
class Graph {
 public:
  Graph() = default;
  ~Graph();
  Graph(Graph&& o) noexcept : g_(std::exchange(o.g_, nullptr)), exec_(std::exchange(o.exec_, nullptr)) {}
  Graph& operator=(Graph&& o) noexcept;
  Graph(const Graph&) = delete;
  void begin_capture(cudaStream_t s);
  void end_capture(cudaStream_t s);  // ends and instantiates
  void launch(cudaStream_t s) const;
  void upload(cudaStream_t s) const;  // the instantiated graph's device resources, before its first launch
  bool ready() const { return exec_ != nullptr; }
  size_t num_nodes() const;

 private:
  cudaGraph_t g_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
};

struct DeviceInfo {
  int device = 0;
  std::string name;
  int sm_major = 0, sm_minor = 0;
  int num_sms = 0;
  size_t total_mem = 0;
  size_t l2_bytes = 0;
  size_t smem_per_block_optin = 0;
  std::string summary() const;
};
DeviceInfo device_info(int device = -1);  // -1: the current device
int device_count();                       // 0 when no driver / no device (never throws)
// fn(rank) for every rank at once, each on a thread of its own whose current device is devices[rank] (ranks
// that must meet, e.g. in ncclCommInitRank); returns when all are done and rethrows the first rank's failure.
void run_on_devices(const std::vector<int>& devices, const std::function<void(int rank)>& fn);
size_t free_device_memory();

}  // namespace ds::gpu
