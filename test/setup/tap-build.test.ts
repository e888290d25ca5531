// `npm test`'s pretest (scripts/tap-build.mjs) builds tap's test class for package.json's plugins
// before tap runs: otherwise the first run after an install starts every test file with the loaders
// of tap's default plugins as well (ts-node, @tapjs/mock), about 2.7 s more of each.
import t from 'tap'

t.test("a test process runs with no loader but tap's processinfo hook and ours", async (t) => {
  const loaders = process.execArgv.filter((arg) => /^--(import|loader|require)\b/.test(arg))
  const extra = loaders.filter((arg) => !/@tapjs\/processinfo\/|^--import=\.\/test\/setup\/ts-loader\.mjs$/.test(arg))
  t.same(extra, [], "no other plugin's loader: run the suite with npm test, whose pretest builds tap's plugin set")
  t.equal(loaders.length, 2)
})
