import type { FastifyInstance } from 'fastify'
import type { ModuleOptions } from '../../app.js'

export default async function stubRoutes(_app: FastifyInstance, _options: ModuleOptions): Promise<void> {}
