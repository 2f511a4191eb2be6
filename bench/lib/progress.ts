/**
 * Progress output: one status line rewritten in place on a terminal, a line every few seconds
 * otherwise (CI logs), with the elapsed time of the whole run.
 */
export interface Progress {
  /** The current step, shown after the phase label. */
  update(text: string): void;
  /** A permanent line (a finished step). */
  line(text: string): void;
  /** A new phase label for the following updates. */
  phase(label: string): Progress;
}

export function createProgress(out: NodeJS.WriteStream = process.stdout): Progress {
  const started = Date.now();
  const tty = out.isTTY === true;
  let lastPrinted = 0;
  let dirty = false;
  const elapsed = (): string => {
    const s = Math.round((Date.now() - started) / 1000);
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
  };
  const make = (label: string): Progress => ({
    update(text) {
      const line = `[${elapsed()}] ${label}${label ? ': ' : ''}${text}`;
      if (tty) {
        out.write(`\r\x1b[K${line.slice(0, (out.columns || 120) - 1)}`);
        dirty = true;
      } else if (Date.now() - lastPrinted > 5000) {
        lastPrinted = Date.now();
        out.write(`${line}\n`);
      }
    },
    line(text) {
      if (dirty) out.write('\r\x1b[K');
      dirty = false;
      out.write(`[${elapsed()}] ${label}${label ? ': ' : ''}${text}\n`);
    },
    phase: (next) => make(next),
  });
  return make('');
}
