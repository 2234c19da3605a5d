// Integer ranges as grammar expressions: the decimal strings (no leading zeros, "-" for negatives) of
// the integers in [lo, hi], built digit position by digit position.
#include <string>

#include "core/error.h"
#include "grammar/frontends.h"

namespace ds {
namespace {

using Expr = GrammarBuilder::Expr;

Expr digit_range(GrammarBuilder& b, char lo, char hi) { return b.byte_range(uint8_t(lo), uint8_t(hi)); }

// Strings of lo.size() == hi.size() digits (leading zeros allowed) between lo and hi inclusive.
Expr same_length(GrammarBuilder& b, const std::string& lo, const std::string& hi) {
  if (lo.size() == 1) return digit_range(b, lo[0], hi[0]);
  if (lo.find_first_not_of('0') == std::string::npos && hi.find_first_not_of('9') == std::string::npos)
    return b.repeat(digit_range(b, '0', '9'), int(lo.size()), int(lo.size()));  // any digits (keeps this linear)
  const std::string lo_rest = lo.substr(1), hi_rest = hi.substr(1);
  if (lo[0] == hi[0]) return b.seq({b.literal(lo.substr(0, 1)), same_length(b, lo_rest, hi_rest)});
  const std::string nines(lo_rest.size(), '9'), zeros(lo_rest.size(), '0');
  std::vector<Expr> alts{b.seq({b.literal(lo.substr(0, 1)), same_length(b, lo_rest, nines)})};
  if (hi[0] - lo[0] > 1)
    alts.push_back(b.seq({digit_range(b, char(lo[0] + 1), char(hi[0] - 1)),
                          b.repeat(digit_range(b, '0', '9'), int(lo_rest.size()), int(lo_rest.size()))}));
  alts.push_back(b.seq({b.literal(hi.substr(0, 1)), same_length(b, zeros, hi_rest)}));
  return b.alt(std::move(alts));
}

// Non-negative integers in [lo, hi] without leading zeros.
Expr nonneg_range(GrammarBuilder& b, int64_t lo, int64_t hi) {
  std::vector<Expr> alts;
  const std::string slo = std::to_string(lo), shi = std::to_string(hi);
  for (size_t d = slo.size(); d <= shi.size(); ++d) {
    const std::string a = d == slo.size() ? slo : "1" + std::string(d - 1, '0');
    const std::string z = d == shi.size() ? shi : std::string(d, '9');
    if (d == 1 && a == "0") {
      alts.push_back(z == "0" ? b.literal("0") : digit_range(b, '0', z[0]));
      continue;
    }
    alts.push_back(same_length(b, a, z));
  }
  return b.alt(std::move(alts));
}

}  // namespace

GrammarBuilder::Expr integer_range(GrammarBuilder& b, int64_t lo, int64_t hi) {
  DS_CHECK(lo <= hi, "integer range [{}, {}] is empty", lo, hi);
  std::vector<Expr> alts;
  if (lo < 0) alts.push_back(b.seq({b.literal("-"), nonneg_range(b, hi < 0 ? -hi : 1, -lo)}));
  if (hi >= 0) alts.push_back(nonneg_range(b, lo > 0 ? lo : 0, hi));
  return b.alt(std::move(alts));
}

}  // namespace ds
