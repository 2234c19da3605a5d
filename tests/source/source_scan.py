"""Shared helpers of the source checks: C++/CUDA source with comments and literals blanked out."""
import re

_TOKEN = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)


def strip_code(text):
    """Comments and string/char literals replaced by spaces (newlines kept, so line numbers hold);
    preprocessor lines blanked too (their braces and keywords are not code)."""
    def blank(m):
        s = m.group(0)
        if s.startswith('"') or s.startswith("'"):
            return s[0] + ' ' * (len(s) - 2) + s[-1]
        return re.sub(r'[^\n]', ' ', s)
    out = _TOKEN.sub(blank, text)
    return '\n'.join('' if l.lstrip().startswith('#') else l for l in out.split('\n'))
