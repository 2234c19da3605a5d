#include "hub/hub_cache.h"

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>

#include "core/error.h"

namespace ds::hub {

namespace fs = std::filesystem;

namespace {
std::string env_or(const char* name, const std::string& dflt = {}) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::string(v) : dflt;
}
bool env_true(const char* name) {
  std::string v = env_or(name);
  return v == "1" || v == "true" || v == "TRUE" || v == "yes" || v == "ON" || v == "on";
}
}  // namespace

HubEnv hub_env_from_environment(const std::string& download_dir) {
  HubEnv e;
  if (!download_dir.empty()) {
    e.cache_dir = download_dir;
  } else if (std::string c = env_or("HF_HUB_CACHE"); !c.empty()) {
    e.cache_dir = c;
  } else if (std::string h = env_or("HF_HOME"); !h.empty()) {
    e.cache_dir = (fs::path(h) / "hub").string();
  } else if (std::string x = env_or("XDG_CACHE_HOME"); !x.empty()) {
    e.cache_dir = (fs::path(x) / "huggingface" / "hub").string();
  } else {
    std::string home = env_or("HOME");
    DS_CHECK(!home.empty(), "no Hugging Face cache folder: set HF_HOME, HF_HUB_CACHE or HOME, or pass --download-dir");
    e.cache_dir = (fs::path(home) / ".cache" / "huggingface" / "hub").string();
  }
  e.endpoint = env_or("HF_ENDPOINT", e.endpoint);
  while (!e.endpoint.empty() && e.endpoint.back() == '/') e.endpoint.pop_back();
  e.token = env_or("HF_TOKEN", env_or("HUGGING_FACE_HUB_TOKEN"));
  e.offline = env_true("HF_HUB_OFFLINE") || env_true("TRANSFORMERS_OFFLINE");
  e.progress = !env_true("HF_HUB_DISABLE_PROGRESS_BARS");
  return e;
}

std::string stored_token() {
  fs::path file;
  if (std::string p = env_or("HF_TOKEN_PATH"); !p.empty()) {
    file = p;
  } else if (std::string h = env_or("HF_HOME"); !h.empty()) {
    file = fs::path(h) / "token";
  } else if (std::string x = env_or("XDG_CACHE_HOME"); !x.empty()) {
    file = fs::path(x) / "huggingface" / "token";
  } else if (std::string home = env_or("HOME"); !home.empty()) {
    file = fs::path(home) / ".cache" / "huggingface" / "token";
  }
  std::string token;
  if (std::ifstream f(file); !file.empty() && f) std::getline(f, token);
  while (!token.empty() && std::isspace((unsigned char)token.back())) token.pop_back();
  while (!token.empty() && std::isspace((unsigned char)token.front())) token.erase(token.begin());
  return token;
}

bool is_repo_id(const std::string& s) {
  static const std::regex re(R"(^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$)");
  if (!std::regex_match(s, re)) return false;
  return s.find("--") == std::string::npos && s.find("..") == std::string::npos && s.back() != '.' &&
         s.back() != '-';
}

bool is_commit_hash(const std::string& s) {
  static const std::regex re("^[0-9a-f]{40}$");
  return std::regex_match(s, re);
}

std::string repo_cache_dir(const std::string& cache_dir, const std::string& repo_id) {
  DS_CHECK(is_repo_id(repo_id), "'{}' is not a Hugging Face repo id (org/name)", repo_id);
  std::string folder = "models--" + repo_id;
  folder.replace(folder.find('/'), 1, "--");
  return (fs::path(cache_dir) / folder).string();
}

std::optional<std::string> find_cached_snapshot(const std::string& cache_dir, const std::string& repo_id,
                                                const std::string& revision) {
  const fs::path repo = repo_cache_dir(cache_dir, repo_id);
  std::string commit = revision;
  if (!is_commit_hash(revision)) {
    // A branch or tag: refs/<revision> holds its commit (revision may contain '/', e.g. refs/pr/1).
    if (revision.find("..") != std::string::npos) return std::nullopt;
    std::ifstream f(repo / "refs" / revision);
    if (!f || !(f >> commit) || !is_commit_hash(commit)) return std::nullopt;
  }
  fs::path snap = repo / "snapshots" / commit;
  std::error_code ec;
  if (!fs::exists(snap / "config.json", ec)) return std::nullopt;
  return snap.string();
}

bool is_needed_file(const std::string& p) {
  if (p.find('/') != std::string::npos) return false;
  static const char* const kExact[] = {"config.json",          "generation_config.json", "tiktoken.model",
                                       "tokenizer_config.json", "tokenizer.json",         "special_tokens_map.json",
                                       "chat_template.jinja",   "model.safetensors.index.json"};
  for (const char* e : kExact)
    if (p == e) return true;
  const std::string ext = ".safetensors";
  return p.size() > ext.size() && p.compare(p.size() - ext.size(), ext.size(), ext) == 0;
}

const std::vector<std::string>& required_files() {
  static const std::vector<std::string> files = {"config.json", "tiktoken.model", "tokenizer_config.json"};
  return files;
}

}  // namespace ds::hub
