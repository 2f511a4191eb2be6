/**
 * docs/RUNBOOK.md stays true to what it points at: a section for every alert of
 * deploy/prometheus/alerts.yml (and none for an alert that is gone), each alert's runbook_url on
 * its section, the dashboard panels it names present in the Grafana dashboard, every `lensfleet …`
 * command a real command with the options it uses (run with --help), and every setting and metric
 * it names documented.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './support/harness.js';
import { runNode } from './support/process.js';

const CLI = path.join(ROOT, 'dist/cli/lensfleet.js');
const runbook = readFileSync(path.join(ROOT, 'docs/RUNBOOK.md'), 'utf8');
const alertsYml = readFileSync(path.join(ROOT, 'deploy/prometheus/alerts.yml'), 'utf8');

/** Each rule's name and runbook_url, in order (the layout alerts.yml is written in). */
function alertRules(): { name: string; runbookUrl: string | undefined }[] {
  return alertsYml
    .split(/^\s*- alert: /m)
    .slice(1)
    .map((block) => ({ name: block.split('\n')[0]!.trim(), runbookUrl: /^\s*runbook_url: "([^"]*)"/m.exec(block)?.[1] }));
}

/** `## Title` → its text, up to the next `## `. */
function sections(): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of runbook.split(/^## /m).slice(1)) {
    const [title, ...body] = part.split('\n');
    out.set(title!.trim(), body.join('\n'));
  }
  return out;
}

function panelTitles(): Set<string> {
  const dashboard = JSON.parse(readFileSync(path.join(ROOT, 'deploy/grafana/dashboards/lensfleet.json'), 'utf8')) as { panels: unknown[] };
  const titles = new Set<string>();
  const walk = (panels: unknown[]) => {
    for (const p of panels as { title?: string; panels?: unknown[] }[]) {
      if (p.title) titles.add(p.title);
      walk(p.panels ?? []);
    }
  };
  walk(dashboard.panels);
  return titles;
}

/** Every `lensfleet …` code span: its command words (up to the first option or placeholder) and the options it uses. */
function commands(): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const m of runbook.matchAll(/`(?:npx )?lensfleet ([^`]+)`/g)) {
    const tokens = m[1]!.trim().split(/\s+/);
    const firstArg = tokens.findIndex((t) => t.startsWith('-') || t.startsWith('<'));
    const words = (firstArg === -1 ? tokens : tokens.slice(0, firstArg)).join(' ');
    const options = out.get(words) ?? new Set<string>();
    for (const t of tokens) if (t.startsWith('--')) options.add(t.split('=')[0]!);
    out.set(words, options);
  }
  return out;
}

const help = (args: string[]) => runNode([CLI, ...args, '--help'], {});

describe('docs/RUNBOOK.md', () => {
  const rules = alertRules();
  const bySection = sections();

  it('has a section for every alert, with what it means, a dashboard panel and actions; and no section for an alert that does not exist', () => {
    expect(rules.length).toBeGreaterThanOrEqual(13);
    for (const { name } of rules) {
      const body = bySection.get(name);
      expect(body, `no "## ${name}" section`).toBeDefined();
      expect(body, name).toContain('**Means**:');
      expect(body, name).toContain('**Dashboard**:');
      expect(body, name).toMatch(/\*\*Actions\*\*:\n1\. /);
    }
    const alertSections = [...bySection.keys()].filter((t) => /^Lensfleet\w+$/.test(t));
    expect(alertSections.sort()).toEqual(rules.map((r) => r.name).sort());
  });

  it('every alert links its section (runbook_url), and every panel a section names is on the dashboard', () => {
    const titles = panelTitles();
    for (const { name, runbookUrl } of rules) {
      expect(runbookUrl, name).toBe(`docs/RUNBOOK.md#${name.toLowerCase()}`);
      const dashboard = /\*\*Dashboard\*\*:([\s\S]*?)\n\n/.exec(bySection.get(name)!)?.[1] ?? '';
      const named = [...dashboard.matchAll(/"([^"]+)"/g)].map((m) => m[1]!.replace(/\s*\n\s*/g, ' '));
      expect(named.length, `${name} names no panel`).toBeGreaterThan(0);
      for (const title of named) expect(titles, `${name}: panel "${title}"`).toContain(title);
    }
  });

  it('every lensfleet command it gives exists and takes the options it uses (--help)', async () => {
    const found = commands();
    expect([...found.keys()]).toEqual(expect.arrayContaining(['status', 'plan', 'tenants check', 'queue', 'queue retry', 'lenses']));
    for (const [words, options] of found) {
      const r = await help(words.split(' '));
      expect(r.code, `lensfleet ${words} --help`).toBe(0);
      expect(r.stdout, `lensfleet ${words} --help`).toMatch(/usage: lensfleet/);
      for (const option of options) expect(r.stdout, `lensfleet ${words} ${option}`).toContain(option);
    }
  });

  it('every setting and metric it names is documented (README configuration, docs/OBSERVABILITY.md)', () => {
    const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const observability = readFileSync(path.join(ROOT, 'docs/OBSERVABILITY.md'), 'utf8');
    const settings = new Set(runbook.match(/\bLENSFLEET_[A-Z_]+[A-Z]\b/g));
    expect(settings.size).toBeGreaterThan(10);
    for (const s of settings) expect(readme, s).toContain(`\`${s}\``);
    for (const metric of new Set(runbook.match(/\blensfleet_[a-z_]+\b/g))) expect(observability, metric).toContain(metric);
  });
});
