// Checkpoint loading: the safetensors reader, the weight table, and clear errors for broken
// checkpoints built in a temporary directory from the fixture.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/weights.h"
#include "model_test_util.h"

namespace ds::test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// A scratch copy of the tiny checkpoint, removed afterwards.
class TempModel {
 public:
  TempModel() {
    static int counter = 0;
    dir_ = fs::temp_directory_path() / ("ds_test_model_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    fs::copy(tiny_model_dir(), dir_, fs::copy_options::recursive);
  }
  ~TempModel() { fs::remove_all(dir_); }
  fs::path path(const std::string& name = "") const { return name.empty() ? dir_ : dir_ / name; }
  std::string str() const { return dir_.string(); }

  // Replaces the sharded checkpoint with one model.safetensors holding `tensors`.
  void write_single(const std::vector<TensorToWrite>& tensors) const {
    for (const auto& e : fs::directory_iterator(dir_))
      if (e.path().extension() == ".safetensors" || e.path().filename() == "model.safetensors.index.json")
        fs::remove(e.path());
    write_safetensors((dir_ / "model.safetensors").string(), tensors);
  }

 private:
  fs::path dir_;
};

// Every tensor of the fixture checkpoint, as it is on disk.
std::vector<TensorToWrite> fixture_tensors(const Checkpoint& ck) {
  std::vector<TensorToWrite> out;
  for (const auto& name : ck.names()) {
    const auto& t = ck.get(name);
    out.push_back({t.name, t.dtype, t.shape, t.data});
  }
  return out;
}

void expect_load_error(const std::string& dir, const std::vector<std::string>& needles) {
  BackendOptions o = tiny_options();
  o.model_dir = dir;
  try {
    CpuBackend b(o);
    ADD_FAILURE() << "loading succeeded; expected an error mentioning '" << needles[0] << "'";
  } catch (const Error& e) {
    for (const auto& n : needles)
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << "missing '" << n << "' in: " << e.what();
  }
}

TEST(Loading, WeightTableMatchesCheckpoints) {
  const auto tiny = ModelConfig::from_file(tiny_model_dir() + "/config.json");
  const auto ck = Checkpoint::open(tiny_model_dir());
  EXPECT_NO_THROW(check_checkpoint(tiny, ck));
  EXPECT_EQ(weight_specs(tiny).size(), ck.names().size());
  // The real model's inventory (spec §2): 20,493 tensors.
  std::ifstream f(fixtures() + "/kimi-linear-48b-a3b.config.json");
  const auto big = ModelConfig::from_json(json::parse(f));
  const auto specs = weight_specs(big);
  EXPECT_EQ(specs.size(), 20493u);
  int64_t params = 0;
  for (const auto& s : specs) {
    int64_t n = 1;
    for (int64_t d : s.shape) n *= d;
    params += n;
  }
  EXPECT_EQ(params, 49122681728);  // total_parameters of the released index
}

TEST(Loading, SharedExpertCountShapesTheTable) {
  std::ifstream f(tiny_model_dir() + "/config.json");
  auto j = json::parse(f);
  const auto find = [](const std::vector<TensorSpec>& specs, const std::string& name) -> const TensorSpec* {
    for (const auto& s : specs)
      if (s.name == name) return &s;
    return nullptr;
  };
  const std::string shared = "model.layers.1.block_sparse_moe.shared_experts.gate_proj.weight";
  j["num_shared_experts"] = 0;
  EXPECT_EQ(find(weight_specs(ModelConfig::from_json(j)), shared), nullptr);
  j["num_shared_experts"] = 3;
  const auto specs = weight_specs(ModelConfig::from_json(j));
  const auto* s = find(specs, shared);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->shape, (std::vector<int64_t>{64 * 3, 256}));
}

TEST(Loading, SingleFileRoundTripAndF16) {
  TempModel m;
  const auto ck = Checkpoint::open(tiny_model_dir());
  auto tensors = fixture_tensors(ck);
  // Store the embedding as F16; it must come back as exactly the F16 values.
  const auto& emb = ck.get("model.embed_tokens.weight");
  std::vector<float> f(size_t(emb.numel()));
  convert_to_f32(emb.dtype, emb.data, f.data(), f.size());
  std::vector<uint16_t> h(f.size());
  for (size_t i = 0; i < f.size(); ++i) h[i] = f32_to_f16(f[i]);
  for (auto& t : tensors)
    if (t.name == emb.name) t = {t.name, DType::F16, t.shape, h.data()};
  m.write_single(tensors);
  const auto ck2 = Checkpoint::open(m.str());
  EXPECT_EQ(ck2.names(), ck.names());
  const auto cfg = ModelConfig::from_file(tiny_model_dir() + "/config.json");
  const auto w = load_host_weights(cfg, ck2);
  for (size_t i = 0; i < f.size(); ++i) ASSERT_EQ(w.embed.data[i], f16_to_f32(h[i])) << i;
  const auto& norm = ck.get("model.norm.weight");
  std::vector<float> nf(size_t(norm.numel()));
  convert_to_f32(norm.dtype, norm.data, nf.data(), nf.size());
  EXPECT_EQ(w.final_norm.data, nf);
}

