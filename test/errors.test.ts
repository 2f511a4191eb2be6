/**
 * The error registry as a contract: the README's table of codes is the registry (every row a
 * code with the same retried column, every code a row), and how a database or network failure
 * is classified (and so whether its job is retried), by code and never by text.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { JOB_SETTINGS, knownVariables } from '../src/config.js';
import { classifyQueryError, clip, ERROR_CODES, formatIssues, isConnectionLoss, LensfleetError, markConnectionLoss, type ErrorCode } from '../src/errors.js';
import { ROOT } from './support/harness.js';

/** The README's error-code table: code → its retried column. */
function readmeErrorTable(): Map<string, string> {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const start = readme.indexOf('| code | retried | meaning |');
  expect(start, 'the README has an error-code table').toBeGreaterThan(-1);
  const rows = new Map<string, string>();
  for (const line of readme.slice(start).split('\n').slice(2)) {
    if (!line.startsWith('|')) break;
    const [code, retried] = line.split(' | ').map((c) => c.replace(/^\|\s*/, '').trim());
    const name = /^`([A-Z_]+)`$/.exec(code ?? '')?.[1];
    expect(name, `a code in backticks: ${line}`).toBeDefined();
    expect(rows.has(name!), `${name} listed once`).toBe(false);
    rows.set(name!, retried ?? '');
  }
  return rows;
}

describe('the README error-code table', () => {
  const table = readmeErrorTable();

  it('has a row for every registered code, and no row for a code that is not registered', () => {
    expect([...table.keys()].sort()).toEqual(Object.keys(ERROR_CODES).sort());
  });

  it('says for every code whether it is retried, as the registry decides it', () => {
    for (const [code, column] of table) {
      const retried = ERROR_CODES[code as ErrorCode];
      if (column === 'yes' || column === 'no') {
        expect(retried, `${code}: README says ${column}`).toBe(column === 'yes');
        continue;
      }
      // A policy instead of yes/no: the code is retryable, and the column names the setting that
      // decides it with that setting's default (`once (\`LENSFLEET_RETRY_QUERY_TIMEOUT\`)`).
      expect(retried, `${code}: README says "${column}", a policy of a retryable code`).toBe(true);
      const m = /^(\w+) \(`(LENSFLEET_[A-Z_]+)`\)$/.exec(column);
      expect(m, `${code}: retried column "${column}" is yes, no, or "<default> (\`<VARIABLE>\`)"`).not.toBeNull();
      expect(knownVariables().has(m![2]!), `${m![2]} is a setting`).toBe(true);
      const setting = Object.values(JOB_SETTINGS).find((s) => s.env === m![2]);
      expect(setting?.default, `${code}: the default of ${m![2]}`).toBe(m![1]);
    }
  });
});

/** A pg-style error: a message and a SQLSTATE or Node error code. */
const pgError = (code: string, message = `failure ${code}`): Error => Object.assign(new Error(message), { code });

