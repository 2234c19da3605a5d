#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/json_depth.h"
#include "core/log.h"

namespace ds {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr uint64_t kMaxHeader = uint64_t(1) << 30;

int64_t checked_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

}  // namespace

int64_t TensorInfo::numel() const { return checked_numel(shape); }

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

SafetensorsHeader parse_safetensors(const uint8_t* bytes, size_t size, const std::string& path) {
  if (size < 8)
    fail("safetensors file '{}' is truncated: {} bytes, too short for the 8-byte header length", path, size);
  SafetensorsHeader out;
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | bytes[i];
  if (hlen > kMaxHeader || hlen > size - 8)
    fail("safetensors file '{}' is corrupt or truncated: header length {} but the file has {} bytes", path,
         hlen, size);
  json header;
  const std::string_view header_text(reinterpret_cast<const char*>(bytes + 8), size_t(hlen));
  if (json_nesting_depth(header_text) > kMaxJsonDepth)
    fail("safetensors file '{}' has a corrupt header: JSON nested more than {} levels deep", path, kMaxJsonDepth);
  try {
    header = json::parse(header_text);
  } catch (const json::exception& e) {
    fail("safetensors file '{}' has a corrupt header (not valid JSON): {}", path, e.what());
  }
  if (!header.is_object()) fail("safetensors file '{}' has a corrupt header: not a JSON object", path);
  const uint8_t* data = bytes + 8 + hlen;
  const size_t data_size = size - 8 - hlen;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail("safetensors file '{}': __metadata__ is not an object", path);
      for (auto m = v.begin(); m != v.end(); ++m)
        out.metadata[m.key()] = m.value().is_string() ? m.value().get<std::string>() : m.value().dump();
      continue;
    }
    auto bad = [&](const std::string& why) -> void {
      fail("safetensors file '{}': tensor '{}' has a corrupt header entry: {}", path, name, why);
    };
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      bad("needs dtype, shape and data_offsets");
    TensorInfo t;
    t.name = name;
    t.file = path;
    if (!v["dtype"].is_string() || !parse_dtype(v["dtype"].get<std::string>(), &t.dtype))
      bad("unknown dtype " + v["dtype"].dump());
    if (!v["shape"].is_array()) bad("shape is not a list");
    for (const auto& d : v["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) bad("shape entry " + d.dump() + " is not a size");
      t.shape.push_back(d.get<int64_t>());
    }
    const auto& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      bad("data_offsets must be two non-negative integers");
    const uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    if (b > e) bad(fmt::format("data_offsets [{}, {}] are reversed", b, e));
    if (e > data_size)
      fail("safetensors file '{}' is truncated: tensor '{}' needs data bytes [{}, {}) but the data region "
           "has only {} bytes", path, name, b, e, data_size);
    t.nbytes = size_t(e - b);
    uint64_t want = dtype_size(t.dtype);
    for (int64_t d : t.shape) {
      if (d != 0 && want > (uint64_t(1) << 62) / uint64_t(d)) bad("shape " + shape_str(t.shape) + " is too large");
      want *= uint64_t(d);
    }
    if (want != t.nbytes)
      bad(fmt::format("shape {} of {} needs {} bytes but data_offsets span {}", shape_str(t.shape),
                      dtype_name(t.dtype), want, t.nbytes));
    t.data = data + b;
    out.tensors.push_back(std::move(t));
  }
  std::sort(out.tensors.begin(), out.tensors.end(),
            [](const TensorInfo& a, const TensorInfo& b) { return a.data < b.data; });
  for (size_t i = 0; i + 1 < out.tensors.size(); ++i) {
    const auto& a = out.tensors[i];
    if (static_cast<const uint8_t*>(a.data) + a.nbytes > out.tensors[i + 1].data)
      fail("safetensors file '{}' is corrupt: tensors '{}' and '{}' overlap", path, a.name, out.tensors[i + 1].name);
  }
  return out;
}

