#include "apps/commands.h"

namespace ds::cli {
void register_serve_command(CLI::App& app) {}  // not yet implemented
}  // namespace ds::cli
