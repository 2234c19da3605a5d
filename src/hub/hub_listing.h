// The Hub's answer about one revision of a repo, reduced to the files deltaserve needs. Pure
// parsing (no network) so that it is unit-tested.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ds::hub {

struct RepoFile {
  std::string path;    // in the repo, e.g. "model-00001-of-00002.safetensors"
  int64_t size = -1;   // bytes; -1 when the Hub did not say
  std::string sha256;  // LFS files: the content's SHA-256 (checked); empty otherwise
  std::string blob_id; // the git blob id (non-LFS files' name in blobs/)
  // The blob's name in the cache: the SHA-256 for LFS files, else the git blob id, else a name
  // derived from the path (a Hub that gives neither).
  std::string blob_name() const;
};

struct RepoListing {
  std::string commit;           // 40 hex digits
  std::vector<RepoFile> files;  // needed files only, in the Hub's order
};

// Parses GET /api/models/REPO/revision/REV?blobs=true. Throws ds::Error naming the repo when the
// answer is malformed, when a required file (config.json, tiktoken.model, tokenizer_config.json) is
// missing or when there are no safetensors weights.
RepoListing parse_listing(const std::string& body, const std::string& repo_id, const std::string& revision);

// Writes `text` to `path` atomically (a temporary file renamed over it).
void write_text_file(const std::string& path, const std::string& text);

}  // namespace ds::hub