describe('classifyQueryError', () => {
  it.each([
    ['08006', 'connection_failure'],
    ['08001', 'sqlclient_unable_to_establish_sqlconnection'],
    ['08P01', 'protocol_violation'],
    ['53300', 'too_many_connections'],
    ['53100', 'disk_full'],
    ['57P01', 'admin_shutdown'],
    ['57P02', 'crash_shutdown'],
    ['57P03', 'cannot_connect_now'],
    ['40001', 'serialization_failure'],
    ['40P01', 'deadlock_detected'],
    ['ECONNREFUSED', 'connection refused'],
    ['ECONNRESET', 'connection reset'],
    ['EPIPE', 'broken pipe'],
    ['ETIMEDOUT', 'TCP timeout'],
    ['EHOSTUNREACH', 'host unreachable'],
    ['ENETUNREACH', 'network unreachable'],
    ['EAI_AGAIN', 'DNS lookup to try again'],
  ])('%s (%s) is QUERY_FAILED_TRANSIENT, retried', (code) => {
    const cause = pgError(code);
    const e = classifyQueryError(cause, { tenant: 'yA', lens: 'x.y' });
    expect(e.code).toBe('QUERY_FAILED_TRANSIENT');
    expect(e.retryable).toBe(true);
    expect(e.cause).toBe(cause);
    expect(e.details).toEqual({ tenant: 'yA', lens: 'x.y' });
    expect(e.message).toContain(code);
  });

  it('57014 (statement timeout) is QUERY_TIMEOUT, retried', () => {
    const e = classifyQueryError(pgError('57014', 'canceling statement due to statement timeout'), { tenant: 'yA' });
    expect(e.code).toBe('QUERY_TIMEOUT');
    expect(e.retryable).toBe(true);
    expect(e.message).toContain('canceling statement due to statement timeout');
  });

  it.each([
    ['42P01', 'undefined_table'],
    ['42703', 'undefined_column'],
    ['42501', 'insufficient_privilege'],
    ['22012', 'division_by_zero'],
    ['25006', 'read_only_sql_transaction'],
    ['0A000', 'feature_not_supported'],
    ['5000X', 'not a class-53 state: the class is the first two characters'],
    ['XX000', 'internal_error'],
    ['ENOENT', 'a Node code that no retry fixes'],
  ])('%s (%s) is QUERY_FAILED, not retried', (code) => {
    const e = classifyQueryError(pgError(code), {});
    expect(e.code).toBe('QUERY_FAILED');
    expect(e.retryable).toBe(false);
    expect(e.message).toContain(`(${code})`);
  });

  it('an error without a code is QUERY_FAILED, unless the pool marked it as the loss of its connection', () => {
    const plain = new Error('Connection terminated unexpectedly');
    expect(classifyQueryError(plain, {}).code).toBe('QUERY_FAILED');
    const lost = new Error('Connection terminated unexpectedly');
    markConnectionLoss(lost);
    const e = classifyQueryError(lost, {});
    expect(e.code).toBe('QUERY_FAILED_TRANSIENT');
    expect(e.message).toContain('(connection)');
    // a non-object thrown value is classified too, never crashes the classification
    expect(classifyQueryError('boom', {}).code).toBe('QUERY_FAILED');
    expect(classifyQueryError(undefined, {}).code).toBe('QUERY_FAILED');
  });

  it('a LensfleetError passes through as it is', () => {
    const own = new LensfleetError('POOL_TIMEOUT', 'waited too long');
    expect(classifyQueryError(own, { tenant: 'yA' })).toBe(own);
  });
});

describe('LensfleetError', () => {
  it('is retried exactly when its code is registered as retried, and prints as `CODE: message`', () => {
    for (const [code, retried] of Object.entries(ERROR_CODES) as [keyof typeof ERROR_CODES, boolean][]) {
      const e = new LensfleetError(code, 'm', { details: { tenant: 'yA' } });
      expect(e.retryable, code).toBe(retried);
      expect(e.toString()).toBe(`${code}: m`);
      expect(String(e)).toBe(`${code}: m`);
      expect(e.details).toEqual({ tenant: 'yA' });
      expect(e.name).toBe('LensfleetError');
    }
    const cause = new Error('inner');
    expect(new LensfleetError('INTERNAL', 'outer', { cause }).cause).toBe(cause);
    expect('cause' in new LensfleetError('INTERNAL', 'no cause')).toBe(false);
    expect(new LensfleetError('INTERNAL', 'no details').details).toEqual({});
  });
});

describe('echoed input in messages', () => {
  it('clip keeps text up to its limit and cuts what is longer, saying how long it was', () => {
    expect(clip('abcd', 4)).toBe('abcd');
    expect(clip('abcde', 4)).toBe('abcd…(5 characters)');
    expect(clip('', 0)).toBe('');
  });

  it('formatIssues: at most five issues, each with its dotted path (or (root)), path parts and messages clipped', () => {
    const issues = Array.from({ length: 7 }, (_, i) => ({ path: ['params', `f${i}`], message: `bad ${i}` }));
    expect(formatIssues({ issues })).toBe('params.f0: bad 0; params.f1: bad 1; params.f2: bad 2; params.f3: bad 3; params.f4: bad 4');
    expect(formatIssues({ issues: [{ path: [], message: 'not an object' }] })).toBe('(root): not an object');
    expect(formatIssues({ issues: [{ path: ['a', 0, Symbol.for('s')], message: 'x' }] })).toBe('a.0.Symbol(s): x');
    const long = formatIssues({ issues: [{ path: ['k'.repeat(100)], message: 'm'.repeat(300) }] });
    expect(long).toBe(`${'k'.repeat(64)}…(100 characters): ${'m'.repeat(200)}…(300 characters)`);
  });
});

describe('connection-loss marks', () => {
  it('accept anything without throwing (only objects can be marked) and recognise exactly what was marked', () => {
    // pg may reject with a non-Error (a string, undefined): marking it must not throw on the release path.
    for (const v of [null, undefined, 'lost', 42]) {
      expect(() => markConnectionLoss(v)).not.toThrow();
      expect(isConnectionLoss(v)).toBe(false);
    }
    const marked = new Error('socket gone');
    const other = new Error('socket gone');
    markConnectionLoss(marked);
    expect(isConnectionLoss(marked)).toBe(true);
    expect(isConnectionLoss(other)).toBe(false);
  });
});
