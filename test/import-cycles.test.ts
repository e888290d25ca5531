import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import ts from 'typescript'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')

/** Each .ts file under these folders with the files it imports by a relative path, `import type` and `export … from` included. */
function importGraph(folders: string[]): Map<string, string[]> {
  const graph = new Map<string, string[]>()
  for (const folder of folders) {
    for (const entry of readdirSync(join(root, folder), { recursive: true, encoding: 'utf8' })) {
      if (!entry.endsWith('.ts')) continue
      const file = join(root, folder, entry)
      const { importedFiles } = ts.preProcessFile(readFileSync(file, 'utf8'), true, true)
      graph.set(file, importedFiles.map((i) => i.fileName).filter((name) => name.startsWith('.'))
        .map((name) => resolve(dirname(file), name.replace(/\.js$/, '.ts'))))
    }
  }
  return graph
}

/** One cycle through each group of files that import each other (Tarjan's strongly connected components). */
function cycles(graph: Map<string, string[]>): string[][] {
  const index = new Map<string, number>()
  const low = new Map<string, number>()
  const stack: string[] = []
  const found: string[][] = []
  const visit = (file: string) => {
    index.set(file, index.size)
    low.set(file, index.get(file)!)
    stack.push(file)
    for (const next of graph.get(file) ?? []) {
      if (!graph.has(next)) continue
      if (!index.has(next)) {
        visit(next)
        low.set(file, Math.min(low.get(file)!, low.get(next)!))
      } else if (stack.includes(next)) {
        low.set(file, Math.min(low.get(file)!, index.get(next)!))
      }
    }
    if (low.get(file) !== index.get(file)) return
    const group = new Set(stack.splice(stack.indexOf(file)))
    if (group.size > 1 || graph.get(file)!.includes(file)) found.push(pathBack(graph, file, group))
  }
  for (const file of graph.keys()) if (!index.has(file)) visit(file)
  return found
}

/** The shortest way from `start` back to itself within the group. */
function pathBack(graph: Map<string, string[]>, start: string, group: Set<string>): string[] {
  const cameFrom = new Map<string, string>()
  const queue = [start]
  while (queue.length > 0) {
    const file = queue.shift()!
    for (const next of graph.get(file)!.filter((n) => group.has(n))) {
      if (next === start) {
        const path = [file]
        while (path[0] !== start) path.unshift(cameFrom.get(path[0]!)!)
        return [...path, start]
      }
      if (!cameFrom.has(next)) {
        cameFrom.set(next, file)
        queue.push(next)
      }
    }
  }
  return [...group]
}

t.test('no file imports itself through others, type imports included', async (t) => {
  const graph = importGraph(['src', 'scripts', 'test', 'migrations'])
  t.ok(graph.size > 100, `read ${graph.size} files`)
  const found = cycles(graph).map((cycle) => cycle.map((file) => relative(root, file)).join(' -> '))
  t.same(found, [], 'a type both sides need belongs in a leaf module (e.g. src/modules/module-options.ts, src/lib/logger.ts)')
})

t.test('a cycle is found', async (t) => {
  const graph = new Map([['a.ts', ['b.ts']], ['b.ts', ['c.ts', 'd.ts']], ['c.ts', ['a.ts']], ['d.ts', []]])
  t.same(cycles(graph), [['a.ts', 'b.ts', 'c.ts', 'a.ts']])
  t.same(cycles(new Map([['a.ts', ['a.ts']]])), [['a.ts', 'a.ts']])
})
