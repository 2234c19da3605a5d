// The CUDA implementation of Backend (model/backend.h): config + weights (safetensors through the
// model module's loader, or dummy weights generated on the GPU) + CudaModel + the GPU sampler.
// create_backend() (engine/backend_factory.h) calls make_cuda_backend when device == "cuda".
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dist/parallel_config.h"
#include "model/backend.h"

namespace ds {

namespace gpu {
class DeviceComm;
}

// One rank of a tensor-parallel CUDA group (cuda/parallel_cuda_backend.h): its part of the model (the
// shard plan cuts the checkpoint's tensors at load), its device collectives and its GPU.
struct CudaRankSetup {
  ShardSpec shard;
  gpu::DeviceComm* comm = nullptr;
  int device = 0;
};

// opts.model_dir holds config.json (and the safetensors unless load_format == "dummy");
// opts.dtype: auto | bfloat16 | float32 (activations and weights on the device).
std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& opts);
// The same for one rank of a group; config() is the whole model's, limits() the rank's caches.
std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& opts, const CudaRankSetup& rank);

// Device milliseconds of the last forward of a backend made by make_cuda_backend (benchmarks).
double cuda_last_forward_ms(Backend& b);
// Host milliseconds the last forward took to queue its work (benchmarks: beside the device time, whether
// the device waited on the host).
double cuda_last_issue_ms(Backend& b);

// The weights' format on the device, as start-up logs it ("int4 ... experts (N packed matrices, ...) + bf16").
std::string cuda_weight_format(Backend& b);

// Numerical tests: pin the MoE routing of the sequences in the given state slots (slot -> MoE layer ->
// [positions, top_k] experts) for the following forwards of a backend made by make_cuda_backend
// (CudaModel::force_routes). An empty map turns it off.
void cuda_force_routes(Backend& b, std::map<int, std::map<int, std::vector<int32_t>>> by_slot);

}  // namespace ds
