#!/usr/bin/env node
// The CLI, bundled into one CommonJS file by `npm run build` (scripts/bundle.mjs):
// one file to load instead of about fifty ES modules, which shortens a
// command's start on a slow machine. CommonJS (bin/package.json) because
// Node starts a CommonJS entry sooner than an ES module one. The library stays in dist/src/.
require('../dist/ublk-ts.cjs');
