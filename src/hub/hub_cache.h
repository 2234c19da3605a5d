// The Hugging Face Hub's local cache, as huggingface_hub lays it out, so that a model downloaded by
// either tool is found by the other:
//   CACHE/models--ORG--NAME/refs/REVISION      the commit hash a branch or tag resolved to
//   CACHE/models--ORG--NAME/snapshots/COMMIT/  one file (or symlink into blobs/) per repo file
//   CACHE/models--ORG--NAME/blobs/ETAG         file contents, named by the Hub's ETag
// CACHE is --download-dir, else $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub,
// else ~/.cache/huggingface/hub. Pure file-system code: no network (see hub_download.h).
#pragma once
#include <optional>
#include <string>
#include <vector>

namespace ds::hub {

// What the process environment says about the Hub (read once; tests build one by hand).
struct HubEnv {
  std::string cache_dir;  // resolved cache folder (see above)
  std::string endpoint = "https://huggingface.co";  // $HF_ENDPOINT
  std::string token;      // $HF_TOKEN (or $HUGGING_FACE_HUB_TOKEN)
  bool offline = false;   // $HF_HUB_OFFLINE=1 (or $TRANSFORMERS_OFFLINE=1)
  bool progress = true;   // false under $HF_HUB_DISABLE_PROGRESS_BARS=1
};

// Reads the environment; `download_dir` (--download-dir), when not empty, replaces the cache folder.
HubEnv hub_env_from_environment(const std::string& download_dir);

// The token `huggingface-cli login` stored: the file $HF_TOKEN_PATH, else $HF_HOME/token, else
// $XDG_CACHE_HOME/huggingface/token, else ~/.cache/huggingface/token; "" when there is none.
std::string stored_token();

// "org/name" with the Hub's characters ([A-Za-z0-9._-], no "--" or ".." , at most 96 chars a part).
bool is_repo_id(const std::string& s);
// A 40-hex-digit commit hash.
bool is_commit_hash(const std::string& s);

// CACHE/models--org--name
std::string repo_cache_dir(const std::string& cache_dir, const std::string& repo_id);

// The snapshot folder of `revision` (a branch, tag or commit hash) when the cache has one with a
// config.json; nullopt otherwise.
std::optional<std::string> find_cached_snapshot(const std::string& cache_dir, const std::string& repo_id,
                                                const std::string& revision);

// Whether a repo file is one deltaserve needs: config.json, generation_config.json, the tokenizer
// files (tiktoken.model, tokenizer_config.json, tokenizer.json, special_tokens_map.json,
// chat_template.jinja), *.safetensors and model.safetensors.index.json. Files in sub-folders,
// other weight formats (.bin, .pt, .gguf), remote code (.py) and docs are not.
bool is_needed_file(const std::string& repo_path);
// The files without which the model cannot load.
const std::vector<std::string>& required_files();

}  // namespace ds::hub
