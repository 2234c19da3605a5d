#include "tokenizer/encode_bench.h"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <random>
#include <unordered_map>

#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer.h"

namespace ds {
namespace {

const char* const kWords[] = {
    "the", "model", "attention", "linear", "state", "token", "server", "request", "memory", "kernel",
    "delta", "is", "of", "and", "to", "in", "a", "with", "for", "that", "rule", "gate", "expert", "cache",
    "prefill", "decode", "batch", "stream", "latency", "throughput", "Moonshot", "Kimi", "GPU", "don't",
    "it's", "we'll", "context", "sequence", "parameter", "optimizer", "gradient", "hybrid", "layer"};
const char* const kCode[] = {
    "for (int i = 0; i < n; ++i) {\n    out[i] = a[i] * b[i] + c;\n}\n",
    "def forward(self, x):\n    h = self.norm(x)\n    return x + self.mlp(h)\n",
    "if (!ok) throw std::runtime_error(\"bad input: \" + name);\n",
    "    std::vector<int32_t> ids = tok.encode(text, /*allow_special=*/true);\n",
    "const auto& [key, value] = *it;  // structured binding\n",
    "\t\treturn {\"id\": 42, \"name\": \"get_weather\", \"args\": [1, 2, 3]};\n",
    "#include <cuda_runtime.h>\n__global__ void k(float* x) { x[threadIdx.x] *= 2.f; }\n"};
const char* const kChinese[] = {"人工智能", "模型", "注意力机制", "线性", "状态", "我们", "今天", "天气",
                                "很好", "推理", "服务器", "长上下文", "的", "是", "在", "和"};
const char* const kPunctCn[] = {"，", "。", "！", "？", "：", "、"};

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

}  // namespace

std::string make_bench_text(size_t bytes, uint32_t seed) {
  std::mt19937 rng(seed);
  auto pick = [&](size_t n) { return size_t(rng() % n); };
  std::string out;
  out.reserve(bytes + 256);
  while (out.size() < bytes) {
    switch (pick(10)) {
      case 0: case 1: case 2: case 3: {  // English prose
        size_t words = 8 + pick(30);
        for (size_t w = 0; w < words; ++w) {
          std::string word = kWords[pick(std::size(kWords))];
          if (w == 0) word[0] = char(std::toupper(uint8_t(word[0])));
          out += word;
          out += w + 1 == words ? ". " : (pick(8) == 0 ? ", " : " ");
        }
        if (pick(3) == 0) out += "\n\n";
        break;
      }
      case 4: case 5: out += kCode[pick(std::size(kCode))]; break;
      case 6: case 7: {  // Chinese
        size_t n = 4 + pick(20);
        for (size_t k = 0; k < n; ++k) {
          out += kChinese[pick(std::size(kChinese))];
          if (pick(5) == 0) out += kPunctCn[pick(std::size(kPunctCn))];
        }
        out += "\n";
        break;
      }
      case 8: {  // numbers
        out += std::to_string(rng() % 100000) + "." + std::to_string(rng() % 1000) + " " +
               std::to_string(2000 + pick(30)) + "-" + std::to_string(1 + pick(12)) + "-" +
               std::to_string(1 + pick(28)) + " $" + std::to_string(rng()) + "\n";
        break;
      }
      default: {  // white space runs and JSON-ish
        out += std::string(1 + pick(12), ' ') + "{\"k\": [" + std::to_string(pick(100)) + ", null, true]}" +
               std::string(pick(3), '\t') + "\n" + std::string(pick(3), '\n');
      }
    }
  }
  return out;
}

std::vector<std::string> synthetic_vocab(const std::string& corpus, size_t size) {
  std::vector<std::string> vocab;
  for (int b = 0; b < 256; ++b) vocab.emplace_back(1, char(b));
  std::unordered_map<std::string, uint32_t> counts;
  std::vector<std::pair<size_t, size_t>> pieces;
  kimi_split(corpus, pieces);
  std::unordered_map<std::string, uint32_t> piece_counts;
  for (auto [b, e] : pieces) ++piece_counts[corpus.substr(b, e - b)];
  for (const auto& [p, n] : piece_counts)
    for (size_t i = 0; i < p.size(); ++i)
      for (size_t len = 2; len <= 16 && i + len <= p.size(); ++len) counts[p.substr(i, len)] += n;
  std::vector<std::pair<std::string, uint32_t>> ranked(counts.begin(), counts.end());
  std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  });
  for (const auto& [s, n] : ranked) {
    if (vocab.size() >= size) break;
    vocab.push_back(s);
  }
  // Pad with unique filler tokens (never matched by the corpus) to reach the requested size.
  for (size_t k = 0; vocab.size() < size; ++k) vocab.push_back("\x01\x02" + std::to_string(k));
  return vocab;
}

EncodeBench run_encode_bench(const Tokenizer& tok, const std::string& text, int repeats) {
  using clock = std::chrono::steady_clock;
  EncodeBench r;
  r.megabytes = double(text.size()) / 1e6;
  double best_serial = 1e30, best_parallel = 1e30, best_cpu = 1e30;
  std::vector<int32_t> serial, parallel;
  for (int k = 0; k < std::max(1, repeats); ++k) {
    const double c0 = thread_cpu_seconds();
    auto t0 = clock::now();
    serial = tok.encode_serial(text, true);
    auto t1 = clock::now();
    best_cpu = std::min(best_cpu, thread_cpu_seconds() - c0);
    parallel = tok.encode(text, true);
    auto t2 = clock::now();
    best_serial = std::min(best_serial, std::chrono::duration<double>(t1 - t0).count());
    best_parallel = std::min(best_parallel, std::chrono::duration<double>(t2 - t1).count());
  }
  r.tokens = serial.size();
  r.serial_mb_per_s = r.megabytes / best_serial;
  r.serial_mb_per_cpu_s = r.megabytes / best_cpu;
  r.parallel_mb_per_s = r.megabytes / best_parallel;
  r.parallel_matches = serial == parallel;
  return r;
}

}  // namespace ds
