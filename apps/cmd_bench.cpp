#include "apps/commands.h"

namespace ds::cli {
void register_bench_commands(CLI::App& app) {}  // not yet implemented
}  // namespace ds::cli
