// Types of what ts-hooks.mjs exports to the tests' TypeScript.
export declare const TYPEBOX_BUNDLE: string
export declare const TS_CACHE: string
export declare function cacheFile(file: string, source: string, cache?: string): string
export declare function compile(file: string, cache?: string): string
export declare function fillCache(root?: string, cache?: string): Promise<{ files: number; compiled: number; removed: number }>
