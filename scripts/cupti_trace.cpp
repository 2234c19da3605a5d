// A kernel tracer for the GPU machine, which has no Nsight Systems: loaded with LD_PRELOAD into any CUDA
// program, it records every kernel's start and end (CUPTI's concurrent-kernel activity: graph nodes included,
// kernels not serialised) and writes them to $CUPTI_TRACE_OUT (default cupti_trace.csv) as CSV
// "start_ns,end_ns,name" at exit. A developer tool, not part of the CMake build: scripts/gpu-check.sh --trace
// compiles it with g++ against the toolkit's CUPTI; scripts/step_timeline.py reads its output.
// Records are read by offset (start 16, end 24, name 104: CUpti_ActivityKernel4 and every later version), so
// any CUPTI header version compiles it. A background thread flushes CUPTI's buffers every 0.3 s: at exit the
// CUDA context may already be gone, so no flush is attempted there (the last 0.3 s may be missing).
#include <cupti.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <string>
#include <vector>

namespace {
struct Rec { uint64_t s, e; std::string n; };
std::mutex mu;
std::vector<Rec>* recs = nullptr;
void CUPTIAPI buf_req(uint8_t** buf, size_t* size, size_t* maxn) {
  *size = 8 << 20;
  *buf = static_cast<uint8_t*>(aligned_alloc(8, *size));
  *maxn = 0;
}
void CUPTIAPI buf_done(CUcontext, uint32_t, uint8_t* buf, size_t, size_t valid) {
  CUpti_Activity* r = nullptr;
  std::lock_guard<std::mutex> g(mu);
  while (cuptiActivityGetNextRecord(buf, valid, &r) == CUPTI_SUCCESS) {
    if (r->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL || r->kind == CUPTI_ACTIVITY_KIND_KERNEL) {
      // CUpti_ActivityKernel4..9+: start at 16, end at 24, name at 104 (read by offset: any header version)
      const char* b = reinterpret_cast<const char*>(r);
      uint64_t s, e;
      const char* n;
      memcpy(&s, b + 16, 8);
      memcpy(&e, b + 24, 8);
      memcpy(&n, b + 104, 8);
      recs->push_back({s, e, n ? n : "?"});
    }
  }
  free(buf);
}
std::atomic<bool> stop{false};
std::thread* flusher = nullptr;
struct Init {
  Init() {
    flusher = new std::thread([] { while (!stop) { std::this_thread::sleep_for(std::chrono::milliseconds(300)); cuptiActivityFlushAll(0); } });
    recs = new std::vector<Rec>();
    recs->reserve(1 << 20);
    cuptiActivityRegisterCallbacks(buf_req, buf_done);
    CUptiResult rc = cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
    fprintf(stderr, "cupti_trace: enabled (%d)\n", int(rc));
  }
  ~Init() {
    stop = true;
    flusher->join();  // (no flush here: the CUDA context may be gone; the thread's flushes hold all but the last 0.3 s)
    if (recs->empty()) return;  // (a wrapper process such as timeout: nothing traced, leave the file alone)
    const char* out = getenv("CUPTI_TRACE_OUT");
    FILE* f = fopen(out ? out : "cupti_trace.csv", "w");
    if (!f) return;
    std::lock_guard<std::mutex> g(mu);
    fprintf(f, "start_ns,end_ns,name\n");
    for (auto& r : *recs) fprintf(f, "%llu,%llu,\"%s\"\n", (unsigned long long)r.s, (unsigned long long)r.e, r.n.c_str());
    fclose(f);
    fprintf(stderr, "cupti_trace: %zu kernels\n", recs->size());
  }
} init;
}  // namespace