TEST(Loading, MissingTensor) {
  TempModel m;
  const auto ck = Checkpoint::open(tiny_model_dir());
  auto tensors = fixture_tensors(ck);
  std::erase_if(tensors, [](const TensorToWrite& t) { return t.name == "model.layers.3.self_attn.kv_b_proj.weight"; });
  m.write_single(tensors);
  expect_load_error(m.str(), {"missing tensor", "model.layers.3.self_attn.kv_b_proj.weight"});
}

TEST(Loading, WrongShape) {
  TempModel m;
  const auto ck = Checkpoint::open(tiny_model_dir());
  auto tensors = fixture_tensors(ck);
  for (auto& t : tensors)
    if (t.name == "model.layers.5.self_attn.o_proj.weight") t.shape = {128, 512};
  m.write_single(tensors);
  expect_load_error(m.str(), {"wrong shape", "model.layers.5.self_attn.o_proj.weight is [128, 512]",
                              "expected [256, 256]"});
}

TEST(Loading, UnexpectedTensor) {
  TempModel m;
  const auto ck = Checkpoint::open(tiny_model_dir());
  auto tensors = fixture_tensors(ck);
  const float extra[4] = {1, 2, 3, 4};
  tensors.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", DType::F32, {4}, extra});
  m.write_single(tensors);
  expect_load_error(m.str(), {"unexpected tensor", "model.layers.0.self_attn.rotary_emb.inv_freq"});
}

TEST(Loading, TruncatedShard) {
  TempModel m;
  const auto shard = m.path("model-00002-of-00002.safetensors");
  fs::resize_file(shard, fs::file_size(shard) / 2);
  expect_load_error(m.str(), {"model-00002-of-00002.safetensors", "truncated", "tensor '"});
  // Cut inside the header.
  fs::resize_file(shard, 100);
  expect_load_error(m.str(), {"model-00002-of-00002.safetensors", "header length"});
  fs::resize_file(shard, 3);
  expect_load_error(m.str(), {"model-00002-of-00002.safetensors", "truncated"});
}

TEST(Loading, CorruptHeader) {
  TempModel m;
  const auto shard = m.path("model-00001-of-00002.safetensors");
  {
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(8);
    f.write("#garbage#", 9);
  }
  expect_load_error(m.str(), {"model-00001-of-00002.safetensors", "corrupt header"});
  // A header that is JSON but describes impossible data.
  TempModel m2;
  const float data[2] = {1, 2};
  m2.write_single({{"model.norm.weight", DType::F32, {2}, data}});
  const auto single = m2.path("model.safetensors");
  std::string bytes;
  {
    std::ifstream f(single, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), {});
  }
  const auto pos = bytes.find("\"F32\"");
  ASSERT_NE(pos, std::string::npos);
  bytes.replace(pos, 5, "\"Q7X\"");
  std::ofstream(single, std::ios::binary | std::ios::trunc) << bytes;
  try {
    SafetensorsFile f(single.string());
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.norm.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("unknown dtype"), std::string::npos) << e.what();
  }
}

// A header whose __metadata__ nests 200,000 deep used to overflow the stack (recursive dump of the
// value); past the documented depth it is a named loading error.
TEST(Loading, DeeplyNestedHeaderIsANamedError) {
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  const std::string header = R"({"__metadata__":{"x":)" + deep + "}}";
  const fs::path file = fs::temp_directory_path() / ("ds_test_deep_" + std::to_string(::getpid()) + ".safetensors");
  {
    std::ofstream f(file, std::ios::binary | std::ios::trunc);
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) f.put(char((n >> (8 * i)) & 0xff));
    f << header;
  }
  try {
    SafetensorsFile sf(file.string());
    ADD_FAILURE() << "a 200k-deep header loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("nested more than 100 levels"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(file.filename().string()), std::string::npos) << e.what();
  }
  fs::remove(file);
}

