// Builds the dashboard into collector/api/static/ (committed, so running the
// collector never needs Node): one minified bundle of src/main.js with uPlot,
// its CSS, and index.html's inline script. Run with `make web` (npm ci + this script).
import * as esbuild from "esbuild";
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "collector", "api", "static");
mkdirSync(out, { recursive: true });

await esbuild.build({
  entryPoints: [join(here, "src", "main.js")],
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020"],
  outfile: join(out, "app.js"), // app.css is written beside it (the imported CSS)
  legalComments: "eof",
  logLevel: "info",
});
// The page's markup has one source, static/index.html itself (edit it there); its
// inline script (a session page's first requests) is src/early.js, minified into
// the page's <script> element here.
const page = readFileSync(join(out, "index.html"), "utf8");
const inline = /<script>([\s\S]*?)<\/script>/;
const early = readFileSync(join(here, "src", "early.js"), "utf8");
const { code } = await esbuild.transform(early, { minify: true, target: "es2017" });
writeFileSync(join(out, "index.html"), page.replace(inline, () => `<script>${code.trim()}</script>`));

// What the bundle was built from, so a test can tell a stale committed build:
// sha256 over each source's path and bytes (src/ and the lock file), sorted.
const sources = [...readdirSync(join(here, "src")).map((f) => `src/${f}`), "package-lock.json"].sort();
const hash = createHash("sha256");
for (const f of sources) hash.update(f + "\0").update(readFileSync(join(here, f))).update("\0");
writeFileSync(join(out, "build-info.json"), JSON.stringify({ sources: hash.digest("hex") }) + "\n");
