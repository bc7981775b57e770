#!/usr/bin/env node
/**
 * @file The `qgrad` executable of @qgrad/quant's package.json `bin`: the commands live in
 * export/cli.ts (runCli, testable without a process); this file only passes the arguments and sets
 * `process.exitCode` rather than calling `process.exit`, so pending output is still flushed.
 */
import { runCli } from '../export/cli.js';

process.exitCode = await runCli(process.argv.slice(2));
