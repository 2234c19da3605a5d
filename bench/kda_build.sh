#!/usr/bin/env bash
# Builds the KDA/MLA attention kernels' GPU tests and benchmark without CMake, straight from the
# sources they need (a fallback for machines whose CMake cannot drive nvcc in C++20, and a quick path
# that does not depend on the rest of ds_cuda). Outputs in ${OUT_DIR:-build-kda}:
#   test_attn   GoogleTest binary of tests/gpu/test_kda_* and tests/gpu/test_mla_*
#   kda_bench   timing of the KDA and MLA kernels (bench/kda_bench.cu)
# Usage: bench/kda_build.sh [jobs]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT_DIR:-build-kda}
JOBS=${1:-$(nproc)}
mkdir -p "$OUT_DIR/obj"
NVCC=${NVCC:-nvcc}
CXXFLAGS=(-std=c++20 -O2 -Isrc -DDS_HAVE_CUDA=1 -DFMT_SHARED -DSPDLOG_COMPILED_LIB -DSPDLOG_FMT_EXTERNAL -DSPDLOG_SHARED_LIB -I/usr/local/cuda/include -DDS_FIXTURES_DIR="\"$PWD/tests/fixtures\"")
NVFLAGS=(-std=c++20 -O3 -Isrc -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo -Xptxas -v)

# configure_kernels (made with every DeviceContext) sets the GEMV / MoE GEMM kernels' attributes too
CU=(src/cuda/kernels/kda_prefill.cu src/cuda/kernels/kda_decode.cu src/cuda/kernels/mla_decode.cu
    src/cuda/kernels/mla_prefill.cu src/cuda/kernels/delta_gate.cu
    src/cuda/kernels/conv1d.cu src/cuda/kernels/gemv.cu src/cuda/kernels/gemv_async.cu
    src/cuda/kernels/gemv_block.cu src/cuda/kernels/gemv_small.cu src/cuda/kernels/moe_gemm.cu)
LIB_CPP=(src/cuda/cuda_check.cpp src/cuda/device_buffer.cpp src/cuda/device_context.cpp src/cuda/stream.cpp
         src/cuda/kernels/configure.cpp src/core/dtype.cpp src/core/log.cpp
         src/core/parallel.cpp src/model/safetensors.cpp src/kernels/kda/ref.cpp src/kernels/kda/chunk_ref.cpp
         src/kernels/mla/ref.cpp src/config/runtime_env.cpp)
TEST_CPP=(tests/gpu/test_kda_*.cpp tests/gpu/test_mla_*.cpp)

objs=()
compile() {  # src -> obj, in the background (at most JOBS at a time)
  local src=$1 obj="$OUT_DIR/obj/$(echo "$1" | tr / _).o"
  objs+=("$obj")
  while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n; done
  if [[ $src == *.cu ]]; then
    "$NVCC" "${NVFLAGS[@]}" -c "$src" -o "$obj" > "$obj.log" 2>&1 || { cat "$obj.log"; exit 1; } &
  else
    g++ "${CXXFLAGS[@]}" -c "$src" -o "$obj" > "$obj.log" 2>&1 || { cat "$obj.log"; exit 1; } &
  fi
}
for f in "${CU[@]}" "${LIB_CPP[@]}"; do compile "$f"; done
lib_objs=("${objs[@]}")
# GoogleTest: from its sources when the distribution ships them (the packaged library may not match
# the headers), else the installed library.
GTEST_SRC=/usr/src/googletest/googletest
objs=()
if [[ -f $GTEST_SRC/src/gtest-all.cc ]]; then
  CXXFLAGS_SAVE=("${CXXFLAGS[@]}")
  CXXFLAGS+=(-I"$GTEST_SRC" -I"$GTEST_SRC/include")
  compile "$GTEST_SRC/src/gtest-all.cc"
  compile "$GTEST_SRC/src/gtest_main.cc"
  CXXFLAGS=("${CXXFLAGS_SAVE[@]}")
  GTEST_LINK=()
else
  GTEST_LINK=(-lgtest -lgtest_main)
fi
gtest_objs=("${objs[@]}")
objs=()
for f in "${TEST_CPP[@]}"; do compile "$f"; done
test_objs=("${objs[@]}")
objs=()
compile bench/kda_bench.cu
bench_obj=("${objs[@]}")
while (( $(jobs -rp | wc -l) > 0 )); do wait -n || { echo "compile failed"; exit 1; }; done
grep -h -A2 "Compiling entry" "$OUT_DIR"/obj/*.cu.o.log | grep -E "registers|spill" | sort | uniq -c > "$OUT_DIR/ptxas.txt" || true

LIBS=(-L/usr/local/cuda/lib64 -lcudart -lcublasLt -lfmt -lspdlog -lpthread)
g++ -o "$OUT_DIR/test_attn" "${test_objs[@]}" "${lib_objs[@]}" "${gtest_objs[@]}" "${GTEST_LINK[@]}" "${LIBS[@]}"
g++ -o "$OUT_DIR/kda_bench" "${bench_obj[@]}" "${lib_objs[@]}" "${LIBS[@]}"
echo "built $OUT_DIR/test_attn $OUT_DIR/kda_bench"
