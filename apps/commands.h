// Each subcommand family registers itself on the CLI; main() only dispatches and reports errors.
#pragma once
#include <CLI/CLI.hpp>

namespace ds::cli {
void register_model_commands(CLI::App& app);      // score, generate          (apps/cmd_model.cpp)
void register_tokenizer_commands(CLI::App& app);  // tokenize, chat-template  (apps/cmd_tokenizer.cpp)
void register_serve_command(CLI::App& app);       // serve                    (apps/cmd_serve.cpp)
void register_run_batch_command(CLI::App& app);   // run-batch                (apps/cmd_run_batch.cpp)
void register_bench_commands(CLI::App& app);      // bench, eval              (apps/cmd_bench.cpp)
void register_client_commands(CLI::App& app);     // chat, complete           (apps/cmd_client.cpp)
}  // namespace ds::cli
