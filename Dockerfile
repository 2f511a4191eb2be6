# lensfleet worker image (docker-compose.yml builds it as the `worker` service).
# Runs the Procfile's process type: `worker: node dist/workers/lens-worker.js`.
#
# Node 26 is the Active LTS line (since 2026-10-28; 24 is in maintenance, 20 reached its end of
# life on 2026-04-30). The tag is an exact release, never a moving `node:26`: a rebuild gets the
# same Node. 26.10.0 is the newest 26.x this repository could verify offline (the `node` npm
# package that CI tests with); move to the newest 26.x patch, and add the digest, where a
# registry is reachable: `docker buildx imagetools inspect node:26.x.y-bookworm-slim` →
# NODE_IMAGE=node:26.x.y-bookworm-slim@sha256:<index digest>. Keep .ci/run's NODE_LTS in step.
ARG NODE_IMAGE=node:26.10.0-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
# npm never runs as root: the dependencies are installed by the image's unprivileged `node` user,
# with install scripts off (no dependency needs one; `prepare` would run tsc before the sources
# are copied).
RUN chown node:node /app
USER node
COPY --chown=node:node package.json package-lock.json ./
RUN npm ci --ignore-scripts
COPY --chown=node:node . .
RUN npm run build \
 && mkdir prod \
 && cp package.json package-lock.json prod/ \
 && cd prod \
 && npm ci --omit=dev --ignore-scripts \
 && npm cache clean --force

FROM ${NODE_IMAGE}
ENV NODE_ENV=production \
    PORT=9464
WORKDIR /app
# Code and dependencies are owned by root and only readable by the `node` user that runs them.
COPY package.json ./
COPY --from=build /app/prod/node_modules ./node_modules
COPY --from=build /app/dist/src ./dist/src
COPY --from=build /app/dist/queues ./dist/queues
COPY --from=build /app/dist/workers ./dist/workers
COPY --from=build /app/dist/cli ./dist/cli
USER node
EXPOSE 9464
# Liveness (/health answers while the event loop runs). Readiness is /ready; see
# docs/OBSERVABILITY.md. The slim image has no curl, so ask node itself.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 9464) + '/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# SIGTERM drains: stop taking jobs, finish active ones (LENSFLEET_SHUTDOWN_TIMEOUT_MS), exit 0.
STOPSIGNAL SIGTERM
CMD ["node", "dist/workers/lens-worker.js"]
