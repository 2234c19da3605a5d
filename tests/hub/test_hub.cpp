// The Hugging Face Hub client's pure parts: the cache layout (as huggingface_hub writes it), the
// environment, repo ids, the needed-file filter, the revision listing, SHA-256.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "hub/hub_cache.h"
#include "hub/hub_download.h"
#include "hub/hub_listing.h"
#include "hub/sha256.h"

namespace ds::hub {
namespace {

namespace fs = std::filesystem;

std::string digest(const std::string& s) {
  Sha256 h;
  h.update(s.data(), s.size());
  return h.hex_digest();
}

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(digest(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(digest("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(digest("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  std::string million(1000000, 'a');
  EXPECT_EQ(digest(million), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // Fed in uneven pieces: the same.
  Sha256 h;
  for (size_t i = 0; i < million.size();) {
    size_t n = std::min<size_t>(1 + i % 97, million.size() - i);
    h.update(million.data() + i, n);
    i += n;
  }
  EXPECT_EQ(h.hex_digest(), digest(million));
}

TEST(HubCache, RepoIds) {
  EXPECT_TRUE(is_repo_id("moonshotai/Kimi-Linear-48B-A3B-Instruct"));
  EXPECT_TRUE(is_repo_id("org/name.v1_x"));
  EXPECT_FALSE(is_repo_id("name"));
  EXPECT_FALSE(is_repo_id("/abs/path"));
  EXPECT_FALSE(is_repo_id("a/b/c"));
  EXPECT_FALSE(is_repo_id("../x"));
  EXPECT_FALSE(is_repo_id("org/na--me"));
  EXPECT_FALSE(is_repo_id("org/"));
  EXPECT_EQ(repo_cache_dir("/c", "moonshotai/Kimi-Linear"), "/c/models--moonshotai--Kimi-Linear");
}

struct EnvGuard {
  std::vector<std::pair<std::string, std::optional<std::string>>> saved;
  void set(const char* k, const char* v) {
    const char* old = std::getenv(k);
    saved.emplace_back(k, old ? std::optional<std::string>(old) : std::nullopt);
    if (v) ::setenv(k, v, 1);
    else ::unsetenv(k);
  }
  ~EnvGuard() {
    for (auto it = saved.rbegin(); it != saved.rend(); ++it) {
      if (it->second) ::setenv(it->first.c_str(), it->second->c_str(), 1);
      else ::unsetenv(it->first.c_str());
    }
  }
};

TEST(HubCache, CacheFolderFollowsTheEnvironment) {
  EnvGuard g;
  g.set("HF_HUB_CACHE", nullptr);
  g.set("HF_HOME", nullptr);
  g.set("XDG_CACHE_HOME", nullptr);
  g.set("HOME", "/home/u");
  g.set("HF_ENDPOINT", nullptr);
  g.set("HF_TOKEN", nullptr);
  g.set("HUGGING_FACE_HUB_TOKEN", nullptr);
  g.set("HF_HUB_OFFLINE", nullptr);
  g.set("TRANSFORMERS_OFFLINE", nullptr);
  HubEnv e = hub_env_from_environment("");
  EXPECT_EQ(e.cache_dir, "/home/u/.cache/huggingface/hub");
  EXPECT_EQ(e.endpoint, "https://huggingface.co");
  EXPECT_TRUE(e.token.empty());
  EXPECT_FALSE(e.offline);
  g.set("XDG_CACHE_HOME", "/xdg");
  EXPECT_EQ(hub_env_from_environment("").cache_dir, "/xdg/huggingface/hub");
  g.set("HF_HOME", "/hf");
  EXPECT_EQ(hub_env_from_environment("").cache_dir, "/hf/hub");
  g.set("HF_HUB_CACHE", "/hubcache");
  EXPECT_EQ(hub_env_from_environment("").cache_dir, "/hubcache");
  EXPECT_EQ(hub_env_from_environment("/dl").cache_dir, "/dl");  // --download-dir wins
  g.set("HF_ENDPOINT", "http://127.0.0.1:5000/");
  g.set("HUGGING_FACE_HUB_TOKEN", "old");
  g.set("HF_HUB_OFFLINE", "1");
  e = hub_env_from_environment("");
  EXPECT_EQ(e.endpoint, "http://127.0.0.1:5000");
  EXPECT_EQ(e.token, "old");
  EXPECT_TRUE(e.offline);
  g.set("HF_TOKEN", "new");
  EXPECT_EQ(hub_env_from_environment("").token, "new");
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/ds-hub-test.XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

TEST(HubCache, FindsSnapshotsByBranchAndCommit) {
  TempDir t;
  const std::string commit(40, 'a'), other(40, 'b');
  fs::path repo = repo_cache_dir(t.path(), "org/model");
  write(repo / "refs" / "main", commit + "\n");
  write(repo / "snapshots" / commit / "config.json", "{}");
  auto s = find_cached_snapshot(t.path(), "org/model", "main");
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(*s, (repo / "snapshots" / commit).string());
  EXPECT_EQ(find_cached_snapshot(t.path(), "org/model", commit), s);
  EXPECT_FALSE(find_cached_snapshot(t.path(), "org/model", other).has_value());      // not downloaded
  EXPECT_FALSE(find_cached_snapshot(t.path(), "org/model", "v2").has_value());       // no such ref
  EXPECT_FALSE(find_cached_snapshot(t.path(), "org/other", "main").has_value());     // no such repo
  write(repo / "refs" / "broken", "not-a-hash");
  EXPECT_FALSE(find_cached_snapshot(t.path(), "org/model", "broken").has_value());
  write(repo / "refs" / "half", other);  // a ref whose snapshot has no config.json yet
  fs::create_directories(repo / "snapshots" / other);
  EXPECT_FALSE(find_cached_snapshot(t.path(), "org/model", "half").has_value());
}

TEST(HubCache, OfflineUsesTheCacheOrSaysWhy) {
  TempDir t;
  HubEnv env;
  env.cache_dir = t.path();
  env.offline = true;
  env.endpoint = "http://127.0.0.1:9";
  try {
    resolve_model("org/model", "main", env);
    ADD_FAILURE() << "resolved an uncached model offline";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("HF_HUB_OFFLINE"), std::string::npos) << e.what();
  }
  const std::string commit(40, 'c');
  fs::path repo = repo_cache_dir(t.path(), "org/model");
  write(repo / "refs" / "main", commit);
  write(repo / "snapshots" / commit / "config.json", "{}");
  EXPECT_EQ(resolve_model("org/model", "main", env), (repo / "snapshots" / commit).string());
  EXPECT_EQ(resolve_model(t.path(), "main", env), t.path());  // a directory is itself
  try {
    resolve_model("not a model", "main", env);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("neither a directory nor a Hugging Face repo id"), std::string::npos);
  }
}

TEST(HubCache, NeededFiles) {
  for (const char* f : {"config.json", "tiktoken.model", "tokenizer_config.json", "model.safetensors.index.json",
                        "model-00001-of-00020.safetensors", "chat_template.jinja", "generation_config.json"})
    EXPECT_TRUE(is_needed_file(f)) << f;
  for (const char* f : {"README.md", "pytorch_model.bin", "modeling_kimi.py", "configuration_kimi.py", ".gitattributes",
                        "original/model.safetensors", "figures/arch.png", "model.gguf", "safetensors"})
    EXPECT_FALSE(is_needed_file(f)) << f;
}

std::string listing_json(const std::string& extra_sibling = "") {
  return R"({"sha": ")" + std::string(40, '1') + R"(", "siblings": [
    {"rfilename": "config.json", "size": 10, "blobId": ")" + std::string(40, 'b') + R"("},
    {"rfilename": "tiktoken.model", "size": 99, "lfs": {"sha256": ")" + std::string(64, 'e') + R"(", "size": 99}},
    {"rfilename": "tokenizer_config.json", "size": 5},
    {"rfilename": "README.md", "size": 3},
    {"rfilename": "model-00001-of-00001.safetensors", "lfs": {"sha256": ")" + std::string(64, 'f') +
         R"(", "size": 123456789012}})" + extra_sibling + "]}";
}

TEST(HubListing, KeepsNeededFilesWithTheirChecksums) {
  RepoListing l = parse_listing(listing_json(), "org/m", "main");
  EXPECT_EQ(l.commit, std::string(40, '1'));
  ASSERT_EQ(l.files.size(), 4u);  // README.md dropped
  EXPECT_EQ(l.files[0].blob_name(), std::string(40, 'b'));
  EXPECT_EQ(l.files[1].sha256, std::string(64, 'e'));
  EXPECT_EQ(l.files[1].blob_name(), std::string(64, 'e'));
  EXPECT_EQ(l.files[2].blob_name(), "path-tokenizer_config.json");  // neither id given
  EXPECT_EQ(l.files[3].size, 123456789012);
}

TEST(HubListing, SaysWhatIsMissing) {
  auto expect_error = [](const std::string& body, const std::string& what) {
    try {
      parse_listing(body, "org/m", "main");
      ADD_FAILURE() << "accepted: " << body;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  expect_error("not json", "not a JSON object");
  expect_error(R"({"siblings": []})", "no commit hash");
  expect_error(R"({"sha": ")" + std::string(40, '1') + R"(", "siblings": [{"rfilename": "config.json"},
               {"rfilename": "tokenizer_config.json"}, {"rfilename": "a.safetensors"}]})",
               "has no tiktoken.model");
  expect_error(R"({"sha": ")" + std::string(40, '1') + R"(", "siblings": [{"rfilename": "config.json"},
               {"rfilename": "tiktoken.model"}, {"rfilename": "tokenizer_config.json"},
               {"rfilename": "pytorch_model.bin"}]})",
               "no *.safetensors");
}

}  // namespace
}  // namespace ds::hub
