/**
 * The queue UI end to end in headless Chromium (Debian's `chromium`, driven by playwright-core;
 * no browser is ever downloaded): a real worker fails one job with a lensfleet error code and
 * completes another, the real `ui` process serves bull-board, and the browser sees the queue, the
 * failed job's code, a 401 without the token, and no retry or remove in read-only mode.
 *
 * Writes a screenshot into the test's temp dir (its path is printed); with UI_SCREENSHOT_PATH set
 * (`npm run docs:ui-screenshot`) also there (docs/img/ui.png).
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type BrowserContext, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enqueue } from '../queues/producer.js';
import { createTenants, ROOT, startTestWorker, type TestWorker, uniqueId, waitFor } from './support/harness.js';
import { startUi, UI_TOKEN, type UiProcess } from './support/ui.js';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

describe('queue UI in headless Chromium', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lf-ui-browser-'));
  let tenants: Awaited<ReturnType<typeof createTenants>>;
  let worker: TestWorker;
  let readOnly: UiProcess;
  let readWrite: UiProcess;
  let browser: BrowserContext;
  let page: Page;
  let failedId: string;
  const foreignRequests: string[] = [];
  const cspViolations: string[] = [];

  beforeAll(async () => {
    // Never skipped: a machine without the browser fails here, saying how to get it.
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium (.ci/run installs it)`);
    tenants = await createTenants([uniqueId('yUi')], 5);
    // The docs' screenshot shows the default queue name; a test run keeps its fresh one.
    worker = await startTestWorker({ env: tenants.env, ...(process.env.UI_SCREENSHOT_PATH ? { queueName: 'lens-queries' } : {}) });
    const done = await enqueue(worker.queue, { tenant: tenants.dbs[0]!.tenant, lens: 'receiving.recent', params: { limit: 3 } });
    const failed = await enqueue(worker.queue, { tenant: 'yNoSuchTenant', lens: 'receiving.recent', params: {} });
    failedId = failed.id!;
    await expect(done.waitUntilFinished(worker.events, 30_000)).resolves.toMatchObject({ rowCount: 3 });
    await expect(failed.waitUntilFinished(worker.events, 30_000)).rejects.toThrow(/^TENANT_NOT_FOUND: /);
    const env = { LENSFLEET_QUEUE: worker.queueName, LENSFLEET_UI_TOKEN: UI_TOKEN };
    [readOnly, readWrite] = await Promise.all([startUi(env), startUi({ ...env, LENSFLEET_UI_READ_WRITE: 'on' })]);
    browser = await chromium.launchPersistentContext(path.join(dir, 'profile'), {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1280, height: 720 },
    });
    // bull-board's page links fonts.googleapis.com; the UI's CSP must stop the browser from asking.
    // Anything that still goes out to another origin is counted (and aborted: no network here).
    await browser.route(/^https?:\/\/(?!127\.0\.0\.1[:/])/, (route) => {
      foreignRequests.push(route.request().url());
      return route.abort();
    });
    page = browser.pages()[0] ?? (await browser.newPage());
    page.on('console', (m) => {
      if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
    });
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    await Promise.all([readOnly?.stop(), readWrite?.stop()]);
    await worker?.close();
    await tenants?.drop();
    // The browser profile goes; the screenshot stays for whoever reads the printed path.
    rmSync(path.join(dir, 'profile'), { recursive: true, force: true });
  });

  it('without the token the server answers 401', async () => {
    const r = await page.goto(`${readOnly.url}/`);
    expect(r?.status()).toBe(401);
    expect(await page.locator('body').textContent()).toContain('open /?token=<LENSFLEET_UI_TOKEN> once');
  });

  it('with ?token= once the page lists the lens queue, and the token leaves the address bar', async () => {
    const r = await page.goto(`${readOnly.url}/?token=${UI_TOKEN}`);
    expect(r?.status()).toBe(200);
    expect(page.url()).toBe(`${readOnly.url}/`);
    await expect(waitText(page, worker.queueName)).resolves.toBe(true);
    const cookies = await browser.cookies(readOnly.url);
    expect(cookies.find((c) => c.name === 'lensfleet_ui')).toMatchObject({ httpOnly: true, sameSite: 'Lax' });
  });

  it('the failed job shows its lensfleet error code (TENANT_NOT_FOUND), and the completed one is counted', async () => {
    await page.goto(`${readOnly.url}/queue/${worker.queueName}?status=failed`);
    await expect(waitText(page, 'TENANT_NOT_FOUND')).resolves.toBe(true);
    expect(await page.locator('body').textContent()).toContain(`#${failedId}`);
    const shot = path.join(dir, 'ui.png');
    await page.screenshot({ path: shot });
    console.log(`queue UI screenshot: ${shot}`);
    const docs = process.env.UI_SCREENSHOT_PATH;
    if (docs) {
      const target = path.resolve(ROOT, docs);
      mkdirSync(path.dirname(target), { recursive: true });
      await page.screenshot({ path: target });
      console.log(`queue UI screenshot: ${target}`);
    }
    await page.goto(`${readOnly.url}/queue/${worker.queueName}?status=completed`);
    await expect(waitText(page, 'receiving.recent')).resolves.toBe(true);
  });

  it('the pages asked no other origin for anything (the CSP blocked Google Fonts), and the CSP blocked nothing of their own', () => {
    expect(foreignRequests).toEqual([]);
    // What the pages above tried and the policy refused: the fonts' stylesheet, nothing else.
    expect(cspViolations.length).toBeGreaterThan(0);
    for (const v of cspViolations) expect(v).toContain('https://fonts.googleapis.com/');
  });

  it('read-only: no retry or remove action on the failed job, and a change sent from the page is refused (405)', async () => {
    await page.goto(`${readOnly.url}/queue/${worker.queueName}?status=failed`);
    await waitText(page, 'TENANT_NOT_FOUND');
    expect(await actions(page).count()).toBe(0);
    const status = await page.evaluate(async (url) => (await fetch(url, { method: 'PUT' })).status, `/api/queues/${worker.queueName}/${failedId}/retry`);
    expect(status).toBe(405);
    expect(await worker.queue.getJobState(failedId)).toBe('failed');
  });

  it('read-write: the same page offers retry, and it retries the job', async () => {
    await page.goto(`${readWrite.url}/queue/${worker.queueName}?status=failed&token=${UI_TOKEN}`);
    await waitText(page, 'TENANT_NOT_FOUND');
    await waitFor('the retry action', async () => (await actions(page).count()) > 0, 30_000);
    const before = (await worker.queue.getJob(failedId))!.attemptsStarted;
    // The card's own retry icon ("Retry all" has the same icon, and its label).
    await page
      .locator(RETRY_ICON)
      .filter({ hasNotText: /retry all/i })
      .click();
    const retried = page.waitForResponse((r) => r.request().method() === 'PUT' && r.url().endsWith(`/${failedId}/retry`));
    await page.getByRole('button', { name: 'Confirm' }).click();
    expect((await retried).status()).toBe(204);
    // The worker runs it again, and it fails again with its code.
    await waitFor('the job to run again', async () => (await worker.queue.getJob(failedId))!.attemptsStarted > before, 30_000);
  });
});

/** A job card's retry button (an icon, no label). */
const RETRY_ICON = 'button:has(svg.lucide-refresh-cw)';

/** What retries or removes jobs: a card's retry and delete icons, and the state's "Retry all", "Clean all". */
function actions(page: Page) {
  return page.locator(`${RETRY_ICON}, button:has(svg.lucide-trash-2)`).or(page.getByRole('button', { name: /retry|clean|remove|delete/i }));
}

/** Whether `text` appears on the page within 30 s (bull-board renders after its first API poll). */
async function waitText(page: Page, text: string): Promise<boolean> {
  await page.getByText(text).first().waitFor({ timeout: 30_000 });
  return true;
}
