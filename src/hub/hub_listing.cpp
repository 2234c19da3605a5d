#include "hub/hub_listing.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "hub/hub_cache.h"

namespace ds::hub {

std::string RepoFile::blob_name() const {
  if (!sha256.empty()) return sha256;
  if (!blob_id.empty()) return blob_id;
  std::string n = "path-" + path;
  for (char& c : n)
    if (c == '/') c = '_';
  return n;
}

namespace {
bool is_hex(const std::string& s, size_t n) {
  if (s.size() != n) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}
}  // namespace

RepoListing parse_listing(const std::string& body, const std::string& repo_id, const std::string& revision) {
  nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
  DS_CHECK(j.is_object(), "the Hub's answer about {}@{} is not a JSON object", repo_id, revision);
  RepoListing out;
  DS_CHECK(j.contains("sha") && j["sha"].is_string() && is_commit_hash(j["sha"].get<std::string>()),
           "the Hub's answer about {}@{} has no commit hash ('sha')", repo_id, revision);
  out.commit = j["sha"].get<std::string>();
  DS_CHECK(j.contains("siblings") && j["siblings"].is_array(), "the Hub's answer about {}@{} lists no files",
           repo_id, revision);
  bool weights = false;
  std::vector<std::string> names;
  for (const auto& s : j["siblings"]) {
    if (!s.is_object() || !s.contains("rfilename") || !s["rfilename"].is_string()) continue;
    RepoFile f;
    f.path = s["rfilename"].get<std::string>();
    names.push_back(f.path);
    if (!is_needed_file(f.path)) continue;
    if (s.contains("size") && s["size"].is_number_integer()) f.size = s["size"].get<int64_t>();
    if (s.contains("blobId") && s["blobId"].is_string() && is_hex(s["blobId"].get<std::string>(), 40))
      f.blob_id = s["blobId"].get<std::string>();
    if (s.contains("lfs") && s["lfs"].is_object()) {
      const auto& lfs = s["lfs"];
      if (lfs.contains("sha256") && lfs["sha256"].is_string() && is_hex(lfs["sha256"].get<std::string>(), 64))
        f.sha256 = lfs["sha256"].get<std::string>();
      if (lfs.contains("size") && lfs["size"].is_number_integer()) f.size = lfs["size"].get<int64_t>();
    }
    weights |= f.path.ends_with(".safetensors");
    out.files.push_back(std::move(f));
  }
  for (const std::string& req : required_files()) {
    bool found = false;
    for (const RepoFile& f : out.files) found |= f.path == req;
    DS_CHECK(found, "{}@{} has no {}: deltaserve needs config.json, tiktoken.model, tokenizer_config.json and "
             "*.safetensors weights at the top of the repo", repo_id, revision, req);
  }
  DS_CHECK(weights, "{}@{} has no *.safetensors weights (other formats are not supported)", repo_id, revision);
  return out;
}

void write_text_file(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    DS_CHECK(bool(f), "cannot write {}", tmp);
    f << text;
    DS_CHECK(bool(f), "cannot write {}", tmp);
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace ds::hub
