#!/usr/bin/env python3
"""Enforces the module map: a file under src/<m>/ may include "x/..." only when x is m itself or one of
m's dependencies, transitively, as declared by ds_module(m DEPS ...) in CMakeLists.txt.

Linking alone does not enforce the arrows (a header-only use links, and static libraries link whatever
the final target pulls in), so this check does. Usage: check_module_deps.py SOURCE_DIR (self-test first)."""
import os
import re
import sys


def parse_modules(cmake_text):
    """{module: set of direct ds_ dependencies} from ds_module(...) calls; set(VAR ...) values expand
    (every value a variable takes anywhere counts: conditional dependencies are allowed)."""
    text = re.sub(r'#[^\n]*', '', cmake_text)
    variables = {}
    for m in re.finditer(r'\bset\(\s*(\w+)((?:\s+[^)\s]+)*)\s*\)', text):
        variables.setdefault(m.group(1), set()).update(m.group(2).split())
    mods = {}
    for m in re.finditer(r'\bds_module\(\s*(\w+)\s+DEPS([^)]*)\)', text):
        deps = set()
        for tok in m.group(2).split():
            v = re.fullmatch(r'\$\{(\w+)\}', tok)
            for t in (variables.get(v.group(1), set()) if v else {tok}):
                if t.startswith('ds_'):
                    deps.add(t[3:])
        mods.setdefault(m.group(1), set()).update(deps)
    return mods


def closure(mods):
    out = {}
    for m in mods:
        seen, todo = set(), list(mods[m])
        while todo:
            d = todo.pop()
            if d not in seen:
                seen.add(d)
                todo += mods.get(d, ())
        out[m] = seen
    return out


# Plain-data headers (no code to link) that modules below their owner may include without depending on it;
# docs/ARCHITECTURE.md names them.
PLAIN_DATA_HEADERS = {'model/forward_batch.h', 'model/step.h'}

INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"(([A-Za-z_]\w*)/[^"]*)"', re.M)


def violations(mods, files):
    """files: {(module, path): text}. Returns (path, line, included module) for each undeclared include."""
    allowed = closure(mods)
    bad = []
    for (mod, path), text in sorted(files.items()):
        for m in INCLUDE.finditer(text):
            header, target = m.group(1), m.group(2)
            if target == mod or target not in mods or header in PLAIN_DATA_HEADERS:
                continue  # own module, not a module (a folder of the including file's own), or plain data
            if target not in allowed.get(mod, set()):
                bad.append((path, text.count('\n', 0, m.start()) + 1, target))
    return bad


def self_test():
    cmake = '''
ds_module(core DEPS Threads::Threads)
ds_module(kernels DEPS ds_core)   # ds_model would be a cycle
set(GPU_DEPS)
if(X)
  set(GPU_DEPS ds_kernels)
endif()
ds_module(model DEPS ds_core ${GPU_DEPS})
'''
    mods = parse_modules(cmake)
    assert mods == {'core': set(), 'kernels': {'core'}, 'model': {'core', 'kernels'}}, mods
    files = {
        ('model', 'src/model/a.cpp'): '#include "kernels/x.h"\n#include "core/y.h"\n#include "model/z.h"\n',
        ('kernels', 'src/kernels/d.h'): '#include "model/forward_batch.h"\n',
        ('kernels', 'src/kernels/b.cpp'): '#include "core/y.h"\n\n#include "model/z.h"\n',
        ('core', 'src/core/c.cpp'): '#include "kernels/x.h"\n#include "ref_util.h"\n',
    }
    got = violations(mods, files)
    assert got == [('src/core/c.cpp', 1, 'kernels'), ('src/kernels/b.cpp', 3, 'model')], got


def main():
    self_test()
    root = sys.argv[1] if len(sys.argv) > 1 else '.'
    with open(os.path.join(root, 'CMakeLists.txt'), encoding='utf-8') as f:
        mods = parse_modules(f.read())
    files = {}
    for mod in mods:
        for dirpath, _, names in os.walk(os.path.join(root, 'src', mod)):
            for name in names:
                if name.endswith(('.h', '.hpp', '.cpp', '.cu', '.cuh')):
                    p = os.path.join(dirpath, name)
                    with open(p, encoding='utf-8') as f:
                        files[(mod, os.path.relpath(p, root))] = f.read()
    bad = violations(mods, files)
    for path, line, target in bad:
        print(f'{path}:{line}: includes "{target}/..." but ds_{path.split(os.sep)[1]} does not depend on ds_{target} '
              f'(CMakeLists.txt ds_module DEPS)')
    if bad:
        sys.exit(1)
    print(f'check_module_deps: {len(files)} files of {len(mods)} modules include only their declared dependencies')


if __name__ == '__main__':
    main()
