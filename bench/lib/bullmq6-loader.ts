/**
 * Module resolution hook for worker children that run on BullMQ 6 (registered by
 * ./bullmq6-register.ts through `node --import`): every `import … from 'bullmq'` — the bench's,
 * the worker service's, the queue contract's — resolves to the `bullmq6` alias
 * (`"bullmq6": "npm:bullmq@^6"`), so the same compiled code runs on either major in one run.
 */
type Resolve = (specifier: string, context: unknown, next: (specifier: string, context: unknown) => Promise<unknown>) => Promise<unknown>;

export const resolve: Resolve = (specifier, context, next) => next(specifier === 'bullmq' ? 'bullmq6' : specifier, context);
