#include "hub/hub_transfer.h"

#include "core/error.h"

#if DS_HAVE_CURL
#include <curl/curl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <vector>

#include "core/log.h"
#include "hub/sha256.h"
#endif

namespace ds::hub {

#if !DS_HAVE_CURL

bool transfer_supported() { return false; }
RepoListing fetch_listing(const std::string& repo_id, const std::string&, const HubEnv&) {
  fail("cannot download {}: this build has no libcurl (install libcurl4-openssl-dev and rebuild)", repo_id);
}
void fetch_file(const std::string& repo_id, const std::string&, const RepoFile&, const std::string&, const HubEnv&) {
  fail("cannot download {}: this build has no libcurl (install libcurl4-openssl-dev and rebuild)", repo_id);
}

#else

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct CurlGlobal {
  CurlGlobal() { curl_global_init(CURL_GLOBAL_DEFAULT); }
};

struct Easy {
  CURL* h;
  curl_slist* headers = nullptr;
  Easy() {
    static CurlGlobal global;
    h = curl_easy_init();
    DS_CHECK(h != nullptr, "curl_easy_init failed");
  }
  ~Easy() {
    curl_slist_free_all(headers);
    curl_easy_cleanup(h);
  }
  Easy(const Easy&) = delete;
  Easy& operator=(const Easy&) = delete;
};

// The Hub's error headers (X-Error-Code, X-Error-Message) of the last response.
struct ErrorHeaders {
  std::string code, message;
};

size_t on_header(char* data, size_t size, size_t n, void* user) {
  auto* eh = static_cast<ErrorHeaders*>(user);
  std::string line(data, size * n);
  auto colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    for (char& c : name) c = char(std::tolower(static_cast<unsigned char>(c)));
    std::string value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ')) value.erase(0, 1);
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' ')) value.pop_back();
    if (name == "x-error-code") eh->code = value;
    if (name == "x-error-message") eh->message = value;
  }
  if (line.rfind("HTTP/", 0) == 0) *eh = {};  // a new response (after a redirect)
  return size * n;
}

