#include "hub/hub_download.h"

#include <filesystem>

#include "core/error.h"
#include "core/log.h"
#include "hub/hub_transfer.h"

namespace ds::hub {

namespace fs = std::filesystem;

bool download_supported() { return transfer_supported(); }

std::string resolve_model(const std::string& model, const std::string& revision, const HubEnv& env) {
  std::error_code ec;
  if (fs::is_directory(model, ec)) return model;
  if (!is_repo_id(model))
    fail("model '{}' is neither a directory nor a Hugging Face repo id (org/name)", model);
  const std::string rev = revision.empty() ? "main" : revision;
  auto cached = find_cached_snapshot(env.cache_dir, model, rev);
  if (env.offline) {
    if (!cached)
      fail("HF_HUB_OFFLINE is set and {}@{} is not in the Hugging Face cache {} (download it once online, or pass "
           "its directory)",
           model, rev, env.cache_dir);
    spdlog::info("model {}@{}: offline, using the cached snapshot {}", model, rev, *cached);
    return *cached;
  }
  if (cached && is_commit_hash(rev)) {  // a commit never changes: no need to ask the Hub
    spdlog::info("model {}@{}: cached at {}", model, rev, *cached);
    return *cached;
  }
  if (!download_supported()) {
    if (cached) {
      spdlog::warn("model {}@{}: this build has no libcurl, using the cached snapshot {} without checking for updates",
                   model, rev, *cached);
      return *cached;
    }
    fail("model {} is not in the Hugging Face cache {} and this build cannot download (built without libcurl: "
         "install libcurl4-openssl-dev and rebuild, or download the model and pass its directory)",
         model, env.cache_dir);
  }
  if (!cached) return download_snapshot(model, rev, env);
  try {
    return download_snapshot(model, rev, env);
  } catch (const Error& e) {  // as huggingface_hub does: a cached snapshot beats no model
    spdlog::warn("model {}@{}: could not update from the Hub ({}); using the cached snapshot {}", model, rev, e.what(),
                 *cached);
    return *cached;
  }
}

std::string download_snapshot(const std::string& repo_id, const std::string& revision, const HubEnv& env) {
  const RepoListing listing = fetch_listing(repo_id, revision, env);
  const fs::path repo = repo_cache_dir(env.cache_dir, repo_id);
  const fs::path snap = repo / "snapshots" / listing.commit;
  fs::create_directories(repo / "blobs");
  fs::create_directories(snap);
  int64_t total = 0;
  int fetched = 0;
  for (const RepoFile& f : listing.files) {
    const fs::path link = snap / f.path;
    std::error_code ec;
    if (fs::exists(link, ec) && (f.size < 0 || int64_t(fs::file_size(link, ec)) == f.size)) continue;
    const fs::path blob = repo / "blobs" / f.blob_name();
    if (!fs::exists(blob, ec)) {
      fetch_file(repo_id, listing.commit, f, blob.string(), env);
      ++fetched;
      total += f.size > 0 ? f.size : 0;
    }
    fs::remove(link, ec);
    fs::create_symlink(fs::path("..") / ".." / "blobs" / f.blob_name(), link);
  }
  if (!is_commit_hash(revision)) {
    fs::path ref = repo / "refs" / revision;
    fs::create_directories(ref.parent_path());
    write_text_file(ref.string(), listing.commit);
  }
  spdlog::info("model {}@{}: snapshot {} ({} files, {} downloaded, {:.1f} MiB)", repo_id, revision, snap.string(),
               listing.files.size(), fetched, double(total) / (1 << 20));
  return snap.string();
}

}  // namespace ds::hub
