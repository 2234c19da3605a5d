// The network half of the Hub client (libcurl): the revision listing and one file's download with
// resume, progress and checksum. Without libcurl at build time every call throws a ds::Error that
// says so.
#pragma once
#include <string>

#include "hub/hub_cache.h"
#include "hub/hub_listing.h"

namespace ds::hub {

bool transfer_supported();

// GET ENDPOINT/api/models/REPO/revision/REV?blobs=true, parsed. Errors name the cause: a token the
// Hub rejected, a repo or revision it does not know, an unreachable endpoint.
RepoListing fetch_listing(const std::string& repo_id, const std::string& revision, const HubEnv& env);

// Downloads `f` of repo_id@commit into `dest` (through dest + ".incomplete", resuming it when it
// exists), checks size and SHA-256 when known, then renames it to `dest`. Shows a progress bar on
// stderr unless env.progress is false.
void fetch_file(const std::string& repo_id, const std::string& commit, const RepoFile& f, const std::string& dest,
                const HubEnv& env);

}  // namespace ds::hub