void setup(Easy& e, const std::string& url, const HubEnv& env, ErrorHeaders* eh) {
  curl_easy_setopt(e.h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(e.h, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(e.h, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(e.h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e.h, CURLOPT_CONNECTTIMEOUT, 30L);
  // A stalled transfer (under 1 KiB/s for 60 s) fails instead of hanging; a rerun resumes it.
  curl_easy_setopt(e.h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
  curl_easy_setopt(e.h, CURLOPT_LOW_SPEED_TIME, 60L);
  curl_easy_setopt(e.h, CURLOPT_USERAGENT, "deltaserve/0.1");
  curl_easy_setopt(e.h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e.h, CURLOPT_HEADERDATA, eh);
  if (!env.token.empty())  // libcurl drops it on a redirect to another host (the CDN's signed URLs)
    e.headers = curl_slist_append(e.headers, ("Authorization: Bearer " + env.token).c_str());
}

// The reason for an HTTP error from the Hub, in words a user can act on.
[[noreturn]] void http_error(long status, const ErrorHeaders& eh, const std::string& what, const HubEnv& env) {
  const std::string hub = eh.message.empty() ? "" : " (the Hub says: " + eh.message + ")";
  if (eh.code == "RepoNotFound")
    fail("{}: repository not found on {}{}; check the id, or set HF_TOKEN if it is private or gated", what,
         env.endpoint, hub);
  if (eh.code == "RevisionNotFound") fail("{}: revision not found{}; check --revision", what, hub);
  if (eh.code == "EntryNotFound") fail("{}: file not found in the repository{}", what, hub);
  if (eh.code == "GatedRepo") fail("{}: the repository is gated{}; accept its terms on the Hub and set HF_TOKEN", what, hub);
  if (status == 401 || status == 403) {
    if (!env.token.empty())
      fail("{}: the Hub refused HF_TOKEN (HTTP {}){}; check that the token is valid and may read this repository",
           what, status, hub);
    fail("{}: HTTP {} (not found, private or gated){}; set HF_TOKEN if it is private or gated", what, status, hub);
  }
  if (status == 404) fail("{}: not found (HTTP 404){}", what, hub);
  fail("{}: HTTP {}{}", what, status, hub);
}

[[noreturn]] void curl_error(CURLcode rc, const char* errbuf, const std::string& what, const HubEnv& env) {
  fail("{}: {} ({}); is {} reachable? With the model already cached, HF_HUB_OFFLINE=1 skips the network", what,
       curl_easy_strerror(rc), errbuf[0] ? errbuf : "no detail", env.endpoint);
}

size_t append_string(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

// A file being written: appends bytes, hashes them, draws the progress bar.
struct Sink {
  FILE* file = nullptr;
  Sha256 hash;
  int64_t have = 0, total = -1, started_at = 0;
  std::string name;
  bool progress = true, tty = false;
  Clock::time_point t0 = Clock::now(), last_draw{};
  int last_decile = -1;

  void draw(bool done) {
    const auto now = Clock::now();
    const int decile = total > 0 ? int(have * 10 / total) : -1;
    if (!done && (tty ? now - last_draw < std::chrono::milliseconds(200) : decile == last_decile)) return;
    if (done && !tty && decile == last_decile && decile == 10) return;  // the 100% line is out already
    last_draw = now;
    last_decile = decile;
    const double secs = std::chrono::duration<double>(now - t0).count();
    const double rate = secs > 0 ? double(have - started_at) / secs / (1 << 20) : 0.0;
    // Sizes in the unit of the total (KiB for small files, MiB, GiB for shards).
    const int64_t ref = total > 0 ? total : have;
    const char* unit = ref >= (int64_t(1) << 30) ? "GiB" : ref >= (1 << 20) ? "MiB" : "KiB";
    const double div = ref >= (int64_t(1) << 30) ? double(int64_t(1) << 30) : ref >= (1 << 20) ? double(1 << 20) : 1024.0;
    std::string bar;
    if (total > 0) {
      const int width = 30, filled = int(width * have / total);
      bar = "[" + std::string(size_t(filled), '#') + std::string(size_t(width - filled), '.') + "] " +
            fmt::format("{:3d}% {:.1f}/{:.1f} {}", int(100 * have / total), double(have) / div, double(total) / div, unit);
    } else {
      bar = fmt::format("{:.1f} {}", double(have) / div, unit);
    }
    std::fprintf(stderr, "%sdownloading %s %s %.1f MiB/s%s", tty ? "\r" : "", name.c_str(), bar.c_str(), rate,
                 tty && !done ? "" : "\n");
    std::fflush(stderr);
  }
};

size_t write_sink(char* data, size_t size, size_t n, void* user) {
  auto* s = static_cast<Sink*>(user);
  const size_t bytes = size * n;
  if (std::fwrite(data, 1, bytes, s->file) != bytes) return 0;
  s->hash.update(data, bytes);
  s->have += int64_t(bytes);
  if (s->progress) s->draw(false);
  return bytes;
}

std::string escape_path(CURL* h, const std::string& p) {
  std::string out;
  size_t start = 0;
  while (true) {
    size_t slash = p.find('/', start);
    std::string part = p.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    char* e = curl_easy_escape(h, part.c_str(), int(part.size()));
    out += e;
    curl_free(e);
    if (slash == std::string::npos) break;
    out += '/';
    start = slash + 1;
  }
  return out;
}

}  // namespace

bool transfer_supported() { return true; }

RepoListing fetch_listing(const std::string& repo_id, const std::string& revision, const HubEnv& env) {
  Easy e;
  ErrorHeaders eh;
  const std::string url =
      env.endpoint + "/api/models/" + repo_id + "/revision/" + escape_path(e.h, revision) + "?blobs=true";
  setup(e, url, env, &eh);
  curl_easy_setopt(e.h, CURLOPT_HTTPHEADER, e.headers);
  std::string body;
  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(e.h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(e.h, CURLOPT_WRITEFUNCTION, append_string);
  curl_easy_setopt(e.h, CURLOPT_WRITEDATA, &body);
  const std::string what = fmt::format("model {}@{}", repo_id, revision);
  spdlog::info("{}: asking {} for its files", what, env.endpoint);
  CURLcode rc = curl_easy_perform(e.h);
  if (rc != CURLE_OK) curl_error(rc, errbuf, what, env);
  long status = 0;
  curl_easy_getinfo(e.h, CURLINFO_RESPONSE_CODE, &status);
  if (status != 200) http_error(status, eh, what, env);
  return parse_listing(body, repo_id, revision);
}

void fetch_file(const std::string& repo_id, const std::string& commit, const RepoFile& f, const std::string& dest,
                const HubEnv& env) {
  const std::string part = dest + ".incomplete";
  const std::string what = fmt::format("{}/{}@{}", repo_id, f.path, commit.substr(0, 12));
  std::error_code ec;
  int64_t have = fs::exists(part, ec) ? int64_t(fs::file_size(part, ec)) : 0;
  if (f.size >= 0 && have > f.size) {  // not ours to extend: start over
    fs::remove(part, ec);
    have = 0;
  }
  Sink s;
  s.name = f.path;
  s.total = f.size;
  s.progress = env.progress;
  s.tty = isatty(fileno(stderr)) != 0;
  if (have > 0) {  // hash what is there so the checksum covers the whole file
    std::FILE* in = std::fopen(part.c_str(), "rb");
    DS_CHECK(in != nullptr, "cannot read {}", part);
    std::vector<char> buf(1 << 20);
    size_t got;
    while ((got = std::fread(buf.data(), 1, buf.size(), in)) > 0) s.hash.update(buf.data(), got);
    std::fclose(in);
    spdlog::info("{}: resuming a partial download at {:.1f} MiB", what, double(have) / (1 << 20));
  }
  s.have = s.started_at = have;
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(part.c_str(), have > 0 ? "ab" : "wb"), std::fclose);
  DS_CHECK(file != nullptr, "cannot write {}", part);
  s.file = file.get();

  if (f.size < 0 || have < f.size) {
    Easy e;
    ErrorHeaders eh;
    setup(e, env.endpoint + "/" + repo_id + "/resolve/" + commit + "/" + escape_path(e.h, f.path), env, &eh);
    if (have > 0) e.headers = curl_slist_append(e.headers, fmt::format("Range: bytes={}-", have).c_str());
    curl_easy_setopt(e.h, CURLOPT_HTTPHEADER, e.headers);
    char errbuf[CURL_ERROR_SIZE] = {0};
    curl_easy_setopt(e.h, CURLOPT_ERRORBUFFER, errbuf);
    // Only a 2xx body is written to the file (an error page is not data).
    curl_easy_setopt(e.h, CURLOPT_FAILONERROR, 0L);
    std::string error_body;
    struct Ctx {
      Easy* e;
      Sink* s;
      std::string* err;
      int64_t have;
      bool checked = false, ok = false;
    } ctx{&e, &s, &error_body, have};
    curl_easy_setopt(e.h, CURLOPT_WRITEDATA, &ctx);
    curl_easy_setopt(
        e.h, CURLOPT_WRITEFUNCTION, +[](char* data, size_t size, size_t n, void* user) -> size_t {
          auto* c = static_cast<Ctx*>(user);
          if (!c->checked) {
            c->checked = true;
            long st = 0;
            curl_easy_getinfo(c->e->h, CURLINFO_RESPONSE_CODE, &st);
            c->ok = st == 200 || st == 206;
            if (st == 200 && c->have > 0) {  // the server ignored the Range: start over
              if (std::fflush(c->s->file) != 0 || ftruncate(fileno(c->s->file), 0) != 0) return 0;
              std::rewind(c->s->file);
              c->s->hash = Sha256();
              c->s->have = c->s->started_at = 0;
            }
          }
          if (!c->ok) return append_string(data, size, n, c->err);
          return write_sink(data, size, n, c->s);
        });
    CURLcode rc = curl_easy_perform(e.h);
    if (std::fflush(file.get()) != 0) fail("{}: cannot write {}", what, part);
    long status = 0;
    curl_easy_getinfo(e.h, CURLINFO_RESPONSE_CODE, &status);
    if (rc != CURLE_OK) curl_error(rc, errbuf, what, env);  // also a failed write to the partial file
    if (status != 200 && status != 206) http_error(status, eh, what, env);
  }
  file.reset();
  if (s.progress) s.draw(true);
  if (f.size >= 0 && s.have != f.size)
    fail("{}: got {} bytes, the Hub listed {} (the partial file {} is kept; run again to resume)", what, s.have,
         f.size, part);
  if (!f.sha256.empty()) {
    const std::string got = s.hash.hex_digest();
    if (got != f.sha256) {
      fs::remove(part, ec);
      fail("{}: checksum mismatch (SHA-256 {}, the Hub lists {}); the download was removed, run again", what, got,
           f.sha256);
    }
  }
  fs::rename(part, dest);
}

#endif  // DS_HAVE_CURL

}  // namespace ds::hub
