// Kimi's pre-tokenizer (spec §7.3, QK-T pat_str) as a hand-written splitter over the generated
// Unicode tables: no regex engine. It reproduces leftmost-first matching of the eight alternatives
// in order, including the backtracking of `U*L+`, `\s*[\r\n]+` and `\s+(?!\S)`:
//   1 [\p{Han}]+                      5  ?[^\s\p{L}\p{N}]+[\r\n]*
//   2 P?U*L+C?   3 P?U+L*C?           6 \s*[\r\n]+   7 \s+(?!\S)   8 \s+
//   4 \p{N}{1,3}
// with P = [^\r\n\p{L}\p{N}], U = [Lu Lt Lm Lo M] minus Han, L = [Ll Lm Lo M] minus Han and
// C = (?i:'s|'t|'re|'ve|'m|'ll|'d). Every position matches some alternative, so the pieces tile
// the text. Ill-formed UTF-8 bytes are treated one by one as symbols (class of U+FFFD).
// Also QK-T's chunking (≤400,000 code points; runs of >25,000 space or non-space code points are
// cut), which changes results for very long inputs and so is part of encoding.
#pragma once
#include <cstddef>
#include <string_view>
#include <vector>

namespace ds {

// End (byte offset) of the pre-tokenizer piece that starts at byte `pos` < text.size().
size_t kimi_piece_end(std::string_view text, size_t pos);

// All pieces of `text` as [begin, end) byte offsets, appended to `out`.
void kimi_split(std::string_view text, std::vector<std::pair<size_t, size_t>>& out);

// QK-T's encode() pre-slicing. Returns the start offsets of the slices (text is cut before each
// one after the first); {} for empty text, {0} when no cut is needed.
std::vector<size_t> qkt_slice_starts(std::string_view text);

// Byte offsets in (0, text.size()) where cutting the text cannot change the pre-tokenizer pieces
// (a '\n' followed by a non-space character), roughly `spacing` bytes apart. Used to encode long
// texts in parallel with identical results.
std::vector<size_t> safe_cut_points(std::string_view text, size_t spacing);

}  // namespace ds
