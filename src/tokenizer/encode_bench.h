// Encode-throughput benchmark helpers (used by `deltaserve tokenize --bench`): a reproducible
// mixed-text corpus and a synthetic vocabulary as large as Kimi's real one (163,584 ranks), so
// the BPE hash tables are measured at full size even with the 1,790-rank test vocabulary.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ds {

class Tokenizer;

// About `bytes` of text mixing English prose, C++/Python code, Chinese, digits/numbers, JSON and
// runs of white space, from a fixed pseudo-random sequence (same text for the same seed).
std::string make_bench_text(size_t bytes, uint32_t seed = 1);

// A byte-level vocabulary of `size` ranks: the 256 bytes, then the most frequent 2..16-byte
// substrings of the corpus's pre-tokenizer pieces (ties broken by bytes), in frequency order.
std::vector<std::string> synthetic_vocab(const std::string& corpus, size_t size);

struct EncodeBench {
  double megabytes = 0;
  size_t tokens = 0;
  double serial_mb_per_s = 0;    // Tokenizer::encode_serial, one core, wall clock
  double serial_mb_per_cpu_s = 0;  // the same per second of this thread's CPU time (less
                                   // sensitive to other processes competing for the core)
  double parallel_mb_per_s = 0;  // Tokenizer::encode (parallel for long texts)
  bool parallel_matches = false;
};

// Best of `repeats` timings of each encode path over `text`.
EncodeBench run_encode_bench(const Tokenizer& tok, const std::string& text, int repeats);

}  // namespace ds