// The pure parsers (what a fuzz target calls) on bytes in memory.
TEST(Loading, PureParsersOnBytes) {
  auto expect_error = [](const std::function<void()>& f, const std::string& needle) {
    try {
      f();
      ADD_FAILURE() << "no error, expected " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto file = [](const std::string& header, size_t data_bytes) {
    std::string b(8, '\0');
    for (int i = 0; i < 8; ++i) b[size_t(i)] = char((uint64_t(header.size()) >> (8 * i)) & 0xff);
    return b + header + std::string(data_bytes, '\0');
  };
  std::string ok = file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"k":"v"}})", 8);
  SafetensorsHeader h = parse_safetensors(reinterpret_cast<const uint8_t*>(ok.data()), ok.size(), "mem");
  ASSERT_EQ(h.tensors.size(), 1u);
  EXPECT_EQ(h.tensors[0].name, "a");
  EXPECT_EQ(h.tensors[0].data, ok.data() + ok.size() - 8);
  EXPECT_EQ(h.metadata.at("k"), "v");
  for (const auto& [bytes, needle] : std::vector<std::pair<std::string, std::string>>{
           {file(R"({"__metadata__":{"x":)" + std::string(300, '[') + std::string(300, ']') + "}}", 0), "100 levels"},
           {file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4), "truncated"},
           {file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,1e400]}})", 8), "not valid JSON"},
           {std::string("\x05\0\0"), "too short"}}) {
    expect_error([&] { parse_safetensors(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "mem"); },
                 needle);
  }
  EXPECT_EQ(parse_checkpoint_index(R"({"weight_map":{"t":"s.safetensors"}})", "idx").at("t"), "s.safetensors");
  expect_error([] { parse_checkpoint_index("[1]", "idx"); }, "no weight_map");
  expect_error([] { parse_checkpoint_index(R"({"weight_map":{"t":1}})", "idx"); }, "not a file name");
  expect_error([] { parse_checkpoint_index(std::string(1000, '['), "idx"); }, "100 levels");
}

TEST(Loading, DeeplyNestedIndexIsANamedError) {
  TempModel m;
  std::ifstream f(m.path("model.safetensors.index.json"));
  auto idx = json::parse(f);
  std::string text = idx.dump();
  text.insert(text.size() - 1, R"(,"metadata_x":)" + std::string(50000, '[') + std::string(50000, ']'));
  std::ofstream(m.path("model.safetensors.index.json"), std::ios::trunc) << text;
  expect_load_error(m.str(), {"model.safetensors.index.json", "nested more than 100 levels"});
}

TEST(Loading, IndexNamesTensorMissingFromShard) {
  TempModel m;
  std::ifstream f(m.path("model.safetensors.index.json"));
  auto idx = json::parse(f);
  idx["weight_map"]["model.layers.9.mlp.up_proj.weight"] = "model-00002-of-00002.safetensors";
  std::ofstream(m.path("model.safetensors.index.json")) << idx.dump();
  expect_load_error(m.str(), {"model.layers.9.mlp.up_proj.weight", "does not contain it"});
}

TEST(Loading, BadLayerListInConfig) {
  TempModel m;
  std::ifstream f(m.path("config.json"));
  auto cfg = json::parse(f);
  cfg["linear_attn_config"]["kda_layers"] = {0, 1, 2, 4, 5, 6};
  std::ofstream(m.path("config.json")) << cfg.dump();
  expect_load_error(m.str(), {"kda_layers", "1-indexed", "config.json"});
}

// Dummy weights for configs the fixture does not cover: expert groups, several or no shared experts,
// more dense layers. Logits must be finite and batched == alone must hold.
TEST(Loading, DummyWeightsVariants) {
  std::ifstream f(tiny_model_dir() + "/config.json");
  const auto base = json::parse(f);
  for (int variant = 0; variant < 2; ++variant) {
    auto j = base;
    j["num_expert_group"] = 4;
    j["topk_group"] = 2;
    j["num_shared_experts"] = variant == 0 ? 2 : 0;
    j["first_k_dense_replace"] = variant == 0 ? 1 : 2;
    const auto cfg = ModelConfig::from_json(j);
    BackendOptions o = tiny_options();
    CpuBackend b(cfg, dummy_host_weights(cfg, 42), o);
    ForwardBatch batch;
    batch.add(0, 0, {1, 2, 3, 4, 5, 6, 7}, pages(0, 1), true);
    batch.add(1, 0, {9, 8}, pages(1, 1), true);
    const std::vector<float> logits = forward_logits(b, batch);
    ASSERT_EQ(logits.size(), size_t(9 * 2048));
    for (float x : logits) ASSERT_TRUE(std::isfinite(x));
    ForwardBatch one;
    one.add(2, 0, {9, 8}, pages(2, 1), true);
    const std::vector<float> alone = forward_logits(b, one);
    EXPECT_LT(rel_l2(logits.data() + 7 * 2048, alone.data(), alone.size()), 1e-6);
  }
}

TEST(Loading, DummyLoadFormatThroughOptions) {
  BackendOptions o = tiny_options();
  o.load_format = "dummy";
  o.model_dir = fixtures() + "/tiny/model";
  auto b = make_cpu_backend(o);
  EXPECT_EQ(b->config().num_layers, 8);
  o.load_format = "gguf";
  EXPECT_THROW(make_cpu_backend(o), Error);
}

}  // namespace
}  // namespace ds::test
