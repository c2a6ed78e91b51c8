/**
 * What app/cli/main.ts needs of a command, without loading any: the command's shape and the CLI's error.
 * (Each command's one-line summary is in main.ts's list, so the list prints without loading them.)
 */

/** An error the CLI prints as one line (`starling: …`) before exiting with `code`. */
export class CliError extends Error {
  override name = 'CliError';
  constructor(message: string, readonly code = 2) {
    super(message);
  }
}

export interface Command {
  /** Usage and options, printed by --help. */
  help: string;
  run(argv: string[]): Promise<number>;
}
