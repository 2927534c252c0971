// Prints OpenAI's tiktoken "gpt2" ids of each file named on the command line, one JSON array per
// line, special tokens encoded as plain text (encode_ordinary), the way Tessera's tokenizer
// treats them. Usage: node scripts/tiktoken_ids.js NODE_MODULES_DIR FILE...
// (NODE_MODULES_DIR: from scripts/fetch_gpt2_vocab.sh, DIR/node_modules.)
"use strict";
const fs = require("fs");
const path = require("path");
const [modules, ...files] = process.argv.slice(2);
const { get_encoding } = require(path.join(modules, "tiktoken"));
const enc = get_encoding("gpt2");
for (const file of files) {
  // Decoding as UTF-8 is exact for valid UTF-8 text (the test feeds only that).
  const text = fs.readFileSync(file, "utf8");
  process.stdout.write(JSON.stringify(Array.from(enc.encode_ordinary(text))) + "\n");
}
enc.free();
