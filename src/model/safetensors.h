// Safetensors checkpoints: memory-mapped, validated read access to one file or a sharded set
// (model.safetensors.index.json), and a small writer (fixtures, `deltaserve score` output).
//
// File format: 8-byte little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}
// then the data region; offsets are relative to it. Everything is checked when a file is opened
// (header length, JSON, dtypes, shapes, offsets inside the data region, byte counts matching the shape,
// no overlaps), and every failure is a ds::Error that names the file and, where there is one, the tensor.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"

namespace ds {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // inside the file mapping (valid while the file is open)
  size_t nbytes = 0;
  std::string file;            // path of the file that holds it
  int64_t numel() const;
};

std::string shape_str(const std::vector<int64_t>& shape);  // "[2048, 256]"

// Pure parsers of the on-disk formats (what the file classes below call, and what a fuzz target can
// call on any bytes): every problem is a ds::Error naming `path`; JSON deeper than kMaxJsonDepth
// (core/json_depth.h) is refused before it is parsed.
struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // in data-offset order; `data` points into `bytes`
  std::map<std::string, std::string> metadata;
};
// `bytes`: a whole .safetensors file (length prefix, header, data region; the data is not read).
SafetensorsHeader parse_safetensors(const uint8_t* bytes, size_t size, const std::string& path);
// model.safetensors.index.json: its weight_map, tensor name → shard file name.
std::map<std::string, std::string> parse_checkpoint_index(std::string_view text, const std::string& path);

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);  // maps and validates; throws ds::Error
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  size_t file_size() const { return size_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // in data-offset order
  const TensorInfo* find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a checkpoint, possibly spread over shards.
class Checkpoint {
 public:
  // `path` is a directory (with model.safetensors.index.json, or model.safetensors, or else every
  // *.safetensors file in it) or a single .safetensors file.
  static Checkpoint open(const std::string& path);

  const TensorInfo* find(const std::string& name) const;
  const TensorInfo& get(const std::string& name) const;  // throws naming the tensor and checkpoint
  std::vector<std::string> names() const;                // sorted
  size_t total_bytes() const;                            // sum of tensor bytes
  const std::string& path() const { return path_; }
  const std::vector<std::shared_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  std::string path_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorInfo*> by_name_;
};

struct TensorToWrite {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // numel × dtype_size bytes
};

// Writes a safetensors file (tensors in the given order); throws ds::Error on I/O failure.
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace ds
