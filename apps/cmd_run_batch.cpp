// `deltaserve run-batch -i BATCH.jsonl -o RESULTS.jsonl MODEL [serve's flags]` (vLLM's `vllm run-batch`): the
// OpenAI batch file's requests run through the same endpoint handlers as `serve`'s, with no HTTP server
// (server/batch_file.h), 2 x --max-num-seqs at a time; the results are written in the input's order as they
// finish, progress goes to the log.
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "apps/commands.h"
#include "apps/serve_args.h"
#include "apps/serving_stack.h"
#include "core/error.h"
#include "core/log.h"
#include "core/parallel.h"
#include "server/batch_file.h"

namespace ds::cli {
namespace {

bool is_url(const std::string& s) { return s.rfind("http://", 0) == 0 || s.rfind("https://", 0) == 0; }

std::vector<std::string> read_lines(std::istream& in) {
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(std::move(line));
  return lines;
}

void run_batch_command(ServeArgs a, const RunBatchArgs& b) {
  prepare_serve(a);
  if (a.vllm.node_rank > 0) fail("run-batch runs on node 0 (--node-rank 0): the other nodes run `serve --headless`");
  for (const std::string* f : {&b.input, &b.output})
    if (is_url(*f))
      fail("run-batch reads and writes local files ('-': standard input / output): fetch {} first, or upload the "
           "output yourself",
           *f);
  if (b.input != "-" && b.input == b.output) fail("the input and output files are the same ({})", b.input);
  if (!b.output_tmp_dir.empty())
    spdlog::info("--output-tmp-dir ignored: the output goes to {} line by line", b.output);
  // both files first: a wrong path fails before the model loads
  std::ifstream in_file;
  if (b.input != "-") {
    in_file.open(b.input);
    if (!in_file) fail("cannot read the batch file {}", b.input);
  }
  std::ofstream out_file;
  if (b.output != "-") {
    out_file.open(b.output, std::ios::trunc);
    if (!out_file) fail("cannot write the output file {}", b.output);
  }
  const std::vector<std::string> lines = read_lines(b.input == "-" ? std::cin : in_file);
  if (a.threads > 0) set_num_threads(a.threads);

  ServingStack st = load_serving_stack(a);
  server::ServerMetrics metrics(st.options.metrics);
  const server::UnknownFieldPolicy unknown(st.options.strict_request_fields);
  const server::ServingContext ctx = server::make_serving_context(st.options, *st.client, st.tokenizer, metrics, unknown);
  server::BatchOptions bo;
  bo.concurrency = 2 * a.max_num_seqs;
  bo.progress_interval_s = a.stats_interval;
  bo.on_progress = [](const server::BatchProgress& p) {
    spdlog::info("run-batch: {} of {} requests done ({} failed), {} prompt + {} completion tokens, {:.1f} s "
                 "({:.1f} completion tokens/s)",
                 p.done, p.total, p.failed, p.prompt_tokens, p.completion_tokens, p.elapsed_s,
                 p.elapsed_s > 0 ? double(p.completion_tokens) / p.elapsed_s : 0.0);
  };
  spdlog::info("run-batch: {} requests from {} ({} at a time)", server::batch_request_count(lines),
               b.input == "-" ? "standard input" : b.input, bo.concurrency);
  std::ostream& out = b.output == "-" ? std::cout : out_file;
  const server::BatchProgress p = server::run_batch(ctx, lines, out, bo);
  out.flush();
  if (!out) fail("writing {} failed", b.output == "-" ? "standard output" : b.output);
  st.engine->drain();
  spdlog::info("run-batch: {} results written to {} ({} answered 200, {} failed)", p.done,
               b.output == "-" ? "standard output" : b.output, p.done - p.failed, p.failed);
}

}  // namespace

void register_run_batch_command(CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  auto b = std::make_shared<RunBatchArgs>();
  CLI::App* cmd = app.add_subcommand(
      "run-batch", "Run an OpenAI batch file (JSONL) through the model, as vLLM's run-batch: no HTTP server");
  add_run_batch_options(*cmd, *b);
  add_serve_options(*cmd, *a);
  cmd->callback([a, b] { run_batch_command(*a, *b); });
}

}  // namespace ds::cli
