#!/usr/bin/env node
// Static Flux check with InfluxData's own analyser (the flux-lsp wasm build).
//
// Usage:
//   node check.mjs FILE.flux [FILE.flux ...]      check files
//   node check.mjs --json < scripts.json          check {"name": "flux source", ...} from stdin
//
// For every script the verdict is `new Flux(src).is_valid()` — the semantic check (parse,
// type inference against the bundled stdlib signatures). Because is_valid() only answers
// true/false, the LSP server in the same wasm is asked for diagnostics of invalid scripts
// so a failure says *why*. Prints one line per script ("ok NAME" / "INVALID NAME" plus
// diagnostics) and exits 1 if any script is invalid, 2 on usage or loading errors.
//
// Why the hand-made loader: the package's ES-module glue does
// `import * as wasm from './flux-lsp-browser_bg.wasm'` (bundler style), and the wasm in turn
// imports its JS shims from that glue — a cycle Node 20 cannot load without experimental
// flags. So the glue is loaded as a module with its wasm import replaced by a setter, and the
// wasm is instantiated here with the glue's exports as its imports.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(import.meta.url);

async function loadFlux() {
  const pkgJson = require.resolve("@influxdata/flux-lsp-browser/package.json");
  const dir = path.dirname(pkgJson);
  const glueName = "flux-lsp-browser_bg.js";
  let glue = readFileSync(path.join(dir, glueName), "utf8");
  const wasmImport = "import * as wasm from './flux-lsp-browser_bg.wasm';";
  const memoryInit = /^cachedInt32Memory0 = new Int32Array\(wasm\.memory\.buffer\);\s*cachedUint8Memory0 = new Uint8Array\(wasm\.memory\.buffer\);\s*$/m;
  if (!glue.includes(wasmImport) || !memoryInit.test(glue)) {
    throw new Error(`${glueName} is not laid out as expected (package version changed?)`);
  }
  glue = glue.replace(wasmImport, "let wasm;").replace(
    memoryInit,
    "export function __tvfluxSetWasm(exports) {\n" +
      "  wasm = exports;\n" +
      "  cachedInt32Memory0 = new Int32Array(wasm.memory.buffer);\n" +
      "  cachedUint8Memory0 = new Uint8Array(wasm.memory.buffer);\n" +
      "}\n",
  );
  const bg = await import("data:text/javascript;base64," + Buffer.from(glue).toString("base64"));
  const bytes = readFileSync(path.join(dir, "flux-lsp-browser_bg.wasm"));
  const { instance } = await WebAssembly.instantiate(bytes, { ["./" + glueName]: bg });
  bg.__tvfluxSetWasm(instance.exports);
  return bg;
}

// Ask the bundled LSP server for diagnostics of one document.
// One server for the whole run (a second one would re-initialise the wasm's logger).
let server = null;

async function startServer(bg) {
  const lsp = new bg.Lsp();
  const received = [];
  lsp.onMessage((msg) => received.push(msg));
  lsp.run().catch(() => {});
  const rpc = (id, method, params) =>
    lsp.send(JSON.stringify(id === null ? { jsonrpc: "2.0", method, params } : { jsonrpc: "2.0", id, method, params }));
  await rpc(1, "initialize", { processId: null, rootUri: null, capabilities: {} });
  await rpc(null, "initialized", {});
  return { received, rpc, docs: 0 };
}

async function diagnostics(bg, name, source) {
  server ??= await startServer(bg);
  const { received, rpc } = server;
  const uri = `file:///doc${++server.docs}/` + encodeURIComponent(name) + ".flux";
  await rpc(null, "textDocument/didOpen", {
    textDocument: { uri, languageId: "flux", version: 1, text: source },
  });
  for (let i = 0; i < 50; i++) {
    const found = findDiagnostics(received, uri);
    if (found !== null) return found;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return findDiagnostics(received, uri) ?? [];
}

function findDiagnostics(messages, uri) {
  for (const raw of messages) {
    let msg = raw;
    if (typeof raw === "string") {
      const body = raw.slice(raw.indexOf("{"));
      try {
        msg = JSON.parse(body);
      } catch {
        continue;
      }
    }
    if (msg && msg.method === "textDocument/publishDiagnostics" && msg.params.uri === uri) {
      return msg.params.diagnostics;
    }
  }
  return null;
}

function readInputs(argv) {
  if (argv.length === 1 && argv[0] === "--json") {
    const scripts = JSON.parse(readFileSync(0, "utf8"));
    if (typeof scripts !== "object" || scripts === null || Array.isArray(scripts)) {
      throw new Error("--json expects an object {name: source} on stdin");
    }
    return Object.entries(scripts);
  }
  if (argv.length === 0 || argv.some((a) => a.startsWith("--"))) {
    throw new Error("usage: check.mjs FILE.flux [...] | check.mjs --json < {name: source}");
  }
  return argv.map((file) => [file, readFileSync(file, "utf8")]);
}

async function main() {
  let inputs;
  let bg;
  try {
    inputs = readInputs(process.argv.slice(2));
    bg = await loadFlux();
  } catch (err) {
    console.error(`fluxcheck: ${err.message}`);
    return 2;
  }
  let invalid = 0;
  for (const [name, source] of inputs) {
    if (typeof source !== "string" || source.trim() === "") {
      console.log(`INVALID ${name}\n  empty script`);
      invalid++;
      continue;
    }
    const flux = new bg.Flux(source);
    const ok = flux.is_valid();
    flux.free();
    if (ok) {
      console.log(`ok ${name}`);
      continue;
    }
    invalid++;
    console.log(`INVALID ${name}`);
    const diags = await diagnostics(bg, name, source);
    for (const d of diags) {
      const line = d.range.start.line + 1;
      const col = d.range.start.character + 1;
      console.log(`  ${line}:${col} ${d.message}`);
    }
    if (diags.length === 0) console.log("  (the analyser gave no diagnostic message)");
  }
  console.log(`${inputs.length - invalid}/${inputs.length} valid`);
  return invalid ? 1 : 0;
}

process.exitCode = await main();
