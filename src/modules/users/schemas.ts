import { Type, type Static } from 'typebox'
import { PageQuerySchema, Timestamp, Uuid } from '../../schemas/common.js'

export const UserSchema = Type.Object(
  { id: Uuid, name: Type.String(), email: Type.String(), createdAt: Timestamp, updatedAt: Timestamp },
  { $id: 'User' }
)
export type User = Static<typeof UserSchema>

const Name = Type.String({ minLength: 1, maxLength: 200 })
const Email = Type.String({ format: 'email', maxLength: 254 })

export const CreateUserSchema = Type.Object({ name: Name, email: Email }, {
  additionalProperties: false, examples: [{ name: 'Anna Berg', email: 'anna@example.com' }]
})
export type CreateUser = Static<typeof CreateUserSchema>

export const UpdateUserSchema = Type.Object(
  { name: Type.Optional(Name), email: Type.Optional(Email) },
  { additionalProperties: false, minProperties: 1, examples: [{ email: 'anna.berg@example.com' }] }
)
export type UpdateUser = Static<typeof UpdateUserSchema>

export const ListUsersQuerySchema = Type.Object({
  ...PageQuerySchema.properties,
  email: Type.Optional(Type.String({ maxLength: 320, description: 'Exact e-mail address (case-insensitive)' })),
  q: Type.Optional(Type.String({ maxLength: 200, description: 'Part of the name (case-insensitive)' }))
})
export type ListUsersQuery = Static<typeof ListUsersQuerySchema>
