// What the server needs from the engine, as an interface: the real ds::Engine behind an adapter,
// or a fake in the server's unit tests. Requests and outputs are the engine's own plain structs.
#pragma once
#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "engine/engine.h"

namespace ds::server {

// One request's updates. Nothing here blocks: the reader sets a Notifier (one may serve many
// streams), waits on it, and takes what has arrived with try_next().
class OutputStream {
 public:
  virtual ~OutputStream() = default;
  // The next queued update of the request, or nullopt when none has arrived yet.
  virtual std::optional<GenerationOutput> try_next() = 0;
  // Every later update also notifies `n`; notifies at once when updates are already queued.
  virtual void set_notifier(std::shared_ptr<Notifier> n) = 0;
};

class EngineClient {
 public:
  virtual ~EngineClient() = default;
  virtual SubmitStatus submit(GenerationRequest req, std::shared_ptr<OutputStream>* stream, std::string* why) = 0;
  virtual void abort(const std::string& request_id) = 0;
  virtual EngineStats stats() const = 0;
  virtual int64_t max_model_len() const = 0;
  // What limits max_model_len, in words, for "too long" messages (engine/capacity.h context_limit_note).
  virtual std::string context_limit_note() const { return {}; }
  virtual int model_vocab_size() const = 0;
  // Why the model can run no more steps (Engine::backend_failure()): /health then answers 503 with it.
  virtual std::string failure() const { return {}; }
  // Empties the prefix cache when no request is in progress (Engine::reset_prefix_cache; POST
  // /reset_prefix_cache and /flush_cache), waiting for the engine's answer up to `timeout`.
  virtual PrefixCacheResetResult reset_prefix_cache(std::chrono::milliseconds timeout) {
    (void)timeout;
    PrefixCacheResetResult r;
    r.message = "this engine cannot reset its prefix cache";
    return r;
  }
};

// The adapter over a running engine (which must outlive it).
std::unique_ptr<EngineClient> make_engine_client(Engine& engine);

}  // namespace ds::server
