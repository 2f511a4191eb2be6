/**
 * A command's options, as every `lensfleet` command reads them: strictly (an unknown option is
 * bad usage), no positionals, and `--help` / `-h`.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';

/**
 * The parsed options (`V`, as the command declares them, plus `help`), or the exit code when the
 * command ends here: the usage text printed to stdout for `--help` (0), or to stderr after the
 * problem with the arguments (2).
 */
export function parseCommandArgs<V>(
  args: readonly string[],
  options: NonNullable<ParseArgsConfig['options']>,
  usage: string,
): { values: V } | { exit: number } {
  let values: V & { help?: boolean };
  try {
    ({ values } = parseArgs({
      args: [...args],
      options: { ...options, help: { type: 'boolean', short: 'h', default: false } },
      strict: true,
      allowPositionals: false,
    }) as unknown as { values: V & { help?: boolean } });
  } catch (err) {
    console.error(`${(err as Error).message}\n\n${usage}`);
    return { exit: 2 };
  }
  if (values.help) {
    console.log(usage);
    return { exit: 0 };
  }
  return { values };
}