std::map<std::string, std::string> parse_checkpoint_index(std::string_view text, const std::string& path) {
  if (json_nesting_depth(text) > kMaxJsonDepth)
    fail("checkpoint index '{}' is corrupt: JSON nested more than {} levels deep", path, kMaxJsonDepth);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail("checkpoint index '{}' is not valid JSON: {}", path, e.what());
  }
  auto wm = j.is_object() ? j.find("weight_map") : j.end();
  if (!j.is_object() || wm == j.end() || !wm->is_object())
    fail("checkpoint index '{}' has no weight_map object", path);
  std::map<std::string, std::string> out;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string())
      fail("checkpoint index '{}': weight_map entry '{}' is not a file name", path, it.key());
    out[it.key()] = it.value().get<std::string>();
  }
  return out;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open safetensors file '{}': {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    fail("cannot stat '{}': {}", path, std::strerror(errno));
  }
  size_ = size_t(st.st_size);
  if (size_ < 8) {
    ::close(fd);
    fail("safetensors file '{}' is truncated: {} bytes, too short for the 8-byte header length", path, size_);
  }
  map_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    fail("cannot mmap '{}': {}", path, std::strerror(errno));
  }
  try {
    SafetensorsHeader h = parse_safetensors(static_cast<const uint8_t*>(map_), size_, path);
    tensors_ = std::move(h.tensors);
    metadata_ = std::move(h.metadata);
    for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
  } catch (...) {
    ::munmap(map_, size_);
    map_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, size_);
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

Checkpoint Checkpoint::open(const std::string& path) {
  Checkpoint ck;
  ck.path_ = path;
  std::vector<std::string> files;
  std::map<std::string, std::string> index_map;  // tensor → shard file name (sharded checkpoints)
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const fs::path dir(path);
    const fs::path index = dir / "model.safetensors.index.json";
    if (fs::exists(index)) {
      std::ifstream f(index, std::ios::binary);
      const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      index_map = parse_checkpoint_index(text, index.string());
      std::set<std::string> shard_names;
      for (const auto& [tensor, shard] : index_map) shard_names.insert(shard);
      for (const auto& s : shard_names) {
        const fs::path p = dir / s;
        if (!fs::exists(p)) fail("checkpoint index '{}' names shard '{}', which does not exist", index.string(), s);
        files.push_back(p.string());
      }
    } else if (fs::exists(dir / "model.safetensors")) {
      files.push_back((dir / "model.safetensors").string());
    } else {
      for (const auto& e : fs::directory_iterator(dir))
        if (e.path().extension() == ".safetensors") files.push_back(e.path().string());
      std::sort(files.begin(), files.end());
    }
    if (files.empty()) fail("no safetensors files in '{}'", path);
  } else if (fs::exists(path, ec)) {
    files.push_back(path);
  } else {
    fail("checkpoint '{}' does not exist", path);
  }
  for (const auto& f : files) {
    auto file = std::make_shared<SafetensorsFile>(f);
    for (const auto& t : file->tensors()) {
      auto [it, inserted] = ck.by_name_.emplace(t.name, &t);
      if (!inserted) fail("tensor '{}' appears in both '{}' and '{}'", t.name, it->second->file, f);
      if (!index_map.empty()) {
        auto m = index_map.find(t.name);
        if (m == index_map.end())
          SPDLOG_WARN("tensor '{}' in '{}' is not listed in the checkpoint index", t.name, f);
        else if (fs::path(f).filename() != m->second)
          fail("checkpoint index maps tensor '{}' to '{}' but it is in '{}'", t.name, m->second, f);
      }
    }
    ck.files_.push_back(std::move(file));
  }
  for (const auto& [name, shard] : index_map)
    if (!ck.by_name_.count(name))
      fail("checkpoint index maps tensor '{}' to shard '{}', which does not contain it", name, shard);
  return ck;
}

const TensorInfo* Checkpoint::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

const TensorInfo& Checkpoint::get(const std::string& name) const {
  const TensorInfo* t = find(name);
  if (!t) fail("checkpoint '{}' has no tensor '{}'", path_, name);
  return *t;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  for (const auto& kv : by_name_) out.push_back(kv.first);
  return out;
}

size_t Checkpoint::total_bytes() const {
  size_t n = 0;
  for (const auto& kv : by_name_) n += kv.second->nbytes;
  return n;
}

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    const uint64_t n = uint64_t(checked_numel(t.shape)) * dtype_size(t.dtype);
    header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string h = header.dump();
  while ((h.size() + 8) % 8) h.push_back(' ');  // keep the data region 8-byte aligned
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) fail("cannot create '{}': {}", path, std::strerror(errno));
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(h.size()) >> (8 * i));
  f.write(reinterpret_cast<const char*>(len), 8);
  f.write(h.data(), std::streamsize(h.size()));
  for (const auto& t : tensors)
    f.write(static_cast<const char*>(t.data),
            std::streamsize(uint64_t(checked_numel(t.shape)) * dtype_size(t.dtype)));
  f.close();
  if (!f) fail("writing '{}' failed", path);
}

}  // namespace ds
