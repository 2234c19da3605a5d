#include <cstdio>
#include <string>
#include <vector>

#include "apps/commands.h"
#include "apps/serve_args.h"
#include "apps/vllm_flags.h"
#include "core/error.h"
#include "core/log.h"

int main(int argc, char** argv) {
  CLI::App app{"deltaserve: an inference engine and OpenAI-compatible server for Kimi-Linear models"};
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error|off")->capture_default_str();
  app.set_version_flag("--version", "deltaserve 0.1.0");
  ds::cli::register_model_commands(app);
  ds::cli::register_tokenizer_commands(app);
  ds::cli::register_serve_command(app);
  ds::cli::register_run_batch_command(app);
  ds::cli::register_bench_commands(app);
  ds::cli::register_client_commands(app);
  app.parse_complete_callback([&] { ds::init_logging(log_level); });
  try {
    // vLLM's -tp/-pp/-dp (multi-letter short flags CLI11 does not have) become their long names.
    std::vector<std::string> args = ds::cli::expand_vllm_short_flags(std::vector<std::string>(argv, argv + argc));
    args = ds::cli::expand_serve_config(args);  // `serve --config FILE.yaml`: the file's flags as arguments
    std::vector<std::string> rev(args.rbegin(), args.rend() - 1);  // CLI11 takes them reversed, without argv[0]
    app.parse(rev);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const ds::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
