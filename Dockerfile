# syntax=docker/dockerfile:1
FROM node:22-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# npm ci's postinstall prepares the embedded database's empty cluster with this script.
COPY scripts/prepare-embedded-db.mjs ./scripts/
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY migrations ./migrations
# The operator's commands, compiled beside the server: `node dist/scripts/migrate.js`,
# `rotate-operator-key.js` and `reencrypt-secrets.js` (npm's scripts need tsx, a dev dependency).
COPY scripts/admin-command.ts scripts/migrate.ts scripts/rotate-operator-key.ts scripts/reencrypt-secrets.ts ./scripts/
RUN npm run build && npm prune --omit=dev

FROM node:22-bookworm-slim
ENV NODE_ENV=production HOST=0.0.0.0 PORT=3000 WORKER_HTTP_PORT=3001 BATON_DATA_DIR=/var/lib/baton
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
RUN mkdir -p /var/lib/baton && chown node:node /var/lib/baton
USER node
EXPOSE 3000 3001
# Slim images have no curl: node's fetch asks /health/live on PORT (the API, npm start) and then on
# WORKER_HTTP_PORT (a worker, --role=worker); either answering 200 is healthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 CMD ["node", "-e", "(async () => { for (const port of [process.env.PORT, process.env.WORKER_HTTP_PORT]) { try { const r = await fetch('http://127.0.0.1:' + port + '/health/live', { signal: AbortSignal.timeout(4000) }); process.exit(r.ok ? 0 : 1) } catch {} } process.exit(1) })()"]
# The server runs pending migrations before it listens (BATON_MIGRATE_ON_START=true). The heap flags
# are npm start's (package.json): a young generation of 2 x 8 MiB, and a full collection once the old
# one has grown by half, keep the resident set near 125-140 MiB instead of 200-270 under load; with
# the embedded database (BATON_DATA_DIR, no DATABASE_URL), --liftoff-only saves its WebAssembly a
# second compilation at every start.
CMD ["node", "--max-semi-space-size=8", "--heap-growing-percent=50", "--liftoff-only", "dist/src/server.js"]
