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
RUN npm run build && npm prune --omit=dev

FROM node:22-bookworm-slim
ENV NODE_ENV=production HOST=0.0.0.0 PORT=3000 BATON_DATA_DIR=/var/lib/baton
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
RUN mkdir -p /var/lib/baton && chown node:node /var/lib/baton
USER node
EXPOSE 3000
# The server runs pending migrations before it listens (BATON_MIGRATE_ON_START=true).
CMD ["node", "dist/src/server.js"]
