// `podnet lab` on its own: the lab commands without the rest of the CLI, for running them from
// source (node --import tsx src/lab/standalone.ts lab ...) and for the lab's tests.
import { Command } from 'commander';
import { registerLabCommands } from '../cli/lab.js';

const program = new Command('podnet').showHelpAfterError();
registerLabCommands(program);
await program.parseAsync(process.argv);
