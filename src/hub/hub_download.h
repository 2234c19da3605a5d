// Getting a model from the Hugging Face Hub: `resolve_model` turns what the user typed after
// `deltaserve serve` (a directory, or a repo id such as moonshotai/Kimi-Linear-48B-A3B-Instruct)
// into a local directory, downloading into the standard cache (hub_cache.h) when needed.
//
// Protocol (the Hub's public HTTP API, also what tests/hub/mock_hub.py serves):
//   GET  ENDPOINT/api/models/REPO/revision/REV?blobs=true   -> {"sha": COMMIT, "siblings": [{"rfilename",
//        "size", "blobId", "lfs": {"sha256", "size"}}]}
//   GET  ENDPOINT/REPO/resolve/COMMIT/FILE  (redirects followed; "Range: bytes=N-" resumes a partial file)
// with "Authorization: Bearer $HF_TOKEN" when a token is set. Only the files hub_cache.h's
// is_needed_file accepts are fetched; LFS files (weights) are checked against their SHA-256.
// Partial downloads live in blobs/NAME.incomplete and resume on the next run.
// Needs libcurl (optional at build time: without it, only cached models and directories work).
#pragma once
#include <cstdint>
#include <string>

#include "hub/hub_cache.h"

namespace ds::hub {

// Whether this build can download (found libcurl at configure time).
bool download_supported();

// A local directory for `model`: the directory itself when it is one; for a repo id, its cached
// snapshot of `revision` (downloading what is missing unless env.offline; when the Hub cannot be
// asked or the download fails and a snapshot is cached, that one is used with a warning). Throws
// ds::Error with the reason (bad token, no such repo/revision/file, checksum mismatch, offline and
// not cached...).
std::string resolve_model(const std::string& model, const std::string& revision, const HubEnv& env);

// Downloads the needed files of repo_id@revision into env.cache_dir; returns the snapshot folder.
std::string download_snapshot(const std::string& repo_id, const std::string& revision, const HubEnv& env);

}  // namespace ds::hub
