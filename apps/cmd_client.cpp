// `deltaserve chat` and `deltaserve complete` (vLLM's `vllm chat` / `vllm complete`): talk to a running
// OpenAI-compatible server from the terminal. `--quick TEXT` sends one message (prompt) and prints the reply;
// otherwise each line read from standard input is a message (chat keeps the conversation) or a prompt, and
// the reply streams to standard output as it arrives, until end of input. The work is in src/bench/chat_client.*.
#include <iostream>
#include <memory>
#include <string>

#include "apps/commands.h"
#include "bench/chat_client.h"
#include "core/error.h"

namespace ds::cli {
namespace {

struct ClientArgs {
  bench::ClientOptions o;
  std::string quick;
};

void add_client_options(CLI::App& cmd, ClientArgs& a, bool chat) {
  cmd.add_option("--url", a.o.url, "The server's OpenAI API base URL")->capture_default_str();
  cmd.add_option("--model-name", a.o.model, "The model to ask (default: the server's first, from /v1/models)");
  cmd.add_option("--api-key", a.o.api_key, "Sent as 'Authorization: Bearer KEY'")->envname("OPENAI_API_KEY");
  if (chat)
    cmd.add_option("--system-prompt", a.o.system_prompt, "The conversation's system message (default: none)");
  cmd.add_option("--max-tokens", a.o.max_tokens, "Most tokens a reply may have (default: the server's)");
  cmd.add_option("--temperature", a.o.temperature, "Sampling temperature (default: the server's; 0: greedy)");
  cmd.add_option("--seed", a.o.seed, "Sampling seed (default: none)");
  cmd.add_option("-q,--quick", a.quick,
                 chat ? "Send this one message, print the reply and exit" : "Complete this one prompt and exit");
}

void run_client(const ClientArgs& a, bool chat) {
  bench::ApiClient client(a.o);
  const auto print = [](std::string_view text) { std::cout << text << std::flush; };
  const auto ask = [&](const std::string& text) {
    if (chat)
      client.chat(text, print);
    else
      client.complete(text, print);
    std::cout << '\n' << std::flush;
  };
  if (!a.quick.empty()) return ask(a.quick);  // (an error ends the command: exit status 1)
  std::cout << (chat ? "Please enter a message for the chat model (" : "Please enter a prompt to complete (")
            << client.model() << "; end of input quits):" << std::endl;
  for (std::string line;;) {
    std::cout << "> " << std::flush;
    if (!std::getline(std::cin, line)) break;
    try {
      ask(line);
    } catch (const Error& e) {  // the session goes on (the conversation as it was before the message)
      std::cout << '\n';
      std::cerr << "error: " << e.what() << std::endl;
    }
  }
  std::cout << '\n';
}

}  // namespace

void register_client_commands(CLI::App& app) {
  for (const bool chat : {true, false}) {
    auto a = std::make_shared<ClientArgs>();
    CLI::App* cmd = app.add_subcommand(chat ? "chat" : "complete",
                                       chat ? "Chat with a model on a running server (as vllm chat)"
                                            : "Complete prompts with a model on a running server (as vllm complete)");
    add_client_options(*cmd, *a, chat);
    cmd->callback([a, chat] { run_client(*a, chat); });
  }
}

}  // namespace ds::cli
