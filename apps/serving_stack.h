// What `deltaserve serve` and `deltaserve run-batch` start the same way: the serve flags applied (log level and
// format, checks across flags, --enforce-eager) and the model, tokenizer and engine loaded, with the server's
// options for the endpoint handlers.
#pragma once
#include <memory>

#include "apps/serve_args.h"
#include "engine/engine.h"
#include "server/engine_client.h"
#include "server/openai_server.h"

namespace ds {
class Tokenizer;
}

namespace ds::cli {

// Log format and level, the checks across flags, the notes on ignored vLLM flags, --enforce-eager.
void prepare_serve(const ServeArgs& a);

struct ServingStack {
  std::shared_ptr<const Tokenizer> tokenizer;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<server::EngineClient> client;  // over *engine (released first)
  server::ServerOptions options;                 // server_options(a), the sampling defaults, the cache facts
};

// Resolves the model (a.model_dir), loads the tokenizer and the weights and starts the engine.
ServingStack load_serving_stack(ServeArgs& a);

}  // namespace ds::cli
