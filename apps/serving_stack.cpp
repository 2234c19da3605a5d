#include "apps/serving_stack.h"

#include <cstdlib>
#include <filesystem>

#include "config/model_config.h"
#include "core/error.h"
#include "core/log.h"
#include "core/parallel.h"
#include "engine/backend_factory.h"
#include "hub/hub_download.h"
#include "tokenizer/tokenizer.h"

namespace ds::cli {
namespace {

namespace fs = std::filesystem;

std::shared_ptr<const Tokenizer> load_tokenizer(const std::string& dir, const std::string& chat_template) {
  if (chat_template.empty()) return Tokenizer::from_dir(dir);
  const fs::path config = fs::path(dir) / "tokenizer_config.json";
  spdlog::info("chat template from {}", chat_template);
  return Tokenizer::from_files((fs::path(dir) / "tiktoken.model").string(),
                               fs::exists(config) ? config.string() : std::string(), chat_template);
}

}  // namespace

void prepare_serve(const ServeArgs& a) {
  set_log_format(a.log_format);
  validate_serve_args(a);
  std::string level = a.log_level;
  if (level.empty() && !a.vllm.uvicorn_log_level.empty())
    level = a.vllm.uvicorn_log_level == "warning" ? "warn" : a.vllm.uvicorn_log_level;  // spdlog's names
  if (!level.empty()) {
    auto lvl = spdlog::level::from_str(level);
    if (lvl == spdlog::level::off && level != "off") fail("unknown log level '{}'", level);
    spdlog::set_level(lvl);
  }
  for (const std::string& line : ignored_flag_messages(a.vllm)) spdlog::info("{}", line);
  if (a.vllm.enforce_eager) {  // read once, when the CUDA backend starts (config/runtime_env.h)
    ::setenv("DELTASERVE_CUDA_GRAPHS", "0", 1);
    spdlog::info("--enforce-eager: CUDA graphs off, decode steps run eagerly");
  }
}

ServingStack load_serving_stack(ServeArgs& a) {
  ServingStack st;
  a.model_dir = hub::resolve_model(a.model, a.vllm.revision, hub_env(a));
  std::string tok_dir = check_model_dirs(a.model_dir, a.tokenizer);
  ModelConfig cfg = ModelConfig::from_file((fs::path(a.model_dir) / "config.json").string());
  spdlog::info("model {}: {}", a.model, cfg.summary());
  spdlog::info("loading tokenizer from {}", tok_dir);
  st.tokenizer = load_tokenizer(tok_dir, a.vllm.chat_template);
  st.tokenizer->check_vocab(cfg.vocab_size);

  EngineOptions eo = engine_options(a);
  spdlog::info("loading weights on {} (load format {}, {} threads)", a.device, a.load_format, num_threads());
  auto t0 = std::chrono::steady_clock::now();
  auto backend = create_backend(eo.backend);
  spdlog::info("loaded in {:.1f} s on {}", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
               backend->device_name());
  st.engine = std::make_unique<Engine>(std::move(backend), st.tokenizer, eo);
  const Engine& engine = *st.engine;
  const BackendLimits geo = engine.backend_limits();
  spdlog::info("cache: {} KDA state slots, {} MLA pages x {} tokens = {} latent tokens; max_model_len {}",
               geo.num_state_slots, geo.num_blocks, geo.block_size, int64_t(geo.num_blocks) * geo.block_size,
               engine.max_model_len());

  st.client = server::make_engine_client(*st.engine);
  server::ServerOptions& so = st.options;
  so = server_options(a);
  std::string gen_file;
  so.sampling_defaults = server::load_sampling_defaults(a.vllm.generation_config, a.model_dir,
                                                         a.vllm.override_generation_config, &gen_file);
  so.sampling_defaults.tokens_as_ids = a.vllm.tokens_as_ids;
  so.sampling_defaults.max_logprobs = a.vllm.max_logprobs;
  if (!so.sampling_defaults.empty()) {
    std::string from = gen_file;
    if (!a.vllm.override_generation_config.empty())
      from += (from.empty() ? "" : " and ") + std::string("--override-generation-config");
    spdlog::info("sampling defaults for fields a request leaves out: {} (from {}); a request's own values win",
                 so.sampling_defaults.describe(), from);
  }
  so.metrics.cache_config = {{"block_size", std::to_string(geo.block_size)},
                             {"cache_dtype", "auto"},
                             {"gpu_memory_utilization", fmt::format("{}", a.gpu_memory_utilization)},
                             {"num_gpu_blocks", std::to_string(geo.num_blocks)},
                             {"num_state_slots", std::to_string(geo.num_state_slots)},
                             {"max_model_len", std::to_string(engine.max_model_len())}};
  return st;
}

}  // namespace ds::cli
