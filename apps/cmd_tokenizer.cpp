#include "apps/commands.h"

namespace ds::cli {
void register_tokenizer_commands(CLI::App& app) {}  // not yet implemented
}  // namespace ds::cli
