// Developer switches read from the environment, in one place (the layout's rule: configuration is read
// and validated in src/config, not where it is used). They exist to cross-check and to measure, not for
// users: the server's flags are the user-facing configuration.
//   DELTASERVE_CUDA_ATTENTION=reference  simple attention kernels (attn_ref.h) instead of kda_* / mla_*
//   DELTASERVE_CUDA_GRAPHS=0             decode steps run eagerly, not replayed from CUDA graphs
//   DELTASERVE_CUDA_PDL=0                kernels launched without programmatic dependent launch
#pragma once

namespace ds {

struct CudaEnv {
  bool reference_attention = false;
  bool graphs = true;
  bool pdl = true;
  // Parses the current environment; an unrecognised value is an error that names the variable.
  static CudaEnv parse();
};

// The process's switches, parsed on first use (the environment is read once).
const CudaEnv& cuda_env();

}  // namespace ds
