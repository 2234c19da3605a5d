// Exit 0 when every dependency pinned in package.json is installed at its pinned version
// (install-deps.sh and run.sh run `npm ci` otherwise).
const fs = require('node:fs');
const path = require('node:path');
const pkg = require('./package.json');
for (const [name, version] of Object.entries(pkg.dependencies)) {
  try {
    const installed = JSON.parse(fs.readFileSync(path.join(__dirname, 'node_modules', name, 'package.json'), 'utf8'));
    if (installed.version !== version) process.exit(1);
  } catch {
    process.exit(1);
  }
}
