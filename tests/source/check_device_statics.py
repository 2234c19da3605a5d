#!/usr/bin/env python3
"""Fails when a function-level `static` variable (or any thread_local) appears in src/cuda.

Process-wide statics must not stand for "the device" (issue 12): kernel attributes are set per
DeviceContext by configure_kernels(), the SM count and switches come from the context. A function-level
static is state shared by every context, so none may exist in src/cuda (`static constexpr` constants
hold no state and are allowed). Usage: check_device_statics.py SRC_DIR (runs its self-test first)."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from source_scan import strip_code  # noqa: E402

QUALIFIERS = re.compile(r'(\s*(const|noexcept|override|final|mutable|volatile|&&?|->\s*[\w:<>,\s*&]+))*\s*$')
TYPE_KEYWORD = re.compile(r'^(template\s*<.*>\s*)?(class|struct|union|enum|namespace)\b', re.S)


def scope_kind(head):
    """What the block opened after `head` (the text since the previous ; { or }) is."""
    h = ' '.join(head.split())
    h = re.sub(r'^(public|private|protected)\s*:\s*', '', h)
    if TYPE_KEYWORD.match(h) or h.startswith('extern'):
        return 'type'
    h = QUALIFIERS.sub('', h)
    if h.endswith(')') or h.endswith(']') or h in ('else', 'do', 'try') or h.endswith('>'):
        return 'function'
    return 'other'


def violations(text):
    """(line, text) of every function-level static variable and thread_local in C++ source text."""
    code = strip_code(text)
    found = []
    stack = []  # scope kinds of the open braces
    head_start = 0
    line_no = 1
    i = 0
    n = len(code)
    at_stmt_start = True
    while i < n:
        c = code[i]
        if c == '\n':
            line_no += 1
        if c in '{};':
            if c == '{':
                stack.append(scope_kind(code[head_start:i]))
            elif c == '}' and stack:
                stack.pop()
            head_start = i + 1
            at_stmt_start = True
            i += 1
            continue
        if c.isspace():
            i += 1
            continue
        if at_stmt_start:
            m = re.match(r'(static|thread_local)\b(\s+\w+)?', code[i:])
            if m:
                word, nxt = m.group(1), (m.group(2) or '').strip()
                if word == 'thread_local' or ('function' in stack and nxt != 'constexpr'):
                    found.append((line_no, text.split('\n')[line_no - 1].strip()))
        at_stmt_start = False
        i += 1
    return found


def self_test():
    bad = '''
namespace ds::gpu {
template <typename IO> void launch(const P& p, cudaStream_t stream) {
  static const bool attr_set = [&] { return true; }();  // "once per process"
  if (p.x) {
    static bool configured = false;
  }
  auto f = [&] { static int n = 0; return n; };
}
inline int sm_count() { static const int n = [] { return 132; }(); return n; }
thread_local int t = 0;
}'''
    good = '''
// static bool in_a_comment = false;
namespace ds::gpu {
struct Arena { static Arena measuring() { Arena a; return a; } static constexpr int kMax = 4; };
class Stream { public: static Stream make(); };
template <int N> struct Layout { static constexpr size_t kSmem = N; };
static int helper(int x) { return x; }
static __device__ __forceinline__ float f(float x) { return x; }
void g() { static constexpr int kTable[] = {1, 2}; const char* s = "static int x;"; (void)s; }
__global__ void k() { __shared__ float buf[32]; static_assert(sizeof(float) == 4); }
}'''
    got = violations(bad)
    assert len(got) == 5, f'self-test: expected 5 violations in the bad sample, got {got}'
    got = violations(good)
    assert not got, f'self-test: false positives in the good sample: {got}'


def main():
    self_test()
    root = sys.argv[1] if len(sys.argv) > 1 else 'src/cuda'
    bad = []
    for dirpath, _, files in os.walk(root):
        for f in sorted(files):
            if f.endswith(('.cu', '.cuh', '.cpp', '.h')):
                path = os.path.join(dirpath, f)
                with open(path, encoding='utf-8') as fh:
                    bad += [(path, ln, t) for ln, t in violations(fh.read())]
    for path, ln, t in bad:
        print(f'{path}:{ln}: function-level static (device state belongs to DeviceContext): {t}')
    if bad:
        sys.exit(1)
    print(f'check_device_statics: no function-level statics under {root}')


if __name__ == '__main__':
    main()
