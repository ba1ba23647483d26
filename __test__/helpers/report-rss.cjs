// Preloaded by tests (node --require): reports the process's peak RSS in kB on stderr at exit.
process.on('exit', () => {
  require('node:fs').writeSync(2, `konserve-test-maxrss=${process.resourceUsage().maxRSS}\n`)
})
