/** `node --import …/bullmq6-register.js`: resolve 'bullmq' to BullMQ 6 in this process (./bullmq6-loader.ts). */
import { register } from 'node:module';

register('./bullmq6-loader.js', import.meta.url);
