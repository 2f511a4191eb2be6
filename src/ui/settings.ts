/**
 * Settings of the queue UI process (`ui:` in the Procfile, cli/ui.ts). A table of its own, like
 * every concern of src/config.ts, which lists it for the README and for the unknown-variable
 * warning; the UI also reads the worker's Redis rows and `LENSFLEET_QUEUE`, so it shows the
 * queue the workers take jobs from.
 */
import type { Secret } from '../secret.js';
import { schemas, setting, type SettingsTable } from '../settings.js';

const { int, bool, text, secret } = schemas;

export const UI_SETTINGS = {
  token: setting({
    env: 'LENSFLEET_UI_TOKEN',
    schema: (label) => secret()(label).refine((s) => s === undefined || s.reveal().length >= 16, `${label} must be at least 16 characters`),
    default: undefined as Secret | undefined,
    help: 'token the queue UI asks for: `Authorization: Bearer <token>`, or once as `/?token=<token>` in a browser (it then sets an HttpOnly session cookie). Required unless `LENSFLEET_UI_HOST` is a loopback address, and with `LENSFLEET_UI_READ_WRITE`',
    secret: true,
  }),
  readWrite: setting({
    env: 'LENSFLEET_UI_READ_WRITE',
    schema: bool(),
    default: false,
    help: '`on`: the queue UI may retry and remove jobs (one, or all of a state); nothing else (adding, editing, emptying, pausing) is ever served. `off`: read-only, every change is refused (405)',
  }),
  port: setting({
    env: 'LENSFLEET_UI_PORT',
    aliases: ['PORT'],
    schema: int(0, 65_535),
    default: 9465,
    help: 'HTTP port of the queue UI (`PORT` wins, the Procfile convention)',
  }),
  host: setting({
    env: 'LENSFLEET_UI_HOST',
    schema: (label) => text()(label).min(1, `${label} is empty`),
    default: '0.0.0.0',
    help: 'bind address of the queue UI; only a loopback address (`127.0.0.1`, `::1`) lets it start without `LENSFLEET_UI_TOKEN` (read-only, for local use)',
  }),
} as const satisfies SettingsTable;
