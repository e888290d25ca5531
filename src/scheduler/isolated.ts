/** Called when the work for one row fails; the caller goes on with the next row. */
export type RowErrorHandler = (error: unknown, id: string) => void

export const rethrow: RowErrorHandler = (error) => {
  throw error
}

/**
 * Runs the work for one row so that its failure (a row that cannot be processed) is reported and
 * counts as not done, instead of stopping every row behind it on each pass.
 */
export async function isolated(onError: RowErrorHandler, id: string, work: () => Promise<boolean>): Promise<boolean> {
  try {
    return await work()
  } catch (error) {
    onError(error, id)
    return false
  }
}
