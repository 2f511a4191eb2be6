# lensfleet worker image (docker-compose.yml builds it as the `worker` service).
# Runs the Procfile's process type: `worker: node dist/workers/lens-worker.js`.

FROM node:20-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` runs tsc, and the sources are not copied yet.
RUN npm ci --ignore-scripts
COPY . .
RUN npm run build

FROM node:20-slim
ENV NODE_ENV=production \
    PORT=9464
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force
COPY --from=build /app/dist/src ./dist/src
COPY --from=build /app/dist/queues ./dist/queues
COPY --from=build /app/dist/workers ./dist/workers
COPY --from=build /app/dist/cli ./dist/cli
USER node
EXPOSE 9464
# Liveness (/health answers while the event loop runs). Readiness is /ready; see
# docs/OBSERVABILITY.md. node:20-slim has no curl, so ask node itself.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 9464) + '/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# SIGTERM drains: stop taking jobs, finish active ones (LENSFLEET_SHUTDOWN_TIMEOUT_MS), exit 0.
STOPSIGNAL SIGTERM
CMD ["node", "dist/workers/lens-worker.js"]
