// Compile the sandbox contracts with solc-js and write their runtime artifacts.
//
// Usage: node sandbox/contracts/compile.mjs
//
// Output: sandbox/contracts/build/<Name>.json with {contractName, compiler, abi, deployedBytecode}.
// The runtime bytecode is what gets installed with `anvil_setCode`, so the contracts must not
// use immutables or libraries needing linking; both are checked here.

import { createRequire } from "node:module";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const solc = require("solc");

const here = dirname(fileURLToPath(import.meta.url));
const buildDir = join(here, "build");
const contracts = ["TestUSDC", "Multicall3"];

const input = {
  language: "Solidity",
  sources: Object.fromEntries(
    contracts.map((name) => [
      `${name}.sol`,
      { content: readFileSync(join(here, `${name}.sol`), "utf8") },
    ]),
  ),
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "cancun",
    outputSelection: {
      "*": {
        "*": [
          "abi",
          "evm.deployedBytecode.object",
          "evm.deployedBytecode.immutableReferences",
          "evm.deployedBytecode.linkReferences",
        ],
      },
    },
  },
};

const output = JSON.parse(solc.compile(JSON.stringify(input)));
const problems = (output.errors ?? []).filter((e) => e.severity === "error");
for (const e of output.errors ?? []) {
  console.error(e.formattedMessage ?? e.message);
}
if (problems.length > 0) {
  process.exit(1);
}

mkdirSync(buildDir, { recursive: true });
for (const name of contracts) {
  const compiled = output.contracts?.[`${name}.sol`]?.[name];
  if (!compiled) {
    console.error(`missing compiler output for ${name}`);
    process.exit(1);
  }
  const runtime = compiled.evm.deployedBytecode;
  if (Object.keys(runtime.immutableReferences ?? {}).length > 0) {
    console.error(`${name}: runtime code has immutables; setCode would leave them zeroed`);
    process.exit(1);
  }
  if (Object.keys(runtime.linkReferences ?? {}).length > 0 || runtime.object.includes("__$")) {
    console.error(`${name}: runtime code needs library linking`);
    process.exit(1);
  }
  const artifact = {
    contractName: name,
    compiler: `solc ${solc.version()}`,
    abi: compiled.abi,
    deployedBytecode: `0x${runtime.object}`,
  };
  const path = join(buildDir, `${name}.json`);
  writeFileSync(path, `${JSON.stringify(artifact, null, 2)}\n`);
  console.log(`wrote ${relative(process.cwd(), path)} (${runtime.object.length / 2} bytes of runtime code)`);
}
